"""Shared pytest fixtures: backends, reference data, markers.

Backends of the ``xp`` fixture: ``numpy``; ``emulated-cupy`` (always: the strict CuPy
emulation :mod:`gpuspec.testing.fakecupy`, so CI without a GPU runs the CuPy code path);
``cupy`` (marked ``gpu``; only where a CUDA GPU is usable).

Every ``gpu``-marked test also runs twice: ``[cuda]`` on the real GPU (skipped without one;
``pytest -m gpu`` selects only these) and ``[emulated-cupy]`` on the emulation (marked
``emulated``, not ``gpu``; ``pytest -m emulated`` selects every emulated case).
"""

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

EMULATED = "emulated-cupy"
_GPU = (not backend.gpu_disabled()) and (not backend.cupy_emulated()) and backend.cupy_available()
# the cupy case carries the gpu marker at collection time, so ``pytest -m gpu`` selects it
# (a marker applied inside the fixture would come too late for -m selection)
_BACKENDS = (["numpy", pytest.param(EMULATED, marks=pytest.mark.emulated)]
             + ([pytest.param("cupy", marks=pytest.mark.gpu)] if _GPU else []))


def pytest_generate_tests(metafunc):
    """gpu-marked tests run on the real GPU ([cuda]) and on the emulation ([emulated-cupy])."""
    if metafunc.definition.get_closest_marker("gpu") and "xp" not in metafunc.fixturenames:
        metafunc.parametrize("_gpu_backend", ["cuda", EMULATED], indirect=True)


def _is_emulated_case(item) -> bool:
    cs = getattr(item, "callspec", None)
    return cs is not None and EMULATED in (cs.params.get("_gpu_backend"), cs.params.get("xp"))


@pytest.hookimpl(tryfirst=True)
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
        if _is_emulated_case(item):
            # the emulated twin of a gpu test is not a GPU test: -m gpu must not select it
            item.own_markers[:] = [m for m in item.own_markers if m.name != "gpu"]
            item.add_marker(pytest.mark.emulated)
        elif item.get_closest_marker("gpu") and not _GPU:
            item.add_marker(skip_gpu)
        if item.get_closest_marker("mpi") and not have_mpi:
            item.add_marker(skip_mpi)


@pytest.fixture
def emulate_cupy(monkeypatch):
    """Run the test on the CuPy emulation: ``GPUSPEC_EMULATE_CUPY=1`` (also for the
    subprocesses it starts), emulated ``cupy``/``cupyx`` in ``sys.modules``. Yields the
    emulated ``cupy`` module; restores everything afterwards."""
    from gpuspec.testing import fakecupy

    monkeypatch.setenv(backend.EMULATE_ENV, "1")
    monkeypatch.delenv("GPUSPEC_NO_GPU", raising=False)
    cp = backend.get_xp("cupy")
    assert fakecupy.is_emulated(cp)
    try:
        yield cp
    finally:
        fakecupy.uninstall()


@pytest.fixture(autouse=True)
def _gpu_backend(request):
    """Backend of a gpu-marked test (parametrised by pytest_generate_tests)."""
    param = getattr(request, "param", None)
    if param == EMULATED:
        yield request.getfixturevalue("emulate_cupy")
    else:
        yield None


@pytest.fixture(params=_BACKENDS)
def xp(request):
    """Array namespace, parametrised over numpy, the CuPy emulation and (on a GPU) cupy."""
    if request.param == EMULATED:
        return request.getfixturevalue("emulate_cupy")
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
