"""Production manifest: YAML schema, validation with line numbers, input checks.

The manifest is read with PyYAML's composer (:func:`yaml.compose` with the
``SafeLoader``), which keeps a position mark on every node, and validated
against the schema :data:`SCHEMA` written here. Every error is a
:class:`ManifestError` naming the file, the line and the dotted key, e.g.::

    manifest.yaml line 12: steps.extract.bundels: unknown key (allowed: after, bundles, ...)

The keys are documented in ``docs/launch.md``; :func:`describe_schema` prints them.

Checks made by :func:`load_manifest`
------------------------------------
- unknown keys, missing required keys, wrong types, values out of range;
- camera lists and camwords (``a0123b5``) that do not parse;
- input files (raw exposures, fibermaps, PSFs, calibration files) that do not exist;
- cycles among the steps (each step's ``after`` list adds dependencies).
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
from typing import Any, Callable

import yaml

from ..camword import parse_cameras
from ..errors import GpuspecError
from ..extract.defaults import SPECTER
from ..grids import DESI_WAVE, desi_wavelength
from ..limits import MAX_MANIFEST_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

__all__ = ["ManifestError", "Field", "SCHEMA", "STEPS", "STEP_CHAIN", "Manifest",
           "load_manifest", "parse_manifest", "describe_schema", "DEFAULT_WAVELENGTH",
           "CALIB_KINDS", "CAMERA_INPUTS", "PATH_FIELDS", "CALIB_STEPS", "STEP_INPUTS",
           "FILE_INPUTS", "OBSTYPES"]

#: The calibration steps (docs/calibrate.md), between ``frame`` and ``group``.
CALIB_STEPS = ("fiberflat", "fiberflatnight", "sky", "stdstars", "fluxcalib", "cframe")
#: Step names in data-flow order.
STEPS = ("preproc", "extract", "frame") + CALIB_STEPS + ("group", "coadd")
#: Built-in dependencies between steps (step -> the step it consumes).
STEP_CHAIN = {"extract": "preproc", "frame": "extract", "group": "frame", "coadd": "group"}
#: Further products a step reads (calibration; ``group`` reads cframes when they are made).
STEP_INPUTS = {"fiberflat": ("frame",), "fiberflatnight": ("fiberflat",),
               "sky": ("frame", "fiberflatnight"), "stdstars": ("frame", "fiberflatnight", "sky"),
               "fluxcalib": ("frame", "fiberflatnight", "sky", "stdstars"),
               "cframe": ("frame", "fiberflatnight", "sky", "fluxcalib"), "group": ("cframe",)}
#: Exposure kinds the launcher reduces (OBSTYPE of the raw exposure header).
OBSTYPES = ("SCIENCE", "FLAT")

#: Default extraction wavelength grids per arm (desi_extract defaults): (min, max, step) Å.
DEFAULT_WAVELENGTH = {arm: desi_wavelength(arm) for arm in DESI_WAVE}


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def _short(value) -> str:
    """A bounded repr for messages (an expanded alias bomb is never printed)."""
    return _REPR.repr(value)


class ManifestError(GpuspecError, ValueError):
    """A manifest is malformed; the message names the file, line and key."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 key: str | None = None):
        where = []
        if path:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        head = " ".join(where)
        if key:
            head = f"{head}: {key}" if head else key
        super().__init__(f"{head}: {message}" if head else message)
        self.path, self.line, self.key = path, line, key


# --------------------------------------------------------------------------- schema

@dataclasses.dataclass
class Field:
    """One manifest key.

    Parameters
    ----------
    kind : str
        ``str``, ``int``, ``float``, ``bool``, ``path``, ``map`` (fixed keys, see
        ``schema``), ``dict`` (free mapping of options), ``list`` (of ``items``),
        ``cameras`` (camword string or list of camera names), ``wavelength``,
        ``steps``.
    required : bool
    default : any
        Used when the key is absent (and not required).
    doc : str
        One-line description (``describe_schema``, docs/launch.md).
    schema : dict, optional
        Sub-keys of a ``map``.
    items : Field, optional
        Element type of a ``list``.
    choices : tuple, optional
        Allowed values.
    minimum : number, optional
        Smallest allowed value of an ``int``/``float``.
    maximum : number, optional
        Largest allowed value of an ``int``/``float`` (sizes: :mod:`gpuspec.limits`).
    validate : callable, optional
        ``validate(value) -> str | None``: a further rule; the string is the error.
    """

    kind: str
    required: bool = False
    default: Any = None
    doc: str = ""
    schema: dict | None = None
    items: "Field | None" = None
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    validate: Callable | None = None


def _step_schema(**extra: Field) -> dict:
    s = {
        "after": Field("list", items=Field("str"), default=[],
                       doc="extra steps whose tasks must all finish before this step starts"),
        "options": Field("dict", default={},
                         doc="keyword arguments passed to the step function"),
    }
    s.update(extra)
    return s


