"""Checkpoints: exact resume, RNG restore, all-or-nothing saves and loads, and clear errors for
every way a checkpoint breaks."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scratchformer.training import (
    CheckpointError,
    TrainConfig,
    Trainer,
    build_adamw,
    latest_checkpoint,
    load_checkpoint,
    read_log,
    save_checkpoint,
)

VOCAB = 12


class TinyLM(nn.Module):
    """Embedding -> dropout -> LayerNorm -> head, optionally tied to the embedding."""

    def __init__(self, dim: int = 16, dropout: float = 0.2, tied: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)
        if tied:
            self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.drop(self.emb(x))))


def batches(step: int, micro: int, generator: torch.Generator) -> tuple:
    x = torch.randint(VOCAB, (16,), generator=generator)
    return x, (3 * x + 1) % VOCAB


def lm_loss(model: nn.Module, batch: tuple) -> tuple[torch.Tensor, int]:
    x, y = batch
    return F.cross_entropy(model(x), y), y.numel()


def eval_fn(model: nn.Module) -> dict:
    x = torch.randint(VOCAB, (16,))  # uses the global RNG: must not disturb training
    x = x.to(model.emb.weight.device)
    return {"val_loss": F.cross_entropy(model(x), (3 * x + 1) % VOCAB).item()}


def make_trainer(seed: int = 0, tmp: Path | None = None, **overrides) -> Trainer:
    cfg = {"max_steps": 12, "lr": 2e-2, "warmup_steps": 2, "grad_accum_steps": 2,
           "log_interval": 1, "eval_interval": 4, "progress": False, **overrides}
    if tmp is not None:
        cfg["checkpoint_dir"] = str(tmp / "ckpt")
    torch.manual_seed(seed)
    return Trainer(TinyLM(), TrainConfig(**cfg), train_batches=batches, loss_fn=lm_loss,
                   eval_fn=eval_fn, log_path=None if tmp is None else tmp / "log.jsonl")


def reseal(path: Path) -> None:
    """Record the current size and sha256 of every file in the manifest, as a forger would."""
    manifest_file = path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["files"] = {
        name: {"bytes": (path / name).stat().st_size,
               "sha256": hashlib.sha256((path / name).read_bytes()).hexdigest()}
        for name in manifest["files"]}
    manifest_file.write_text(json.dumps(manifest))


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list:
    """Copies of everything `load_checkpoint` may change: weights, optimizer state, RNGs."""
    opt = [] if optimizer is None else [copy.deepcopy(optimizer.state_dict())]
    return [[t.clone() for t in model.state_dict().values()], *opt, torch.get_rng_state(),
            random.getstate(), np.random.get_state()[1].copy()]


def same(a: object, b: object) -> bool:
    """Deep equality of nested containers of tensors, arrays and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def saved(tmp_path: Path, model: nn.Module | None = None) -> tuple[Path, nn.Module]:
    """A checkpoint of a briefly trained TinyLM with its optimizer."""
    trainer = make_trainer(max_steps=3)
    if model is not None:
        trainer = Trainer(model, trainer.cfg, train_batches=batches, loss_fn=lm_loss)
    trainer.fit()
    return trainer.save(tmp_path / "ck"), trainer.model


