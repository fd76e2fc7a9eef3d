"""Step registries: step name -> the Python function that runs one task of that step.

A :class:`Registry` maps each step of the graph (``preproc``, ``extract``,
``frame``, ``group``, ``coadd``) to a :class:`StepSpec`: the task function
(``func(task, ctx)``, given as ``"module:attribute"`` and imported only when
needed) and the library functions it needs. A step whose module is missing is
reported as unavailable, with the import error, before anything runs.

This module is the framework only; the registries themselves live in their own
modules and depend on this one alone. :data:`REGISTRIES` names them:

``desi``
    :data:`gpuspec.launch.steps.DESI`: the gpuspec steps, products in FITS.
``toy``
    :data:`gpuspec.launch.toy.TOY`: tiny pure-Python steps writing JSON, for tests
    and drills of the launcher.
``module:attribute``
    Any other :class:`Registry` object.

Host only (no array work).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable

from ..errors import GpuspecError

__all__ = ["StepSpec", "Registry", "TaskContext", "StepUnavailable", "REGISTRIES",
           "get_registry", "import_target"]

#: Registry names accepted by the manifest's ``registry`` key besides ``module:attribute``.
REGISTRIES = {
    "desi": "gpuspec.launch.steps:DESI",
    "toy": "gpuspec.launch.toy:TOY",
}


class StepUnavailable(GpuspecError, RuntimeError):
    """A step's implementation (or a registry) cannot be imported."""


@dataclasses.dataclass
class TaskContext:
    """What a task function gets besides its task.

    Attributes
    ----------
    backend : str
        Array backend policy of the manifest (``auto``/``numpy``/``cupy``).
    production : str
        Production folder.
    rank : int
        MPI rank running the task (0 without MPI).
    device : str
        Device description.
    """

    backend: str = "auto"
    production: str = "."
    rank: int = 0
    device: str = "cpu"


@dataclasses.dataclass
class StepSpec:
    """One step.

    Attributes
    ----------
    func : str or callable
        ``func(task, ctx)``; ``"module:attribute"`` is imported on first use.
    needs : tuple of str
        ``"module:attribute"`` names the step calls; all must import for the
        step to be available. The manifest's ``steps.<step>.options`` are the
        keyword arguments of ``needs[0]``; when it takes ``**kwargs`` (forwarded
        to the next one), those of ``needs[1]`` count too, and so on.
    doc : str
        What the step does.
    reserved : tuple of str
        Arguments the task function sets itself from the manifest (input and output
        files, the backend): never accepted as options.
    check : str or callable, optional
        ``check(**options)`` raising on an option value that cannot work (ranges);
        ``"module:attribute"`` is imported when needed. Used by ``--check``.
    """

    func: str | Callable
    needs: tuple = ()
    doc: str = ""
    reserved: tuple = ()
    check: str | Callable | None = None

    def load(self) -> Callable:
        """The step's function (importing ``module:function`` targets).

        Backends: host only.
        """
        return import_target(self.func) if isinstance(self.func, str) else self.func


