#!/usr/bin/env python
"""Benchmark of gpuspec preproc on a full-size DESI-like raw camera, numpy against cupy.

A raw camera is synthesised here (4 amps, trimmed 4128 x 4114 pixels, 7 prescan
and 64 overscan columns, 32 overscan rows per amp, sky + 500 fibre traces +
cosmic rays + bias structure + read noise, integer ADU), with a master bias,
dark rate, pixflat and bad-pixel mask of the right shapes.

Timed, per backend (warm-up runs, then the median of N runs; the device is
synchronised before each clock read):

- ``preproc_full``: preproc with all calibrations and cosmic-ray rejection
  (host → device upload of the raw image included, result left on the device);
- ``preproc_nocosmic``: the same without cosmic-ray rejection;
- ``cosmics``: cosmic-ray rejection alone on the preprocessed image;
- ``cli_file`` (once, not a median): ``gpuspec preproc`` on the camera written to a
  RICE-compressed raw file with calibration files (read + preproc + write).

``--vs-desispec``: gpuspec (numpy) against the real ``desispec.preproc.preproc``
(desispec 0.70, the ``interop`` extra) side by side in this one process, on the same
raw image and the same calibration files (read inside each call), single-threaded
(threads pinned before numpy is imported): one warm-up of each (numba JIT), then
``--rounds`` interleaved rounds (the order alternates each round). Every call is
metered (perf/protocol.py ``Meter``: wall, CPU time, page faults, peak RSS during the
call). The outputs of the two are compared (IMAGE, IVAR, READNOISE, MASK, COSMIC
pixels). Writes protocol records ``perf/results/<host>-<stamp>-preproc.jsonl``
(``preproc/fullccd_vs_desispec[_nocosmic]``) whose ``reference`` is desispec's
median CPU time in the same run; ``ratio`` = desispec / gpuspec CPU time.

Writes ``perf/results/preproc-<host>-<backend>.json`` with the machine, the
device name, library versions and the git commit.

With ``--raw FILE --camera CAM --calib-dir D`` a simulated night from
``gpuspec simulate --full-size`` is used instead of the built-in synthetic camera
(``D/{bias,dark,pixflat,mask}-{camera}.fits``).

Usage::

    python perf/bench_preproc.py --vs-desispec [--rounds 5] [--nocosmic]
    python perf/bench_preproc.py [--backends numpy,cupy] [--repeat 5] [--warmup 1]
    gpuspec simulate --out D --cameras r0 --nspec 500 --full-size
    python perf/bench_preproc.py --raw D/raw/20250115/00000100/desi-00000100.fits.fz \
        --camera r0 --calib-dir D/calib
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

if __name__ == "__main__":      # pin the threads before numpy is imported
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_v, "1")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import protocol as P  # noqa: E402  (perf/protocol.py: measurement protocol, machine info)
from gpuspec import backend  # noqa: E402
from gpuspec.preproc import preproc, reject_cosmic_rays  # noqa: E402

NDY, NDX = 2064, 2057        # data rows/columns per amp -> trimmed 4128 x 4114
NPRE, NOV, NOVR = 7, 64, 32  # prescan cols, overscan cols, overscan rows per amp


def synth_camera(seed: int = 42, camera: str = "r3", ndy: int = NDY, ndx: int = NDX):
    """A raw camera: (raw int32, header, primary, calibrations dict).

    Full size by default (4 amps of ``ndy x ndx`` data pixels); smaller ``ndy, ndx``
    scale the traces, cosmics and masked column (used by the tests).
    """
    rng = np.random.default_rng(seed)
    ny_t, nx_t = 2 * ndy, 2 * ndx
    scale = (ny_t * nx_t) / (4.0 * NDY * NDX)
    # true signal in electrons: sky + 500 fibre traces with a smooth spectrum
    y = np.arange(ny_t, dtype=np.float64)[:, None]
    x = np.arange(nx_t, dtype=np.float64)
    ntrace = max(2, int(round(500 * nx_t / (2.0 * NDX))))
    xc = 20 + np.arange(ntrace) * (nx_t - 40) / (ntrace - 1.0)
    prof = np.zeros(nx_t)
    for c in xc:
        lo, hi = int(c) - 5, int(c) + 6
        prof[lo:hi] += np.exp(-0.5 * ((x[lo:hi] - c) / 1.1) ** 2)
    spec = 40 + 25 * np.sin(y / 97.0) ** 2
    signal = 12.0 + spec * prof[None, :]
    exptime = 900.0
    # dark current 0.0015 e-/s with a 20 % pixel-to-pixel scatter (a constant dark would
    # make its clipped noise degenerate: MAD = 0), plus hot pixels
    dark_rate = (0.0015 * (1 + 0.2 * rng.standard_normal((ny_t, nx_t)))).astype(np.float32)
    nhot = max(4, int(400 * scale))
    hot = rng.integers(0, [ny_t, nx_t], size=(nhot, 2))
    dark_rate[hot[:, 0], hot[:, 1]] = rng.uniform(0.05, 0.5, nhot).astype(np.float32)
    pixflat = (1 + 0.01 * rng.standard_normal((ny_t, nx_t))).astype(np.float32)
    electrons = rng.poisson(signal + dark_rate * exptime).astype(np.float64) * pixflat
    # cosmic rays: single hits and short tracks
    for _ in range(max(10, int(3000 * scale))):
        yy, xx = rng.integers(2, ny_t - 12), rng.integers(2, nx_t - 12)
        n = rng.integers(1, 9)
        ang = rng.uniform(0, np.pi)
        for k in range(n):
            yk, xk = int(yy + k * np.sin(ang)), int(xx + k * np.cos(ang))
            electrons[yk, xk] += rng.uniform(400, 4000)
    mask = np.zeros((ny_t, nx_t), np.int32)
    col, r0, r1 = int(nx_t * 1500 / (2 * NDX)), int(ny_t * 1000 / (2 * NDY)), \
        int(ny_t * 1800 / (2 * NDY))
    mask[r0:r1, col] = 1
    # raw layout: [pre A][data A][ov A][ov B][data B][pre B], rows [A/B][orsec A/B][orsec C/D][C/D]
    nx_r = 2 * (NPRE + ndx + NOV)
    ny_r = 2 * (ndy + NOVR)
    hdr = {"CAMERA": camera, "DETECTOR": "SIM", "EXPID": 1234, "NIGHT": 20250101,
           "EXPTIME": exptime}
    raw = np.zeros((ny_r, nx_r))
    # fixed bias structure (the master bias sees it too, with its own small noise)
    struct = 0.3 * rng.standard_normal((ny_r, nx_r))
    bias = struct + 0.05 * rng.standard_normal((ny_r, nx_r))
    gains = {"A": 1.55, "B": 1.62, "C": 1.48, "D": 1.7}
    rdn = {"A": 3.1, "B": 2.9, "C": 3.3, "D": 3.0}
    off = {"A": 1012.3, "B": 987.6, "C": 1104.9, "D": 1050.2}
    for amp in "ABCD":
        top = amp in "CD"
        left = amp in "AC"
        y0 = ndy + 2 * NOVR if top else 0
        ry = slice(y0, y0 + ndy)
        orow = slice(ndy + NOVR, ndy + 2 * NOVR) if top else slice(ndy, ndy + NOVR)
        if left:
            pre, data, ov = (slice(0, NPRE), slice(NPRE, NPRE + ndx),
                             slice(NPRE + ndx, NPRE + ndx + NOV))
        else:
            ov = slice(nx_r // 2, nx_r // 2 + NOV)
            data = slice(ov.stop, ov.stop + ndx)
            pre = slice(data.stop, nx_r)
        cy = slice(ndy, 2 * ndy) if top else slice(0, ndy)
        cx = slice(0, ndx) if left else slice(ndx, 2 * ndx)
        g = gains[amp]
        full_rows = slice(min(ry.start, orow.start), max(ry.stop, orow.stop))
        raw[ry, data] = electrons[cy, cx] / g
        xs = slice(0, nx_r // 2) if left else slice(nx_r // 2, nx_r)
        raw[full_rows, xs] += off[amp] + struct[full_rows, xs] + \
            rng.normal(0, rdn[amp] / g, size=(full_rows.stop - full_rows.start, nx_r // 2))

        def sec(ys, xs_):
            return f"[{xs_.start + 1}:{xs_.stop},{ys.start + 1}:{ys.stop}]"

        hdr.update({f"PRESEC{amp}": sec(ry, pre), f"DATASEC{amp}": sec(ry, data),
                    f"BIASSEC{amp}": sec(ry, ov), f"ORSEC{amp}": sec(orow, data),
                    f"CCDSEC{amp}": sec(cy, cx), f"GAIN{amp}": g, f"RDNOISE{amp}": rdn[amp],
                    f"SATURLEV{amp}": 65000.0})
    raw = np.clip(np.round(raw), 0, 65535).astype(np.int32)
    prim = {"EXPID": 1234, "NIGHT": 20250101, "EXPTIME": exptime, "OBSTYPE": "SCIENCE"}
    calib = {"bias": bias, "dark": dark_rate, "pixflat": pixflat, "mask": mask}
    return raw, hdr, prim, calib


def load_simulated(rawfn: str, camera: str, calib_dir: str):
    """(raw, header, primary, calibrations) of one camera of a simulated raw file."""
    from gpuspec.io import read_raw
    from gpuspec.preproc.calib import read_calibration_file

    raw, hdr, prim = read_raw(rawfn, camera)
    calib = {}
    for name in ("bias", "dark", "pixflat", "mask"):
        fn = os.path.join(calib_dir, f"{name}-{camera}.fits")
        if os.path.exists(fn):
            calib[name] = read_calibration_file(fn, name)
    return raw, hdr, prim, calib


def _time(fn, xp, warmup: int, repeat: int) -> dict:
    """perf/protocol.py's measure (warm-up, synchronised runs, median and spread)."""
    return P.measure(fn, xp, warmup=warmup, repeat=repeat)


