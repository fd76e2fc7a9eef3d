"""FITS input/output in the DESI layouts (see docs/data-model)."""