#: Fields a per-camera input path may use: ``{camera}``, ``{night}``, ``{expid}`` (format
#: specs allowed, e.g. ``{expid:08d}``).
PATH_FIELDS = ("camera", "night", "expid")
_PATH_DOC = ("path, relative to the manifest's folder; may contain {camera}, {night}, {expid}; "
             "or a mapping camera -> path")

#: Calibration images given to preproc (``inputs.calib.<kind>``).
CALIB_KINDS = ("bias", "dark", "pixflat", "mask")
#: Per-camera inputs given at the top level of inputs / a night / an exposure (not in ``calib``):
#: the PSF and the nightly fiber flat applied by the calibration steps.
FILE_INPUTS = ("psf", "fiberflat")
#: Every per-camera input that a night or an exposure may override (``psf``, ``fiberflat``
#: plus the calibrations). The hook for nightly products: a new kind is added here and in
#: :func:`_camera_inputs_schema`, and :meth:`Manifest.camera_file` resolves it like the others.
CAMERA_INPUTS = FILE_INPUTS + CALIB_KINDS


def _camera_inputs_schema(where: str) -> dict:
    """``psf``, ``fiberflat`` and ``calib`` keys, for the inputs, a night or an exposure."""
    return {
        "psf": Field("camfile", doc=f"PSF per camera{where}, " + _PATH_DOC),
        "fiberflat": Field("camfile", doc=f"nightly fiber flat per camera{where} (used by sky, "
                                          "stdstars, fluxcalib, cframe instead of the "
                                          "fiberflatnight made from flat exposures), " + _PATH_DOC),
        "calib": Field("map", default={}, doc=f"calibration images{where}, " + _PATH_DOC,
                       schema={k: Field("camfile", doc=f"{k} image") for k in CALIB_KINDS}),
    }


def _group_defaults() -> dict:
    from ..coadd.group import DEFAULT_NSIDE, DEFAULT_PROGRAM, DEFAULT_SURVEY

    return dict(nside=DEFAULT_NSIDE, survey=DEFAULT_SURVEY, program=DEFAULT_PROGRAM)


_GROUP = _group_defaults()


def _calib_steps_schema() -> dict:
    """Settings of the calibration steps (docs/launch.md, "Calibration")."""
    docs = {"fiberflat": "flat-lamp frame -> exposures/{NIGHT}/{EXPID}/fiberflat-{cam}-{EXPID}.fits",
            "sky": "science frame + fiber flat -> exposures/{NIGHT}/{EXPID}/sky-{cam}-{EXPID}.fits",
            "stdstars": "b, r, z frames + skies + fiber flats of a spectrograph -> "
                        "exposures/{NIGHT}/{EXPID}/stdstars-{SP}-{EXPID}.fits",
            "fluxcalib": "frame + fiber flat + sky + stdstars -> "
                         "exposures/{NIGHT}/{EXPID}/fluxcalib-{cam}-{EXPID}.fits",
            "cframe": "frame + fiber flat + sky + fluxcalib -> "
                      "exposures/{NIGHT}/{EXPID}/cframe-{cam}-{EXPID}.fits"}
    out = {k: Field("map", default={}, schema=_step_schema(), doc=d) for k, d in docs.items()}
    out["fiberflatnight"] = Field("map", default={}, schema=_step_schema(
        method=Field("str", default="autocalib", choices=("autocalib", "average"),
                     doc="'autocalib': one task per arm and night over every spectrograph "
                         "(desi_autocalib_fiberflat, DESI's nightly flat); 'average': one task "
                         "per camera and night (desi_average_fiberflat)")),
        doc="the night's fiberflats -> calibnight/{NIGHT}/fiberflatnight-{cam}-{NIGHT}.fits")
    return {k: out[k] for k in CALIB_STEPS}


def _signal_names(d) -> str | None:
    import signal

    for task, sig in d.items():
        if not isinstance(sig, str) or not isinstance(getattr(signal, sig.upper(), None),
                                                      signal.Signals):
            return f"{task}: {_short(sig)} is not a signal name (e.g. SIGSEGV, SIGKILL)"
    return None


def _power_of_two(v) -> str | None:
    from ..limits import MAX_NSIDE

    if v < 1 or v > MAX_NSIDE or v & (v - 1):
        return f"{v!r} is not a HEALPix nside (a power of 2 between 1 and 2**29)"
    return None

_MAXF = __import__("gpuspec.limits", fromlist=["x"]).MAX_FIBERS_PER_CAMERA
_MAXT = __import__("gpuspec.limits", fromlist=["x"]).MAX_THREADS

