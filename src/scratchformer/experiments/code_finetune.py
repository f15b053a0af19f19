r"""Study ``code.finetune``: fine-tuning a GPT pretrained on English to Python source code.

**Corpus** (`scratchformer.data.code_corpus`): the ``.py`` files of the running interpreter's
standard library (test suites, ``idlelib``, ``lib2to3``, demos and generated tables left out),
deduplicated by content and split 90/5/5 **by file** on a hash of the relative path. The Python
version and a manifest hash of the file list are recorded, since the corpus differs between
interpreters.

**Tokenizer.** One byte-level BPE, trained on Tiny Shakespeare's train split *and* the code
train files, serves both phases, so the English model already has an embedding for every token
it meets in code. An English-only and a code-only BPE of the same size are trained only to
compare bytes/token on held-out code. Every model is scored in **bits per UTF-8 byte**: total
NLL in bits over the held-out files' bytes; each file is scored from its own start after one
file-separator token (``<|endoftext|>``, which also separates files in training).

**Models**, all the same GPT (sizes of the config), every run through the kit's ``train``:

1. ``finetune``: pretrained on Tiny Shakespeare for ``pretrain_steps`` steps, then fine-tuned
   on code for ``steps`` steps (all weights);
2. ``scratch``: the same GPT trained on code from scratch for the same ``steps`` (same batch,
   context and schedule: the same compute as the fine-tuning phase);
3. ``lora``: the pretrained GPT with rank-``lora_rank`` adapters on every attention and FFN
   projection (`scratchformer.nn.lora`), only the adapters trained for ``steps`` steps; the
   adapters are merged for evaluation (and checked against the unmerged model) and saved alone;
4. forgetting: Shakespeare validation bits/char before and after fine-tuning, full vs LoRA.

**Baselines** on the same held-out files: ``gzip``, ``bz2`` and ``lzma`` (per file and on the
concatenation; `scratchformer.analysis.compression`) and a byte n-gram with interpolated
Witten–Bell smoothing (`scratchformer.models.ngram`) whose order is picked on validation files.

**Code scores** (`scratchformer.analysis.code_eval`): syntactic validity of sampled function
bodies (``n_prompts`` held-out function headers with their first ``body_lines`` lines; fixed
temperature, top-p and length; cut to the last complete statement; `ast.parse`), for the LMs,
the n-gram model and the held-out file's own continuation (the reference: what the cut lets
through); and exact next-line completion by greedy decoding.

**Curves** are validation bits/byte (exact, on the validation files up to ``curve_bytes``,
scored as one stream) against training tokens; "compute to reach" is the first evaluation at
which the fine-tuned model is at or below the scratch model's final validation bits/byte.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from scratchformer.analysis.code_eval import (
    FilePrompt,
    function_prompts,
    lm_completer,
    next_line_exact_match,
    next_line_prompts,
    pick_prompts,
    syntactic_validity,
)
from scratchformer.analysis.compression import compression_report
from scratchformer.data.code_corpus import CodeFile, load_code_corpus, take_bytes
from scratchformer.data.errors import DataUnavailableError
from scratchformer.experiments.kit import (
    CharGPTConfig,
    TrainResult,
    at_least,
    gpt_config,
    lm_batches,
    lm_eval,
    positive,
    positive_real,
    text_split,
    torch_threads,
    train,
    train_config,
    unit_real,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.generation import sample_next_token
from scratchformer.models.gpt import GPT
from scratchformer.models.ngram import MAX_ORDER, ByteNGram
from scratchformer.nn.lora import apply_lora, lora_config, lora_state_dict, merge_lora, unmerge_lora
from scratchformer.tokenizers import BPETokenizer
from scratchformer.training.lm_metrics import sequence_nll
from scratchformer.viz.code import plot_bits_per_byte, plot_compute_curves

EOT = "<|endoftext|>"
LN2 = math.log(2)


@dataclass
class Config(CharGPTConfig):
    """Quick profile: a 2-layer width-64 GPT, ~300 KB of code, 60 steps per run."""

    corpus_root: str = ""  # folder of .py files; "" = the running interpreter's stdlib
    split_fractions: tuple[float, ...] = (0.9, 0.05, 0.05)
    code_train_bytes: int = 300_000  # code train files used (whole files); 0 = all
    code_eval_bytes: int = 30_000  # held-out test files scored (whole files); 0 = all
    curve_bytes: int = 10_000  # validation files of the training curves; 0 = all
    val_chars: int = 10_000
    bpe_vocab: int = 384
    pretrain_steps: int = 60
    steps: int = 60
    warmup_steps: int = 6
    eval_every: int = 30
    eval_batches: int = 10
    finetune_lr: float = 1e-3
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_lr: float = 3e-3
    ngram_orders: tuple[int, ...] = (3, 5)
    n_prompts: int = 16
    body_lines: int = 1
    prompt_tokens: int = 24
    sample_tokens: int = 40
    sample_chars: int = 100
    temperature: float = 0.8
    top_p: float = 0.95
    n_lines: int = 24
    line_tokens: int = 32
    max_line_chars: int = 60

    RULES: ClassVar[dict[str, Rule]] = {
        "bpe_vocab": at_least(258), "pretrain_steps": positive, "finetune_lr": positive_real,
        "lora_rank": positive, "lora_alpha": positive_real, "lora_lr": positive_real,
        "n_prompts": positive, "body_lines": positive, "prompt_tokens": positive,
        "sample_tokens": positive, "sample_chars": positive, "temperature": positive_real,
        "top_p": unit_real, "n_lines": positive, "line_tokens": positive,
        "max_line_chars": positive,
    }

    def check(self) -> None:
        super().check()
        if self.warmup_steps >= self.pretrain_steps:
            raise ValueError(f"warmup_steps must be < pretrain_steps={self.pretrain_steps}, "
                             f"got {self.warmup_steps}")
        longest = self.prompt_tokens + max(self.sample_tokens, self.line_tokens)
        if longest > self.context_len:
            raise ValueError(f"prompt_tokens + max(sample_tokens, line_tokens) = {longest} "
                             f"must be <= context_len={self.context_len}")
        if not self.ngram_orders or not all(1 <= o <= MAX_ORDER for o in self.ngram_orders):
            raise ValueError(f"ngram_orders must be orders in 1..{MAX_ORDER}, "
                             f"got {self.ngram_orders}")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-9:
            raise ValueError(f"split_fractions must be 3 numbers summing to 1, "
                             f"got {self.split_fractions}")


FULL = {"code_train_bytes": 0, "code_eval_bytes": 0, "curve_bytes": 60_000, "bpe_vocab": 1024,
        "text_chars": 0, "val_chars": 0, "n_layers": 3, "n_heads": 4, "d_model": 96,
        "context_len": 128, "batch_size": 8, "lr": 2e-3, "min_lr": 2e-4, "finetune_lr": 2e-3,
        "pretrain_steps": 400, "steps": 600, "warmup_steps": 50, "eval_every": 60,
        "eval_batches": 20, "ngram_orders": (3, 4, 5, 6), "n_prompts": 200,
        "prompt_tokens": 32, "sample_tokens": 96, "sample_chars": 256, "n_lines": 400,
        "line_tokens": 40, "max_line_chars": 80}


# --- data ---------------------------------------------------------------------------------


def file_ids(tok: BPETokenizer, files: list[CodeFile]) -> list[Tensor]:
    """Each file's token ids after one separator token (so its first token is scored too)."""
    eot = tok.special_tokens[EOT]
    return [torch.tensor([eot, *tok.encode_ordinary(f.text)], dtype=torch.long) for f in files]


