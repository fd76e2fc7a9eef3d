"""gpuspec.extract"""
