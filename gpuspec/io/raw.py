"""Raw DESI exposures: ``desi-{EXPID:08d}.fits[.fz]``, one image HDU per camera.

Layout of real DESI raw files (see ``docs/io.md``), which :func:`write_raw` writes:

- HDU 0: empty primary HDU;
- HDU 1 ``SPEC``: header only, the exposure keywords (EXPID, NIGHT, EXPTIME,
  OBSTYPE, DATE-OBS, TILEID, ...). desispec's ``read_raw`` takes the first HDU
  that holds EXPTIME as the "primary" header and inserts a card before its
  EXTNAME, so EXPTIME must not be in HDU 0;
- one integer (ADU) image HDU per camera, EXTNAME ``B0`` … ``Z9``, usually
  RICE tile-compressed in ``.fz`` files. Its header carries ``CAMERA`` and, per
  amplifier x (``A``–``D``, or ``1``–``4`` in old files; some nights use only two),
  ``BIASSECx``, ``DATASECx``, ``CCDSECx``, ``GAINx`` and optionally ``PRESECx``,
  ``ORSECx``, ``SATURLEVx``, ``RDNOISEx``.

Every reader validates the header and raises :mod:`gpuspec.errors` exceptions
that name the file, the HDU and the keyword at fault. All functions here are
host-side (NumPy); the images they return go to a device with
:func:`gpuspec.backend.to_device`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

import fitsio
import numpy as np

from ..backend import native, to_host
from ..errors import BadDataError, BadSectionError, InputError, MissingHDUError, \
    MissingKeywordError
from ..profiling import nvtx_range
from .util import atomic_output, check_image_size, hdu_names, header_dict, header_float, \
    header_records, open_fits, parse_sec, require_keyword, write_checksums

__all__ = ["read_raw", "write_raw", "find_cameras", "validate_raw_header", "raw_layout",
           "RawLayout", "amp_ids", "trimmed_shape", "normalize_camera"]

_CAMERA_RE = re.compile(r"^[brz][0-9]$")
_AMP_KEY_RE = re.compile(r"^(BIASSEC|DATASEC|CCDSEC)([A-D1-4])$")


def normalize_camera(camera: str, path: str | None = None) -> str:
    """Lower-case camera name (``'B0'`` → ``'b0'``), checked against ``[brz][0-9]``.

    Backends: host only (NumPy).
    """
    if not isinstance(camera, str) or not _CAMERA_RE.match(camera.strip().lower()):
        raise InputError(f"invalid camera name {camera!r}; expected b0…b9, r0…r9 or z0…z9",
                         path=path)
    return camera.strip().lower()


def amp_ids(header: Mapping, path: str | None = None, hdu: str | None = None) -> list[str]:
    """Amplifier names present in a raw camera header (gpuspec's one rule).

    The amps are those that have at least one of ``BIASSECx``, ``DATASECx`` or
    ``CCDSECx`` (keys in any case); x is ``A``–``D`` (current files) or ``1``–``4``
    (old files). :func:`raw_layout` then requires all three for each amp.

    Parameters
    ----------
    header : mapping
        Camera header (dict, fitsio or astropy header).
    path, hdu : str, optional
        Used in error messages.

    Returns
    -------
    list of str
        E.g. ``['A', 'B', 'C', 'D']``, ``['A', 'D']`` (two-amp readout) or
        ``['1', '2', '3', '4']``.

    Raises
    ------
    MissingKeywordError
        No amplifier section keyword at all.
    InputError
        The header mixes letter and digit amp names.

    Backends: host only.
    """
    found = set()
    for k in header_dict(header):
        m = _AMP_KEY_RE.match(k)
        if m:
            found.add(m.group(2))
    letters = [a for a in "ABCD" if a in found]
    digits = [a for a in "1234" if a in found]
    if letters and digits:
        raise InputError(f"header mixes amplifier names {letters} and {digits}",
                         path=path, hdu=hdu)
    amps = letters or digits
    if not amps:
        raise MissingKeywordError("no amplifier found: expected BIASSECx/DATASECx/CCDSECx "
                                  "with x in A-D (or 1-4)", path=path, hdu=hdu,
                                  keyword="BIASSECA")
    return amps


def _sec_size(ys: slice, xs: slice) -> tuple[int, int]:
    return ys.stop - ys.start, xs.stop - xs.start


def trimmed_shape(header: Mapping, amps: list[str] | None = None, path: str | None = None,
                  hdu: str | None = None) -> tuple[int, int]:
    """Shape ``(ny, nx)`` of the trimmed (preprocessed) image: the extent of all CCDSECx.

    Backends: host only.
    """
    h = header_dict(header)
    amps = amp_ids(h, path, hdu) if amps is None else amps
    ny = nx = 0
    for amp in amps:
        key = "CCDSEC" + amp
        ys, xs = parse_sec(require_keyword(h, key, path, hdu), key, path=path, hdu=hdu)
        ny, nx = max(ny, ys.stop), max(nx, xs.stop)
    return ny, nx


def _night(value):
    s = str(value).strip()
    try:
        return int(float(s))
    except ValueError:
        return s


@dataclass(frozen=True)
class RawLayout:
    """What a validated raw camera header says about its image (see :func:`raw_layout`).

    Attributes
    ----------
    amps : tuple of str
        Amplifier names, e.g. ``('A', 'B', 'C', 'D')``.
    sections : dict
        ``{amp: {"BIASSEC": (yslice, xslice), "DATASEC": ..., "CCDSEC": ...}}``, plus
        ``"ORSEC"`` and ``"PRESEC"`` when the header has them.
    trimmed_shape : (ny, nx)
        Extent of the CCDSECs: the shape of the preprocessed image.
    gains : dict
        ``{amp: GAINx}`` (e⁻/ADU, > 0); 1.0 everywhere with ``nogain``.
    saturlev : dict
        ``{amp: SATURLEVx}`` (ADU), None where the header has none.
    exptime : float or None
        EXPTIME of the primary header, else of the camera header; None when absent.
    """

    amps: tuple
    sections: dict
    trimmed_shape: tuple
    gains: dict
    saturlev: dict
    exptime: float | None


def _amp_sections(h: dict, amp: str, shape, trimmed, path, hdu) -> dict:
    """Parsed, mutually consistent sections of one amp (errors name the keyword)."""
    for base in ("BIASSEC", "DATASEC", "CCDSEC"):
        require_keyword(h, base + amp, path, hdu)
    secs = {}
    for base in ("BIASSEC", "DATASEC", "ORSEC", "PRESEC"):
        key = base + amp
        if key in h:
            secs[base] = parse_sec(h[key], key, shape=shape, path=path, hdu=hdu)
    key = "CCDSEC" + amp
    secs["CCDSEC"] = parse_sec(h[key], key, shape=trimmed, path=path, hdu=hdu)
    dsize = _sec_size(*secs["DATASEC"])
    csize = _sec_size(*secs["CCDSEC"])
    if dsize != csize:
        raise BadSectionError(
            f"CCDSEC{amp}={h[key]!r} is {csize[0]}x{csize[1]} (ny x nx) but "
            f"DATASEC{amp}={h['DATASEC' + amp]!r} is {dsize[0]}x{dsize[1]}", path=path,
            hdu=hdu, keyword=key)
    if _sec_size(*secs["BIASSEC"])[0] != dsize[0]:
        raise BadSectionError(f"BIASSEC{amp}={h['BIASSEC' + amp]!r} and DATASEC{amp}="
                              f"{h['DATASEC' + amp]!r} have a different number of rows",
                              path=path, hdu=hdu, keyword="BIASSEC" + amp)
    return secs


def _check_no_overlap(sections: dict, path, hdu) -> None:
    """CCDSECs of different amps must not overlap."""
    amps = list(sections)
    for i, a in enumerate(amps):
        for b in amps[i + 1:]:
            (ya, xa), (yb, xb) = sections[a]["CCDSEC"], sections[b]["CCDSEC"]
            if ya.start < yb.stop and yb.start < ya.stop and xa.start < xb.stop and \
                    xb.start < xa.stop:
                raise BadSectionError(f"CCDSEC{a} and CCDSEC{b} overlap", path=path, hdu=hdu,
                                      keyword="CCDSEC" + b)


def _amp_gain(h: dict, amp: str, nogain: bool, path, hdu) -> float:
    if nogain:
        return 1.0
    key = "GAIN" + amp
    gain = header_float(require_keyword(h, key, path, hdu), key, path, hdu)
    if gain <= 0:
        raise BadDataError(f"gain must be > 0, got {gain}", path=path, hdu=hdu, keyword=key)
    return gain


def _exposure_time(h: dict, primary: dict, required: bool, path, hdu) -> float | None:
    """EXPTIME, primary header first (as desispec); negative or not a number anywhere fails."""
    values = []
    for where, src in (("PRIMARY", primary), (hdu, h)):
        if src.get("EXPTIME") is None:
            continue
        t = header_float(src["EXPTIME"], "EXPTIME", path, where)
        if t < 0:
            raise BadDataError(f"exposure time must be >= 0, got {t}", path=path, hdu=where,
                               keyword="EXPTIME")
        values.append(t)
    if not values and required:
        raise MissingKeywordError("required keyword is missing from the camera and primary "
                                  "headers", path=path, hdu=hdu, keyword="EXPTIME")
    return values[0] if values else None


def _check_night(h: dict, primary: dict, path, hdu) -> None:
    n1, n0 = h.get("NIGHT"), primary.get("NIGHT")
    if n1 is not None and n0 is not None and _night(n1) != _night(n0):
        raise BadDataError(f"NIGHT={n1!r} in the camera header but NIGHT={n0!r} in the "
                           "primary header", path=path, hdu=hdu, keyword="NIGHT")


def raw_layout(header: Mapping, shape: tuple[int, int], path: str | None = None,
               hdu: str | None = None, primary_header: Mapping | None = None,
               trimmed: tuple[int, int] | None = None, require_exptime: bool = True,
               nogain: bool = False) -> RawLayout:
    """Validate a raw camera header against its image and return what it describes.

    gpuspec's one validation of raw headers (:func:`read_raw`, :func:`write_raw`
    and :func:`gpuspec.preproc.preproc` all call it). Checks, for each amplifier
    x found by :func:`amp_ids`:

    - ``BIASSECx``, ``DATASECx``, ``CCDSECx`` and (unless ``nogain``) ``GAINx`` exist;
    - every section (also ``ORSECx``/``PRESECx`` when present) parses, and
      BIASSEC/DATASEC/ORSEC/PRESEC lie inside the raw image ``shape``;
    - CCDSECx has the size of DATASECx, BIASSECx its number of rows, CCDSECx lies
      inside ``trimmed`` when given, and the CCDSECs of different amps do not overlap;
    - ``GAINx`` is a positive number, ``SATURLEVx`` (if present) a number;

    and for the exposure: ``EXPTIME`` (primary header first, then the camera
    header) is a number >= 0 wherever it appears and exists when
    ``require_exptime``; ``NIGHT`` agrees between the two headers when both have it.

    Parameters
    ----------
    header : mapping
        Camera header (dict in any key case, fitsio ``FITSHDR`` or astropy ``Header``).
    shape : (ny, nx)
        Shape of the raw image.
    path, hdu : str, optional
        Used in error messages.
    primary_header : mapping, optional
        Primary header of the raw file.
    trimmed : (ny, nx), optional
        Expected trimmed-image shape (e.g. of a calibration image).
    require_exptime : bool
        Whether a missing EXPTIME is an error.
    nogain : bool
        Do not read GAINx (gains 1.0).

    Returns
    -------
    RawLayout

    Raises
    ------
    MissingKeywordError, BadSectionError, BadDataError, InputError

    Backends: host only.
    """
    if header is None:
        raise InputError("no camera header", path=path, hdu=hdu)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2:
        raise BadDataError(f"raw image must be 2-D, got shape {shape}", path=path, hdu=hdu)
    h = header_dict(header)
    primary = header_dict(primary_header)
    amps = amp_ids(h, path, hdu)
    sections = {amp: _amp_sections(h, amp, shape, trimmed, path, hdu) for amp in amps}
    _check_no_overlap(sections, path, hdu)
    gains = {amp: _amp_gain(h, amp, nogain, path, hdu) for amp in amps}
    saturlev = {amp: (header_float(h["SATURLEV" + amp], "SATURLEV" + amp, path, hdu)
                      if h.get("SATURLEV" + amp) is not None else None) for amp in amps}
    exptime = _exposure_time(h, primary, require_exptime, path, hdu)
    _check_night(h, primary, path, hdu)
    ny = max(s["CCDSEC"][0].stop for s in sections.values())
    nx = max(s["CCDSEC"][1].stop for s in sections.values())
    return RawLayout(tuple(amps), sections, (ny, nx), gains, saturlev, exptime)


def validate_raw_header(header: Mapping, shape: tuple[int, int], path: str | None = None,
                        hdu: str | None = None, primary_header: Mapping | None = None,
                        trimmed: tuple[int, int] | None = None) -> list[str]:
    """Check that a raw camera header describes a usable image; return its amps.

    :func:`raw_layout` with EXPTIME required; see there for the checks.

    Returns
    -------
    list of str
        The amplifier names, e.g. ``['A', 'B', 'C', 'D']``.

    Raises
    ------
    MissingKeywordError, BadSectionError, BadDataError, InputError

    Backends: host only.
    """
    return list(raw_layout(header, shape, path=path, hdu=hdu, primary_header=primary_header,
                           trimmed=trimmed).amps)


def _camera_hdus(names: list[str]) -> list[str]:
    return [n.lower() for n in names if _CAMERA_RE.match(n.lower())]


def find_cameras(path: str | os.PathLike) -> list[str]:
    """Lower-case names of the camera HDUs of a raw file, in file order.

    Backends: host only (NumPy).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        return _camera_hdus(hdu_names(fx))