def write_inputs(folder: str, data) -> tuple:
    """Write the synthetic camera as desi-00001234.fits.fz and its calibration files."""
    import fitsio

    from gpuspec.io import write_raw

    raw, hdr, prim, calib = data
    rawfn = os.path.join(folder, "desi-00001234.fits.fz")
    write_raw(rawfn, {hdr["CAMERA"]: (raw, hdr)}, prim)
    cal = {}
    for name, arr in calib.items():
        fn = os.path.join(folder, f"{name}-{hdr['CAMERA']}.fits")
        fitsio.write(fn, arr.astype(np.int32 if name == "mask" else np.float32), clobber=True)
        cal[name] = fn
    return rawfn, cal


def cli_run(backend_name: str, folder: str, rawfn: str, outdir: str, camera: str) -> dict:
    """Time ``gpuspec preproc`` once on the files (calibrations in ``folder``)."""
    from gpuspec.cli import main as gmain
    from gpuspec.io import read_image

    out = os.path.join(outdir, f"preproc-{camera}-{backend_name}.fits")
    argv = ["preproc", "-i", rawfn, "--camera", camera, "-o", out, "--calib-dir", folder,
            "--backend", backend_name]
    t0 = time.perf_counter()
    rc = gmain(argv)
    dt = time.perf_counter() - t0
    img = read_image(out)
    return {"seconds": dt, "rc": rc, "command": " ".join(["gpuspec"] + argv),
            "output_shape": list(img.pix.shape),
            "cosmic_pixels": int(np.sum((img.mask & 16) != 0))}