SCHEMA: dict[str, Field] = {
    "production": Field("path", required=True,
                        doc="production folder (outputs, state database, logs); created if needed"),
    "registry": Field("str", default="desi",
                      doc="step implementations: 'desi' (gpuspec steps), 'toy' (tiny fake "
                          "steps for tests) or 'module:attribute'"),
    "backend": Field("str", default="auto", choices=("auto", "numpy", "cupy"),
                     doc="array backend of every task"),
    "inputs": Field("map", required=True, doc="raw data and calibrations", schema={
        "rawdir": Field("path", doc="raw data root: {rawdir}/{NIGHT}/{EXPID:08d}/desi-{EXPID:08d}"
                                    ".fits.fz and fibermap-{EXPID:08d}.fits"),
        "cameras": Field("cameras", required=True,
                         doc="cameras: camword ('a0123', 'a0b1') or list ([b0, r0])"),
        "exposures": Field("list", required=True, doc="exposures to process", items=Field(
            "map", schema={
                "night": Field("int", required=True, minimum=0, doc="YEARMMDD"),
                "expid": Field("int", required=True, minimum=0, doc="exposure id"),
                "raw": Field("path", doc="raw file (default from rawdir)"),
                "fibermap": Field("path", doc="fibermap file (default from rawdir)"),
                "cameras": Field("cameras", doc="cameras of this exposure (default inputs.cameras)"),
                "obstype": Field("str", choices=OBSTYPES,
                                 doc="SCIENCE or FLAT; default: OBSTYPE of the raw exposure "
                                     "header (given here, it must agree with a readable header)"),
                **_camera_inputs_schema(" of this exposure (overrides the night's and inputs')"),
            })),
        **_camera_inputs_schema(""),
        "nights": Field("nights", default={},
                        doc="per-night inputs (nightly products such as psfnight, "
                            "fiberflatnight): YEARMMDD -> {psf, fiberflat, calib}; override "
                            "inputs.psf/fiberflat/calib",
                        schema=_camera_inputs_schema(" of this night (overrides inputs')")),
    }),
    "steps": Field("steps", required=True,
                   doc="steps to run (a list of names, or a mapping name -> settings)", schema={
        "preproc": Field("map", default={}, schema=_step_schema(),
                         doc="raw -> preproc/{NIGHT}/{EXPID}/preproc-{cam}-{EXPID}.fits"),
        "extract": Field("map", default={}, doc="preproc -> per-bundle partial frames",
                         schema=_step_schema(
            bundles=Field("list", items=Field("int", minimum=0, maximum=_MAXF),
                          doc="bundles to extract (default: all nbundles)"),
            nbundles=Field("int", default=20, minimum=1, maximum=_MAXF,
                           doc="bundles per camera"),
            fibers_per_bundle=Field("int", default=SPECTER.bundlesize, minimum=1,
                                    maximum=_MAXF, doc="fibers per bundle"),
            bundles_per_task=Field("int", default=1, minimum=1, maximum=_MAXF,
                                   doc="bundles extracted by one task (task sizing)"),
            wavelength=Field("wavelength", default="default",
                             doc="'default' (DESI grids), 'psf' (the PSF's range) or "
                                 "{b: [min, max, step], r: ..., z: ...}"),
            flat_options=Field("dict", default=None,
                               doc="keyword arguments for the extraction of flat-lamp "
                                   "exposures (default: options)"))),
        "frame": Field("map", default={}, schema=_step_schema(),
                       doc="merge partial frames -> exposures/{NIGHT}/{EXPID}/frame-{cam}-{EXPID}.fits"),
        **_calib_steps_schema(),
        "group": Field("map", default={}, doc="frames -> healpix spectra", schema=_step_schema(
            input=Field("str", default="auto", choices=("auto", "frame", "cframe"),
                        doc="what is grouped: 'cframe' (calibrated), 'frame', or 'auto' "
                            "(cframes when the cframe step runs, else frames)"),
            nside=Field("int", default=_GROUP["nside"], minimum=1, validate=_power_of_two,
                        doc="HEALPix nside (NESTED, a power of 2)"),
            survey=Field("str", default=_GROUP["survey"],
                         doc="survey: in the healpix paths and the SURVEY keyword"),
            program=Field("str", default=_GROUP["program"],
                          doc="program: in the healpix paths and the PROGRAM keyword"),
            allow_missing=Field("bool", default=False,
                                doc="coadd what is available: a pixel whose frames partly "
                                    "failed is grouped from the others (missing frames in "
                                    "the header and the status); default strict"))),
        "coadd": Field("map", default={}, schema=_step_schema(),
                       doc="spectra -> healpix coadd"),
    }),
    "run": Field("map", default={}, doc="execution settings", schema={
        "progress_interval": Field("float", default=10.0, minimum=0,
                                   doc="seconds between rank 0 progress lines"),
        "rank0_works": Field("bool", default=True,
                             doc="rank 0 runs tasks too (in its main thread) besides scheduling"),
        "threads": Field("int", default=0, minimum=0, maximum=_MAXT,
                         doc="CPU threads (BLAS/OpenMP/numba) per rank; 0: gpuspec's default "
                             "(gpuspec.threads)"),
        "fail_tasks": Field("list", items=Field("str"), default=[],
                            doc="task names made to fail on purpose (tests, drills)"),
        "crash_tasks": Field("dict", default={}, validate=_signal_names,
                             doc="task name -> signal (SIGSEGV, SIGKILL, ...): the task's "
                                 "process kills itself with it (tests, drills)"),
        "isolate": Field("bool", default=True,
                         doc="run each rank's tasks in a task process, so that a task whose "
                             "process dies (signal, native crash, out-of-memory killer) "
                             "fails alone, with the cause"),
        "sleep": Field("float", default=0.0, minimum=0,
                       doc="seconds each task sleeps before running (tests, drills)"),
    }),
}

