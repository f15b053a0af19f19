"""``scratchformer generate``: streaming equals `generate`, seeds reproduce, UTF-8 is printed
whole, trained (base and LoRA) checkpoints generate, and bad inputs exit 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratchformer.cli import main
from scratchformer.generation import generate, stream
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.text_generation import Utf8Stream
from scratchformer.text_training import byte_tokenizer, encode, load_text_model
from scratchformer.training.checkpoint import save_checkpoint

TINY = ["--preset", "tiny", "--batch-size", "4", "--quiet", "--threads", "1"]
WORDS = ("über", "café", "the", "fox", "日本", "naïve", "dog", "and")


def _model(backend: str = "scratch") -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=19, context_len=10, n_layers=2, n_heads=2, d_model=16,
                    attention_backend=backend)
    return GPT(cfg).eval()


@pytest.mark.parametrize("backend", ["scratch", "sdpa"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_stream_yields_the_tokens_generate_appends(backend, use_cache):
    """Greedy and seeded sampling, past the context window (10) too."""
    model, prompt = _model(backend), torch.tensor([[1, 2, 3], [4, 5, 6]])
    for kw in ({"greedy": True}, {"temperature": 0.9, "top_k": 8, "top_p": 0.9}):
        full = generate(model, prompt, 12, use_cache=use_cache,
                        generator=torch.Generator().manual_seed(3), **kw)
        steps = list(stream(model, prompt, 12, use_cache=use_cache,
                            generator=torch.Generator().manual_seed(3), **kw))
        assert len(steps) == 12 and all(t.shape == (2,) for t in steps)
        assert torch.equal(torch.stack(steps, dim=1), full[:, 3:])


def test_stream_checks_arguments_at_once_and_leaves_grad_mode_alone():
    model = _model()
    with pytest.raises(ValueError, match="top_p"):
        stream(model, torch.tensor([[1]]), 3, top_p=0.0)  # no next() needed
    model.train()
    steps = stream(model, torch.tensor([[1]]), 3, greedy=True)
    next(steps)
    assert torch.is_grad_enabled()  # between steps the caller's mode holds
    assert not model.training
    steps.close()
    assert model.training  # restored when the iterator is closed


def test_utf8_stream_releases_only_whole_characters():
    tok = byte_tokenizer()
    text = Utf8Stream(tok)
    pieces = [text.push(b) for b in "é日".encode()]
    assert pieces == ["", "é", "", "", "日"]
    assert text.push(0xFF) == "\ufffd" and text.flush() == ""
    assert text.push(0xE6) == "" and text.flush() == "\ufffd"  # cut off at the end


def _corpus(root: Path) -> Path:
    folder = root / "corpus"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        picks = torch.randint(0, len(WORDS), (600,), generator=g).tolist()
        (folder / f"doc{i}.txt").write_text(" ".join(WORDS[j] for j in picks) + "\n",
                                            encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny base model and LoRA adapters on it, a few steps each (saved by the trainer)."""
    root = tmp_path_factory.mktemp("gen")
    corpus = _corpus(root)
    base, lora = root / "base", root / "lora"
    assert main(["train", *TINY, "--text", str(corpus), "--steps", "4", "--eval-every", "4",
                 "--out", str(base)]) == 0
    assert main(["train", *TINY, "--text", str(corpus), "--steps", "2", "--eval-every", "2",
                 "--init", str(base), "--lora", "2", "--out", str(lora)]) == 0
    return {"base": base, "lora": lora}


def _generate(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["generate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_greedy_cli_prints_the_prompt_and_the_decoded_generate_tokens(runs, capsys):
    code, out, err = _generate(capsys, "--checkpoint", str(runs["base"]), "--prompt", "café",
                               "--max-new-tokens", "24", "--temperature", "0")
    assert code == 0 and err == ""
    model, tok = load_text_model(runs["base"])
    ids = generate(model, encode(tok, "café")[None], 24, greedy=True)[0].tolist()
    assert out == tok.decode(ids) + "\n"


@pytest.mark.parametrize("which", ["base", "lora"])
def test_seed_makes_sampling_reproducible(runs, capsys, which):
    args = ["--checkpoint", str(runs[which]), "--prompt", "the ", "--max-new-tokens", "40",
            "--top-k", "50", "--top-p", "0.95", "--temperature", "1.5"]
    first = _generate(capsys, *args, "--seed", "7")
    again = _generate(capsys, *args, "--seed", "7")
    other = _generate(capsys, *args, "--seed", "8")
    assert first[0] == again[0] == other[0] == 0
    assert first[1] == again[1] and first[1].startswith("the ")
    assert other[1] != first[1]


def test_a_step_folder_generates(runs, capsys):
    step = sorted(runs["base"].glob("step_*"))[-1]
    code, out, _ = _generate(capsys, "--checkpoint", str(step), "--prompt", "fox",
                             "--max-new-tokens", "5", "--seed", "0")
    assert code == 0 and out.startswith("fox")


def _one_line_error(capsys, *args: str) -> str:
    code, out, err = _generate(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("scratchformer: error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize(("flags", "needle"), [
    (["--top-p", "0"], "top_p"),
    (["--top-p", "1.5"], "top_p"),
    (["--temperature", "-0.5"], "temperature"),
    (["--temperature", "nan"], "temperature"),
    (["--top-k", "0"], "top_k"),
    (["--max-new-tokens", "-1"], "max_new_tokens"),
    (["--prompt", ""], "prompt"),
])
def test_bad_sampling_arguments_exit_2(runs, capsys, flags, needle):
    args = ["--checkpoint", str(runs["base"]), "--prompt", "a", *flags]
    assert needle in _one_line_error(capsys, *args)


def test_missing_corrupt_and_foreign_checkpoints_exit_2(runs, capsys, tmp_path):
    assert "no such folder" in _one_line_error(
        capsys, "--checkpoint", str(tmp_path / "missing"), "--prompt", "a")
    # another architecture: a plain library checkpoint of some other model, no run.json
    other = tmp_path / "other"
    save_checkpoint(other / "step_0000001", model=torch.nn.Linear(3, 2))
    assert "another kind of checkpoint" in _one_line_error(
        capsys, "--checkpoint", str(other), "--prompt", "a")
    # a run.json describing a model this command cannot build
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    info = json.loads((runs["base"] / "run.json").read_text())
    info["model"]["n_experts_per_graph"] = 3
    (foreign / "run.json").write_text(json.dumps(info))
    assert "another architecture" in _one_line_error(
        capsys, "--checkpoint", str(foreign), "--prompt", "a")
    # corrupt weights: the checkpoint's checksum no longer matches
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in runs["base"].glob("*.json"):
        (corrupt / f.name).write_bytes(f.read_bytes())
    step = sorted(runs["base"].glob("step_*"))[-1]
    (corrupt / step.name).mkdir()
    for f in step.iterdir():
        data = f.read_bytes()
        if f.suffix == ".safetensors":
            data = data[:-8] + b"\x00" * 8
        (corrupt / step.name / f.name).write_bytes(data)
    _one_line_error(capsys, "--checkpoint", str(corrupt), "--prompt", "a")