def bench(backend_name: str, warmup: int, repeat: int, data, files=None,
          data_source: str = "synthetic (perf/bench_preproc.py)") -> dict:
    xp = backend.get_xp(backend_name)
    load_before = list(os.getloadavg())
    raw, hdr, prim, calib = data
    cal_dev = {k: backend.to_device(v, xp) for k, v in calib.items()}
    npix = int(np.prod(calib["pixflat"].shape)) if "pixflat" in calib else 2 * NDY * 2 * NDX

    def full():
        return preproc(raw, hdr, prim, backend=backend_name, **cal_dev)

    def nocosmic():
        return preproc(raw, hdr, prim, backend=backend_name, cosmics=False, **cal_dev)

    img = nocosmic()

    def cosmics():
        return reject_cosmic_rays(img.pix, img.ivar, img.mask, img.camera)

    res = {}
    for name, fn in (("preproc_full", full), ("preproc_nocosmic", nocosmic),
                     ("cosmics", cosmics)):
        r = _time(fn, xp, warmup, repeat)
        r["mpix_per_s"] = npix / r["median_s"] / 1e6
        res[name] = r
        print(f"{backend_name:6s} {name:18s} median {r['median_s']:.3f} s "
              f"({r['mpix_per_s']:.1f} Mpix/s)", flush=True)
    ncos = int(backend.to_host(cosmics()).sum())
    if files is not None:
        res["cli_file"] = cli_run(backend_name, *files, camera=hdr["CAMERA"])
        print(f"{backend_name:6s} cli_file           {res['cli_file']['seconds']:.3f} s "
              "(read + preproc + write, one run)", flush=True)
    return {
        "benchmark": "preproc",
        "backend": backend_name,
        "device": backend.device_name(xp),
        "machine": P.machine(),
        "versions": P.versions(xp),
        "git_commit": P.git_commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "image": {"raw_shape": list(raw.shape), "trimmed_shape": list(img.pix.shape),
                  "cosmic_pixels_flagged": ncos, "source": data_source},
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
        "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",
                                                       "OPENBLAS_NUM_THREADS")},
        "timings": res,
    }


