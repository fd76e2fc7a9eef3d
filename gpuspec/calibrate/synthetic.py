"""Synthetic calibration inputs with known truth: flats, sky, standard stars, targets.

Small frame builders for tests and benchmarks, on the simulator's generators (one home
each, :mod:`gpuspec.sim.instrument` and :mod:`gpuspec.sim.spectra`):

- :func:`fiber_throughput` — per-fiber relative throughput
  (:func:`gpuspec.sim.instrument.fiber_throughput` with random coefficients), a few %
  from fiber to fiber and across wavelength, normalised to median 1 over fibers at each
  wavelength (exactly what a fiber flat recovers);
- :func:`flat_lamp` — :func:`gpuspec.sim.instrument.flat_lamp` (3100 K halogen blackbody
  seen through the instrument), electron/Å per fiber;
- :func:`sky_flux` — night sky, f_λ per fiber: :func:`gpuspec.sim.spectra.make_sky`
  (continuum, Hg/[OI]/Na lines and the OH forest; [OI] 5578.9 and 6302.0 Å);
- :func:`calib_vector` — atmosphere + instrument throughput as electron/Å per unit
  f_λ (10⁻¹⁷ erg/s/cm²/Å), :func:`gpuspec.sim.instrument.calib_vector` per Å;
- :func:`gaussian_resolution` — banded resolution matrices with a Gaussian LSF whose
  width varies with fiber and wavelength;
- stellar spectra from :mod:`gpuspec.calibrate.templates`, science targets
  (:func:`target_flux`).

:func:`make_exposure` assembles, per camera, an extracted flat-lamp frame and a science
frame (flux = R_f [T_f (calib·(object + sky))] + Gaussian noise, ivar from the noise
model, not from the noisy data), with a fibermap (OBJTYPE SKY, DESI_TARGET STD_FAINT,
FA_TYPE) and the truth of everything.

Host NumPy (generators); the frames are NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..frame import Frame
from ..io.fibermap import empty_fibermap
from ..sim import instrument as _instrument
from ..sim.instrument import planck_lambda
from .fibers import FA_TYPE_STD, STD_DESI_BITS

__all__ = ["fiber_throughput", "flat_lamp", "sky_flux", "calib_vector", "gaussian_resolution",
           "target_flux", "convolve", "make_exposure", "Exposure", "SKY_DESI_BIT",
           "short_waves", "planck_lambda"]

SKY_DESI_BIT = 1 << 32
#: modest camera grids for tests: overlapping, 0.8 Å, containing [OI] 5578.9 / 6302.0
from ..coadd.synth import SHORT_RANGES  # noqa: E402  (one definition)
READ_NOISE = 3.0     # electrons per pixel
PIXELS_PER_BIN = 3.0  # pixels across a trace summed into one extracted bin


def short_waves(bands=("b", "r", "z"), ranges=None, step: float = 0.8) -> dict:
    """Camera wavelength grids (default :data:`SHORT_RANGES`), on the 0.8 Å lattice.

    Backends: host only (NumPy; test data).
    """
    from ..coadd.synth import camera_waves

    return camera_waves(bands, step=step, ranges=ranges or SHORT_RANGES)


def fiber_throughput(nfiber: int, wave, seed: int = 0, rms: float = 0.03,
                     chromatic: float = 0.02) -> np.ndarray:
    """Relative fiber throughput (nfiber, nwave), median 1 over fibers at each wavelength.

    :func:`gpuspec.sim.instrument.fiber_throughput` with an achromatic factor
    ``1 + rms·g0`` and shape coefficients ``g1, g2`` (standard normals), divided by its
    median over the fibers.

    Backends: host only (NumPy; test data).
    """
    rng = np.random.default_rng([seed, 7001])
    g = rng.normal(size=(3, nfiber))
    t = _instrument.fiber_throughput(1 + rms * g[0], g[1], g[2], wave, chromatic)
    return t / np.median(t, axis=0, keepdims=True)


def flat_lamp(band: str, wave, level: float = 2.0e4) -> np.ndarray:
    """Continuum lamp through the camera (electron/Å per fiber), peak ``level``
    (:func:`gpuspec.sim.instrument.flat_lamp`).

    Backends: host only (NumPy; test data).
    """
    return _instrument.flat_lamp(band, wave, level)


def sky_flux(wave, dw: float = 0.8, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Night-sky f_λ per fiber (10⁻¹⁷ erg/s/cm²/Å), bin-averaged on ``wave``.

    Backends: host only (NumPy; test data).
    """
    from ..sim.spectra import make_sky

    return make_sky(seed).flux(np.asarray(wave, np.float64), dw, scale)


def calib_vector(band: str, wave, dw: float = 0.8, exptime: float = 900.0) -> np.ndarray:
    """Atmosphere + instrument throughput: electron/Å per unit f_λ (desispec ``calib``).

    Backends: host only (NumPy; test data).
    """
    return _instrument.calib_vector(band, wave, dw, exptime) / dw


