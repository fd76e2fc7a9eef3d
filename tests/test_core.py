"""Mask bits, resolution storage helpers, CLI registry."""

import argparse

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


def test_cli_has_a_working_subcommand_per_step(capsys):
    """Every step of the data flow has a subcommand whose parser dispatches to a function,
    and ``gpuspec`` alone prints the help listing them."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    expected = {"simulate", "preproc", "extract", "group", "coadd", "status", "tasks", "retry",
                "info", "demo"}
    assert expected <= set(sub.choices)
    for name, p in sub.choices.items():
        assert callable(p.get_default("func")), name
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in expected)