_YAML_TAGS = {
    "tag:yaml.org,2002:str": "string", "tag:yaml.org,2002:int": "integer",
    "tag:yaml.org,2002:float": "number", "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:null": "null", "tag:yaml.org,2002:map": "mapping",
    "tag:yaml.org,2002:seq": "list",
}


class _Validator:
    def __init__(self, path: str, basedir: str):
        self.path = path
        self.basedir = basedir
        self.lines: dict[str, int] = {}
        self._loader = yaml.SafeLoader("")

    def error(self, node, key, msg):
        line = node.start_mark.line + 1 if node is not None else None
        raise ManifestError(msg, self.path, line, key)

    def scalar(self, node, key=None):
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:  # never reached after _check_nodes; kept as a guard
            self.error(node, key, f"cannot read this value: {getattr(exc, 'problem', exc)}")

    def typename(self, node) -> str:
        return _YAML_TAGS.get(node.tag, node.tag)

    def check(self, node, field: Field, key: str):
        """The validated value of ``node`` for ``field`` (raises ManifestError)."""
        self.lines[key] = node.start_mark.line + 1
        kind = field.kind
        handler = {"map": self._map, "steps": self._map, "dict": self._dict,
                   "list": self._list, "cameras": self._cameras_of,
                   "wavelength": lambda n, f, k: self._wavelength(n, k),
                   "nights": self._nights,
                   "camfile": lambda n, f, k: self._camfile(n, k)}.get(kind, self._scalar)
        return handler(node, field, key)

    def _map(self, node, field, key):
        kind = field.kind
        if kind == "steps" and isinstance(node, yaml.SequenceNode):
            out = {}
            for i, item in enumerate(node.value):
                name = self._plain(item, f"{key}[{i}]", "a step name")
                if name not in field.schema:
                    self.error(item, f"{key}[{i}]", f"unknown step {name!r} "
                               f"(allowed: {', '.join(field.schema)})")
                out[name] = self._defaults(field.schema[name].schema, f"{key}.{name}")
                self.lines[f"{key}.{name}"] = item.start_mark.line + 1
            return out
        if node.tag == "tag:yaml.org,2002:null" and not field.required:
            return self._defaults(field.schema, key)
        if not isinstance(node, yaml.MappingNode):
            self.error(node, key, f"expected a mapping, got {self.typename(node)}")
        seen = {}
        for knode, vnode in node.value:
            name = self._plain(knode, key, "a key")
            sub = f"{key}.{name}" if key else name
            if name in seen:
                self.error(knode, sub, "duplicate key")
            if name not in field.schema:
                self.error(knode, sub, f"unknown key (allowed: {', '.join(field.schema)})")
            seen[name] = vnode
        out = {}
        for name, sf in field.schema.items():
            sub = f"{key}.{name}" if key else name
            if name in seen:
                out[name] = self.check(seen[name], sf, sub)
            elif kind == "steps":
                continue  # a step not listed is not run
            elif sf.required:
                self.error(node, sub, "missing required key")
            else:
                out[name] = self._default_of(sf, sub)
        return out

    def _dict(self, node, field, key):
        if node.tag == "tag:yaml.org,2002:null":
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, key, f"expected a mapping of options, got {self.typename(node)}")
        out = {}
        for knode, vnode in node.value:
            name = self._plain(knode, key, "an option name")
            out[name] = self.scalar(vnode, f"{key}.{name}")
            self.lines[f"{key}.{name}"] = knode.start_mark.line + 1
        if field.validate is not None:
            why = field.validate(out)
            if why:
                self.error(node, key, why)
        return out

    def _list(self, node, field, key):
        if node.tag == "tag:yaml.org,2002:null" and not field.required:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, key, f"expected a list, got {self.typename(node)}")
        return [self.check(item, field.items, f"{key}[{i}]")
                for i, item in enumerate(node.value)]

    def _cameras_of(self, node, field, key):
        if isinstance(node, yaml.SequenceNode):
            value = [self._plain(item, f"{key}[{i}]", "a camera name")
                     for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.ScalarNode):
            value = self.scalar(node)
            if not isinstance(value, str):
                self.error(node, key, f"expected a camword or a list of cameras, got "
                           f"{self.typename(node)} {_short(value)}")
        else:
            self.error(node, key, f"expected a camword or a list of cameras, got "
                       f"{self.typename(node)}")
        try:
            return parse_cameras(value)
        except ValueError as exc:
            self.error(node, key, str(exc))

    def _scalar(self, node, field, key):
        kind = field.kind
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, key, f"expected {self._kind_word(kind)}, got {self.typename(node)}")
        value = self.scalar(node)
        if kind in ("str", "path"):
            if not isinstance(value, str) or value == "":
                self.error(node, key, f"expected {self._kind_word(kind)}, got "
                           f"{self.typename(node)} {_short(value)}")
            if kind == "path":
                value = os.path.normpath(os.path.join(
                    self.basedir, os.path.expanduser(os.path.expandvars(value))))
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(node, key, f"expected an integer, got {self.typename(node)} {_short(value)}")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.error(node, key, f"expected a number, got {self.typename(node)} {_short(value)}")
            value = float(value)
        elif kind == "bool":
            if not isinstance(value, bool):
                self.error(node, key, f"expected true or false, got {self.typename(node)} "
                           f"{_short(value)}")
        if field.choices is not None and value not in field.choices:
            self.error(node, key, f"{_short(value)} is not one of {', '.join(map(str, field.choices))}")
        if field.minimum is not None and value < field.minimum:
            self.error(node, key, f"{_short(value)} is below the minimum {field.minimum}")
        if field.maximum is not None and value > field.maximum:
            self.error(node, key, f"{_short(value)} is above the maximum {field.maximum} "
                       "(docs/reliability.md, limits)")
        if field.kind == "float" and value != value:
            self.error(node, key, "expected a number, got NaN")
        if field.validate is not None:
            why = field.validate(value)
            if why:
                self.error(node, key, why)
        return value

    def _wavelength(self, node, key):
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node)
            if value in ("default", "psf"):
                return value
            self.error(node, key, f"expected 'default', 'psf' or a mapping arm -> [min, max, step]"
                       f", got {_short(value)}")
        if not isinstance(node, yaml.MappingNode):
            self.error(node, key, f"expected a mapping arm -> [min, max, step], got "
                       f"{self.typename(node)}")
        out = {}
        for knode, vnode in node.value:
            arm = self._plain(knode, key, "an arm (b, r or z)")
            sub = f"{key}.{arm}"
            if arm not in ("b", "r", "z"):
                self.error(knode, sub, "unknown arm (allowed: b, r, z)")
            vals = self.scalar(vnode, sub)
            ok = (isinstance(vals, list) and len(vals) == 3
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals))
            if not ok:
                self.error(vnode, sub, f"expected [min, max, step] (three numbers), got "
                           f"{_short(vals)}")
            wmin, wmax, step = (float(v) for v in vals)
            if not (math.isfinite(wmin) and math.isfinite(wmax) and math.isfinite(step)
                    and wmax > wmin and step > 0):
                self.error(vnode, sub, f"need finite min < max and step > 0, got {_short(vals)}")
            from ..extract.files import grid_size
            from ..limits import MAX_NWAVE

            n = grid_size(wmin, wmax, step)
            if n > MAX_NWAVE:
                self.error(vnode, sub, f"{_short(vals)} asks for {n:.4g} wavelengths; the limit "
                           f"is {MAX_NWAVE:,} (docs/reliability.md)")
            out[arm] = (wmin, wmax, step)
            self.lines[sub] = vnode.start_mark.line + 1
        return out

    def _camfile(self, node, key):
        """A path template, or a mapping camera -> path."""
        from ..camword import is_camera

        if not isinstance(node, yaml.MappingNode):
            return self.check(node, Field("path"), key)
        out = {}
        for knode, vnode in node.value:
            cam = self._plain(knode, key, "a camera name")
            if not is_camera(cam.lower()):
                self.error(knode, f"{key}.{cam}", f"not a camera name: {cam!r}")
            out[cam.lower()] = self.check(vnode, Field("path"), f"{key}.{cam}")
        return out

    def _nights(self, node, field, key):
        if node.tag == "tag:yaml.org,2002:null":
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, key, f"expected a mapping YEARMMDD -> inputs, got "
                       f"{self.typename(node)}")
        out = {}
        for knode, vnode in node.value:
            night = self.scalar(knode) if isinstance(knode, yaml.ScalarNode) else None
            if isinstance(night, bool) or not isinstance(night, int) or night < 0:
                self.error(knode, key, f"expected a night (YEARMMDD integer), got {_short(night)}")
            sub = f"{key}.{night}"
            if night in out:
                self.error(knode, sub, "duplicate night")
            out[night] = self.check(vnode, Field("map", schema=field.schema), sub)
        return out

    def _plain(self, node, key, what):
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, key, f"expected {what}, got {self.typename(node)}")
        v = self.scalar(node)
        if not isinstance(v, str):
            self.error(node, key, f"expected {what} (a string), got {self.typename(node)} "
                       f"{_short(v)}")
        return v

    @staticmethod
    def _kind_word(kind):
        return {"str": "a string", "path": "a path (string)", "int": "an integer",
                "float": "a number", "bool": "true or false"}.get(kind, kind)

    def _default_of(self, sf: Field, key: str):
        if sf.kind == "map":
            return self._defaults(sf.schema, key)
        if isinstance(sf.default, (list, dict)):
            return type(sf.default)(sf.default)
        return sf.default

    def _defaults(self, schema, key):
        return {name: self._default_of(sf, f"{key}.{name}") for name, sf in schema.items()}


