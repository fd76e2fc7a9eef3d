"""DESI camera words: ``"a0123b5r6z789"`` <-> ``["b0", "r0", "z0", ...]``.

A camword is a run of blocks, each a letter followed by one or more spectrograph
digits: ``b``/``r``/``z`` name one arm, ``a`` means all three arms. This is the
notation of ``desispec.io.util.decode_camword``/``create_camword``; unlike
desispec, :func:`parse_camword` rejects anything it does not understand (an
unknown letter, a letter without digits, stray characters) instead of skipping it.
"""

from __future__ import annotations

from typing import Iterable

from .errors import InputError

__all__ = ["ARMS", "parse_camword", "cameras_to_camword", "parse_cameras", "is_camera"]

ARMS = ("b", "r", "z")


def is_camera(name: str) -> bool:
    """True for a camera name such as ``"b0"`` or ``"z9"``.

    Backends: host only (strings).
    """
    return (isinstance(name, str) and len(name) == 2 and name[0] in ARMS
            and name[1].isdigit())


def parse_camword(camword: str) -> list[str]:
    """Decode a camword into a sorted list of camera names.

    Parameters
    ----------
    camword : str
        e.g. ``"a01"``, ``"b0r0z0"``, ``"a0123b5"`` (case-insensitive).

    Returns
    -------
    list of str
        Sorted, unique camera names, e.g. ``["b0", "b1", "r0", "r1", "z0", "z1"]``.

    Raises
    ------
    ValueError
        Empty camword, unknown letter, a letter with no digits, or other characters.

    Backends: host only (strings).
    """
    if not isinstance(camword, str):
        raise ValueError(f"camword must be a string, got {type(camword).__name__}")
    word = camword.strip().lower()
    if not word:
        raise ValueError("empty camword")
    cams: set[str] = set()
    i = 0
    while i < len(word):
        key = word[i]
        if key not in ("a",) + ARMS:
            raise ValueError(f"bad camword {camword!r}: unexpected {key!r} at position {i} "
                             "(expected a, b, r or z followed by spectrograph digits)")
        j = i + 1
        while j < len(word) and word[j].isdigit():
            arms = ARMS if key == "a" else (key,)
            cams.update(arm + word[j] for arm in arms)
            j += 1
        if j == i + 1:
            raise ValueError(f"bad camword {camword!r}: {key!r} at position {i} is not "
                             "followed by a spectrograph digit")
        i = j
    return sorted(cams)


def cameras_to_camword(cameras: Iterable[str]) -> str:
    """Encode camera names as the shortest camword (``a`` for complete spectrographs).

    Raises
    ------
    ValueError
        A name that is not a camera (``b0`` ... ``z9``).

    Backends: host only (strings).
    """
    per_arm: dict[str, set[str]] = {arm: set() for arm in ARMS}
    for cam in cameras:
        c = str(cam).strip().lower()
        if not is_camera(c):
            raise ValueError(f"not a camera name: {cam!r} (expected e.g. b0, r3, z9)")
        per_arm[c[0]].add(c[1])
    full = per_arm["b"] & per_arm["r"] & per_arm["z"]
    out = ("a" + "".join(sorted(full))) if full else ""
    for arm in ARMS:
        rest = sorted(per_arm[arm] - full)
        if rest:
            out += arm + "".join(rest)
    return out


def parse_cameras(cameras: str | Iterable[str], order: str = "arm") -> list[str]:
    """Cameras given as a camword, a comma-separated list or a sequence -> sorted list.

    The one parser of camera selections (the CLIs, the manifest and the simulator
    all call it).

    Parameters
    ----------
    cameras : str or iterable of str
        A camword (``a0``, ``a01b2z9``), a comma list (``b0,r0,z0``, items may be
        camwords) or a sequence of camera names.
    order : {"arm", "petal"}
        ``"arm"``: sorted by name (``b0 b1 r0 r1 ...``); ``"petal"``: by spectrograph,
        then arm b, r, z (``b0 r0 z0 b1 ...``, the simulator's order).

    Returns
    -------
    list of str
        Lower-case camera names without duplicates.

    Raises
    ------
    InputError
        (a ``ValueError``) Bad camword or camera name, or no camera at all.

    Backends: host only (strings).
    """
    if order not in ("arm", "petal"):
        raise ValueError(f"order must be 'arm' or 'petal', got {order!r}")
    try:
        cams = _parse_cameras(cameras)
    except ValueError as exc:
        raise InputError(f"invalid cameras {cameras!r}: {exc}") from None
    if order == "petal":
        return sorted(cams, key=lambda c: (int(c[1]), ARMS.index(c[0])))
    return cams


def _parse_cameras(cameras) -> list[str]:
    if isinstance(cameras, str):
        parts = [p for p in cameras.replace(" ", "").split(",") if p]
        if not parts:
            raise ValueError("no cameras given")
        out: set[str] = set()
        for p in parts:
            out.update([p.lower()] if is_camera(p.lower()) else parse_camword(p))
        return sorted(out)
    out = set()
    for c in cameras:
        c = str(c).strip().lower()
        if not is_camera(c):
            raise ValueError(f"not a camera name: {c!r} (expected e.g. b0, r3, z9)")
        out.add(c)
    if not out:
        raise ValueError("no cameras given")
    return sorted(out)
