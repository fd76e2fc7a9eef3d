"""Preprocessed images: ``preproc-{camera}-{EXPID:08d}.fits`` in the desispec layout.

HDUs, in desispec's order:

- 0 ``IMAGE`` (the primary HDU, EXTNAME='IMAGE', as desispec writes it): float32
  (ny, nx), electrons; its header is ``image.meta`` (CAMERA, NIGHT, EXPID, EXPTIME,
  GAINx, OVERSCNx, OBSRDNx, ...) plus DEPNAMnn/DEPVERnn;
- ``IVAR``: float32, electron⁻²;
- ``MASK``: ``ccdmask`` bits, RICE tile-compressed int16 like desispec (int32
  when a value does not fit in int16, so no bit is ever lost);
- ``READNOISE``: float32, electrons per pixel (a scalar read noise goes to the
  ``RDNOISE`` keyword of IMAGE instead, like desispec);
- ``FIBERMAP``: binary table, when ``image.fibermap`` is set (without the
  NIGHT/EXPID/MJD/TILEID columns, see :func:`gpuspec.io.fibermap.frame_fibermap`).

Every HDU carries CHECKSUM/DATASUM. Files with an empty primary HDU before
``IMAGE`` (older gpuspec files) are read too.

desispec's ``read_image`` reads these files and gpuspec's :func:`read_image`
reads desispec's (and the float64/int32 reference files of Case A).
Host only (NumPy); device arrays given to the writer are copied to the host.
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..backend import native, to_host
from ..errors import BadDataError, MissingHDUError, MissingKeywordError
from ..image import Image
from ..profiling import nvtx_range
from .util import add_dependencies, atomic_output, check_image_size, check_same_shape, hdu_names, \
    header_dict, header_records, open_fits, read_image_hdu, read_optional_hdu, write_checksums

__all__ = ["write_image", "read_image", "image_shape"]

_I16 = np.iinfo(np.int16)


def _host(a, name, shape=None, path=None):
    a = native(to_host(a))
    if shape is not None and a.shape != tuple(shape):
        raise BadDataError(f"{name} has shape {a.shape}, expected {tuple(shape)} like the "
                           "image", path=path, hdu=name)
    return a


def _mask_for_disk(mask) -> np.ndarray:
    if mask.dtype.kind not in "iub":
        if not np.all(np.isfinite(mask)) or np.any(mask != np.round(mask)):
            raise BadDataError("MASK must hold integer bit values", hdu="MASK")
    if mask.size == 0 or (mask.min() >= _I16.min and mask.max() <= _I16.max):
        return mask.astype(np.int16)
    if mask.min() < np.iinfo(np.int32).min or mask.max() > np.iinfo(np.int32).max:
        raise BadDataError("MASK values exceed the int32 range", hdu="MASK")
    return mask.astype(np.int32)


def _fibermap_array(fm):
    from .fibermap import frame_fibermap

    return frame_fibermap(fm)


@nvtx_range("write_image")
def write_image(path: str | os.PathLike, image: Image, meta: dict | None = None) -> str:
    """Write a preprocessed image in the desispec preproc layout.

    Parameters
    ----------
    path : str or PathLike
        Output file, written atomically.
    image : gpuspec.Image
        Arrays may be numpy or cupy (copied to the host). ``image.camera`` or
        ``meta['CAMERA']`` must give the camera.
    meta : dict, optional
        Header to use instead of ``image.meta``.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    BadDataError
        Inconsistent shapes, no camera, or a mask that is not integer.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    path = os.fspath(path)
    hdr = dict(image.meta if meta is None else meta)
    camera = image.camera or hdr.get("CAMERA")
    if not camera:
        raise BadDataError("image has no camera (set image.camera or meta['CAMERA'])",
                           path=path)
    camera = str(camera).strip().lower()
    hdr = {k: v for k, v in hdr.items() if str(k).upper() != "CAMERA"}
    hdr = {"CAMERA": camera, **hdr}
    hdr.setdefault("BUNIT", "electron")
    pix = _host(image.pix, "IMAGE", path=path)
    if pix.ndim != 2:
        raise BadDataError(f"image must be 2-D, got shape {pix.shape}", path=path, hdu="IMAGE")
    ivar = _host(image.ivar, "IVAR", pix.shape, path)
    mask = image.mask
    mask = np.zeros(pix.shape, np.int16) if mask is None else _host(mask, "MASK", pix.shape,
                                                                       path)
    mask = _mask_for_disk(mask)
    rdn = image.readnoise
    rdn_arr = None
    if rdn is not None:
        if np.ndim(to_host(rdn)) == 0:
            hdr.setdefault("RDNOISE", float(to_host(rdn)))
        else:
            rdn_arr = _host(rdn, "READNOISE", pix.shape, path).astype(np.float32)
    fm = None if image.fibermap is None else _fibermap_array(image.fibermap)
    from .fibermap import table_units

    hdr = add_dependencies(hdr)
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(pix.astype(np.float32), extname="IMAGE", header=header_records(hdr))
            fx.write(ivar.astype(np.float32), extname="IVAR",
                     header=[{"name": "BUNIT", "value": "electron^-2"}])
            fx.write(mask, extname="MASK", compress="RICE")
            if rdn_arr is not None:
                fx.write(rdn_arr, extname="READNOISE",
                         header=[{"name": "BUNIT", "value": "electron"}])
            if fm is not None:
                fx.write(fm, extname="FIBERMAP", units=table_units(fm.dtype.names))
        write_checksums(tmp)
    return path


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(ny, nx) of a preprocessed image's IMAGE HDU, from its header (no pixel read).

    Raises MissingFileError, InputError, MissingHDUError (no IMAGE).

    Backends: host only.
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        if "IMAGE" not in hdu_names(fx):
            raise MissingHDUError("HDU is missing", path=path, hdu="IMAGE")
        dims = check_image_size(fx["IMAGE"], path, "IMAGE")
    if len(dims) != 2:
        raise BadDataError(f"IMAGE must be 2-D, got dimensions {dims}", path=path, hdu="IMAGE")
    return int(dims[0]), int(dims[1])


