"""gpuspec: GPU-first DESI spectroscopic reduction.

Data flow (one sub-package per step)::

    raw exposure --preproc--> preproc image --extract--> frame --group/coadd--> coadd
    gpuspec.io      gpuspec.preproc     gpuspec.extract       gpuspec.coadd

Supporting modules: :mod:`gpuspec.backend` (numpy/cupy ``xp``), :mod:`gpuspec.psf`
(Gauss-Hermite PSF), :mod:`gpuspec.sim` (simulator), :mod:`gpuspec.launch`
(production runner), :mod:`gpuspec.profiling` (NVTX ranges, timers).
"""

__version__ = "0.1.0.dev0"

from . import backend, maskbits  # noqa: E402,F401
from .frame import Frame  # noqa: E402,F401
from .image import Image  # noqa: E402,F401
from .spectra import Spectra  # noqa: E402,F401

__all__ = ["__version__", "backend", "maskbits", "Frame", "Image", "Spectra"]
