"""``scratchformer train``: trains on a folder, resumes bit for bit, fine-tunes with LoRA, and
turns every bad input into one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scratchformer import text_training
from scratchformer.cli import main
from scratchformer.nn.lora import lora_adapters
from scratchformer.text_training import encode, load_text_model, read_texts, split_texts
from scratchformer.training.lm_metrics import estimate_loss
from scratchformer.training.metrics_log import read_log

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a",
         "cat", "sleeps", "on", "the", "warm", "mat", "and", "birds", "sing", "in", "the", "old",
         "oak", "tree", "near", "the", "river", "bank")


def _text(seed: int, n_words: int = 1500) -> str:
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(WORDS), (n_words,), generator=g).tolist()
    return " ".join(WORDS[i] for i in picks) + "\n"


def _corpus(root: Path, seeds: tuple[int, ...] = (1, 2, 3)) -> Path:
    folder = root / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i, seed in enumerate(seeds):
        (folder / ("sub" if i == 0 else ".") / f"doc{i}.txt").write_text(_text(seed))
    (folder / "image.bin").write_bytes(bytes(range(256)) * 4)  # not text: skipped
    return folder


TINY = ["--preset", "tiny", "--batch-size", "8", "--quiet", "--threads", "1"]


def _train(*args: str) -> int:
    return main(["train", *TINY, *args])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 30 steps on a three-file folder."""
    root = tmp_path_factory.mktemp("base")
    out = root / "run"
    assert _train("--text", str(_corpus(root)), "--steps", "30", "--eval-every", "15",
                  "--out", str(out)) == 0
    return out


def _val_ids(run: Path) -> torch.Tensor:
    """The validation ids of a run, rebuilt from its recorded files and split."""
    info = json.loads((run / "run.json").read_text())
    files, _ = read_texts(info["data"]["files"])
    _, tok = load_text_model(run)
    return encode(tok, split_texts(files, info["train"]["val_fraction"]).val)


