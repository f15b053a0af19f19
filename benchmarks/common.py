"""Timing and memory helpers shared by the benchmarks.

Timing. Wall-clock time of one call, with ``torch.cuda.synchronize`` around it on a GPU (kernels
run asynchronously there). Competing implementations are timed *interleaved*: every round runs
each of them once, in an order that rotates from round to round, so a burst of load from other
processes hits all of them alike instead of one implementation's whole series. We report the
median over rounds and the interquartile range (IQR), both robust to the occasional slow outlier.

Memory. On CUDA, ``torch.cuda.max_memory_allocated`` gives the peak of the caching allocator
directly. On the CPU PyTorch keeps no such counter and ``tracemalloc`` does not see its
allocations, so we measure the operating system's view instead: one call runs in a fresh
subprocess and we report the rise of its peak resident set size (``VmHWM`` in
``/proc/self/status``, reset to the current size just before the call) over the resident size
just before the call. That counts every page the call touched at its high-water mark, i.e. the
extra memory the computation needed on top of its inputs. It is coarse (page granularity,
allocator caching included) but it is what a user running out of RAM would see. (Not
``getrusage().ru_maxrss``: Linux carries it over from the parent across fork and exec, so a
subprocess of a large benchmark process would start with the parent's peak.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from scratchformer.analysis.memory import (
    peak_cuda_bytes,
    peak_rss_bytes,
    rss_bytes,
    rss_rise_bytes,
)

__all__ = [
    "CLOCKS",
    "Stats",
    "cpu_model",
    "interleaved_timings",
    "machine_info",
    "peak_cuda_bytes",
    "peak_rss_bytes",
    "rss_bytes",
    "rss_rise_bytes",
    "run_json_subprocess",
    "summarize",
    "synchronize",
    "time_call",
]


@dataclass(frozen=True)
class Stats:
    """Median and quartiles of repeated timings, in seconds, and how many there were."""

    median: float
    q1: float
    q3: float
    n: int

    @property
    def iqr(self) -> float:
        """Interquartile range ``q3 - q1``: the spread of the middle half of the samples."""
        return self.q3 - self.q1

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict (for JSON), with the IQR included."""
        return {**asdict(self), "iqr": self.iqr}


def summarize(samples: Sequence[float]) -> Stats:
    """Median and quartiles (inclusive method, so 1 or 2 samples work) of ``samples``."""
    if len(samples) == 0:
        raise ValueError("samples must not be empty")
    xs = sorted(float(s) for s in samples)
    if len(xs) == 1:
        return Stats(xs[0], xs[0], xs[0], 1)
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return Stats(statistics.median(xs), q1, q3, len(xs))


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work on ``device``; a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    # CPU seconds of the whole process (all threads): insensitive to time spent descheduled
    # while other processes use the cores, but it counts threads that spin while waiting.
    "cpu": time.process_time,
}


def time_call(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds taken by one call of ``fn`` on ``clock`` (synchronized around it on a GPU)."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError(f"the cpu clock cannot time work on {device}; use clock='wall'")
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return now() - start


def interleaved_timings(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int | Callable[[float], int],
    warmup: int = 1,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Time each function in ``fns`` once per round, rotating their order every round.

    ``rounds`` is a count, or a function of the total warm-up time (seconds, all functions) that
    returns one, so slow configurations can be given fewer rounds. Warm-up calls are discarded.
    """
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (it also sizes the rounds), got {warmup}")
    warm_total = 0.0
    for fn in fns.values():
        for _ in range(warmup):
            elapsed = time_call(fn, device, clock)
        warm_total += elapsed
    n_rounds = rounds(warm_total) if callable(rounds) else rounds
    if n_rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {n_rounds}")
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n_rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_call(fns[name], device, clock))
    return samples


def run_json_subprocess(
    args: Sequence[str], cwd: Path | None = None, timeout: float = 600.0
) -> dict:
    """Run ``python args...`` in a fresh interpreter and parse the last stdout line as JSON."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"subprocess {args} failed with code {done.returncode}: {done.stderr[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` reports."""
    path = Path("/proc/cpuinfo")
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, object]:
    """What the numbers were measured on: CPU, cores, threads, torch, GPU, load average."""
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def positive_ints(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive ints, e.g. ``--lengths 256,1024``."""
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"values must be positive, got {text!r}")
    return values