def _desispec_preproc():
    """desispec's preproc (logging at WARNING), or None when desispec is not installed."""
    try:
        import logging

        import desispec.preproc as dp
        from desiutil.log import get_logger
    except ImportError:
        return None
    get_logger().setLevel(logging.WARNING)
    return dp.preproc


def _compare(gimg, dimg) -> dict:
    """Largest differences between the gpuspec and desispec outputs (numpy arrays)."""
    from gpuspec.maskbits import ccdmask

    g = {k: backend.to_host(getattr(gimg, k)) for k in ("pix", "ivar", "readnoise", "mask")}
    d = {"pix": dimg.pix, "ivar": dimg.ivar, "readnoise": dimg.readnoise, "mask": dimg.mask}
    out = {}
    for k in ("pix", "ivar", "readnoise"):
        diff = np.abs(g[k] - d[k])
        out[f"{k}_max_abs"] = float(diff.max())
        out[f"{k}_max_rel"] = float((diff / np.maximum(np.abs(d[k]), 1e-30)).max())
    out["mask_identical_fraction"] = float(np.mean(g["mask"] == d["mask"]))
    bit = ccdmask.COSMIC
    out["cosmic_pixels_gpuspec"] = int(np.count_nonzero(g["mask"] & bit))
    out["cosmic_pixels_desispec"] = int(np.count_nonzero(d["mask"] & bit))
    return out


