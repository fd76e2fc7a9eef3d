"""Mask bits, resolution storage helpers, kernel loader, CLI registry."""

import numpy as np
import pytest
import scipy.sparse

from gpuspec import backend, resolution
from gpuspec.cli import build_parser, main
from gpuspec.maskbits import ccdmask, fibermask, specmask


def test_ccdmask_desispec_numbers():
    expected = {"BAD": 1, "HOT": 2, "DEAD": 4, "SATURATED": 8, "COSMIC": 16, "PIXFLATZERO": 32,
                "PIXFLATLOW": 64, "HIGHVAR": 128, "BADREADNOISE": 256, "BADAMP": 512}
    for name, value in expected.items():
        assert getattr(ccdmask, name) == value
    assert ccdmask.names(16 | 1) == ["BAD", "COSMIC"]
    assert ccdmask.bitnum("COSMIC") == 4 and ccdmask.bitname(4) == "COSMIC"


def test_specmask_and_fibermask():
    assert specmask.SOMEBADPIX == 1 and specmask.ALLBADPIX == 2 and specmask.BAD2DFIT == 128
    assert specmask.CONTAMINATED == 1 << 12
    assert fibermask.VARIABLE == 1048576  # value the desispec coadd sets (reference README)
    with pytest.raises(AttributeError):
        ccdmask.NOTABIT


def test_resolution_matches_scipy_dia(rng, xp):
    ndiag, nwave = 11, 60
    rdata = rng.random((3, ndiag, nwave))
    flux = rng.random((3, nwave))
    for i in range(3):
        dense = scipy.sparse.dia_matrix((rdata[i], np.arange(5, -6, -1)),
                                        shape=(nwave, nwave)).toarray()
        got = backend.to_host(resolution.apply(xp.asarray(rdata), xp.asarray(flux)))[i]
        np.testing.assert_allclose(got, dense @ flux[i], rtol=1e-13)
        np.testing.assert_allclose(backend.to_host(resolution.to_dense(xp.asarray(rdata)))[i],
                                   dense, rtol=0)
    back = resolution.from_dense(resolution.to_dense(xp.asarray(rdata)), ndiag)
    # entries that fall outside the matrix are not representable: compare the inside only
    dense0 = resolution.to_dense(rdata)
    np.testing.assert_array_equal(resolution.to_dense(backend.to_host(back)), dense0)


def test_cli_lists_working_subcommands(capsys):
    parser = build_parser()
    text = parser.format_help()
    assert "demo" in text
    assert main([]) == 0


def test_kernel_dir_exists():
    import os

    from gpuspec import kernels

    assert os.path.isdir(kernels.kernel_dir())
