"""A whole gpuspec-run production with backend cupy on the CuPy emulation (subprocesses
inherit GPUSPEC_EMULATE_CUPY=1), against the same production on numpy."""

from __future__ import annotations

import subprocess
import sys

import pytest

import test_launch_real as L
from test_launch_real import simdir  # noqa: F401 (module fixture)

pytestmark = [pytest.mark.slow, pytest.mark.emulated]


def _env(backend_emulated):
    env = L._env()
    env.pop("GPUSPEC_NO_GPU", None)
    if backend_emulated:
        env["GPUSPEC_EMULATE_CUPY"] = "1"
    return env


def _manifest(simdir, prod, backend):
    from gpuspec.launch.demo import make_demo_manifest

    return make_demo_manifest(simdir, prod, backend=backend, bundles=[0, 1], steps=L.STEPS,
                              wavelength=L.WAVE, progress_interval=0)


def test_production_on_emulated_cupy(simdir, tmp_path):
    runs = {}
    for name, be, emu in (("numpy", "numpy", False), ("cupy", "cupy", True)):
        prod = str(tmp_path / name)
        r = subprocess.run([sys.executable, "-m", "gpuspec.launch.cli",
                            _manifest(simdir, prod, be)], env=_env(emu), capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        runs[name] = prod
    a, b = L._products(runs["numpy"]), L._products(runs["cupy"])
    assert a == b and any("/coadd-" in f for f in a), (a, b)
    L.assert_images_close(runs["numpy"], runs["cupy"], a)
