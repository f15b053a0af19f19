"""Peak memory of a block of code: the CUDA allocator's peak, or the resident set on the CPU.

On CUDA ``torch.cuda.max_memory_allocated`` is the peak of the caching allocator. On the CPU
PyTorch keeps no such counter and ``tracemalloc`` does not see its allocations, so the operating
system's view is used: the rise of the peak resident set size (``VmHWM`` in
``/proc/self/status``, reset to the current size through ``/proc/self/clear_refs`` where
allowed) over the resident size just before the block. It is coarse (page granularity,
allocator caching included) but it is what a user running out of RAM would see. Memory freed
earlier but kept by the allocator can be reused without raising the resident size, so run the
block in a fresh process for a faithful number. (Not ``getrusage().ru_maxrss``: Linux carries it
over from the parent across fork and exec.)
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

__all__ = ["PeakMemory", "peak_cuda_bytes", "peak_rss_bytes", "reset_peak_rss", "rss_bytes",
           "rss_rise_bytes"]


def rss_bytes() -> int:
    """Current resident set size of this process in bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's memory map in bytes (``VmHWM``, Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise OSError("no VmHWM line in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the peak resident set size to the current size (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Context manager: ``bytes`` is the rise of peak memory over the block on ``device``
    (see the module docstring) and ``kind`` says how it was measured.

    On a CPU without ``/proc`` (not Linux) ``bytes`` stays 0 and ``kind`` says so, so that a
    run measuring memory on the side does not fail for it.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.bytes = 0
        self.kind = ""
        self._before = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda_max_memory_allocated_rise"
            return self
        reset = reset_peak_rss()
        try:
            self._before = rss_bytes()
        except OSError:
            self.kind = "unavailable (no /proc/self: resident set not readable)"
            return self
        self.kind = ("rss_peak_rise" if reset
                     else "rss_peak_rise (peak not reset: may include earlier peaks)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._before
        elif not self.kind.startswith("unavailable"):
            self.bytes = max(0, peak_rss_bytes() - self._before)


def peak_cuda_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak CUDA memory allocated during ``fn`` above what was allocated before it."""
    with PeakMemory(device) as mem:
        fn()
    return mem.bytes


def rss_rise_bytes(fn: Callable[[], object]) -> int:
    """Rise of the peak resident set size during ``fn`` over the resident size before it
    (raises OSError where the resident set cannot be read)."""
    rss_bytes()  # fail here, not after running fn, where there is no /proc
    with PeakMemory("cpu") as mem:
        fn()
    return mem.bytes
