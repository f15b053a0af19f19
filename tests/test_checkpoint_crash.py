"""Kill -9 at random points while checkpoints are written: never a half state, and the latest
complete checkpoint always loads and resumes bit for bit.

The test runs this file as a script in a subprocess (torch imported once, one thread). The
script precomputes an uninterrupted reference run, then forks writer processes over and over
and SIGKILLs each at a random moment. A writer resumes from the latest checkpoint under
``root`` and trains, saving a ``step_N`` folder after every step (keeping two) and re-saving
one fixed folder, ``same``, so both a fresh folder and the replacement of an existing one are
cut. After every kill the script checks every visible ``step_N`` folder, the latest checkpoint
and ``same`` against the reference, bit for bit. A JSON summary goes to stdout.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS = 80  # the reference run; 20 kills leave the writers at about step 20


def _setup() -> tuple:
    """Imports, the model, the config and a trainer factory (kept out of pytest's process)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from scratchformer.training import TrainConfig, Trainer

    torch.set_num_threads(1)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(12, 16)
            self.drop = nn.Dropout(0.2)  # draws from the global RNG: checks its restore
            self.norm = nn.LayerNorm(16)
            self.head = nn.Linear(16, 12)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.drop(self.emb(x))))

    def batches(step: int, micro: int, g: torch.Generator) -> tuple:
        x = torch.randint(12, (16,), generator=g)
        return x, (3 * x + 1) % 12

    def loss(model: nn.Module, batch: tuple) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]), batch[1])

    def trainer(checkpoint_dir: str | None = None) -> Trainer:
        torch.manual_seed(0)
        cfg = TrainConfig(max_steps=10_000, lr=1e-2, warmup_steps=5, log_interval=10**6,
                          eval_interval=0, progress=False, checkpoint_dir=checkpoint_dir,
                          checkpoint_interval=1, checkpoint_keep=2)
        return Trainer(Tiny(), cfg, train_batches=batches, loss_fn=loss)

    return torch, trainer


def _state(torch, trainer) -> tuple:
    """Weights, optimizer state and torch RNG state, as comparable copies."""
    opt = trainer.optimizer.state_dict()["state"]
    return ([t.clone() for t in trainer.model.state_dict().values()],
            {i: {k: v.clone() for k, v in s.items()} for i, s in opt.items()},
            torch.get_rng_state().clone())


def _equal(torch, a: tuple, b: tuple) -> bool:
    weights = all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    opt = a[1].keys() == b[1].keys() and all(
        a[1][i].keys() == b[1][i].keys() and all(torch.equal(a[1][i][k], b[1][i][k])
                                                  for k in a[1][i]) for i in a[1])
    return weights and opt and torch.equal(a[2], b[2])


def _script(work: Path, seed: int, kills: int) -> dict:
    """The kill loop; returns the summary the test asserts on."""
    torch, make = _setup()
    from safetensors.torch import load_file

    from scratchformer.training import latest_checkpoint, load_checkpoint

    reference = make()
    reference_states = {}

    def record(tr, step, _record) -> None:
        reference_states[step] = _state(torch, tr)

    reference.on_step.append(record)
    reference.fit(stop_at=STEPS)

    root, same = work / "ckpt", work / "same"
    rng = random.Random(seed)

    verified: dict[tuple, int] = {}  # a visible step folder never changes: check it once

    def check(path: Path) -> int:
        """Load ``path`` into a fresh trainer and compare with the reference; its step."""
        stat = path.stat() if path.exists() else None
        key = (str(path), stat.st_ino, stat.st_mtime_ns) if stat else None
        if key in verified:
            return verified[key]
        fresh = make()
        info = load_checkpoint(path, model=fresh.model, optimizer=fresh.optimizer,
                               restore_rng=False)
        from scratchformer.training.checkpoint import find_checkpoint

        rng_state = load_file(str(find_checkpoint(path) / "state.safetensors"))["rng.torch"]
        got = (*_state(torch, fresh)[:2], rng_state)
        if not _equal(torch, got, reference_states[info.step]):
            raise AssertionError(f"{path} at step {info.step} differs from the reference")
        if key is not None and path.name.startswith("step_"):
            verified[key] = info.step
        return info.step

    summary = {"kills": 0, "cut_writes": 0, "checked": 0, "steps": []}
    me = os.getpid()

    def save_same(tr, step, record) -> None:
        if os.getppid() != me:  # the script died: do not train on as an orphan
            os._exit(1)
        tr.save(same)

    for _ in range(kills):
        pid = os.fork()
        if pid == 0:  # the writer: resume from the latest, train and save until killed
            try:
                tr = make(str(root))
                tr.on_step.append(save_same)
                tr.fit(resume_from=latest_checkpoint(root))
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        summary["kills"] += 1
        leftovers = [p for d in (root, work) if d.is_dir() for p in d.iterdir()
                     if p.name.startswith(".")]
        summary["cut_writes"] += bool(leftovers)
        visible = sorted(p for p in root.iterdir() if not p.name.startswith(".")) if (
            root.is_dir()) else []
        for p in visible:  # a visible step folder is always a complete, correct checkpoint
            check(p)
            summary["checked"] += 1
        latest = latest_checkpoint(root)
        if latest is not None:
            summary["steps"].append(check(latest))
            summary["checked"] += 1
        if latest is not None:  # a writer saves `same` before each step folder
            check(same)
            summary["checked"] += 1
        if summary["steps"] and summary["steps"][-1] > STEPS - 10:
            break

    # Resume from the latest checkpoint for three more steps: bit for bit the reference.
    latest = latest_checkpoint(root)
    if latest is not None:
        tr = make()
        tr.fit(stop_at=tr.load(latest) + 3)  # fit after load continues from the checkpoint
        if not _equal(torch, _state(torch, tr), reference_states[tr.step]):
            raise AssertionError(f"resuming from {latest} diverged from the reference")
        summary["resumed_to"] = tr.step
    return summary


@pytest.mark.parametrize("seed", [0])
def test_kill_9_during_checkpoint_writes_never_loses_the_latest_complete_one(
        tmp_path: Path, seed: int) -> None:
    kills = 20
    done = subprocess.run([sys.executable, __file__, str(tmp_path), str(seed), str(kills)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["kills"] == kills
    assert summary["cut_writes"] >= 3  # kills do land inside writes (usually most of them)
    assert summary["steps"] == sorted(summary["steps"]) and summary["steps"][-1] > 0
    assert summary["resumed_to"] == summary["steps"][-1] + 3


if __name__ == "__main__":
    print(json.dumps(_script(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
