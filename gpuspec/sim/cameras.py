"""Camera selection and per-band defaults of the simulator."""

from __future__ import annotations

from ..camword import ARMS, parse_cameras  # noqa: F401  (the one parser; re-exported)

__all__ = ["BANDS", "PRODUCTION_WAVE", "WAVE_STEP", "parse_cameras"]

BANDS = ARMS  #: the spectrograph arms, from :mod:`gpuspec.camword`

#: Production extraction grids (Å) and their step: :mod:`gpuspec.grids`.
from ..grids import DESI_WAVE as PRODUCTION_WAVE, WAVE_STEP  # noqa: E402
