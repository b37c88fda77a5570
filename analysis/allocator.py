"""The C allocator's settings for a process that makes many large, short-lived arrays.

glibc's ``malloc`` serves every block above a (dynamic, at most 32 MB) threshold by a fresh ``mmap`` and gives
it back by ``munmap`` when freed, so each large temporary array (a (M,) column of a million candidates, a search
block) is faulted in page by page again. On a virtual machine a page fault is costly: on the 2-core VM the
false-negative command spent 26.5 of its 53 s in the kernel, 1.2 million page faults
(``benchmarks/page_faults.py``). :func:`keep_freed_memory` raises the threshold and stops the heap from being
trimmed, so freed blocks are reused by the next array instead of faulted in again.

The price: memory a process freed stays reserved for its own later arrays, so its resident size does not shrink
(the peak, which is what a machine must have, moves little: see BENCHMARKS.md). The CLI, whose processes are
short, turns it on; the Streamlit server, which lives on between users, does not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

INT_MAX = 2**31 - 1


def keep_freed_memory(*, mmap_threshold: int = INT_MAX, trim_threshold: int = INT_MAX, top_pad: int = 64 << 20) -> bool:
    """Tell glibc's ``malloc`` to serve large blocks from the heap and keep freed memory for reuse.

    Parameters
    ----------
    mmap_threshold : int
        Blocks at least this many bytes still get their own ``mmap`` (at most ``INT_MAX``, about 2 GiB).
    trim_threshold : int
        Free memory at the top of the heap beyond this is given back to the system.
    top_pad : int
        Extra bytes the heap grows by each time it grows (fewer, larger ``brk`` calls).

    Returns
    -------
    bool
        True when every setting was accepted; False where the C library is not glibc (macOS, musl, Windows),
        which changes nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (musl has no mallopt to tune)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold), (M_TOP_PAD, top_pad))
    return all(mallopt(param, min(int(value), INT_MAX)) == 1 for param, value in settings)
