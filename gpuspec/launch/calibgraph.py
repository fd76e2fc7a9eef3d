"""The calibration part of the task graph (docs/launch.md, "Calibration").

Exposures are told apart by the OBSTYPE of their raw exposure header
(:func:`exposure_obstype`): flat-lamp exposures (``FLAT``) and science exposures
(``SCIENCE``) both go through preproc → extract → frame; then::

    flat:    frame(cam) -> fiberflat(cam) -> fiberflatnight(arm or cam, night)
    science: frame(cam) + fiberflat of the night -> sky(cam)
             frames, skies, fiberflats of b, r, z -> stdstars(spectrograph)
             frame + fiberflat + sky + stdstars -> fluxcalib(cam)
             frame + fiberflat + sky + fluxcalib -> cframe(cam) -> group(healpix)

Flats are never grouped or coadded. The fiber flat a science exposure uses is, in
this order: the manifest's ``fiberflat`` (exposure > night > inputs, like the PSF),
the ``fiberflatnight`` made from the night's flat exposures of the manifest, a
``fiberflatnight`` already in the production's ``calibnight/{NIGHT}/``; else the
calibration steps are an error naming the exposure.

File names come from :func:`gpuspec.calibrate.files.calib_filename`; the layout is
desispec's (``exposures/{NIGHT}/{EXPID:08d}/…``, ``calibnight/{NIGHT}/…``).
Host only.
"""

from __future__ import annotations

import functools
import os

from .manifest import CALIB_STEPS, OBSTYPES, Manifest

__all__ = ["exposure_obstype", "resolve_obstype", "CalibGraph", "calib_path", "group_input",
           "calibration_notes"]

#: Steps that apply a fiber flat to a science frame.
_USES_FIBERFLAT = ("sky", "stdstars", "fluxcalib", "cframe")


@functools.lru_cache(maxsize=4096)
def _header_obstype(path: str, mtime_ns: int) -> str | None:
    from ..io.raw import _exposure_header  # the exposure header, found as desispec does
    from ..io.util import open_fits

    try:
        with open_fits(path) as fx:
            h = _exposure_header(fx)
    except Exception:  # not FITS, corrupt: the task that reads it reports the error
        return None
    v = h.get("OBSTYPE")
    return str(v).strip().upper() if v is not None and str(v).strip() else None


def exposure_obstype(*paths: str | None) -> str | None:
    """OBSTYPE (upper case) from the first readable file among ``paths`` that has it.

    ``paths`` are the raw file, then products holding its header (preproc, frame).
    None when no file is readable or none has OBSTYPE.

    Backends: host only.
    """
    for p in paths:
        if p and os.path.exists(p):
            v = _header_obstype(os.path.abspath(p), os.stat(p).st_mtime_ns)
            if v is not None:
                return v
    return None


def resolve_obstype(m: Manifest, e: dict, ext: str = "fits") -> str:
    """SCIENCE or FLAT for exposure ``e`` (one of :meth:`Manifest.exposures`).

    The raw exposure header's OBSTYPE (else that of an existing preproc or frame
    of the exposure); the manifest's ``obstype`` when given must agree with it.
    Without a readable OBSTYPE: the manifest's, else SCIENCE. Another OBSTYPE
    (ARC, ZERO, DARK, …) is a ManifestError naming the exposure.

    Backends: host only.
    """
    from .graph import paths

    prod, night, expid = m.production, e["night"], e["expid"]
    cams = list(e["cameras"])
    found = exposure_obstype(e.get("raw"), *[paths.preproc(prod, night, expid, c, ext)
                                             for c in cams[:1]],
                             *[paths.frame(prod, night, expid, c, ext) for c in cams[:1]])
    given = e.get("obstype")
    key = e["key"] + (".obstype" if given else "")
    if found is not None and given is not None and found != given:
        raise m.error(key, f"exposure {expid}: obstype {given} but its raw header says "
                           f"OBSTYPE={found} ({e.get('raw')})")
    kind = found or given or "SCIENCE"
    if kind not in OBSTYPES:
        raise m.error(key, f"exposure {expid} has OBSTYPE={kind} ({e.get('raw')}): gpuspec-run "
                           f"reduces {' and '.join(OBSTYPES)} exposures; remove it from "
                           "inputs.exposures")
    return kind