def gaussian_resolution(nfiber: int, nwave: int, seed: int = 0, ndiag: int = 11,
                        sigma=(0.9, 1.3)) -> np.ndarray:
    """Resolution bands (nfiber, ndiag, nwave) with a Gaussian LSF (σ in bins).

    σ varies linearly along wavelength between two per-fiber values drawn in ``sigma``;
    columns are normalised (flux conserving), entries outside the matrix are 0.

    Backends: host only (NumPy; test data).
    """
    rng = np.random.default_rng([seed, 7002])
    h = ndiag // 2
    s0 = rng.uniform(*sigma, (nfiber, 1))
    s1 = rng.uniform(*sigma, (nfiber, 1))
    t = np.linspace(0.0, 1.0, nwave)[None, :]
    sig = (s0 + (s1 - s0) * t)[:, None, :]
    d = (np.arange(ndiag) - h)[None, :, None]
    r = np.exp(-0.5 * (d / sig) ** 2)
    k = np.arange(nwave)[None, None, :]
    r = np.where((k + d >= 0) & (k + d < nwave), r, 0.0)
    return r / r.sum(axis=1, keepdims=True)


def convolve(rdata, flux) -> np.ndarray:
    """``R_f @ flux_f`` for every fiber (host NumPy).

    Backends: host only (NumPy; test data).
    """
    from ..resolution import apply

    return apply(rdata, flux)


