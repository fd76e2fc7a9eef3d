"""gpuspec.grids: DESI's production grids and the one linear-grid rule, used by the
extraction, the launcher and the simulator (no copies)."""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec import grids


@pytest.mark.parametrize("arm,n", [("b", 2751), ("r", 2326), ("z", 2881)])
def test_desi_grids(arm, n):
    wmin, wmax, dw = grids.desi_wavelength(arm)
    g = grids.desi_grid(arm)
    assert dw == grids.WAVE_STEP == 0.8
    assert g.size == n and g[0] == wmin and abs(g[-1] - wmax) < 1e-9     # wmax included
    # desispec's rule, bit for bit (the frame's WAVELENGTH HDU)
    assert np.array_equal(g, np.arange(wmin, wmax + dw / 2.0, dw))


def test_linear_grid_endpoint_rule():
    assert grids.linear_grid(10.0, 12.0, 0.5).tolist() == [10.0, 10.5, 11.0, 11.5, 12.0]
    assert grids.linear_grid(10.0, 12.2, 0.5)[-1] == 12.0              # within dw/2: not past
    assert grids.linear_grid(10.0, 12.3, 0.5)[-1] == 12.5              # beyond dw/2: next point
    with pytest.raises(ValueError):
        grids.linear_grid(10.0, 12.0, 0.0)


def test_arms_share_their_overlap_when_rounded():
    b = grids.linear_grid(*grids.desi_wavelength("b"), decimals=6)
    r = grids.linear_grid(*grids.desi_wavelength("r"), decimals=6)
    common = np.intersect1d(b, r)
    assert common.size == 51 and common[0] == 5760.0 and common[-1] == 5800.0


def test_lattice_grid():
    g = grids.lattice_grid(5761.3, 5770.1, 0.8, anchor=3600.0)
    assert g[0] == pytest.approx(5761.6) and g[-1] == pytest.approx(5769.6)
    k = (g - 3600.0) / 0.8
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert grids.lattice_grid(5.0, 5.1, 0.8).size == 0


def test_no_copies_of_the_desi_grids():
    """The launcher's default grids and the simulator's production ranges are gpuspec.grids'."""
    from gpuspec.launch.manifest import DEFAULT_WAVELENGTH
    from gpuspec.sim import cameras

    assert DEFAULT_WAVELENGTH == {a: grids.desi_wavelength(a) for a in "brz"}
    assert cameras.PRODUCTION_WAVE is grids.DESI_WAVE
    assert cameras.WAVE_STEP == grids.WAVE_STEP


def test_extract_wave_grid_is_linear_grid():
    from gpuspec.extract import wave_grid

    assert np.array_equal(wave_grid((5760.0, 7620.0, 0.8)), grids.desi_grid("r"))
    w = np.linspace(5000, 5100, 11)
    assert wave_grid(w) is not None and np.array_equal(wave_grid(w), w)
