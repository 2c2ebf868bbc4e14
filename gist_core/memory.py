"""Peak resident memory of this process on Linux, resettable, so one stage's peak can be read on a CPU (where
torch has no allocator statistics). VmHWM is the kernel's high-water mark of the resident set; writing 5 to
/proc/self/clear_refs resets it to the current RSS (Linux >= 4.0). Elsewhere every reading is None.

Side effect to know when measuring from outside: the kernel reports the same high-water mark as the process's
ru_maxrss at exit, so `/usr/bin/time -v gist-lab select ...` shows the peak since the last stage began (a Gemma
select: 2.5 GB), not the run's (11.2 GB in its warm-up). Read the stages' peaks in the run's manifest."""
from __future__ import annotations

import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    return _status_kb("VmRSS")


def reset_peak() -> int | None:
    """Reset the high-water mark to the current RSS; that RSS (None: not measurable here)."""
    try:
        _CLEAR.write_text("5")
    except OSError:
        return None
    return rss_bytes()


def peak_bytes() -> int | None:
    """The resident set's high-water mark since the last reset_peak (the whole process's, not a rise)."""
    return _status_kb("VmHWM")


def peak_since(start: int | None) -> int | None:
    """How far the resident set rose above `start` (from reset_peak) at its highest since then."""
    peak = _status_kb("VmHWM")
    return None if start is None or peak is None else max(peak - start, 0)


def _cuda():
    """torch.cuda when this process already uses it (never imports torch: the dashboard reads this module)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def reset_device_peak() -> None:
    """Reset the GPU allocator's peak (a no-op without CUDA in use)."""
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def device_peak_bytes() -> int | None:
    """The GPU allocator's peak since reset_device_peak (tensors only, not the CUDA context); None without CUDA."""
    cuda = _cuda()
    return None if cuda is None else int(cuda.max_memory_allocated())
