"""gpuspec.coadd"""
