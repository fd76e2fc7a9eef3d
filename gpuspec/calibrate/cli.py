"""Calibration subcommands of ``gpuspec`` (desispec's script and option names).

========================  ===================================  ==========================
gpuspec subcommand        desispec script                      output
========================  ===================================  ==========================
``compute-fiberflat``     ``desi_compute_fiberflat``           fiberflat-{cam}-{EXPID}
``average-fiberflat``     ``desi_average_fiberflat``           one averaged fiber flat
``autocalib-fiberflat``   ``desi_autocalib_fiberflat``         fiberflatnight per spectro
``compute-sky``           ``desi_compute_sky``                 sky-{cam}-{EXPID}
``fit-stdstars``          ``desi_fit_stdstars``                stdstars-{SP}-{EXPID}
``compute-fluxcalib``     ``desi_compute_fluxcalibration``     fluxcalib-{cam}-{EXPID}
``process-exposure``      ``desi_process_exposure``            cframe-{cam}-{EXPID}
(``apply-calib``)
``stdstar-templates``     (none)                               gpuspec's template library
========================  ===================================  ==========================
"""

from __future__ import annotations

import argparse

from ..cli import float_range, int_range
from ..errors import UsageError

__all__ = ["add_parser", "check_fiberflat_options", "check_sky_options",
           "check_stdstars_options", "check_fluxcalib_options", "check_cframe_options"]

_POS = float_range(0, lo_open=True)   # a finite number > 0
_NONNEG = float_range(0)              # a finite number >= 0
_NUM = float_range()                  # any finite number


def _backend(p):
    p.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                   help="array backend (default auto)")


def _ids(text):
    if text is None:
        return None
    try:
        return [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"expected comma-separated TARGETIDs (integers), got {text!r}") \
            from None


def _fiberflat(sub):
    p = sub.add_parser("compute-fiberflat", help="fiber flat from a continuum-lamp frame",
                       description="Compute the fiber flat field correction from a DESI "
                                   "continuum lamp frame (desi_compute_fiberflat).")
    p.add_argument("-i", "--infile", required=True, help="flat-lamp frame file")
    p.add_argument("-o", "--outfile", required=True, help="output fiberflat file")
    p.add_argument("--nsig", type=_POS, default=10, help="nsigma clipping (10)")
    p.add_argument("--acc", type=_POS, default=5.0e-4,
                   help="required accuracy (iterative loop, 5e-4)")
    p.add_argument("--smoothing-resolution", type=_POS, default=5.0,
                   help="resolution (A) of the spline fit that rejects outliers (5)")
    p.add_argument("--cosmics-nsig", type=_NONNEG, default=0,
                   help="n sigma rejection for cosmics in 1D (0; only 0 is supported)")
    _backend(p)

    def run(a):
        from .files import compute_fiberflat_file

        compute_fiberflat_file(a.infile, a.outfile, nsig=a.nsig, acc=a.acc,
                               smoothing_resolution=a.smoothing_resolution,
                               cosmics_nsig=a.cosmics_nsig, backend=a.backend)
        print(f"wrote {a.outfile}")
        return 0

    p.set_defaults(func=run)


def _average(sub):
    p = sub.add_parser("average-fiberflat", help="average fiber flats of one camera",
                       description="Average fiber flats (desi_average_fiberflat).")
    p.add_argument("-i", "--infile", nargs="+", required=True, help="fiberflat files")
    p.add_argument("-o", "--outfile", required=True, help="output fiberflat file")
    p.add_argument("--program", default=None, help="only inputs with this PROGRAM keyword")
    _backend(p)

    def run(a):
        from .files import average_fiberflat_file

        print(f"wrote {average_fiberflat_file(a.infile, a.outfile, a.program, a.backend)}")
        return 0

    p.set_defaults(func=run)


def _autocalib(sub):
    p = sub.add_parser("autocalib-fiberflat", help="night fiber flats from several lamps",
                       description="Merge fiber flats of all spectrographs and lamps "
                                   "(desi_autocalib_fiberflat).")
    p.add_argument("-i", "--infile", nargs="+", required=True, help="fiberflat files")
    p.add_argument("--prefix", default=None,
                   help="output prefix (files PREFIX{spectrograph}-autocal.fits)")
    p.add_argument("--night", default=None, help="night (with --arm: fiberflatnight names)")
    p.add_argument("--arm", default=None, help="b, r or z")
    p.add_argument("--outdir", default=".", help="folder of the fiberflatnight files (.)")
    _backend(p)

    def run(a):
        from .files import autocalib_fiberflat_file

        for f in autocalib_fiberflat_file(a.infile, a.prefix, a.night, a.arm, a.outdir,
                                          a.backend):
            print(f"wrote {f}")
        return 0

    p.set_defaults(func=run)