@nvtx_range("read_image")
def read_image(path: str | os.PathLike, columns=None, readnoise: bool = True) -> Image:
    """Read a preprocessed image (gpuspec or desispec layout).

    Parameters
    ----------
    path : str or path
    columns : (x0, x1), optional
        Read only CCD columns ``[x0, x1)`` of every pixel HDU (clipped to the image),
        with a subset read: what a bundle's extraction needs. The image's column 0 is
        then ``max(x0, 0)``.
    readnoise : bool
        False: the READNOISE HDU is not read and ``readnoise`` is None (the extraction
        needs it only for ``model_ivar``).

    Returns
    -------
    gpuspec.Image
        ``pix``, ``ivar``, ``readnoise`` float64 and ``mask`` int32 numpy arrays
        in native byte order; ``camera`` lower case; ``meta`` the IMAGE header
        as a dict; ``fibermap`` when the file has a FIBERMAP HDU. Without a
        READNOISE HDU, ``readnoise`` is the RDNOISE keyword (a float) or None.

    Raises
    ------
    MissingFileError, InputError, MissingHDUError (IMAGE, IVAR or MASK missing),
    MissingKeywordError (no CAMERA), BadDataError (shapes differ).

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        names = hdu_names(fx)
        pix, h = read_image_hdu(fx, "IMAGE", path, header=True, columns=columns)
        meta = header_dict(h)
        ivar = read_image_hdu(fx, "IVAR", path, columns=columns)
        mask = read_image_hdu(fx, "MASK", path, columns=columns)
        rn = (read_optional_hdu(fx, names, "READNOISE", path, columns=columns)
              if readnoise else None)
        fibermap = read_optional_hdu(fx, names, "FIBERMAP", path, table=True)
    if pix.ndim != 2:
        raise BadDataError(f"IMAGE must be 2-D, got shape {pix.shape}", path=path, hdu="IMAGE")
    check_same_shape(pix, "IMAGE", (("IVAR", ivar), ("MASK", mask), ("READNOISE", rn)),
                     path)
    camera = meta.get("CAMERA")
    if camera is None:
        raise MissingKeywordError("required keyword is missing", path=path, hdu="IMAGE",
                                  keyword="CAMERA")
    if readnoise and rn is None and meta.get("RDNOISE") is not None:
        rn = float(meta["RDNOISE"])
    elif rn is not None:
        rn = rn.astype(np.float64)
    if mask.dtype.kind == "f":
        mask = mask.astype(np.int64)
    return Image(pix=pix.astype(np.float64), ivar=ivar.astype(np.float64),
                 mask=mask.astype(np.int32), readnoise=rn,
                 camera=str(camera).strip().lower(), meta=meta, fibermap=fibermap)
