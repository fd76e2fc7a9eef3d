"""CUDA sources of gpuspec (shipped in the wheel as gpuspec.cuda)."""
