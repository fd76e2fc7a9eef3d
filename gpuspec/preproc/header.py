"""Header helpers for preproc: DEPNAMnn/DEPVERnn provenance and merging the primary header.

Headers are converted to dicts by :func:`gpuspec.io.util.header_dict` (the one
converter) and validated by :func:`gpuspec.io.raw.raw_layout` (the one raw-header
validation); the layout keywords that are never copied are
:func:`gpuspec.io.util.is_structural`. Host only.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..io.util import header_dict, is_structural

__all__ = ["set_dependency", "add_missing_keys"]

_DEP_RE = re.compile(r"^DEPNAM(\d\d)$")


def set_dependency(header: dict, name: str, version: Any) -> None:
    """Record ``name = version`` as a desiutil-style DEPNAMnn/DEPVERnn pair (in place).

    Backends: host only.
    """
    used = {}
    for k, v in header.items():
        m = _DEP_RE.match(k)
        if m:
            used[v] = int(m.group(1))
    if name in used:
        header[f"DEPVER{used[name]:02d}"] = version
        return
    i = 0
    while f"DEPNAM{i:02d}" in header:
        i += 1
    if i > 99:  # pragma: no cover
        raise ValueError("too many DEPNAMnn keywords")
    header[f"DEPNAM{i:02d}"] = name
    header[f"DEPVER{i:02d}"] = version


def add_missing_keys(header: dict, other: Mapping | None) -> None:
    """Append the keywords of ``other`` that ``header`` lacks (layout keywords skipped).

    Backends: host only.
    """
    if not other:
        return
    for k, v in header_dict(other).items():
        if is_structural(k) or k in header:
            continue
        header[k] = v
