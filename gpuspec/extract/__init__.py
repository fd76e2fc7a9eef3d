"""Spectroperfectionism extraction (specter ``ex2d`` semantics), batched on CPU or GPU.

>>> frame = gpuspec.extract.extract_frame(image, ivar, psf, wave, 0, 500)     # doctest: +SKIP
>>> gpuspec.extract.extract_file("preproc-r0.fits", "psf-r0.fits", "frame-r0.fits",
...                              (5760.0, 7620.0, 0.8))                       # doctest: +SKIP

See ``docs/extract.md``.
"""

from .core import extract_bundle, extract_frame
from .files import extract_file, merge_frames, wave_grid
from .geometry import plan_bundle, split_bundle

__all__ = ["extract_frame", "extract_bundle", "extract_file", "merge_frames", "wave_grid",
           "plan_bundle", "split_bundle"]