# --------------------------------------------------------------------------- manifest

@dataclasses.dataclass
class Manifest:
    """A validated manifest.

    Attributes
    ----------
    path : str
        Absolute path of the YAML file ("<string>" when parsed from text).
    data : dict
        Validated values with defaults filled in; paths are absolute.
    lines : dict
        Dotted key (``inputs.exposures[0].expid``) -> line number, for error messages.
    text : str
        The YAML text as read.
    """

    path: str
    data: dict
    lines: dict
    text: str

    @property
    def production(self) -> str:
        """The production folder.

        Backends: host only.
        """
        return self.data["production"]

    @property
    def steps(self) -> list[str]:
        """Steps to run, in data-flow order.

        Backends: host only.
        """
        return [s for s in STEPS if s in self.data["steps"]]

    def line(self, key: str) -> int | None:
        """Line of a dotted key, or of its closest ancestor that has one.

        Backends: host only.
        """
        while key:
            if key in self.lines:
                return self.lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return None

    def error(self, key: str, message: str) -> ManifestError:
        """A :class:`ManifestError` for ``key`` (not raised).

        Backends: host only.
        """
        return ManifestError(message, self.path, self.line(key), key)

    def step(self, name: str) -> dict:
        """The settings of step ``name`` (empty when it has none).

        Backends: host only.
        """
        return self.data["steps"].get(name, {})

    def exposures(self) -> list[dict]:
        """Exposures with resolved ``raw``, ``fibermap`` and ``cameras``.

        Each dict also has ``key`` (``inputs.exposures[i]``, for error messages)
        and ``index``.

        Backends: host only.
        """
        inputs = self.data["inputs"]
        out = []
        for i, e in enumerate(inputs["exposures"]):
            key = f"inputs.exposures[{i}]"
            night, expid = e["night"], e["expid"]
            raw, fmap = e.get("raw"), e.get("fibermap")
            rawdir = inputs.get("rawdir")
            if rawdir is not None:
                d = os.path.join(rawdir, str(night), f"{expid:08d}")
                raw = raw or os.path.join(d, f"desi-{expid:08d}.fits.fz")
                fmap = fmap or os.path.join(d, f"fibermap-{expid:08d}.fits")
            out.append(dict(night=night, expid=expid, raw=raw, fibermap=fmap,
                            cameras=e.get("cameras") or inputs["cameras"], key=key, index=i,
                            obstype=e.get("obstype")))
        return out

    def nights(self) -> list[int]:
        """The nights of the exposures, sorted.

        Backends: host only.
        """
        return sorted({e["night"] for e in self.data["inputs"]["exposures"]})

    def input_source(self, what: str, exposure: dict | None = None) -> tuple[str | None, str]:
        """The template of a per-camera input and the dotted key it comes from.

        ``what`` is one of :data:`CAMERA_INPUTS`. The exposure's own entry wins,
        then ``inputs.nights[NIGHT]``, then ``inputs``.

        Backends: host only.
        """
        inputs = self.data["inputs"]
        levels = []
        if exposure is not None:
            levels.append((inputs["exposures"][exposure["index"]], exposure["key"]))
            night = inputs.get("nights", {}).get(exposure["night"])
            if night is not None:
                levels.append((night, f"inputs.nights.{exposure['night']}"))
        levels.append((inputs, "inputs"))
        top = what in FILE_INPUTS
        for d, key in levels:
            tmpl = d.get(what) if top else (d.get("calib") or {}).get(what)
            if tmpl is not None:
                return tmpl, f"{key}.{what}" if top else f"{key}.calib.{what}"
        return None, f"inputs.{what}" if top else f"inputs.calib.{what}"

    def camera_file(self, what: str, camera: str, exposure: dict | None = None) -> str | None:
        """Per-camera input path (``psf`` or a calibration kind) of one exposure.

        ``{camera}``, ``{night}`` and ``{expid}`` are filled in (``night`` and
        ``expid`` need ``exposure``, one of :meth:`exposures`).

        Backends: host only.
        """
        tmpl, key = self.input_source(what, exposure)
        if isinstance(tmpl, dict):
            tmpl = tmpl.get(camera)
        if tmpl is None:
            return None
        fields = dict(camera=camera)
        if exposure is not None:
            fields.update(night=exposure["night"], expid=exposure["expid"])
        try:
            return tmpl.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise self.error(key, f"cannot fill in {tmpl!r}: {type(exc).__name__} {exc} "
                                  f"(fields: {', '.join(PATH_FIELDS)})") from None


