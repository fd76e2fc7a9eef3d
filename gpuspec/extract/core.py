"""Spectroperfectionism extraction of bundles and frames (one ``xp`` code path).

How a bundle is computed (all on the array backend, batched over patches):

1. :func:`~gpuspec.extract.geometry.plan_bundle` lays out specter's patches
   (subbundles × wavelength steps, with padding) on the host.
2. The PSF spots of the bundle's fibers on the padded wavelength grid are built once,
   on the device (``psf.spots``).
3. Patches are processed in chunks bounded in memory. For a chunk, every fiber of
   every patch gets a pixel *window* (the patch rows × the columns its spots can
   touch). The projection matrix is scattered into these windows, for the fiber
   itself and its right-hand neighbours whose spots reach the window, giving a dense
   array ``A[p, f, pixel, d, λ]``. Then, batched over patches and fibers:

   * normal equations ``M = AᵀWA`` and ``b = AᵀWp`` with one batched matmul,
     plus specter's minimum-weight regularisation;
   * ``C = M⁻¹`` (Cholesky-based), deconvolved flux ``f = C b``;
   * per-fiber blocks ``C_ii`` → ``Q = C_ii^(-1/2)`` (batched ``eigh``), ``R``, ivar,
     decorrelated flux ``R f``;
   * model, pixel χ² with the PSF error term, chi2pix and the masked fraction.

4. Core results are scattered into the bundle's output arrays; nothing goes back to
   the host until the bundle is finished.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import backend as _backend
from ..errors import InputError
from ..frame import Frame
from ..maskbits import specmask
from ..profiling import nvtx_range
from ..psf import spots_cpu
from . import blocksolve, decorrelate_cpu, normal_cpu, pixels_cpu, windows
from .. import heap
from .. import threads as _threads
from .defaults import DEFAULT_PSFERR, SPECTER
from .geometry import Patch, check_wave, plan_bundle, resolution_halfwidth
from .layout import chunk_layout
from .solve import eig_inverse_sqrt, regularize_normal, solve_tail, sqrt_inverse

__all__ = ["extract_frame", "extract_bundle", "BAD2DFIT_CHI2"]

log = logging.getLogger(__name__)

#: numpy backend: assemble M with the Numba twin (``normal_cpu``) when available.
USE_NUMBA = True
#: numpy backend with the Numba twin: solve M block by block over the fiber pairs that
#: share pixels (:mod:`~gpuspec.extract.blocksolve`); False: dense LAPACK per patch (the
#: same numbers to rounding; ``perf/suite.py`` times the two side by side).
USE_BLOCKSOLVE = True

#: chi2pix above this sets BAD2DFIT (desispec's extraction script).
BAD2DFIT_CHI2 = 100.0


def _origin(image_shape, xyorigin, xyrange):
    ny, nx = image_shape
    if xyrange is not None:
        xmin, xmax, ymin, ymax = (int(v) for v in xyrange)
        if (ymax - ymin, xmax - xmin) != (ny, nx):
            raise InputError(f"xyrange {tuple(xyrange)} does not match the image shape "
                             f"{image_shape}")
        return xmin, ymin
    if xyorigin is None:
        return 0, 0
    return int(xyorigin[0]), int(xyorigin[1])


class _Context:
    """Everything shared by the bundles of one extraction call."""

    def __init__(self, image, ivar, psf, wave, *, nsubbundles, nwavestep, wavepad_frac,
                 pixpad_frac, regularize, psferr, xyorigin, xyrange, model, backend,
                 chunk_mb):
        self.xp = xp = _backend.get_xp(backend)
        image_np_shape = tuple(np.shape(image))
        if len(image_np_shape) != 2 or tuple(np.shape(ivar)) != image_np_shape:
            raise InputError(f"image {image_np_shape} and ivar {np.shape(ivar)} must be 2-D "
                             "arrays of the same shape")
        self.wave = np.asarray(_backend.to_host(wave), dtype=np.float64)
        self.dw = check_wave(self.wave)
        self.psf = psf
        self.x0, self.y0 = _origin(image_np_shape, xyorigin, xyrange)
        self.shape = image_np_shape
        self.image = _backend.to_device(image, xp, dtype=np.float64)
        iv = _backend.to_device(ivar, xp, dtype=np.float64)
        # negative or non-finite ivar, or non-finite pixels, are unusable
        bad = ~xp.isfinite(iv) | (iv < 0) | ~xp.isfinite(self.image)
        self.ivar = xp.where(bad, 0.0, iv)
        self.image = xp.where(bad, 0.0, self.image)
        self.nsubbundles = int(nsubbundles)
        self.nwavestep = int(nwavestep)
        self.wavepad_frac = float(wavepad_frac)
        self.pixpad_frac = float(pixpad_frac)
        self.regularize = float(regularize)
        if psferr is None:
            psferr = getattr(psf, "psferr", None)
        self.psferr = DEFAULT_PSFERR if psferr is None else float(psferr)
        self.model = bool(model)
        self.ndiag = resolution_halfwidth(psf, self.dw)
        if chunk_mb is None:
            chunk_mb = 64 if xp is np else 2048
        self.chunk_bytes = int(chunk_mb * 2 ** 20)
        self.image_box = (self.x0, self.x0 + self.shape[1], self.y0, self.y0 + self.shape[0])
        # progress of the frame (set by extract_frame)
        self.t0, self.specmin, self.bundlesize, self.nbundles = time.perf_counter(), 0, 1, 1


def _empty_results(xp, nb, nwave, ndiag):
    return dict(
        flux=xp.zeros((nb, nwave)),
        ivar=xp.zeros((nb, nwave)),
        rdata=xp.zeros((nb, nwave, 2 * ndiag + 1)),
        chi2pix=xp.zeros((nb, nwave)),
        pixmask_fraction=xp.zeros((nb, nwave)),
    )


def _use_cpu_twin(ctx) -> bool:
    """numpy backend with the Numba twins (``USE_NUMBA`` and numba importable)."""
    return ctx.xp is np and USE_NUMBA and normal_cpu.available()


@nvtx_range("extract:chunk")
def _solve_chunk(ctx: _Context, patches: list[Patch], b0: int, kmin: int, xc, yc, stamps,
                 fallback=None):
    """Solve a chunk of patches; returns device arrays indexed [p, f, ...] (fiber order).

    Normal equations, right-hand side and diagnostics come from the Numba twins on the
    numpy backend (:mod:`~gpuspec.extract.normal_cpu`, :mod:`~gpuspec.extract.pixels_cpu`)
    and from the batched window arrays otherwise (:mod:`~gpuspec.extract.windows`, what
    CuPy runs); the solve and decorrelation (:func:`_solve_normal`) are common.
    Dimension names: :mod:`gpuspec.extract.layout`.

    On a GPU the batched Cholesky reports failures per patch on the device
    (``res["chol_bad"]``, no host synchronisation); the caller re-solves such a chunk with
    ``fallback`` (host bool per patch) to use the eigh-based inverse for those patches.
    """
    nys, nxs = stamps.shape[-2:]
    if _use_cpu_twin(ctx):
        lay = chunk_layout(patches, b0, kmin)
        with nvtx_range("extract:normal"):
            M, bvec, fw, coupled = normal_cpu.normal_matrices(stamps, xc, yc, ctx.ivar,
                                                              ctx.image, ctx.x0, ctx.y0, lay)
        sol = _solve_normal(ctx, lay, M, bvec, fw, fallback, slot_order=True,
                            coupled=coupled if USE_BLOCKSOLVE else None, host_products=True)
        with nvtx_range("extract:chi2"):
            chi2pix, pixmask, boxmodel = pixels_cpu.diagnostics(
                stamps, xc, yc, ctx.image, ctx.ivar, ctx.x0, ctx.y0, lay, sol["x3"],
                ctx.psferr, ctx.model)
    else:
        win = windows.window_layout(patches, b0, kmin, xc, yc, nxs)
        lay = chunk_layout(patches, b0, kmin, NW=win.NW)
        A0, Pw, Ww = windows.own_windows(ctx, lay, win, stamps)
        M = windows.tiled_normal(ctx, lay, win, A0, nys)
        bvec, fw = windows.rhs(A0, Pw, Ww)
        sol = _solve_normal(ctx, lay, M, bvec, fw, fallback, slot_order=False)
        chi2pix, pixmask, boxmodel = windows.diagnostics(ctx, lay, win, A0, Pw, Ww, sol["x3"])
    return dict(flux=sol["flux"], ivar=sol["ivar"], rd=sol["rd"], chi2pix=chi2pix,
                pixmask=pixmask, boxmodel=boxmodel, F=lay.F, NW=lay.NW,
                chol_bad=sol["chol_bad"])


@nvtx_range("extract:solve")
def _solve_normal(ctx: _Context, lay, M, bvec, fw, fallback=None, *, slot_order: bool,
                  coupled=None, host_products: bool = False):
    """Regularise and solve the normal equations, decorrelate the kept fibers.

    ``M`` is in slot order (kept fibers last, :mod:`gpuspec.extract.layout`) when
    ``slot_order``, else in fiber order and permuted here; ``bvec``/``fw`` (P, F, NW)
    are in fiber order. ``coupled`` (host bool (P, F, F), fiber order, from the Numba
    twin): the fiber blocks of ``M`` that may be nonzero; the host solve then skips the
    others (:mod:`gpuspec.extract.blocksolve`). ``host_products``: R's band and R·x by
    the Numba twin (:mod:`gpuspec.extract.decorrelate_cpu`) instead of forming Q. Returns
    device arrays in fiber order: ``x3`` (deconvolved flux, every fiber), ``flux``,
    ``ivar`` (P, F, NW) and ``rd`` (P, F, 2h+1, NW) for the kept fibers (zero for the
    others), and ``chol_bad`` (device flags or None).
    """
    xp = ctx.xp
    P, F, NW, NK, n = lay.P, lay.F, lay.NW, lay.NK, lay.n
    order = xp.asarray(lay.order())                                   # (P, n)
    pI = xp.arange(P)[:, None]
    if not slot_order:
        M = M[pI[:, :, None], order[:, :, None], order[:, None, :]]
    b = xp.take_along_axis(bvec.reshape(P, n), order, axis=1)
    w = xp.take_along_axis(fw.reshape(P, n), order, axis=1)
    valid = xp.asarray(np.take_along_axis(lay.valid.reshape(P, n), lay.order(), axis=1))
    regularize_normal(M, w, valid, ctx.regularize)
    pattern = None
    if coupled is not None:
        perm = lay.perm[:, :, None]
        pattern = coupled[np.arange(P)[:, None, None], perm, np.swapaxes(perm, 1, 2)]
    x, Cb, chol_bad = solve_tail(M, b, NK * NW, NW, fallback, pattern=pattern)
    xs = x.reshape(P, F, NW)
    # R = diag(1/s)·Q with Q = C_ii^-1/2 (P, NK, NW, NW) and s = Q·1: only R's band and
    # R·x are stored
    if host_products:
        with nvtx_range("extract:decorrelate"):
            V, ws = eig_inverse_sqrt(Cb)
            s, flux, rd = decorrelate_cpu.band_products(V, ws, xs[:, F - NK:], ctx.ndiag)
    else:
        flux, rd, s = _band_products(xp, sqrt_inverse(Cb), xs[:, F - NK:], ctx.ndiag)
    ivar = s * s
    # patches without any weighted pixel carry no information
    nodata = w.max(axis=-1) <= 0
    ivar = xp.where(nodata[:, None, None], 0.0, ivar)
    # back to fiber order; fibers that are not kept get zeros
    kf = xp.asarray(lay.kept_fibers())
    out = dict(x3=xp.take_along_axis(xs, xp.asarray(lay.pos)[:, :, None], axis=1),
               chol_bad=chol_bad)
    for name, val in (("flux", flux), ("ivar", ivar), ("rd", rd)):
        full = xp.zeros((P, F) + val.shape[2:])
        full[pI, kf] = val
        out[name] = full
    return out


def _band_products(xp, Qs, x, h: int):
    """``R·x``, R's band ``rd`` (..., 2h+1, NW) and ``s`` from ``(Q, s)`` of
    :func:`~gpuspec.extract.solve.sqrt_inverse` (the array path; on the host the twin
    :func:`gpuspec.extract.decorrelate_cpu.band_products` computes them without Q)."""
    Q, s = Qs
    NW = Q.shape[-1]
    flux = xp.matmul(Q, x[..., None])[..., 0] / s
    jj = xp.arange(NW)
    ri = jj[None, :] - h + xp.arange(2 * h + 1)[:, None]             # (2h+1, NW)
    rok = (ri >= 0) & (ri < NW)
    rc = xp.clip(ri, 0, NW - 1)
    rd = Q[..., rc, jj[None, :]] / s[..., rc] * rok                  # (..., 2h+1, NW)
    return flux, rd, s


#: numpy: spots are evaluated this many wavelengths at a time, so that the temporaries of
#: the Gauss-Hermite evaluation stay in cache (the whole 2600-bin grid at once is ~6x slower)
SPOT_BLOCK_CPU = 64


@nvtx_range("extract:spots")
def _bundle_spots(xp, psf, fibers, wave_ext, twin=False):
    """Spots of a bundle's fibers on its padded grid: host int corners ``xc``, ``yc``
    (nfib, nwave) and device stamps (nfib, nwave, nys, nxs). One evaluation per bundle
    (patches overlapping in fibers or wavelengths share them): with ``twin`` (the numpy
    backend's Numba twins) by :func:`gpuspec.psf.spots_cpu.spots`; else on numpy in
    wavelength blocks of :data:`SPOT_BLOCK_CPU`, on a GPU in one batch. One device → host
    copy (the corners)."""
    if twin:
        return spots_cpu.spots(psf, fibers, wave_ext)
    if xp is not np:
        xc_d, yc_d, stamps = psf.spots(fibers, wave_ext, xp=xp)
        return (_backend.to_host(xc_d).astype(np.int64), _backend.to_host(yc_d).astype(np.int64),
                stamps)
    nw, b = wave_ext.size, SPOT_BLOCK_CPU
    xc = np.empty((len(fibers), nw), dtype=np.int64)
    yc = np.empty((len(fibers), nw), dtype=np.int64)
    stamps = None
    for i in range(0, nw, b):
        x_, y_, st = psf.spots(fibers, wave_ext[i:i + b], xp=np)
        if stamps is None:
            stamps = np.empty((len(fibers), nw) + st.shape[2:])
        xc[:, i:i + b], yc[:, i:i + b], stamps[:, i:i + b] = x_, y_, st
    return xc, yc, stamps


def _bytes_per_patch(ctx, patches, b0, kmin, xc, yc, stamp_shape) -> int:
    """Peak bytes one patch adds to a chunk: the model that sizes chunks to ``chunk_mb``.

    Array path (GPU): :func:`gpuspec.extract.windows.bytes_per_patch` (the tiled
    projection arrays dominate, ~40 MB per patch at DESI geometry). CPU twin: the normal
    matrix (n² float64, n = F·NW) and the decorrelation of the NK kept fibers (about six
    NW × NW arrays each: C, its symmetrised copy, eigenvectors, V·diag(ws), Q and eigh's
    workspace; R itself is not formed),
    ``8·(n² + 6·NK·NW²)``, ~3.2 MB at DESI geometry (measured: 3.1 MB per patch).
    """
    if not _use_cpu_twin(ctx):
        return windows.bytes_per_patch(patches, b0, kmin, xc, yc, *stamp_shape)
    F = max(p.nspec for p in patches)
    NW = max(p.nwave for p in patches)
    NK = max(int(np.sum(p.keep)) for p in patches)
    return 8 * ((F * NW) ** 2 + 6 * NK * NW * NW)


def _chunks(patches, per_patch_bytes, budget):
    n = max(1, int(budget // max(per_patch_bytes, 1)))
    for i in range(0, len(patches), n):
        yield patches[i:i + n]


@nvtx_range("extract:bundle")
def _extract_range(ctx: _Context, b0: int, b1: int, modelimage=None):
    """Extract fibers [b0, b1) as one bundle; returns device arrays (nb, nwave, ...)."""
    t0 = time.perf_counter()
    xp = ctx.xp
    psf = ctx.psf
    nwave = ctx.wave.size
    patches = plan_bundle(psf, ctx.wave, b0, b1, nsubbundles=ctx.nsubbundles,
                          nwavestep=ctx.nwavestep, pixpad_frac=ctx.pixpad_frac,
                          wavepad_frac=ctx.wavepad_frac, ndiag=ctx.ndiag,
                          image_box=ctx.image_box)
    kmin = min(p.kfirst for p in patches)
    kmax = max(p.kfirst + p.nwave for p in patches)
    wave_ext = ctx.wave[0] + np.arange(kmin, kmax) * ctx.dw
    xc, yc, stamps = _bundle_spots(xp, psf, np.arange(b0, b1), wave_ext, _use_cpu_twin(ctx))
    nb = b1 - b0
    out = _empty_results(xp, nb, nwave, ctx.ndiag)
    per_patch = _bytes_per_patch(ctx, patches, b0, kmin, xc, yc, stamps.shape[-2:])
    chunks = list(_chunks(patches, per_patch, ctx.chunk_bytes))
    flags = []
    for chunk in chunks:
        res = _solve_chunk(ctx, chunk, b0, kmin, xc, yc, stamps)
        _store_chunk(ctx, out, chunk, res, b0, nwave, modelimage)
        if res["chol_bad"] is not None:
            flags.append(res["chol_bad"])
    if flags:
        # one synchronisation per bundle (not per chunk): did any batched Cholesky fail?
        bad = _backend.to_host(xp.concatenate(flags))
        if bad.any():
            log.info("bundle %d-%d: %d patch(es) not positive definite on the device; "
                     "re-solved with the eigh-based inverse", b0, b1 - 1, int(bad.sum()))
            # redo from the first failed chunk on, so that the model image keeps specter's
            # order (later patches overwrite earlier ones)
            starts = np.cumsum([0] + [len(c) for c in chunks])
            first = min(i for i in range(len(chunks)) if bad[starts[i]:starts[i + 1]].any())
            for i in range(first, len(chunks)):
                fb = bad[starts[i]:starts[i + 1]]
                if not fb.any() and modelimage is None:
                    continue
                res = _solve_chunk(ctx, chunks[i], b0, kmin, xc, yc, stamps,
                                   fallback=fb if fb.any() else None)
                _store_chunk(ctx, out, chunks[i], res, b0, nwave, modelimage)
    _log_bundle(ctx, b0, b1, len(patches), t0)
    return out


def _log_bundle(ctx, b0, b1, npatch, t0):
    """One progress line per bundle (a launcher task log shows where it stands)."""
    now = time.perf_counter()
    ib = (b0 - ctx.specmin) // max(ctx.bundlesize, 1) + 1
    log.info("extract: bundle %d/%d (fibers %d-%d, %d patches) in %.1f s, %.1f s elapsed",
             ib, ctx.nbundles, b0, b1 - 1, npatch, now - t0, now - ctx.t0)


@nvtx_range("extract:store")
def _store_chunk(ctx, out, chunk, res, b0, nwave, modelimage):
    """Scatter the kept core bins of a solved chunk into the bundle's outputs (device)."""
    xp = ctx.xp
    Fc, NWc = res["F"], res["NW"]
    # ---- host index lists of the kept core bins, then one scatter per output
    src, dst = [], []
    for i, p in enumerate(chunk):
        for f in np.nonzero(p.keep)[0]:
            j = np.arange(p.nlo, p.nlo + p.nout)
            src.append((i * Fc + f) * NWc + j)
            dst.append((p.speclo - b0 + f) * nwave + p.iwave + np.arange(p.nout))
    src = xp.asarray(np.concatenate(src))
    dst = xp.asarray(np.concatenate(dst))
    out["flux"].reshape(-1)[dst] = res["flux"].reshape(-1)[src]
    out["ivar"].reshape(-1)[dst] = res["ivar"].reshape(-1)[src]
    out["chi2pix"].reshape(-1)[dst] = res["chi2pix"].reshape(-1)[src]
    out["pixmask_fraction"].reshape(-1)[dst] = res["pixmask"].reshape(-1)[src]
    rd = xp.moveaxis(res["rd"], 2, -1).reshape(-1, 2 * ctx.ndiag + 1)
    out["rdata"].reshape(-1, 2 * ctx.ndiag + 1)[dst] = rd[src]
    if modelimage is not None:
        bm = res["boxmodel"]
        for i, p in enumerate(chunk):  # specter order: later patches overwrite
            x0, x1, y0, y1 = p.box
            modelimage[y0 - ctx.y0:y1 - ctx.y0, x0 - ctx.x0:x1 - ctx.x0] = \
                bm[i, :y1 - y0, :x1 - x0]


def _finish(ctx: _Context, results, specmin, meta=None, modelimage=None) -> Frame:
    xp = ctx.xp
    flux = xp.concatenate([r["flux"] for r in results]) / ctx.dw
    ivar = xp.concatenate([r["ivar"] for r in results]) * ctx.dw ** 2
    rdata = xp.concatenate([r["rdata"] for r in results])
    chi2pix = xp.concatenate([r["chi2pix"] for r in results])
    pixmask = xp.concatenate([r["pixmask_fraction"] for r in results])
    mask = xp.zeros(flux.shape, dtype=xp.int32)
    mask |= xp.where(pixmask > 0.5, specmask.SOMEBADPIX, 0).astype(xp.int32)
    mask |= xp.where(pixmask == 1.0, specmask.ALLBADPIX, 0).astype(xp.int32)
    mask |= xp.where(chi2pix > BAD2DFIT_CHI2, specmask.BAD2DFIT, 0).astype(xp.int32)
    h = _backend.to_host
    m = dict(meta or {})
    m["SPECMIN"] = int(specmin)
    m["NSPEC"] = int(flux.shape[0])
    m.setdefault("BUNIT", "electron/Angstrom")
    return Frame(wave=ctx.wave.copy(), flux=h(flux), ivar=h(ivar), mask=h(mask),
                 resolution_data=np.ascontiguousarray(np.moveaxis(h(rdata), -1, 1)),
                 chi2pix=h(chi2pix), meta=m, pixmask_fraction=h(pixmask),
                 modelimage=None if modelimage is None else h(modelimage))


def _make_context(image, ivar, psf, wave, kw):
    return _Context(image, ivar, psf, wave, **kw)


def extract_frame(image, ivar, psf, wave, specmin=0, nspec=None, *,
                  bundlesize=SPECTER.bundlesize, nsubbundles=SPECTER.nsubbundles,
                  nwavestep=SPECTER.nwavestep, wavepad_frac=SPECTER.wavepad_frac,
                  pixpad_frac=SPECTER.pixpad_frac, regularize=SPECTER.regularize, psferr=None, xyorigin=None, xyrange=None, model=False,
                  full_output=None, backend="auto", chunk_mb=None, meta=None,
                  blas_threads=None, nproc=1) -> Frame:
    """Spectroperfectionism extraction of fibers ``[specmin, specmin + nspec)``.

    Parameters
    ----------
    image, ivar : array (ny, nx)
        Pixels (electrons) and inverse variance (0 where masked); numpy or cupy, any
        byte order. A sub-image is allowed: give its CCD origin with ``xyorigin`` or
        ``xyrange``.
    psf : GaussHermitePSF
    wave : array (nwave,)
        Linear wavelength grid, Å.
    specmin : int
        First fiber (index into the PSF).
    nspec : int, optional
        Number of fibers (default: to the end of the PSF).
    bundlesize : int
        Fibers per bundle, counted from ``specmin`` as in specter (25 for DESI).
    nsubbundles, nwavestep, wavepad_frac, pixpad_frac, regularize
        specter ``ex2d`` settings (``wavesize`` = ``nwavestep``); defaults
        :data:`gpuspec.extract.defaults.SPECTER`.
    psferr : float, optional
        Fractional PSF model error for chi2pix (default ``psf.psferr``, else
        :data:`~gpuspec.extract.defaults.DEFAULT_PSFERR` = 0.01).
    xyorigin : (x0, y0), optional
        CCD coordinates of ``image[0, 0]``.
    xyrange : (xmin, xmax, ymin, ymax), optional
        specter's form: the image is the CCD cut-out ``[ymin:ymax, xmin:xmax]``.
    model : bool
        Also return the model image (specter's: each patch's ``A·f`` over its pixel
        box, later patches overwriting earlier ones).
    full_output : bool, optional
        Alias of ``model`` (specter's name).
    backend : {"auto", "numpy", "cupy"}
    chunk_mb : float, optional
        Memory budget of one batch of patches (default 64 MB on CPU, 2 GB on GPU).
    meta : dict, optional
        Header keywords copied to the frame.
    blas_threads : int, optional
        OpenBLAS threads during a CPU extraction (default: ``GPUSPEC_BLAS_THREADS`` or
        1; 0 leaves the library setting alone). Extraction is many small products:
        parallelise over bundles/processes instead (see ``gpuspec.threads``).
    nproc : int
        numpy backend: extract bundles in this many forked processes (ignored with
        ``model=True``, on cupy, or for a single bundle). Results are identical.

    Returns
    -------
    Frame
        flux (electron/Å), ivar, mask (SOMEBADPIX where more than half of a bin's PSF
        weight falls on masked pixels, ALLBADPIX where all does, BAD2DFIT where
        chi2pix > 100), resolution_data (nspec, 2·ndiag+1, nwave), chi2pix,
        pixmask_fraction and optionally modelimage. Host (numpy) arrays.

    Backends: numpy, cupy.
    """
    if full_output is not None:
        model = model or bool(full_output)
    if nspec is None:
        nspec = psf.nspec - specmin
    if specmin < 0 or nspec <= 0 or specmin + nspec > psf.nspec:
        raise InputError(f"fibers {specmin}..{specmin + nspec - 1} are outside the PSF's "
                         f"0..{psf.nspec - 1}")
    ctx = _make_context(image, ivar, psf, wave, dict(
        nsubbundles=nsubbundles, nwavestep=nwavestep, wavepad_frac=wavepad_frac,
        pixpad_frac=pixpad_frac, regularize=regularize, psferr=psferr, xyorigin=xyorigin,
        xyrange=xyrange, model=model, backend=backend, chunk_mb=chunk_mb))
    modelimage = ctx.xp.zeros(ctx.shape) if model else None
    ctx.t0, ctx.specmin, ctx.bundlesize = time.perf_counter(), int(specmin), int(bundlesize)
    ctx.nbundles = -(-int(nspec) // int(bundlesize))
    results = []
    if blas_threads is None:
        blas_threads = _threads.default_blas_threads()
    with nvtx_range("extract:frame"), \
            _threads.blas_threads(blas_threads if ctx.xp is np else None):
        ranges = [(b0, min(b0 + bundlesize, specmin + nspec))
                  for b0 in range(specmin, specmin + nspec, bundlesize)]
        nproc = int(nproc or 1)
        if nproc > 1 and ctx.xp is np and not model and len(ranges) > 1:
            results = _extract_parallel(ctx, ranges, nproc)
        else:
            for b0, b1 in ranges:
                results.append(_extract_range(ctx, b0, b1, modelimage))
        return _finish(ctx, results, specmin, meta, modelimage)


_POOL_CTX = None


def _pool_bundle(rng):
    return _extract_range(_POOL_CTX, rng[0], rng[1], None)


def _extract_parallel(ctx, ranges, nproc):
    """Bundles in ``nproc`` forked processes (numpy backend; inputs shared by fork)."""
    import multiprocessing as mp

    global _POOL_CTX
    try:
        mpctx = mp.get_context("fork")
    except ValueError:  # pragma: no cover - platforms without fork
        return [_extract_range(ctx, b0, b1, None) for b0, b1 in ranges]
    if _use_cpu_twin(ctx):
        # the workers inherit the compiled kernels instead of loading them each
        normal_cpu.warm()
        blocksolve.warm()
        decorrelate_cpu.warm()
        pixels_cpu.warm()
        spots_cpu.warm()
    heap.release_kept_memory()        # workers must not copy the parent's free heap
    _POOL_CTX = ctx
    try:
        with mpctx.Pool(min(nproc, len(ranges))) as pool:
            return pool.map(_pool_bundle, ranges, chunksize=1)
    finally:
        _POOL_CTX = None


def extract_bundle(image, ivar, psf, wave, bundle, *, bundlesize=SPECTER.bundlesize,
                   **kwargs) -> Frame:
    """Extract one bundle: fibers ``[bundle·bundlesize, (bundle+1)·bundlesize)``.

    The unit of work the launcher distributes; the result is a partial frame with
    ``SPECMIN``/``NSPEC`` set (merge with :func:`gpuspec.extract.merge_frames`).
    Keyword arguments are those of :func:`extract_frame`.

    Backends: numpy, cupy.
    """
    b0 = int(bundle) * int(bundlesize)
    if b0 < 0 or b0 >= psf.nspec:
        raise InputError(f"bundle {bundle} (bundlesize {bundlesize}) is outside the PSF's "
                         f"{psf.nspec} fibers")
    nspec = min(int(bundlesize), psf.nspec - b0)
    return extract_frame(image, ivar, psf, wave, b0, nspec, bundlesize=bundlesize, **kwargs)
