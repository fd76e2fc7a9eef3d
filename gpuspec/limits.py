"""Limits on sizes that gpuspec derives from small inputs (one home for each value).

A few bytes of input can ask for an unbounded amount of work or memory: a
wavelength step of 1e-9 Å, ``nbundles: 1000000000``, a YAML alias bomb, a
tile-compressed HDU whose header claims 10¹² pixels. Every such size is checked
against the limit here *before* anything is allocated, and a size over it is a
:class:`gpuspec.errors.LimitError` (or :class:`~gpuspec.errors.UsageError` for a
command-line option) naming the input, the size and the limit. The values are
generous (several times what DESI data need) and documented in
docs/reliability.md; sizes of data actually present in a file (rows of a table,
pixels of an uncompressed image) are bounded by the file itself and not limited.

Host only (plain Python).
"""

from __future__ import annotations

__all__ = ["MAX_NWAVE", "MAX_IMAGE_PIXELS", "MAX_FIBERS_PER_CAMERA", "MAX_PSF_HALFSIZE",
           "MAX_PSF_GHDEG", "MAX_PSF_LEGDEG", "MAX_MANIFEST_BYTES", "MAX_YAML_NODES",
           "MAX_YAML_DEPTH", "MAX_PROCESSES", "MAX_THREADS", "MAX_NSIDE", "MAX_ZGRID", "check_size"]

#: Wavelengths of one grid (extraction ``-w``, coadd ``--lin-step``); a DESI arm at
#: 0.8 Å has ~2,900, the whole 3600–9824 Å range at 0.1 Å 62,240.
MAX_NWAVE = 100_000
#: Pixels of one image HDU (a DESI CCD has 4194 × 4256 ≈ 17.8 million).
MAX_IMAGE_PIXELS = 2 ** 27
#: Fibers of one camera (a DESI petal has 500): bounds nbundles × fibers_per_bundle.
MAX_FIBERS_PER_CAMERA = 500
#: PSF stamp half-sizes HSIZEX/HSIZEY (DESI: 8 and 5).
MAX_PSF_HALFSIZE = 64
#: Gauss–Hermite degrees GHDEGX/GHDEGY (DESI: 6 and 6).
MAX_PSF_GHDEG = 32
#: Legendre coefficients per trace or parameter (DESI: 7 and 4).
MAX_PSF_LEGDEG = 64
#: Size of a manifest file.
MAX_MANIFEST_BYTES = 16 * 2 ** 20
#: Nodes of a manifest once YAML aliases are expanded (a night of 50 exposures × 30
#: cameras written out in full is ~20,000).
MAX_YAML_NODES = 1_000_000
#: Nesting depth of a manifest (the schema needs 6).
MAX_YAML_DEPTH = 64
#: Worker processes of one command (``extract --nproc``).
MAX_PROCESSES = 1024
#: CPU threads per process (``--threads``).
MAX_THREADS = 1024
#: Largest HEALPix nside (healpy: below 2**30).
MAX_NSIDE = 2 ** 29
#: Redshifts of the fit-stdstars scan (desispec's defaults: ~800; ``z_res`` 1e-9 would
#: ask for 10⁵ times more).
MAX_ZGRID = 100_000


def check_size(n, limit: int, what: str, where: str | None = None, *, error=None) -> int:
    """Return ``int(n)``; raise when it is over ``limit``.

    Parameters
    ----------
    n : int or float
        The size (a float such as ``(wmax - wmin) / dw`` is accepted; NaN is over).
    limit : int
    what : str
        What is counted (``"wavelengths"``).
    where : str, optional
        What asked for it (``"-w 6520,6560,1e-07"``, a file or key).
    error : exception class, optional
        Default :class:`gpuspec.errors.LimitError`.

    Backends: host only.
    """
    from .errors import LimitError

    err = error or LimitError
    ok = n == n and n <= limit  # NaN fails
    if not ok:
        shown = f"{n:.4g}" if isinstance(n, float) else f"{n}"
        head = f"{where}: " if where else ""
        raise err(f"{head}{shown} {what} requested; the limit is {limit:,} "
                  "(docs/reliability.md)")
    return int(n)