def _exposure_header(fx) -> dict:
    """The exposure ("primary") header: the first HDU holding EXPTIME, as desispec.

    Real raw files keep it in HDU 1 ``SPEC`` (HDU 0 is empty); older files and the
    shared Case-A input keep it in HDU 0. Without EXPTIME anywhere, HDU 0.
    """
    for i in range(len(fx)):
        h = fx[i].read_header()
        if "EXPTIME" in h:
            return header_dict(h)
    return header_dict(fx[0].read_header())


@nvtx_range("read_raw")
def read_raw(path: str | os.PathLike, camera: str, validate: bool = True):
    """Read and validate one camera of a raw exposure.

    Parameters
    ----------
    path : str or PathLike
        ``desi-EXPID.fits.fz`` (tile-compressed) or ``.fits``.
    camera : str
        Camera name in any case (``'b0'``, ``'B0'``).
    validate : bool
        Run :func:`validate_raw_header` (:func:`gpuspec.preproc.preproc_file` passes
        False: :func:`gpuspec.preproc.preproc` validates the header itself, once).

    Returns
    -------
    image : ndarray (ny, nx)
        Raw pixels in ADU, native byte order, the file's dtype (usually int32).
    header : dict
        Camera header keywords in file order (layout/compression cards dropped);
        ``CAMERA`` is set (lower case) if the file lacks it.
    primary_header : dict
        Exposure header keywords: the first HDU that holds EXPTIME (``SPEC`` in
        DESI raw files, HDU 0 in older files), as desispec's ``read_raw``.

    Raises
    ------
    MissingFileError, InputError (unreadable/truncated file), MissingHDUError
    (camera absent: the message lists the cameras present), MissingKeywordError,
    BadSectionError, BadDataError; see :func:`validate_raw_header`.

    Notes
    -----
    Backends: host only (NumPy); move the image with :func:`gpuspec.backend.to_device`.
    """
    path = os.fspath(path)
    camera = normalize_camera(camera, path)
    ext = camera.upper()
    with open_fits(path) as fx:
        names = hdu_names(fx)
        if ext not in names:
            present = _camera_hdus(names)
            raise MissingHDUError(f"camera {camera} not in file; cameras present: "
                                  f"{', '.join(present) if present else 'none'}",
                                  path=path, hdu=ext)
        idx = names.index(ext)
        check_image_size(fx[idx], path, ext)
        try:
            primary = _exposure_header(fx)
            hdr = header_dict(fx[idx].read_header())
            image = fx[idx].read()
        except Exception as exc:
            raise InputError(f"cannot read raw image ({str(exc).strip().splitlines()[0]})",
                             path=path, hdu=ext) from exc
    if image is None or image.ndim != 2:
        raise BadDataError("camera HDU has no 2-D image", path=path, hdu=ext)
    hcam = hdr.get("CAMERA")
    if hcam is None:
        hdr["CAMERA"] = camera
    elif str(hcam).strip().lower() != camera:
        raise BadDataError(f"CAMERA={hcam!r} does not match the HDU name {ext}", path=path,
                           hdu=ext, keyword="CAMERA")
    if validate:
        validate_raw_header(hdr, image.shape, path=path, hdu=ext, primary_header=primary)
    return native(image), hdr, primary


