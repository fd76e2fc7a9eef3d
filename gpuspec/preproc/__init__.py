"""gpuspec.preproc"""
