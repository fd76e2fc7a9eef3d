"""Default night and first exposure id of the simulator (kept light: the CLI imports it)."""

DEFAULT_NIGHT = 20250115
DEFAULT_EXPID0 = 100