def target_flux(nt: int, wave, seed: int = 0) -> np.ndarray:
    """Science-target f_λ (nt, nwave): power-law continua with emission lines.

    Backends: host only (NumPy; test data).
    """
    rng = np.random.default_rng([seed, 7003])
    w = np.asarray(wave, np.float64)[None, :]
    cont = rng.uniform(0.3, 3.0, (nt, 1)) * (w / 6000.0) ** rng.uniform(-2.0, 0.5, (nt, 1))
    out = cont.copy()
    for _ in range(4):
        c = rng.uniform(w.min(), w.max(), (nt, 1))
        a = rng.uniform(5.0, 40.0, (nt, 1))
        s = rng.uniform(1.0, 3.0, (nt, 1))
        out += a * np.exp(-0.5 * ((w - c) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
    return out


@dataclass
class Exposure:
    """Synthetic flat and science frames of one exposure, per camera, with the truth."""

    flats: dict = field(default_factory=dict)        # camera -> Frame (flat lamp)
    frames: dict = field(default_factory=dict)       # camera -> Frame (science)
    fibermap: np.ndarray | None = None
    truth: dict = field(default_factory=dict)        # see make_exposure


def _noisy(model, rng, dw):
    counts_var = READ_NOISE ** 2 * PIXELS_PER_BIN + np.clip(model, 0, None) * dw
    ivar = dw ** 2 / counts_var
    return model + rng.normal(size=model.shape) / np.sqrt(ivar), ivar


def _fibermap(nfiber, nsky, nstd, seed, night, expid, specmin=0):
    rng = np.random.default_rng([seed, 7004])
    fm = empty_fibermap(nfiber, specmin=specmin)
    kinds = np.array(["TGT"] * nfiber, dtype="U3")
    order = rng.permutation(nfiber)
    sky, std = order[:nsky], order[nsky:nsky + nstd]
    kinds[sky] = "SKY"
    fm["OBJTYPE"] = kinds
    fm["TARGETID"] = 39627000000000000 + specmin + np.arange(nfiber)
    fm["DESI_TARGET"][sky] = SKY_DESI_BIT
    fm["DESI_TARGET"][std] = STD_DESI_BITS["STD_FAINT"]
    fm["FA_TYPE"][std] = FA_TYPE_STD
    fm["FA_TYPE"][sky] = 4
    fm["FA_TARGET"] = fm["DESI_TARGET"]
    fm["FIBERSTATUS"] = 0
    r = 400.0 * np.sqrt(rng.random(nfiber))
    a = 2 * np.pi * rng.random(nfiber)
    fm["FIBERASSIGN_X"] = r * np.cos(a)
    fm["FIBERASSIGN_Y"] = r * np.sin(a)
    fm["FIBER_X"], fm["FIBER_Y"] = fm["FIBERASSIGN_X"], fm["FIBERASSIGN_Y"]
    # NIGHT, EXPID and TILEID live in the frame header, not in a frame fibermap (desispec)
    fm["EXPTIME"] = 900.0
    return fm, np.sort(sky), np.sort(std)


def make_exposure(nfiber: int = 40, bands=("b", "r", "z"), waves=None, nsky: int = 10,
                  nstd: int = 6, seed: int = 0, night: int = 20250115, expid: int = 100,
                  flatid: int = 99, exptime: float = 900.0, flat_level: float = 2.0e4,
                  star_mag_r=(17.0, 18.5)) -> Exposure:
    """Flat and science frames of one spectrograph with known truth.

    Parameters
    ----------
    nfiber, nsky, nstd : int
        Fibers, of which sky fibers and standard stars.
    bands : bands to make (cameras ``{band}0``).
    waves : dict, optional
        band -> wavelength grid (default :func:`short_waves`).
    star_mag_r : (float, float)
        Range of the standard stars' r magnitudes (AB).

    Returns
    -------
    Exposure
        ``truth``: ``throughput`` band -> (nfiber, nwave) relative fiber throughput;
        ``lamp`` band -> (nwave,); ``sky`` band -> f_λ (nwave,); ``calib`` band ->
        electron/Å per f_λ; ``flux`` band -> (nfiber, nwave) true object f_λ (0 for
        sky fibers); ``sky_fibers``, ``std_fibers`` indices; ``std_templates``
        template index, ``std_teff``/``std_logg``/``std_feh``, ``std_scale``;
        ``template_wave``/``template_flux`` of the stars (normalised models on the
        template grid, 10⁻¹⁷ erg/s/cm²/Å).

    Backends: host only (NumPy; test data).
    """
    from .templates import load_templates, synthetic_mag

    waves = waves or short_waves(bands)
    rng = np.random.default_rng([seed, 7005])
    fm, sky, std = _fibermap(nfiber, nsky, nstd, seed, night, expid)
    lib = load_templates()
    tidx = rng.integers(0, len(lib.teff), nstd)
    mags = rng.uniform(*star_mag_r, nstd)
    tflux = lib.flux[tidx] * (10 ** (-0.4 * (mags[:, None] - synthetic_mag(lib.wave, lib.flux[
        tidx], "R")[:, None])))
    fm["FLUX_R"][std] = 10 ** (-0.4 * (mags - 22.5))
    fm["FLUX_G"][std] = 10 ** (-0.4 * (synthetic_mag(lib.wave, tflux, "G") - 22.5))
    fm["FLUX_Z"][std] = 10 ** (-0.4 * (synthetic_mag(lib.wave, tflux, "Z") - 22.5))
    exp = Exposure(fibermap=fm)
    tr = exp.truth
    tr.update(sky_fibers=sky, std_fibers=std, std_templates=tidx, std_teff=lib.teff[tidx],
              std_logg=lib.logg[tidx], std_feh=lib.feh[tidx], template_wave=lib.wave,
              template_flux=tflux, std_mag_r=mags)
    for key in ("throughput", "lamp", "sky", "calib", "flux", "resolution"):
        tr[key] = {}
    targets = np.setdiff1d(np.arange(nfiber), np.concatenate([sky, std]))
    for band in bands:
        cam = f"{band}0"
        w = np.asarray(waves[band], np.float64)
        dw = float(w[1] - w[0])
        nw = w.size
        thru = fiber_throughput(nfiber, w, seed)
        lamp = flat_lamp(band, w, flat_level)
        rd = gaussian_resolution(nfiber, nw, seed + 1000 * (ord(band) - 96))
        obj = np.zeros((nfiber, nw))
        from .util import resample_flux

        obj[std] = resample_flux(w, lib.wave, tflux)
        obj[targets] = target_flux(targets.size, w, seed)
        skyf = sky_flux(w, dw, seed)
        cal = calib_vector(band, w, dw, exptime)
        meta = dict(CAMERA=cam, NIGHT=night, SPECMIN=0, NSPEC=nfiber, EXPTIME=exptime,
                    DETECTOR="sim")
        fl_model = convolve(rd, thru * lamp[None, :])
        fl, fl_ivar = _noisy(fl_model, rng, dw)
        exp.flats[cam] = Frame(wave=w, flux=fl, ivar=fl_ivar, mask=np.zeros((nfiber, nw),
                               np.int32), resolution_data=rd, fibermap=fm.copy(),
                               meta=dict(meta, EXPID=flatid, FLAVOR="flat", OBSTYPE="FLAT"))
        sc_model = convolve(rd, thru * cal[None, :] * (obj + skyf[None, :]))
        sc, sc_ivar = _noisy(sc_model, rng, dw)
        exp.frames[cam] = Frame(wave=w, flux=sc, ivar=sc_ivar, mask=np.zeros((nfiber, nw),
                                np.int32), resolution_data=rd, fibermap=fm.copy(),
                                meta=dict(meta, EXPID=expid, FLAVOR="science",
                                          OBSTYPE="SCIENCE"))
        tr["throughput"][band], tr["lamp"][band], tr["sky"][band] = thru, lamp, skyf
        tr["calib"][band], tr["flux"][band], tr["resolution"][band] = cal, obj, rd
    return exp
