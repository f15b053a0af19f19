"""Byte-level BPE: scratchformer against Hugging Face ``tokenizers`` and the naive trainer.

On Tiny Shakespeare (train split for training, validation split for compression), at each
vocabulary size it measures:

* training time of the fast incremental trainer ("ours"), of Hugging Face's ``BpeTrainer``
  ("hf", Rust, single-threaded unless ``--hf-threads`` says otherwise) and of the naive
  recount-every-merge trainer from ``tests/bpe_naive.py`` ("naive"), median over rounds;
* whether ours and naive learned identical merges;
* bytes per token on the validation text for ours and hf (same split pattern, same sizes);
* encoding throughput in MB/s of UTF-8 on the whole text: ours with an empty chunk cache
  ("cold"), ours again ("warm"), and hf ``Tokenizer.encode`` on our exported ``tokenizer.json``
  (whose ids are also checked to equal ours) and its ``encode_batch_fast`` (no offsets).

Writes ``tokenizer.json`` (everything) and ``tokenizer.md`` (the table) under ``--out``. Run from
the repository root::

    python -m benchmarks.tokenizer            # vocab 512, 1024, 4096; naive at every size
    python -m benchmarks.tokenizer --quick    # vocab 512 and 1024, naive at 512, one round
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME = "tokenizer"


def _median_time(fn: Callable[[], object], rounds: int) -> tuple[float, object]:
    """Median wall time of ``rounds`` calls of ``fn`` and the last call's result."""
    times, result = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _hf_train(text: str, vocab_size: int):
    """Hugging Face byte-level BPE trained like ours: GPT-2 split, 256 bytes, min frequency 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def run(args: argparse.Namespace) -> dict:
    """Every measurement, as a JSON-able dict."""
    from scratchformer.data import load_tiny_shakespeare, train_val_split
    from scratchformer.tokenizers import BPETokenizer
    from scratchformer.tokenizers.hf_interop import export_hf
    from tests.bpe_naive import train_naive

    text = load_tiny_shakespeare(progress=False)
    train, val = train_val_split(text)
    n_bytes = len(text.encode("utf-8"))
    results = []
    for v in args.vocab_sizes:
        row: dict[str, object] = {"vocab_size": v}
        t, ours = _median_time(
            lambda v=v: BPETokenizer.train(train, v, special_tokens=()), args.rounds
        )
        row["train_s_ours"] = t
        t, hf = _median_time(lambda v=v: _hf_train(train, v), args.rounds)
        row["train_s_hf"] = t
        if v <= args.naive_max:
            t0 = time.perf_counter()
            naive_merges, naive_work = train_naive(train, v - 256)
            row["train_s_naive"] = time.perf_counter() - t0
            row["naive_pair_counts"] = naive_work
            row["merges_identical_to_naive"] = naive_merges == ours.merges
        row["vocab_ours"], row["vocab_hf"] = len(ours), hf.get_vocab_size()
        row["common_tokens"] = len(
            set(ours.vocab.values()) & {_hf_token_bytes(s) for s in hf.get_vocab()}
        )
        row["bytes_per_token_ours"] = len(val.encode("utf-8")) / len(ours.encode(val))
        row["bytes_per_token_hf"] = len(val.encode("utf-8")) / len(hf.encode(val).ids)

        fresh = BPETokenizer.from_dict(ours.to_dict())  # same tokenizer, empty chunk cache
        t0 = time.perf_counter()
        ids = fresh.encode(text)
        row["encode_mb_s_ours_cold"] = n_bytes / 1e6 / (time.perf_counter() - t0)
        t, _ = _median_time(lambda f=fresh: f.encode(text), args.rounds)
        row["encode_mb_s_ours_warm"] = n_bytes / 1e6 / t
        with tempfile.TemporaryDirectory() as tmp:
            from tokenizers import Tokenizer

            exported = Tokenizer.from_file(str(export_hf(ours, Path(tmp) / "tokenizer.json")))
        t, enc = _median_time(lambda e=exported: e.encode(text), args.rounds)
        row["encode_mb_s_hf"] = n_bytes / 1e6 / t
        row["hf_export_ids_identical"] = enc.ids == ids
        if hasattr(exported, "encode_batch_fast"):  # no offsets: HF's fastest path
            t, _ = _median_time(lambda e=exported: e.encode_batch_fast([text]), args.rounds)
            row["encode_mb_s_hf_fast"] = n_bytes / 1e6 / t
        results.append(row)
        print(json.dumps(row), flush=True)
    import tokenizers

    return {
        "benchmark": NAME,
        "command": " ".join(["python -m benchmarks.tokenizer", *sys.argv[1:]]),
        "machine": {
            "cpu": _cpu(),
            "logical_cores": os.cpu_count(),
            "python": platform.python_version(),
            "tokenizers": tokenizers.__version__,
            "hf_threads": os.environ.get("RAYON_NUM_THREADS", "default"),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "vocab_sizes": list(args.vocab_sizes),
            "naive_max": args.naive_max,
            "rounds": args.rounds,
            "train_chars": len(train),
            "val_chars": len(val),
            "encode_bytes": n_bytes,
        },
        "results": results,
    }


def _hf_token_bytes(token: str) -> bytes:
    from scratchformer.tokenizers.hf_interop import str_to_token

    return str_to_token(token)


def _cpu() -> str:
    from benchmarks.common import cpu_model

    return cpu_model()


def markdown(report: dict) -> str:
    """The results table with the ratios that matter."""
    m, c = report["machine"], report["config"]
    lines = [
        f"Tiny Shakespeare: trained on the {c['train_chars']:,}-character train split, bytes per "
        f"token on the {c['val_chars']:,}-character validation split, encoding timed on the "
        f"whole {c['encode_bytes']:,} bytes. {m['cpu']}, {m['logical_cores']} logical cores, "
        f"Python {m['python']}, tokenizers {m['tokenizers']} with RAYON_NUM_THREADS="
        f"{m['hf_threads']}; median of {c['rounds']} round(s) (naive: one).",
        "",
        "| vocab | train ours (s) | train HF (s) | train naive (s) | naive / ours | ours / HF "
        "| same merges as naive | bytes/token ours | bytes/token HF | encode ours cold / warm "
        "(MB/s) | encode HF / HF fast (MB/s) | best HF / ours warm | HF ids = ours |",
        "|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in report["results"]:
        naive = r.get("train_s_naive")
        lines.append(
            f"| {r['vocab_size']} | {r['train_s_ours']:.2f} | {r['train_s_hf']:.2f} | "
            + (f"{naive:.1f} | {naive / r['train_s_ours']:.0f}× | " if naive else "— | — | ")
            + f"{r['train_s_ours'] / r['train_s_hf']:.1f}× | "
            + {True: "yes", False: "**no**", None: "—"}[r.get("merges_identical_to_naive")]
            + f" | {r['bytes_per_token_ours']:.3f} | {r['bytes_per_token_hf']:.3f} | "
            f"{r['encode_mb_s_ours_cold']:.2f} / {r['encode_mb_s_ours_warm']:.2f} | "
            f"{r['encode_mb_s_hf']:.2f} / {r.get('encode_mb_s_hf_fast', float('nan')):.2f} | "
            f"{_best_hf(r) / r['encode_mb_s_ours_warm']:.2f}× | "
            + ("yes" if r["hf_export_ids_identical"] else "**no**")
            + " |"
        )
    return "\n".join(lines) + "\n"


def _best_hf(row: dict) -> float:
    return max(row["encode_mb_s_hf"], row.get("encode_mb_s_hf_fast", 0.0))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, write the JSON and Markdown files, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[512, 1024, 4096])
    p.add_argument("--naive-max", type=int, default=4096, help="largest vocab for the naive run")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (median is reported)")
    p.add_argument("--hf-threads", default="1", help="RAYON_NUM_THREADS for HF ('' = default)")
    p.add_argument("--quick", action="store_true", help="vocab 512,1024; naive at 512; 1 round")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = p.parse_args(argv)
    if args.quick:
        args.vocab_sizes, args.naive_max, args.rounds = [512, 1024], 512, 1
    if args.hf_threads:  # must be set before tokenizers starts its thread pool
        os.environ["RAYON_NUM_THREADS"] = args.hf_threads
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / f"{NAME}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
