"""Deterministic random streams for the simulator.

Every random quantity of a simulated night is drawn from its own NumPy
``default_rng`` stream whose seed is derived from the user seed and a tuple of
keys (what is drawn, and for which petal / camera / exposure). Adding a camera,
an exposure or more fibers therefore never changes what the others got.

>>> a = stream(1, "noise", "b0", 100).normal()
>>> b = stream(1, "noise", "b0", 100).normal()
>>> a == b
True
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["stream", "key_int"]


def key_int(key) -> int:
    """Map a stream key (str or non-negative int) to a non-negative integer.

    Backends: host only (NumPy).
    """
    if isinstance(key, (bool, np.bool_)):
        key = int(key)
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"stream keys must be non-negative, got {key}")
        return int(key)
    return zlib.crc32(str(key).encode("utf-8"))


def stream(seed: int, *keys) -> np.random.Generator:
    """A NumPy ``Generator`` for ``seed`` and the keys (host-side, numpy only).

    Parameters
    ----------
    seed : int
        The user seed of the simulation (non-negative).
    *keys : str or int
        What the stream is for, e.g. ``("noise", "b0", expid)``.

    Returns
    -------
    numpy.random.Generator
        A PCG64 generator seeded with ``SeedSequence(seed, spawn_key=keys)``.

    Backends: host only (NumPy).
    """
    ss = np.random.SeedSequence(int(seed), spawn_key=tuple(key_int(k) for k in keys))
    return np.random.default_rng(ss)
