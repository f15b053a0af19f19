"""``scratchformer`` command line: list and run studies, build the report.

Errors the user can fix (unknown study, bad ``--set``, an output folder that is a file or
cannot be written, an input that is a folder or not UTF-8, a malformed file) print one line,
``scratchformer: error: ...`` naming the argument or file, and exit with code 2. Outputs are
checked before any work starts, so a bad ``--out`` fails in a second.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import NoReturn

from scratchformer.data.errors import DataError
from scratchformer.experiments.registry import PROFILES, StudyError


class CLIError(Exception):
    """A bad argument found by the command line itself; the message names it."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("scratchformer").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"scratchformer: error: {where}{message} (see --help)\n")


def _reason(e: OSError) -> str:
    """The short reason of an OS error ("Permission denied"), without the errno noise."""
    return e.strerror or str(e)


def _probe_write(folder: Path, flag: str) -> None:
    """Make sure a file can be created in the existing ``folder``, or raise a CLIError."""
    probe = folder / f".scratchformer-write-test.{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as e:
        raise CLIError(f"{flag} {folder}: cannot write there ({_reason(e)})") from None


def _output_folder(path: Path, flag: str) -> Path:
    """``path`` as an output folder: created if missing, refused if a file or unwritable."""
    if path.exists() and not path.is_dir():
        raise CLIError(f"{flag} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{flag} {path}: cannot create the folder ({_reason(e)})") from None
    _probe_write(path, flag)
    return path