def stream(ids: list[Tensor]) -> Tensor:
    """The files' ids (each led by its separator) as one training stream."""
    return torch.cat(ids)


def bytes_per_token(tok: BPETokenizer, texts: list[str]) -> float:
    """UTF-8 bytes per token of ``tok`` on ``texts``."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return n_bytes / sum(len(tok.encode_ordinary(t)) for t in texts)


# --- scores -------------------------------------------------------------------------------


def file_bits(model: nn.Module, ids: list[Tensor], context_len: int) -> list[float]:
    """Bits of each file (every token after its separator), each scored from its own start."""
    return [float(sequence_nll(model, x, context_len).double().sum()) / LN2 for x in ids]


def stream_bits_per_byte(model: nn.Module, ids: Tensor, eot: int, n_bytes: int,
                         context_len: int) -> float:
    """Bits/byte of a stream of files: separator predictions left out of the numerator."""
    nll = sequence_nll(model, ids, context_len)
    return float(nll[ids[1:] != eot].double().sum()) / LN2 / n_bytes


def text_bits_per_char(model: nn.Module, tok: BPETokenizer, text: str, context_len: int
                       ) -> float:
    """Bits per character of ``text`` (every token after one separator)."""
    ids = torch.tensor([tok.special_tokens[EOT], *tok.encode_ordinary(text)], dtype=torch.long)
    return float(sequence_nll(model, ids, context_len).double().sum()) / LN2 / len(text)


def ngram_completer(model: ByteNGram, n_new: int, *, greedy: bool, temperature: float = 1.0,
                    top_p: float | None = None, seed: int = 0):
    """Prompts -> continuations of ``n_new`` bytes from the n-gram model, decoded as UTF-8."""
    gen = torch.Generator().manual_seed(seed)

    def choose(logits: Tensor) -> Tensor:
        return sample_next_token(logits, temperature=temperature, top_p=top_p,
                                 greedy=greedy, generator=gen)

    def complete(prompts: list[str]) -> list[str]:
        out = model.extend([p.encode("utf-8") for p in prompts], n_new, choose)
        return [o[len(p.encode("utf-8")):].decode("utf-8", errors="replace")
                for o, p in zip(out, prompts, strict=True)]

    return complete


def compute_to_reach(tokens: list[float], curve: list[float], target: float) -> float | None:
    """Training tokens at the first evaluation at or below ``target`` (None: never)."""
    for t, v in zip(tokens, curve, strict=True):
        if v <= target:
            return t
    return None


# --- study --------------------------------------------------------------------------------


@register("code.finetune", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """English-pretrained vs from-scratch vs LoRA GPTs on Python code, in bits/byte, against
    compressors and a byte n-gram; validity, next-line completion and forgetting."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    corpus = load_code_corpus(Path(cfg.corpus_root) if cfg.corpus_root else None,
                              fractions=cfg.split_fractions)
    train_files = take_bytes(corpus.files("train"), cfg.code_train_bytes)
    test_files = take_bytes(corpus.files("test"), cfg.code_eval_bytes)
    val_files = take_bytes(corpus.files("val"), cfg.curve_bytes)
    for name, files in (("train", train_files), ("val", val_files), ("test", test_files)):
        if not files:
            raise DataUnavailableError(f"the code corpus has no {name} files; use a larger "
                                       f"corpus or other split_fractions")
    en_train, en_val = text_split(cfg)
    code_train = [f.text for f in train_files]
    test_texts = [f.text for f in test_files]
    test_bytes = sum(f.n_bytes for f in test_files)

    # Tokenizers: one joint BPE for both phases; English-only and code-only for comparison.
    t = time.perf_counter()
    tok = BPETokenizer.train([en_train, *code_train], cfg.bpe_vocab, special_tokens=(EOT,))
    tok_en = BPETokenizer.train(en_train, cfg.bpe_vocab, special_tokens=(EOT,))
    tok_code = BPETokenizer.train(code_train, cfg.bpe_vocab, special_tokens=(EOT,))
    tokenizers = {
        name: {"vocab_size": t_.vocab_size,
               "code_test_bytes_per_token": bytes_per_token(t_, test_texts),
               "english_val_bytes_per_token": bytes_per_token(t_, [en_val])}
        for name, t_ in (("joint", tok), ("english", tok_en), ("code", tok_code))}
    eot = tok.special_tokens[EOT]
    train_ids = stream(file_ids(tok, train_files))
    val_ids_list = file_ids(tok, val_files)
    val_stream, val_bytes = stream(val_ids_list), sum(f.n_bytes for f in val_files)
    test_ids = file_ids(tok, test_files)
    en_train_ids = torch.tensor(tok.encode_ordinary(en_train), dtype=torch.long)
    en_val_ids = torch.tensor(tok.encode_ordinary(en_val), dtype=torch.long)
    timings["tokenizers_s"] = time.perf_counter() - t

    def code_curve(model: nn.Module) -> dict[str, float]:
        return {"val_bits_per_byte": stream_bits_per_byte(model, val_stream, eot, val_bytes,
                                                          cfg.context_len)}

    code_batches = lm_batches(train_ids, cfg.batch_size, cfg.context_len)
    tokens_per_step = cfg.batch_size * cfg.context_len
    runs: dict[str, TrainResult] = {}
    with torch_threads(cfg.threads):
        # (1a) pretraining on English
        torch.manual_seed(cfg.seed)
        base = GPT(gpt_config(cfg, tok.vocab_size))
        t = time.perf_counter()
        runs["pretrain"] = train(
            base, train_config(cfg, max_steps=cfg.pretrain_steps, progress=False),
            lm_batches(en_train_ids, cfg.batch_size, cfg.context_len),
            eval_fn=lm_eval(en_val_ids, cfg.eval_batches, cfg.batch_size, cfg.context_len,
                            cfg.seed + 1), log_path=out / "train_log_pretrain.jsonl")
        timings["pretrain_s"] = time.perf_counter() - t
        pretrained = runs["pretrain"].model
        # (1b) full fine-tuning, (3) LoRA, (2) from scratch: same batches, steps and schedule
        t = time.perf_counter()
        runs["finetune"] = train(
            copy.deepcopy(pretrained), train_config(cfg, lr=cfg.finetune_lr,
                                                    min_lr=cfg.finetune_lr / 10, progress=False),
            code_batches, eval_fn=code_curve, log_path=out / "train_log_finetune.jsonl")
        timings["finetune_s"] = time.perf_counter() - t
        lora_model = copy.deepcopy(pretrained)
        wrapped = apply_lora(lora_model, cfg.lora_rank, cfg.lora_alpha)
        t = time.perf_counter()
        runs["lora"] = train(
            lora_model, train_config(cfg, lr=cfg.lora_lr, min_lr=cfg.lora_lr / 10,
                                     weight_decay=0.0, progress=False),
            code_batches, eval_fn=code_curve, log_path=out / "train_log_lora.jsonl")
        timings["lora_s"] = time.perf_counter() - t
        torch.manual_seed(cfg.seed)
        t = time.perf_counter()
        runs["scratch"] = train(
            GPT(gpt_config(cfg, tok.vocab_size)), train_config(cfg, progress=False), code_batches,
            eval_fn=code_curve, log_path=out / "train_log_scratch.jsonl")
        timings["scratch_s"] = time.perf_counter() - t

        # LoRA: merged and unmerged must give the same scores; evaluation uses merged weights.
        t = time.perf_counter()
        lora_bits_unmerged = file_bits(lora_model, test_ids[:1], cfg.context_len)[0]
        merge_lora(lora_model)
        lora_bits_merged = file_bits(lora_model, test_ids[:1], cfg.context_len)[0]
        models = {"english_only": pretrained, "finetune": runs["finetune"].model,
                  "lora": lora_model, "scratch": runs["scratch"].model}
        per_file = {name: file_bits(m, test_ids, cfg.context_len) for name, m in models.items()}
        lm_bpb = {name: sum(b) / test_bytes for name, b in per_file.items()}
        forgetting = {name: text_bits_per_char(m, tok, en_val, cfg.context_len)
                      for name, m in models.items()}
        timings["lm_eval_s"] = time.perf_counter() - t

        # Baselines on the same files.
        t = time.perf_counter()
        compressors = compression_report(test_texts)
        ngram_val: dict[str, float] = {}
        ngrams: dict[int, ByteNGram] = {}
        val_texts = [f.text for f in val_files]
        for order in cfg.ngram_orders:
            ngrams[order] = ByteNGram(order).fit(code_train)
            ngram_val[str(order)] = ngrams[order].bits_per_byte(val_texts)
        best_order = min(cfg.ngram_orders, key=lambda o: ngram_val[str(o)])
        ngram = ngrams[best_order]
        ngram_file_bits = [ngram.nll_bits(x) for x in test_texts]
        timings["baselines_s"] = time.perf_counter() - t

        # Code scores: validity of sampled functions, next-line exact match.
        t = time.perf_counter()
        fn_prompts = pick_prompts([p for f in test_files for p in
                                   function_prompts(f.path, f.text, cfg.body_lines)],
                                  cfg.n_prompts, cfg.seed)
        line_prompts = pick_prompts([p for f in test_files for p in
                                     next_line_prompts(f.path, f.text, cfg.max_line_chars)],
                                    cfg.n_lines, cfg.seed)
        validity, next_line = _code_scores(cfg, tok, eot, models, ngram, fn_prompts,
                                           line_prompts)
        timings["code_scores_s"] = time.perf_counter() - t

    # Checkpoints: the full model vs the adapters alone.
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    full_path = ckpt / "finetune_full.safetensors"
    save_file({k: v.contiguous() for k, v in runs["finetune"].model.state_dict().items()},
              str(full_path))
    unmerge_lora(lora_model)
    lora_path = ckpt / "lora_adapters.safetensors"
    save_file(lora_state_dict(lora_model), str(lora_path))

    curves = {name: {"tokens": [s * tokens_per_step for s in runs[name].curve["step"]],
                     "val_bits_per_byte": runs[name].curve["val_bits_per_byte"]}
              for name in ("finetune", "lora", "scratch")}
    pretrain_tokens = cfg.pretrain_steps * tokens_per_step
    scratch_final = curves["scratch"]["val_bits_per_byte"][-1]
    reach = compute_to_reach(curves["finetune"]["tokens"],
                             curves["finetune"]["val_bits_per_byte"], scratch_final)
    scratch_tokens = cfg.steps * tokens_per_step
    n_params = runs["finetune"].model.num_parameters()
    n_lora = sum(p.numel() for p in lora_model.parameters() if p.requires_grad)
    lzma = compressors["lzma"]
    lzma_file = np.array(lzma["file_bits_per_byte"])
    model_file = {name: np.array(b) / np.array([f.n_bytes for f in test_files])
                  for name, b in per_file.items()}

    figures_bars = {**{f"GPT {k}": v for k, v in lm_bpb.items()},
                    f"byte {best_order}-gram (Witten-Bell)": sum(ngram_file_bits) / test_bytes,
                    **{f"{m} (per file)": r["per_file_bits_per_byte"]
                       for m, r in compressors.items()},
                    **{f"{m} (concatenated)": r["concatenated_bits_per_byte"]
                       for m, r in compressors.items()}}
    plot_bits_per_byte(figures_bars, out / "bits_per_byte.png")
    plot_compute_curves(
        {k: (v["tokens"], v["val_bits_per_byte"]) for k, v in curves.items()},
        {"lzma (val, concatenated)": compression_report(val_texts)["lzma"][
            "concatenated_bits_per_byte"],
         f"byte {best_order}-gram (val)": ngram_val[str(best_order)]},
        out / "curves.png", offsets={"finetune": pretrain_tokens})
    _write_samples(out / "samples.md", validity)
    for v in validity.values():
        v.pop("examples", None)

    return {
        "corpus": corpus.summary() | {
            "used_files": {"train": len(train_files), "val": len(val_files),
                           "test": len(test_files)},
            "used_bytes": {"train": sum(f.n_bytes for f in train_files), "val": val_bytes,
                           "test": test_bytes},
            "test_files": [f.path for f in test_files]},
        "tokenizers": tokenizers,
        "tokens": {"code_train": int(train_ids.numel()), "english_train": int(
            en_train_ids.numel()), "per_step": tokens_per_step,
            "pretrain": pretrain_tokens, "code_phase": scratch_tokens},
        "bits_per_byte": {
            "models": lm_bpb,
            "ngram": {"order": best_order, "test": sum(ngram_file_bits) / test_bytes,
                      "val_by_order": ngram_val},
            "compressors": {m: {k: r[k] for k in ("per_file_bits_per_byte",
                                                  "concatenated_bits_per_byte")}
                            for m, r in compressors.items()},
            "finetune_vs_lzma_concatenated": lm_bpb["finetune"] / lzma[
                "concatenated_bits_per_byte"] - 1,
            "finetune_vs_lzma_per_file": lm_bpb["finetune"] / lzma["per_file_bits_per_byte"] - 1,
            "files_below_lzma": {name: float((v < lzma_file).mean())
                                 for name, v in model_file.items()},
        },
        "curves": curves,
        "compute": {
            "scratch_final_val_bits_per_byte": scratch_final,
            "finetune_final_val_bits_per_byte": curves["finetune"]["val_bits_per_byte"][-1],
            "finetune_tokens_to_scratch_final": reach,
            "finetune_code_compute_saved": None if reach is None else 1 - reach / scratch_tokens,
            "finetune_total_compute_ratio": None if reach is None else
            (reach + pretrain_tokens) / scratch_tokens,
            "flops_per_token": 6 * n_params,
        },
        "lora": {
            "rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "wrapped": len(wrapped),
            "config": lora_config(lora_model),
            "trainable_parameters": n_lora, "full_parameters": n_params,
            "trainable_fraction": n_lora / n_params,
            "bits_per_byte_gap": lm_bpb["lora"] - lm_bpb["finetune"],
            "merge_bits_difference": abs(lora_bits_merged - lora_bits_unmerged),
            "checkpoint_bytes": lora_path.stat().st_size,
            "full_checkpoint_bytes": full_path.stat().st_size,
            "train_s": runs["lora"].train_s, "full_train_s": runs["finetune"].train_s,
        },
        "forgetting": {
            "english_val_bits_per_char": forgetting,
            "finetune_increase": forgetting["finetune"] - forgetting["english_only"],
            "lora_increase": forgetting["lora"] - forgetting["english_only"],
            "pretrain_val_loss": runs["pretrain"].final("val_loss"),
        },
        "validity": validity,
        "next_line": next_line,
        "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p,
                     "sample_tokens": cfg.sample_tokens, "sample_chars": cfg.sample_chars,
                     "prompt_tokens": cfg.prompt_tokens, "body_lines": cfg.body_lines},
        "timings": timings | {"ms_per_step": {k: r.ms_per_step for k, r in runs.items()},
                              "total_s": time.perf_counter() - t0},
    }


