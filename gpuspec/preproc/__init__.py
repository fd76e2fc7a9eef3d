"""gpuspec.preproc: raw camera image → preprocessed image (desispec behaviour, numpy or cupy).

Public API
----------
preproc(raw, header, primary_header=None, *, bias=None, dark=None, pixflat=None, mask=None,
        cosmics=True, use_overscan_row=False, backend="auto", ...) -> gpuspec.Image
preproc_file(rawfile, camera, outfile, *, ...) -> str
reject_cosmic_rays(pix, ivar, mask, camera, ...) -> bool array
"""

from .core import preproc  # noqa: F401
from .cosmics import reject_cosmic_rays  # noqa: F401
from .stats import clipped_stats, clipped_stats_rows  # noqa: F401

__all__ = ["preproc", "preproc_file", "reject_cosmic_rays", "clipped_stats",
           "clipped_stats_rows"]


def __getattr__(name):
    # preproc_file pulls in the FITS I/O; import it lazily.
    if name == "preproc_file":
        from .fileio import preproc_file

        return preproc_file
    raise AttributeError(name)
