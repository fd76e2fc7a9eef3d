"""Loading a production: manifest -> checked registry -> task graph -> initial states.

:func:`load_plan` is the one place where a manifest is validated before work:
``gpuspec-run``, ``gpuspec-run --check``, ``--dry-run``, ``--task`` and the
Python API (:func:`gpuspec.launch.runner.run_manifest`) all call it. It raises
typed errors and prints nothing; the command line maps them to exit codes.

Checks, in order: the manifest itself (:func:`gpuspec.launch.manifest.load_manifest`),
the registry, the backend (``backend: cupy`` without a usable GPU), that every
listed step can be imported (all of them are reported at once), the step options
against the signatures of the step functions, and the task graph. Then, unless
``write_db`` is False, the state database is claimed and written.

States (:func:`compute_states`): a task is ``done`` when its dependencies are
done and its outputs exist and are not older than its inputs; otherwise
``ready`` when its dependencies are done, else ``waiting``. A re-run after a
crash therefore resumes: stale ``running`` tasks become ready again and done
tasks are not redone; failed tasks are retried.

Host only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from ..errors import GpuspecError
from .db import RunActive, db_path, manifest_pointer, open_rebuilding, run_dir
from .graph import Task, build_graph, cleanup_temporaries, outputs_current
from .manifest import Manifest, ManifestError, load_manifest
from .registry import Registry, StepUnavailable, get_registry

__all__ = ["Plan", "load_plan", "compute_states", "write_plan", "check_options",
           "StepsUnavailable", "UnknownOption", "PlanError", "RunActive"]

#: Every error :func:`load_plan` raises for a production that cannot start (ManifestError,
#: StepUnavailable, RunActive are all GpuspecErrors).
PlanError = GpuspecError


class StepsUnavailable(StepUnavailable):
    """Some listed steps cannot be imported; ``missing`` maps each to the reason."""

    def __init__(self, manifest: Manifest, missing: dict):
        self.missing = dict(missing)
        lines = [f"step {s!r} cannot run: {why}" for s, why in missing.items()]
        lines.append(f"remove the step(s) from 'steps' in {manifest.path} (line "
                     f"{manifest.line('steps')}) or install their implementation")
        super().__init__("\n".join(lines))


class UnknownOption(ManifestError):
    """A ``steps.<step>.options`` key that the step's function does not take."""


@dataclasses.dataclass
class Plan:
    """A planned production: manifest, registry, tasks, their initial states.

    ``missing`` lists the steps that cannot run here (only a dry run plans with
    some missing). ``notes``: what ``--check`` and ``--dry-run`` print about the
    production (flat exposures; calibrated or not), from
    :func:`gpuspec.launch.calibgraph.calibration_notes`.
    """

    manifest: Manifest
    registry: Registry
    tasks: list
    states: dict
    missing: dict = dataclasses.field(default_factory=dict)
    #: what planning had to repair (a corrupt state database moved aside and rebuilt)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def by_name(self) -> dict:
        """The tasks keyed by name.

        Backends: host only.
        """
        return {t.name: t for t in self.tasks}


def compute_states(tasks: list) -> dict:
    """Initial state of every task from files and dependencies (tasks in graph order).

    Backends: host only.
    """
    states: dict[str, str] = {}
    for t in tasks:
        deps_done = all(states[d] == "done" for d in t.deps)
        if deps_done and outputs_current(t):
            states[t.name] = "done"
        elif deps_done:
            states[t.name] = "ready"
        else:
            states[t.name] = "waiting"
    return states


def check_options(m: Manifest, reg: Registry, skip=()) -> None:
    """Raise :class:`UnknownOption` for a step option that cannot work.

    An option the step's functions do not take, one the launcher sets itself, a value
    of the wrong type, or a value the step's own check refuses
    (:meth:`gpuspec.launch.registry.Registry.option_problems`).

    Backends: host only.
    """
    for step in m.steps:
        if step in skip:
            continue
        for key in ("options", "flat_options"):
            for name, why in reg.option_problems(step, m.step(step).get(key) or {}):
                if why.startswith("unknown option"):
                    why = why.replace("unknown option", f"unknown option of step {step}", 1)
                raise UnknownOption(why, m.path, m.line(f"steps.{step}.{key}.{name}"),
                                    f"steps.{step}.{key}.{name}")


