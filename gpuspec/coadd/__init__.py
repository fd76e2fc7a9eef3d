"""Coadds: HEALPix grouping, ivar-weighted coadd, spectroperfectionism resampling/coadd.

Public API (see docs/coadd.md)::

    coadd(spectra, *, cosmics_nsig=4.0, onetile=False, no_normalize=False, backend="auto")
    coadd_cameras(spectra, backend="auto")
    spectroperf_resample(spectra, wave_out, backend="auto")
    decorrelate(cinv_band, cinvf, wavebin, ndiag=11, backend="auto")
    coadd_spectroperf(spectra, wave_out=None, backend="auto")
    group_frames(framefiles, outdir, nside=64, survey="main", program="dark")
    coadd_file(spectrafile, outfile, *, spectroperf=False, lin_step=None, ...)
"""

from .plain import coadd  # noqa: F401

__all__ = ["coadd"]
from .decorrelate import decorrelate  # noqa: F401,E402
from .spectroperf import coadd_spectroperf, spectroperf_resample  # noqa: F401,E402

__all__ += ["decorrelate", "coadd_spectroperf", "spectroperf_resample"]
from .cameras import coadd_cameras  # noqa: F401,E402
from .group import coadd_file, group_frames  # noqa: F401,E402

__all__ += ["coadd_cameras", "coadd_file", "group_frames"]
