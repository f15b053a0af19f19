"""KV-cached greedy decoding: our GPT (sdpa and scratch attention) against Hugging Face GPT-2.

One Hugging Face ``GPT2LMHeadModel`` of GPT-2-small shape (12 layers, width 768, 12 heads,
vocabulary 50257, context 1024) is initialised at random and its weights are copied into our
`GPT` with the library's converter (`scratchformer.models.hf_gpt2.load_hf_gpt2_state`), so every
contender computes the same function. Each decodes ``--new-tokens`` tokens greedily after a
random ``--prompt-len``-token prompt, batch 1, with its KV cache: ours through
`scratchformer.generation.generate`, HF through ``GPT2LMHeadModel.generate(do_sample=False)``.

Before timing, the script checks that all contenders produce the same tokens and that every
step's logits agree with HF's to ``--atol`` (max abs), and reports each contender's distance
to the same model decoded in float64 (its float32 rounding error, HF's included). Then it
times them interleaved (``benchmarks.common.interleaved_timings``: one call of each per round,
order rotating), and reports each one's median and the median of the per-round ratios to
HF, with their interquartile ranges. Ratios, not absolute times, are the result on a shared
machine. Run from the repository root::

    python -m benchmarks.decode --threads 1                 # 20 rounds
    python -m benchmarks.decode --threads 1 --rounds 5      # quicker
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.common import interleaved_timings, machine_info, summarize
from scratchformer.generation import generate
from scratchformer.models.gpt import GPT
from scratchformer.models.hf_gpt2 import gpt_config_from_hf, load_hf_gpt2_state

NAME = "decode"
SHAPE = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
BACKENDS = ("sdpa", "scratch")


def build_models(seed: int) -> tuple[torch.nn.Module, dict[str, GPT]]:
    """A random HF GPT-2 and one copy of its weights in our GPT per attention backend."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**SHAPE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(config).eval()
    hf.generation_config.eos_token_id = None  # decode exactly the requested number of tokens
    hf.generation_config.pad_token_id = 0
    ours = {}
    for backend in BACKENDS:
        model = GPT(gpt_config_from_hf(config, attention_backend=backend))
        ours[backend] = load_hf_gpt2_state(model, hf.state_dict()).eval()
    return hf, ours


def hf_decode(hf: torch.nn.Module, prompt: Tensor, new: int,
              logits: bool = False) -> tuple[Tensor, Tensor | None]:
    """HF's greedy ``generate`` with its cache: tokens (1, T + new) and step logits."""
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                      min_new_tokens=new, do_sample=False, use_cache=True,
                      output_logits=logits, return_dict_in_generate=True)
    step_logits = torch.stack(out.logits, dim=1) if logits else None
    return out.sequences, step_logits


def our_decode(model: GPT, prompt: Tensor, new: int,
               logits: bool = False) -> tuple[Tensor, Tensor | None]:
    """Our greedy `generate` with its KV cache: tokens (1, T + new) and step logits."""
    if logits:
        return generate(model, prompt, new, greedy=True, return_logits=True)
    return generate(model, prompt, new, greedy=True), None


def check_agreement(hf, ours: dict[str, GPT], prompt: Tensor, new: int,
                    atol: float) -> tuple[dict[str, float], dict[str, float]]:
    """Raise unless every contender's tokens equal HF's and its logits are within ``atol``.

    Returns the max abs logit difference of each of ours to HF, and of every contender (HF
    included) to the same model decoded in float64: the float32 rounding error of each.
    """
    ref_tokens, ref_logits = hf_decode(hf, prompt, new, logits=True)
    exact = copy.deepcopy(next(iter(ours.values()))).double()
    exact_tokens, exact_logits = our_decode(exact, prompt, new, logits=True)
    del exact
    if not torch.equal(exact_tokens, ref_tokens):
        raise AssertionError("the float64 model generated different tokens from HF")
    diffs, errors = {}, {"hf": (ref_logits.double() - exact_logits).abs().max().item()}
    for name, model in ours.items():
        tokens, logits = our_decode(model, prompt, new, logits=True)
        if not torch.equal(tokens, ref_tokens):
            raise AssertionError(f"ours-{name} generated different tokens from HF")
        diffs[name] = (logits - ref_logits).abs().max().item()
        errors[f"ours-{name}"] = (logits.double() - exact_logits).abs().max().item()
        if diffs[name] > atol:
            raise AssertionError(f"ours-{name} logits differ from HF's by {diffs[name]:.3g}")
    return diffs, errors


