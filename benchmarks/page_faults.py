"""Fresh memory and the allocator: a workload of large short-lived arrays, with and without
:func:`analysis.allocator.keep_freed_memory` (what every CLI command turns on).

Usage::

    python benchmarks/page_faults.py                 # 3 interleaved rounds, 40 x 48 MB temporaries each
    python benchmarks/page_faults.py --rounds 5 --arrays 80 --mb 96

Each round starts two fresh child processes, one with glibc's defaults and one with ``keep_freed_memory()``,
in alternating order (the machine's noise hits both alike). Each child allocates, fills and frees ``--arrays``
arrays of ``--mb`` MB the way an analysis makes its (M,) columns and search blocks, and reports its wall time,
kernel (system) time and minor page faults. Printed: the medians and the ratio default / kept (above 1: the kept
memory is faster). On a virtual machine whose host populates guest memory lazily (a Firecracker VM with free
page reporting, this project's 2-core VM), every page faulted in anew is slow, and the ratio is large.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import numpy as np
keep, arrays, mb = sys.argv[1] == "keep", int(sys.argv[2]), int(sys.argv[3])
if keep:
    from analysis.allocator import keep_freed_memory
    assert keep_freed_memory(), "mallopt refused the settings"
n = mb * 2**20 // 8
base = np.ones(n)
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
total = 0.0
for i in range(arrays):
    tmp = base * float(i)          # a fresh (n,) temporary, filled
    total += float(tmp[:: 4096].sum())
    del tmp
wall = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "sys": r1.ru_stime - r0.ru_stime, "minflt": r1.ru_minflt - r0.ru_minflt}))
"""


def run_child(mode: str, arrays: int, mb: int) -> dict:
    """One child process's figures for ``mode`` ('default' or 'keep')."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(arrays), str(mb)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arrays", type=int, default=40)
    parser.add_argument("--mb", type=int, default=48)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    found: dict[str, list[dict]] = {"default": [], "keep": []}
    for r in range(args.rounds):
        for mode in ("default", "keep") if r % 2 == 0 else ("keep", "default"):
            found[mode].append(run_child(mode, args.arrays, args.mb))
            print(f"round {r + 1} {mode:8s} {json.dumps(found[mode][-1])}")
    med = {m: {k: statistics.median(x[k] for x in rows) for k in ("wall", "sys", "minflt")} for m, rows in found.items()}
    for mode, figures in med.items():
        print(f"median {mode:8s} wall {figures['wall']:.3f} s  sys {figures['sys']:.3f} s  minor faults {figures['minflt']:.0f}")
    print(f"ratio default / kept (wall): {med['default']['wall'] / max(med['keep']['wall'], 1e-9):.1f}")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