def vs_desispec(rounds: int = 5, cosmics: bool = True, seed: int = 42) -> list:
    """gpuspec vs desispec preproc, interleaved in this process: protocol records."""
    import tempfile

    desi = _desispec_preproc()
    if desi is None:
        print("vs-desispec: desispec is not installed (pip install -e '.[interop]'); skipped")
        return []
    data = synth_camera(seed=seed)
    raw, hdr, prim, _ = data
    tmp = tempfile.TemporaryDirectory(prefix="bench_preproc_vs_")
    _, cal = write_inputs(tmp.name, data)

    def run_g():
        return preproc(raw, hdr, prim, backend="numpy", cosmics=cosmics, **cal)

    def run_d():
        return desi(raw, dict(hdr), dict(prim), nocosmic=not cosmics,
                    ccd_calibration_filename=False, no_ccd_region_mask=True,
                    no_cte_corr=True, **cal)

    meters = {"gpuspec": [], "desispec": []}
    la0 = P.loadavg()
    # warm-up of each (numba JIT, caches); their outputs are the ones compared, then
    # freed, so every timed call starts from the same memory state
    cmp = _compare(run_g(), run_d())
    for i in range(rounds):
        order = ("desispec", "gpuspec") if i % 2 == 0 else ("gpuspec", "desispec")
        for who in order:
            with P.Meter() as m:
                out = (run_d if who == "desispec" else run_g)()
            del out
            meters[who].append(m.result)
            r = m.result
            print(f"round {i} {who:8s} wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  "
                  f"sys {r['sys_s']:5.2f} s  faults {r['minflt']:7d}  peak RSS "
                  f"{r['peak_rss_mb']:7.0f} MB (before {r['rss_before_mb']:.0f})", flush=True)
    la1 = P.loadavg()
    tg = P.stats([m["wall_s"] for m in meters["gpuspec"]])
    tg.update(warmup=1, repeat=rounds, **P.meter_summary(meters["gpuspec"]))
    dsum = P.meter_summary(meters["desispec"])
    dwall = P.stats([m["wall_s"] for m in meters["desispec"]])
    ratio_cpu = dsum["cpu_median_s"] / tg["cpu_median_s"]
    ratios = [d["cpu_s"] / g["cpu_s"] for d, g in zip(meters["desispec"], meters["gpuspec"])]
    ref = {"name": "desispec 0.70 preproc", "call": "desispec.preproc.preproc",
           "key": "same run, CPU s (process time)", "seconds": dsum["cpu_median_s"],
           "wall_median_s": dwall["median_s"], "wall_runs_s": dwall["runs_s"],
           "cpu_runs_s": dsum["cpu_s"], "sys_median_s": dsum["sys_median_s"],
           "minflt_median": dsum["minflt_median"], "peak_rss_mb": dsum["peak_rss_mb"],
           "rss_before_mb": dsum["rss_before_mb"],
           "ratio": ratio_cpu, "ratio_per_round": ratios,
           "ratio_wall": dwall["median_s"] / tg["median_s"],
           "measured_on": "this machine, this process, interleaved rounds, "
                          f"{P.threads_label()} thread(s)"}
    case = "fullccd_vs_desispec" + ("" if cosmics else "_nocosmic")
    rec = P.record("preproc", case, size="full", backend_name="numpy", timing=tg,
                   loadavg_before=la0, reference=ref,
                   sizes={"raw_shape": list(raw.shape), "image_shape": [2 * NDY, 2 * NDX]},
                   extra={"source": "synthetic camera of perf/bench_preproc.py, calibration "
                                    "files read inside each call",
                          "cosmics": cosmics, "outputs_compared": cmp,
                          "peak_rss_ratio_desispec_over_gpuspec":
                              dsum["peak_rss_mb"] / tg["peak_rss_mb"],
                          "loadavg_after_all": la1})
    print(f"{case}: desispec/gpuspec CPU time x{ratio_cpu:.2f} (rounds: "
          + ", ".join(f"{r:.2f}" for r in ratios) + f"); wall x{ref['ratio_wall']:.2f}; "
          f"peak RSS gpuspec {tg['peak_rss_mb']:.0f} MB, desispec {dsum['peak_rss_mb']:.0f} MB",
          flush=True)
    print("outputs:", json.dumps(cmp), flush=True)
    return [rec]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=None,
                   help="comma list (default: numpy, plus cupy when usable)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--outdir", default=os.path.join(HERE, "results"))
    p.add_argument("--no-cli", action="store_true",
                   help="skip the file-level gpuspec preproc run")
    p.add_argument("--raw", default=None, help="simulated raw file to use instead")
    p.add_argument("--camera", default="r0", help="camera of --raw")
    p.add_argument("--calib-dir", default=None, help="calibrations of --raw")
    p.add_argument("--vs-desispec", action="store_true",
                   help="side by side with desispec.preproc.preproc (records to --outdir)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (--vs-desispec)")
    p.add_argument("--nocosmic", action="store_true", help="--vs-desispec without cosmics")
    args = p.parse_args(argv)
    if args.vs_desispec:
        # glibc's default heap (not gpuspec.heap's keep policy): the side by side compares
        # each call's own peak RSS, which memory kept from the other library's call would
        # hide; a one-camera `gpuspec preproc` process gains nothing from keeping either
        recs = vs_desispec(args.rounds, cosmics=not args.nocosmic)
        if recs:
            host = P.machine()["host"]
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            fn = os.path.join(args.outdir, f"{host}-{stamp}-preproc.jsonl")
            P.append(fn, recs)
            print("wrote", fn)
        return 0
    names = args.backends.split(",") if args.backends else \
        ["numpy"] + (["cupy"] if backend.resolve("auto") == "cupy" else [])
    if args.raw:
        data = load_simulated(args.raw, args.camera, args.calib_dir or ".")
        source = f"simulated: {args.raw} camera {args.camera}"
    else:
        data = synth_camera()
        source = "synthetic (perf/bench_preproc.py)"
    os.makedirs(args.outdir, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="bench_preproc_")
    files = None
    if not args.no_cli:
        if args.raw:
            files = (args.calib_dir or ".", args.raw, tmp.name)
        else:
            rawfn, _ = write_inputs(tmp.name, data)
            files = (tmp.name, rawfn, tmp.name)
    for name in names:
        out = bench(name, args.warmup, args.repeat, data, files, data_source=source)
        tag = "-sim" if args.raw else ""
        fn = os.path.join(args.outdir, f"preproc-{host}-{name}{tag}.json")
        with open(fn, "w") as f:
            json.dump(out, f, indent=1)
        print("wrote", fn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
