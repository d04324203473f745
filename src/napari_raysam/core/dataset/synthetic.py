"""Synthetic fluorescence cells with instance ground truth (offline, seeded, fast).

Cells are ellipses with random orientation and a low-frequency radial perturbation. A pixel goes
to the cell with the smallest normalised radial distance, so touching cells share a border and
labels never overlap. Rendering adds texture, a dimmer rim, PSF blur, uneven illumination, a
background offset and Poisson + Gaussian noise. Labels are always whole-cell instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

MIN_CELL_PX = 25
#: Seed of the built-in sample (:func:`builtin_sample`); ``tiny_cells`` never trains on it.
SAMPLE_SEED = 20_251_201
_HPA = ["microtubules", "protein", "nucleus", "er"]
CHANNEL_NAMES = {1: ["cells"], 2: ["nuclei", "cytoplasm"], 3: _HPA[:3], 4: _HPA}


@dataclass(frozen=True)
class CellStyle:
    """How cells look. Ranges are (low, high) and sampled uniformly per cell; sizes in px."""

    name: str
    radius: tuple[float, float] = (15.0, 24.0)  # semi-minor axis
    elongation: tuple[float, float] = (1.0, 1.35)  # major / minor axis ratio
    brightness: tuple[float, float] = (0.55, 0.9)  # mean cell intensity (relative, 0..1)
    irregularity: float = 0.05  # amplitude of the low-frequency radial perturbation
    texture: float = 0.12  # relative strength of the in-cell texture
    texture_sigma: float = 1.0  # spatial scale of the texture (px)
    rim: float = 0.35  # intensity drop towards the border (separates touching cells)
    blur_sigma: float = 1.2  # Gaussian PSF (px)
    background: float = 0.05  # offset added everywhere
    illumination: float = 0.3  # strength of the smooth gradient + vignette
    noise: float = 0.015  # Gaussian read noise (relative)
    photons: float = 400.0  # photon count at intensity 1.0 (Poisson noise)
    area_per_cell: float = 3600.0  # image area per cell for the default cell count
    packing: float = 0.8  # centre spacing as a fraction of the summed mean radii


STYLES: dict[str, CellStyle] = {
    "round": CellStyle("round"),
    "elongated": CellStyle(
        "elongated", radius=(8.0, 13.0), elongation=(2.0, 3.4), brightness=(0.25, 0.5),
        irregularity=0.08, texture=0.35, texture_sigma=2.5, rim=0.2, area_per_cell=2000.0,
        packing=0.75,
    ),
    # large, flat cultured cells for HPA-like multi-channel composites
    "hpa": CellStyle(
        "hpa", radius=(28.0, 42.0), elongation=(1.0, 1.8), brightness=(0.4, 0.8),
        irregularity=0.1, texture=0.2, texture_sigma=2.0, area_per_cell=8000.0, packing=0.75,
    ),
}


@dataclass
class Sample:
    """A synthetic image with its whole-cell instance labels."""

    image: np.ndarray  # (H, W), or (C, H, W) channels first
    labels: np.ndarray  # (H, W) instance ids 1..N, 0 = background
    channel_axis: int | None
    channel_names: list[str]


class _Cell(NamedTuple):
    cy: float
    cx: float
    a: float  # semi-major
    b: float  # semi-minor
    angle: float
    harmonics: np.ndarray  # (k, 2): amplitude, phase for k = 2, 3, 4


def _random_cell(rng: np.random.Generator, style: CellStyle, cy: float, cx: float) -> _Cell:
    b = rng.uniform(*style.radius)
    amps = style.irregularity * rng.uniform(0.3, 1.0, 3) / np.array([1.0, 1.5, 2.0])
    harm = np.stack([amps, rng.uniform(0, 2 * np.pi, 3)], axis=1)
    return _Cell(cy, cx, b * rng.uniform(*style.elongation), b, rng.uniform(0, np.pi), harm)


def _place(rng: np.random.Generator, style: CellStyle, n: int, shape: tuple[int, int]) -> list:
    """Random centres with soft rejection; spacing relaxes when space runs out."""
    cells: list[_Cell] = []
    centres, radii = np.empty((n, 2)), np.empty(n)
    tries, max_tries = 0, 60 * n + 100
    while len(cells) < n and tries < max_tries:
        tries += 1
        cell = _random_cell(rng, style, rng.uniform(0, shape[0]), rng.uniform(0, shape[1]))
        r, k = np.sqrt(cell.a * cell.b), len(cells)
        if k:
            dist = np.hypot(centres[:k, 0] - cell.cy, centres[:k, 1] - cell.cx)
            factor = style.packing * (1.0 - tries / max_tries)
            if np.any(dist < factor * (radii[:k] + r)):
                continue
        centres[k], radii[k] = (cell.cy, cell.cx), r
        cells.append(cell)
    return cells


def _bbox(c: _Cell, shape: tuple[int, int]) -> tuple[slice, slice]:
    h = c.a * (1 + 2 * c.harmonics[:, 0].sum()) + 2  # centres lie inside: never empty
    y0, y1 = max(int(c.cy - h), 0), min(int(c.cy + h) + 2, shape[0])
    x0, x1 = max(int(c.cx - h), 0), min(int(c.cx + h) + 2, shape[1])
    return slice(y0, y1), slice(x0, x1)


def _distance(c: _Cell, sl: tuple[slice, slice]) -> np.ndarray:
    """Normalised radial distance of the pixels in ``sl`` from the cell centre (< 1 inside)."""
    dy = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None] - c.cy
    dx = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :] - c.cx
    cos, sin = np.cos(c.angle), np.sin(c.angle)
    u, v = (dx * cos + dy * sin) / c.a, (-dx * sin + dy * cos) / c.b
    phi = np.arctan2(v, u)
    wobble = 1.0 + sum(amp * np.cos(k * phi + ph) for k, (amp, ph) in enumerate(c.harmonics, 2))
    return np.sqrt(u * u + v * v) / np.maximum(wobble, 0.2)


def _assign(cells: list[_Cell], shape: tuple[int, int]) -> tuple[np.ndarray, list]:
    """Label image (consecutive ids, largest component, >= MIN_CELL_PX) and kept cells."""
    best = np.full(shape, np.inf, np.float32)
    raw = np.zeros(shape, np.int32)
    for i, c in enumerate(cells, 1):
        sl = _bbox(c, shape)
        d = _distance(c, sl)
        upd = (d < 1) & (d < best[sl])
        best[sl][upd] = d[upd]
        raw[sl][upd] = i
    labels = np.zeros(shape, np.uint32)
    kept: list[tuple[_Cell, tuple]] = []
    for i, sl in enumerate(ndi.find_objects(raw), 1):
        comp, n = ndi.label(raw[sl] == i) if sl is not None else (None, 0)
        if n > 1:
            comp = comp == np.argmax(np.bincount(comp.ravel())[1:]) + 1
        if n == 0 or np.count_nonzero(comp) < MIN_CELL_PX:
            continue
        kept.append((cells[i - 1], sl))
        labels[sl][comp > 0] = len(kept)
    dtype = np.uint16 if len(kept) < 65535 else np.uint32
    return labels.astype(dtype), kept


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    tex = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return tex / (tex.std() + 1e-6)


def _render(rng, style: CellStyle, labels: np.ndarray, kept: list, channels: int) -> list:
    """Noise-free signal per channel (float32, roughly 0..1)."""
    shape = labels.shape
    names = CHANNEL_NAMES[channels]
    out = {name: np.zeros(shape, np.float32) for name in ("cells", *names)}
    tex = _smooth_noise(rng, shape, style.texture_sigma)
    fine = _smooth_noise(rng, shape, 0.8)
    dots = ndi.gaussian_filter((rng.random(shape) < 0.03).astype(np.float32), 0.8) * 8
    nuclear = np.zeros(shape, bool)
    for k, (c, sl) in enumerate(kept, 1):
        cell = labels[sl] == k
        d = _distance(c, sl)
        b = rng.uniform(*style.brightness)
        out["cells"][sl][cell] = (b * (1 - style.rim * np.minimum(d, 1) ** 3))[cell]
        if channels == 1:
            continue
        # nucleus: a smaller, rounder ellipse near the centre, clipped to the cell
        off, nb = rng.uniform(-0.15, 0.15, 2) * c.b, rng.uniform(0.4, 0.6) * c.b
        nuc = _Cell(c.cy + off[0], c.cx + off[1], nb * np.sqrt(c.a / c.b), nb,
                    c.angle + rng.normal(0, 0.2), c.harmonics * 0.5)
        dn = _distance(nuc, sl)
        in_nuc = cell & (dn < 1)
        nuc_sig = rng.uniform(0.6, 1.0) * (1 - 0.3 * np.minimum(dn, 1) ** 2)
        out[names[0 if channels == 2 else 2]][sl][in_nuc] = nuc_sig[in_nuc]
        nuclear[sl] |= in_nuc
        if channels == 2:
            continue
        # microtubules: curved filaments radiating from the centrosome near the nucleus
        mt = np.zeros(cell.shape, np.float32)
        n_rays, steps = int(25 + c.a * c.b / 15), int(2 * c.a) + 4
        t = np.linspace(0, 1, steps)
        ang = rng.uniform(0, 2 * np.pi, (n_rays, 1)) + t * rng.normal(0, 0.4, (n_rays, 1))
        t = t * 1.3 * c.a
        yy = np.rint(nuc.cy + t * np.sin(ang) - sl[0].start).astype(int).ravel()
        xx = np.rint(nuc.cx + t * np.cos(ang) - sl[1].start).astype(int).ravel()
        ok = (yy >= 0) & (yy < cell.shape[0]) & (xx >= 0) & (xx < cell.shape[1])
        np.add.at(mt, (yy[ok], xx[ok]), 0.12)
        out["microtubules"][sl][cell] = (np.minimum(mt, 1.0) + 0.1 * b)[cell]
        # protein: a random subset of cells, speckled, in one compartment
        if rng.random() < 0.4:
            where = [cell, in_nuc, cell & ~in_nuc][rng.integers(3)]
            out["protein"][sl][where] = (rng.uniform(0.4, 0.9) * (0.3 + dots[sl]))[where]
        else:
            out["protein"][sl][cell] = 0.04
        if channels == 4:  # ER: perinuclear ring fading towards the cell border
            ring = np.exp(-np.maximum(dn - 1, 0) / 0.6) * (1 + 0.5 * fine[sl])
            out["er"][sl][cell & ~in_nuc] = (rng.uniform(0.4, 0.8) * ring)[cell & ~in_nuc]
    out["cells"] *= 1 + style.texture * tex
    if channels == 2:
        out["cytoplasm"] = out["cells"] * np.where(nuclear, 0.6, 1.0)
    for name in {"nuclei", "nucleus", "er"} & set(names):
        out[name] *= 1 + 0.15 * fine
    return [out[name] for name in names]


def _illumination(rng: np.random.Generator, shape: tuple[int, int], strength: float):
    yy, xx = np.ogrid[0 : 1 : shape[0] * 1j, 0 : 1 : shape[1] * 1j]
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(theta) * xx + np.sin(theta) * yy
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min() + 1e-6)
    vig = (yy - rng.uniform(0.3, 0.7)) ** 2 + (xx - rng.uniform(0.3, 0.7)) ** 2
    return 1 - strength * (0.6 * ramp + 0.4 * vig / vig.max())


def make_sample(shape: tuple[int, int] = (256, 256), n_cells: int | None = None,
                style: str | CellStyle = "round", channels: int = 1, seed: int = 0,
                dtype=np.uint16) -> Sample:
    """One synthetic image (channels first when channels > 1) with whole-cell labels.

    n_cells None gives a density-dependent count (``style.area_per_cell`` px per cell).
    Deterministic for a given seed. channels: 1 (cells), 2 (nuclei, cytoplasm), 3 or 4 (HPA-like).
    """
    st = STYLES[style] if isinstance(style, str) else style
    if channels not in CHANNEL_NAMES:
        raise ValueError(f"channels must be one of {sorted(CHANNEL_NAMES)}, got {channels}")
    shape = (int(shape[0]), int(shape[1]))
    rng = np.random.default_rng(seed)
    if n_cells is None:
        n_cells = max(1, round(shape[0] * shape[1] / st.area_per_cell))
    labels, kept = _assign(_place(rng, st, int(n_cells), shape), shape)
    signals = _render(rng, st, labels, kept, channels)
    illum = _illumination(rng, shape, st.illumination)
    planes = []
    for sig in signals:
        img = ndi.gaussian_filter(sig, st.blur_sigma) * illum + st.background
        img = rng.poisson(np.maximum(img, 0) * st.photons) / st.photons
        planes.append(img + rng.normal(0, st.noise, shape))
    image = np.stack(planes) if channels > 1 else planes[0]
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        image = np.rint(np.clip(image / 1.25, 0, 1) * np.iinfo(dt).max)
    names = list(CHANNEL_NAMES[channels])
    return Sample(image.astype(dt), labels, 0 if channels > 1 else None, names)


def make_samples(n: int, shape: tuple[int, int] = (256, 256), style: str | CellStyle = "round",
                 channels: int = 1, seed: int = 0, **kw) -> list[Sample]:
    """n samples with independent seeds derived from ``seed``."""
    seeds = np.random.SeedSequence(seed).generate_state(n)
    return [make_sample(shape, style=style, channels=channels, seed=int(s), **kw) for s in seeds]


def builtin_sample(planes: int = 4, shape: tuple[int, int] = (256, 256)) -> Sample:
    """The napari sample (File > Open Sample): a stack of ``planes`` round-cell images
    (planes, H, W) with their instance labels (planes, H, W), ids 1..N per plane.

    256 px planes are ``tiny_cells``' input size, so it sees them unscaled; the planes are
    independent images, so a few can be exported for training and the others held out.
    """
    samples = make_samples(planes, shape, style="round", seed=SAMPLE_SEED)
    return Sample(np.stack([s.image for s in samples]), np.stack([s.labels for s in samples]),
                  None, list(CHANNEL_NAMES[1]))