def _sky(sub):
    p = sub.add_parser("compute-sky", help="sky model of a frame",
                       description="Compute the sky model (desi_compute_sky; default method).")
    p.add_argument("-i", "--infile", required=True, help="frame file")
    p.add_argument("--fiberflat", required=True, help="fiberflat file")
    p.add_argument("-o", "--outfile", required=True, help="output sky file")
    p.add_argument("--cosmics-nsig", type=_NONNEG, default=0,
                   help="n sigma rejection for cosmics in 1D (0; only 0 is supported)")
    p.add_argument("--no-extra-variance", action="store_true",
                   help="do not increase sky model variance based on chi2 on sky lines")
    for opt in ("--adjust-wavelength", "--adjust-lsf", "--adjust-with-more-fibers",
                "--fit-offsets"):
        p.add_argument(opt, action="store_true", help="not implemented (error if given)")
    for opt in ("--save-adjustments", "--pca-corr", "--skygradpca", "--tpcorrparam"):
        p.add_argument(opt, default=None, help="not implemented (error if given)")
    p.add_argument("--exclude-sky-targetids", default=None,
                   help="TARGETIDs to exclude from the sky fibers (comma separated)")
    p.add_argument("--override-sky-targetids", default=None,
                   help="TARGETIDs to use as sky fibers instead of OBJTYPE (comma separated)")
    _backend(p)

    def run(a):
        from .files import compute_sky_file

        compute_sky_file(a.infile, a.fiberflat, a.outfile, cosmics_nsig=a.cosmics_nsig,
                         no_extra_variance=a.no_extra_variance,
                         exclude_sky_targetids=_ids(a.exclude_sky_targetids),
                         override_sky_targetids=_ids(a.override_sky_targetids),
                         backend=a.backend, adjust_wavelength=a.adjust_wavelength,
                         adjust_lsf=a.adjust_lsf,
                         adjust_with_more_fibers=a.adjust_with_more_fibers,
                         fit_offsets=a.fit_offsets, save_adjustments=a.save_adjustments,
                         pca_corr=a.pca_corr, skygradpca=a.skygradpca,
                         tpcorrparam=a.tpcorrparam)
        print(f"wrote {a.outfile}")
        return 0

    p.set_defaults(func=run)


def _stdstars(sub):
    p = sub.add_parser("fit-stdstars", help="fit the standard stars of an exposure",
                       description="Fit of standard star spectra in frames "
                                   "(desi_fit_stdstars; gpuspec's template fit).")
    p.add_argument("--frames", nargs="+", required=True,
                   help="frame files (same exposure and spectrograph)")
    p.add_argument("--skymodels", nargs="+", required=True, help="sky files")
    p.add_argument("--fiberflats", nargs="+", required=True, help="fiberflat files")
    p.add_argument("--starmodels", default=None,
                   help="stellar template file (desispec layout; default gpuspec's library)")
    p.add_argument("-o", "--outfile", required=True, help="output stdstars file")
    p.add_argument("--ncpu", type=int_range(1, 1024), default=1,
                   help="accepted for compatibility (unused)")
    p.add_argument("--delta-color", type=_POS, default=0.2,
                   help="max delta-color for the selection of standard stars (0.2)")
    p.add_argument("--min-blue-snr", type=_NONNEG, default=4.0,
                   help="minimum S/N per sqrt(A) in the blue camera (4)")
    p.add_argument("--color", default=None, choices=["G-R"], help="selection colour (G-R)")
    p.add_argument("--z-max", type=float_range(0, 1), default=0.008, help="max |z| scanned (0.008)")
    p.add_argument("--z-res", type=_POS, default=0.00002, help="dz grid resolution (2e-5)")
    p.add_argument("--template-error", type=_NONNEG, default=0.1,
                   help="fractional template error in the chi2 (0.1)")
    p.add_argument("--maxstdstars", type=int_range(1, 5000), default=30,
                   help="max number of stars (30)")
    p.add_argument("--std-targetids", type=int, nargs="*", default=None,
                   help="TARGETIDs of standards overriding the targeting bits")
    p.add_argument("--apply-sky-throughput-correction", action="store_true",
                   help="apply the sky throughput correction to the whole sky")
    _backend(p)

    def run(a):
        from .files import fit_stdstars_file

        from ..limits import MAX_ZGRID
        from .stdstars import redshift_grid_size

        n = redshift_grid_size(a.z_max, a.z_res)
        if not n <= MAX_ZGRID:
            raise UsageError(f"--z-max {a.z_max:g} / --z-res {a.z_res:g} asks for "
                             f"{n:.4g} redshifts; the limit is {MAX_ZGRID:,} "
                             "(docs/reliability.md)")

        fit_stdstars_file(a.frames, a.skymodels, a.fiberflats, a.outfile,
                          starmodels=a.starmodels, delta_color=a.delta_color,
                          min_blue_snr=a.min_blue_snr, color=a.color, z_max=a.z_max,
                          z_res=a.z_res, template_error=a.template_error,
                          maxstdstars=a.maxstdstars, std_targetids=a.std_targetids,
                          apply_sky_throughput_correction=a.apply_sky_throughput_correction,
                          backend=a.backend)
        print(f"wrote {a.outfile}")
        return 0

    p.set_defaults(func=run)