def calib_path(prod: str, kind: str, night: int, expid: int | None = None,
               camera: str | None = None, spectrograph: int | None = None,
               ext: str = "fits") -> str:
    """Path of a calibration product in the production (desispec's layout).

    Backends: host only.
    """
    from ..calibrate.files import calib_filename

    name = calib_filename(kind, camera, expid, night=night, spectrograph=spectrograph)
    name = name[:-len("fits")] + ext
    if kind == "fiberflatnight":
        return os.path.join(prod, "calibnight", str(night), name)
    return os.path.join(prod, "exposures", str(night), f"{int(expid):08d}", name)


def group_input(m: Manifest) -> str:
    """``cframe`` or ``frame``: what the group step reads (``steps.group.input``).

    Backends: host only.
    """
    from .graph import step_settings

    want = step_settings(m, "group").get("input", "auto")
    if want == "auto":
        return "cframe" if "cframe" in m.steps else "frame"
    return want


class CalibGraph:
    """Adds the calibration tasks of a manifest to a graph being built (``graph._Graph``)."""

    def __init__(self, g, ext: str):
        self.g, self.m, self.ext = g, g.m, ext
        self.run = set(self.m.steps)
        self.input = group_input(self.m)
        self.flats: dict[int, list[tuple[int, str, str]]] = {}  # night -> (expid, cam, file)
        self.science: dict[int, dict] = {}  # expid -> {cam: (frame, fiberflat, sky)}
        self.kinds = {e["expid"]: resolve_obstype(self.m, e, ext) for e in self.m.exposures()}
        nights_with_flats = {e["night"] for e in self.m.exposures()
                             if self.kinds[e["expid"]] == "FLAT"}
        self.nights_with_flats = nights_with_flats

    def kind(self, e: dict) -> str:
        """Kind (``flat`` or ``science``) of exposure entry ``e``.

        Backends: host only.
        """
        return self.kinds[e["expid"]]

    def _opts(self, step: str) -> dict:
        return self.m.step(step).get("options", {})

    def camera(self, e: dict, cam: str, frame: str) -> str | None:
        """The calibration tasks of one camera; returns the file to group (None for a flat).

        Backends: host only.
        """
        from .graph import Task

        night, expid, prod = e["night"], e["expid"], self.m.production
        if self.kind(e) == "FLAT":
            ff = calib_path(prod, "fiberflat", night, expid, cam, ext=self.ext)
            self.g.add(Task(f"fiberflat-{cam}-{expid:08d}", "fiberflat", [], [frame], [ff],
                            dict(frame=frame, outfile=ff, camera=cam, night=night, expid=expid,
                                 options=self._opts("fiberflat"))))
            self.flats.setdefault(night, []).append((expid, cam, ff))
            return None
        cframe = calib_path(prod, "cframe", night, expid, cam, ext=self.ext)
        if not self.run & set(_USES_FIBERFLAT):
            self.g.would_make.setdefault(cframe, "cframe")
            return cframe if self.input == "cframe" else frame
        ffn = self._fiberflat_for(e, cam)
        sky = calib_path(prod, "sky", night, expid, cam, ext=self.ext)
        std = calib_path(prod, "stdstars", night, expid, spectrograph=int(cam[1:]), ext=self.ext)
        cal = calib_path(prod, "fluxcalib", night, expid, cam, ext=self.ext)
        base = dict(camera=cam, night=night, expid=expid)
        self.g.add(Task(f"sky-{cam}-{expid:08d}", "sky", [], [frame, ffn], [sky],
                        dict(base, frame=frame, fiberflat=ffn, outfile=sky,
                             options=self._opts("sky"))))
        self.g.add(Task(f"fluxcalib-{cam}-{expid:08d}", "fluxcalib", [], [frame, ffn, sky, std],
                        [cal], dict(base, frame=frame, fiberflat=ffn, sky=sky, stdstars=std,
                                    outfile=cal, options=self._opts("fluxcalib"))))
        self.g.add(Task(f"cframe-{cam}-{expid:08d}", "cframe", [], [frame, ffn, sky, cal],
                        [cframe], dict(base, frame=frame, fiberflat=ffn, sky=sky, calib=cal,
                                       outfile=cframe, options=self._opts("cframe"))))
        self.science.setdefault(expid, {})[cam] = (frame, ffn, sky)
        return cframe if self.input == "cframe" else frame

    def exposure(self, e: dict) -> None:
        """stdstars of each spectrograph of a science exposure (its b, r, z cameras together).

        Backends: host only.
        """
        from .graph import Task

        cams = self.science.get(e["expid"], {})
        night, expid = e["night"], e["expid"]
        for sp in sorted({int(c[1:]) for c in cams}):
            mine = sorted((c for c in cams if int(c[1:]) == sp), key=lambda c: "brz".index(c[0]))
            frames, ffs, skies = ([cams[c][i] for c in mine] for i in range(3))
            out = calib_path(self.m.production, "stdstars", night, expid, spectrograph=sp,
                             ext=self.ext)
            self.g.add(Task(f"stdstars-{sp}-{expid:08d}", "stdstars", [],
                            frames + skies + sorted(set(ffs), key=ffs.index), [out],
                            dict(frames=frames, skies=skies, fiberflats=ffs, outfile=out,
                                 spectrograph=sp, cameras=mine, night=night, expid=expid,
                                 options=self._opts("stdstars"))))

    def _fiberflat_for(self, e: dict, cam: str) -> str:
        m, night = self.m, e["night"]
        given = m.camera_file("fiberflat", cam, e)
        if given is not None:
            self.g.origin[given] = m.input_source("fiberflat", e)[1]
            return given
        made = calib_path(m.production, "fiberflatnight", night, camera=cam, ext=self.ext)
        if night in self.nights_with_flats or os.path.exists(made):
            return made
        raise m.error(e["key"], f"exposure {e['expid']} (night {night}), camera {cam}: no fiber "
                                f"flat for the calibration steps: no flat exposure (OBSTYPE FLAT) "
                                f"of night {night} in inputs.exposures, no inputs.fiberflat (or "
                                f"inputs.nights.{night}.fiberflat) and no {made}; give one, or "
                                f"remove the steps {', '.join(CALIB_STEPS)} (uncalibrated "
                                "production)")

    def finish(self) -> None:
        """The fiberflatnight tasks of every night with flats.

        Backends: host only.
        """
        from .graph import Task, step_settings

        method = step_settings(self.m, "fiberflatnight").get("method", "autocalib")
        prod = self.m.production
        opts = self._opts("fiberflatnight")
        for night, flats in sorted(self.flats.items()):
            cams = sorted({c for _, c, _ in flats}, key=lambda c: ("brz".index(c[0]), int(c[1:])))
            groups = ({c[0]: [x for x in cams if x[0] == c[0]] for c in cams}
                      if method == "autocalib" else {c: [c] for c in cams})
            for unit, members in groups.items():
                files = [f for _, c, f in sorted(flats) if c in members]
                outs = [calib_path(prod, "fiberflatnight", night, camera=c, ext=self.ext)
                        for c in members]
                self.g.add(Task(f"fiberflatnight-{unit}-{night}", "fiberflatnight", [], files,
                                outs, dict(fiberflats=files, outfiles=outs, cameras=members,
                                           arm=members[0][0], night=night, method=method,
                                           outdir=os.path.dirname(outs[0]), options=opts)))


def calibration_notes(m: Manifest, ext: str = "fits") -> list[str]:
    """What ``--check`` and ``--dry-run`` say about calibration (one line each).

    Backends: host only.
    """
    kinds = {}
    for e in m.exposures():
        try:
            kinds[e["expid"]] = resolve_obstype(m, e, ext)
        except Exception:  # the graph reported it already
            continue
    flats = sorted(x for x, k in kinds.items() if k == "FLAT")
    steps = set(m.steps)
    notes = []
    if flats:
        notes.append(f"flat exposures (OBSTYPE FLAT, never grouped): "
                     f"{', '.join(map(str, flats))}")
    if steps & {"group", "coadd"}:
        if group_input(m) == "cframe":
            notes.append("calibrated production: group and coadd read cframes "
                         "(10**-17 erg/(s cm2 Angstrom))")
        else:
            notes.append("UNCALIBRATED production: group and coadd read frames (electron/"
                         "Angstrom), not cframes; to calibrate, add flat exposures of the "
                         "night (or inputs.fiberflat) and the steps " + ", ".join(CALIB_STEPS))
    return notes
