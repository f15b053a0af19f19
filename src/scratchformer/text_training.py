"""Train or fine-tune a GPT on a user's own text: what ``scratchformer train`` runs.

    text files/folders -> UTF-8 check -> split (by file, else the tail) -> byte or BPE ids
        -> GPT (a preset, or the --init model, optionally with LoRA adapters)
        -> the kit's `train` (the library Trainer) with periodic validation and checkpoints

A run folder holds::

    run.json          format, model config (GPTConfig fields), training settings, data summary,
                      tokenizer kind, and for a LoRA run the adapter config and the base model
    tokenizer.json    the byte-level BPE tokenizer (no merges for ``--tokenizer byte``)
    log.jsonl         the trainer's log (loss, tokens/s, val_loss)
    step_NNNNNNN/     trainer checkpoints (safetensors, sha256 manifest, saved all-or-nothing):
                      the whole model, or for a LoRA run only the adapters, with optimizer and
                      RNG state, so ``--resume`` continues bit for bit on CPU

`load_text_model(folder)` turns any such folder into ``(GPT, tokenizer)``: a LoRA run loads its
base model (checked against the sha256 recorded at training time) and then its adapters.

This module sits above ``experiments`` (it uses the study kit's `train`, the one training loop)
and below ``cli``; nothing in the library imports it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scratchformer.experiments.kit.threads import torch_threads
from scratchformer.experiments.kit.train import lm_batches, lm_eval, train
from scratchformer.experiments.runner import write_json_atomic
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.lora import (
    apply_lora,
    load_lora_state_dict,
    lora_adapters,
    lora_state_dict,
)
from scratchformer.tokenizers.bpe import BPETokenizer
from scratchformer.training.checkpoint import (
    MANIFEST_FILE,
    MODEL_FILE,
    CheckpointError,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
)
from scratchformer.training.trainer import TrainConfig, resolve_device

__all__ = [
    "PRESETS",
    "RUN_FILE",
    "TOKENIZER_FILE",
    "AdapterState",
    "Preset",
    "RunOptions",
    "TextData",
    "TextRunError",
    "byte_tokenizer",
    "encode",
    "load_text_model",
    "read_texts",
    "run_text_training",
    "split_texts",
]

RUN_FORMAT = "scratchformer-text-run"
RUN_VERSION = 1
RUN_FILE = "run.json"
TOKENIZER_FILE = "tokenizer.json"
LOG_FILE = "log.jsonl"
TOKENIZERS = ("byte", "bpe")


class TextRunError(ValueError):
    """A bad input, option or folder given to a text training run (the CLI prints one line)."""


@dataclass(frozen=True)
class Preset:
    """Model sizes and training settings of a named preset."""

    n_layers: int
    n_heads: int
    d_model: int
    context_len: int
    dropout: float
    batch_size: int
    steps: int
    lr: float
    warmup_steps: int
    eval_every: int
    eval_batches: int
    bpe_vocab: int


PRESETS: dict[str, Preset] = {
    # Seconds on one CPU core: a smoke test, or a first look at a small text.
    "tiny": Preset(n_layers=2, n_heads=2, d_model=64, context_len=64, dropout=0.0,
                   batch_size=16, steps=200, lr=3e-3, warmup_steps=20, eval_every=50,
                   eval_batches=8, bpe_vocab=512),
    # nanoGPT's Shakespeare-char model (6 layers, 6 heads, 384 wide, 256 context): minutes per
    # thousand steps on a GPU, hours on a laptop CPU.
    "small": Preset(n_layers=6, n_heads=6, d_model=384, context_len=256, dropout=0.1,
                    batch_size=32, steps=5000, lr=1e-3, warmup_steps=100, eval_every=250,
                    eval_batches=20, bpe_vocab=4096),
}


# ----------------------------------------------------------------------------- input text


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _decode(path: Path, raw: bytes) -> str | None:
    """The text of ``raw`` if it is UTF-8 without NUL bytes (binary files have them), else None."""
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_texts(paths: Sequence[str | os.PathLike]) -> tuple[list[tuple[Path, str]], int]:
    """``[(file, text)]`` of the given files and of the text files under the given folders
    (recursively, hidden ones skipped, sorted), and the number of non-text files skipped.

    A named file that is missing, unreadable or not UTF-8 text is a `TextRunError`; inside a
    folder, files that are not UTF-8 text (binary) are skipped and counted.
    """
    if not paths:
        raise TextRunError("--text: give at least one file or folder")
    found: list[tuple[Path, str]] = []
    skipped = 0
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not _is_hidden(p, path))
            texts = 0
            for file in files:
                try:
                    text = _decode(file, file.read_bytes())
                except OSError as e:
                    raise TextRunError(f"--text {file}: cannot be read ({e.strerror})") from None
                if text is None:
                    skipped += 1
                else:
                    found.append((file, text))
                    texts += 1
            if not texts:
                raise TextRunError(f"--text {path}: the folder holds no UTF-8 text files")
        elif path.exists():
            try:
                raw = path.read_bytes()
            except OSError as e:
                raise TextRunError(f"--text {path}: cannot be read ({e.strerror})") from None
            text = _decode(path, raw)
            if text is None:
                raise TextRunError(f"--text {path}: not UTF-8 text (a binary file?)")
            found.append((path, text))
        else:
            raise TextRunError(f"--text {path}: no such file or folder")
    if not any(text.strip() for _, text in found):
        raise TextRunError(f"--text: the input is empty ({len(found)} file(s), no text)")
    return found, skipped


@dataclass
class TextData:
    """The training and validation text, and how they were split."""

    train: str
    val: str
    split: str  # "file" or "tail"
    n_files: int
    val_files: list[str]


def split_texts(files: Sequence[tuple[Path, str]], val_fraction: float = 0.1) -> TextData:
    """Hold out whole files when there are several (files chosen by a hash of their path, until
    ``val_fraction`` of the characters), else the last ``val_fraction`` of the one text."""
    files = [(p, t) for p, t in files if t.strip()]
    sep = "\n\n"
    if len(files) >= 2:
        total = sum(len(t) for _, t in files)
        order = sorted(range(len(files)),
                       key=lambda i: hashlib.sha256(str(files[i][0]).encode()).hexdigest())
        val_idx: set[int] = set()
        held = 0
        for i in order:
            if held >= val_fraction * total or len(val_idx) == len(files) - 1:
                break
            val_idx.add(i)
            held += len(files[i][1])
        train = sep.join(t for i, (_, t) in enumerate(files) if i not in val_idx)
        val = sep.join(t for i, (_, t) in enumerate(files) if i in val_idx)
        return TextData(train, val, "file", len(files),
                        [str(files[i][0]) for i in sorted(val_idx)])
    text = files[0][1]
    cut = len(text) - max(1, int(len(text) * val_fraction))
    return TextData(text[:cut], text[cut:], "tail", 1, [])


def byte_tokenizer() -> BPETokenizer:
    """The byte-level tokenizer without merges: token id = byte value, 256 tokens."""
    return BPETokenizer.from_merges([], special_tokens=())


def encode(tokenizer: BPETokenizer, text: str) -> Tensor:
    """The token ids of ``text`` as a long tensor (bytes directly when there are no merges)."""
    if not tokenizer.merges and not tokenizer.special_tokens:
        data = text.encode("utf-8")
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    return torch.tensor(tokenizer.encode_ordinary(text), dtype=torch.long)


def _text_digest(data: TextData) -> str:
    h = hashlib.sha256()
    for part in (data.train, "\0", data.val):
        h.update(part.encode("utf-8"))
    return h.hexdigest()


# ----------------------------------------------------------------------------- run folder


def _run_folder(path: str | os.PathLike) -> Path:
    """The run folder of ``path`` (the folder itself, or the parent of one of its step_N)."""
    path = Path(path)
    if (path / RUN_FILE).is_file():
        return path
    if (path / MANIFEST_FILE).is_file() and (path.parent / RUN_FILE).is_file():
        return path.parent
    if not path.exists():
        raise TextRunError(f"{path}: no such folder")
    raise TextRunError(f"{path} is not a text-model folder of 'scratchformer train' "
                       f"(no {RUN_FILE}); another kind of checkpoint?")


def _read_run(folder: Path) -> dict:
    """The checked contents of ``folder/run.json``."""
    file = folder / RUN_FILE
    try:
        run = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TextRunError(f"{file}: cannot be read ({e}); corrupt?") from None
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        raise TextRunError(f"{file} is not a {RUN_FORMAT} file")
    if run.get("version") != RUN_VERSION:
        raise TextRunError(f"{file}: version {run.get('version')!r}, this code reads "
                           f"{RUN_VERSION}")
    for key, kind in (("model", dict), ("train", dict), ("tokenizer", str)):
        if not isinstance(run.get(key), kind):
            raise TextRunError(f"{file} lacks or garbles {key!r}")
    lora = run.get("lora")
    kinds = {"rank": int, "alpha": (int, float), "targets": list, "dropout": (int, float),
             "base": dict}
    if lora is not None and not (isinstance(lora, dict) and all(
            isinstance(lora.get(k), t) for k, t in kinds.items())):
        raise TextRunError(f"{file}: 'lora' must hold rank, alpha, targets, dropout and base")
    return run


def _gpt_config(run: dict, where: Path) -> GPTConfig:
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = set(run["model"]) - fields
    if unknown:
        raise TextRunError(f"{where / RUN_FILE}: model has unknown fields {sorted(unknown)} "
                           "(another architecture?)")
    try:
        return GPTConfig(**run["model"])
    except (TypeError, ValueError) as e:
        raise TextRunError(f"{where / RUN_FILE}: bad model config: {e}") from None


def _load_tokenizer(folder: Path) -> BPETokenizer:
    try:
        return BPETokenizer.load(folder / TOKENIZER_FILE)
    except (OSError, ValueError) as e:
        raise TextRunError(f"{folder / TOKENIZER_FILE}: {e}") from None


def _model_digest(checkpoint: Path) -> str:
    """The sha256 of a checkpoint's model file, as its manifest records it."""
    try:
        manifest = json.loads((checkpoint / MANIFEST_FILE).read_text(encoding="utf-8"))
        entry = manifest["files"][MODEL_FILE]
        return str(entry["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{checkpoint / MANIFEST_FILE}: no sha256 of {MODEL_FILE} "
                              f"({e!r}); corrupt?") from e


def _saved_step(checkpoint: Path) -> int:
    """The step a checkpoint's manifest records."""
    try:
        step = json.loads((checkpoint / MANIFEST_FILE).read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{checkpoint / MANIFEST_FILE}: cannot read the step ({e})") from e
    if not isinstance(step, int):
        raise CheckpointError(f"{checkpoint / MANIFEST_FILE}: step {step!r} is not an int")
    return step


class AdapterState(nn.Module):
    """A LoRA-adapted model whose ``state_dict`` is its adapters only, so that the trainer's
    checkpoints hold (and restore) just A and B; calls go to the wrapped model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not lora_adapters(model):
            raise ValueError("AdapterState needs a model with LoRA adapters")
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return lora_state_dict(self.model)

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        load_lora_state_dict(self.model, dict(state))
        return nn.modules.module._IncompatibleKeys([], [])


def _checkpoint_of(path: Path) -> Path:
    """``path`` if it is a checkpoint (a step_N folder), else the latest one under it."""
    try:
        return find_checkpoint(path)
    except CheckpointError:
        raise TextRunError(f"{path}: no complete checkpoint (step_N folder)") from None


def load_text_model(path: str | os.PathLike) -> tuple[GPT, BPETokenizer]:
    """The GPT (in eval mode, on CPU) and tokenizer of a ``scratchformer train`` folder (its
    latest checkpoint), or of one of its ``step_N`` checkpoints.

    A LoRA run gives the base model with its adapters applied and loaded (unmerged; call
    `scratchformer.nn.lora.merge_lora` for faster inference). Any problem is a `TextRunError`
    or a `CheckpointError` naming the file.
    """
    folder = _run_folder(path)
    run = _read_run(folder)
    model = GPT(_gpt_config(run, folder))
    tokenizer = _load_tokenizer(folder)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise TextRunError(f"{folder}: tokenizer has {tokenizer.vocab_size} tokens, the model "
                           f"{model.config.vocab_size}")
    lora = run.get("lora")
    ckpt = _checkpoint_of(Path(path))
    if lora is None:
        load_checkpoint(ckpt, model=model, restore_rng=False)
    else:
        load_checkpoint(_base_checkpoint(lora, folder), model=model, restore_rng=False)
        apply_lora(model, lora["rank"], lora["alpha"], tuple(lora["targets"]), lora["dropout"])
        load_checkpoint(ckpt, model=AdapterState(model), restore_rng=False)
    return model.eval(), tokenizer


def _base_checkpoint(lora: dict, folder: Path) -> Path:
    """The base model checkpoint a LoRA run recorded, checked against its recorded sha256."""
    base = lora.get("base") or {}
    path = Path(base.get("checkpoint", ""))
    if not (path / MANIFEST_FILE).is_file():
        raise TextRunError(f"{folder / RUN_FILE}: the base model {path} of these adapters is "
                           "missing (moved or deleted?)")
    if _model_digest(path) != base.get("model_sha256"):
        raise TextRunError(f"{folder / RUN_FILE}: the base model {path} has changed since the "
                           "adapters were trained (sha256 differs)")
    return path


# ----------------------------------------------------------------------------- the run


@dataclass
class RunOptions:
    """What ``scratchformer train`` was asked for (None: the preset's or the saved value)."""

    text: list[str]
    out: str
    preset: str | None = None  # None: "small"
    init: str | None = None
    lora: int | None = None
    lora_alpha: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    eval_every: int | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    resume: bool = False
    progress: bool = True


def _check_options(o: RunOptions) -> None:
    if o.preset is not None and o.preset not in PRESETS:
        raise TextRunError(f"--preset must be one of {tuple(PRESETS)}, got {o.preset!r}")
    if o.resume and (o.init is not None or o.lora is not None or o.preset is not None
                     or o.tokenizer is not None):
        raise TextRunError("--resume continues the run in --out with its own settings; drop "
                           "--init, --lora, --preset and --tokenizer")
    if o.lora is not None and o.init is None:
        raise TextRunError("--lora needs --init CHECKPOINT (adapters fine-tune a trained model)")
    for name in ("lora", "steps", "batch_size", "eval_every", "vocab_size"):
        value = getattr(o, name)
        if value is not None and value < 1:
            raise TextRunError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if o.lr is not None and not (math.isfinite(o.lr) and o.lr > 0):
        raise TextRunError(f"--lr must be a finite number > 0, got {o.lr}")
    if o.lora_alpha is not None and not (math.isfinite(o.lora_alpha) and o.lora_alpha > 0):
        raise TextRunError(f"--lora-alpha must be a finite number > 0, got {o.lora_alpha}")
    try:
        device = resolve_device(o.device)
    except ValueError:
        raise TextRunError(f"--device must be 'auto' or a torch device, got {o.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TextRunError(f"--device {o.device}: CUDA is not available here")
    if o.seed < 0 or o.threads < 0:
        raise TextRunError(f"--seed and --threads must be >= 0, got {o.seed} and {o.threads}")
    if not 0 < o.val_fraction < 1:
        raise TextRunError(f"--val-fraction must be in (0, 1), got {o.val_fraction}")
    if o.tokenizer is not None and o.tokenizer not in TOKENIZERS:
        raise TextRunError(f"--tokenizer must be one of {TOKENIZERS}, got {o.tokenizer!r}")
    if o.vocab_size is not None and o.vocab_size < 256:
        raise TextRunError(f"--vocab-size must be >= 256 (the bytes), got {o.vocab_size}")


def _new_run(o: RunOptions, data: TextData, out: Path) -> tuple[dict, BPETokenizer, GPT | None]:
    """The run description of a fresh run, its tokenizer, and the --init model if any."""
    preset = PRESETS[o.preset or "small"]
    init_model, lora_base = None, None
    if o.init is not None:
        init_folder = _run_folder(o.init)
        init_run = _read_run(init_folder)
        if init_run.get("lora") is not None:
            raise TextRunError(f"--init {o.init}: holds LoRA adapters, not a full model; "
                               "give its base model's folder")
        if o.tokenizer is not None and o.tokenizer != init_run["tokenizer"]:
            raise TextRunError(f"--tokenizer {o.tokenizer}: --init {o.init} uses the "
                               f"{init_run['tokenizer']} tokenizer")
        init_model, tokenizer = load_text_model(o.init)
        kind = init_run["tokenizer"]
        model_cfg = dataclasses.asdict(init_model.config)
        if o.lora is not None:
            ckpt = _checkpoint_of(Path(o.init))
            lora_base = {"checkpoint": str(ckpt.resolve()), "model_sha256": _model_digest(ckpt)}
    else:
        kind = o.tokenizer or "byte"
        if kind == "byte":
            tokenizer = byte_tokenizer()
        else:
            vocab = o.vocab_size or preset.bpe_vocab
            tokenizer = BPETokenizer.train(data.train, vocab, special_tokens=())
        model_cfg = dataclasses.asdict(GPTConfig(
            vocab_size=tokenizer.vocab_size, context_len=preset.context_len,
            n_layers=preset.n_layers, n_heads=preset.n_heads, d_model=preset.d_model,
            dropout=preset.dropout, attention_backend="sdpa"))
    steps = o.steps or preset.steps
    train_settings = {
        "preset": o.preset or "small", "steps": steps,
        "batch_size": o.batch_size or preset.batch_size,
        # full fine-tuning starts from trained weights: a third of the preset's rate
        "lr": o.lr or (preset.lr / 3 if o.init is not None and o.lora is None else preset.lr),
        "warmup_steps": min(preset.warmup_steps, steps // 10),
        "eval_every": o.eval_every or min(preset.eval_every, steps),
        "eval_batches": preset.eval_batches, "seed": o.seed, "val_fraction": o.val_fraction,
    }
    run: dict[str, Any] = {
        "format": RUN_FORMAT, "version": RUN_VERSION, "model": model_cfg,
        "train": train_settings, "tokenizer": kind,
        "init": None if o.init is None else str(Path(o.init).resolve()),
        "lora": None,
        "data": {"files": [str(Path(p).resolve()) for p in o.text], "split": data.split,
                 "n_files": data.n_files, "val_files": data.val_files,
                 "sha256": _text_digest(data)},
    }
    if o.lora is not None:
        run["lora"] = {"rank": o.lora, "alpha": o.lora_alpha or float(o.lora),
                       "targets": ["attention", "feedforward"], "dropout": 0.0,
                       "base": lora_base}
    return run, tokenizer, init_model


def run_text_training(o: RunOptions, log: Any = print) -> dict:
    """Train (or resume) the run ``o`` describes; returns a summary (steps, losses, paths).
    User errors raise `TextRunError` or `CheckpointError`."""
    _check_options(o)
    out = Path(o.out)
    if out.exists() and not out.is_dir():
        raise TextRunError(f"--out {out}: is a file, not a folder")
    if o.resume:
        latest = latest_checkpoint(out)
        if latest is None or not (out / RUN_FILE).is_file():
            raise TextRunError(f"--resume: no checkpoint in {out} to resume from")
        run = _read_run(out)
        if o.steps is not None:
            run["train"]["steps"] = o.steps
        saved = _saved_step(latest)
        if saved >= run["train"]["steps"]:
            raise TextRunError(f"--resume: {out} is already at step {saved} of "
                               f"{run['train']['steps']}; give a larger --steps to go on")
        texts = o.text or run["data"]["files"]
    else:
        if latest_checkpoint(out) is not None:
            raise TextRunError(f"--out {out}: already holds a run; use --resume to continue "
                               "it, or another folder")
        run = None
        texts = o.text
    files, skipped = read_texts(texts)
    data = split_texts(files, o.val_fraction if run is None else run["train"]["val_fraction"])
    init_model = None
    if run is None:
        run, tokenizer, init_model = _new_run(o, data, out)
    else:
        if _text_digest(data) != run["data"]["sha256"]:
            raise TextRunError(f"--resume: the text differs from the one {out} was trained on")
        tokenizer = _load_tokenizer(out)
    settings = run["train"]
    cfg = _gpt_config(run, out)
    train_ids, val_ids = encode(tokenizer, data.train), encode(tokenizer, data.val)
    need = cfg.context_len + 1
    if train_ids.numel() < need or val_ids.numel() < need:
        raise TextRunError(
            f"--text: too little text: {train_ids.numel()} training and {val_ids.numel()} "
            f"validation tokens; each needs at least {need} (context_len {cfg.context_len} + 1)")

    with torch_threads(o.threads):
        torch.manual_seed(settings["seed"])
        if init_model is not None:
            model = init_model.train()
        else:
            model = GPT(cfg)
            if run["lora"] is not None:  # resume: the base weights, then adapters from the step
                load_checkpoint(_base_checkpoint(run["lora"], out), model=model,
                                restore_rng=False)
        trained: nn.Module = model
        if run["lora"] is not None:
            lo = run["lora"]
            apply_lora(model, lo["rank"], lo["alpha"], tuple(lo["targets"]), lo["dropout"])
            trained = AdapterState(model)
        if not o.resume:
            out.mkdir(parents=True, exist_ok=True)
            tokenizer.save(out / TOKENIZER_FILE)
            write_json_atomic(out / RUN_FILE, run)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"{len(files)} file(s) ({skipped} non-text skipped), split by {data.split}: "
            f"{train_ids.numel():,} train / {val_ids.numel():,} val tokens; "
            f"{run['tokenizer']} tokenizer ({tokenizer.vocab_size} tokens); "
            f"{n_train:,} trainable parameters"
            + (f" (LoRA rank {run['lora']['rank']})" if run["lora"] else ""))
        bs, T = settings["batch_size"], cfg.context_len
        tcfg = TrainConfig(
            max_steps=settings["steps"], lr=settings["lr"], warmup_steps=settings["warmup_steps"],
            weight_decay=0.0 if run["lora"] else 0.1, betas=(0.9, 0.99), grad_clip=1.0,
            log_interval=max(1, min(10, settings["eval_every"])),
            eval_interval=settings["eval_every"], seed=settings["seed"], device=o.device,
            autocast="auto", checkpoint_dir=str(out),
            checkpoint_interval=settings["eval_every"], checkpoint_keep=1,
            resume=str(out) if o.resume else None, progress=o.progress)
        result = train(trained, tcfg, lm_batches(train_ids, bs, T),
                       eval_fn=lm_eval(val_ids, settings["eval_batches"], bs, T, settings["seed"]),
                       log_path=out / LOG_FILE)
    losses = [r["loss"] for r in result.history]
    val = result.curve.get("val_loss", [])
    summary = {"out": str(out), "step": result.trainer.step, "steps": settings["steps"],
               "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None,
               "val_loss": val[-1] if val else None,
               "checkpoint": str(latest_checkpoint(out))}
    log(f"step {summary['step']}/{summary['steps']}: train loss "
        + (f"{summary['last_loss']:.4f}" if losses else "-")
        + (f", val loss {summary['val_loss']:.4f}" if val else "")
        + f"; checkpoint {summary['checkpoint']}")
    return summary