@dataclasses.dataclass
class Registry:
    """Step name -> :class:`StepSpec`, plus the file extension of the products."""

    name: str
    steps: dict
    ext: str = "fits"

    def unavailable(self, names) -> dict[str, str]:
        """``{step: reason}`` for the steps among ``names`` that cannot run here.

        Backends: host only.
        """
        out = {}
        for n in names:
            spec = self.steps.get(n)
            if spec is None:
                out[n] = f"registry {self.name!r} has no step {n!r}"
                continue
            for target in (spec.func, *spec.needs):
                if not isinstance(target, str):
                    continue
                try:
                    import_target(target)
                except (ImportError, AttributeError) as exc:
                    out[n] = f"needs {target}, which is not available ({type(exc).__name__}: {exc})"
                    break
        return out

    def unknown_options(self, step: str, options: dict) -> list[str]:
        """Options that the library functions of ``step`` (its ``needs``) do not take.

        Empty when the step has no ``needs`` or when every function of the chain
        takes ``**kwargs``. Call it for available steps (:meth:`unavailable`):
        an import error or a function without a signature is raised, never taken
        as "anything goes".

        Backends: host only.
        """
        spec = self.steps.get(step)
        if spec is None or not spec.needs or not options:
            return []
        accepted: set[str] = set()
        for target in spec.needs:
            params = inspect.signature(import_target(target)).parameters
            accepted |= {k for k, p in params.items()
                         if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                return [k for k in options if k not in accepted]
        return []

    def option_problems(self, step: str, options: dict) -> list[tuple[str, str]]:
        """``(option, why)`` for every option of ``step`` that cannot work.

        Unknown names (:meth:`unknown_options`), names the task function sets itself
        (``StepSpec.reserved``), values of the wrong type for the function's
        parameter (from its annotation, else its default: a boolean option needs
        true/false, a number a number, a mapping is refused where a scalar is
        expected), and values refused by ``StepSpec.check``.

        Backends: host only.
        """
        spec = self.steps.get(step)
        if spec is None or not options:
            return []
        out = [(k, "unknown option (not an argument of "
                   f"{' or '.join(spec.needs) if spec.needs else step})")
               for k in self.unknown_options(step, options)]
        bad = {k for k, _ in out}
        for k in options:
            if k in spec.reserved and k not in bad:
                out.append((k, "set by the launcher from the manifest (inputs, step "
                               "settings), not an option"))
                bad.add(k)
        params = self._parameters(spec)
        for k, v in options.items():
            if k in bad or k not in params:
                continue
            why = _type_problem(v, params[k])
            if why:
                out.append((k, why))
                bad.add(k)
        if spec.check is not None and not out:
            chk = import_target(spec.check) if isinstance(spec.check, str) else spec.check
            try:
                chk(**options)
            except (GpuspecError, ValueError, TypeError) as exc:
                name = next((k for k in options if k in str(exc)), next(iter(options)))
                out.append((name, str(exc).splitlines()[0]))
        return out

    @staticmethod
    def _parameters(spec: StepSpec) -> dict:
        """name -> inspect.Parameter over the chain of ``needs`` (the first one wins)."""
        out: dict = {}
        for target in spec.needs:
            params = inspect.signature(import_target(target)).parameters
            for k, p in params.items():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    out.setdefault(k, p)
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                break
        return out

    def func(self, step: str) -> Callable:
        """The function of ``step``; StepUnavailable if it cannot be imported.

        Backends: host only.
        """
        spec = self.steps.get(step)
        if spec is None:
            raise StepUnavailable(f"registry {self.name!r} has no step {step!r}")
        try:
            return spec.load()
        except (ImportError, AttributeError) as exc:
            raise StepUnavailable(f"step {step!r}: cannot import {spec.func}: {exc}") from exc


_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,),
          "None": (type(None),)}
_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          type(None): "null"}


def _accepted(p: inspect.Parameter) -> tuple | None:
    """Python types a parameter takes, from its annotation (else its default); None: any."""
    ann = p.annotation
    if isinstance(ann, str) and ann:
        types = []
        for tok in (t.strip() for t in ann.split("|")):
            if tok not in _TYPES:
                return None
            types.extend(_TYPES[tok])
        return tuple(types)
    if ann in (bool, int, float, str):
        return _TYPES[ann.__name__]
    d = p.default
    if d is inspect.Parameter.empty or d is None:
        return None
    for t in (bool, int, float, str):
        if type(d) is t:
            return _TYPES[t.__name__]
    return None


def _type_problem(value, p: inspect.Parameter) -> str | None:
    """Why ``value`` cannot be given for parameter ``p`` (wrong type), or None."""
    types = _accepted(p)
    if types is None:
        return None
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if isinstance(value, float) and float in types and value != value:
        ok = False
    if ok:
        return None
    shown = [t for t in types if t in _WORDS and not (t is int and float in types)]
    want = " or ".join(dict.fromkeys(_WORDS[t] for t in shown))
    if isinstance(value, float) and value != value:
        return f"expected {want} (the type of {p.name}), got NaN"
    got = {dict: "a mapping", list: "a list", bool: "a boolean", str: "a string",
           int: "an integer", float: "a number", type(None): "null"}.get(type(value),
                                                                       type(value).__name__)
    return f"expected {want} (the type of {p.name}), got {got}"


def import_target(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute.

    Backends: host only.
    """
    mod, _, attr = target.partition(":")
    obj = importlib.import_module(mod)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def get_registry(name: str) -> Registry:
    """A name of :data:`REGISTRIES` or ``module:attribute`` -> :class:`Registry`.

    Raises
    ------
    StepUnavailable
        Unknown name, import failure, or not a Registry.

    Backends: host only.
    """
    target = REGISTRIES.get(name, name)
    if ":" not in target:
        raise StepUnavailable(f"unknown registry {name!r} (expected "
                              f"{', '.join(REGISTRIES)} or module:attribute)")
    try:
        reg = import_target(target)
    except (ImportError, AttributeError) as exc:
        raise StepUnavailable(f"cannot load registry {name!r}: {type(exc).__name__}: {exc}") \
            from exc
    if not isinstance(reg, Registry):
        raise StepUnavailable(f"{name} is not a gpuspec.launch.registry.Registry")
    return reg
