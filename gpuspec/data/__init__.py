"""Data files shipped with gpuspec (the simulator's template PSF)."""