def _raw_int32(image, camera: str) -> np.ndarray:
    a = native(to_host(image))
    if a.ndim != 2:
        raise BadDataError(f"raw image of camera {camera} must be 2-D, got shape {a.shape}")
    if a.dtype.kind in "iu":
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise BadDataError(f"raw image of camera {camera} exceeds the int32 range")
        return a.astype(np.int32, copy=False)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise BadDataError(f"raw image of camera {camera} has non-finite pixels")
        if np.any(a != np.round(a)):
            raise BadDataError(f"raw image of camera {camera} has non-integer ADU values; "
                               "round before writing")
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise BadDataError(f"raw image of camera {camera} exceeds the int32 range")
        return a.astype(np.int32)
    raise BadDataError(f"raw image of camera {camera} has unsupported dtype {a.dtype}")


@nvtx_range("write_raw")
def write_raw(path: str | os.PathLike, cameras: Mapping, primary_header: Mapping | None = None,
              compress: str | bool | None = None, validate: bool = True,
              layout: str = "desi") -> str:
    """Write a raw exposure: one int32 image HDU per camera.

    With ``layout="desi"`` (default) the file looks like a real DESI raw file: an
    empty HDU 0, then the exposure keywords in a header-only HDU ``SPEC``, then the
    cameras. ``layout="primary"`` puts the exposure keywords in HDU 0 instead
    (the older gpuspec layout and that of the shared Case-A input). Every HDU gets
    CHECKSUM/DATASUM.

    Parameters
    ----------
    path : str or PathLike
        Output file; written atomically (temporary name, renamed on success).
    cameras : dict
        ``{camera: (image, header)}``; ``image`` holds integer ADU values
        (integer dtype, or floats with integral values); ``header`` is a dict of
        camera keywords (``CAMERA`` is set from the key).
    primary_header : dict, optional
        Exposure keywords (EXPID, NIGHT, EXPTIME, ...), written to ``SPEC``.
    compress : {None, "RICE", "GZIP", False}
        Tile compression of the camera HDUs. None: RICE when ``path`` ends with
        ``.fz``, else none.
    validate : bool
        Run :func:`validate_raw_header` on every camera before writing
        (tests pass False to write deliberately broken files).

    Returns
    -------
    str
        ``path``.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    path = os.fspath(path)
    if layout not in ("desi", "primary"):
        raise InputError(f"raw layout must be 'desi' or 'primary', got {layout!r}", path=path)
    if compress is None:
        compress = "RICE" if path.endswith(".fz") else False
    if compress is True:
        compress = "RICE"
    if not cameras:
        raise InputError("no camera to write", path=path)
    prepared = []
    for cam, item in cameras.items():
        cam = normalize_camera(cam, path)
        try:
            image, hdr = item
        except (TypeError, ValueError):
            raise InputError(f"cameras[{cam!r}] must be an (image, header) pair",
                             path=path) from None
        img = _raw_int32(image, cam)
        hdr = dict(hdr or {})
        hdr = {k: v for k, v in hdr.items() if str(k).upper() != "CAMERA"}
        hdr = {"CAMERA": cam, **hdr}
        if validate:
            validate_raw_header(hdr, img.shape, path=path, hdu=cam.upper(),
                                primary_header=primary_header)
        prepared.append((cam.upper(), img, header_records(hdr)))
    names = [p[0] for p in prepared]
    if len(set(names)) != len(names):
        raise InputError(f"duplicate cameras {names}", path=path)
    exposure = header_records(dict(primary_header or {}))
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            if layout == "desi":
                fx.write(None)
                fx.write(None, extname="SPEC", header=exposure)
            else:
                fx.write(None, header=exposure)
            for ext, img, recs in prepared:
                if compress:
                    fx.write(img, extname=ext, header=recs, compress=compress)
                else:
                    fx.write(img, extname=ext, header=recs)
        write_checksums(tmp)
    return path