def _check_templates(m: Manifest) -> None:
    """Raise ManifestError for a per-camera path using a field other than PATH_FIELDS."""
    import string

    inputs = m.data["inputs"]
    places = [(inputs, "inputs")]
    places += [(n, f"inputs.nights.{night}") for night, n in inputs.get("nights", {}).items()]
    places += [(e, f"inputs.exposures[{i}]") for i, e in enumerate(inputs["exposures"])]
    for d, key in places:
        items = [(k, d.get(k)) for k in FILE_INPUTS] + [(f"calib.{k}", v) for k, v in
                                                         (d.get("calib") or {}).items()]
        items = [(f"{sub}.{c}", t) for sub, v in items
                 for c, t in (v.items() if isinstance(v, dict) else [(None, v)])]
        items = [(sub.removesuffix(".None"), t) for sub, t in items]
        for sub, tmpl in items:
            if tmpl is None:
                continue
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(tmpl) if f is not None}
            except ValueError as exc:
                raise m.error(f"{key}.{sub}", f"bad path template {tmpl!r}: {exc}") from None
            bad = sorted(n for n in names if n.split(".")[0].split("[")[0] not in PATH_FIELDS)
            if bad:
                raise m.error(f"{key}.{sub}", f"unknown field {{{bad[0]}}} in {tmpl!r} "
                                              f"(allowed: {', '.join(PATH_FIELDS)})")


