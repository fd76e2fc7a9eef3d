"""Raw CCD geometry: four amplifiers with prescan, overscan columns and overscan rows.

The layout follows DESI (and ``shared/reference`` Case A). Amps A and B read the
bottom half of the CCD, C and D the top half; A and C the left half. Raw columns
run ``[prescan A][data A][overscan A][overscan B][data B][prescan B]`` and raw
rows ``[data A/B][ORSEC A/B][ORSEC C/D][data C/D]``. Data sections map onto the
trimmed CCD (CCDSEC) without flips. PRESEC and BIASSEC cover the data rows of
their amp, ORSEC the data columns. Full size: 7 prescan columns, 64 overscan
columns and 32 overscan rows per amp, trimmed 4128 rows × 4114 columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..io.util import format_sec

__all__ = ["AmpGeometry", "CCDGeometry", "AMPS", "MIN_AMP_WIDTH", "MIN_AMP_ROWS"]

AMPS = ("A", "B", "C", "D")
#: desispec's overscan cosmic-trail finder looks 300 columns left of BIASSEC in amps A/C.
MIN_AMP_WIDTH = 300
#: compute_overscan_step ignores 50 rows at each end of an amp.
MIN_AMP_ROWS = 128


@dataclass(frozen=True)
class AmpGeometry:
    """Slices of one amplifier (numpy ``(yslice, xslice)`` pairs)."""

    name: str
    data: tuple[slice, slice]        # DATASEC in the raw image
    ccd: tuple[slice, slice]         # CCDSEC in the trimmed image
    prescan: tuple[slice, slice]     # PRESEC
    bias: tuple[slice, slice]        # BIASSEC (overscan columns)
    orsec: tuple[slice, slice]       # ORSEC (overscan rows)
    region: tuple[slice, slice]      # every raw pixel read by this amp (incl. corners)

    def header(self) -> dict:
        """Section keywords of this amp in FITS syntax.

        Backends: host only (NumPy).
        """
        a = self.name
        return {f"PRESEC{a}": format_sec(*self.prescan), f"DATASEC{a}": format_sec(*self.data),
                f"BIASSEC{a}": format_sec(*self.bias), f"ORSEC{a}": format_sec(*self.orsec),
                f"CCDSEC{a}": format_sec(*self.ccd)}


@dataclass(frozen=True)
class CCDGeometry:
    """Raw and trimmed shapes of a 4-amp CCD.

    Parameters
    ----------
    ny, nx : int
        Trimmed (CCDSEC) shape; split between the amps as ``ny//2`` bottom rows
        and ``nx//2`` left columns.
    npre : int
        Prescan columns per amp.
    nover : int
        Overscan columns per amp (BIASSEC).
    norow : int
        Overscan rows per amp (ORSEC).
    """

    ny: int
    nx: int
    npre: int = 7
    nover: int = 64
    norow: int = 32
    amps: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.ny < 4 or self.nx < 4:
            raise ValueError(f"CCD too small: {self.ny}x{self.nx}")
        if min(self.npre, self.nover, self.norow) < 1:
            raise ValueError("prescan, overscan columns and overscan rows must be >= 1")
        nyb, nxl = self.ny // 2, self.nx // 2
        nyt, nxr = self.ny - nyb, self.nx - nxl
        pre, ov, orow = self.npre, self.nover, self.norow
        # raw x: [pre A][data A][ov A][ov B][data B][pre B]
        xa = slice(pre, pre + nxl)
        xova = slice(pre + nxl, pre + nxl + ov)
        xovb = slice(pre + nxl + ov, pre + nxl + 2 * ov)
        xb = slice(pre + nxl + 2 * ov, pre + nxl + 2 * ov + nxr)
        xpreb = slice(xb.stop, xb.stop + pre)
        xprea = slice(0, pre)
        # raw y: [data bottom][orsec bottom][orsec top][data top]
        yb = slice(0, nyb)
        yorb = slice(nyb, nyb + orow)
        yort = slice(nyb + orow, nyb + 2 * orow)
        yt = slice(nyb + 2 * orow, nyb + 2 * orow + nyt)
        left = slice(0, xova.stop)
        right = slice(xova.stop, xpreb.stop)
        bottom = slice(0, yorb.stop)
        top = slice(yorb.stop, yt.stop)
        amps = {
            "A": AmpGeometry("A", (yb, xa), (slice(0, nyb), slice(0, nxl)), (yb, xprea),
                             (yb, xova), (yorb, xa), (bottom, left)),
            "B": AmpGeometry("B", (yb, xb), (slice(0, nyb), slice(nxl, self.nx)), (yb, xpreb),
                             (yb, xovb), (yorb, xb), (bottom, right)),
            "C": AmpGeometry("C", (yt, xa), (slice(nyb, self.ny), slice(0, nxl)), (yt, xprea),
                             (yt, xova), (yort, xa), (top, left)),
            "D": AmpGeometry("D", (yt, xb), (slice(nyb, self.ny), slice(nxl, self.nx)),
                             (yt, xpreb), (yt, xovb), (yort, xb), (top, right)),
        }
        object.__setattr__(self, "amps", amps)

    @classmethod
    def for_trimmed(cls, ny: int, nx: int, full_size: bool) -> "CCDGeometry":
        """DESI geometry for a trimmed ``ny × nx`` CCD.

        Full-size CCDs use DESI's 7 prescan columns. Cropped ones get wider
        prescans so that prescan + data of amps A and C spans at least
        :data:`MIN_AMP_WIDTH` columns (desispec's trail finder needs them).

        Backends: host only (NumPy).
        """
        npre = 7 if full_size else max(7, MIN_AMP_WIDTH - nx // 2)
        return cls(ny=ny, nx=nx, npre=npre)

    @property
    def trimmed_shape(self) -> tuple[int, int]:
        """(ny, nx) of the trimmed image.

        Backends: host only (plain values).
        """
        return (self.ny, self.nx)

    @property
    def raw_shape(self) -> tuple[int, int]:
        """(ny, nx) of the raw image.

        Backends: host only (plain values).
        """
        return (self.ny + 2 * self.norow, self.nx + 2 * (self.npre + self.nover))

    def header(self) -> dict:
        """All section keywords (PRESECx, DATASECx, BIASSECx, ORSECx, CCDSECx).

        Backends: host only (NumPy).
        """
        out = {}
        for a in AMPS:
            out.update(self.amps[a].header())
        return out

    def amp_index_map(self) -> np.ndarray:
        """int8 raw-shape map of the amp (0..3 for A..D) that reads each raw pixel.

        Backends: host only (NumPy).
        """
        m = np.empty(self.raw_shape, dtype=np.int8)
        for i, a in enumerate(AMPS):
            m[self.amps[a].region] = i
        return m

    def trimmed_amp_map(self) -> np.ndarray:
        """int8 trimmed-shape map of the amp (0..3) of each CCD pixel.

        Backends: host only (NumPy).
        """
        m = np.empty(self.trimmed_shape, dtype=np.int8)
        for i, a in enumerate(AMPS):
            m[self.amps[a].ccd] = i
        return m

    def to_raw(self, trimmed: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Place a trimmed image into a raw-shape array (non-data pixels = ``fill``).

        Backends: host only (NumPy).
        """
        out = np.full(self.raw_shape, fill, dtype=trimmed.dtype)
        for a in AMPS:
            g = self.amps[a]
            out[g.data] = trimmed[g.ccd]
        return out

    def to_trimmed(self, raw: np.ndarray) -> np.ndarray:
        """Extract the data sections of a raw-shape array into the trimmed image.

        Backends: host only (NumPy).
        """
        out = np.empty(self.trimmed_shape, dtype=raw.dtype)
        for a in AMPS:
            g = self.amps[a]
            out[g.ccd] = raw[g.data]
        return out
