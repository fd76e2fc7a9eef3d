"""One simulated camera: night-level setup and per-exposure synthesis.

:class:`CameraSetup` holds what is fixed for the night (PSF, CCD geometry,
electronics, calibration images, truth wavelength grid, the noiseless object
and sky images per unit scale). :func:`simulate_exposure` makes the raw image
of one exposure:

``expected e⁻ = pixflat · (transparency·R_obj + sky_scale·R_sky) + dark·EXPTIME``
(science) or ``pixflat · lamp_scale·R_flat + dark·EXPTIME`` (flat lamp), drawn with
Poisson noise, plus the bad-column charge, a small saturated blob and cosmic rays,
then digitised (:func:`gpuspec.sim.raw.digitize`).

``R_obj``, ``R_sky`` and ``R_flat`` are the object, sky and lamp photons (each fiber's
through its relative throughput ``T_f(λ)``) rendered through the PSF
(:func:`gpuspec.psf.project.render_spectra`) on the chosen backend; the random
draws are made on the host so pixels do not depend on the stream of device
operations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import backend
from ..profiling import nvtx_range
from .calib import CameraCalib, make_calib
from .cameras import PRODUCTION_WAVE, WAVE_STEP
from .geometry import AMPS, MIN_AMP_ROWS, CCDGeometry
from .psfs import trace_wave_range
from .raw import Electronics, bias_structure, digitize, make_cosmics, make_electronics
from ..psf.project import render_spectra
from .instrument import calib_vector, flat_lamp
from .spectra import SkyModel, object_flux
from .streams import stream
from .targets import Targets

__all__ = ["CameraSetup", "setup_camera", "simulate_exposure", "crop_shape"]

CROP_MARGIN = 16


def crop_shape(psf, nspec: int, wave_range, full_size: bool) -> tuple[int, int]:
    """Trimmed CCD shape (ny, nx).

    Full size: (NPIX_Y, NPIX_X) of the PSF. Cropped: anchored at pixel (0, 0)
    so that PSF coordinates stay absolute, covering the spots of fibers
    0..nspec-1 over ``wave_range`` plus a 16-pixel margin, rounded up to even
    sizes, at least 256 rows and never beyond the full CCD.

    Backends: host only (NumPy).
    """
    if full_size:
        return int(psf.npix_y), int(psf.npix_x)
    xmin, xmax, ymin, ymax = psf.xyrange((0, nspec), wave_range)
    nx = min(int(psf.npix_x), int(xmax) + CROP_MARGIN)
    ny = min(int(psf.npix_y), max(int(ymax) + CROP_MARGIN, 2 * MIN_AMP_ROWS))
    nx += nx % 2
    ny += ny % 2
    return min(ny, int(psf.npix_y)), min(nx, int(psf.npix_x))


@dataclass
class CameraSetup:
    """Night-level state of one camera."""

    camera: str
    petal: int
    psf: object
    geom: CCDGeometry
    elec: Electronics
    calib: CameraCalib
    wave_range: tuple[float, float]
    wave: np.ndarray                 # truth grid (bin centres, Å)
    dw: float
    targets: Targets
    objflux: np.ndarray              # (nspec, nwave) f_λ, 1e-17 erg/s/cm²/Å
    skyflux: np.ndarray              # (nwave,) f_λ per fiber at sky_scale=1
    calibvec: np.ndarray             # (nwave,) photons per bin per unit f_λ (for exptime)
    thru: np.ndarray                 # (nspec, nwave) relative fiber throughput T_f(λ)
    lamp: np.ndarray                 # (nwave,) flat lamp, electron/Å per fiber (T_f = 1)
    exptime: float
    images: dict = field(default_factory=dict)   # {"obj", "sky"[, "flat"]}: host images
    timing: dict = field(default_factory=dict)   # seconds per stage

    @property
    def fibers(self) -> np.ndarray:
        """PSF fiber indices (0..nspec-1 within the petal).

        Backends: host only (NumPy).
        """
        return np.arange(self.targets.nspec)

    def phot(self, transparency: float, sky_scale: float):
        """(PHOT, SKYPHOT): photo-electrons per bin (nspec, nwave).

        Backends: host only (NumPy).
        """
        sky = sky_scale * self.skyflux[None, :] * self.calibvec[None, :] * self.thru
        obj = transparency * self.objflux * self.calibvec[None, :] * self.thru
        return obj + sky, sky

    def flat_phot(self, lamp_scale: float) -> np.ndarray:
        """Photo-electrons per bin (nspec, nwave) of a flat-lamp exposure.

        Backends: host only (NumPy).
        """
        return lamp_scale * self.lamp[None, :] * self.dw * self.thru


@nvtx_range("sim_setup_camera")
def setup_camera(seed: int, camera: str, psf, targets: Targets, sky: SkyModel,
                 wave_range, full_size: bool, exptime: float, xp=np,
                 dw: float = WAVE_STEP, flats: bool = False) -> CameraSetup:
    """Build the night-level state of ``camera`` and render its object and sky images
    (and the flat-lamp image when ``flats``).

    Backends: numpy and cupy for the rendering (``xp``); the images are kept on the host.
    """
    t0 = time.perf_counter()
    band, petal = camera[0], int(camera[1])
    nspec = targets.nspec
    ny, nx = crop_shape(psf, nspec, wave_range, full_size)
    geom = CCDGeometry.for_trimmed(ny, nx, full_size)
    elec = make_electronics(seed, camera)
    structure = bias_structure(seed, camera, geom, elec)
    cal = make_calib(seed, camera, geom, elec, structure)
    t_cal = time.perf_counter() - t0
    anchor = PRODUCTION_WAVE[band][0]
    wave = trace_wave_range(psf, np.arange(nspec), -(psf.hsizey + 1.0), ny + psf.hsizey, dw,
                            anchor)
    objflux = object_flux(targets, wave, dw)
    skyflux = sky.flux(wave, dw)
    calibvec = calib_vector(band, wave, dw, exptime)
    thru = targets.throughput(wave)
    setup = CameraSetup(camera=camera, petal=petal, psf=psf, geom=geom, elec=elec, calib=cal,
                        wave_range=(float(wave_range[0]), float(wave_range[1])), wave=wave,
                        dw=dw, targets=targets, objflux=objflux, skyflux=skyflux,
                        calibvec=calibvec, thru=thru, lamp=flat_lamp(band, wave),
                        exptime=float(exptime))
    t1 = time.perf_counter()
    comps = [objflux * calibvec[None, :] * thru, skyflux[None, :] * calibvec[None, :] * thru]
    if flats:
        comps.append(setup.flat_phot(1.0))
    # components are rendered from the same spots, each independently (adding the flat
    # leaves the object and sky images bit for bit unchanged)
    img = render_spectra(psf, setup.fibers, wave, np.stack(comps), (ny, nx), xp=xp)
    for k, name in enumerate(("obj", "sky", "flat")[:len(comps)]):
        setup.images[name] = backend.to_host(img[k])
    del img
    backend.free_memory(xp)
    setup.timing = {"calib_s": round(t_cal, 3), "spectra_s": round(t1 - t0 - t_cal, 3),
                    "render_s": round(time.perf_counter() - t1, 3)}
    return setup


@nvtx_range("sim_exposure")
def simulate_exposure(setup: CameraSetup, seed: int, expid: int, conditions: dict,
                      return_model: bool = False):
    """Raw image and truth of one exposure of one camera.

    Parameters
    ----------
    setup : CameraSetup
    seed, expid : int
    conditions : dict
        ``transparency`` and ``sky_scale`` of a science exposure, or ``lamp_scale`` and
        ``exptime`` of a flat-lamp exposure (``obstype`` ``"FLAT"``).
    return_model : bool
        Also return the expected electron image (noiseless, before cosmics).

    Returns
    -------
    raw : int32 ndarray (raw shape)
    truth : dict
        ``phot``, ``skyphot`` (nspec, nwave; None for a flat), ``cosmics`` (y, x,
        electrons), ``saturated`` (y, x), ``offsets`` (amp -> ADU).
    model : ndarray, only if ``return_model``

    Backends: host only (NumPy random draws on the images rendered by :func:`setup_camera`).
    """
    cam = setup.camera
    cal = setup.calib
    flat = conditions.get("obstype", "SCIENCE") == "FLAT"
    exptime = float(conditions.get("exptime", setup.exptime))
    if flat:
        model = setup.images["flat"] * conditions["lamp_scale"]
    else:
        tr, ss = conditions["transparency"], conditions["sky_scale"]
        model = setup.images["obj"] * tr
        model += setup.images["sky"] * ss
    model *= cal.pixflat
    model += cal.dark.astype(np.float64) * exptime
    electrons = stream(seed, "photons", cam, expid).poisson(model).astype(np.float64)
    rng = stream(seed, "defects", cam, expid)
    # bad column segment: spurious charge
    bx, by0, by1 = cal.defects["bad_column"]
    electrons[by0:by1, bx] += rng.uniform(100.0, 300.0, by1 - by0)
    # a small saturated blob (2×3 pixels) in amp D
    ys, xs = setup.geom.amps["D"].ccd
    sy = int(rng.integers(ys.start, ys.stop - 2))
    sx = int(rng.integers(xs.start, xs.stop - 3))
    electrons[sy:sy + 2, sx:sx + 3] = 4.0e5
    sat = np.stack(np.meshgrid(np.arange(sy, sy + 2), np.arange(sx, sx + 3), indexing="ij"),
                   axis=-1).reshape(-1, 2)
    cy, cx, ce = make_cosmics(stream(seed, "cosmics", cam, expid), setup.geom.trimmed_shape,
                              exptime)
    electrons[cy, cx] += ce
    brng = stream(seed, "bias_level", cam, expid)
    offsets = {a: setup.elec.offset[a] + float(brng.normal(0.0, 1.5)) for a in AMPS}
    raw = digitize(electrons, setup.geom, setup.elec, cal.structure, offsets,
                   stream(seed, "readnoise", cam, expid))
    phot, skyphot = (setup.flat_phot(conditions["lamp_scale"]), None) if flat else \
        setup.phot(tr, ss)
    truth = {"phot": phot, "skyphot": skyphot, "cosmics": (cy, cx, ce), "saturated": sat,
             "offsets": offsets}
    if return_model:
        return raw, truth, model
    return raw, truth