def _fluxcalib(sub):
    p = sub.add_parser("compute-fluxcalib", help="flux calibration of a frame",
                       description="Compute the flux calibration of a frame from standard "
                                   "star models (desi_compute_fluxcalibration).")
    p.add_argument("-i", "--infile", required=True, help="frame file")
    p.add_argument("--fiberflat", required=True, help="fiberflat file")
    p.add_argument("--sky", required=True, help="sky file")
    p.add_argument("--models", required=True, help="stdstars file")
    p.add_argument("--selected-calibration-stars", default=None,
                   help="table with FIBER and VALID of pre-selected stars")
    p.add_argument("--chi2cut", type=_NONNEG, default=0.0, help="reduced chi2 cut (0: none)")
    p.add_argument("--chi2cut-nsig", type=_NONNEG, default=0.0,
                   help="discard n-sigma outliers of the reduced chi2 (0: none)")
    p.add_argument("--color", default=None, help="colour of the cuts (G-R)")
    p.add_argument("--min-color", type=_NUM, default=None, help="minimum colour")
    p.add_argument("--delta-color-cut", type=_POS, default=0.2,
                   help="max |model - imaging| colour (0.2)")
    p.add_argument("--nostdcheck", action="store_true",
                   help="do not check the model stars against the fibermap flags")
    p.add_argument("-o", "--outfile", required=True, help="output fluxcalib file")
    p.add_argument("--highest-throughput", type=int_range(0, 5000), default=0,
                   help="normalise on this many highest-throughput stars (0)")
    p.add_argument("--seeing-fwhm", type=_POS, default=1.1, help="seeing FWHM, arcsec")
    p.add_argument("--nsig-flux-scale", type=_POS, default=3,
                   help="n sigma cutoff of the flux scale among standard stars (3)")
    p.add_argument("--apply-sky-throughput-correction", action="store_true",
                   help="apply the sky throughput correction to the whole sky")
    _backend(p)

    def run(a):
        from .files import compute_fluxcalib_file

        compute_fluxcalib_file(a.infile, a.fiberflat, a.sky, a.models, a.outfile,
                               chi2cut=a.chi2cut, chi2cut_nsig=a.chi2cut_nsig, color=a.color,
                               min_color=a.min_color, delta_color_cut=a.delta_color_cut,
                               nostdcheck=a.nostdcheck, highest_throughput=a.highest_throughput,
                               seeing_fwhm=a.seeing_fwhm, nsig_flux_scale=a.nsig_flux_scale,
                               apply_sky_throughput_correction=(
                                   a.apply_sky_throughput_correction),
                               selected_calibration_stars=a.selected_calibration_stars,
                               backend=a.backend)
        print(f"wrote {a.outfile}")
        return 0

    p.set_defaults(func=run)


def _procexp(sub):
    p = sub.add_parser("process-exposure", aliases=["apply-calib"],
                       help="apply fiberflat, sky and calibration (cframes)",
                       description="Apply fiberflat, sky subtraction and calibration "
                                   "(desi_process_exposure).")
    p.add_argument("-i", "--infile", required=True, help="frame file")
    p.add_argument("--fiberflat", default=None, help="fiberflat file")
    p.add_argument("--sky", default=None, help="sky file")
    p.add_argument("--calib", default=None, help="fluxcalib file")
    p.add_argument("-o", "--outfile", required=True, help="output (c)frame file")
    p.add_argument("--cosmics-nsig", type=_NONNEG, default=0,
                   help="n sigma rejection for cosmics in 1D (0; only 0 is supported)")
    p.add_argument("--apply-sky-throughput-correction", action="store_true",
                   help="apply a throughput correction to the whole sky spectrum")
    p.add_argument("--no-sky-line-throughput-correction", action="store_true",
                   help="no throughput correction of the sky lines either")
    p.add_argument("--no-zero-ivar", action="store_true",
                   help="do NOT set ivar=0 for masked pixels")
    p.add_argument("--no-tsnr", action="store_true", help="accepted (TSNR is not computed)")
    p.add_argument("--no-xtalk", action="store_true",
                   help="accepted (the cross-talk correction is not implemented)")
    p.add_argument("--alpha_only", action="store_true", help="accepted (no TSNR)")
    _backend(p)

    def run(a):
        from .files import process_exposure_file

        process_exposure_file(a.infile, a.outfile, fiberflat=a.fiberflat, sky=a.sky,
                              calib=a.calib, cosmics_nsig=a.cosmics_nsig,
                              apply_sky_throughput_correction=a.apply_sky_throughput_correction,
                              no_sky_line_throughput_correction=(
                                  a.no_sky_line_throughput_correction),
                              no_zero_ivar=a.no_zero_ivar, backend=a.backend)
        print(f"wrote {a.outfile}")
        return 0

    p.set_defaults(func=run)