def _check_cycles(m: Manifest) -> None:
    """Raise ManifestError if the step dependencies (chain + ``after``) have a cycle."""
    steps = m.steps
    deps: dict[str, list[tuple[str, str]]] = {s: [] for s in steps}
    for s in steps:
        up = STEP_CHAIN.get(s)
        if up in steps:
            deps[s].append((up, f"steps.{s}"))
        deps[s].extend((u, f"steps.{s}") for u in STEP_INPUTS.get(s, ()) if u in steps)
        for j, a in enumerate(m.step(s).get("after", [])):
            key = f"steps.{s}.after[{j}]"
            if a not in STEPS:
                raise m.error(key, f"unknown step {a!r} (allowed: {', '.join(STEPS)})")
            if a not in steps:
                raise m.error(key, f"step {a!r} is not among the steps to run")
            deps[s].append((a, key))
    state: dict[str, int] = {}
    stack: list[tuple[str, str]] = []

    def visit(s):
        state[s] = 1
        for d, key in deps[s]:
            stack.append((s, key))
            if state.get(d) == 1:
                i = next(k for k, (n, _) in enumerate(stack) if n == d)
                chain = [n for n, _ in stack[i:]] + [d]
                bad = next((k for _, k in reversed(stack[i:]) if ".after[" in k), key)
                raise m.error(bad, "dependency cycle between steps: "
                              + " -> ".join(reversed(chain)))
            if state.get(d) is None:
                visit(d)
            stack.pop()
        state[s] = 2

    for s in steps:
        if s not in state:
            visit(s)


def _unreadable(path: str) -> str | None:
    """Why an input file cannot be read (``not found``, ``is a directory``, ...), or None."""
    if not os.path.exists(path):
        return "not found"
    if os.path.isdir(path):
        return "is a directory, not a file"
    if not os.access(path, os.R_OK):
        return "is not readable (permissions)"
    return None


def _check_files(m: Manifest) -> None:
    """Raise ManifestError naming the key and line of the first missing input file."""
    steps = set(m.steps)
    if "preproc" in steps:
        for e in m.exposures():
            if e["raw"] is None:
                raise m.error(e["key"], "no raw file: give 'raw' or inputs.rawdir")
            why = _unreadable(e["raw"])
            if why:
                k = e["key"] + ".raw" if (e["key"] + ".raw") in m.lines else e["key"]
                raise m.error(k, f"raw file {why}: {e['raw']}")
            for kind in CALIB_KINDS:
                for cam in e["cameras"]:
                    tmpl, key = m.input_source(kind, e)
                    if isinstance(tmpl, dict) and cam not in tmpl:
                        raise m.error(key, f"no {kind} for camera {cam} of exposure "
                                      f"{e['expid']} (cameras: {', '.join(sorted(tmpl))})")
                    p = m.camera_file(kind, cam, e)
                    why = None if p is None else _unreadable(p)
                    if why:
                        raise m.error(m.input_source(kind, e)[1], f"{kind} file {why} "
                                      f"for camera {cam} of exposure {e['expid']}: {p}")
    if "extract" in steps:
        for e in m.exposures():
            for cam in e["cameras"]:
                p = m.camera_file("psf", cam, e)
                if p is None:
                    raise m.error("inputs", "missing required key inputs.psf (the extract "
                                  f"step needs a PSF; none given for exposure {e['expid']})")
                why = _unreadable(p)
                if why:
                    raise m.error(m.input_source("psf", e)[1], f"PSF {why} for camera "
                                  f"{cam} of exposure {e['expid']}: {p}")
    if "group" in steps or "preproc" in steps:
        for e in m.exposures():
            fm = e["fibermap"]
            if fm is None:
                if "group" in steps:
                    raise m.error(e["key"], "no fibermap: give 'fibermap' or inputs.rawdir "
                                  "(the group step needs it)")
                continue
            if not os.path.exists(fm) and ("group" in steps or m.lines.get(e["key"] + ".fibermap")):
                raise m.error(e["key"] + (".fibermap" if m.lines.get(e["key"] + ".fibermap")
                                          else ""), f"fibermap not found: {fm}")
    ext = m.step("extract")
    if "extract" in steps and ext.get("bundles") is not None:
        for j, b in enumerate(ext["bundles"]):
            if b >= ext["nbundles"]:
                raise m.error(f"steps.extract.bundles[{j}]",
                              f"bundle {b} out of range (nbundles={ext['nbundles']})")
    if {"extract", "frame"} <= steps and ext.get("bundles") is not None:
        b = sorted(set(ext["bundles"]))
        if any(y != x + 1 for x, y in zip(b, b[1:])):
            raise m.error("steps.extract.bundles", f"bundles {b} are not contiguous: a frame "
                          "covers one contiguous range of fibers")
    seen = set()
    for e in m.exposures():
        if e["expid"] in seen:
            raise m.error(e["key"] + ".expid", f"exposure {e['expid']} listed twice")
        seen.add(e["expid"])


