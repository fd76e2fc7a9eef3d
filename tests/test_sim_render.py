"""Simulator rendering: photons projected through the PSF are conserved and land
where specter-like single spots (psf.xypix) put them."""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec import backend
from gpuspec.sim.render import render_spectra, spot_fraction_inside


@pytest.fixture(scope="module")
def psf():
    from gpuspec.sim.psfs import default_template_path

    REF_PSF = default_template_path()
    import os

    if not os.path.exists(REF_PSF):
        pytest.skip(f"reference PSF not found: {REF_PSF} (set GPUSPEC_SHARED to the shared "
                    "folder, default ../shared)")
    from gpuspec.psf import read_psf

    return read_psf(REF_PSF)


SHAPE = (700, 330)   # rows 0..699 cover ~5543-5900 Å of fibers 0..24
FIBERS = np.arange(0, 25, 4)


def test_single_spot_matches_xypix(psf):
    for fiber, wave, ph in ((3, 5700.0, 1.0), (20, 5810.3, 250.0), (0, 5600.55, 7.5)):
        img = render_spectra(psf, [fiber], [wave], np.array([[ph]]), SHAPE)
        xs, ys, stamp = psf.xypix(fiber, wave)
        ref = np.zeros(SHAPE)
        ref[ys, xs] = ph * stamp
        np.testing.assert_allclose(img, ref, rtol=0, atol=1e-12 * ph)


def test_conservation_per_fiber(psf):
    rng = np.random.default_rng(5)
    wave = np.arange(5500.0, 5950.0, 0.8)
    phot = rng.uniform(0, 100, (len(FIBERS), wave.size))
    frac = spot_fraction_inside(psf, FIBERS, wave, SHAPE)
    # some spots leave the image at the bottom/top (edge losses), most are inside
    assert 0.2 < np.mean(frac == 1.0) < 0.95 and (frac < 1e-3).any()
    for i, f in enumerate(FIBERS):
        img = render_spectra(psf, [f], wave, phot[i:i + 1], SHAPE)
        inside = np.isclose(frac[i], 1.0, rtol=0, atol=1e-12)
        # spots fully inside: every photon is on the image
        img_in = render_spectra(psf, [f], wave[inside], phot[i:i + 1, inside], SHAPE)
        assert img_in.sum() == pytest.approx(phot[i, inside].sum(), rel=1e-12)
        # all spots: photons minus the parts outside the image
        assert img.sum() == pytest.approx((phot[i] * frac[i]).sum(), rel=1e-12)
        assert img.min() >= 0


def test_components_and_chunking(psf):
    rng = np.random.default_rng(6)
    wave = np.arange(5600.0, 5800.0, 0.8)
    ph = rng.uniform(0, 10, (2, len(FIBERS), wave.size))
    both = render_spectra(psf, FIBERS, wave, ph, SHAPE)
    assert both.shape == (2,) + SHAPE
    for c in range(2):
        one = render_spectra(psf, FIBERS, wave, ph[c], SHAPE, fiber_chunk=3, wave_chunk=37)
        np.testing.assert_allclose(both[c], one, rtol=1e-12, atol=1e-10)
    with pytest.raises(ValueError):
        render_spectra(psf, FIBERS, wave, ph[:, :2], SHAPE)


def test_backend_parity(psf, xp):
    """The same image on every backend (numpy here; cupy where a GPU is usable)."""
    rng = np.random.default_rng(7)
    wave = np.arange(5550.0, 5900.0, 0.8)
    ph = rng.uniform(0, 50, (len(FIBERS), wave.size))
    ref = render_spectra(psf, FIBERS, wave, ph, SHAPE, xp=np)
    out = render_spectra(psf, FIBERS, wave, backend.to_device(ph, xp), SHAPE, xp=xp)
    assert backend.get_array_module(out) is xp
    np.testing.assert_allclose(backend.to_host(out), ref, rtol=1e-10, atol=1e-9)


@pytest.mark.gpu
def test_simulation_gpu_matches_cpu(tmp_path):
    """Rendering on cupy gives the same noiseless images as numpy (GPU only)."""
    from gpuspec.sim.camera import setup_camera
    from gpuspec.sim.psfs import load_template
    from gpuspec.sim.spectra import make_sky
    from gpuspec.sim.targets import make_targets

    cp = backend.get_xp("cupy")
    psf = load_template()
    t = make_targets(1, 0, 25)
    sky = make_sky(1)
    a = setup_camera(1, "r0", psf, t, sky, (6000.0, 6300.0), False, 900.0, xp=np)
    b = setup_camera(1, "r0", psf, t, sky, (6000.0, 6300.0), False, 900.0, xp=cp)
    for k in ("obj", "sky"):
        np.testing.assert_allclose(b.images[k], a.images[k], rtol=1e-10, atol=1e-9)