def _templates(sub):
    p = sub.add_parser("stdstar-templates", help="write gpuspec's stellar template library",
                       description="Write the synthetic Teff/logg/[Fe/H] template library in "
                                   "desispec's stdstar_templates layout.")
    p.add_argument("-o", "--outfile", required=True, help="output FITS file")

    def run(a):
        from .templates import write_templates

        print(f"wrote {write_templates(a.outfile)}")
        return 0

    p.set_defaults(func=run)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add every calibration subcommand; returns the last parser added.

    Backends: host only (argparse).
    """
    for make in (_fiberflat, _average, _autocalib, _sky, _stdstars, _fluxcalib, _procexp,
                 _templates):
        make(subparsers)
    return subparsers


# --------------------------------------------------------------------------- manifest checks

#: Options of compute-sky that are named (desispec's) but not implemented.
_SKY_UNSUPPORTED = ("adjust_wavelength", "adjust_lsf", "adjust_with_more_fibers", "fit_offsets",
                    "save_adjustments", "pca_corr", "skygradpca", "tpcorrparam")


def _check_options(command: str, options: dict) -> None:
    """Check step options of a manifest with the ranges of the CLI ``command`` (one home).

    Each option whose CLI flag has a ``type`` (a range) or ``choices`` is parsed as the
    command line would parse it; options that are named but not implemented, and
    ``cosmics_nsig > 0``, are refused; fit-stdstars' redshift scan is bounded. Raises
    ValueError naming the option (``gpuspec-run --check`` reports it with its line).
    Host only.
    """
    from ..limits import MAX_ZGRID
    from .stdstars import redshift_grid_size

    parser = argparse.ArgumentParser(prog="gpuspec")
    sub = parser.add_subparsers()
    add_parser(sub)
    p = sub.choices[command]
    actions = {a.dest: a for a in p._actions}
    for k, v in options.items():
        a = actions.get(k)
        if a is None or v is None or isinstance(v, bool):
            continue
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            try:
                got = a.type(str(x)) if callable(a.type) else x
            except (argparse.ArgumentTypeError, ValueError, TypeError, UsageError) as exc:
                raise ValueError(f"{k}: {exc}") from None
            if a.choices is not None and got not in a.choices:
                raise ValueError(f"{k}: {x!r} is not one of {list(a.choices)}")
    for k in _SKY_UNSUPPORTED if command == "compute-sky" else ():
        if options.get(k):
            raise ValueError(f"{k}: not implemented in gpuspec (only its default is)")
    if float(options.get("cosmics_nsig") or 0) > 0:
        raise ValueError("cosmics_nsig: 1-D cosmic-ray rejection is not implemented (use 0)")
    if command == "fit-stdstars":
        z_max = options.get("z_max", p.get_default("z_max"))
        z_res = options.get("z_res", p.get_default("z_res"))
        n = redshift_grid_size(z_max, z_res)
        if not n <= MAX_ZGRID:
            raise ValueError(f"z_res: z_max={z_max} and z_res={z_res} ask for {n:.4g} "
                             f"redshifts; the limit is {MAX_ZGRID:,} (docs/reliability.md)")


def check_fiberflat_options(**options) -> None:
    """Manifest check of the fiberflat step's options (compute-fiberflat's ranges).

    Backends: host only (argparse).
    """
    _check_options("compute-fiberflat", options)


def check_sky_options(**options) -> None:
    """Manifest check of the sky step's options (compute-sky's ranges).

    Backends: host only (argparse).
    """
    _check_options("compute-sky", options)


def check_stdstars_options(**options) -> None:
    """Manifest check of the stdstars step's options (fit-stdstars' ranges, z scan).

    Backends: host only (argparse).
    """
    _check_options("fit-stdstars", options)


def check_fluxcalib_options(**options) -> None:
    """Manifest check of the fluxcalib step's options (compute-fluxcalib's ranges).

    Backends: host only (argparse).
    """
    _check_options("compute-fluxcalib", options)


def check_cframe_options(**options) -> None:
    """Manifest check of the cframe step's options (process-exposure's ranges).

    Backends: host only (argparse).
    """
    _check_options("process-exposure", options)