def _output_file(path: Path, flag: str) -> Path:
    """``path`` as an output file: not a folder, in an existing folder that can be written."""
    if path.is_dir():
        raise CLIError(f"{flag} {path}: is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise CLIError(f"{flag} {path}: the folder {parent} does not exist")
    _probe_write(parent, flag)
    return path


def _input_file(path: Path, flag: str) -> Path:
    """``path`` as an input file: it exists and is not a folder."""
    if path.is_dir():
        raise CLIError(f"{flag} {path}: is a folder, expected a file")
    if not path.is_file():
        raise CLIError(f"{flag} {path}: no such file")
    return path


def _read_text(path: Path, flag: str) -> str:
    """The UTF-8 text of the input file ``path``, or a CLIError naming ``flag`` and the file."""
    data = _input_file(path, flag)
    try:
        raw = data.read_bytes()
    except OSError as e:
        raise CLIError(f"{flag} {path}: cannot be read ({_reason(e)})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CLIError(f"{flag} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _check_offline_setting() -> None:
    """Fail now, not mid-run, when ``$SCRATCHFORMER_OFFLINE`` has a value it cannot mean."""
    from scratchformer.data.resolve import is_offline

    is_offline()


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
    _check_offline_setting()
    out_root = _output_folder(Path(args.out), "--out")
    for study in selected:  # a folder left by an earlier run may be a file or read-only
        target = out_root / study.name
        if target.exists() and not target.is_dir():
            raise CLIError(f"--out {out_root}: {target} is a file, not a folder")
        if target.is_dir():
            _probe_write(target, "--out")
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

    results = Path(args.results)
    if results.exists() and not results.is_dir():
        raise CLIError(f"--results {results}: is a file, not a folder")
    out = _output_folder(Path(args.out), "--out") if args.out else None
    md, html = build_report(results, out)
    print(f"report written to {md} and {html}")
    return 0


def _cmd_tokenizer(args: argparse.Namespace) -> int:
    """``scratchformer tokenizer train|encode|decode``: the byte-level BPE tokenizer."""
    from scratchformer.tokenizers import BPETokenizer

    try:
        if args.action == "train":
            _output_file(Path(args.out), "--out")
            if args.hf_export:
                _output_file(Path(args.hf_export), "--hf-export")
            if args.input:
                texts = [_read_text(Path(f), "--input") for f in args.input]
            else:
                from scratchformer.data import load_tiny_shakespeare

                _check_offline_setting()
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
        tok = BPETokenizer.load(_input_file(Path(args.tokenizer), "--tokenizer"))
        if args.action == "encode":
            if (args.text is None) == (args.input is None):
                raise ValueError("give exactly one of --text TEXT or --input FILE")
            text = args.text if args.text is not None else _read_text(Path(args.input),
                                                                      "--input")
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
    """``scratchformer nli PREMISE HYPOTHESIS`` (the label and its three probabilities) or
    ``scratchformer nli --input PAIRS.jsonl [--output PREDS.jsonl]`` (accuracy and confusion
    matrix when the file has gold labels)."""
    import json

    from scratchformer.data.snli import LABELS
    from scratchformer.models.nli import default_model_dir, load_classifier, read_pairs_jsonl
    from scratchformer.training.checkpoint import CheckpointError

    single = args.premise is not None or args.hypothesis is not None
    try:
        if single == (args.input is not None):
            raise ValueError("give PREMISE HYPOTHESIS, or --input PAIRS.jsonl (not both)")
        if single and (args.premise is None or args.hypothesis is None):
            raise ValueError("give both PREMISE and HYPOTHESIS")
        if args.output is not None and args.input is None:
            raise ValueError("--output needs --input")
        rows = read_pairs_jsonl(args.input) if args.input is not None else []
        clf = load_classifier(args.checkpoint or default_model_dir())
        if single:
            probs = clf.classify(args.premise, args.hypothesis)
        else:
            table = clf.predict_proba([(r.premise, r.hypothesis) for r in rows],
                                      progress=True)
    except (ValueError, TypeError, CheckpointError, OSError) as e:
        message = "; ".join(line.strip() for line in str(e).splitlines())
        print(f"scratchformer: error: {message}", file=sys.stderr)
        return 2
    if single:
        print(max(probs, key=probs.__getitem__))
        for label, p in probs.items():
            print(f"  {label:<13} {p:.4f}")
        return 0
    pred = table.argmax(-1).tolist()
    if args.output is not None:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as fh:
            for r, k, p in zip(rows, pred, table.tolist(), strict=True):
                fh.write(json.dumps({"pairID": r.pair_id, "sentence1": r.premise,
                                     "sentence2": r.hypothesis, "gold_label": r.gold,
                                     "prediction": LABELS[k],
                                     "probabilities": dict(zip(LABELS, p, strict=True))})
                         + "\n")
        print(f"{len(rows)} predictions written to {out}")
    gold = [(LABELS.index(r.gold), k) for r, k in zip(rows, pred, strict=True) if r.gold]
    if not gold:
        print(f"{len(rows)} pairs classified; no gold labels to score")
        return 0
    confusion = [[0] * len(LABELS) for _ in LABELS]
    for g, k in gold:
        confusion[g][k] += 1
    right = sum(confusion[i][i] for i in range(len(LABELS)))
    print(f"accuracy {right / len(gold):.4f} ({right}/{len(gold)} pairs with a gold label)")
    width = max(map(len, LABELS)) + 2
    print("confusion (rows: gold, columns: predicted)")
    print(" " * width + "".join(f"{lab:>{width}}" for lab in LABELS))
    for lab, counts in zip(LABELS, confusion, strict=True):
        print(f"{lab:<{width}}" + "".join(f"{c:>{width}}" for c in counts))
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    """``scratchformer forecast FILE.csv``: median and 10/90% quantiles of the token GPT, and
    a PNG of the history, the median and the 80% band."""
    from scratchformer.data.ett import read_columns
    from scratchformer.models.forecast import default_model_dir, forecast_series, load_forecaster
    from scratchformer.training.checkpoint import CheckpointError
    from scratchformer.viz.forecast import plot_forecast

    try:
        if args.horizon < 1 or args.samples < 2:
            raise ValueError(f"--horizon must be >= 1 and --samples >= 2, got {args.horizon} "
                             f"and {args.samples}")
        model, _ = load_forecaster(args.checkpoint or default_model_dir())
        values = read_columns(args.file, [args.column], min_rows=model.context)[:, 0]
        fc = forecast_series(model, values, args.horizon, args.samples, args.seed)
        plot_forecast(fc.history.numpy(), fc.median.numpy(), fc.low.numpy(), fc.high.numpy(),
                      Path(args.out), f"{args.column}: {args.horizon}-step forecast, "
                      f"{args.samples} sampled paths")
    except (ValueError, TypeError, CheckpointError) as e:
        print(f"scratchformer: error: {e}", file=sys.stderr)
        return 2
    print(f"# {args.column} of {args.file}: {len(values)} values, the last {model.context} "
          f"read; {args.samples} paths, {model.tokenizer.n_bins} bins")
    print(f"{'step':>5} {'median':>12} {'q10':>12} {'q90':>12}")
    for i, (m, lo, hi) in enumerate(zip(fc.median.tolist(), fc.low.tolist(), fc.high.tolist(),
                                        strict=True), 1):
        print(f"{i:>5} {m:>12.4f} {lo:>12.4f} {hi:>12.4f}")
    print(f"# plot written to {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """``scratchformer train --text PATH...``: train or fine-tune (``--init``, ``--lora``) a GPT
    on UTF-8 text; checkpoints, tokenizer and log go to ``--out``."""
    from scratchformer.text_training import RunOptions, TextRunError, run_text_training
    from scratchformer.training.checkpoint import CheckpointError

    options = RunOptions(
        text=args.text or [], out=args.out, preset=args.preset, init=args.init, lora=args.lora,
        lora_alpha=args.lora_alpha, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        eval_every=args.eval_every, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        val_fraction=args.val_fraction, seed=args.seed, device=args.device,
        threads=args.threads, resume=args.resume, progress=not args.quiet)
    if not options.text and not options.resume:
        raise CLIError("--text: give at least one file or folder")
    try:
        run_text_training(options)
    except (TextRunError, CheckpointError) as e:
        raise CLIError(str(e)) from None
    except KeyboardInterrupt:
        print(f"scratchformer: interrupted; continue from the last checkpoint with "
              f"'scratchformer train --out {args.out} --resume'", file=sys.stderr)
        return 130
    return 0


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train or fine-tune a GPT on your own UTF-8 text")
    tr.add_argument("--text", nargs="+", metavar="PATH",
                    help="UTF-8 files or folders (searched recursively for text files)")
    tr.add_argument("--out", default="out-text", help="run folder (default: %(default)s)")
    tr.add_argument("--preset", choices=("tiny", "small"), default=None,
                    help="model size and training settings (default: small; with --init "
                         "the model is --init's and only the training settings apply)")
    tr.add_argument("--init", metavar="FOLDER", help="fine-tune the model of this train folder")
    tr.add_argument("--lora", type=int, metavar="RANK",
                    help="with --init: train only LoRA adapters of this rank")
    tr.add_argument("--lora-alpha", type=float, help="LoRA scale numerator (default: RANK)")
    tr.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    tr.add_argument("--batch-size", type=int, help="sequences per step (default: the preset's)")
    tr.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    tr.add_argument("--eval-every", type=int, help="validate and checkpoint every N steps")
    tr.add_argument("--tokenizer", choices=("byte", "bpe"), default=None,
                    help="byte (default) or a byte-level BPE trained on the training text")
    tr.add_argument("--vocab-size", type=int, help="BPE vocabulary (default: the preset's)")
    tr.add_argument("--val-fraction", type=float, default=0.1,
                    help="share held out for validation (default: %(default)s)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    tr.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(fn=_cmd_train)


def _cmd_generate(args: argparse.Namespace) -> int:
    """``scratchformer generate --checkpoint DIR --prompt TEXT``: stream a continuation."""
    from scratchformer.text_generation import GenerateOptions, generate_text
    from scratchformer.text_training import TextRunError
    from scratchformer.training.checkpoint import CheckpointError

    options = GenerateOptions(args.checkpoint, args.prompt, args.max_new_tokens,
                              args.temperature, args.top_k, args.top_p, args.seed)
    try:
        options.check()
        generate_text(options, lambda piece: print(piece, end="", flush=True))
    except (ValueError, TypeError, TextRunError, CheckpointError) as e:
        raise CLIError(_one_line(e)) from None
    print()
    return 0


def _add_generate_parser(sub: argparse._SubParsersAction) -> None:
    gp = sub.add_parser("generate", help="continue a prompt with a 'scratchformer train' model")
    gp.add_argument("--checkpoint", required=True, metavar="DIR",
                    help="a 'scratchformer train' folder (its latest checkpoint) or a step_N")
    gp.add_argument("--prompt", required=True, help="the text to continue")
    gp.add_argument("--max-new-tokens", type=int, default=200, help="(default: %(default)s)")
    gp.add_argument("--temperature", type=float, default=1.0,
                    help="0: greedy; <1 sharper, >1 flatter (default: %(default)s)")
    gp.add_argument("--top-k", type=int, help="sample among the K most likely tokens")
    gp.add_argument("--top-p", type=float, help="sample within probability mass P, in (0, 1]")
    gp.add_argument("--seed", type=int, help="sampling seed (default: a fresh one each run)")
    gp.set_defaults(fn=_cmd_generate)


def _cmd_molecule(args: argparse.Namespace) -> int:
    """``scratchformer molecule predict SMILES [--task T] [--explain out.png]``: the graph
    transformer's prediction with its unit; ``--explain`` draws the read-out attention."""
    from scratchformer.data.moleculenet import TASKS
    from scratchformer.models.molecule_predictor import default_model_dir, load_predictor
    from scratchformer.viz.molecules import draw_attention

    try:
        pred = load_predictor(Path(args.checkpoint or default_model_dir()), args.task)
        value = pred.predict(args.smiles)
        if args.explain:
            png = draw_attention(args.smiles, pred.readout_attention(args.smiles),
                                 legend=f"{value:.2f} {pred.unit}")
            out = Path(args.explain)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(png)
    except (ValueError, TypeError, OSError) as e:
        print(f"scratchformer: error: {_one_line(e)}", file=sys.stderr)
        return 2
    task = TASKS[args.task]
    print(f"{task.title} ({task.quantity}): {value:.3f} {task.unit}")
    if args.explain:
        print(f"# attention drawing written to {args.explain}")
    return 0


def _add_molecule_parser(sub: argparse._SubParsersAction) -> None:
    mp = sub.add_parser("molecule", help="predict molecular properties with the graph "
                                         "transformer (MoleculeNet models)")
    msub = mp.add_subparsers(dest="action", required=True)
    pr = msub.add_parser("predict", help="predict a property of one SMILES")
    pr.add_argument("smiles", metavar="SMILES", help="the molecule, e.g. 'CCO'")
    pr.add_argument("--task", choices=["esol", "freesolv", "lipo"], default="esol",
                    help="esol: log solubility, freesolv: hydration free energy, lipo: logD "
                         "(default: %(default)s)")
    pr.add_argument("--checkpoint", default=None,
                    help="folder with <task>.safetensors and <task>.json (default: the "
                         "published docs/results/molecules.moleculenet/model)")
    pr.add_argument("--explain", metavar="OUT.png",
                    help="draw the molecule with atoms shaded by the read-out token's attention")
    pr.set_defaults(fn=_cmd_molecule)


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
    p = _Parser(prog="scratchformer", description=__doc__.splitlines()[0])
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
    _add_train_parser(sub)
    _add_generate_parser(sub)

    nli = sub.add_parser("nli", help="classify premise/hypothesis pairs with the NLI model")
    nli.add_argument("premise", nargs="?", help="the premise (with HYPOTHESIS; or use --input)")
    nli.add_argument("hypothesis", nargs="?", help="the hypothesis")
    nli.add_argument("--input", metavar="PAIRS.jsonl",
                     help="SNLI-format JSON Lines (sentence1, sentence2, optional gold_label)")
    nli.add_argument("--output", metavar="PREDS.jsonl", help="write one prediction per line")
    nli.add_argument("--checkpoint", default=None,
                     help="model folder (default: the published full-profile model, "
                          "docs/results/nli.snli/model in the repository; 'run nli.snli' "
                          "writes one to results/nli.snli/model)")
    nli.set_defaults(fn=_cmd_nli)

    fc = sub.add_parser("forecast", help="forecast a CSV column with the token GPT (ETT model)")
    fc.add_argument("file", metavar="FILE.csv", help="CSV with a header row")
    fc.add_argument("--column", default="OT", help="column to forecast (default: %(default)s)")
    fc.add_argument("--horizon", type=int, default=96, help="steps ahead (default: %(default)s)")
    fc.add_argument("--checkpoint", default=None,
                    help="model folder (default: the published docs/results/timeseries.ett/model)")
    fc.add_argument("--samples", type=int, default=20, help="sampled paths (default: %(default)s)")
    fc.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    fc.add_argument("--out", default="forecast.png", help="PNG to write (default: %(default)s)")
    fc.set_defaults(fn=_cmd_forecast)
    _add_molecule_parser(sub)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean a bad argument, setting or file rather than a bug.

    Error types of modules that are imported lazily count only once imported (nothing else can
    raise them), so that ``list`` and argument errors do not pay for importing torch.
    """
    found: list[type[BaseException]] = [CLIError, StudyError, DataError, OSError, UnicodeError]
    for module, name in (("scratchformer.training.checkpoint", "CheckpointError"),
                         ("scratchformer.report.build", "ReportError")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line; an OS error as ``file: reason``."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and dispatch; user errors become one line and exit 2."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.fn(args)
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"scratchformer: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
