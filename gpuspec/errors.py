"""Exceptions raised by gpuspec.

All input problems raise a subclass of :class:`GpuspecError` whose message names
the file, the HDU and/or the keyword at fault.
"""

from __future__ import annotations

__all__ = ["GpuspecError", "InputError", "MissingFileError", "MissingHDUError",
           "MissingKeywordError", "BadSectionError", "BadDataError"]


class GpuspecError(Exception):
    """Base class of gpuspec errors."""


class InputError(GpuspecError, ValueError):
    """An input file or array is malformed or inconsistent."""

    def __init__(self, message: str, path: str | None = None, hdu: str | int | None = None,
                 keyword: str | None = None):
        where = []
        if path is not None:
            where.append(f"file {path}")
        if hdu is not None:
            where.append(f"HDU {hdu}")
        if keyword is not None:
            where.append(f"keyword {keyword}")
        full = f"{', '.join(where)}: {message}" if where else message
        super().__init__(full)
        self.path, self.hdu, self.keyword = path, hdu, keyword


class MissingFileError(InputError, FileNotFoundError):
    """A required input file does not exist."""


class MissingHDUError(InputError, KeyError):
    """A required HDU is missing from a FITS file."""

    def __str__(self) -> str:  # KeyError would add quotes
        return self.args[0]


class MissingKeywordError(InputError, KeyError):
    """A required header keyword is missing."""

    def __str__(self) -> str:
        return self.args[0]


class BadSectionError(InputError):
    """A FITS section string (e.g. BIASSECA) cannot be parsed or is out of range."""


class BadDataError(InputError):
    """Array data are invalid (NaN, wrong shape, negative exposure time, ...)."""
