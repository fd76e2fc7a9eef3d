"""Where a CPU extraction's time goes, by the cost model's operations (issue 16, goal 2d).

One bundle (25 fibers × the full wavelength range) of a rendered full-CCD frame is
extracted once to warm the code, then once more under ``cProfile``; the profile is
folded onto the operations of ``perf/costmodel.py``'s CPU extraction (the functions that
run each one are listed in :data:`OPS`) and scaled to a frame by the patch counts.
``python -m perf.costmodel --cpu`` runs it in rounds alternating with the CPU rates
(:func:`perf.costmodel.side_by_side`: each round the rates, a plain timing of the bundle
and its profile) and stores the median round in ``results/costmodel.json``
(``cpu_profile``, ``cpu_side_by_side``) beside the limit; ``docs/performance.md`` shows
the two side by side. Single-threaded: run it with the thread variables at 1 (``--cpu`` pins them).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import time

#: operation -> the functions whose time it is: (file suffix, function, "cum" | "self").
#: "cum" counts the function and its callees, "self" its own time (LAPACK calls made
#: through scipy's f2py wrappers are not profiled separately: they land in the caller).
OPS = {
    "spots": [("extract/core.py", "_bundle_spots", "cum")],
    "normal matrices from spot pairs (Numba)": [("extract/normal_cpu.py", "normal_matrices",
                                                 "cum")],
    # the Numba block solve, and the dense fallback's own time (LAPACK inside)
    "block solve (Numba): Cholesky, substitutions, kept covariance blocks": [
        ("extract/blocksolve.py", "solve_tail_blocks", "cum"),
        ("extract/solve.py", "_solve_tail_host", "self")],
    "regularise": [("extract/solve.py", "regularize_normal", "cum")],
    "eigh of the fiber blocks": [("linalg.py", "eigh", "cum")],     # numpy 1.x and 2.x
    # the eigenvalue floor's array passes, the Numba band products, the Python around
    "R's band, R·x and Q·1 from the eigenvectors (Numba)": [
        ("extract/solve.py", "eig_inverse_sqrt", "self"),
        ("extract/decorrelate_cpu.py", "band_products", "cum"),
        ("extract/core.py", "_solve_normal", "self")],
    "chi2: model and 3 weighted A0^T products": [("extract/pixels_cpu.py", "diagnostics",
                                                  "cum")],
}
OTHER = "other (planning, layout, stores, Python)"
#: once per extraction call, not per bundle: not scaled with the patch count
ONCE = "image cleanup (once per call)"
_ONCE_FUNCS = [("extract/core.py", "__init__", "cum")]


def fold(stats: pstats.Stats, total_s: float, strict: bool = False) -> dict:
    """Seconds per operation of :data:`OPS` from a profile; the rest goes to ``OTHER``.

    ``strict``: raise ``RuntimeError`` naming the functions of :data:`OPS` that are not in
    the profile (renamed or no longer called), instead of counting them as 0.
    """
    out, missing = {}, []
    for op, funcs in list(OPS.items()) + [(ONCE, _ONCE_FUNCS)]:
        s = 0.0
        for suffix, name, kind in funcs:
            hit = False
            for (fn, _line, fname), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
                if fname == name and fn.replace(os.sep, "/").endswith(suffix):
                    s += ct if kind == "cum" else tt
                    hit = True
            if not hit:
                missing.append(f"{suffix}:{name}")
        out[op] = s
    if strict and missing:
        raise RuntimeError("profile_extract: not in the profile (update OPS): "
                           + ", ".join(missing))
    out[OTHER] = max(total_s - sum(out.values()), 0.0)
    return out


def prepare_bundle(psf_path: str, bundle: int = 0) -> dict:
    """Render a full-CCD frame for ``bundle`` and extract the bundle once (warm-up).

    Returns the inputs :func:`profile_prepared` profiles (``psf``, ``img``, ``ivar``,
    ``wave``, ``b0``, ``bundle``) and ``patches``, the bundle's patch count.
    """
    import numpy as np

    from gpuspec.extract import extract_frame
    from gpuspec.extract.geometry import plan_bundle, resolution_halfwidth
    from gpuspec.psf import read_psf
    from perf.suite import make_frame

    psf = read_psf(psf_path)
    b0 = 25 * bundle
    img, ivar, wave = make_frame(psf, b0 + 25)
    extract_frame(img, ivar, psf, wave, b0, 25, backend="numpy")          # warm
    dw = float(wave[1] - wave[0])
    npatch = len(plan_bundle(psf, np.asarray(wave), b0, b0 + 25,
                             ndiag=resolution_halfwidth(psf, dw),
                             image_box=(0, img.shape[1], 0, img.shape[0])))
    return {"psf": psf, "img": img, "ivar": ivar, "wave": wave, "b0": b0,
            "bundle": bundle, "patches": npatch}


def profile_prepared(inp: dict) -> dict:
    """Profile one extraction of a bundle prepared by :func:`prepare_bundle`.

    Returns ``seconds_by_op`` (CPU seconds of the bundle per operation), ``cpu_s`` (the
    bundle's process time under the profiler), ``wall_s``, ``patches`` (of the bundle)
    and ``nwave``.
    """
    import numpy as np

    from gpuspec.extract import extract_frame

    prof = cProfile.Profile()
    t, c = time.perf_counter(), time.process_time()
    prof.enable()
    extract_frame(inp["img"], inp["ivar"], inp["psf"], inp["wave"], inp["b0"], 25,
                  backend="numpy")
    prof.disable()
    cpu, wall = time.process_time() - c, time.perf_counter() - t
    return {"seconds_by_op": fold(pstats.Stats(prof), cpu, strict=True), "cpu_s": cpu,
            "wall_s": wall, "patches": inp["patches"], "nwave": int(np.size(inp["wave"])),
            "bundle": inp["bundle"]}


def time_prepared(inp: dict) -> float:
    """CPU seconds of one extraction of a bundle prepared by :func:`prepare_bundle`, not
    profiled."""
    from gpuspec.extract import extract_frame

    c = time.process_time()
    extract_frame(inp["img"], inp["ivar"], inp["psf"], inp["wave"], inp["b0"], 25,
                  backend="numpy")
    return time.process_time() - c


def frame_seconds(bundle_cpu_s: float, profile: dict, frame_patches: int) -> float:
    """A bundle's CPU seconds scaled to a frame of ``frame_patches`` patches, the part
    done once per call (:data:`ONCE`, from ``profile``) not scaled."""
    once = profile["seconds_by_op"].get(ONCE, 0.0)
    return once + (bundle_cpu_s - once) * frame_patches / profile["patches"]


def per_frame(profile: dict, frame_patches: int) -> dict:
    """The bundle's seconds per operation scaled to a frame of ``frame_patches`` patches
    (:data:`ONCE` is not scaled)."""
    k = frame_patches / profile["patches"]
    return {op: s * (1.0 if op == ONCE else k) for op, s in profile["seconds_by_op"].items()}
