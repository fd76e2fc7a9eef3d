"""Defaults of the simulator (kept light: the CLI imports it).

``DEFAULT_NFLAT`` is 0 while the launcher (``gpuspec-run``, the README demo) treats every
raw exposure it finds as a science exposure: a flat-lamp exposure in the raw folder would
otherwise be grouped and coadded. The calibration chain asks for flats explicitly
(``gpuspec simulate --flats 1``).
"""

DEFAULT_NIGHT = 20250115
DEFAULT_EXPID0 = 100
DEFAULT_NFLAT = 0        # flat-lamp exposures per night
FLAT_EXPTIME = 120.0     # seconds, like DESI's continuum-lamp flats
