"""Every CLI failure path: one line ``scratchformer: error: ...`` naming the argument or file,
exit code 2, no traceback, and no study run before the output folder is known to be usable."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fuzz_helpers import read_only_folder

from scratchformer import cli
from scratchformer.tokenizers import BPETokenizer

REDOS = r"(a|aa)+$|\s+|."


def _tokenizer_file(tmp: Path, name: str, **changes: object) -> Path:
    """A valid tokenizer file with some fields replaced."""
    data = BPETokenizer.from_merges([(97, 97)], []).to_dict()
    data.update(changes)
    path = tmp / name
    path.write_text(json.dumps(data))
    return path


def _afile(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


def _write(path: Path, data: bytes | str) -> str:
    """Write ``data`` to ``path`` (making its folder) and return the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    path.write_bytes(data)
    return str(path)


def _results(tmp: Path, text: str) -> Path:
    (tmp / "res" / "x").mkdir(parents=True)
    _write(tmp / "res" / "x" / "metrics.json", text)
    return tmp / "res"


GOOD_RECORD = json.dumps({"study": "x", "profile": "quick", "wall_time_s": 1.0,
                          "finished_at": "now", "metrics": {}})

# (id, argv builder, environment, words the one line must hold ("{tmp}" is replaced))
CASES: list[tuple[str, Callable[[Path], list[str]], dict[str, str], list[str]]] = [
    ("run --out is a file",
     lambda t: ["run", "positional.encoding", "--out", str(_afile(t))], {},
     ["--out", "{tmp}/afile", "is a file"]),
    ("run --out under a file",
     lambda t: ["run", "positional.encoding", "--out", str(_afile(t) / "sub")], {},
     ["--out", "{tmp}/afile/sub"]),
    ("run --out holds a file where the study folder goes",
     lambda t: ["run", "positional.encoding", "--out",
                str(Path(_write(t / "res" / "positional.encoding", "x")).parent)], {},
     ["--out", "{tmp}/res/positional.encoding", "is a file"]),
    ("SCRATCHFORMER_OFFLINE=maybe before a run",
     lambda t: ["run", "shakespeare.embedding_pca", "--out", str(t / "o")],
     {"SCRATCHFORMER_OFFLINE": "maybe"}, ["SCRATCHFORMER_OFFLINE", "maybe"]),
    ("SCRATCHFORMER_OFFLINE=maybe before training on the default corpus",
     lambda t: ["tokenizer", "train", "--vocab-size", "300", "--out", str(t / "tok.json")],
     {"SCRATCHFORMER_OFFLINE": "maybe"}, ["SCRATCHFORMER_OFFLINE", "maybe"]),
    ("report --out is a file",
     lambda t: ["report", "--results", str(_results(t, GOOD_RECORD)), "--out", str(_afile(t))],
     {}, ["--out", "{tmp}/afile", "is a file"]),
    ("report --results is a file",
     lambda t: ["report", "--results", str(_afile(t))], {}, ["--results", "{tmp}/afile"]),
    ("report over a metrics.json that is not JSON",
     lambda t: ["report", "--results", str(_results(t, "{oops"))], {},
     ["{tmp}/res/x/metrics.json", "not valid JSON"]),
    ("report over a metrics.json that lacks fields",
     lambda t: ["report", "--results", str(_results(t, '{"study": "x"}'))], {},
     ["{tmp}/res/x/metrics.json", "profile"]),
    ("report over a metrics.json that is not UTF-8",
     lambda t: ["report", "--results", str(_results(t, "\udcff"))], {},
     ["{tmp}/res/x/metrics.json", "UTF-8"]),
    ("tokenizer train --input is a folder",
     lambda t: ["tokenizer", "train", "--input", str(t), "--out", str(t / "tok.json")], {},
     ["--input", "{tmp}", "is a folder"]),
    ("tokenizer train --input is missing",
     lambda t: ["tokenizer", "train", "--input", str(t / "nope.txt"), "--out",
                str(t / "tok.json")], {}, ["--input", "{tmp}/nope.txt", "no such file"]),
    ("tokenizer train --input is not UTF-8",
     lambda t: ["tokenizer", "train", "--input", _write(t / "b.txt", b"ok \xff\xfe"),
                "--out", str(t / "tok.json")], {}, ["--input", "{tmp}/b.txt", "UTF-8"]),
    ("tokenizer train --out is a folder",
     lambda t: ["tokenizer", "train", "--input", str(_afile(t)), "--out", str(t)], {},
     ["--out", "{tmp}", "is a folder"]),
    ("tokenizer train --out in a missing folder",
     lambda t: ["tokenizer", "train", "--input", str(_afile(t)), "--out",
                str(t / "no" / "tok.json")], {}, ["--out", "{tmp}/no", "does not exist"]),
    ("tokenizer encode --tokenizer is a folder",
     lambda t: ["tokenizer", "encode", "--tokenizer", str(t), "--text", "hi"], {},
     ["--tokenizer", "{tmp}", "is a folder"]),
    ("tokenizer encode --tokenizer is missing",
     lambda t: ["tokenizer", "encode", "--tokenizer", str(t / "nope.json"), "--text", "hi"],
     {}, ["--tokenizer", "{tmp}/nope.json"]),
    ('tokenizer file with "vocab": []',
     lambda t: ["tokenizer", "encode", "--tokenizer", str(_tokenizer_file(t, "v.json", vocab=[])),
                "--text", "hi"], {}, ["{tmp}/v.json", "vocab"]),
    ("tokenizer file that is not JSON",
     lambda t: ["tokenizer", "decode", "--tokenizer", _write(t / "j.json", "{"), "1"], {},
     ["{tmp}/j.json", "not JSON"]),
    ("tokenizer file with an invalid regex",
     lambda t: ["tokenizer", "encode", "--tokenizer",
                str(_tokenizer_file(t, "r.json", pattern="(")), "--text", "hi"], {},
     ["{tmp}/r.json", "not a valid regular expression"]),
    ("tokenizer file with a catastrophic regex",
     lambda t: ["tokenizer", "encode", "--tokenizer",
                str(_tokenizer_file(t, "redos.json", pattern=REDOS)), "--text", "a" * 40 + "b"],
     {}, ["pattern", "catastrophic backtracking"]),
    ("argument missing its value",
     lambda t: ["tokenizer", "encode", "--tokenizer", "x", "--text"], {},
     ["tokenizer encode", "--text", "expected one argument"]),
    ("argument of the wrong type",
     lambda t: ["tokenizer", "train", "--vocab-size", "many"], {},
     ["tokenizer train", "--vocab-size", "'many'"]),
    ("unknown profile", lambda t: ["run", "x", "--profile", "medium"], {},
     ["run", "--profile", "'medium'"]),
    ("tokenizer encode --input is a folder",
     lambda t: ["tokenizer", "encode", "--tokenizer", str(_tokenizer_file(t, "ok.json")),
                "--input", str(t)], {}, ["--input", "{tmp}", "is a folder"]),
]