def test_resume_continues_bitwise_exactly(tmp_path: Path) -> None:
    whole = make_trainer()
    full = whole.fit()

    first = make_trainer(tmp=tmp_path)
    part1 = first.fit(stop_at=6)
    assert latest_checkpoint(tmp_path / "ckpt").name == "step_0000006"
    with (tmp_path / "log.jsonl").open("a") as f:  # a record written after the checkpoint by
        f.write(json.dumps({"step": 7, "loss": -1.0}) + "\n")  # a run that then crashed

    second = make_trainer(seed=123, tmp=tmp_path)  # different init: the checkpoint must win
    part2 = second.fit(resume_from=tmp_path / "ckpt")

    keys = ("step", "loss", "lr", "grad_norm", "tokens", "val_loss")
    assert [[r.get(k) for k in keys] for r in part1 + part2] == [
        [r.get(k) for k in keys] for r in full]
    for (name, a), b in zip(whole.model.state_dict().items(),
                            second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    sa, sb = whole.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == list(range(1, 13))


def test_pausing_in_process_and_resuming_an_iterator_are_exact_too(tmp_path: Path) -> None:
    keys = ("step", "loss", "grad_norm")
    full = [[r[k] for k in keys] for r in make_trainer().fit()]
    paused = make_trainer()
    parts = paused.fit(stop_at=5) + paused.fit()  # the same trainer picks up at step 5
    assert [[r[k] for k in keys] for r in parts] == full

    g = torch.Generator().manual_seed(0)
    data = [batches(0, 0, g) for _ in range(24)]  # 12 steps x 2 micro-batches
    runs = []
    for stop in (None, 7):
        torch.manual_seed(0)
        cfg = TrainConfig(max_steps=12, grad_accum_steps=2, log_interval=1, progress=False,
                          checkpoint_dir=str(tmp_path / f"it{stop}"))
        trainer = Trainer(TinyLM(), cfg, train_batches=data, loss_fn=lm_loss)
        history = trainer.fit(stop_at=stop)
        if stop is not None:
            trainer = Trainer(TinyLM(), cfg, train_batches=iter(data), loss_fn=lm_loss)
            history += trainer.fit(resume_from=cfg.checkpoint_dir)
        runs.append([r["loss"] for r in history])
    assert runs[0] == runs[1] and len(runs[0]) == 12


def test_roundtrip_restores_weights_optimizer_and_all_rngs(tmp_path: Path) -> None:
    trainer = make_trainer(max_steps=3)
    trainer.fit()
    path = save_checkpoint(tmp_path / "ck", model=trainer.model, optimizer=trainer.optimizer,
                           step=3, config={"a": (1, 2)}, extra={"note": "hi"})
    draws = (torch.rand(3), random.random(), np.random.rand())

    torch.manual_seed(99)
    other = TinyLM()
    other_opt = build_adamw(other, 1e-3)
    info = load_checkpoint(path, model=other, optimizer=other_opt)
    assert (info.step, info.config, info.extra) == (3, {"a": [1, 2]}, {"note": "hi"})
    assert torch.equal(torch.rand(3), draws[0])
    assert (random.random(), np.random.rand()) == draws[1:]
    assert all(torch.equal(a.cpu(), b) for a, b in zip(trainer.model.state_dict().values(),
                                                       other.state_dict().values(), strict=True))
    want, got = trainer.optimizer.state_dict(), other_opt.state_dict()
    assert got["param_groups"] == want["param_groups"]
    assert want["state"].keys() == got["state"].keys() and len(want["state"]) == 4
    for i, state in want["state"].items():
        assert state.keys() == got["state"][i].keys()
        assert all(torch.equal(v.cpu(), got["state"][i][k].cpu()) for k, v in state.items())


def test_tied_weights_are_saved_and_stay_tied(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path, model = saved(tmp_path, TinyLM(tied=True))
    torch.manual_seed(1)
    other = TinyLM(tied=True)
    load_checkpoint(path, model=other)
    assert torch.equal(other.emb.weight, model.emb.weight.cpu())
    assert other.head.weight is other.emb.weight


def test_truncated_weights_file_is_reported(tmp_path: Path) -> None:
    path, model = saved(tmp_path)
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        load_checkpoint(path, model=model)


def test_corrupt_safetensors_of_the_right_size_is_reported(tmp_path: Path) -> None:
    path, model = saved(tmp_path)
    file = path / "state.safetensors"
    data = bytearray(file.read_bytes())
    data[8:40] = b"#" * 32  # garble the JSON header, keep the size
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"state\.safetensors.*corrupt"):
        load_checkpoint(path, model=model)


@pytest.mark.parametrize("name", ["state.json", "manifest.json"])
def test_garbage_json_is_reported(tmp_path: Path, name: str) -> None:
    path, model = saved(tmp_path)
    file = path / name
    if name == "state.json":  # same size: the sha256 notices; resealed, the JSON parser does
        file.write_text("{" * len(file.read_bytes()))
        with pytest.raises(CheckpointError, match=r"state\.json has sha256"):
            load_checkpoint(path, model=model)
        reseal(path)
    else:
        file.write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"{name}.*not valid JSON"):
        load_checkpoint(path, model=model)


@pytest.mark.parametrize("garbage", [b"\xff\xfe{}", b"[1, 2]", b'{"step": 3}'])
def test_state_json_that_is_not_utf8_json_or_complete_names_the_file(
        tmp_path: Path, garbage: bytes) -> None:
    path, model = saved(tmp_path)
    (path / "state.json").write_bytes(garbage)
    reseal(path)
    with pytest.raises(CheckpointError, match=r"state\.json"):
        load_checkpoint(path, model=model)


def test_missing_manifest_means_interrupted_write(tmp_path: Path) -> None:
    path, model = saved(tmp_path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete.*interrupted"):
        load_checkpoint(path, model=model)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "nowhere", model=model)


