"""The radix sort of ``clipped_stats``' pixel sets (``gpuspec.preproc.sort_cpu``) against
``np.sort``."""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec.preproc import sort_cpu

pytestmark = pytest.mark.skipif(not sort_cpu.available(), reason="numba not available")

SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 5.0, 5.0, -3.5]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "ints", "special", "constant", "sorted", "reversed"])
def test_radix_sort_matches_numpy(dtype, kind):
    rng = np.random.default_rng(7)
    n = sort_cpu.MIN_SIZE * 3 + 17
    a = {"normal": lambda: rng.normal(0, 1e3, n),
         "ints": lambda: rng.integers(-50, 2000, n).astype(float),   # many ties
         "special": lambda: np.resize(np.array(SPECIAL + list(rng.normal(size=40))), n),
         "constant": lambda: np.full(n, 2.5),
         "sorted": lambda: np.sort(rng.normal(size=n)),
         "reversed": lambda: np.sort(rng.normal(size=n))[::-1].copy()}[kind]().astype(dtype)
    got = a.copy()
    sort_cpu.sort_inplace(got)
    want = np.sort(a)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)          # NaNs last in both, compared equal
    if kind == "special":
        z = np.flatnonzero(got == 0)
        assert np.signbit(got[z[0]]) and not np.signbit(got[z[-1]])   # -0.0 first


def test_small_other_dtypes_and_views_use_numpy():
    a = np.array([3.0, -1.0, 2.0])                      # below MIN_SIZE
    sort_cpu.sort_inplace(a)
    assert a.tolist() == [-1.0, 2.0, 3.0]
    b = np.arange(sort_cpu.MIN_SIZE * 2, 0, -1)          # int64: numpy's sort
    sort_cpu.sort_inplace(b)
    assert b[0] == 1 and np.all(np.diff(b) > 0)
    c = np.random.default_rng(1).normal(size=2 * sort_cpu.MIN_SIZE)[::2]   # strided view
    sort_cpu.sort_inplace(c)
    assert np.all(np.diff(c) >= 0)


def test_radix_sort_off_switch(monkeypatch):
    monkeypatch.setenv("GPUSPEC_PREPROC_NUMBA", "0")
    assert not sort_cpu.available()