@pytest.mark.parametrize(("argv", "env", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_cli_failure_is_one_line_naming_the_argument_or_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        argv: Callable[[Path], list[str]], env: dict[str, str], words: list[str]) -> None:
    monkeypatch.delenv("SCRATCHFORMER_OFFLINE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = argv(tmp_path)
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scratchformer: error: "), err
    for word in words:
        assert word.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert out == ""
    assert {p.parent.name for p in tmp_path.rglob("metrics.json")} <= {"x"}  # no study ran


def test_run_into_a_folder_it_cannot_write_fails_before_the_study(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from scratchformer.experiments import registry

    ran = []
    study = dataclasses.replace(registry.get("positional.encoding"),
                                run=lambda *a: ran.append(a) or {})
    monkeypatch.setattr(registry, "get", lambda name: study)
    with read_only_folder(tmp_path / "res" / "positional.encoding"):
        assert cli.main(["run", "positional.encoding", "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchformer: error: --out") and "\n" not in err
    assert "cannot write" in err and "positional.encoding" in err
    assert ran == []


def test_report_into_a_folder_it_cannot_write(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    results = _results(tmp_path, GOOD_RECORD)
    with read_only_folder(tmp_path / "ro"):
        assert cli.main(["report", "--results", str(results), "--out",
                         str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchformer: error: --out") and "cannot write" in err


def test_the_table_covers_the_good_paths_too(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """The same arguments, fixed, succeed: the checks refuse only what is wrong."""
    results = _results(tmp_path, GOOD_RECORD)
    assert cli.main(["report", "--results", str(results), "--out", str(tmp_path / "rep")]) == 0
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world " * 50)
    tok = tmp_path / "tok.json"
    assert cli.main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "270",
                     "--out", str(tok)]) == 0
    assert cli.main(["tokenizer", "encode", "--tokenizer", str(tok), "--input",
                     str(corpus)]) == 0
    capsys.readouterr()


@pytest.fixture(scope="module")
def nli_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT classifier saved the way ``run nli.snli`` saves one."""
    import torch

    from scratchformer.data.nli_pairs import train_pair_tokenizer
    from scratchformer.models.gpt import GPTConfig
    from scratchformer.models.gpt_classifier import GPTClassifier
    from scratchformer.models.nli import save_classifier

    tok = train_pair_tokenizer(["a dog runs", "a cat sleeps"], 300)
    torch.manual_seed(0)
    model = GPTClassifier(GPTConfig(vocab_size=tok.vocab_size, context_len=32, n_layers=1,
                                    n_heads=2, d_model=16), 3)
    return save_classifier(model, tok, tmp_path_factory.mktemp("nli") / "ck")


def _files_as_list(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = list(manifest["files"])
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("damage", "words"), [
    (_files_as_list, ["manifest.json", "'files' must map"]),
    (lambda f: (f / "state.json").write_bytes(b"\xff" + (f / "state.json").read_bytes()[1:]),
     ["state.json"]),
    (lambda f: (f / "state.json").write_bytes(b"[" + (f / "state.json").read_bytes()[1:]),
     ["state.json"]),
    (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 64), ["model.safetensors"]),
], ids=["manifest files is a list", "state.json not UTF-8", "state.json not JSON",
        "model.safetensors truncated"])
def test_nli_on_a_broken_checkpoint_is_one_line_naming_the_file(
        nli_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, damage,
        words: list[str]) -> None:
    import shutil

    folder = Path(shutil.copytree(nli_checkpoint, tmp_path / "ck"))
    damage(folder)
    assert cli.main(["nli", "a dog runs", "a cat sleeps", "--checkpoint", str(folder)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scratchformer: error: "), lines
    for word in words:
        assert word in lines[0], lines[0]
    assert str(folder) in lines[0]
