"""Which product a FITS file holds, for ``gpuspec qa``.

The kinds of the steps gpuspec writes come from :func:`gpuspec.io.cli.detect_kind`
(the one home of that rule, also used by ``gpuspec info``); this module adds the
calibration products in desispec's layouts (fiber flats, sky models, flux
calibrations, whose primary HDU is named FIBERFLAT, SKY or FLUXCALIB) and tells
flux-calibrated frames (cframes: BUNIT in erg) from frames in electrons.
"""

from __future__ import annotations

import os

from ..errors import InputError

__all__ = ["QA_KINDS", "detect_product", "ProductInfo"]

#: the kinds ``gpuspec qa`` draws
QA_KINDS = ("preproc", "frame", "cframe", "spectra", "coadd", "fiberflat", "sky", "fluxcalib")

# desispec calibration products: primary EXTNAME -> (kind, HDUs required beside it)
_CALIB = {
    "FIBERFLAT": ("fiberflat", ("IVAR", "MASK", "MEANSPEC", "WAVELENGTH")),
    "SKY": ("sky", ("IVAR", "MASK", "WAVELENGTH")),
    "FLUXCALIB": ("fluxcalib", ("IVAR", "MASK", "WAVELENGTH")),
}


class ProductInfo(dict):
    """``kind``, ``path``, ``hdus`` (EXTNAMEs) and ``header`` (primary or main HDU) of a file."""


def detect_product(path: str) -> ProductInfo:
    """Open ``path`` (read-only) and tell which product it holds.

    Returns
    -------
    ProductInfo
        ``kind`` is one of :data:`QA_KINDS` or what :func:`gpuspec.io.cli.detect_kind`
        says for other files (``raw``, ``psf``, ``fibermap``, ``calib``, ``unknown``).

    Raises
    ------
    MissingFileError, InputError
        Missing, unreadable or truncated file, or a calibration product that
        lacks one of its HDUs (named in the message).

    Backends: host only (file I/O).
    """
    from ..io.cli import detect_kind
    from ..io.util import hdu_names, header_dict, open_fits

    path = os.fspath(path)
    with open_fits(path) as fx:
        names = hdu_names(fx)
        try:
            headers = [header_dict(fx[i].read_header()) for i in range(len(fx))]
        except Exception as exc:
            raise InputError(f"cannot read headers ({str(exc).splitlines()[0]})",
                             path=path) from exc
    first = names[0] if names else ""
    if first in _CALIB:
        kind, need = _CALIB[first]
        missing = [n for n in need if n not in names]
        if missing:
            raise InputError(f"{kind} file without HDU(s) {', '.join(missing)} "
                             f"(desispec layout: {first}, {', '.join(need)})", path=path)
        return ProductInfo(kind=kind, path=path, hdus=names, header=headers[0])
    kind = detect_kind(names, headers)
    header = headers[0]
    if kind == "frame":
        header = headers[names.index("FLUX")]
        unit = str(header.get("BUNIT", "")).lower()
        if "erg" in unit or os.path.basename(path).startswith("cframe-"):
            kind = "cframe"
    elif kind == "preproc":
        header = headers[names.index("IMAGE")]
    return ProductInfo(kind=kind, path=path, hdus=names, header=header)
