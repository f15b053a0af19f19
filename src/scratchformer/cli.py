"""``scratchformer`` command line: list and run studies, build the report.

Errors the user can fix (unknown study, bad ``--set``) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scratchformer.data.errors import DataError
from scratchformer.experiments.registry import PROFILES, StudyError


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise StudyError(f"bad --set {pair!r}; expected key=value")
        out[key.strip()] = value.strip()
    return out


def _cmd_list(args: argparse.Namespace) -> int:
    from scratchformer.experiments.registry import descriptions

    names = descriptions()
    width = max((len(n) for n in names), default=0)
    for name, description in names.items():
        print(f"{name:<{width}}  {description}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from scratchformer.experiments.registry import CATALOG, get
    from scratchformer.experiments.runner import run_study

    overrides = _parse_sets(args.set or [])
    names = sorted(CATALOG) if args.name == "all" else [args.name]
    selected = [get(n) for n in names]
    # Build (and so check) every config before spending time on any run.
    configs = []
    for study in selected:
        if args.name == "all" and overrides:
            fields = study.config_cls.__dataclass_fields__
            keys = {k: v for k, v in overrides.items() if k in fields}
            configs.append(study.config(args.profile, keys))
        else:
            configs.append(study.config(args.profile, overrides))
    if args.name == "all" and overrides:
        known = set().union(*(s.config_cls.__dataclass_fields__ for s in selected))
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise StudyError(f"no study has the setting(s) {', '.join(unknown)}")
    out_root = Path(args.out)
    for i, (study, cfg) in enumerate(zip(selected, configs, strict=True), 1):
        print(f"[{i}/{len(selected)}] {study.name} ({args.profile})", flush=True)
        record = run_study(study, cfg, out_root, args.profile)
        print(
            f"    done in {record['wall_time_s']:.1f} s -> {out_root / study.name}/metrics.json",
            flush=True,
        )
    print(f"results written under {out_root.resolve()}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from scratchformer.report import build_report

    md, html = build_report(Path(args.results), Path(args.out) if args.out else None)
    print(f"report written to {md} and {html}")
    return 0


def _cmd_tokenizer(args: argparse.Namespace) -> int:
    """``scratchformer tokenizer train|encode|decode``: the byte-level BPE tokenizer."""
    from scratchformer.tokenizers import BPETokenizer

    try:
        if args.action == "train":
            if args.input:
                texts = [Path(f).read_text(encoding="utf-8") for f in args.input]
            else:
                from scratchformer.data import load_tiny_shakespeare

                texts = [load_tiny_shakespeare()]
            specials = args.special if args.special is not None else ["<|endoftext|>"]
            tok = BPETokenizer.train(
                texts,
                args.vocab_size,
                pattern=args.pattern,
                special_tokens=specials,
                min_frequency=args.min_frequency,
                progress=True,
            )
            print(f"{tok} -> {tok.save(args.out)}")
            if args.hf_export:
                from scratchformer.tokenizers.hf_interop import export_hf

                print(f"Hugging Face tokenizer.json -> {export_hf(tok, args.hf_export)}")
            return 0
        tok = BPETokenizer.load(args.tokenizer)
        if args.action == "encode":
            if (args.text is None) == (args.input is None):
                raise ValueError("give exactly one of --text TEXT or --input FILE")
            text = args.text if args.text is not None else Path(args.input).read_text("utf-8")
            allowed = "all" if args.allow_special else ()
            print(" ".join(map(str, tok.encode(text, allowed_special=allowed))))
            return 0
        raw = args.ids if args.ids else sys.stdin.read().split()
        ids = []
        for item in raw:
            try:
                ids.append(int(item))
            except ValueError:
                raise ValueError(f"ids must be integers, got {item!r}") from None
        sys.stdout.write(tok.decode(ids, errors=args.errors) + ("\n" if args.newline else ""))
        return 0
    except (ValueError, TypeError, UnicodeError) as e:
        print(f"scratchformer: error: {e}", file=sys.stderr)
        return 2


def _cmd_nli(args: argparse.Namespace) -> int:
    """``scratchformer nli PREMISE HYPOTHESIS``: the label and its three probabilities."""
    from scratchformer.models.nli import classify, load_classifier
    from scratchformer.training.checkpoint import CheckpointError

    try:
        model, tok, _ = load_classifier(args.checkpoint)
        probs = classify(model, tok, args.premise, args.hypothesis)
    except (ValueError, TypeError, CheckpointError) as e:
        print(f"scratchformer: error: {e}", file=sys.stderr)
        return 2
    print(max(probs, key=probs.__getitem__))
    for label, p in probs.items():
        print(f"  {label:<13} {p:.4f}")
    return 0


def _add_tokenizer_parser(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser("tokenizer", help="train, or encode/decode with, a byte-level BPE")
    tsub = tp.add_subparsers(dest="action", required=True)
    tr = tsub.add_parser("train", help="learn a tokenizer (default corpus: Tiny Shakespeare)")
    tr.add_argument("--input", nargs="+", metavar="FILE", help="UTF-8 text files to train on")
    tr.add_argument("--vocab-size", type=int, default=1024, help="256 bytes + merges + specials")
    tr.add_argument("--pattern", default="gpt2", help="gpt2, gpt4 or a regex (pre-tokenization)")
    tr.add_argument("--special", nargs="*", metavar="TOKEN",
                    help="special tokens (default: <|endoftext|>; give none for no specials)")
    tr.add_argument("--min-frequency", type=int, default=2, help="rarest pair still merged")
    tr.add_argument("--out", default="tokenizer.json", help="where to save (scratchformer format)")
    tr.add_argument("--hf-export", metavar="PATH", help="also write a Hugging Face tokenizer.json")
    enc = tsub.add_parser("encode", help="print the ids of a text")
    enc.add_argument("--tokenizer", required=True, help="a file written by 'tokenizer train'")
    enc.add_argument("--text", help="the text to encode")
    enc.add_argument("--input", metavar="FILE", help="a UTF-8 file to encode")
    enc.add_argument("--allow-special", action="store_true",
                     help="turn special-token strings into their ids (default: refuse them)")
    dec = tsub.add_parser("decode", help="print the text of ids (arguments or stdin)")
    dec.add_argument("--tokenizer", required=True, help="a file written by 'tokenizer train'")
    dec.add_argument("ids", nargs="*", help="token ids (default: read from stdin)")
    dec.add_argument("--errors", default="replace", choices=["replace", "strict", "ignore"],
                     help="what to do with bytes that are not valid UTF-8")
    dec.add_argument("--no-newline", dest="newline", action="store_false")
    tp.set_defaults(fn=_cmd_tokenizer)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``scratchformer``."""
    p = argparse.ArgumentParser(prog="scratchformer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list the registered studies").set_defaults(fn=_cmd_list)

    r = sub.add_parser("run", help="run one study, or all of them")
    r.add_argument("name", help="study name (see 'scratchformer list') or 'all'")
    r.add_argument("--profile", choices=PROFILES, default="quick")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    r.add_argument("--out", default="results", help="results folder (default: results)")
    r.set_defaults(fn=_cmd_run)

    rep = sub.add_parser("report", help="build the Markdown + HTML report from stored results")
    rep.add_argument("--results", default="results", help="results folder to read")
    rep.add_argument("--out", default=None, help="output folder (default: the results folder)")
    rep.set_defaults(fn=_cmd_report)

    _add_tokenizer_parser(sub)

    nli = sub.add_parser("nli", help="classify a premise/hypothesis pair with the NLI model")
    nli.add_argument("premise")
    nli.add_argument("hypothesis")
    nli.add_argument("--checkpoint", default="results/nli.snli/checkpoint",
                     help="folder written by 'run nli.snli' (default: %(default)s)")
    nli.set_defaults(fn=_cmd_nli)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and dispatch; user errors become one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (StudyError, FileNotFoundError, DataError) as e:
        print(f"scratchformer: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
