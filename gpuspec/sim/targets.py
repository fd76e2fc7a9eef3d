"""Targets of a simulated tile: types, redshifts, magnitudes, lines and positions.

Each petal's 500 fibers are drawn from their own random stream
(``stream(seed, "targets", petal)``), then cut to the simulated fibers, so a
fiber's target does not depend on ``nspec`` or on the other petals. The same
targets are observed in every exposure of the night.

Per 25-fiber bundle, by default, 2 sky fibers and 1 standard star at random slots (40
and 20 per petal); other numbers per petal (``nsky``, ``nstd``) are spread evenly over
the lit bundles. The other fibers are ELG (55 %), LRG (30 %) or QSO (15 %). Standard
stars are templates of :mod:`gpuspec.calibrate.templates` (:mod:`gpuspec.sim.stars`).

All wavelengths are vacuum Å in the observed frame; line fluxes are in
1e-17 erg/s/cm²; magnitudes are AB; ``FLUX_*`` in nanomaggies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .streams import stream

__all__ = ["Targets", "make_targets", "Tile", "KINDS", "DESI_TARGET_BITS", "NMGY_TO_FLAM17",
           "BAND_WAVE"]

FIBERS_PER_PETAL = 500
BUNDLE = 25
KINDS = ("ELG", "LRG", "QSO", "STD", "SKY")

#: desitarget desi_mask bits used here.
DESI_TARGET_BITS = {"LRG": 1 << 0, "ELG": 1 << 1, "QSO": 1 << 2, "SKY": 1 << 32,
                    "STD": 1 << 33}  # STD_FAINT

#: Effective wavelengths (Å) of the g, r, z imaging bands (for FLUX_G/R/Z).
BAND_WAVE = {"G": 4800.0, "R": 6400.0, "Z": 9150.0}

_C_AA = 2.99792458e18  # speed of light, Å/s
#: f_λ (1e-17 erg/s/cm²/Å) of 1 nanomaggy at λ: 3.631e-29 erg/s/cm²/Hz · c/λ² / 1e-17.
NMGY_TO_FLAM17 = 3.631e-29 * _C_AA / 1e-17  # divide by λ²

# vacuum rest wavelengths (Å)
_ELG_LINES = [  # name, λ, ratio to [OII] total (3727+3729)
    ("OII3727", 3727.092, 0.43), ("OII3730", 3729.875, 0.57), ("HGAMMA", 4341.68, 0.17),
    ("HBETA", 4862.68, 0.40), ("OIII4960", 4960.30, None), ("OIII5008", 5008.24, None),
    ("HALPHA", 6564.61, 1.20), ("NII6585", 6585.27, 0.35), ("SII6718", 6718.29, 0.17),
    ("SII6733", 6732.67, 0.13),
]
_QSO_LINES = [  # name, λ, rest equivalent width (Å)
    ("LYA", 1215.67, 80.0), ("CIV", 1549.48, 30.0), ("CIII", 1908.73, 20.0),
    ("MGII", 2799.49, 30.0), ("HBETA", 4862.68, 45.0), ("HALPHA", 6564.61, 200.0),
]
_LRG_LINES = [  # absorption: name, λ, depth, sigma (Å), rest frame
    ("CAK", 3934.78, 0.35, 6.0), ("CAH", 3969.59, 0.30, 6.0), ("GBAND", 4305.6, 0.15, 8.0),
    ("MGB", 5177.0, 0.15, 8.0), ("NAD", 5894.6, 0.10, 6.0),
]

_NEM = max(len(_ELG_LINES), len(_QSO_LINES))
_NAB = len(_LRG_LINES)


@dataclass(frozen=True)
class Tile:
    """Pointing of the simulated tile."""

    tileid: int = 1000
    ra: float = 150.10
    dec: float = 2.20
    radius: float = 1.55  # deg, field radius used for fiber positions


@dataclass
class Targets:
    """Per-fiber target parameters of one petal (arrays of length nspec).

    Attributes
    ----------
    petal, fiber : petal and FIBER (500·petal + index)
    kind : str array, one of :data:`KINDS`
    z : redshift (0 for stars and sky)
    mag_r : AB r magnitude (nan for sky)
    flux_g, flux_r, flux_z : nanomaggies of the continuum at :data:`BAND_WAVE`
    cont_kind : 0 galaxy, 1 QSO power law, 2 stellar template, -1 none (sky)
    cont_norm : f_λ (1e-17 erg/s/cm²/Å) of the continuum at 6400 Å
    slope, dbreak : continuum shape (galaxy slope/4000 Å break, QSO slope)
    teff : Teff of a standard star's template (0 for other fibers)
    em_wave, em_flux, em_sigma : (nspec, NEM) observed emission lines (Å, 1e-17 erg/s/cm², Å)
    ab_wave, ab_depth, ab_sigma : (nspec, NAB) observed absorption lines (multiplicative)
    fiber_thru : achromatic relative fiber throughput (night-fixed)
    thru_g1, thru_g2 : wavelength-shape coefficients of the fiber throughput
        (:func:`gpuspec.sim.instrument.fiber_throughput`)
    template : index of the standard star's template in
        :func:`gpuspec.sim.stars.star_library` (−1 for other fibers)
    vrad : radial velocity of standard stars (km/s)
    ra, dec, fx, fy : target position (deg) and focal-plane position (mm)
    """

    petal: int
    fiber: np.ndarray
    kind: np.ndarray
    z: np.ndarray
    mag_r: np.ndarray
    flux_g: np.ndarray
    flux_r: np.ndarray
    flux_z: np.ndarray
    cont_kind: np.ndarray
    cont_norm: np.ndarray
    slope: np.ndarray
    dbreak: np.ndarray
    teff: np.ndarray
    em_wave: np.ndarray
    em_flux: np.ndarray
    em_sigma: np.ndarray
    ab_wave: np.ndarray
    ab_depth: np.ndarray
    ab_sigma: np.ndarray
    fiber_thru: np.ndarray
    thru_g1: np.ndarray
    thru_g2: np.ndarray
    template: np.ndarray
    vrad: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    fx: np.ndarray
    fy: np.ndarray

    @property
    def nspec(self) -> int:
        """Number of targets.

        Backends: host only (NumPy).
        """
        return len(self.fiber)

    def targetid(self, tileid: int) -> np.ndarray:
        """Unique positive TARGETIDs (int64) for this tile and petal.

        Backends: host only (NumPy).
        """
        return (np.int64(39627000000000000) + np.int64(tileid) * 10000
                + self.fiber.astype(np.int64))

    def desi_target(self) -> np.ndarray:
        """DESI_TARGET bits (int64).

        Backends: host only (NumPy).
        """
        out = np.zeros(self.nspec, dtype=np.int64)
        for k, bit in DESI_TARGET_BITS.items():
            out[self.kind == k] = bit
        return out

    def throughput(self, wave) -> np.ndarray:
        """Relative throughput T_f(λ) of each fiber on ``wave``: (nspec, nwave).

        Backends: host only (NumPy).
        """
        from .instrument import fiber_throughput

        return fiber_throughput(self.fiber_thru, self.thru_g1, self.thru_g2, wave)

    def subset(self, n: int) -> "Targets":
        """The first ``n`` fibers.

        Backends: host only (NumPy).
        """
        kw = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            kw[name] = v[:n] if isinstance(v, np.ndarray) else v
        return Targets(**kw)


def continuum(t: Targets, wave: np.ndarray) -> np.ndarray:
    """Continuum f_λ (1e-17 erg/s/cm²/Å) of each galaxy and QSO at ``wave``: (nspec, nwave).

    0 for standard stars (whole templates, :func:`gpuspec.sim.stars.star_flux`) and sky.

    Backends: host only (NumPy).
    """
    w = np.asarray(wave, dtype=np.float64)[None, :]
    z1 = (1.0 + t.z)[:, None]
    slope = t.slope[:, None]
    # galaxy: power law × smoothed 4000 Å break
    rest = w / z1
    brk = 1.0 - t.dbreak[:, None] / (1.0 + np.exp((rest - 4000.0) / 40.0))
    brk0 = 1.0 - t.dbreak[:, None] / (1.0 + np.exp((6400.0 / z1 - 4000.0) / 40.0))
    gal = (w / 6400.0) ** slope * brk / brk0
    qso = (w / 6400.0) ** slope
    # Lyman-alpha forest: mean transmission exp(-0.0036 (λ/1216)^3.46) blueward of Lyα
    lya = 1215.67 * z1
    tau = 0.0036 * (w / 1215.67) ** 3.46
    qso = np.where(w < lya, qso * np.exp(-tau), qso)
    kind = t.cont_kind[:, None]
    # standard stars (cont_kind 2) are templates (gpuspec.sim.stars), sky fibers have none
    shape = np.where(kind == 0, gal, np.where(kind == 1, qso, 0.0))
    return t.cont_norm[:, None] * shape


def _nmgy(flam17, wave):
    return flam17 * wave ** 2 / NMGY_TO_FLAM17


def _draw_kinds(rng, n: int):
    """Science class per fiber (ELG/LRG/QSO) and the 3 special slots of each bundle.

    Returns ``(science_kind, slots)``; ``slots[b]`` holds bundle ``b``'s two default sky
    slots and its default standard-star slot (fiber indices).
    """
    kind = np.empty(n, dtype="<U3")
    kind[:] = "ELG"
    u = rng.random(n)
    kind[u > 0.55] = "LRG"
    kind[u > 0.85] = "QSO"
    slots = np.array([b0 + rng.choice(BUNDLE, size=3, replace=False)
                      for b0 in range(0, n, BUNDLE)])
    return kind, slots


def _per_bundle(total: int, nb: int, reverse: bool) -> np.ndarray:
    """``total`` spread over ``nb`` bundles (remainder to the first, or last, bundles)."""
    b = np.arange(nb)
    extra = (nb - 1 - b) if reverse else b
    return total // nb + (extra < total % nb)


def _assign_classes(seed: int, petal: int, science: np.ndarray, slots: np.ndarray,
                    nspec: int, nsky, nstd) -> np.ndarray:
    """Final class of every fiber: SKY and STD slots per bundle, science elsewhere.

    By default 2 SKY and 1 STD per bundle at ``slots``. Otherwise the lit bundles
    (``nspec // 25``) share ``nsky`` and ``nstd``; a bundle's sky fibers are taken from
    its two default sky slots, then from a permutation of its other 22 slots (from the
    front), its standards from its default slot, then from the same permutation (from
    the back), so that the default counts give the default classes.
    """
    nb_all = len(slots)
    nb = max(1, -(-nspec // BUNDLE))
    k_sky = np.full(nb_all, 2)
    k_std = np.full(nb_all, 1)
    if nsky is not None:
        k_sky[:nb] = _per_bundle(int(nsky), nb, reverse=False)
    if nstd is not None:
        k_std[:nb] = _per_bundle(int(nstd), nb, reverse=True)
    kind = science.copy()
    prng = stream(seed, "fiber_classes", petal)
    for b in range(nb_all):  # 20 bundles per petal: a permutation each, always drawn
        rest = np.setdiff1d(b * BUNDLE + np.arange(BUNDLE), slots[b])
        perm = rest[prng.permutation(rest.size)]
        sky = np.concatenate([slots[b][:2], perm])[:k_sky[b]]
        std = np.concatenate([slots[b][2:], perm[::-1]])[:k_std[b]]
        kind[sky] = "SKY"
        kind[std] = "STD"
    return kind


def _draw_continua(rng, kind: np.ndarray, n: int) -> dict:
    """Redshift, r magnitude and continuum parameters (shape, slope, break, Teff, norm)."""
    z = np.zeros(n)
    z = np.where(kind == "ELG", rng.uniform(0.05, 1.6, n), z)
    z = np.where(kind == "LRG", rng.uniform(0.4, 1.0, n), z)
    z = np.where(kind == "QSO", rng.uniform(0.9, 3.0, n), z)
    mag = np.full(n, np.nan)
    mag = np.where(kind == "ELG", rng.uniform(21.0, 23.0, n), mag)
    mag = np.where(kind == "LRG", rng.uniform(19.8, 21.5, n), mag)
    mag = np.where(kind == "QSO", rng.uniform(19.5, 22.0, n), mag)
    mag = np.where(kind == "STD", rng.uniform(16.0, 18.5, n), mag)
    cont_kind = np.select([np.isin(kind, ["ELG", "LRG"]), kind == "QSO", kind == "STD"],
                          [0, 1, 2], default=-1).astype(np.int16)
    slope = np.zeros(n)
    slope = np.where(kind == "ELG", rng.uniform(-2.3, -1.5, n), slope)
    slope = np.where(kind == "LRG", rng.uniform(-0.5, 0.5, n), slope)
    slope = np.where(kind == "QSO", rng.uniform(-2.0, -1.2, n), slope)
    dbreak = np.where(kind == "LRG", rng.uniform(0.35, 0.6, n),
                      np.where(kind == "ELG", rng.uniform(0.0, 0.15, n), 0.0))
    rng.uniform(5800.0, 6800.0, n)  # (former stellar Teff: kept so later draws stay put)
    teff = np.zeros(n)  # the template's, for standard stars (make_targets)
    flux_r_nmgy = np.where(np.isfinite(mag), 10 ** ((22.5 - np.nan_to_num(mag, nan=99.0)) / 2.5),
                           0.0)
    cont_norm = flux_r_nmgy * NMGY_TO_FLAM17 / BAND_WAVE["R"] ** 2  # f_λ at 6400 Å
    return {"z": z, "mag_r": mag, "cont_kind": cont_kind, "slope": slope, "dbreak": dbreak,
            "teff": teff, "cont_norm": cont_norm}


_C_KMS = 299792.458


def _draw_emission_lines(rng, kind, z, cont_norm, slope, n: int) -> dict:
    """Observed-frame emission lines: ELG [OII]/Hβ/[OIII]/Hα…, QSO broad lines."""
    em_wave = np.zeros((n, _NEM))
    em_flux = np.zeros((n, _NEM))
    em_sigma = np.ones((n, _NEM))
    f_oii = rng.uniform(4.0, 40.0, n)
    r_oiii = rng.uniform(0.2, 1.5, n)
    sig_v = rng.uniform(30.0, 120.0, n)  # km/s
    sig_q = rng.uniform(1500.0, 3500.0, n)
    ew_scale = rng.uniform(0.5, 1.5, n)
    elg = kind == "ELG"
    qso = kind == "QSO"
    for j, (name, lam, ratio) in enumerate(_ELG_LINES):
        lobs = lam * (1 + z)
        if ratio is None:
            ratio = 0.4 * r_oiii * (1.0 if name == "OIII5008" else 1.0 / 2.98)
        em_wave[elg, j] = lobs[elg]
        em_flux[elg, j] = (f_oii * ratio)[elg]
        em_sigma[elg, j] = (lobs * sig_v / _C_KMS)[elg] + 0.05
    for j, (name, lam, ew) in enumerate(_QSO_LINES):
        lobs = lam * (1 + z)
        em_wave[qso, j] = lobs[qso]
        # flux = observed EW × power-law continuum at the line
        cq = cont_norm * (lobs / 6400.0) ** slope
        em_flux[qso, j] = (ew * ew_scale * (1 + z) * cq)[qso]
        em_sigma[qso, j] = (lobs * sig_q / _C_KMS)[qso]
    return {"em_wave": em_wave, "em_flux": em_flux, "em_sigma": em_sigma}


def _draw_absorption_lines(rng, kind, z, n: int) -> dict:
    """LRG absorption features (multiplicative dips) and the stars' radial velocities."""
    ab_wave = np.zeros((n, _NAB))
    ab_depth = np.zeros((n, _NAB))
    ab_sigma = np.ones((n, _NAB))
    lrg = kind == "LRG"
    vrad = np.where(kind == "STD", rng.uniform(-80.0, 80.0, n), 0.0)  # km/s, stars
    for j, (name, lam, depth, sig) in enumerate(_LRG_LINES):
        ab_wave[lrg, j] = (lam * (1 + z))[lrg]
        ab_depth[lrg, j] = depth
        ab_sigma[lrg, j] = (sig * (1 + z))[lrg]
    return {"ab_wave": ab_wave, "ab_depth": ab_depth, "ab_sigma": ab_sigma, "vrad": vrad}


def _draw_positions(rng, petal: int, tile: Tile, n: int) -> dict:
    """Sky and focal-plane positions, uniform in area within the petal's 36° wedge."""
    theta = np.deg2rad(36.0 * petal + rng.uniform(1.0, 35.0, n))
    rad = tile.radius * np.sqrt(rng.uniform(0.01, 1.0, n))
    dx, dy = rad * np.cos(theta), rad * np.sin(theta)
    dec = tile.dec + dy
    ra = (tile.ra + dx / np.cos(np.deg2rad(dec))) % 360.0
    plate_scale = 256.0  # mm per degree, roughly DESI's
    return {"ra": ra, "dec": dec, "fx": dx * plate_scale, "fy": dy * plate_scale}


def make_targets(seed: int, petal: int, nspec: int, tile: Tile = Tile(), nsky: int | None = None,
                 nstd: int | None = None) -> Targets:
    """Draw the targets of fibers 0..nspec-1 of ``petal``.

    Parameters
    ----------
    seed : int
        Simulation seed.
    petal : int
        Petal (spectrograph) 0–9.
    nspec : int
        Number of fibers (1–500); the draw is always made for all 500 fibers.
    tile : Tile
        Pointing; positions fall in the petal's wedge of the field.
    nsky, nstd : int, optional
        Sky fibers and standard stars among the ``nspec`` fibers (default 2 and 1 per
        25-fiber bundle), spread evenly over the bundles.

    Returns
    -------
    Targets
        A fiber's parameters depend on the seed, the petal and the fiber only; its class
        (SKY, STD or science) also on ``nspec``, ``nsky`` and ``nstd`` when those are given.

    Backends: host only (NumPy).
    """
    if not 0 < nspec <= FIBERS_PER_PETAL:
        raise ValueError(f"nspec must be in 1..{FIBERS_PER_PETAL}, got {nspec}")
    from .stars import draw_templates, star_library, star_nanomaggies

    n = FIBERS_PER_PETAL
    rng = stream(seed, "targets", petal)
    # the draws happen in this order (one stream): kinds, continua, lines, throughput, positions
    science, slots = _draw_kinds(rng, n)
    kind = _assign_classes(seed, petal, science, slots, nspec, nsky, nstd)
    cont = _draw_continua(rng, kind, n)
    em = _draw_emission_lines(rng, kind, cont["z"], cont["cont_norm"], cont["slope"], n)
    ab = _draw_absorption_lines(rng, kind, cont["z"], n)
    fiber_thru = rng.uniform(0.92, 1.04, n)
    pos = _draw_positions(rng, petal, tile, n)
    g = stream(seed, "fiber_throughput", petal).standard_normal((2, n))
    std = kind == "STD"
    template = np.where(std, draw_templates(seed, petal, n), -1)
    cont["teff"] = np.where(std, star_library().teff[np.maximum(template, 0)], 0.0)
    t = Targets(petal=petal, fiber=500 * petal + np.arange(n), kind=kind, flux_g=np.zeros(n),
                flux_r=np.zeros(n), flux_z=np.zeros(n), fiber_thru=fiber_thru,
                thru_g1=g[0], thru_g2=g[1], template=template, **cont, **em, **ab, **pos)
    bw = np.array([BAND_WAVE["G"], BAND_WAVE["R"], BAND_WAVE["Z"]])
    c = continuum(t, bw)
    t.flux_g, t.flux_r, t.flux_z = (_nmgy(c[:, i], bw[i]) for i in range(3))
    t = t.subset(nspec)
    s = np.flatnonzero(t.kind == "STD")
    if s.size:
        nm = star_nanomaggies(t.template[s], t.vrad[s], t.mag_r[s])
        t.flux_g[s], t.flux_r[s], t.flux_z[s] = nm["G"], nm["R"], nm["Z"]
    return t
