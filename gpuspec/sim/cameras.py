"""Camera selection and per-band defaults of the simulator."""

from __future__ import annotations

from typing import Iterable

from .. import camword as _camword
from ..errors import InputError

__all__ = ["BANDS", "PRODUCTION_WAVE", "WAVE_STEP", "parse_cameras"]

BANDS = ("b", "r", "z")

#: Production extraction grids (Å) and their step: :mod:`gpuspec.grids`.
from ..grids import DESI_WAVE as PRODUCTION_WAVE, WAVE_STEP  # noqa: E402


def parse_cameras(cameras: str | Iterable[str]) -> list[str]:
    """Cameras from a camword (``a0``, ``a01b2z9``), a comma list (``b0,r0,z0``) or a list.

    Returns
    -------
    list of str
        Lower-case camera names without duplicates, ordered by petal, then band
        (b, r, z).

    Raises
    ------
    InputError
        Unknown camera, malformed camword or nothing given.

    Host only (NumPy).
    """
    try:
        cams = _camword.parse_cameras(cameras)
    except ValueError as exc:
        raise InputError(f"invalid cameras {cameras!r}: {exc}") from None
    return sorted(cams, key=lambda c: (int(c[1]), BANDS.index(c[0])))