def test_train_on_a_folder_writes_a_loadable_checkpoint_and_the_loss_falls(base_run):
    info = json.loads((base_run / "run.json").read_text())
    assert info["data"]["split"] == "file" and info["data"]["n_files"] == 3  # .bin skipped
    assert len(info["data"]["val_files"]) == 1
    log = read_log(base_run / "log.jsonl")
    losses = [r["loss"] for r in log]
    assert [r["step"] for r in log] == [10, 15, 20, 30]  # every 10, and at each evaluation
    assert losses[-1] < losses[0] - 0.5  # step 10 -> step 30 (ln 256 = 5.55 at the start)
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    assert len(vals) == 2 and vals[1] < vals[0]
    assert all(r["tokens_per_s"] > 0 for r in log)
    model, tok = load_text_model(base_run)
    assert tok.vocab_size == model.config.vocab_size == 256
    assert not model.training
    # The reloaded model is the trained one: it reproduces the run's final validation loss.
    s = info["train"]
    again = estimate_loss(model, _val_ids(base_run), s["eval_batches"], s["batch_size"],
                          model.config.context_len, s["seed"])
    assert again == pytest.approx(vals[-1], rel=1e-6, abs=1e-6)
    assert (base_run / "tokenizer.json").is_file()
    assert sorted(p.name for p in base_run.glob("step_*")) == ["step_0000030"]


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_resume_after_a_crash_gives_the_weights_of_an_uninterrupted_run(kind, base_run, tmp_path,
                                                                        monkeypatch):
    corpus = _corpus(tmp_path, seeds=(7,))
    common = ["--text", str(corpus), "--steps", "12", "--eval-every", "4"]
    if kind == "lora":
        common += ["--init", str(base_run), "--lora", "2"]
    assert _train(*common, "--out", str(tmp_path / "whole")) == 0

    real_train = text_training.train

    def crash_at_10(trainer, step, record):
        if step == 10:
            raise KeyboardInterrupt

    def crashing_train(*args, **kwargs):
        return real_train(*args, **kwargs, on_step=[crash_at_10])

    monkeypatch.setattr(text_training, "train", crashing_train)
    assert _train(*common, "--out", str(tmp_path / "cut")) == 130
    assert sorted(p.name for p in (tmp_path / "cut").glob("step_*")) == ["step_0000008"]
    steps_run: list[int] = []

    def counting_train(*args, **kwargs):
        return real_train(*args, **kwargs, on_step=[lambda t, step, r: steps_run.append(step)])

    monkeypatch.setattr(text_training, "train", counting_train)
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume", "--quiet",
                 "--threads", "1"]) == 0
    assert steps_run == [9, 10, 11, 12]  # continued from the step-8 checkpoint

    whole = load_file(str(tmp_path / "whole" / "step_0000012" / "model.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "step_0000012" / "model.safetensors"))
    assert whole.keys() == cut.keys()
    assert all(k.endswith((".lora_A", ".lora_B")) for k in whole) == (kind == "lora")
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key
    log_whole = read_log(tmp_path / "whole" / "log.jsonl")
    log_cut = read_log(tmp_path / "cut" / "log.jsonl")
    assert [r["step"] for r in log_cut] == [r["step"] for r in log_whole]
    assert [r["loss"] for r in log_cut] == [r["loss"] for r in log_whole]


def test_lora_fine_tune_saves_only_adapters_and_reloads_to_the_trained_model(base_run,
                                                                           tmp_path):
    new_text = tmp_path / "new.txt"
    new_text.write_text(_text(11).replace("the", "THE"))
    out = tmp_path / "lora"
    assert _train("--text", str(new_text), "--init", str(base_run), "--lora", "4",
                  "--steps", "10", "--eval-every", "5", "--out", str(out)) == 0
    adapters = out / "step_0000010" / "model.safetensors"
    base_file = base_run / "step_0000030" / "model.safetensors"
    saved = load_file(str(adapters))
    assert saved and all(k.endswith((".lora_A", ".lora_B")) for k in saved)
    assert adapters.stat().st_size * 4 < base_file.stat().st_size
    info = json.loads((out / "run.json").read_text())
    assert info["lora"]["rank"] == 4 and info["lora"]["base"]["model_sha256"]

    model, _ = load_text_model(out)
    base, _ = load_text_model(base_run)
    assert len(lora_adapters(model)) == 2 * 6
    for key, tensor in saved.items():  # the adapters are the saved ones
        name, part = key.rsplit(".", 1)
        assert torch.equal(getattr(lora_adapters(model)[name], part), tensor)
    x = encode(load_text_model(out)[1], _text(12)[:64]).unsqueeze(0)
    with torch.no_grad():
        assert not torch.allclose(model(x)[0], base(x)[0], atol=1e-4)  # adapters trained
    # ... and reloading gives the trained function: the run's final validation loss again.
    log = read_log(out / "log.jsonl")
    s = info["train"]
    again = estimate_loss(model, _val_ids(out), s["eval_batches"], s["batch_size"],
                          model.config.context_len, s["seed"])
    assert again == pytest.approx(log[-1]["val_loss"], rel=1e-6, abs=1e-6)


def _one_line_error(capsys: pytest.CaptureFixture, rc: int, match: str) -> None:
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scratchformer: error:"), err
    assert match in lines[0], lines[0]


def test_input_errors_exit_2_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    _one_line_error(capsys, _train("--text", str(empty), "--out", str(tmp_path / "o")),
                    "the input is empty")
    binary = tmp_path / "blob.dat"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    _one_line_error(capsys, _train("--text", str(binary), "--out", str(tmp_path / "o")),
                    "not UTF-8 text")
    _one_line_error(capsys, _train("--text", str(tmp_path / "nope.txt"),
                                   "--out", str(tmp_path / "o")), "no such file or folder")
    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "x.bin").write_bytes(b"\0\1\2")
    _one_line_error(capsys, _train("--text", str(tmp_path / "bins"),
                                   "--out", str(tmp_path / "o")), "no UTF-8 text files")
    short = tmp_path / "short.txt"
    short.write_text("hello world\n")
    _one_line_error(capsys, _train("--text", str(short), "--out", str(tmp_path / "o")),
                    "too little text")


def test_option_errors_exit_2_with_one_line(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(_text(3))
    _one_line_error(capsys, _train("--text", str(text), "--lora", "4",
                                   "--out", str(tmp_path / "o")), "--lora needs --init")
    (tmp_path / "fresh").mkdir()
    _one_line_error(capsys, main(["train", "--resume", "--out", str(tmp_path / "fresh")]),
                    "no checkpoint")
    _one_line_error(capsys, _train("--resume", "--out", str(tmp_path / "fresh")),
                    "drop --init, --lora, --preset and --tokenizer")
    not_a_run = tmp_path / "other"
    not_a_run.mkdir()
    _one_line_error(capsys, _train("--text", str(text), "--init", str(not_a_run),
                                   "--out", str(tmp_path / "o")), "not a text-model folder")


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_init_of_another_architecture_or_corrupt_exits_2(base_run, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(_text(3))
    _one_line_error(capsys, _train("--text", str(text), "--out", str(base_run)),
                    "already holds a run; use --resume")
    wider = _copy_run(base_run, tmp_path / "wider")  # run.json says d_model 128, weights 64
    info = json.loads((wider / "run.json").read_text())
    info["model"]["d_model"] = 128
    (wider / "run.json").write_text(json.dumps(info))
    _one_line_error(capsys, _train("--text", str(text), "--init", str(wider),
                                   "--out", str(tmp_path / "o")), "does not fit the model")

    corrupt = _copy_run(base_run, tmp_path / "corrupt")
    weights = corrupt / "step_0000030" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    _one_line_error(capsys, _train("--text", str(text), "--init", str(corrupt),
                                   "--out", str(tmp_path / "o")), "sha256")
    assert not (tmp_path / "o").exists()  # nothing written for a refused run