def _code_scores(cfg: Config, tok: BPETokenizer, eot: int, models: dict[str, nn.Module],
                 ngram: ByteNGram, fn_prompts: list[FilePrompt],
                 line_prompts: list[FilePrompt]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validity of sampled functions and next-line exact match, per model and baseline."""
    texts = [p.prompt for p in fn_prompts]
    lines = [p.prompt for p in line_prompts]
    validity: dict[str, Any] = {}
    next_line: dict[str, Any] = {}
    for name in ("finetune", "lora", "scratch"):
        sample = lm_completer(models[name], tok.encode_ordinary, tok.decode,
                              prompt_tokens=cfg.prompt_tokens, new_tokens=cfg.sample_tokens,
                              pad_id=eot, temperature=cfg.temperature, top_p=cfg.top_p,
                              seed=cfg.seed)
        validity[name] = syntactic_validity(fn_prompts, sample(texts), cfg.sample_chars)
        greedy = lm_completer(models[name], tok.encode_ordinary, tok.decode,
                              prompt_tokens=cfg.prompt_tokens, new_tokens=cfg.line_tokens,
                              pad_id=eot, greedy=True)
        next_line[name] = next_line_exact_match(line_prompts, greedy(lines))
    validity["ngram"] = syntactic_validity(
        fn_prompts, ngram_completer(ngram, cfg.sample_chars, greedy=False,
                                    temperature=cfg.temperature, top_p=cfg.top_p,
                                    seed=cfg.seed)(texts), cfg.sample_chars)
    next_line["ngram"] = next_line_exact_match(
        line_prompts, ngram_completer(ngram, cfg.max_line_chars + 2, greedy=True)(lines))
    validity["reference"] = syntactic_validity(
        fn_prompts, [p.text[p.end:p.end + cfg.sample_chars] for p in fn_prompts],
        cfg.sample_chars)
    return validity, next_line


def _write_samples(path: Path, validity: dict[str, Any]) -> Path:
    """A few cut samples of each model, marked valid or not."""
    lines = ["# Sampled function bodies (cut to the last complete statement)", ""]
    for name, v in validity.items():
        lines += [f"## {name}: {v['valid']}/{v['n']} parse", ""]
        for ex in v.get("examples", []):
            lines += [f"`{ex['path']}` — {'valid' if ex['valid'] else 'invalid'}", "",
                      "```python", ex["code"].rstrip("\n"), "```", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
