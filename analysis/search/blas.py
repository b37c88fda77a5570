"""Which BLAS kernels exact search runs on, chosen from the CPU's real flags before faiss loads.

faiss-cpu ships its own OpenBLAS, which picks its kernels from the CPU model it recognises. On CPUs it does
not recognise (virtual machines that hide the model, newer CPUs than the build) it falls back to generic
kernels ("Prescott": SSE3), measured at a quarter of the speed of the AVX-512 kernels on the same machine.
OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when the library loads, so :func:`choose_openblas_coretype`
runs from ``analysis/__init__.py``, before any module imports faiss:

- a ``OPENBLAS_CORETYPE`` already set (by the user, or by an environment that sets it on purpose because an
  older OpenBLAS crashes on its CPU) is never changed;
- otherwise the core type comes from the flags in ``/proc/cpuinfo``: AVX-512 (F, BW, DQ, VL) ->
  ``SkylakeX``, AVX2 with FMA -> ``Haswell``, anything else -> left to OpenBLAS. Never a core type whose
  instructions the CPU lacks.

After faiss has loaded, :func:`blas_report` says what each BLAS in the process really runs (threadpoolctl
reports the architecture OpenBLAS chose), and :func:`exact_kernel` says which exact-search kernel
:mod:`analysis.search.exact` uses: faiss (its OpenBLAS) unless that OpenBLAS still runs generic kernels on a
CPU with AVX2, where torch's matmul (MKL / its own dispatch) is the faster exact path. This module imports
nothing heavy at load time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, MutableMapping
from pathlib import Path

CORETYPE_VARIABLE = "OPENBLAS_CORETYPE"
#: OpenBLAS architectures with no AVX2 kernels: "fell back to generic kernels" on a modern CPU.
GENERIC_ARCHITECTURES = frozenset(
    {"prescott", "katmai", "coppermine", "northwood", "core2", "penryn", "dunnington", "nehalem", "atom",
     "banias", "athlon", "opteron", "opteron_sse3", "barcelona", "bobcat", "sandybridge", "bulldozer",
     "piledriver", "steamroller", "excavator", "generic"}
)
_AVX512 = ("avx512f", "avx512bw", "avx512dq", "avx512vl")
_AVX2 = ("avx2", "fma")

#: What :func:`choose_openblas_coretype` did in this process (for benchmarks and ``blas_report``).
CHOICE: dict[str, str | None] = {"coretype": None, "source": "not chosen yet"}


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU listed in ``cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def coretype_for_flags(flags: Iterable[str]) -> str | None:
    """The fastest OpenBLAS core type whose instructions all appear in ``flags`` (None: leave it to OpenBLAS).

    ``SkylakeX`` needs AVX-512 F/BW/DQ/VL, ``Haswell`` needs AVX2 and FMA.
    """
    have = set(flags)
    if all(f in have for f in _AVX512):
        return "SkylakeX"
    if all(f in have for f in _AVX2):
        return "Haswell"
    return None


def choose_openblas_coretype(
    environ: MutableMapping[str, str] | None = None, *, flags: Iterable[str] | None = None
) -> str | None:
    """Set ``OPENBLAS_CORETYPE`` from the CPU's flags unless it is already set; returns the core type in force.

    Only effective before an OpenBLAS loads (faiss's loads with ``import faiss``); harmless afterwards.

    Parameters
    ----------
    environ : mutable mapping, optional
        The environment to read and set (default ``os.environ``).
    flags : iterable of str, optional
        The CPU flags (default: :func:`cpu_flags` of ``/proc/cpuinfo``).
    """
    env = os.environ if environ is None else environ
    given = env.get(CORETYPE_VARIABLE, "").strip()
    if given:
        if environ is None:
            CHOICE.update(coretype=given, source="set before NegScope started (kept)")
        return given
    coretype = coretype_for_flags(cpu_flags() if flags is None else flags)
    if coretype is not None:
        env[CORETYPE_VARIABLE] = coretype
    if environ is None:
        CHOICE.update(coretype=coretype, source="from the CPU flags" if coretype else "left to OpenBLAS")
    return coretype


def blas_report() -> list[dict[str, str | int | None]]:
    """Each BLAS loaded in this process: library file name, its API, version, architecture and threads."""
    from threadpoolctl import threadpool_info

    return [
        {
            "library": Path(str(info.get("filepath", ""))).name,
            "internal_api": info.get("internal_api"),
            "version": info.get("version"),
            "architecture": info.get("architecture"),
            "threads": info.get("num_threads"),
        }
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]


def faiss_architecture() -> str | None:
    """The kernel architecture of faiss's own OpenBLAS (loads faiss); None where faiss links another BLAS."""
    import faiss  # noqa: F401  (loads the library so that threadpoolctl sees it)

    for row in blas_report():
        if "faiss" in str(row["library"]) or "openblaso" in str(row["library"]):
            return None if row["architecture"] is None else str(row["architecture"])
    return None


def is_generic(architecture: str | None) -> bool:
    """Whether an OpenBLAS architecture name is one without AVX2 kernels."""
    return architecture is not None and architecture.strip().lower() in GENERIC_ARCHITECTURES


_KERNEL: list[str] = []


def exact_kernel(*, flags: Iterable[str] | None = None, architecture: str | None = None) -> str:
    """``"faiss"`` or ``"torch"``: the exact-search kernel for this process.

    torch when faiss's OpenBLAS runs generic kernels (see :data:`GENERIC_ARCHITECTURES`) while the CPU has AVX2
    and FMA (an OpenBLAS that cannot use them, for example because ``OPENBLAS_CORETYPE`` was set on purpose);
    faiss otherwise. ``NEGSCOPE_EXACT_KERNEL=faiss|torch`` forces one. Cached for the process when called
    without arguments.
    """
    forced = os.environ.get("NEGSCOPE_EXACT_KERNEL", "").strip().lower()
    if forced in ("faiss", "torch"):
        return forced
    cacheable = flags is None and architecture is None
    if cacheable and _KERNEL:
        return _KERNEL[0]
    have = set(cpu_flags() if flags is None else flags)
    arch = faiss_architecture() if architecture is None else architecture
    kernel = "torch" if is_generic(arch) and all(f in have for f in _AVX2) else "faiss"
    if cacheable:
        _KERNEL.append(kernel)
    return kernel


def describe_kernel() -> str:
    """One line for benchmarks: the exact kernel, faiss's OpenBLAS architecture, and how the core type was set."""
    kernel = exact_kernel()
    return (
        f"exact kernel: {kernel}; faiss OpenBLAS architecture: {faiss_architecture()};"
        f" {CORETYPE_VARIABLE}={os.environ.get(CORETYPE_VARIABLE)} ({CHOICE['source']})"
    )