def _write_pointer(m: Manifest) -> None:
    """``run/manifest-path``: lets ``gpuspec status`` derive states when the database is lost."""
    from ..io.util import atomic_output

    try:
        with atomic_output(manifest_pointer(m.production)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(m.path + "\n")
    except (OSError, GpuspecError):  # not essential: the database records the path too
        pass


def _check_production(m: Manifest) -> None:
    """The production folder is a folder (or can be made) and can be written."""
    prod = m.production
    if os.path.exists(prod) and not os.path.isdir(prod):
        raise m.error("production", f"{prod} is a file, not a folder")
    from ..io.util import existing_ancestor

    d = existing_ancestor(prod)
    if not os.path.isdir(d):
        raise m.error("production", f"cannot create {prod}: {d} is a file, not a folder")
    if not os.access(d, os.W_OK | os.X_OK):
        raise m.error("production", f"{prod} cannot be written: folder {d} is not "
                                    "writable")
    run = os.path.join(prod, "run")
    if os.path.exists(run) and not os.path.isdir(run):
        raise m.error("production", f"{run} is a file, not a folder")
    state = os.path.join(run, "state.sqlite3")
    if os.path.exists(state) and not os.path.isfile(state):
        raise m.error("production", f"the state database {state} is a directory, not a file")
    for p in (run, state):
        if os.path.exists(p) and not os.access(p, os.W_OK):
            raise m.error("production", f"{p} is not writable")


def _check_backend(m: Manifest) -> None:
    from .. import backend as _backend

    try:
        _backend.resolve(m.data["backend"])
    except _backend.BackendUnavailable as exc:
        raise m.error("backend", str(exc)) from None


def load_plan(manifest: str | Manifest, *, write_db: bool = True, force: bool = False,
              check_backend: bool = True, require_steps: bool = True) -> Plan:
    """Validate a production and plan it.

    Parameters
    ----------
    manifest : str or Manifest
        Manifest file (or an already loaded one).
    write_db : bool
        Claim the state database and record the plan (False: ``--check`` and
        ``--dry-run`` write nothing).
    force : bool
        Take over a claim by a run that cannot be checked (another host).
    check_backend : bool
        Refuse a backend that cannot run here (a dry run skips it).
    require_steps : bool
        Raise when a listed step cannot be imported (a dry run lists the tasks anyway).

    Returns
    -------
    Plan

    Raises
    ------
    ManifestError
        Bad manifest, unusable backend (key ``backend``), an unknown step option
        (:class:`UnknownOption`), or a graph problem; each names file, line and key.
    StepUnavailable
        Unknown registry, or :class:`StepsUnavailable` naming every missing step.
    RunActive
        Another run is writing this production.

    Backends: host only (checks that the manifest's ``backend`` can run, unless told not to).
    """
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    _check_production(m)
    reg = get_registry(m.data["registry"])
    if check_backend:
        _check_backend(m)
    missing = reg.unavailable(m.steps)
    if missing and require_steps:
        raise StepsUnavailable(m, missing)
    check_options(m, reg, skip=missing)
    tasks = build_graph(m, ext=reg.ext)
    states = compute_states(tasks)
    notes = []
    if write_db:
        note = write_plan(m, reg, tasks, states, force=force)
        notes = [note] if note else []
    from .calibgraph import calibration_notes

    return Plan(m, reg, tasks, states, missing, notes + calibration_notes(m, ext=reg.ext))


def write_plan(m: Manifest, reg: Registry, tasks: list[Task], states: dict,
               force: bool = False) -> str | None:
    """Claim the production's database, remove leftovers of killed writers, record the states.

    A corrupt database is moved aside and rebuilt from these states (derived from the
    products on disk); returns the note saying so (also logged as a warning), else None.

    Backends: host only.
    """
    try:
        os.makedirs(run_dir(m.production), exist_ok=True)
    except OSError as exc:
        raise m.error("production", f"cannot create {run_dir(m.production)}: "
                                    f"{exc.strerror}") from None
    db, note = open_rebuilding(db_path(m.production))
    if note:
        logging.getLogger(__name__).warning("%s", note)
    _write_pointer(m)
    with db:
        db.claim_run(f"gpuspec-run {m.path}", force=force)
        for t in tasks:
            if states[t.name] != "done":
                cleanup_temporaries(t)
        db.sync_tasks(tasks, states)
        db.update_many([t.name for t in tasks if states[t.name] != "done"], error=None,
                       warning=None)
        db.set_meta(manifest_path=m.path, manifest_text=m.text, registry=reg.name,
                    planned=time.time())
    return note
