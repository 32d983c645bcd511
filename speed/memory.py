"""Memory measurements that see torch's allocations: resident-set size on CPU, the caching allocator on CUDA.

``tracemalloc`` only sees Python's allocator, not torch's CPU tensors, so peaks are read from the kernel:
``/proc/self/status`` ``VmHWM`` (the peak RSS) after resetting it through ``/proc/self/clear_refs``, with freed
heap pages first handed back to the kernel (``malloc_trim``) so that a case which reuses them is counted.
Where the reset is refused, a sampling thread tracks the peak instead (it can miss a peak shorter than its
period, 1 ms).
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

MB = 1024 * 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_bytes() -> int:
    """Current resident-set size of this process."""
    try:
        return _status_kb("VmRSS") * 1024
    except (OSError, RuntimeError):  # not Linux
        import psutil

        return psutil.Process().memory_info().rss


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def settle() -> None:
    """Collect garbage and return freed heap pages to the kernel, so RSS reflects live data."""
    gc.collect()
    _malloc_trim()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class _Sampler(threading.Thread):
    def __init__(self, period: float = 1e-3):
        super().__init__(daemon=True)
        self.period, self.peak, self.stop_flag = period, rss_bytes(), threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.period)


def peak_memory(fn: Callable[[], Any], device: str) -> dict[str, float | str]:
    """Run ``fn`` once and return its peak memory above what was live before it, in MiB.

    CPU: ``{"peak_mb": VmHWM - RSS before, "rss_peak_mb": VmHWM, "how": "vmhwm"|"sampled"}``;
    CUDA: ``max_memory_allocated`` above ``memory_allocated`` before (``how="cuda"``).
    """
    settle()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del out
        return {"peak_mb": (peak - base) / MB, "abs_peak_mb": peak / MB, "how": "cuda"}
    base = rss_bytes()
    if _reset_hwm():
        out = fn()
        peak = _status_kb("VmHWM") * 1024
        how = "vmhwm"
    else:
        sampler = _Sampler()
        sampler.start()
        out = fn()
        sampler.stop_flag.set()
        sampler.join()
        peak, how = max(sampler.peak, rss_bytes()), "sampled"
    del out
    return {"peak_mb": max(peak - base, 0) / MB, "abs_peak_mb": peak / MB, "how": how}


def slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index (units of ``values`` per step)."""
    n = len(values)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(values) / n
    num = sum((i - mx) * (v - my) for i, v in enumerate(values))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den
