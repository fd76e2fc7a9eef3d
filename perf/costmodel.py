"""GPU cost model: floating-point work and bytes moved of each batched operation, a
roofline lower bound per frame and per exposure on A100, H100 and H200.

Every stage is described as the list of the batched array operations its code performs
(:class:`Op`), each with the FP64 floating-point operations and the device-memory bytes
it moves (every array it reads plus every array it writes, once), counted from the
array shapes of the implementation (``gpuspec/preproc``, ``gpuspec/extract/core.py``
and ``solve.py``, ``gpuspec/coadd/{plain,spectroperf,decorrelate}.py``,
``gpuspec/calibrate``). The derivation of each count is in the docstring of the function
that builds it and in docs/performance.md ("GPU cost model").

Roofline: an operation cannot take less than ``max(flops / peak, bytes / bandwidth)``
on a device; the stage bound is the sum over its operations (they run one after the
other). ``peak`` is the FP64 Tensor Core rate for the dense matrix products that
cuBLAS can run on tensor cores (``Op.tensor``) and the FP64 vector rate for everything
else (Cholesky, triangular inverse, eigh of small batched matrices, elementwise).
Host↔device transfers are bounded by the host link (PCIe) separately. These are lower
bounds for *this implementation's* sequence of array passes ("as implemented");
``compulsory`` is the bound of an ideal fused code that reads its inputs and writes its
outputs once.

Usage::

    python -m perf.costmodel [--psf PSF] [--out perf/results/costmodel.json]
    python -m perf.costmodel --cpu      # also the single-threaded FP64 microbenchmarks

``--cpu`` measures this machine's single-threaded FP64 rates (dgemm, batched small
matmul, the extraction's LAPACK ``dpotrf + dtrtri`` and batched ``eigh``) and turns the
CPU extraction's floating-point work into a CPU limit per frame. Threads are pinned to 1
before numpy is imported when run as a script. Without ``--cpu`` the rates of an existing
output file are kept (with their own machine, load and date, ``cpu_*`` keys).

The output says what it is (``kind``: a model, computed on a CPU; no GPU ran) and where
(``machine``, ``git_commit``); a GPU figure in docs/performance.md only ever comes from a
cupy benchmark record, set against this bound.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":      # single-threaded microbenchmarks: pin before numpy
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS"):
        os.environ[_v] = "1"

import json
import math
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from perf import protocol as P  # noqa: E402  (no numpy at import: the pinning holds)

#: Published peak figures (vendor datasheets; SXM boards, dense, no sparsity).
#: fp64: FP64 vector (CUDA cores); fp64_tc: FP64 Tensor Core (DMMA); bw: HBM bandwidth;
#: host: host link, one direction (PCIe Gen4 x16 for A100, Gen5 x16 for H100/H200).
GPUS = {
    "A100-40GB": {"fp64": 9.7e12, "fp64_tc": 19.5e12, "bw": 1.555e12, "host": 32e9,
                  "memory_gb": 40,
                  "source": "NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-"
                            "us-nvidia-1758950-r4-web.pdf): FP64 9.7, FP64 Tensor Core 19.5 "
                            "TFLOPS, 1,555 GB/s (40 GB HBM2), PCIe Gen4 64 GB/s both ways; "
                            "the Perlmutter GPU nodes' A100 (4 per node)"},
    "A100-80GB": {"fp64": 9.7e12, "fp64_tc": 19.5e12, "bw": 2.039e12, "host": 32e9,
                  "memory_gb": 80,
                  "source": "same datasheet, 80 GB HBM2e SXM: 2,039 GB/s"},
    "H100-SXM": {"fp64": 34e12, "fp64_tc": 67e12, "bw": 3.35e12, "host": 64e9,
                 "memory_gb": 80,
                 "source": "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): FP64 34, "
                           "FP64 Tensor Core 67 TFLOPS, 3.35 TB/s HBM3, PCIe Gen5 128 GB/s "
                           "both ways"},
    "H200-SXM": {"fp64": 34e12, "fp64_tc": 67e12, "bw": 4.8e12, "host": 64e9,
                 "memory_gb": 141,
                 "source": "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM): FP64 34, "
                           "FP64 Tensor Core 67 TFLOPS, 4.8 TB/s HBM3e, PCIe Gen5 128 GB/s "
                           "both ways"},
}
GPU_SOURCE_NOTE = ("Published values of the vendor datasheets, as quoted (the PDFs were not "
                   "fetched here; the figures were checked against public pages that cite "
                   "them, e.g. glennklockwood.com/garden/processors/A100 for the A100 "
                   "datasheet). Peak rates are upper limits no kernel sustains; the bounds "
                   "are therefore optimistic by construction.")

#: Published throughput anchors (GPU-seconds per 500-fiber frame).
ANCHORS = {
    "gpu_specter": {"frames_per_node_hour": P.GPU_SPECTER_FRAMES_PER_NODE_HOUR,
                    "gpus_per_node": P.GPU_SPECTER_GPUS_PER_NODE, "gpu": "A100-40GB",
                    "gpu_s_per_frame": P.GPU_SPECTER_GPUS_PER_NODE * 3600.0
                    / P.GPU_SPECTER_FRAMES_PER_NODE_HOUR,
                    "what": "gpu_specter, preproc-to-frame, 575 frames per node-hour on a "
                            "4 x A100 node (published)"},
    "desi_production": {"s_per_exposure": 253.5, "frames_per_exposure": 30,
                        "gpus_per_node": 4, "gpu": "A100-40GB",
                        "gpu_s_per_frame": 4 * 253.5 / 30.0,
                        "what": "DESI production extraction, 253.5 s per 30-frame exposure "
                                "on a 4-GPU Perlmutter node (published)"},
}
#: Perlmutter GPU node host memory (GB) and GPUs per node (NERSC documentation).
PERLMUTTER = {"host_memory_gb": 256, "gpus": 4}
FRAMES_PER_EXPOSURE = 30
F8 = 8          # bytes of a float64 / int64
F4 = 4


@dataclass
class Op:
    """One batched operation: FP64 flops and device bytes moved (read + written)."""

    stage: str
    name: str
    flops: float
    bytes: float
    tensor: bool = False      # a dense GEMM that cuBLAS may run on FP64 tensor cores
    host: float = 0.0         # host<->device bytes (PCIe), bounded separately
    note: str = ""

    def scaled(self, k: float) -> "Op":
        return Op(self.stage, self.name, self.flops * k, self.bytes * k, self.tensor,
                  self.host * k, self.note)


def roofline(ops, gpu: str, tensor: bool = True) -> dict:
    """Lower bound (s) of a list of ops on ``gpu``: Σ max(flops/peak, bytes/bw), + PCIe.

    Returns the total and its parts: ``compute_s`` (Σ flops/peak), ``memory_s``
    (Σ bytes/bw), ``host_s`` (PCIe), ``bound_s`` (Σ of the per-op maxima + host) and
    the operation that dominates.
    """
    g = GPUS[gpu]
    tot = comp = mem = host = 0.0
    worst = (0.0, "")
    for op in ops:
        peak = g["fp64_tc"] if (tensor and op.tensor) else g["fp64"]
        tc, tm = op.flops / peak, op.bytes / g["bw"]
        t = max(tc, tm)
        tot += t
        comp += tc
        mem += tm
        host += op.host / g["host"]
        if t > worst[0]:
            worst = (t, op.name)
    return {"gpu": gpu, "bound_s": tot + host, "device_s": tot, "compute_s": comp,
            "memory_s": mem, "host_s": host, "dominant": worst[1],
            "flops": sum(o.flops for o in ops), "bytes": sum(o.bytes for o in ops)}


# ----------------------------------------------------------------------------- preproc
def preproc_ops(ny: int = 4128, nx: int = 4114, raw_shape=(4192, 4256), namps: int = 4,
                n_overscan: int = 64, cand_frac: float = 0.001, calib_f32: bool = True,
                nsets_big: int = 8) -> list:
    """preproc of one camera with bias, dark, pixflat, mask and cosmic rays.

    Counted per pixel from ``gpuspec/preproc`` (``core.py``, ``cosmics.py``,
    ``morphology.py``, ``stats.py``): ``N = ny·nx`` trimmed pixels, ``Nr`` raw pixels.

    * upload: raw int32 (4 B/px) and the four calibrations (float32 files: 4 B/px) cross
      PCIe; the outputs (IMAGE, IVAR, READNOISE float64, MASK int32 = 28 B/px) come back
      when the image is written (float32 on disk, float64 in memory);
    * raw → float64 (4 + 8 B/px), bias subtraction in place (8 + 4 + 8 B/px);
    * per amp, in row blocks: ``(raw − level)·gain`` (2 passes), SATURATED (compare,
      where, or: 8 + 4 + 8 B), read noise with the bias term (4 passes);
    * the clipped noise of the bias (DATASEC) and of the dark per amp (``nsets_big``
      sets of N/namps float32 values): a copy, a sort (a 32-bit radix sort: 4 passes
      reading and writing key and index, 2·4·(4+4) B/value, O(n) flops) and one moments
      pass (4 + 8 + 8 + 8 B);
    * calibration rows (``_calibrate_rows``): ~26 elementwise passes of 8-byte planes
      (Poisson variance, dark, pixflat with its 3 divisions and 2 mask bits, variance,
      reciprocal with the zero guard, BADREADNOISE);
    * cosmic rays: the S/N selection (9 passes), the contiguous criterion-2 prefilter
      (19 passes), the exact tests on the ``cand_frac`` surviving pixels (~200 gather
      operations each), 3×3 dilation (9 bool passes) and the repair: 7 elements × 11
      shifted ORs and 11 shifted ANDs of bool planes (read 2 B, write 1 B each).

    Flops are ~1 per pixel per arithmetic pass; this stage is memory- and PCIe-bound.
    """
    N = ny * nx
    Nr = raw_shape[0] * raw_shape[1]
    c = 4 if calib_f32 else 8
    st = "preproc"
    ops = [
        Op(st, "upload raw + calibrations (PCIe)", 0, 0, host=4 * Nr + c * Nr + 3 * c * N),
        Op(st, "raw int32 -> float64", Nr, (4 + 8) * Nr),
        Op(st, "bias subtraction (in place)", Nr, (8 + c + 8) * Nr),
        Op(st, "per-amp electrons, SATURATED, read noise", 8 * N, 96 * N),
        Op(st, "overscan rows (clipped per row)", 30 * 2 * ny * n_overscan,
           30 * 8 * 2 * ny * n_overscan),
    ]
    nset = N / namps
    ops += [Op(st, "clipped stats: copy + radix sort", nsets_big * 4 * nset,
               nsets_big * nset * (2 * 4 + 2 * 4 * 8)),
            Op(st, "clipped stats: moments pass", nsets_big * 3 * nset,
               nsets_big * nset * 28)]
    ops += [Op(st, "dark noise + calibration rows (26 passes)", 26 * N, 26 * 2 * 8 * N),
            Op(st, "cosmics: S/N selection + ok map", 9 * N, 9 * 12 * N),
            Op(st, "cosmics: contiguous criterion-2 prefilter", 19 * N, 19 * 16 * N),
            Op(st, "cosmics: exact tests of the survivors", 200 * cand_frac * N,
               200 * 16 * cand_frac * N),
            Op(st, "cosmics: 3x3 dilation + 7 closings (shifted bool ops)", 0,
               (9 + 7 * 22 + 7) * 3 * N),
            Op(st, "download IMAGE/IVAR/READNOISE/MASK (PCIe)", 0, 0, host=28 * N)]
    return ops


def preproc_compulsory(ny=4128, nx=4114, raw_shape=(4192, 4256)) -> list:
    """Ideal fused preproc: read raw + calibrations once, write the 4 planes once."""
    N, Nr = ny * nx, raw_shape[0] * raw_shape[1]
    return [Op("preproc", "compulsory", 60 * N, 4 * Nr + 4 * Nr + 12 * N + 28 * N,
               host=8 * Nr + 12 * N + 28 * N)]


# ----------------------------------------------------------------------------- extraction
@dataclass
class PatchShape:
    """The array dimensions of one extraction patch (``_solve_chunk``'s symbols)."""

    F: int = 7          # fibers solved (subbundle + 1 neighbour each side)
    NW: int = 75        # wavelengths per fiber, padded to NT·T
    WY: int = 107       # window rows (the patch box height)
    WX: int = 21        # window columns (spot width + trace drift)
    NT: int = 5         # wavelength tiles
    T: int = 15         # wavelengths per tile
    RT: int = 33        # rows of a tile's spots
    ND: int = 3         # fiber offsets whose windows overlap (D + 1)
    NE: int = 3         # neighbour tiles (2E + 1)
    nys: int = 11       # spot rows
    nxs: int = 17       # spot columns
    ndiag: int = 5      # resolution half-width
    NK: int = 5         # kept fibers (solved last; only their blocks are decorrelated)
    DS: int = 2         # fiber reach of overlapping spots (blocks of M that are nonzero)
    NLO: int = 1        # not-kept fibers before the kept ones (fiber order)
    count: float = 1.0  # how many patches have this shape

    @property
    def n(self):
        return self.F * self.NW

    @property
    def K(self):
        return self.ND * self.NE * self.T


#: the host's block-sparse solve (one Numba call per chunk: the profile cannot split it)
BLOCK_SOLVE = "block solve (Numba): Cholesky, substitutions, kept covariance blocks"
#: the CPU twin's decorrelation products (``extract/decorrelate_cpu.py``); the GPU path
#: forms Q instead ("Q = V L^-1/2 V^T, R, flux")
HOST_BANDS = "R's band, R·x and Q·1 from the eigenvectors (Numba)"


def _block_solve_flops(s: "PatchShape") -> dict:
    """Flops of the host's block-sparse solve (``extract/blocksolve.py``) of one patch:
    fibers coupled within ``DS`` of each other, in slot order (the ``F − NK`` not-kept
    fibers first, ``NLO`` of them before the kept ones in fiber order), the fill of the
    elimination included; :func:`gpuspec.extract.blocksolve.block_flops` counts them."""
    import numpy as np

    from gpuspec.extract.blocksolve import block_flops, fill_pattern
    from gpuspec.extract.layout import slot_order

    F, NK = s.F, min(s.NK, s.F)
    keep = np.zeros(F, bool)
    keep[s.NLO:s.NLO + NK] = True
    perm = slot_order(keep)
    pat = np.abs(np.subtract.outer(perm, perm)) <= s.DS
    return block_flops(fill_pattern(pat), s.NW, F - NK)


def patch_ops(s: PatchShape, path: str = "gpu") -> list:
    """The batched operations of one patch (``gpuspec/extract/core.py::_solve_chunk`` and
    ``solve.solve_tail``).

    With ``Q = WY·WX`` window pixels per fiber, ``S = nys·nxs`` spot pixels,
    ``n = F·NW`` unknowns, ``K = ND·NE·T`` tiled columns, and the unknowns in solve order
    (the NK kept fibers last: ``m = NK·NW`` trailing unknowns, ``k = n − m`` leading):

    * projection: ``A0`` (F·Q·NW float64) zero-filled and scattered from F·NW spots
      (stamp read, value write, three int64 index arrays of F·NW·S); image and ivar
      windows: two gathers of F·Q with int64 indices;
    * tiled gather ``At`` (F·NT, RT·WX, K): reads and writes 8·F·NT·RT·WX·K bytes, plus
      its int64 row index (F·NT·RT·WX·ND·NE) and the tiled weights;
    * ``AW = A0·W`` (F·Q·NW flops), ``b = AWᵀp`` (2·F·Q·NW), ``fw = ΣAW``;
    * ``Mb = (own·W)ᵀ @ At``: a batched GEMM of 2·F·NT·T·RT·WX·K flops (tensor cores);
    * assembly of M (n² zeros, two indexed writes of F·NT·T·K values), regularisation;
    * ``cholesky(M)``: n³/3 flops; the device check of the factor (three matrix-vector
      products, 6n²); ``inv(L22)`` and ``inv(L11)`` (LU-based ``cupy.linalg.inv``:
      getrf 2p³/3 + getrs with p right-hand sides 2p³ = 8p³/3 each, p = m and k);
    * ``x`` by block substitution (matrix-vector products, ~4n²);
    * covariance blocks of the kept fibers ``Z22[sNW:, s]ᵀ Z22[sNW:, s]``:
      Σ_s 2·(m − s·NW)·NW² = NW³·NK·(NK + 1) (tensor cores);
    * decorrelation per kept fiber block (NW × NW): ``eigh`` ~9·NW³ flops (symmetric
      QR with vectors, Golub & Van Loan), ``Q = V·Λ^(-1/2)·Vᵀ`` 2·NW³ (tensor cores),
      R, flux;
    * χ²: ``m = A0·x`` and three more ``A0ᵀ·v`` products (4 × 2·F·Q·NW flops, A0 read
      four times), the neighbour-model gather (F·(2ND−1)·Q), ~12 elementwise passes of
      F·Q.

    ``path="cpu"``: the numpy backend's arithmetic instead (``normal_cpu`` builds M
    directly from the spot pairs: ~F·NW·26 partners·~60 overlap pixels·3 flops; the
    block-sparse Cholesky, substitutions and selected inverse of the kept covariance
    blocks over the fibers that share pixels, :func:`_block_solve_flops`; R's band
    (2·ndiag + 1 dot products of NW per row), R·x and Q·1 from the eigenvectors without
    forming Q, (4·ndiag + 10)·NW² per kept fiber; the rest as
    above without the tiled gather/GEMM).
    """
    F, NW, WY, WX, NT, T, RT, ND, NE = s.F, s.NW, s.WY, s.WX, s.NT, s.T, s.RT, s.ND, s.NE
    Q, S, n, K = WY * WX, s.nys * s.nxs, s.n, s.K
    NK = min(s.NK, F)
    m = NK * NW
    k = n - m
    st = "extraction"
    ops = [
        Op(st, "projection A0 (zero + scatter)", 0, F8 * F * Q * NW + F8 * F * NW * S * 5),
        Op(st, "image/ivar windows (gathers)", 0, F8 * F * Q * 2 * 3),
        Op(st, "AW, b, fw", 4 * F * Q * NW, F8 * F * Q * NW * 4),
    ]
    if path == "gpu":
        ops += [
            Op(st, "tiled gather At", 0,
               F8 * F * NT * RT * WX * (2 * K + ND * NE + 2)),
            Op(st, "own·W", F * NT * RT * WX * T, F8 * F * NT * RT * WX * T * 3),
            Op(st, "Mb = (own·W)^T At (batched GEMM)", 2.0 * F * NT * T * RT * WX * K,
               F8 * (F * NT * RT * WX * (T + K) + F * NT * T * K), tensor=True),
            Op(st, "assemble M", 0, F8 * (n * n + 2 * 3 * F * NT * T * K)),
            Op(st, "cholesky", n ** 3 / 3.0, F8 * 2 * n * n),
            Op(st, "factor check (3 matrix-vector products)", 6.0 * n * n, F8 * 3 * n * n),
            Op(st, "inv(L22), inv(L11) (LU inverses)", 8.0 * (m ** 3 + k ** 3) / 3.0,
               F8 * 4 * (m * m + k * k)),
            Op(st, "regularise, x by block substitution", 4.0 * n * n + 20 * n,
               F8 * (3 * n * n)),
            Op(st, "kept covariance blocks Z22^T Z22", NW ** 3 * NK * (NK + 1),
               F8 * (NW * NW * NK * (NK + 1) / 2 + NK * NW * NW), tensor=True),
        ]
    else:
        bl = _block_solve_flops(s)
        ops += [Op(st, "normal matrices from spot pairs (Numba)", 3.0 * F * NW * 26 * 60,
                   F8 * (n * n + F * NW * S)),
                Op(st, BLOCK_SOLVE, bl["factor"] + bl["selected_inverse"],
                   F8 * (2 * n * n + 3 * m * m)),
                Op(st, "regularise", 20 * n, F8 * 2 * n)]
    ops += [
        Op(st, "eigh of the fiber blocks", 9.0 * NK * NW ** 3, F8 * 5 * NK * NW * NW),
        Op(st, "Q = V L^-1/2 V^T, R, flux", 2.0 * NK * NW ** 3 + 6.0 * NK * NW * NW,
           F8 * 6 * NK * NW * NW, tensor=True) if path == "gpu" else
        Op(st, HOST_BANDS, (4.0 * s.ndiag + 10.0) * NK * NW * NW, F8 * 3 * NK * NW * NW),
        Op(st, "chi2: model and 3 weighted A0^T products", 8.0 * F * Q * NW + 12 * F * Q,
           F8 * (4 * F * Q * NW + (2 * ND - 1) * F * Q * 2 + 12 * F * Q)),
    ]
    return [o.scaled(s.count) for o in ops]


def spots_ops(nfib: int, nwave: int, nys: int = 11, nxs: int = 17, deg: int = 7) -> list:
    """``psf.spots`` of ``nfib × nwave`` spots (Gauss–Hermite, ``gausshermite.spots``).

    Per spot: GH coefficients (Legendre × coefficients), pixel-integrated Hermite
    functions at nxs+1 and nys+1 edges (~20 flops per term and edge), two small matmuls
    ``2·deg²·nxs + 2·nys·deg·nxs``, the tail ``r²/(c²+r²)^(1+i/2)`` (~30 flops/pixel),
    clip and normalisation; ~6 stamp-sized temporaries written and read.
    """
    sp = nfib * nwave
    pix = nys * nxs
    fl = sp * (20 * deg * (nxs + nys + 2) + 2 * deg * deg * nxs + 2 * nys * deg * nxs
               + 33 * pix + 4 * deg * deg * 10)
    return [Op("extraction", "spots", fl, F8 * sp * pix * 12)]


def plan_frame(psf=None, wave=None, nspec: int = 500, bundlesize: int = 25,
               bundles=None) -> list:
    """:class:`PatchShape` list of a frame, from the real patch layout.

    Uses :func:`gpuspec.extract.geometry.plan_bundle` (host-side geometry, read only) on
    ``bundles`` (default: the first, middle and last bundle, scaled to all of them) and
    the PSF traces for the window widths, tile rows and overlaps (``_solve_chunk``'s
    rules: TILE = 16 wavelengths per tile; fibers overlap when their windows do).
    Without a PSF the typical DESI r-camera shape is returned (``PatchShape()``,
    measured this way on the reference PSF), 4700 patches.
    """
    if psf is None:
        n = nspec // bundlesize * 5 * 47
        return [PatchShape(count=n)]
    from gpuspec.extract.geometry import plan_bundle, resolution_halfwidth

    dw = float(wave[1] - wave[0])
    nd = resolution_halfwidth(psf, dw)
    nb = math.ceil(nspec / bundlesize)
    chosen = bundles if bundles is not None else sorted({0, nb // 2, nb - 1})
    shapes = {}
    for b in chosen:
        b0, b1 = b * bundlesize, min((b + 1) * bundlesize, nspec)
        for p in plan_bundle(psf, wave, b0, b1, ndiag=nd):
            s = _patch_shape(psf, wave, p, nd)
            key = tuple(asdict(s).values())[:-1]
            shapes[key] = shapes.get(key, 0) + 1
    scale = nb / len(chosen)
    return [PatchShape(*k, count=v * scale) for k, v in shapes.items()]


def _patch_shape(psf, wave, p, ndiag) -> PatchShape:
    import numpy as np

    nys, nxs = 2 * psf.hsizey + 1, 2 * psf.hsizex + 1
    dw = float(wave[1] - wave[0])
    wl = wave[0] + (p.kfirst + np.arange(p.nwave)) * dw
    fib = np.arange(p.speclo, p.spechi)
    xc = np.floor(np.asarray(psf.x(fib, wl)) - psf.hsizex + 0.5)
    yc = np.floor(np.asarray(psf.y(fib, wl)) - psf.hsizey + 0.5)
    WX = int((xc.max(axis=1) - xc.min(axis=1)).max() + nxs)
    NT = max(1, math.ceil(p.nwave / 16))
    T = math.ceil(p.nwave / NT)
    NWp = NT * T
    ycp = np.concatenate([yc, np.repeat(yc[:, -1:], NWp - p.nwave, axis=1)], axis=1)
    tiles = ycp.reshape(len(fib), NT, T)
    RT = int(min(p.box[3] - p.box[2], (tiles.max(axis=2) - tiles.min(axis=2)).max() + nys))
    # fibers whose windows overlap, and neighbour tiles whose stamps reach a tile's rows
    x0 = xc.min(axis=1)
    D = max([d for d in range(1, len(fib)) if np.any(np.abs(x0[d:] - x0[:-d]) < WX)] or [0])
    top = tiles.min(axis=2)[:, :, None]
    E = 0
    for e in range(1, NT):
        reach = (tiles[:, e:, :] + nys > top[:, :-e]) & (tiles[:, e:, :] < top[:, :-e] + RT)
        if reach.any():
            E = e
    return PatchShape(F=len(fib), NW=NWp, WY=int(p.box[3] - p.box[2]), WX=WX, NT=NT, T=T,
                      RT=RT, ND=D + 1, NE=2 * E + 1, nys=nys, nxs=nxs, ndiag=ndiag,
                      NK=int(np.count_nonzero(p.keep)), DS=_spot_reach(xc, nxs),
                      NLO=int(np.argmax(p.keep)))


def _spot_reach(xc, nxs: int) -> int:
    """Largest fiber distance at which two fibers' stamps share columns at a wavelength
    (the blocks of M the normal-matrix kernel writes)."""
    import numpy as np

    d = 0
    for k in range(1, xc.shape[0]):
        if np.any(np.abs(xc[k:] - xc[:-k]) < nxs):
            d = k
    return d


def extraction_ops(shapes, nspec: int = 500, nwave_ext: int = 2700, path: str = "gpu"):
    """All operations of a frame's extraction (patches + spots), summed over shapes."""
    ops = spots_ops(nspec, nwave_ext, shapes[0].nys, shapes[0].nxs)
    for s in shapes:
        ops += patch_ops(s, path)
    ops.append(Op("extraction", "upload preproc image + ivar, download frame (PCIe)", 0, 0,
                  host=2 * 8 * 4128 * 4114 + nspec * nwave_ext * 8 * 16))
    return _merge(ops)


def _merge(ops):
    """Sum the ops of the same (stage, name)."""
    out = {}
    for o in ops:
        k = (o.stage, o.name)
        if k in out:
            a = out[k]
            out[k] = Op(a.stage, a.name, a.flops + o.flops, a.bytes + o.bytes, a.tensor,
                        a.host + o.host, a.note)
        else:
            out[k] = o
    return list(out.values())


# ----------------------------------------------------------------------------- coadd
def cinv_columns(ndiag: int = 11) -> int:
    """Columns per output bin of the resampled banded ``Cinv`` (diagonal included): the
    resolution band (ndiag) plus the resampling window's two columns of slack
    (``coadd/cinv.py`` measures it from the data; this is its value at DESI geometry)."""
    return ndiag + 2


def decorrelate_ops(ntarget: int, nout: int, wavebin: float = 0.8, ndiag: int = 11,
                    stage: str = "decorrelation", method: str = "zolotarev") -> list:
    """``coadd.decorrelate``: divide and conquer on blocks of ``m = 2chw+1+2skin``.

    ``chw = max(10, int(50/wavebin))``, ``skin = max(2, int(10/wavebin))``; per target
    ``nblk = ceil(nout/(2chw+1))`` blocks (``coadd.decorrelate.block_layout``).

    ``method="zolotarev"`` (the code's default, on numpy and cupy): the banded blocks
    (``hb = cinv_columns(ndiag) − 1`` superdiagonals: the band of the resampled ``Cinv``) gathered from
    the band, then the rational approximation of ``C^{-1/2}``: flops and bytes of
    :func:`gpuspec.coadd.decorrelate.decorrelate_flops` (``NPOLES`` shifted banded
    ``LDLᵀ`` factorisations, Takahashi's selected inverse, two banded solves per block),
    and the O(m·ndiag) products for s, the flux and the band of R.

    ``method="eigh"`` (desispec's method, the reference): the dense block gathered from the
    band (m² writes + int64 index reads), ``eigh`` (~9m³ flops, ~5 m² arrays), the O(m²)
    products for s, the flux and the ndiag band entries of R (``(4 + 2·ndiag)·m²``).
    """
    from gpuspec.coadd.decorrelate import block_layout, decorrelate_flops

    m, starts, *_ = block_layout(nout, wavebin)
    nblk = ntarget * starts.size
    if method == "eigh":
        return [Op(stage, "dense blocks from the band", 0, nblk * m * m * (F8 * 3 + 1)),
                Op(stage, f"eigh of {nblk} blocks of {m}", 9.0 * nblk * m ** 3,
                   nblk * F8 * 5 * m * m),
                Op(stage, "s, flux, resolution band (O(m^2) products)",
                   nblk * (4 + 2 * ndiag) * 2 * m * m, nblk * F8 * (4 + 2 * ndiag) * m * m)]
    if method != "zolotarev":
        raise ValueError(f"method must be 'zolotarev' or 'eigh', not {method!r}")
    hb = cinv_columns(ndiag) - 1
    z = decorrelate_flops(ntarget, nout, wavebin, hb, ndiag, method="zolotarev")
    return [Op(stage, "banded blocks from the band", 0, nblk * m * (hb + 1) * (F8 * 3 + 1)),
            Op(stage, f"Zolotarev C^-1/2 of {z['nblock']} blocks of {z['m']} "
               f"({z['npoles']} banded LDL^T + selected inverse + solves)",
               z["flops"], z["bytes"]),
            Op(stage, "s, flux, resolution band (O(m·ndiag) products)",
               nblk * m * (2 * (2 * hb + 1) + 4 * ndiag),
               nblk * F8 * m * (2 * hb + 2 + 2 * ndiag))]


def coadd_plain_ops(ntarget: int, nexp: int, nwave: dict, ndiag: int = 11) -> list:
    """Plain ivar-weighted coadd (``coadd/plain.py``) of every band, then the cameras.

    Per input element (target × exposure × bin): flux, ivar, mask and ndiag resolution
    values read once (8·(2 + ndiag) + 4 B), ~(6 + 2·ndiag) flops (weights, sums,
    resolution weighted by ivar); outputs written once per target. The camera
    combination reads and writes the per-band coadds once more.
    """
    el = sum(ntarget * nexp * w for w in nwave.values())
    out = sum(ntarget * w for w in nwave.values())
    return [Op("coadd plain", "per-band coadd", (6 + 2 * ndiag) * el,
               el * (F8 * (2 + ndiag) + 4) + out * F8 * (3 + ndiag)),
            Op("coadd plain", "coadd cameras", (6 + 2 * ndiag) * out,
               2 * out * F8 * (3 + ndiag))]


def coadd_spectroperf_ops(ntarget: int, nexp: int, nwave: dict, nout: int,
                          ndiag: int = 11, wavebin: float = 0.8) -> list:
    """Spectroperfectionism coadd (``coadd/spectroperf.py``) then its decorrelation.

    Per input row (target × exposure × band, m input bins, ``L ≈ ndiag + 2`` output
    columns per bin): RR = R·S built with 2·ndiag scatter-adds (4·ndiag·m flops, m·L
    values written ndiag times); Cinvf (2·m·L flops, one bincount scatter of m·L);
    the banded Cinv: for each of the L offsets a product of (L − dl)·m values and a
    bincount (3 flops, ~32 B per value: value, index, the read-modify-write of the
    output). Then :func:`decorrelate_ops` on the combined ``nout`` grid.
    """
    L = cinv_columns(ndiag)
    fl = by = 0.0
    for w in nwave.values():
        rows = ntarget * nexp
        m = w
        fl += rows * (4 * ndiag * m + 2 * m * L + 3 * m * L * (L + 1) / 2)
        by += rows * (F8 * m * (2 + ndiag) + ndiag * m * L * 16 + m * L * 32
                      + 32 * m * L * (L + 1) / 2)
    st = "coadd spectroperf"
    return [Op(st, "banded Cinv and Cinvf accumulation", fl, by)] + \
        decorrelate_ops(ntarget, nout, wavebin, ndiag, stage=st)


# ----------------------------------------------------------------------------- calibration
def calibration_ops(nfiber: int = 500, nwave: int = 2326, ndiag: int = 11, nsky: int = 50,
                    nstd: int = 10, it_flat: int = 10, it_sky: int = 10,
                    it_flux: int = 10) -> list:
    """fiberflat, sky and flux calibration of one frame (``gpuspec/calibrate``).

    The heavy kernel of all three is the banded normal matrix
    ``Σ_f R_fᵀ W_f R_f`` (``banded.py``): with ``b = ndiag`` (11) diagonals of R, the
    product has ``2b − 1`` diagonals and each entry is a sum of ≤ b terms: ~2·b·(2b − 1)
    flops per fiber and bin, reading the resolution data (8·b B) and writing the band;
    then a banded Cholesky solve (n·(b−1)² flops) and, for the variance of sky and flux
    calibration, the band of the inverse and ``diag(R̄ C R̄ᵀ)``. Counted per iteration:
    fiberflat over all fibers (``it_flat`` iterations of pass 2 plus the spline fits,
    ~50 flops per fiber and bin), sky over the sky fibers (``it_sky``) and the model
    ``R_f s`` for all fibers, flux calibration over the standard stars (``it_flux``).
    Iteration counts are typical values, not the maxima (15, 100, 20).
    """
    b = ndiag
    per_fb = 2.0 * b * (2 * b - 1)
    by_fb = F8 * (b + 2)
    chol = nwave * (2 * b) ** 2
    ops = [Op("fiberflat", "banded normal matrix x iterations",
              it_flat * nfiber * nwave * per_fb, it_flat * nfiber * nwave * by_fb),
           Op("fiberflat", "banded solves + spline fits", it_flat * (chol + 50 * nfiber * nwave),
              it_flat * F8 * nfiber * nwave * 6),
           Op("sky", "banded normal matrix x iterations", it_sky * nsky * nwave * per_fb,
              it_sky * nsky * nwave * by_fb),
           Op("sky", "solves, variance band, model R_f s for all fibers",
              it_sky * chol + nwave * (2 * b) ** 3 + 2 * b * nfiber * nwave,
              F8 * (nfiber * nwave * (b + 3) + it_sky * nwave * 4 * b)),
           Op("fluxcalib", "banded normal matrix x iterations", it_flux * nstd * nwave * per_fb,
              it_flux * nstd * nwave * by_fb),
           Op("fluxcalib", "solves, variance, calibration per fiber",
              it_flux * chol + nwave * (2 * b) ** 3 + 2 * b * nfiber * nwave,
              F8 * (nfiber * nwave * (b + 3)))]
    return ops


# ----------------------------------------------------------------------------- model
def frame_model(psf_path: str | None = None, nspec: int = 500, band: str = "r") -> dict:
    """The stages of one camera frame and of an exposure: ops and roofline bounds.

    Stages: preproc, extraction (GPU path; and the CPU path's flops), calibration
    (fiberflat, sky, fluxcalib per frame), and per HEALPix pixel of 500 targets x 3
    exposures x brz the decorrelation, plain coadd and spectroperfectionism coadd.
    """
    import numpy as np

    from gpuspec.sim.cameras import PRODUCTION_WAVE, WAVE_STEP

    psf = None
    wave = None
    if psf_path and os.path.exists(psf_path):
        from gpuspec.psf import read_psf

        psf = read_psf(psf_path)
        wmin, wmax = PRODUCTION_WAVE[band]
        wave = np.arange(wmin, wmax + WAVE_STEP / 2, WAVE_STEP)
        wave = wave[(wave > psf.wmin + 20) & (wave < psf.wmax - 20)]
    shapes = plan_frame(psf, wave, nspec)
    nwave = int(wave.size) if wave is not None else 2326
    nwave_ext = nwave + 2 * 30
    bands = {b: int(round((PRODUCTION_WAVE[b][1] - PRODUCTION_WAVE[b][0]) / WAVE_STEP)) + 1
             for b in "brz"}
    nout = int(round((PRODUCTION_WAVE["z"][1] - PRODUCTION_WAVE["b"][0]) / WAVE_STEP)) + 1
    stages = {
        "preproc": preproc_ops(),
        "extraction": extraction_ops(shapes, nspec, nwave_ext, "gpu"),
        "calibration": calibration_ops(nspec, nwave),
    }
    pixel = {"ntarget": 500, "nexp": 3, "bands": bands, "nout": nout}
    stages_pixel = {
        "decorrelation": decorrelate_ops(500, nout),
        "decorrelation (eigh, desispec's method)": decorrelate_ops(500, nout, method="eigh"),
        "coadd plain": coadd_plain_ops(500, 3, bands),
        "coadd spectroperf": coadd_spectroperf_ops(500, 3, bands, nout),
    }
    cpu_ops = extraction_ops(shapes, nspec, nwave_ext, "cpu")
    out = {"frame": {"nspec": nspec, "nwave": nwave, "band": band,
                     "psf": os.path.relpath(psf_path, REPO) if psf else None,
                     "npatch": sum(s.count for s in shapes),
                     "patch_shapes": [asdict(s) for s in shapes]},
           "healpix_pixel": pixel, "gpus": GPUS, "gpu_source": GPU_SOURCE_NOTE,
           "anchors": ANCHORS, "bounds": {}, "ops": {}, "cpu_extraction": {}}
    for name, ops in list(stages.items()) + list(stages_pixel.items()):
        out["ops"][name] = [asdict(o) for o in ops]
        out["bounds"][name] = {g: roofline(ops, g) for g in GPUS}
    comp = preproc_compulsory()
    out["bounds"]["preproc (compulsory)"] = {g: roofline(comp, g) for g in GPUS}
    per_frame = ("preproc", "extraction", "calibration")
    out["per_frame"] = {g: sum(out["bounds"][s][g]["bound_s"] for s in per_frame)
                        for g in GPUS}
    out["per_exposure"] = {g: FRAMES_PER_EXPOSURE * v for g, v in out["per_frame"].items()}
    out["cpu_extraction"]["flops_by_op"] = {o.name: o.flops for o in cpu_ops}
    # the block solve's dpotrf + dtrtri part, which cpu_limit charges at its own rate
    out["cpu_extraction"]["block_solve_lapack_flops"] = sum(
        _block_solve_flops(s)["lapack"] * s.count for s in shapes)
    out["cpu_extraction"]["flops"] = sum(o.flops for o in cpu_ops)
    out["cpu_extraction"]["bytes"] = sum(o.bytes for o in cpu_ops)
    out["gpu_extraction_flops"] = sum(o.flops for o in stages["extraction"])
    return out


# ----------------------------------------------------------------------------- CPU rates
def _rate(fn, flops, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return flops / best / 1e9, best


def cpu_rates(n_lapack: int = 525, nw: int = 75, repeat: int = 3) -> dict:
    """Single-threaded FP64 GFLOP/s of this machine (CPU time, best of ``repeat``).

    dgemm 1024² and 2048²; a batch of 64 small GEMMs (nw × n by n × nw, the C_ff shape);
    the extraction's per-patch LAPACK ``dpotrf + dtrtri`` (n = ``n_lapack``, 2n³/3
    flops); the two kinds of kernel of the block-sparse solve on 64 blocks of nw, called
    from Numba as ``extract/blocksolve_numba.py`` calls them (``lapack_nw``: ``dpotrf`` +
    ``dtrtri``, 2nw³/3 flops; ``gemm_nw``: ``np.dot`` of two blocks, 2nw³) and a batched
    ``eigh`` of 64 fiber blocks (nw, 9·nw³ flops each).
    """
    import numpy as np
    from scipy.linalg import lapack

    rng = np.random.default_rng(0)
    out = {}
    for n in (1024, 2048):
        a, b = rng.random((n, n)), rng.random((n, n))
        a @ b
        out[f"dgemm_{n}"] = _rate(lambda: a @ b, 2.0 * n ** 3, repeat)[0]
    n = n_lapack
    zt = rng.random((64, nw, n))
    z = rng.random((64, n, nw))
    out["batched_gemm_cff"] = _rate(lambda: np.matmul(zt, z), 2.0 * 64 * nw * n * nw, repeat)[0]
    m = rng.random((n, n))
    spd = m @ m.T + n * np.eye(n)

    def potrf_trtri():
        for _ in range(8):
            c, _ = lapack.dpotrf(spd, lower=1, clean=1)
            lapack.dtrtri(c, lower=1)
    out["dpotrf_dtrtri"] = _rate(potrf_trtri, 8 * 2.0 * n ** 3 / 3.0, repeat)[0]
    blk = rng.random((64, nw, nw))
    blk = blk @ np.swapaxes(blk, -1, -2) + nw * np.eye(nw)
    lap, mm = _block_kernels()
    lap(blk.copy())                                                    # compile / load
    mm(blk, 1)
    out["lapack_nw"] = _rate(lambda: lap(blk.copy()), 64 * 2.0 * nw ** 3 / 3.0, repeat)[0]
    out["gemm_nw"] = _rate(lambda: mm(blk, 8), 8 * 64 * 2.0 * nw ** 3, repeat)[0]
    out["eigh_batched"] = _rate(lambda: np.linalg.eigh(blk), 64 * 9.0 * nw ** 3, repeat)[0]
    import numpy

    out["threads"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out["numpy"] = numpy.__version__
    return out


def _block_kernels():
    """Numba loops of the block solve's two kinds of kernel over a stack of blocks (see
    :func:`cpu_rates`): ``dpotrf`` + ``dtrtri`` of each block in place, and ``reps``
    products of each block with the next."""
    import numpy as np
    from numba import njit

    from gpuspec.extract.blocksolve_numba import chol_inv

    @njit(cache=True)
    def lap(blocks):
        iw = np.empty(2, np.int32)
        for k in range(blocks.shape[0]):
            chol_inv(blocks[k], iw)

    @njit(cache=True)
    def mm(blocks, reps):
        n = blocks.shape[0]
        s = 0.0
        for _ in range(reps):
            for k in range(n):
                s += np.dot(blocks[k], blocks[(k + 1) % n].T)[0, 0]
        return s
    return lap, mm


def cpu_limit(model: dict, rates: dict) -> dict:
    """CPU extraction limit per frame: each op's flops at the rate of its kind of kernel.

    The block-sparse solve's ``dpotrf`` + ``dtrtri`` flops at ``lapack_nw`` and its
    products at ``gemm_nw`` (both on blocks of one fiber, called from Numba; records
    before these two rates: the mix ``blocks_nw``), the eigendecompositions at
    ``eigh_batched``, Q/R/flux at ``batched_gemm_cff`` (small GEMMs; models made before
    the host twin of the band products, :data:`HOST_BANDS`), the normal matrices, the
    band products and the rest at the dgemm rate (an optimistic bound for them). Also the
    bound with every flop at the best dgemm rate.
    """
    fl = model["cpu_extraction"]["flops_by_op"]
    kind = {BLOCK_SOLVE: "blocks_nw",
            "eigh of the fiber blocks": "eigh_batched",
            "Q = V L^-1/2 V^T, R, flux": "batched_gemm_cff"}
    best = max(rates["dgemm_1024"], rates["dgemm_2048"])
    t = {name: f / (rates[kind[name]] if name in kind else best) / 1e9 for name, f in fl.items()
         if name != BLOCK_SOLVE or "lapack_nw" not in rates}
    if BLOCK_SOLVE in fl and "lapack_nw" in rates:
        lap = model["cpu_extraction"].get("block_solve_lapack_flops", 0.0)
        t[BLOCK_SOLVE] = (lap / rates["lapack_nw"] + (fl[BLOCK_SOLVE] - lap) / rates["gemm_nw"]) / 1e9
    total = sum(fl.values())
    return {"seconds_by_op": t, "seconds": sum(t.values()), "flops": total,
            "seconds_at_dgemm_peak": total / best / 1e9, "dgemm_gflops": best}


#: rounds of goal 2d's side-by-side measure (the rates, then the timed bundle)
SIDE_BY_SIDE_ROUNDS = 5


def side_by_side(model: dict, psf_path: str, n: int, nw: int,
                 rounds: int = SIDE_BY_SIDE_ROUNDS) -> dict:
    """Goal 2d measured side by side: the CPU rates and a timed bundle, alternating.

    The machine is shared and its speed drifts between runs (by 15% within minutes on a
    VM), so a limit from rates measured in one run and a frame timed in another is not a
    ratio of like with like. Here each round measures :func:`cpu_rates` and right after
    times bundle 0 of a rendered frame (:mod:`perf.profile_extract`, scaled to the
    model's frame by the patch counts); the ratio of each round is its measured seconds
    over its own limit. The measured seconds are those of a plain extraction (cProfile
    adds 0–15% here); the profile that follows it in the round gives the table per
    operation.

    Returns ``cpu_rates``, ``cpu_limit`` and ``cpu_profile`` of the round with the median
    ratio (the tables of docs/performance.md use one consistent round), and
    ``cpu_side_by_side``: per round the limit, the measured seconds per frame, the ratio
    and the load, and the median, lowest and highest ratio.
    """
    from perf import profile_extract as PE

    inp = PE.prepare_bundle(psf_path)
    npatch = model["frame"]["npatch"]
    out = []
    for _ in range(max(1, int(rounds))):
        rates = cpu_rates(n_lapack=n, nw=nw)
        rates["shapes"] = {"n": n, "nw": nw}
        lim = cpu_limit(model, rates)
        cpu_s = PE.time_prepared(inp)
        prof = PE.profile_prepared(inp)
        prof["per_frame"] = PE.per_frame(prof, npatch)
        prof["frame_patches"] = npatch
        prof["loadavg_after"] = P.loadavg()
        meas = PE.frame_seconds(cpu_s, prof, npatch)
        out.append({"rates": rates, "limit": lim, "profile": prof, "bundle_cpu_s": cpu_s,
                    "limit_s": lim["seconds"], "measured_s": meas,
                    "ratio": meas / lim["seconds"], "loadavg": prof["loadavg_after"]})
    order = sorted(range(len(out)), key=lambda i: out[i]["ratio"])
    med = out[order[len(order) // 2]]
    summary = {"rounds": [{k: r[k] for k in ("limit_s", "bundle_cpu_s", "measured_s", "ratio",
                                             "loadavg")}
                          for r in out],
               "ratio_median": med["ratio"], "measured_s_median": med["measured_s"],
               "ratio_min": out[order[0]]["ratio"],
               "ratio_max": out[order[-1]]["ratio"], "bundle": inp["bundle"],
               "method": "rounds of cpu_rates, one plain and one profiled extraction of the "
                         "bundle, alternating in one process; ratio = the plain extraction "
                         "scaled to the frame / the round's limit"}
    return {"cpu_rates": med["rates"], "cpu_limit": med["limit"],
            "cpu_profile": med["profile"], "cpu_side_by_side": summary}


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--psf", default=os.path.join(REPO, "..", "shared", "reference", "psf",
                                                  "psf-r0-00051060.fits"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "costmodel.json"))
    ap.add_argument("--cpu", action="store_true", help="also the single-threaded FP64 rates")
    ap.add_argument("--rounds", type=int, default=SIDE_BY_SIDE_ROUNDS,
                    help="rounds of the rates and the timed bundle, alternating (--cpu)")
    a = ap.parse_args(argv)
    model = frame_model(a.psf)
    model["kind"] = ("model: roofline lower bounds computed on a CPU from the array shapes "
                     "and published GPU peak figures; not a GPU measurement")
    model["git_commit"] = P.git_commit()
    model["machine"] = P.machine()
    if not a.cpu and os.path.exists(a.out):
        # keep the CPU rates measured earlier (with their machine, load and date)
        with open(a.out) as f:
            old = json.load(f)
        for k in ("cpu_rates", "cpu_limit", "cpu_machine", "cpu_loadavg", "cpu_date_utc",
                  "cpu_profile", "cpu_side_by_side", "cpu_heap"):
            if k in old:
                model[k] = old[k]
        if "cpu_rates" in old:
            model.setdefault("cpu_date_utc", old.get("date_utc"))
            model["cpu_limit"] = cpu_limit(model, model["cpu_rates"])
    if a.cpu:
        from gpuspec.heap import configure_heap

        model["cpu_heap"] = configure_heap()             # as gpuspec's entry points run
        shp = model["frame"]["patch_shapes"]
        w = sum(s["count"] for s in shp)
        n = int(round(sum(s["F"] * s["NW"] * s["count"] for s in shp) / w))
        nw = int(round(sum(s["NW"] * s["count"] for s in shp) / w))
        model["cpu_machine"] = P.machine()
        model["cpu_loadavg"] = P.loadavg()
        if os.path.exists(a.psf):
            model.update(side_by_side(model, a.psf, n, nw, a.rounds))
        else:
            model["cpu_rates"] = cpu_rates(n_lapack=n, nw=nw)
            model["cpu_rates"]["shapes"] = {"n": n, "nw": nw}
            model["cpu_limit"] = cpu_limit(model, model["cpu_rates"])
        model["cpu_date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    model["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(model, f, indent=1, default=float)
    os.replace(tmp, a.out)
    for st, b in model["bounds"].items():
        print(f"{st:22s} " + "  ".join(f"{g} {v['bound_s'] * 1e3:9.2f} ms" for g, v in b.items()))
    print("per frame  " + "  ".join(f"{g} {v:.3f} s" for g, v in model["per_frame"].items()))
    if a.cpu:
        print("cpu rates (GFLOP/s):", {k: round(v, 1) for k, v in model["cpu_rates"].items()
                                       if isinstance(v, float)})
        print(f"cpu extraction limit: {model['cpu_limit']['seconds']:.1f} s per frame "
              f"({model['cpu_extraction']['flops']:.3g} flops)")
        sbs = model.get("cpu_side_by_side")
        if sbs:
            print("side by side (measured / limit per round): "
                  + ", ".join(f"{r['ratio']:.2f}" for r in sbs["rounds"])
                  + f"; median {sbs['ratio_median']:.2f}")
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
