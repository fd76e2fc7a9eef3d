"""Mask bits with the desispec names and bit numbers.

``ccdmask`` is used in preproc MASK images, ``specmask`` in frame/spectra/coadd
MASK arrays and ``fibermask`` in FIBERSTATUS / COADD_FIBERSTATUS. The numbers
are desispec's (``desispec.maskbits``) so that files written by gpuspec decode
to the same names in desispec, and vice versa.

Examples
--------
>>> from gpuspec.maskbits import ccdmask
>>> ccdmask.COSMIC
16
>>> ccdmask.names(16 | 1)
['BAD', 'COSMIC']
"""

from __future__ import annotations

__all__ = ["BitMask", "ccdmask", "specmask", "fibermask"]


class BitMask:
    """A named set of bits: attribute access gives the mask value (``2**bit``)."""

    def __init__(self, name: str, bits: list[tuple[str, int, str]]):
        self._name = name
        self._bits = {n: (b, c) for n, b, c in bits}
        self._bynum = {b: n for n, b, c in bits}

    def __getattr__(self, key: str) -> int:
        try:
            return 1 << self._bits[key][0]
        except KeyError:
            raise AttributeError(f"{self._name} has no bit named {key!r}") from None

    def mask(self, name_or_num) -> int:
        """Mask value of a bit given by name, or by number.

        Backends: host only (Python ints and names); apply the bits to arrays of any backend.
        """
        if isinstance(name_or_num, str):
            return getattr(self, name_or_num)
        return 1 << int(name_or_num)

    def bitnum(self, name: str) -> int:
        """Bit number of ``name``.

        Backends: host only (Python ints and names); apply the bits to arrays of any backend.
        """
        return self._bits[name][0]

    def bitname(self, num: int) -> str:
        """Name of bit number ``num``.

        Backends: host only (Python ints and names); apply the bits to arrays of any backend.
        """
        return self._bynum[num]

    def comment(self, name: str) -> str:
        """Description of a bit.

        Backends: host only (Python ints and names); apply the bits to arrays of any backend.
        """
        return self._bits[name][1]

    def names(self, value: int | None = None) -> list[str]:
        """All bit names (value None), or the names of the bits set in ``value``.

        Backends: host only (Python ints and names); apply the bits to arrays of any backend.
        """
        if value is None:
            return list(self._bits)
        value = int(value)
        return [self._bynum[b] for b in sorted(self._bynum) if value & (1 << b)]

    def __iter__(self):
        return iter(self._bits)

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={b}" for n, (b, _) in self._bits.items())
        return f"BitMask({self._name}: {body})"


ccdmask = BitMask(
    "ccdmask",
    [
        ("BAD", 0, "Pre-determined bad pixel (any reason)"),
        ("HOT", 1, "Hot pixel"),
        ("DEAD", 2, "Dead pixel"),
        ("SATURATED", 3, "Saturated pixel from object"),
        ("COSMIC", 4, "Cosmic ray"),
        ("PIXFLATZERO", 5, "pixflat is 0"),
        ("PIXFLATLOW", 6, "pixflat < 0.1"),
        ("HIGHVAR", 7, "High variability in pixel value"),
        ("BADREADNOISE", 8, "Very high CCD amplifier read noise"),
        ("BADAMP", 9, "Bad amplifier"),
    ],
)

specmask = BitMask(
    "specmask",
    [
        ("SOMEBADPIX", 0, "Some input pixels were masked or ivar=0"),
        ("ALLBADPIX", 1, "All input pixels were masked or ivar=0"),
        ("COSMIC", 2, "Input pixels included a masked cosmic"),
        ("LOWFLAT", 3, "Fiber flat < 0.5"),
        ("BADFIBERFLAT", 4, "Bad fiber flat solution"),
        ("BRIGHTSKY", 5, "Bright sky level"),
        ("BADSKY", 6, "Bad sky model"),
        ("BAD2DFIT", 7, "Bad fit of extraction 2D model to pixel data"),
        ("NODATA", 8, "No data exists"),
        ("BADFIBER", 9, "fibermask has a non-zero bit"),
        ("BADCOLUMN", 10, "Bad column in the CCD"),
        ("SATURATED", 11, "Saturated pixel"),
        ("CONTAMINATED", 12, "Contaminated by a neighbouring bright source"),
    ],
)

# Bit 20 is VARIABLE in the desispec version of the references (shared/reference:
# the coadd sets FIBERSTATUS |= 2**20 for a target whose exposures disagree in
# normalisation).
fibermask = BitMask(
    "fibermask",
    [
        ("UNASSIGNED", 0, "Fiber is not assigned to a known target or sky location"),
        ("STUCKPOSITIONER", 1, "INFO: stuck positioner"),
        ("BROKENFIBER", 2, "Broken fiber"),
        ("RESTRICTED", 3, "INFO: positioner has restricted reach"),
        ("MISSINGPOSITION", 8, "Fiber location information is missing"),
        ("BADPOSITION", 9, "Fiber >100 microns from target location"),
        ("POORPOSITION", 10, "Fiber >30 microns from target location"),
        ("LOWTRANSMISSION", 12, "Low transmission"),
        ("NEARCHARGETRAP", 13, "Near a charge trap"),
        ("VARIABLETHRU", 14, "Throughput varies (not used for sky or standard stars)"),
        ("LOWEFFTIME", 15, "Effective time for this fiber is too low"),
        ("BADFIBER", 16, "Unusable fiber"),
        ("BADTRACE", 17, "Bad trace solution"),
        ("BADFLAT", 18, "Bad fiber flat"),
        ("BADARC", 19, "Bad arc solution"),
        ("VARIABLE", 20, "Flux normalisation varies between exposures"),
        ("MANYREJECTED", 21, ">10% of pixels rejected in extraction"),
        ("BADAMPB", 22, "Amplifier issue in camera B"),
        ("BADAMPR", 23, "Amplifier issue in camera R"),
        ("BADAMPZ", 24, "Amplifier issue in camera Z"),
        ("BADPETALPOS", 25, "Too many fibers with bad positioning in petal"),
        ("BADPETALSKY", 26, "Bad sky model across petal"),
        ("BADPETALSTDSTAR", 27, "Too few standard stars in the petal"),
        ("BADPETALFLUXCAL", 28, "Unphysical flux calibration for the petal"),
        ("BADPETALSNR", 29, "TSNR too low for this petal"),
        ("BADREADNOISE", 30, "Bad read noise in one of the 3 cameras"),
    ],
)
