"""Shared pytest fixtures: backends, reference data, markers."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from gpuspec import backend

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.environ.get("GPUSPEC_SHARED", os.path.join(REPO, "..", "shared"))
REFERENCE = os.path.join(SHARED, "reference")
PUBLIC = os.path.join(REFERENCE, "public")
REF_PSF = os.path.join(REFERENCE, "psf", "psf-r0-00051060.fits")

_GPU = (not backend.gpu_disabled()) and backend.cupy_available()
# the cupy case carries the gpu marker at collection time, so ``pytest -m gpu`` selects it
# (a marker applied inside the fixture would come too late for -m selection)
_BACKENDS = ["numpy"] + ([pytest.param("cupy", marks=pytest.mark.gpu)] if _GPU else [])


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs cupy and a CUDA GPU (none usable here)")
    mpiexec = shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
        have_mpi = mpiexec is not None
    except Exception:
        have_mpi = False
    skip_mpi = pytest.mark.skip(reason="needs mpi4py and mpiexec")
    for item in items:
        if "gpu" in item.keywords and not _GPU:
            item.add_marker(skip_gpu)
        if "mpi" in item.keywords and not have_mpi:
            item.add_marker(skip_mpi)


@pytest.fixture(params=_BACKENDS)
def xp(request):
    """Array namespace, parametrised over the installed, usable backends."""
    if request.param == "cupy":
        request.applymarker(pytest.mark.gpu)
    return backend.get_xp(request.param)


def require_reference(*parts) -> str:
    """Path under shared/reference/public, or skip the test with a clear message."""
    path = os.path.join(PUBLIC, *parts)
    if not os.path.exists(path):
        pytest.skip(f"reference data not found: {path} (expected ../shared/reference beside the "
                    "checkout, or set GPUSPEC_SHARED)")
    return path


@pytest.fixture
def ref_psf_path():
    """The real r0 PSF of shared/reference/psf (skip if absent)."""
    if not os.path.exists(REF_PSF):
        pytest.skip(f"reference PSF not found: {REF_PSF}")
    return REF_PSF


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
