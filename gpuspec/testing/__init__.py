"""Test helpers shipped with gpuspec (importable by the tests and by ``gpuspec-run`` under
``GPUSPEC_EMULATE_CUPY=1``): :mod:`gpuspec.testing.fakecupy`, a strict CuPy emulation."""
