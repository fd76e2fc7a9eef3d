"""The fast paths of preproc (issue 16) against the plain formulations they replace.

* clipped statistics of one large set (sorted set, binary searches, moments of the kept
  slice) against the plain per-set loop, on float32 and float64 data, with ties,
  outliers, odd/even sizes and the fallback branch;
* the shifted-OR/AND morphology against ``scipy.ndimage`` (symmetric, asymmetric and the
  repair's elements, at the borders);
* the cosmic-ray prefilters (the contiguous block test of the first pass and the
  per-candidate necessary condition) against the exact criteria alone: same answer,
  and most of the bright-trace candidates really are dropped;
* the row-block size is a tuning parameter only: outputs are bit-identical;
* float32 calibrations (kept as float32 in memory) give the same planes as the same
  values in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from gpuspec import backend
from gpuspec.preproc import blocks, cosmics, morphology, stats
from test_preproc_units import _calc_overscan_loop as _loop_stats  # the plain estimator


@pytest.mark.parametrize("case", ["gauss32", "ints", "outliers", "odd", "even", "tiny",
                                  "constant", "skewed"])
def test_clipped_stats_matches_loop(xp, case):
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    if case == "gauss32":
        x = (1.35 * (1 + 0.2 * rng.standard_normal((300, 211)))).astype(np.float32)
    elif case == "ints":              # raw ADU: many ties
        x = np.round(rng.normal(1000.3, 3.1, (64, 500)))
    elif case == "outliers":
        x = rng.normal(0, 2, 20001)
        x[:300] += rng.uniform(20, 5000, 300)
    elif case == "odd":
        x = rng.normal(5, 1, 1001)
    elif case == "even":
        x = rng.normal(5, 1, 1000)
    elif case == "tiny":
        x = np.array([3.0, 1.0, 2.0, 10.0, 4.0, 2.5])
    elif case == "constant":          # MAD = 0: the fallback (median, uncorrected MAD)
        x = np.full(500, 7.0)
        x[:3] = 9.0
    else:
        x = rng.gamma(2.0, 3.0, 50000)
    level, noise = stats.clipped_stats(xp.asarray(x))
    l0, n0 = _loop_stats(x)
    assert isinstance(level, float) and isinstance(noise, float)
    assert abs(level - l0) <= 1e-12 * max(1.0, abs(l0)), (level, l0)
    assert abs(noise - n0) <= 1e-12 * max(1.0, abs(n0)), (noise, n0)


def test_clipped_stats_kept_test_at_the_exact_boundary(xp):
    """Values exactly at median ± nsigma·noise are not kept (strict test, as the loop)."""
    rng = np.random.default_rng(21)
    half = rng.normal(0, 2, 400)
    base = np.concatenate([half, -half, [0.0]])      # symmetric: median exactly 0
    mad = np.median(np.abs(np.concatenate([base, [50.0] * 6, [-50.0] * 6])))
    t = 5.0 * (1.4826 * mad)                          # the first round's threshold
    x = np.concatenate([base, [t] * 6, [-t] * 6])     # 12 values on the boundary
    assert np.median(x) == 0.0 and np.median(np.abs(x)) == mad
    got = stats.clipped_stats(xp.asarray(x), niter=1)
    ref = _loop_stats(x, niter=1)
    assert got == pytest.approx(ref, rel=1e-13, abs=1e-14)
    kept = np.abs(x) < t
    assert kept.sum() == base.size                    # the boundary values are left out
    assert got[0] == pytest.approx(x[kept].mean(), abs=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sorted_boundary_is_the_exact_kept_test(xp, dtype):
    """The kept-slice ends found by the device k-ary search equal a brute-force
    evaluation of the float64 test on every element (ties, thresholds on a value)."""
    rng = np.random.default_rng(5)
    for trial in range(40):
        vals = rng.normal(100.0, 3.0, 3000)
        if trial % 2:
            vals = np.round(vals * 4) / 4            # many ties
        s = np.sort(vals.astype(dtype))
        level = float(s[rng.integers(0, s.size)]) + (0.0 if trial % 3 else 1e-13)
        edge = s[rng.integers(0, s.size)]
        t = float(abs(edge - level))                          # a threshold on a value
        # values one and two units in the last place on either side of both boundaries
        near = []
        for v in (edge, dtype(2 * level - float(edge))):
            a = b = dtype(v)
            for _ in range(2):
                a, b = np.nextafter(a, dtype(np.inf)), np.nextafter(b, dtype(-np.inf))
                near += [a, b]
        s = np.sort(np.concatenate([s, np.asarray(near, dtype=dtype)]))
        sd = xp.asarray(s)
        lo, hi = (int(v) for v in backend.to_host(stats._kept_slice(sd, level, t, xp)))
        d = s.astype(np.float64) - level
        assert lo == int(np.argmax(d > -t)) if np.any(d > -t) else lo == s.size
        assert hi == int(np.argmax(d >= t)) if np.any(d >= t) else hi == s.size
        assert hi - lo == int(np.sum(np.abs(d) < t))


@pytest.mark.parametrize("probes", [1, 2, 5, 64])
def test_first_true_k_ary_search(xp, probes):
    """The device k-ary search finds the first true of any monotone predicate, per key,
    for every width up to its bound (answer at either end, width 0, probes past the end)."""
    rng = np.random.default_rng(probes)
    for n_max in (0, 1, 2, 7, 64, 65, 66, 500, 4226):
        for _ in range(6):
            width = rng.integers(0, n_max + 1, 2)
            first = np.array([rng.integers(0, w + 1) for w in width])
            first[rng.integers(0, 2)] = width[0] if rng.random() < 0.3 else first[0]
            first = np.minimum(first, width)
            fd, seen = xp.asarray(first), []

            def pred(q, fd=fd, seen=seen):
                seen.append(backend.to_host(q))
                return q >= fd[:, None]

            got = backend.to_host(stats._first_true(pred, xp.asarray(width), n_max, xp,
                                                    shape=(2,), probes=probes))
            assert np.array_equal(got, first), (n_max, width, first, got)
            for q in seen:      # offsets handed to pred stay in [0, max(width - 1, 0)]
                assert q.min() >= 0 and np.all(q <= np.maximum(width - 1, 0)[:, None])


def test_clipped_stats_does_not_reorder_input():
    x = np.random.default_rng(1).normal(0, 1, (50, 40)).astype(np.float32)
    x0 = x.copy()
    stats.clipped_stats(x[:, 5:30])          # a strided view
    assert np.array_equal(x, x0)


def test_two_sorted_selection(xp):
    rng = np.random.default_rng(4)
    for _ in range(50):
        a = np.sort(rng.integers(0, 30, rng.integers(0, 12)).astype(float))
        b = np.sort(rng.integers(0, 30, rng.integers(1, 12)).astype(float))
        u = np.sort(np.concatenate([a, b]))
        ad, bd = xp.asarray(np.append(a, np.nan)), xp.asarray(b)   # a may be empty

        def a_at(i):
            return xp.take(ad, xp.clip(i, 0, a.size))

        def b_at(i):
            return xp.take(bd, xp.clip(i, 0, b.size - 1))

        for k in range(u.size):
            k1 = min(k + 1, u.size - 1)
            got = stats._kth_of_two_sorted(a_at, a.size, b_at, b.size, k, k1, u.size, xp)
            assert list(backend.to_host(got)) == [u[k], u[k1]]


# ---------------------------------------------------------------- morphology
def _elements():
    asym = np.zeros((5, 5), bool)
    asym[2, 2] = asym[0, 3] = asym[4, 4] = asym[1, 0] = True
    return list(morphology.repair_elements()) + [np.ones((3, 3), bool), asym]


@pytest.mark.parametrize("density", [0.002, 0.05, 0.4])
@pytest.mark.parametrize("shape", [(61, 47), (33, 130), (20, 128), (9, 64)])
def test_shifted_morphology_matches_scipy(xp, density, shape):
    """Plain shifted ops and the 64-pixel packed closings (word edges, padding) vs scipy."""
    rng = np.random.default_rng(int(density * 1000) + shape[1])
    m = rng.random(shape) < density
    m[0, :3] = m[-1, -2:] = m[:, 0][::7] = True        # set pixels on the borders
    for se in _elements():
        offs = morphology._offsets(se)
        d = backend.to_host(morphology.binary_dilation(xp.asarray(m), offs))
        assert np.array_equal(d, ndi.binary_dilation(m, structure=se))
        e = backend.to_host(morphology.binary_erosion(xp.asarray(m), offs))
        assert np.array_equal(e, ndi.binary_erosion(m, structure=se, border_value=1))
    ref = np.zeros_like(m)
    for se in morphology.repair_elements():
        ref |= ndi.binary_erosion(ndi.binary_dilation(m, se), se, border_value=1)
    assert np.array_equal(backend.to_host(morphology.repair_mask(xp.asarray(m))), ref)


# ---------------------------------------------------------------- cosmic prefilters
def _bright_field(seed=3, shape=(90, 130)):
    """Bright smooth traces (most pixels above S/N 6), cosmic hits, masked pixels."""
    rng = np.random.default_rng(seed)
    y = np.arange(shape[0])[:, None]
    x = np.arange(shape[1])[None, :]
    truth = 30.0 + sum(300 * np.exp(-0.5 * ((x - c) / 1.1) ** 2) for c in range(6, 130, 8))
    truth = truth * (1 + 0.3 * np.sin(y / 7.0))
    var = truth + 9.0
    pix = truth + rng.normal(size=shape) * np.sqrt(var)
    ivar = 1.0 / var
    for _ in range(25):
        yy, xx = rng.integers(2, shape[0] - 2), rng.integers(2, shape[1] - 2)
        pix[yy, xx] += rng.uniform(100, 3000)
    pix[40, 20:26] += 800                      # a track
    mask = np.zeros(shape, np.int32)
    mask[rng.integers(0, shape[0], 30), rng.integers(0, shape[1], 30)] = 1
    ivar[rng.integers(0, shape[0], 10), rng.integers(0, shape[1], 10)] = 0.0
    return pix, ivar, mask


def test_candidate_prefilter_is_exact(xp):
    pix, ivar, mask = _bright_field()
    g = cosmics.PSF_GRADIENTS["b"]
    ny, nx = pix.shape
    ok = (ivar > 0) & (mask == 0)
    inner = np.zeros_like(ok)
    inner[1:-1, 1:-1] = True
    idx = xp.asarray(np.flatnonzero(ok & inner))
    p, v, o = xp.asarray(pix.ravel()), xp.asarray(ivar.ravel()), xp.asarray(ok.ravel())
    for nsig, cfudge, c2fudge in ((6.0, 3.0, 0.5), (3.0, 0.0, 0.5), (4.0, 1.0, 1.5)):
        a = cosmics._candidate_tests(p, v, o, idx, nx, g, nsig, cfudge, c2fudge)
        b = cosmics._exact_tests(p, v, o, idx, nx, g, nsig, cfudge, c2fudge)
        assert np.array_equal(backend.to_host(a), backend.to_host(b))
        assert backend.to_host(b).any()


def _criterion2(pix, ok, ivar, idx, nx, g, cfudge, c2fudge):
    """Criterion 2 alone, plainly (per candidate, per axis), for the necessary-condition test."""
    out = np.zeros(idx.size, bool)
    for n, i in enumerate(idx):
        c = pix[i]
        ce = 1 / math.sqrt(ivar[i])
        for a, (dy, dx) in enumerate(cosmics._AXES):
            off = dy * nx + dx
            vals, errs = [], []
            for j in (i - off, i + off):
                vals.append(pix[j] if ok[j] else c)
                errs.append(1 / ivar[j] if ok[j] else ce * ce)
            val = (vals[0] + vals[1]) * 0.5
            err = math.sqrt(errs[0] + errs[1]) * 0.5
            out[n] |= (c - cfudge * ce) * c2fudge * g[a] > val + cfudge * err
    return out


def test_necessary_condition_holds_at_the_margin(xp):
    """Centres placed just above and below criterion 2's threshold on one axis: the cheap
    tests (:func:`_may_pass` and the block test) keep every pixel that passes it."""
    rng = np.random.default_rng(12)
    ny, nx = 40, 41
    pix = rng.uniform(10, 50, (ny, nx))
    ivar = 1.0 / rng.uniform(5, 60, (ny, nx))
    ok = rng.random((ny, nx)) > 0.1
    g = cosmics.PSF_GRADIENTS["z"]
    cf, c2 = 3.0, 0.5
    cent = [(y, x) for y in range(2, ny - 2, 3) for x in range(2, nx - 2, 3)]
    for n, (y, x) in enumerate(cent):
        dy, dx = cosmics._AXES[n % 4]
        nb = [(y - dy, x - dx), (y + dy, x + dx)]
        # tiny errors on some: there the cheap bounds are as tight as criterion 2 (tiny
        # neighbour errors: _may_pass; tiny centre error too: the block test)
        if n % 3 < 2:
            for q in nb:
                ivar[q] = 1e12
        if n % 3 == 0:
            ivar[y, x] = 1e12
        ce = 1 / math.sqrt(ivar[y, x])
        vals = [pix[q] for q in nb]                 # the centre is never used as a value
        for q in nb:
            ok[q] = True
        err = math.sqrt(sum(1 / ivar[q] for q in nb)) * 0.5
        c = ((vals[0] + vals[1]) * 0.5 + cf * err) / (c2 * g[n % 4]) + cf * ce
        pix[y, x] = c * (1 + (1e-12 if n % 2 else -1e-12))
        ok[y, x] = True
    idx = np.array([y * nx + x for y, x in cent])
    crit2 = _criterion2(pix.ravel(), ok.ravel(), ivar.ravel(), idx, nx, g, cf, c2)
    assert 0 < crit2.sum() < crit2.size
    may = backend.to_host(cosmics._may_pass(xp.asarray(pix.ravel()), xp.asarray(ivar.ravel()),
                                            xp.asarray(ok.ravel()), xp.asarray(idx), nx, g,
                                            cf, c2))
    assert np.all(may[crit2])
    blk = backend.to_host(cosmics._may_pass_block(xp.asarray(pix), xp.asarray(ok),
                                                  slice(1, ny - 1), g, c2))
    ys, xs = np.array(cent).T
    assert np.all(blk[ys - 1, xs - 1][crit2])


def test_first_pass_block_prefilter_is_exact_and_selective(xp, monkeypatch):
    pix, ivar, mask = _bright_field(seed=8)
    g = cosmics.PSF_GRADIENTS["r"]
    args = [xp.asarray(a) for a in (pix, ivar, mask)]
    idx, _ = cosmics._first_candidates(*args, 6.0, g, 3.0, 0.5)
    got = backend.to_host(cosmics.reject_cosmic_rays(*args, "r1"))
    # without the block prefilter (every S/N candidate goes to the exact tests)
    monkeypatch.setattr(cosmics, "_may_pass_block",
                        lambda pix, ok, rows, gradients, c2fudge:
                        backend.get_array_module(pix).ones(
                            (rows.stop - rows.start, pix.shape[1] - 2), dtype=bool))
    idx_all, _ = cosmics._first_candidates(*args, 6.0, g, 3.0, 0.5)
    ref = backend.to_host(cosmics.reject_cosmic_rays(*args, "r1"))
    assert np.array_equal(got, ref) and ref.sum() > 25
    # the prefilter drops most of the S/N candidates of bright traces
    assert idx.size < 0.1 * idx_all.size, (idx.size, idx_all.size)
    assert set(backend.to_host(idx)) <= set(backend.to_host(idx_all))


# ---------------------------------------------------------------- blocks and float32
def _small_camera():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "perf"))
    import bench_preproc as bp

    return bp.synth_camera(seed=9, ndy=150, ndx=140)


def _planes(img):
    return [backend.to_host(a) for a in (img.pix, img.ivar, img.mask, img.readnoise)]


def test_row_block_size_does_not_change_the_answer(monkeypatch):
    from gpuspec.preproc import preproc

    raw, hdr, prim, cal = _small_camera()
    ref = _planes(preproc(raw, hdr, prim, backend="numpy", **cal))
    for rows in (1, 7, 1000):
        monkeypatch.setattr(blocks, "CPU_ROWS", rows)
        got = _planes(preproc(raw, hdr, prim, backend="numpy", **cal))
        for a, b in zip(got, ref):
            assert np.array_equal(a, b), rows


def test_float32_calibrations_equal_their_float64_values():
    from gpuspec.preproc import preproc

    raw, hdr, prim, cal = _small_camera()
    c32 = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in cal.items()}
    c64 = {k: (v.astype(np.float64) if v.dtype.kind == "f" and k != "dark" else v)
           for k, v in c32.items()}          # the dark keeps float32 (scaled in float32)
    a = _planes(preproc(raw, hdr, prim, backend="numpy", **c32))
    b = _planes(preproc(raw, hdr, prim, backend="numpy", **c64))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert math.isfinite(float(a[1].max()))
