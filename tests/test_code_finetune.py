"""Compressor baselines, code scores (prompts, cut to the last statement, validity, next line),
and the ``code.finetune`` study end to end on a tiny corpus of standard-library files."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import json
import lzma
import shutil
from pathlib import Path

import pytest
import torch

from scratchformer.analysis.code_eval import (
    cut_to_last_statement,
    function_prompts,
    is_parseable,
    lm_completer,
    next_line_exact_match,
    next_line_prompts,
    syntactic_validity,
)
from scratchformer.analysis.compression import compressed_bits, compression_report
from scratchformer.data.code_corpus import stdlib_root
from scratchformer.experiments.registry import StudyError, get
from scratchformer.experiments.runner import run_study
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.tokenizers import BPETokenizer

SOURCE = '''import os


def first(items, default=None):
    """The first item, or default."""
    for item in items:
        return item
    return default


class Box:
    @property
    def size(self):
        return len(self.items)

    def add(self, item):
        if item is None:
            raise ValueError("no item")
        else:
            self.items.append(item)
        return self
'''


# --- compressors ------------------------------------------------------------------------------


def test_compressor_bits_are_eight_times_the_compressed_length() -> None:
    data = SOURCE.encode()
    assert compressed_bits(SOURCE, "gzip") == 8 * len(gzip.compress(data, 9, mtime=0))
    assert compressed_bits(SOURCE, "bz2") == 8 * len(bz2.compress(data, 9))
    assert compressed_bits(data, "lzma") == 8 * len(
        lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    with pytest.raises(ValueError, match="method must be one of"):
        compressed_bits(SOURCE, "zip")


def test_compression_report_per_file_and_concatenated() -> None:
    texts = [SOURCE, SOURCE.replace("item", "thing"), "x = 1\n"]
    report = compression_report(texts)
    n = sum(len(t.encode()) for t in texts)
    for method, r in report.items():
        bits = [compressed_bits(t, method) for t in texts]
        assert r["per_file_bits_per_byte"] == pytest.approx(sum(bits) / n)
        joined = "\n".join(texts).encode()
        assert r["concatenated_bits_per_byte"] == pytest.approx(
            compressed_bits(joined, method) / len(joined))
        # near-duplicate files compress better together than apart
        assert r["concatenated_bits_per_byte"] < r["per_file_bits_per_byte"]


# --- cut to the last complete statement -------------------------------------------------------


@pytest.mark.parametrize("cut_at", range(40, len(SOURCE), 9))
def test_any_truncation_of_valid_code_cuts_to_parseable_code(cut_at: int) -> None:
    start = SOURCE.index("    def add")
    method = "\n".join(line[4:] for line in SOURCE[start:].split("\n"))
    for code in (SOURCE[:cut_at], method[:max(cut_at - start, 1)]):
        cut = cut_to_last_statement(code)
        if cut is not None:
            assert is_parseable(cut), cut
            assert code.startswith(cut)


def test_cut_waits_for_the_whole_compound_statement() -> None:
    code = "def f(x):\n    y = 1\n    if x:\n        y = 2\n    else:\n        y = 3\n    return y"
    cut = cut_to_last_statement(code)
    assert cut == "def f(x):\n    y = 1\n    if x:\n        y = 2\n    else:\n        y = 3\n"
    # a truncated try (no except yet) is cut back before it
    code = "def g():\n    a = 1\n    try:\n        a = h()\n    exc"
    assert cut_to_last_statement(code) == "def g():\n    a = 1\n"


def test_cut_stops_where_the_function_ends_and_skips_decorators() -> None:
    code = "def f():\n    return 1\n\n@decorator\ndef g(:\n    pass\n"
    assert cut_to_last_statement(code) == "def f():\n    return 1\n"
    assert cut_to_last_statement("def f():\n    @dec\n    def g():\n        pass\n    x = 1") == \
        "def f():\n    @dec\n    def g():\n        pass\n"


def test_cut_returns_none_when_no_statement_is_complete() -> None:
    assert cut_to_last_statement("def f():\n    return (1 +") is None
    assert cut_to_last_statement("def f():\n    x = 1\n    y", min_end=30) is None


def test_invalid_generated_code_stays_invalid() -> None:
    code = "def f():\n    x = = 1\n    y = 2\n    z"
    cut = cut_to_last_statement(code)
    assert cut is not None and not is_parseable(cut)


# --- prompts and scores -----------------------------------------------------------------------


def test_function_prompts_end_after_the_first_body_line() -> None:
    prompts = function_prompts("m.py", SOURCE, body_lines=1)
    assert [p.prompt.split("\n")[-1] for p in prompts] == [
        '    """The first item, or default."""', "        if item is None:"]
    assert [p.indent for p in prompts] == ["", "    "]  # `size` fits whole in its prompt


def test_the_files_own_continuation_is_valid_and_garbage_is_not() -> None:
    prompts = function_prompts("m.py", SOURCE, body_lines=1)
    true = [p.text[p.end:] for p in prompts]
    assert syntactic_validity(prompts, true, 400)["valid_rate"] == 1.0
    junk = ["\n    x = = )\n    y = 1\n    z" for _ in prompts]
    assert syntactic_validity(prompts, junk, 400)["valid"] == 0
    empty = syntactic_validity(prompts, ["" for _ in prompts], 400)
    assert empty["no_complete_statement"] == len(prompts)


def test_next_line_exact_match_needs_the_whole_line() -> None:
    prompts = next_line_prompts("m.py", SOURCE)
    assert prompts and all(p.prompt + "\n" + p.target == SOURCE[:p.start + len(p.target)]
                           for p in prompts)
    right = [p.text[p.end:] for p in prompts]
    assert next_line_exact_match(prompts, right)["exact_rate"] == 1.0
    clipped = ["\n" + p.target[:-1] + "\n" for p in prompts]
    assert next_line_exact_match(prompts, clipped)["exact"] == 0


def test_lm_completer_returns_the_new_text_of_every_prompt() -> None:
    tok = BPETokenizer.train(SOURCE * 3, 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_len=24, n_layers=1, n_heads=2,
                          d_model=16))
    eot = tok.special_tokens["<|endoftext|>"]
    complete = lm_completer(model, tok.encode_ordinary, tok.decode, prompt_tokens=8,
                            new_tokens=5, pad_id=eot, greedy=True, batch_size=2)
    prompts = ["def", SOURCE[:200], SOURCE]
    out = complete(prompts)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert out == complete(prompts)  # greedy is deterministic


# --- the study --------------------------------------------------------------------------------


TINY = {"code_train_bytes": 0, "code_eval_bytes": 0, "curve_bytes": 0, "bpe_vocab": 300,
        "split_fractions": (0.5, 0.25, 0.25), "n_layers": 1, "pretrain_steps": 4, "steps": 4,
        "warmup_steps": 1, "eval_every": 2, "ngram_orders": (2, 3), "n_prompts": 3,
        "prompt_tokens": 8, "sample_tokens": 8, "sample_chars": 40, "n_lines": 4,
        "line_tokens": 8, "max_line_chars": 40}
FILES = ("keyword.py", "bisect.py", "colorsys.py", "nturl2path.py", "stat.py", "glob.py",
         "fnmatch.py", "genericpath.py", "sched.py", "numbers.py", "shlex.py", "copy.py")


def test_quick_study_runs_end_to_end_on_a_tiny_corpus(tiny_char_lm, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    for name in FILES:
        if (stdlib_root() / name).is_file():
            shutil.copy(stdlib_root() / name, root / name)
    study = get("code.finetune")
    cfg = dataclasses.replace(study.config("quick"), **{**tiny_char_lm, **TINY},
                              corpus_root=str(root))
    record = run_study(study, cfg, tmp_path / "out")
    m = record["metrics"]
    out = tmp_path / "out" / "code.finetune"
    assert {"bits_per_byte.png", "curves.png"} <= set(record["figures"])
    assert json.loads((out / "metrics.json").read_text())["metrics"]["corpus"]["manifest_sha256"]
    assert set(m["bits_per_byte"]["models"]) == {"english_only", "finetune", "lora", "scratch"}
    assert all(v > 0 for v in m["bits_per_byte"]["models"].values())
    assert m["lora"]["merge_bits_difference"] < 1e-3
    assert 0 < m["lora"]["trainable_fraction"] < 1
    assert m["lora"]["checkpoint_bytes"] < m["lora"]["full_checkpoint_bytes"]
    assert m["corpus"]["python_version"] == record["versions"]["python"]
    assert len(m["curves"]["scratch"]["val_bits_per_byte"]) == 2
    assert set(m["validity"]) == {"finetune", "lora", "scratch", "ngram", "reference"}


def test_bad_settings_fail_when_the_config_is_built() -> None:
    study = get("code.finetune")
    with pytest.raises(StudyError, match="context_len"):
        study.config("quick", {"prompt_tokens": "60"})
    with pytest.raises(StudyError, match="ngram_orders"):
        study.config("quick", {"ngram_orders": "3,9"})
    with pytest.raises(StudyError, match="pretrain_steps"):
        study.config("quick", {"pretrain_steps": "3"})
