"""Binary morphology on numpy or cupy arrays: 3x3 dilation and the cosmic-mask repair.

The repair is desispec's: the OR of binary closings of the mask with seven
linear 11x11 structuring elements (lines at 0, 20, 45, 70, 110, 135 and 160
degrees through the centre), which joins the pieces of a cosmic-ray track.
A closing is a dilation (border 0) followed by an erosion (border 1), with
``scipy.ndimage`` semantics; on the GPU ``cupyx.scipy.ndimage`` runs the same
operations on the device.

Backends: numpy (scipy.ndimage) and cupy (cupyx.scipy.ndimage).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..backend import get_array_module, is_cupy, scipy_module

__all__ = ["linear_element", "repair_elements", "dilate3x3", "repair_mask",
           "REPAIR_ANGLES"]

#: Angles (degrees) of the linear structuring elements of the mask repair.
REPAIR_ANGLES = (0, 20, 45, 70, 110, 135, 160)


def linear_element(n: int, m: int, angle: float) -> np.ndarray:
    """An ``m x n`` (rows x columns) 0/1 element with a line through the centre at ``angle``.

    Built like desispec's ``LinearSelectionElement``: for each column x the row is
    ``int(yc + b·(x - xc))`` with ``b = tan`` of the angle folded into [0, 45]
    degrees, then the element is transposed and/or flipped for the other octants.
    ``int()`` truncation makes the non-axis lines slightly asymmetric, which
    matters for exact parity. Host (numpy) array; moved to the device by the caller.
    """
    if not 0 <= angle < 180:
        raise ValueError(f"angle ({angle}) must be in [0, 180)")
    se = np.zeros((m, n), dtype=bool)
    xc, yc = n // 2, m // 2
    if angle < 45:
        b = math.tan(math.radians(angle))
    elif angle < 90:
        b = math.tan(math.radians(90 - angle))
    elif angle < 135:
        b = math.tan(math.radians(angle - 90))
    else:
        b = math.tan(math.radians(180 - angle))
    for x in range(n):
        y = int(yc + b * (x - xc))
        if 0 <= y < m:
            se[y, x] = True
    if angle < 45:
        return se
    if angle < 90:
        return np.ascontiguousarray(se.T)
    if angle < 135:
        return np.ascontiguousarray(se.T[:, ::-1])
    return np.ascontiguousarray(se[:, ::-1])


@functools.lru_cache(maxsize=4)
def repair_elements(n: int = 11, m: int = 11) -> tuple:
    """The seven structuring elements of the repair (numpy bool arrays, host).

    Host only (NumPy elements; callers move them with ``xp.asarray``).
    """
    return tuple(linear_element(n, m, a) for a in REPAIR_ANGLES)


def dilate3x3(mask):
    """Dilation of a boolean image by a 3x3 square (zero outside the image).

    Backends: numpy and cupy.
    """
    xp = get_array_module(mask)
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[1:, 1:] |= mask[:-1, :-1]
    out[:-1, :-1] |= mask[1:, 1:]
    out[1:, :-1] |= mask[:-1, 1:]
    out[:-1, 1:] |= mask[1:, :-1]
    return out.astype(xp.bool_, copy=False)


def repair_mask(mask, n: int = 11, m: int = 11):
    """OR of the binary closings of ``mask`` with the seven linear elements.

    Parameters
    ----------
    mask : bool array (ny, nx), numpy or cupy

    Returns
    -------
    bool array, same device.

    Backends: numpy (scipy.ndimage) and cupy (cupyx.scipy.ndimage).
    """
    xp = get_array_module(mask)
    ndi = scipy_module(xp, "ndimage")
    bmask = mask > 0
    out = xp.zeros(bmask.shape, dtype=bool)
    if not is_cupy(bmask) and not bmask.any():
        return out
    for se in repair_elements(n, m):
        s = xp.asarray(se)
        dil = ndi.binary_dilation(bmask, structure=s)
        clo = ndi.binary_erosion(dil, structure=s, border_value=1)
        out |= clo
    return out
