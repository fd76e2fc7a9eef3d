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
    """

    func: str | Callable
    needs: tuple = ()
    doc: str = ""

    def load(self) -> Callable:
        return import_target(self.func) if isinstance(self.func, str) else self.func


@dataclasses.dataclass
class Registry:
    """Step name -> :class:`StepSpec`, plus the file extension of the products."""

    name: str
    steps: dict
    ext: str = "fits"

    def unavailable(self, names) -> dict[str, str]:
        """``{step: reason}`` for the steps among ``names`` that cannot run here."""
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

    def func(self, step: str) -> Callable:
        spec = self.steps.get(step)
        if spec is None:
            raise StepUnavailable(f"registry {self.name!r} has no step {step!r}")
        try:
            return spec.load()
        except (ImportError, AttributeError) as exc:
            raise StepUnavailable(f"step {step!r}: cannot import {spec.func}: {exc}") from exc


def import_target(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
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