def test_model_that_does_not_fit_gets_every_problem_listed(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    wider = TinyLM(dim=20)
    before = [t.clone() for t in wider.state_dict().values()]
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model=wider)
    message = str(err.value)
    assert "emb.weight: checkpoint (12, 16) vs model (12, 20)" in message
    assert "head.weight" in message and "model.safetensors" in message
    assert all(torch.equal(a, b) for a, b in zip(before, wider.state_dict().values(),
                                                 strict=True))  # untouched on failure

    extra = TinyLM()
    extra.bias = nn.Parameter(torch.zeros(3))
    del extra.norm
    with pytest.raises(CheckpointError, match=r"(?s)missing.*bias.*unexpected.*norm\.weight"):
        load_checkpoint(path, model=extra)


def test_format_version_and_optimizer_mismatch_are_reported(tmp_path: Path) -> None:
    path, model = saved(tmp_path)
    one_group = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(CheckpointError, match="parameter groups have sizes"):
        load_checkpoint(path, model=model, optimizer=one_group)

    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path, model=model)


def test_checkpoint_folder_keeps_the_newest_complete_ones(tmp_path: Path) -> None:
    trainer = make_trainer(tmp=tmp_path, max_steps=6, checkpoint_interval=2,
                           checkpoint_keep=2, eval_interval=0)
    trainer.fit()
    root = tmp_path / "ckpt"
    assert sorted(p.name for p in root.iterdir()) == ["step_0000004", "step_0000006"]
    (root / "step_0000008").mkdir()  # an interrupted later write: no manifest
    assert latest_checkpoint(root) == root / "step_0000006"
    assert load_checkpoint(root, model=trainer.model).step == 6


def trained(steps: int = 3, seed: int = 0) -> Trainer:
    """A trainer after ``steps`` updates (so the optimizer has state)."""
    trainer = make_trainer(seed=seed, max_steps=6, eval_interval=0)
    trainer.fit(stop_at=steps)
    return trainer


def test_crafted_optimizer_tensors_are_refused_before_anything_changes(tmp_path: Path) -> None:
    """exp_avg replaced by a 1-element tensor, manifest resealed: the fused update would read
    far out of bounds; the load refuses it and leaves everything as it was."""
    from safetensors.torch import load_file, save_file

    path = trained().save(tmp_path / "ck")
    state = load_file(str(path / "state.safetensors"))
    for key in state:
        if "exp_avg" in key:
            state[key] = torch.zeros(1)
    save_file(state, str(path / "state.safetensors"), {"format": "pt"})
    reseal(path)
    other = trained(steps=1, seed=5)
    before = snapshot(other.model, other.optimizer)
    with pytest.raises(CheckpointError, match=r"state\.json.*exp_avg.*\(1,\) but its parameter"):
        other.fit(resume_from=path)
    assert same(before, snapshot(other.model, other.optimizer))


@pytest.mark.parametrize("edit", [
    lambda m: m["optimizer"]["param_groups"][0].__setitem__("betas", "fast"),
    lambda m: m["optimizer"]["param_groups"][0].__setitem__("params", [0, 0]),
    lambda m: m["optimizer"]["state"]["__items__"][0].__setitem__(0, 99),
    lambda m: m["optimizer"]["state"]["__items__"][0][1].pop("exp_avg_sq"),
    lambda m: m["optimizer"]["state"]["__items__"][0][1].__setitem__("step", "many"),
    lambda m: m["optimizer"].__setitem__("state", [1, 2]),
    lambda m: m["optimizer"].__setitem__("state", {"__tensor__": "nope"}),
    lambda m: m.__setitem__("step", 4),
    lambda m: m["extra"].__setitem__("trainer", {"tokens_seen": -1}),
])
def test_garbled_state_json_is_refused_before_anything_changes(tmp_path: Path, edit) -> None:
    path = trained().save(tmp_path / "ck")
    meta = json.loads((path / "state.json").read_text())
    edit(meta)
    (path / "state.json").write_text(json.dumps(meta))
    reseal(path)
    other = trained(steps=1, seed=5)
    before = snapshot(other.model, other.optimizer)
    with pytest.raises(CheckpointError, match=r"state\.json"):
        other.load(path)
    assert same(before, snapshot(other.model, other.optimizer))


@pytest.mark.parametrize("rng", [
    {"python": [3, [1, 2, 3], None], "numpy": None},
    "garbage",
    {"python": [3, [*range(624), 624], None], "numpy": ["MT19937", [2**40] * 624, 0, 0, 0.0]},
])
def test_a_bad_rng_entry_leaves_model_optimizer_and_rngs_untouched(tmp_path: Path, rng) -> None:
    path = trained().save(tmp_path / "ck")
    meta = json.loads((path / "state.json").read_text())
    meta["rng"] = rng
    (path / "state.json").write_text(json.dumps(meta))
    reseal(path)
    other = trained(steps=1, seed=5)
    before = snapshot(other.model, other.optimizer)
    with pytest.raises(CheckpointError, match=r"state\.json.*(RNG|rng)"):
        load_checkpoint(path, model=other.model, optimizer=other.optimizer)
    assert same(before, snapshot(other.model, other.optimizer))
    info = load_checkpoint(path, model=other.model, restore_rng=False)  # weights alone: fine
    assert info.step == 3


