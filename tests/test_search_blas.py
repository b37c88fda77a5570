"""The BLAS kernels exact search runs on: core type from the CPU flags, a user's setting kept, torch fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.search import blas
from analysis.search.blas import (
    choose_openblas_coretype,
    coretype_for_flags,
    cpu_flags,
    exact_kernel,
    is_generic,
)
from analysis.search.exact import knn, torch_knn

ROOT = Path(__file__).resolve().parent.parent
AVX512 = {"sse3", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"}


def test_core_type_is_the_fastest_the_flags_allow() -> None:
    assert coretype_for_flags(AVX512) == "SkylakeX"
    assert coretype_for_flags(AVX512 - {"avx512bw"}) == "Haswell"  # partial AVX-512: never SkylakeX
    assert coretype_for_flags({"sse3", "avx", "avx2", "fma"}) == "Haswell"
    assert coretype_for_flags({"sse3", "avx", "avx2"}) is None  # AVX2 without FMA: leave it to OpenBLAS
    assert coretype_for_flags(set()) is None


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse3 avx2 fma\n\nprocessor\t: 1\nflags\t: x\n")
    assert cpu_flags(info) == {"fpu", "sse3", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_a_core_type_already_set_is_kept_and_an_unset_one_chosen() -> None:
    env = {"OPENBLAS_CORETYPE": "Prescott"}
    assert choose_openblas_coretype(env, flags=AVX512) == "Prescott"
    assert env == {"OPENBLAS_CORETYPE": "Prescott"}
    env = {}
    assert choose_openblas_coretype(env, flags=AVX512) == "SkylakeX" and env["OPENBLAS_CORETYPE"] == "SkylakeX"
    env = {"OPENBLAS_CORETYPE": ""}  # set but empty: nothing chosen, so choose
    assert choose_openblas_coretype(env, flags={"avx2", "fma"}) == "Haswell"
    env = {}
    assert choose_openblas_coretype(env, flags={"sse3"}) is None and "OPENBLAS_CORETYPE" not in env


def test_torch_kernel_only_where_faiss_runs_generic_kernels_on_an_avx2_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEGSCOPE_EXACT_KERNEL", raising=False)
    assert is_generic("Prescott") and is_generic("CORE2") and not is_generic("SkylakeX") and not is_generic(None)
    assert exact_kernel(flags={"avx2", "fma"}, architecture="Prescott") == "torch"
    assert exact_kernel(flags={"sse3"}, architecture="Prescott") == "faiss"
    assert exact_kernel(flags=AVX512, architecture="SkylakeX") == "faiss"
    assert exact_kernel(flags=AVX512, architecture="Zen") == "faiss"
    monkeypatch.setenv("NEGSCOPE_EXACT_KERNEL", "torch")
    assert exact_kernel(flags=AVX512, architecture="SkylakeX") == "torch"


def _reference_topk(q: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q.astype(np.float64) @ c.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(c.shape[0]), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def test_torch_knn_matches_a_float64_reference_with_ties_to_the_lower_row() -> None:
    rng = np.random.default_rng(3)
    c = rng.normal(size=(300, 16)).astype(np.float32)
    c[7] = c[123]  # an exact tie: the lower row first
    q = np.concatenate([rng.normal(size=(40, 16)), c[[123, 5]]]).astype(np.float32)
    sims, ids = torch_knn(q, c, 5, block_size=16)
    ref_s, ref_i = _reference_topk(q, c, 5)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(sims, ref_s, rtol=1e-5, atol=1e-5)
    assert ids[40, 0] == 7 and ids[40, 1] == 123


def test_knn_gives_the_same_neighbours_through_either_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    c = rng.normal(size=(500, 24)).astype(np.float32)
    q = rng.normal(size=(60, 24)).astype(np.float32)
    monkeypatch.setenv("NEGSCOPE_EXACT_KERNEL", "faiss")
    s_f, i_f = knn(q, c, 8)
    monkeypatch.setenv("NEGSCOPE_EXACT_KERNEL", "torch")
    s_t, i_t = knn(q, c, 8)
    np.testing.assert_array_equal(i_f, i_t)
    np.testing.assert_allclose(s_f, s_t, rtol=1e-5, atol=1e-5)
    _, ref = _reference_topk(q, c, 8)
    np.testing.assert_array_equal(i_t, ref)


def _faiss_blas_in_child(env_extra: dict[str, str | None]) -> dict:
    code = (
        "import json, analysis, faiss\n"
        "from analysis.search.blas import faiss_architecture, CHOICE\n"
        "import os\n"
        "print(json.dumps({'arch': faiss_architecture(), 'env': os.environ.get('OPENBLAS_CORETYPE'),"
        " 'source': CHOICE['source']}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update({k: v for k, v in env_extra.items() if v is not None})
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_faiss_loads_with_the_core_type_chosen_before_it_and_keeps_a_users_setting() -> None:
    flags = cpu_flags()
    chosen = coretype_for_flags(flags)
    if chosen is None:
        pytest.skip("this CPU has neither AVX2+FMA nor AVX-512: nothing to choose")
    child = _faiss_blas_in_child({})
    if child["arch"] is None:
        pytest.skip("faiss does not bundle an OpenBLAS here")
    assert child["env"] == chosen and child["source"] == "from the CPU flags"
    assert child["arch"].lower() == chosen.lower()
    kept = _faiss_blas_in_child({"OPENBLAS_CORETYPE": "Haswell"})
    assert kept["env"] == "Haswell" and kept["arch"].lower() == "haswell"
    assert kept["source"] == "set before NegScope started (kept)"
    assert blas.CORETYPE_VARIABLE == "OPENBLAS_CORETYPE"