def ratio_stats(samples: dict[str, list[float]], ref: str) -> dict[str, dict[str, float]]:
    """Median and quartiles of the per-round ratios of each contender to ``ref``."""
    out = {}
    for name, xs in samples.items():
        ratios = [x / r for x, r in zip(xs, samples[ref], strict=True)]
        out[name] = summarize(ratios).as_dict()
    return out


def run_benchmark(args: argparse.Namespace) -> dict:
    """Build, check agreement, time interleaved; return everything as a dict."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    hf, ours = build_models(args.seed)
    prompt = torch.randint(0, SHAPE["vocab_size"], (1, args.prompt_len),
                           generator=torch.Generator().manual_seed(args.seed))
    before = machine_info(device)
    with torch.inference_mode():
        diffs, errors = check_agreement(hf, ours, prompt, args.new_tokens, args.atol)
        fns: dict[str, Callable[[], object]] = {"hf": lambda: hf_decode(hf, prompt,
                                                                        args.new_tokens)}
        for name, model in ours.items():
            fns[f"ours-{name}"] = lambda m=model: our_decode(m, prompt, args.new_tokens)
        samples = interleaved_timings(fns, device, args.rounds, warmup=args.warmup,
                                      clock=args.clock)
    after = machine_info(device)
    return {
        "shape": SHAPE, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "batch": 1, "clock": args.clock, "rounds": args.rounds,
        "max_abs_logit_diff_vs_hf": diffs, "max_abs_logit_error_vs_float64": errors,
        "seconds": {k: summarize(v).as_dict() for k, v in samples.items()},
        "ratio_to_hf": ratio_stats(samples, "hf"),
        "machine_before": before, "load_average_after": after["load_average_1_5_15"],
        "samples": samples,
    }


def markdown_table(report: dict) -> str:
    """The result as a Markdown table: median time and per-round ratio to HF, with IQRs."""
    lines = ["| decoder | ms per generation (IQR) | ms per token | × HF (IQR) |",
             "|---|---:|---:|---:|"]
    new = report["new_tokens"]
    for name, s in report["seconds"].items():
        r = report["ratio_to_hf"][name]
        lines.append(f"| {name} | {s['median'] * 1e3:.0f} ({s['q1'] * 1e3:.0f}–"
                     f"{s['q3'] * 1e3:.0f}) | {s['median'] * 1e3 / new:.2f} | "
                     f"{r['median']:.3f} ({r['q1']:.3f}–{r['q3']:.3f}) |")
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in report["max_abs_logit_diff_vs_hf"].items())
    errors = ", ".join(f"{k} {v:.2g}"
                       for k, v in report["max_abs_logit_error_vs_float64"].items())
    load = report["machine_before"]["load_average_1_5_15"]
    lines += ["", f"Tokens identical to HF; max abs logit difference to HF: {diffs}; to the "
              f"float64 model: {errors}. "
              f"{report['rounds']} rounds, {report['clock']} clock, "
              f"{report['machine_before']['torch_threads']} thread(s), load average {load[0]} "
              f"before, {report['load_average_after'][0]} after."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved timed rounds")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-5,
                   help="largest max abs logit difference to HF accepted (each model's "
                        "float32 rounding error is about 5e-6 at the default shape)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, write ``decode.{json,md}`` under ``--out``."""
    args = parse_args(argv)
    report = run_benchmark(args)
    table = markdown_table(report)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{NAME}.md").write_text(table)
    return report


if __name__ == "__main__":
    main()
