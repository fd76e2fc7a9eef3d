"""gpuspec.sim"""
