"""gpuspec.qa: QA pictures of every product and the HTML report of a production.

matplotlib is the optional ``qa`` extra (``pip install 'gpuspec[qa]'``): it is
imported only when a picture is drawn, with the Agg backend, so that the rest of
gpuspec never depends on it; without it drawing raises
:class:`~gpuspec.qa.mpl.MissingDependencyError` naming the extra.

>>> from gpuspec.qa import plot_frame, write_report                 # doctest: +SKIP
>>> plot_frame("frame-r0-00000100.fits").savefig("frame.png")        # doctest: +SKIP
>>> write_report("prod", "prod/report.html")                         # doctest: +SKIP

========================================  ======================================
name                                      module
========================================  ======================================
plot_preproc                              :mod:`gpuspec.qa.preproc`
plot_frame                                :mod:`gpuspec.qa.frame` (frames, cframes)
plot_spectra                              :mod:`gpuspec.qa.spectra` (spectra, coadds)
plot_fiberflat, plot_sky, plot_fluxcalib  :mod:`gpuspec.qa.calib`
draw_file, detect_product                 :mod:`gpuspec.qa.draw`, :mod:`gpuspec.qa.kinds`
write_report                              :mod:`gpuspec.qa.report`
plot_perf_history                         :mod:`gpuspec.qa.history`
========================================  ======================================

See docs/qa.md.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "plot_preproc": "preproc", "plot_frame": "frame", "plot_spectra": "spectra",
    "plot_fiberflat": "calib", "plot_sky": "calib", "plot_fluxcalib": "calib",
    "draw_file": "draw", "detect_product": "kinds", "write_report": "report",
    "plot_perf_history": "history", "MissingDependencyError": "mpl",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'gpuspec.qa' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
