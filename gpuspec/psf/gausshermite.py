"""Gauss–Hermite PSF model (specex format), evaluated through ``xp``.

Every quantity is a per-fiber Legendre series in wavelength. Spots are the
pixel-integrated Gauss–Hermite expansion (algorithms.md §2), clipped at 0 and
normalised to 1, with their lower-left CCD corner ``(xc, yc)``. The batched
:meth:`GaussHermitePSF.spots` evaluates any number of (fiber, wavelength) pairs
at once on numpy or cupy; :meth:`GaussHermitePSF.xypix` is the specter-compatible
single-spot form (truncated at the CCD edges).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np

from .. import backend
from .legendre import legder_coeffs, legval_batch, reduced

__all__ = ["GaussHermitePSF"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


class GaussHermitePSF:
    """A specex Gauss–Hermite PSF (PSFVER 2 or 3).

    Parameters
    ----------
    xcoeff, ycoeff : ndarray (nspec, ncoef)
        Legendre coefficients of the traces x(λ), y(λ).
    trace_wmin, trace_wmax : float
        Legendre domain of the traces (XTRACE/YTRACE WAVEMIN/WAVEMAX).
    params : dict of str -> ndarray (nspec, ndeg+1)
        Legendre coefficients of each PSF parameter (GHSIGX, GHSIGY, GH-i-j, TAIL*, ...).
    param_wmin, param_wmax : float
        Legendre domain of the parameters (PSF HDU WAVEMIN/WAVEMAX).
    meta : dict
        Header of the PSF HDU: NPIX_X, NPIX_Y, HSIZEX, HSIZEY, GHDEGX, GHDEGY, ...
    psferr : float or None
        ``PSFERR`` from the header when present, else None (extraction then uses
        specter's default 0.01, see :mod:`gpuspec.extract.core`).

    Notes
    -----
    Read a file with :func:`gpuspec.psf.read_psf`. Device copies of the
    coefficients are cached per array module.
    """

    def __init__(self, xcoeff, ycoeff, trace_wmin, trace_wmax, params, param_wmin, param_wmax,
                 meta=None, psferr=None, fibermin=0, xtrace_meta=None, param_meta=None):
        self.xcoeff = np.ascontiguousarray(backend.native(np.asarray(xcoeff, dtype=np.float64)))
        self.ycoeff = np.ascontiguousarray(backend.native(np.asarray(ycoeff, dtype=np.float64)))
        self.trace_wmin = float(trace_wmin)
        self.trace_wmax = float(trace_wmax)
        self.params = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float64))
                       for k, v in params.items()}
        self.param_wmin = float(param_wmin)
        self.param_wmax = float(param_wmax)
        self.meta = dict(meta or {})
        self.psferr = psferr
        self.fibermin = int(fibermin)
        self.xtrace_meta = dict(xtrace_meta or {})
        self.param_meta = dict(param_meta or {})  # per-param (LEGDEGX, LEGDEGW)
        self.nspec = self.xcoeff.shape[0]
        self.npix_x = int(self.meta.get("NPIX_X", 4114))
        self.npix_y = int(self.meta.get("NPIX_Y", 4128))
        self.hsizex = int(self.meta.get("HSIZEX", 8))
        self.hsizey = int(self.meta.get("HSIZEY", 5))
        self.ghdegx = int(self.meta.get("GHDEGX", 6))
        self.ghdegy = int(self.meta.get("GHDEGY", 6))
        self._dev_cache: dict = {}
        # GH coefficient stack: (nspec, ndeg+1, degx+1, degy+1) with [.., i, j] = GH-i-j
        ndeg = max(v.shape[1] for v in self.params.values())
        gh = np.zeros((self.nspec, ndeg, self.ghdegx + 1, self.ghdegy + 1))
        for i in range(self.ghdegx + 1):
            for j in range(self.ghdegy + 1):
                c = self.params.get(f"GH-{i}-{j}")
                if c is not None:
                    gh[:, : c.shape[1], i, j] = c
        self._gh = gh
        self._has_tail = "TAILAMP" in self.params and bool(np.any(self.params["TAILAMP"] != 0))

    # ------------------------------------------------------------------ basics
    @property
    def wmin(self) -> float:
        """Lower end of the wavelength range (trace domain).

        Backends: host only (plain values).
        """
        return self.trace_wmin

    @property
    def wmax(self) -> float:
        """Upper end of the wavelength range (trace domain).

        Backends: host only (plain values).
        """
        return self.trace_wmax

    @property
    def npix(self) -> tuple[int, int]:
        """CCD shape (ny, nx).

        Backends: host only (plain values).
        """
        return (self.npix_y, self.npix_x)

    def _dev(self, xp):
        key = id(xp)   # the module itself: a real cupy and its test emulation never share arrays
        if key not in self._dev_cache:
            self._dev_cache[key] = {
                "x": xp.asarray(self.xcoeff),
                "y": xp.asarray(self.ycoeff),
                "gh": xp.asarray(self._gh),
                "p": {k: xp.asarray(v) for k, v in self.params.items()},
            }
        return self._dev_cache[key]

    def _fibers(self, fibers, xp=np):
        if fibers is None:
            return np.arange(self.nspec)
        f = np.atleast_1d(np.asarray(fibers if xp is np else backend.to_host(fibers))).astype(int)
        if f.size and (f.min() < 0 or f.max() >= self.nspec):
            raise IndexError(f"fiber index out of range 0..{self.nspec - 1}: {f.min()}..{f.max()}")
        return f

    def _trace(self, which, fibers, wave, xp):
        f = self._fibers(fibers, xp)
        if wave is None:
            wave = np.linspace(self.wmin, self.wmax, 100)
        w = xp.asarray(wave, dtype=xp.float64)
        u = reduced(w, self.trace_wmin, self.trace_wmax)
        coeff = self._dev(xp)[which][xp.asarray(f)]
        return legval_batch(u, coeff, xp)

    def x(self, fibers=None, wave=None, xp=np):
        """CCD x of the traces, shape (nfib, nwave) (numpy, cupy).

        Backends: numpy and cupy (arrays on ``xp``).
        """
        return self._trace("x", fibers, wave, xp)

    def y(self, fibers=None, wave=None, xp=np):
        """CCD y of the traces, shape (nfib, nwave) (numpy, cupy).

        Backends: numpy and cupy (arrays on ``xp``).
        """
        return self._trace("y", fibers, wave, xp)

    def param(self, name: str, fibers=None, wave=None, xp=np):
        """A PSF parameter (e.g. ``GHSIGX``) at (fiber, λ), shape (nfib, nwave).

        Backends: numpy and cupy (arrays on ``xp``).
        """
        f = self._fibers(fibers, xp)
        w = xp.asarray(wave, dtype=xp.float64)
        u = reduced(w, self.param_wmin, self.param_wmax)
        return legval_batch(u, self._dev(xp)["p"][name][xp.asarray(f)], xp)

    def wavelength(self, fibers=None, y=None, xp=np):
        """Wavelength at CCD row ``y`` for each fiber, shape (nfib, ny).

        Inverts y(λ) by Newton iterations on the Legendre series (converges to
        ≪1e-8 Å). ``y=None`` means every CCD row. Rows outside the trace's
        range extrapolate the series.

        Backends: numpy and cupy (arrays on ``xp``).
        """
        f = self._fibers(fibers, xp)
        if y is None:
            y = np.arange(self.npix_y, dtype=np.float64)
        yy = xp.asarray(y, dtype=xp.float64)
        nf = len(f)
        if yy.ndim == 1:
            yy = xp.broadcast_to(yy[None, :], (nf, yy.shape[0]))
        coeff = self._dev(xp)["y"][xp.asarray(f)]
        dcoeff = legder_coeffs(coeff, xp)
        scale = 2.0 / (self.trace_wmax - self.trace_wmin)
        # initial guess: linear interpolation of y(λ) sampled on the domain
        wgrid = np.linspace(self.trace_wmin, self.trace_wmax, 64)
        ygrid = backend.to_host(self.y(f, wgrid, xp))
        w0 = np.empty(tuple(yy.shape))
        yh = backend.to_host(yy)
        for k in range(nf):  # cheap: 64 samples per fiber
            order = np.argsort(ygrid[k])
            w0[k] = np.interp(yh[k], ygrid[k][order], wgrid[order])
        w = xp.asarray(w0)
        for _ in range(8):
            u = reduced(w, self.trace_wmin, self.trace_wmax)
            yv = _legval_rows(u, coeff, xp)
            dy = _legval_rows(u, dcoeff, xp) * scale
            w = w - (yv - yy) / dy
        return w

    def wdisp(self, fibers=None, wave=None, xp=np):
        """Gaussian sigma of the line spread in Å: GHSIGY / (dy/dλ), shape (nfib, nwave).

        Backends: numpy and cupy (arrays on ``xp``).
        """
        f = self._fibers(fibers, xp)
        w = xp.asarray(wave, dtype=xp.float64)
        coeff = self._dev(xp)["y"][xp.asarray(f)]
        dy = legval_batch(reduced(w, self.trace_wmin, self.trace_wmax),
                          legder_coeffs(coeff, xp), xp) * (2.0 / (self.trace_wmax - self.trace_wmin))
        return self.param("GHSIGY", f, w, xp) / dy

    # ------------------------------------------------------------------ spots
    def spots(self, fibers, wave, xp=np, clip=True):
        """Pixel-integrated, clipped, normalised spots for fibers × wavelengths.

        Parameters
        ----------
        fibers : int array (nfib,)
            Fiber indices (0-based within the PSF).
        wave : array (nwave,) or (nfib, nwave)
            Wavelengths in Å (shared by all fibers when 1-D).
        xp : module
            numpy or cupy; all outputs live there.
        clip : bool
            Clip at 0 and renormalise to sum 1 (specter does both).

        Returns
        -------
        xc, yc : int64 arrays (nfib, nwave)
            CCD column/row of each stamp's lower-left pixel:
            ``floor(X - HSIZEX + 0.5)``, ``floor(Y - HSIZEY + 0.5)``.
        stamps : float64 array (nfib, nwave, 2*HSIZEY+1, 2*HSIZEX+1)

        Backends: numpy, cupy. Stamps are not truncated at the CCD edges.
        """
        t = self.spot_terms(fibers, wave, xp)
        nx = 2 * self.hsizex + 1
        ny = 2 * self.hsizey + 1
        X, Y, xc, yc = t["X"], t["Y"], t["xc"], t["yc"]
        # pixel edges relative to the spot centre, in sigma units: (nf, nw, n+1)
        ex = (xc[..., None] + xp.arange(nx + 1) - 0.5 - X[..., None]) / t["sigx"][..., None]
        ey = (yc[..., None] + xp.arange(ny + 1) - 0.5 - Y[..., None]) / t["sigy"][..., None]
        fx = _pix_gh(ex, self.ghdegx, xp)  # (nf, nw, degx+1, nx)
        fy = _pix_gh(ey, self.ghdegy, xp)  # (nf, nw, degy+1, ny)
        # core[y, x] = sum_ij c_ij fy[j, y] fx[i, x]
        tmp = xp.matmul(xp.swapaxes(t["coef"], -1, -2), fx)  # (nf, nw, degy+1, nx)
        core = xp.matmul(xp.swapaxes(fy, -1, -2), tmp)  # (nf, nw, ny, nx)
        if t["tail"] is not None:
            core = core + _tail(t["tail"], X, Y, xc, yc, nx, ny, xp)
        if clip:
            core = xp.maximum(core, 0.0)
            core = core / core.sum(axis=(-2, -1), keepdims=True)
        return xc.astype(xp.int64), yc.astype(xp.int64), core

    def spot_terms(self, fibers, wave, xp=np):
        """What the pixel integration of each spot needs, for fibers × wavelengths.

        The one home of the spot parameters: :meth:`spots` integrates them on ``xp``
        and :func:`gpuspec.psf.spots_cpu.spots` (the Numba twin) on the host.

        Parameters
        ----------
        fibers, wave, xp
            As for :meth:`spots`.

        Returns
        -------
        dict
            ``X``, ``Y`` (trace, CCD pixels), ``sigx``, ``sigy`` (GHSIGX/Y), ``xc``,
            ``yc`` (float stamp corners ``floor(X - HSIZEX + 0.5)``, ...), all
            (nfib, nwave); ``coef`` (nfib, nwave, degx+1, degy+1), the GH-i-j
            coefficients; ``tail``: None without a PSF tail, else (nfib, nwave, 5) of
            TAILAMP, TAILCORE, TAILXSCA, TAILYSCA, TAILINDE.

        Backends: numpy, cupy.
        """
        f = self._fibers(fibers, xp)
        nf = len(f)
        w = xp.asarray(wave, dtype=xp.float64)
        if w.ndim == 1:
            w = xp.broadcast_to(w[None, :], (nf, w.shape[0]))
        fi = xp.asarray(f)
        dev = self._dev(xp)
        ut = reduced(w, self.trace_wmin, self.trace_wmax)
        X = _legval_rows(ut, dev["x"][fi], xp)
        Y = _legval_rows(ut, dev["y"][fi], xp)
        up = reduced(w, self.param_wmin, self.param_wmax)
        gh = dev["gh"][fi]  # (nf, ndeg, dx, dy)
        P = _legendre_basis(up, gh.shape[1], xp)  # (nf, nw, ndeg)
        tail = None
        if self._has_tail:
            tail = xp.stack([self.param(k, f, w, xp) for k in _TAIL_KEYS], axis=-1)
        return {"X": X, "Y": Y,
                "sigx": _legval_rows(up, dev["p"]["GHSIGX"][fi], xp),
                "sigy": _legval_rows(up, dev["p"]["GHSIGY"][fi], xp),
                "xc": xp.floor(X - self.hsizex + 0.5), "yc": xp.floor(Y - self.hsizey + 0.5),
                "coef": xp.einsum("fwk,fkij->fwij", P, gh), "tail": tail}

    def xypix(self, fiber: int, wave: float, xmin=0, xmax=None, ymin=0, ymax=None):
        """specter-compatible single spot: ``(xslice, yslice, pix)`` (numpy).

        The slices are relative to ``(xmin, ymin)`` and the stamp is truncated
        to ``[xmin, xmax) × [ymin, ymax)`` (the CCD by default).

        Backends: host only (NumPy), like specter.
        """
        xmax = self.npix_x if xmax is None else xmax
        ymax = self.npix_y if ymax is None else ymax
        xc, yc, st = self.spots([fiber], [wave], np)
        x0, y0, pix = int(xc[0, 0]), int(yc[0, 0]), st[0, 0]
        x1, y1 = x0 + pix.shape[1], y0 + pix.shape[0]
        if x0 >= xmax or y0 >= ymax or x1 <= xmin or y1 <= ymin:
            return slice(0, 0), slice(0, 0), np.zeros((0, 0))
        if x0 < xmin:
            pix = pix[:, xmin - x0:]
            x0 = xmin
        if y0 < ymin:
            pix = pix[ymin - y0:, :]
            y0 = ymin
        if x1 > xmax:
            pix = pix[:, : xmax - x1]
            x1 = xmax
        if y1 > ymax:
            pix = pix[: ymax - y1, :]
            y1 = ymax
        return slice(x0 - xmin, x1 - xmin), slice(y0 - ymin, y1 - ymin), pix

    def xyrange(self, spec_range: Sequence[int], wave_range) -> tuple[int, int, int, int]:
        """CCD box ``(xmin, xmax, ymin, ymax)`` covering fibers ``[specmin, specmax)`` over
        ``[min(wave_range), max(wave_range)]`` including the spot footprints (specter semantics).

        Backends: host only (NumPy geometry).
        """
        specmin, specmax = int(spec_range[0]), int(spec_range[1])
        w = np.atleast_1d(np.asarray(wave_range, dtype=np.float64))
        wlo, whi = float(w.min()), float(w.max())
        fib = np.arange(specmin, specmax)
        ylo = self.y(fib, [wlo])[:, 0]
        yhi = self.y(fib, [whi])[:, 0]
        ymin = self.xypix(specmin + int(np.argmin(ylo)), wlo)[1].start
        ymax = self.xypix(specmin + int(np.argmax(yhi)), whi)[1].stop

        def _wgrid(fiber):
            ww = self.wavelength([fiber])[0]
            ww = ww[(ww >= wlo) & (ww <= whi)]
            return np.sort(np.concatenate([ww, [wlo, whi]]))

        wa = _wgrid(specmin)
        xmin = self.xypix(specmin, wa[int(np.argmin(self.x([specmin], wa)[0]))])[0].start
        wb = _wgrid(specmax - 1)
        xmax = self.xypix(specmax - 1, wb[int(np.argmax(self.x([specmax - 1], wb)[0]))])[0].stop
        return int(xmin), int(xmax), int(ymin), int(ymax)

    # ------------------------------------------------------------------ transforms
    def remap_wavelength(self, wmin: float, wmax: float) -> "GaussHermitePSF":
        """A copy whose wavelength axis is linearly remapped so the trace domain becomes
        ``[wmin, wmax]``. Pixel-space geometry (traces, spots) is unchanged; only the
        wavelengths attached to it move. Used by the simulator to derive b/z PSFs from r.

        Backends: host only (coefficients are NumPy).
        """
        a = (wmax - wmin) / (self.trace_wmax - self.trace_wmin)

        def m(lam):
            return wmin + (lam - self.trace_wmin) * a

        new = copy.copy(self)
        new.trace_wmin, new.trace_wmax = float(wmin), float(wmax)
        new.param_wmin, new.param_wmax = m(self.param_wmin), m(self.param_wmax)
        new.meta = dict(self.meta)
        new.meta["WAVEMIN"], new.meta["WAVEMAX"] = new.param_wmin, new.param_wmax
        new.xtrace_meta = dict(self.xtrace_meta)
        new.xtrace_meta["WAVEMIN"], new.xtrace_meta["WAVEMAX"] = new.trace_wmin, new.trace_wmax
        new._dev_cache = {}
        return new

    def __repr__(self) -> str:
        return (f"GaussHermitePSF(nspec={self.nspec}, wave=[{self.wmin:.1f},{self.wmax:.1f}], "
                f"ccd={self.npix_y}x{self.npix_x}, spot={2 * self.hsizey + 1}x{2 * self.hsizex + 1})")


#: PSF tail parameters, in the order of :meth:`GaussHermitePSF.spot_terms`'s ``tail``.
_TAIL_KEYS = ("TAILAMP", "TAILCORE", "TAILXSCA", "TAILYSCA", "TAILINDE")


def _tail(tail, X, Y, xc, yc, nx, ny, xp):
    """PSF tail TAILAMP·r²/(TAILCORE²+r²)^(1+TAILINDE/2) at pixel centres, where
    r² = (dx/TAILXSCA)² + (dy/TAILYSCA)²; ``tail`` is (..., 5) in :data:`_TAIL_KEYS`
    order."""
    amp, corep, xs, ys, ind = (tail[..., i] for i in range(5))
    dx = (xc[..., None] + xp.arange(nx) - X[..., None]) / xs[..., None]
    dy = (yc[..., None] + xp.arange(ny) - Y[..., None]) / ys[..., None]
    r2 = dy[..., :, None] ** 2 + dx[..., None, :] ** 2
    c2 = (corep ** 2)[..., None, None]
    return amp[..., None, None] * r2 / (c2 + r2) ** (1 + ind[..., None, None] / 2.0)


def _legval_rows(u, coeff, xp):
    """Legendre series with per-row ``u`` (nfib, nwave) and per-row coeff (nfib, ncoef)."""
    return legval_batch(u, coeff, xp)


def _legendre_basis(u, n: int, xp):
    """P_0..P_{n-1} at ``u``: shape u.shape + (n,)."""
    out = [xp.ones_like(u)]
    if n > 1:
        out.append(u)
    for k in range(2, n):
        out.append(((2 * k - 1) * u * out[-1] - (k - 1) * out[-2]) / k)
    return xp.stack(out[:n], axis=-1)


def _pix_gh(edges, deg: int, xp):
    """Pixel-integrated Gauss–Hermite functions of degree 0..deg.

    ``edges`` (..., n+1) are pixel edges in sigma units. Returns (..., deg+1, n):
    degree 0 is ½[erf(u_{m+1}/√2) − erf(u_m/√2)], degree k ≥ 1 is
    He_{k−1}(u_m)G(u_m) − He_{k−1}(u_{m+1})G(u_{m+1}).
    """
    special = backend.scipy_module(xp, "special")
    g = xp.exp(-0.5 * edges ** 2) / _SQRT2PI
    out = [0.5 * xp.diff(special.erf(edges / _SQRT2), axis=-1)]
    he_prev = xp.ones_like(edges)  # He_0
    he = edges  # He_1
    for k in range(1, deg + 1):
        hk1 = he_prev if k == 1 else he  # He_{k-1}
        v = hk1 * g
        out.append(v[..., :-1] - v[..., 1:])
        if k >= 2:
            he_prev, he = he, edges * he - (k - 1) * he_prev
    return xp.stack(out, axis=-2)
