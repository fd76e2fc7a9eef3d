"""One small simulated dataset, reduced by gpuspec and by the real desispec, for the interop tests.

Built once per test session (``interop_data``): 3 exposures of cameras b0 and r0, 25 fibers,
200 Å per band (b 4000–4200, r 6000–6200 Å), so everything stays small:

* gpuspec: simulate → ``preproc_file`` → ``extract_file`` → ``group_frames`` → ``coadd_file``
  (default normalisation and ``no_normalize``);
* desispec (0.70 from the package index): ``desi_preproc`` on every camera of the first
  exposure (read_raw + desispec.preproc.preproc + write_image, run unchanged on the
  simulator's raw file), ``desi_group_spectra`` of gpuspec's frames for every HEALPix pixel.

Tests import the fixture with ``from interop_fixtures import interop_data``; the module skips
cleanly (``pytest.importorskip``) when desispec is not installed.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field

import pytest

os.environ.setdefault("DESI_LOGLEVEL", "WARNING")  # desispec logs every step at INFO

NEXP = 3
CAMERAS = ("b0", "r0")
WAVE = {"b": (4000.0, 4200.0), "r": (6000.0, 6200.0)}


@dataclass
class InteropData:
    """Paths of the shared dataset (see the module docstring)."""

    root: str
    info: dict
    raw: dict = field(default_factory=dict)          # expid -> raw file
    fibermap: dict = field(default_factory=dict)     # expid -> fibermap file
    calib: dict = field(default_factory=dict)        # camera -> {bias, dark, pixflat, mask}
    psf: dict = field(default_factory=dict)          # camera -> PSF file
    preproc: dict = field(default_factory=dict)      # (camera, expid) -> gpuspec preproc
    frames: dict = field(default_factory=dict)       # (camera, expid) -> gpuspec frame
    spectra: list = field(default_factory=list)      # gpuspec spectra files
    coadd: dict = field(default_factory=dict)        # spectra file -> gpuspec default coadd
    coadd_nonorm: dict = field(default_factory=dict)  # spectra file -> no_normalize coadd
    desi_preproc: dict = field(default_factory=dict)  # camera -> desispec preproc (1st exp)
    desi_spectra: dict = field(default_factory=dict)  # healpix -> desi_group_spectra output
    timing: dict = field(default_factory=dict)

    @property
    def expids(self):
        return self.info["expids"]

    def healpix_of(self, spectra_file: str) -> int:
        return int(os.path.basename(spectra_file).rsplit("-", 1)[1].split(".")[0])


def _gpuspec_side(d: InteropData) -> None:
    from gpuspec.coadd.group import coadd_file, group_frames
    from gpuspec.extract import extract_file
    from gpuspec.preproc import preproc_file

    for e in d.expids:
        for cam in CAMERAS:
            pre = os.path.join(d.root, "preproc", f"preproc-{cam}-{e:08d}.fits")
            preproc_file(d.raw[e], cam, pre, fibermap=d.fibermap[e], backend="numpy",
                         **d.calib[cam])
            d.preproc[(cam, e)] = pre
            fr = os.path.join(d.root, "frames", f"frame-{cam}-{e:08d}.fits")
            extract_file(pre, d.psf[cam], fr, d.info["wave_ranges"][cam], backend="numpy")
            d.frames[(cam, e)] = fr
    d.spectra = group_frames(sorted(d.frames.values()), os.path.join(d.root, "healpix"))
    for s in d.spectra:
        d.coadd[s] = coadd_file(s, s.replace("spectra-", "coadd-"), backend="numpy")
        d.coadd_nonorm[s] = coadd_file(s, s.replace("spectra-", "coadd-nonorm-"),
                                       no_normalize=True, backend="numpy")


def _desispec_side(d: InteropData) -> None:
    from desispec.scripts import group_spectra
    from desispec.scripts import preproc as desi_preproc

    e = d.expids[0]
    outdir = os.path.join(d.root, "desispec")
    os.makedirs(outdir, exist_ok=True)
    for cam in CAMERAS:
        out = os.path.join(outdir, f"preproc-{cam}-{e:08d}.fits")
        c = d.calib[cam]
        args = desi_preproc.parse(["-i", d.raw[e], "--cameras", cam, "--fibermap",
                                   d.fibermap[e], "--bias", c["bias"], "--dark", c["dark"],
                                   "--pixflat", c["pixflat"], "--mask", c["mask"],
                                   "--no-ccd-calib-filename", "--noregionmask",
                                   "--no-cte-correction", "-o", out])
        desi_preproc.main(args)
        d.desi_preproc[cam] = out
    for s in d.spectra:
        pix = d.healpix_of(s)
        out = os.path.join(outdir, f"spectra-{pix}.fits")
        group_spectra.main(group_spectra.parse(
            ["--inframes"] + sorted(d.frames.values()) + ["--healpix", str(pix), "-o", out]))
        d.desi_spectra[pix] = out


@pytest.fixture(scope="session")
def interop_data(tmp_path_factory) -> InteropData:
    """The shared dataset; skips without desispec."""
    pytest.importorskip("desispec", reason="needs the real desispec (pip install -e '.[interop]')")
    from gpuspec.sim import simulate_night

    root = str(tmp_path_factory.mktemp("interop"))
    t0 = time.perf_counter()
    info = simulate_night(os.path.join(root, "sim"), cameras=",".join(CAMERAS), nspec=25,
                          nexp=NEXP, seed=3, wave_ranges=WAVE, backend_name="numpy")
    d = InteropData(root=root, info=info)
    sim = info["outdir"]
    for e in info["expids"]:
        rawdir = os.path.join(sim, "raw", str(info["night"]), f"{e:08d}")
        d.raw[e] = glob.glob(os.path.join(rawdir, "desi-*.fits.fz"))[0]
        d.fibermap[e] = glob.glob(os.path.join(rawdir, "fibermap-*.fits"))[0]
    for cam in CAMERAS:
        d.calib[cam] = {k: os.path.join(sim, "calib", f"{k}-{cam}.fits")
                        for k in ("bias", "dark", "pixflat", "mask")}
        d.psf[cam] = os.path.join(sim, "psf", f"psf-{cam}.fits")
    d.timing["simulate_s"] = time.perf_counter() - t0
    _gpuspec_side(d)
    d.timing["gpuspec_s"] = time.perf_counter() - t0 - d.timing["simulate_s"]
    t1 = time.perf_counter()
    _desispec_side(d)
    d.timing["desispec_s"] = time.perf_counter() - t1
    return d
