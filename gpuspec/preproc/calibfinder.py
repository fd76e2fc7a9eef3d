"""Finding the calibration images of a camera in a calibration folder (as ``desi_preproc``).

A calibration folder (``--calib-dir``, else ``$DESI_SPECTRO_CALIB``) is searched,
for each kind (bias, dark, pixflat, mask), in this order:

1. desispec's calibration YAML: ``spec/sp{N}/{camera}.yaml`` (the layout of
   simulated data and of data before 2019-12-11), or
   ``spec/sm{SPECID}/sm{SPECID}-{arm}.yaml`` when the header has ``SPECID`` and
   the night is 20191211 or later. The version whose ``DATE-OBS-BEGIN`` ≤ night
   ≤ ``DATE-OBS-END`` (and whose ``DETECTOR`` matches, when the header has one)
   gives ``BIAS``, ``DARK``, ``PIXFLAT``, ``MASK``, relative to the folder. This
   is a reading of ``desispec.calibfinder.CalibFinder`` (CCDCFG/CCDTMING
   selection and ``$DESI_SPECTRO_DARK`` are not supported);
2. ``{kind}-{camera}.fits`` in the folder (the simulator's layout);
3. ``{kind}/{kind}-{camera}.fits``.

Host only (paths, no arrays).
"""

from __future__ import annotations

import os

from ..errors import InputError

__all__ = ["CALIB_KINDS", "calib_root", "find_calibration", "find_calibrations",
           "raw_headers"]

CALIB_KINDS = ("bias", "dark", "pixflat", "mask")


def calib_root(calib_dir: str | None = None) -> str | None:
    """``calib_dir``, else ``$DESI_SPECTRO_CALIB``, else None.

    Backends: host only (reads the environment).
    """
    return calib_dir or os.environ.get("DESI_SPECTRO_CALIB") or None


def raw_headers(rawfile: str, camera: str) -> dict:
    """NIGHT, EXPID, SPECID, DETECTOR, CAMERA of a raw file (camera HDU first, then primary).

    What the lookup needs; keywords absent from both are absent.

    Backends: host only (file I/O).
    """
    from ..io.util import open_fits

    out: dict = {}
    with open_fits(rawfile) as fx:
        for ext in (camera.upper(), 0):
            try:
                h = fx[ext].read_header()
            except (IOError, OSError, KeyError, ValueError):
                continue
            for k in ("NIGHT", "EXPID", "SPECID", "DETECTOR", "CAMERA"):
                if k in h and k not in out:
                    out[k] = h[k]
    return out


def _yaml_entry(root: str, camera: str, night: int | None, header: dict) -> tuple[dict, str]:
    """The matching version of the desispec calibration YAML, and its file ({} when none)."""
    import yaml

    specid = header.get("SPECID")
    if night is not None and night >= 20191211 and specid is not None \
            and str(header.get("DETECTOR", "")).strip() != "SIM":
        cameraid = f"sm{int(specid)}-{camera[0]}"
        path = os.path.join(root, "spec", f"sm{int(specid)}", f"{cameraid}.yaml")
    else:
        cameraid = camera
        path = os.path.join(root, "spec", f"sp{int(camera[1])}", f"{camera}.yaml")
    if not os.path.exists(path):
        return {}, path
    with open(path, encoding="utf-8") as f:
        data = (yaml.safe_load(f) or {}).get(cameraid) or {}
    detector = str(header.get("DETECTOR", "")).strip()
    found = []
    for version, entry in data.items():
        begin = int(entry.get("DATE-OBS-BEGIN", 0))
        end = entry.get("DATE-OBS-END")
        end = None if end is None or str(end).lower() == "none" else int(end)
        if night is not None and (night < begin or (end is not None and night > end)):
            continue
        if detector and "DETECTOR" in entry and str(entry["DETECTOR"]).strip() != detector:
            continue
        found.append((version, entry))
    if len(found) > 1:
        raise InputError(f"{len(found)} calibration versions match camera {camera} night "
                         f"{night} ({', '.join(v for v, _ in found)}); set DATE-OBS-END",
                         path=path)
    return (found[0][1] if found else {}), path


def find_calibration(kind: str, camera: str, calib_dir: str, night: int | None = None,
                     header: dict | None = None) -> tuple[str | None, list[str]]:
    """The file of one calibration kind, and every place looked at (for error messages).

    Backends: host only (file I/O).
    """
    camera = camera.lower()
    looked = []
    entry, ypath = _yaml_entry(calib_dir, camera, night, header or {})
    looked.append(f"{ypath} ({kind.upper()})")
    value = entry.get(kind.upper())
    if isinstance(value, list):  # desispec allows [value, comment]
        value = value[0]
    if value:
        path = os.path.join(calib_dir, str(value))
        if os.path.exists(path):
            return path, looked
        raise InputError(f"{kind.upper()} of camera {camera} is {value!r}, which does not "
                         "exist in the calibration folder", path=ypath)
    for rel in (f"{kind}-{camera}.fits", os.path.join(kind, f"{kind}-{camera}.fits")):
        path = os.path.join(calib_dir, rel)
        looked.append(path)
        if os.path.exists(path):
            return path, looked
    return None, looked


def find_calibrations(camera: str, calib_dir: str, night: int | None = None,
                      header: dict | None = None) -> dict:
    """``{kind: path or None}`` for the four kinds (see the module docstring).

    Backends: host only (file I/O).
    """
    return {k: find_calibration(k, camera, calib_dir, night, header)[0] for k in CALIB_KINDS}
