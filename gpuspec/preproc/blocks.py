"""Blocks of rows for the per-pixel steps of preproc (one code path, a size per backend).

The per-pixel steps (calibration, saturation and read noise, cosmic-ray candidates) run
block of rows by block of rows, so every temporary is a block and never a full image:
on a CPU a block of :data:`CPU_ROWS` rows of a 4114-column image (32 x 4114 float64 =
1 MB) stays in the L2 cache between the operations of a step; on a GPU a block of
:data:`GPU_ROWS` rows is large enough for full-occupancy kernels. The size is a tuning
parameter only: the arithmetic, and the answer, do not depend on it.

Backends: numpy and cupy (host-side slices).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CPU_ROWS", "GPU_ROWS", "block_rows", "row_blocks"]

#: Rows per block on a CPU (numpy).
CPU_ROWS = 32
#: Rows per block on a GPU (cupy).
GPU_ROWS = 1024


def block_rows(xp) -> int:
    """Rows per block for the backend ``xp``.

    Backends: host only.
    """
    return CPU_ROWS if xp is np else GPU_ROWS


def row_blocks(start: int, stop: int, xp) -> list:
    """Row slices covering ``start .. stop`` in blocks of :func:`block_rows` rows.

    Backends: host only.
    """
    n = block_rows(xp)
    return [slice(r, min(r + n, stop)) for r in range(start, stop, n)]