#: YAML tags a manifest may use (SafeLoader's own); anything else (``!!python/...``,
#: ``!custom``) is refused before any value is built.
_SAFE_TAGS = frozenset("tag:yaml.org,2002:" + t for t in (
    "str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary", "set",
    "omap", "pairs", "merge", "value"))


def _check_nodes(root, path: str) -> None:
    """Bound the composed YAML graph before it is read: nodes once aliases are expanded
    (:data:`~gpuspec.limits.MAX_YAML_NODES`, a "billion laughs" is refused in linear
    time), nesting depth (:data:`~gpuspec.limits.MAX_YAML_DEPTH`), recursive aliases,
    and tags other than plain YAML values (never constructed)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        k = id(node)
        if done:
            kids = _children(node)
            size[k] = 1 + sum(size[id(c)] for c in kids)
            depth[k] = 1 + max((depth[id(c)] for c in kids), default=0)
            active.discard(k)
            if size[k] > MAX_YAML_NODES:
                raise ManifestError(f"more than {MAX_YAML_NODES:,} values once YAML aliases "
                                    "are expanded (an alias bomb?); the limit is in "
                                    "docs/reliability.md", path, node.start_mark.line + 1)
            if depth[k] > MAX_YAML_DEPTH:
                raise ManifestError(f"nested more than {MAX_YAML_DEPTH} levels deep", path,
                                    node.start_mark.line + 1)
            continue
        if k in size:
            continue
        if k in active:
            raise ManifestError("recursive YAML alias (a value contains itself)", path,
                                node.start_mark.line + 1)
        if node.tag not in _SAFE_TAGS:
            raise ManifestError(f"unsupported YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')}"
                                " (only plain values: strings, numbers, booleans, null, lists "
                                "and mappings; nothing is ever constructed from a tag)", path,
                                node.start_mark.line + 1)
        active.add(k)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def parse_manifest(text: str, path: str = "<string>", basedir: str | None = None,
                   check_files: bool = True) -> Manifest:
    """Validate manifest YAML text; see :func:`load_manifest`.

    Backends: host only.
    """
    if basedir is None:
        basedir = os.path.dirname(os.path.abspath(path)) if path != "<string>" else os.getcwd()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ManifestError(f"not valid YAML: {exc.problem or exc}", path,
                            mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"not valid YAML: {exc}", path) from None
    except RecursionError:
        raise ManifestError(f"nested too deeply (the limit is {MAX_YAML_DEPTH} levels)",
                            path) from None
    if root is None:
        raise ManifestError("empty manifest", path)
    _check_nodes(root, path)
    v = _Validator(path, basedir)
    data = v.check(root, Field("map", required=True, schema=SCHEMA), "")
    if not data["steps"]:
        raise ManifestError("no steps to run", path, v.lines.get("steps"), "steps")
    m = Manifest(path=path, data=data, lines=v.lines, text=text)
    _check_cycles(m)
    _check_templates(m)
    if check_files:
        _check_files(m)
    return m


def load_manifest(path: str, check_files: bool = True) -> Manifest:
    """Read and validate a manifest file.

    Parameters
    ----------
    path : str
        YAML file. Relative paths inside it are relative to its folder.
    check_files : bool
        Also check that the input files exist.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        With the file, line and key of the first problem.

    Backends: host only.
    """
    path = os.path.abspath(path)
    try:
        size = os.path.getsize(path)
        if os.path.isfile(path) and size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest of {size:,} bytes; the limit is "
                                f"{MAX_MANIFEST_BYTES:,} (docs/reliability.md)", path)
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read manifest: {exc.strerror}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ManifestError(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset "
                            f"{exc.start} cannot be decoded (save the manifest as UTF-8)",
                            path, line) from None
    return parse_manifest(text, path, check_files=check_files)


def describe_schema(schema: dict | None = None, prefix: str = "",
                    emit: Callable[[str], None] | None = None) -> list[str]:
    """Lines ``key (kind, required/default): doc`` for every key of the schema.

    Backends: host only.
    """
    schema = SCHEMA if schema is None else schema
    lines: list[str] = []
    for name, f in schema.items():
        key = f"{prefix}{name}"
        req = "required" if f.required else (f"default {f.default!r}"
                                             if f.default not in (None, {}, []) else "optional")
        lines.append(f"{key} ({f.kind}, {req}): {f.doc}")
        if f.schema:
            lines += describe_schema(f.schema, key + ".")
        if f.items is not None and f.items.schema:
            lines += describe_schema(f.items.schema, key + "[].")
    if emit:
        for ln in lines:
            emit(ln)
    return lines
