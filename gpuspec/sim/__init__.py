"""gpuspec.sim: simulator of DESI-like nights (raw science and flat-lamp exposures,
calibrations, PSFs, fibermaps and truth spectra).

>>> from gpuspec.sim import simulate_night
>>> info = simulate_night("D", cameras="b0,r0,z0", nspec=50, seed=1)   # doctest: +SKIP

Modules: :mod:`~gpuspec.sim.night` (orchestration and layout),
:mod:`~gpuspec.sim.camera` (one camera), :mod:`~gpuspec.sim.render` (PSF
projection), :mod:`~gpuspec.sim.raw` (electronics), :mod:`~gpuspec.sim.calib`
(calibration images), :mod:`~gpuspec.sim.geometry` (amp layout),
:mod:`~gpuspec.sim.targets`, :mod:`~gpuspec.sim.spectra` (truth spectra, sky),
:mod:`~gpuspec.sim.stars` (standard stars from the stellar template library),
:mod:`~gpuspec.sim.instrument` (throughputs, atmosphere, fiber throughputs, flat lamp),
:mod:`~gpuspec.sim.fibermap`, :mod:`~gpuspec.sim.truth` (truth files),
:mod:`~gpuspec.sim.psfs` (per-camera PSFs), :mod:`~gpuspec.sim.streams` (seeds).
See docs/simulator.md.
"""

from __future__ import annotations

__all__ = ["simulate_night", "layout", "read_truth", "render_spectra"]


def __getattr__(name):
    if name in ("simulate_night", "layout"):
        from . import night

        return getattr(night, name)
    if name == "read_truth":
        from .truth import read_truth

        return read_truth
    if name == "render_spectra":
        from .render import render_spectra

        return render_spectra
    raise AttributeError(f"module 'gpuspec.sim' has no attribute {name!r}")