@pytest.mark.parametrize("files", [
    ["model.safetensors", "state.safetensors", "state.json"],
    {"model.safetensors": 1},
    {"../model.safetensors": {"bytes": 1, "sha256": "0" * 64}},
    {"model.safetensors": {"bytes": -1, "sha256": "0" * 64}},
    {"model.safetensors": {"bytes": 1, "sha256": "XYZ"}},
])
def test_malformed_manifest_files_entry_is_a_checkpoint_error(tmp_path: Path, files) -> None:
    path, model = saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = files
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"manifest\.json"):
        load_checkpoint(path, model=model)


def test_every_file_is_in_the_manifest_with_size_and_sha256(tmp_path: Path) -> None:
    trainer = trained()
    path = save_checkpoint(tmp_path / "ck", model=trainer.model, optimizer=trainer.optimizer,
                           step=3, files={"notes.txt": b"hello"})
    manifest = json.loads((path / "manifest.json").read_text())
    on_disk = sorted(p.name for p in path.iterdir() if p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk == [
        "model.safetensors", "notes.txt", "state.json", "state.safetensors"]
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "notes.txt").write_bytes(b"hellO")
    with pytest.raises(CheckpointError, match=r"notes\.txt has sha256"):
        load_checkpoint(path, model=trainer.model)


def test_resave_replaces_the_folder_whole_and_keeps_files_beside_it(tmp_path: Path) -> None:
    trainer = trained()
    path = trainer.save(tmp_path / "ck")
    (path / "tokenizer.json").write_text("{}")
    trainer.fit(stop_at=5)
    trainer.save(path)
    assert load_checkpoint(path, model=trainer.model).step == 5
    assert (path / "tokenizer.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # nothing left beside it


def test_interrupted_resave_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import scratchformer.training.checkpoint as ckpt

    trainer = trained()
    path = trainer.save(tmp_path / "ck")
    trainer.fit(stop_at=5)
    calls = []

    def dies_on_second_file(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return save_file(*args, **kwargs)

    from safetensors.torch import save_file
    monkeypatch.setattr(ckpt, "save_file", dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(path)
    assert load_checkpoint(path, model=trainer.model).step == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_a_swap_cut_between_its_renames_is_finished_by_the_next_reader_and_writer(
        tmp_path: Path) -> None:
    """Simulate a kill after 'old -> backup' and before 'new -> final'."""
    trainer = trained()
    path = trainer.save(tmp_path / "ck")
    trainer.fit(stop_at=4)
    newer = trainer.save(tmp_path / "ck4")
    os.rename(path, tmp_path / ".ck.old-999999999-00000000")
    os.rename(newer, tmp_path / ".ck.new-999999999-00000001")
    assert load_checkpoint(path, model=trainer.model).step == 4  # the complete new copy
    trainer.fit(stop_at=5)
    trainer.save(path)  # settles: the leftovers of the dead writer go
    assert load_checkpoint(path, model=trainer.model).step == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_step_folder_of_a_cut_swap_still_counts_as_the_latest(tmp_path: Path) -> None:
    trainer = make_trainer(tmp=tmp_path, max_steps=6, checkpoint_interval=2,
                           checkpoint_keep=3, eval_interval=0)
    trainer.fit()
    root = tmp_path / "ckpt"
    os.rename(root / "step_0000006", root / ".step_0000006.new-999999999-0000abcd")
    assert latest_checkpoint(root) == root / ".step_0000006.new-999999999-0000abcd"
    assert load_checkpoint(root, model=trainer.model).step == 6
    from scratchformer.training.checkpoint import prune_checkpoints

    prune_checkpoints(root, 3)
    assert sorted(p.name for p in root.iterdir()) == [
        "step_0000002", "step_0000004", "step_0000006"]


def test_files_get_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path, _ = saved(tmp_path)
    finally:
        os.umask(old)
    assert {oct((path / n).stat().st_mode & 0o777) for n in os.listdir(path)} == {"0o640"}
    assert oct(path.stat().st_mode & 0o777) == "0o750"


def test_version_1_checkpoints_still_load(tmp_path: Path) -> None:
    path, model = saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 1
    manifest["files"] = {n: e["bytes"] for n, e in manifest["files"].items()}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    assert load_checkpoint(path, model=model).step == 3


def test_saving_onto_a_file_is_refused(tmp_path: Path) -> None:
    trainer = trained()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        trainer.save(tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"
