"""gpuspec.psf"""
