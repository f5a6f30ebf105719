"""Procedural T1-weighted post-contrast head MRI phantoms: tissue label maps, tumours and image formation.

The anatomy is built in millimetres in a head frame (x to the patient's right, y anterior, z superior, origin at
the centre of the brain) and sampled on a voxel grid whose axes point R, A, S. Geometry that places the grid in
the scanner (oblique affines, storage orientation) is the caller's business, see :mod:`monai_mri_gan.data.demo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ..utils import rotation_matrix

__all__ = [
    "T1C_INTENSITY",
    "TUMOUR_T1C_INTENSITY",
    "Phantom",
    "Tissue",
    "TumourLabel",
    "brain_phantom",
]


class Tissue(IntEnum):
    """Labels of the phantom's tissue map."""

    BACKGROUND = 0
    SKIN = 1
    FAT = 2
    MUSCLE = 3
    BONE = 4
    DIPLOE = 5
    CSF = 6
    GREY_MATTER = 7
    WHITE_MATTER = 8
    DEEP_GREY_MATTER = 9
    VENTRICLE = 10
    VESSEL = 11
    TUMOUR = 12


class TumourLabel(IntEnum):
    """BraTS labels of the tumour mask."""

    BACKGROUND = 0
    NECROTIC_CORE = 1
    OEDEMA = 2
    ENHANCING_RIM = 4


#: Mean T1-weighted post-contrast signal of each tissue, in arbitrary scanner units (before gain and bias).
T1C_INTENSITY: dict[Tissue, float] = {
    Tissue.BACKGROUND: 0.0,
    Tissue.SKIN: 650.0,
    Tissue.FAT: 1350.0,
    Tissue.MUSCLE: 420.0,
    Tissue.BONE: 60.0,
    Tissue.DIPLOE: 780.0,
    Tissue.CSF: 170.0,
    Tissue.GREY_MATTER: 560.0,
    Tissue.WHITE_MATTER: 830.0,
    Tissue.DEEP_GREY_MATTER: 650.0,
    Tissue.VENTRICLE: 165.0,
    Tissue.VESSEL: 1150.0,
    Tissue.TUMOUR: 0.0,
}

#: Mean T1-weighted post-contrast signal of each tumour compartment.
TUMOUR_T1C_INTENSITY: dict[TumourLabel, float] = {
    TumourLabel.NECROTIC_CORE: 260.0,
    TumourLabel.OEDEMA: 650.0,
    TumourLabel.ENHANCING_RIM: 1280.0,
}

# Lateral ventricle, one side, swept along y (anterior positive): y, centre x, centre z, half-width, half-height (mm).
_VENTRICLE_PROFILE = np.array(
    [
        [32.0, 5.0, -9.0, 1.0, 2.0],
        [27.0, 6.5, -4.0, 5.0, 6.0],
        [18.0, 7.0, 0.0, 5.5, 7.0],
        [6.0, 6.5, 4.0, 5.0, 5.5],
        [-8.0, 7.0, 6.0, 5.0, 5.0],
        [-19.0, 13.5, 2.0, 6.5, 8.0],
        [-28.0, 17.0, -3.0, 5.0, 6.5],
        [-37.0, 16.0, -6.0, 2.5, 4.0],
        [-43.0, 13.0, -7.0, 0.5, 2.0],
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Phantom:
    """One phantom head on a voxel grid whose axes point to the patient's right, anterior and superior.

    Args:
        image: T1-weighted post-contrast magnitude image (bias field and Rician noise included), float32.
        clean: the same image without bias field and noise, float32.
        tissue: tissue label map (:class:`Tissue`), uint8.
        tumour: tumour mask with BraTS labels (:class:`TumourLabel`), uint8; all zero without a tumour.
        spacing: voxel size in mm.
        noise_sigma: standard deviation of the complex Gaussian noise behind the Rician magnitude.
    """

    image: np.ndarray
    clean: np.ndarray
    tissue: np.ndarray
    tumour: np.ndarray
    spacing: tuple[float, float, float]
    noise_sigma: float


def _waves(rng: np.random.Generator, count: int, wavelength: float) -> tuple[np.ndarray, np.ndarray]:
    """Random plane waves of one wavelength: wave vectors (count, 3) and phases (count,)."""
    directions = rng.standard_normal((count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return (directions * (2 * np.pi / wavelength)).astype(np.float32), rng.uniform(0, 2 * np.pi, count).astype(
        np.float32
    )


def _mixed_waves(rng: np.random.Generator, bands: tuple[tuple[int, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Random plane waves drawn in several bands of (count, wavelength), pooled into one set."""
    drawn = [_waves(rng, count, wavelength) for count, wavelength in bands]
    return np.concatenate([d[0] for d in drawn]), np.concatenate([d[1] for d in drawn])


def _wave_field(points: np.ndarray, waves: tuple[np.ndarray, np.ndarray], gradient: bool = False):
    """Sum of unit cosines (normalised to unit variance) at ``points`` (3, N), and optionally its gradient (3, N)."""
    omegas, phases = waves
    scale = np.float32(np.sqrt(2.0 / len(phases)))
    value = np.zeros(points.shape[1], np.float32)
    grad = np.zeros_like(points) if gradient else None
    for omega, phase in zip(omegas, phases, strict=True):
        arg = omega[0] * points[0] + omega[1] * points[1] + omega[2] * points[2] + phase
        value += np.cos(arg)
        if grad is not None:
            s = np.sin(arg)
            grad[0] -= omega[0] * s
            grad[1] -= omega[1] * s
            grad[2] -= omega[2] * s
    value *= scale
    if grad is None:
        return value
    return value, grad * scale


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], spacing, sigma_mm: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (filtered in the Fourier domain)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = np.fft.rfftn(white)
    freqs = [np.fft.fftfreq(n, d=s) for n, s in zip(shape[:-1], spacing[:-1], strict=True)]
    freqs.append(np.fft.rfftfreq(shape[-1], d=spacing[-1]))
    k2 = sum(np.meshgrid(*[f.astype(np.float32) ** 2 for f in freqs], indexing="ij", sparse=True))
    spectrum *= np.exp(-2 * (np.pi * sigma_mm) ** 2 * k2)
    field = np.fft.irfftn(spectrum, s=shape).astype(np.float32)
    return field / max(float(field.std()), 1e-6)


def _blur_in_plane(volume: np.ndarray) -> np.ndarray:
    """Binomial [1, 2, 1] / 4 filter along the two in-plane axes: the partial-volume blur of the acquisition."""
    out = volume.copy()
    for axis in (0, 1):
        padded = np.concatenate([out.take([0], axis), out, out.take([-1], axis)], axis=axis)
        n = out.shape[axis]
        out = 0.25 * padded.take(range(0, n), axis) + 0.5 * out + 0.25 * padded.take(range(2, n + 2), axis)
    return out


@dataclass
class _Anatomy:
    """Per-subject anatomical parameters, in mm and radians."""

    centre: np.ndarray
    rotation: np.ndarray
    a: float
    b: float
    c_up: float
    c_down: float
    egg: float
    bone: float
    table: float
    fat: float
    skin: float
    muscle: float
    csf: float
    cortex: float
    sulcus_width: float
    sulcus_depth: float
    fissure_width: float
    ventricle_scale: float
    ventricle_asymmetry: float
    sulci: tuple[np.ndarray, np.ndarray]
    sulcus_depth_waves: tuple[np.ndarray, np.ndarray]
    contrast: dict[Tissue, float]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Anatomy:
        """Draw one subject's anatomy."""
        atrophy = rng.uniform(0.0, 1.0)
        contrast = {t: v * rng.uniform(0.95, 1.05) for t, v in T1C_INTENSITY.items()}
        contrast[Tissue.CSF] = contrast[Tissue.VENTRICLE]
        return cls(
            centre=np.array([rng.uniform(-4, 4), rng.uniform(-6, 6), rng.uniform(-22, -14)], np.float32),
            rotation=rotation_matrix(np.deg2rad([rng.uniform(-6, 6), rng.uniform(-3, 3), rng.uniform(-7, 7)])),
            a=rng.uniform(63, 71),
            b=rng.uniform(79, 88),
            c_up=rng.uniform(60, 68),
            c_down=rng.uniform(68, 76),
            egg=rng.uniform(0.03, 0.09),
            bone=rng.uniform(5.0, 7.5),
            table=rng.uniform(1.3, 1.9),
            fat=rng.uniform(3.0, 5.5),
            skin=rng.uniform(1.5, 2.2),
            muscle=rng.uniform(5.0, 9.0),
            csf=0.9 + 1.1 * atrophy,
            cortex=rng.uniform(2.8, 3.4),
            sulcus_width=0.35 + 0.6 * atrophy,
            sulcus_depth=rng.uniform(18.0, 24.0),
            fissure_width=1.0 + 1.0 * atrophy,
            ventricle_scale=rng.uniform(0.8, 1.1) + 0.45 * atrophy,
            ventricle_asymmetry=rng.uniform(-0.12, 0.12),
            sulci=_mixed_waves(rng, ((20, rng.uniform(10.0, 12.0)), (12, rng.uniform(16.0, 20.0)))),
            sulcus_depth_waves=_waves(rng, 8, 70.0),
            contrast=contrast,
        )


@dataclass
class _TumourShape:
    """Position, size and shape of one tumour, in head coordinates (mm)."""

    centre: np.ndarray
    radius: float
    core_fraction: float
    oedema: float
    mass_effect: float
    shape_waves: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def draw(cls, rng: np.random.Generator, anatomy: _Anatomy) -> _TumourShape:
        """Draw a tumour that sits in the cerebral white matter of one hemisphere."""
        side = rng.choice([-1.0, 1.0])
        while True:
            centre = np.array([side * rng.uniform(20, 34), rng.uniform(-40, 30), rng.uniform(-10, 25)], np.float32)
            radius = rng.uniform(9.0, 15.0)
            reach = np.sqrt(
                ((abs(centre[0]) + radius + 6) / anatomy.a) ** 2
                + ((abs(centre[1]) + radius + 6) / anatomy.b) ** 2 * 0.5
                + ((centre[2] + radius + 6) / anatomy.c_up) ** 2 * 0.5
            )
            if reach < 1.0:
                break
        return cls(
            centre=centre,
            radius=radius,
            core_fraction=rng.uniform(0.45, 0.7),
            oedema=rng.uniform(8.0, 18.0),
            mass_effect=rng.uniform(0.3, 0.45),
            shape_waves=tuple(_waves(rng, 10, wl) for wl in (2.2, 1.6, 1.2)),
        )


def _head_coordinates(shape: tuple[int, int, int], spacing, anatomy: _Anatomy) -> np.ndarray:
    """Head-frame coordinates (3, X, Y, Z) of every voxel centre, the grid being centred on the field of view."""
    axes = [
        (np.arange(n, dtype=np.float32) - (n - 1) / 2) * s - c
        for n, s, c in zip(shape, spacing, anatomy.centre, strict=True)
    ]
    rot_t = anatomy.rotation.T.astype(np.float32)
    out = np.empty((3, *shape), np.float32)
    for row in range(3):
        out[row] = (
            rot_t[row, 0] * axes[0][:, None, None]
            + rot_t[row, 1] * axes[1][None, :, None]
            + rot_t[row, 2] * axes[2][None, None, :]
        )
    return out


def _inner_table(p: np.ndarray, anatomy: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Depth (mm, positive inside) below the skull's inner table along the ray from the centre, and that ray's
    direction normalised to the ellipsoid (3, ...)."""
    x, y, z = p
    ax = anatomy.a * (1 - anatomy.egg * y / anatomy.b)
    cz = np.where(z >= 0, np.float32(anatomy.c_up), np.float32(anatomy.c_down))
    q = np.stack([x / ax, y / np.float32(anatomy.b), z / cz])
    rho = np.sqrt((q * q).sum(0))
    r = np.sqrt((p * p).sum(0))
    safe = np.maximum(rho, 1e-6)
    depth = np.where(rho > 1e-6, r / safe - r, np.float32(anatomy.b))
    return depth.astype(np.float32), (q / safe).astype(np.float32)


def _mass_effect(p: np.ndarray, tumour: _TumourShape | None) -> tuple[np.ndarray, np.ndarray]:
    """Where each point's tissue came from before the tumour pushed it outwards, and how strongly it was pushed."""
    if tumour is None:
        return p, np.zeros(p.shape[1:], np.float32)
    rel = p - tumour.centre.reshape(3, *([1] * (p.ndim - 1)))
    r2 = (rel * rel).sum(0)
    length = tumour.radius + 12.0
    push = np.exp(-r2 / np.float32(length**2)).astype(np.float32)
    return p - rel * (tumour.mass_effect * push), push


def _cortex_distance(p: np.ndarray, depth: np.ndarray, direction: np.ndarray, push: np.ndarray, an: _Anatomy):
    """Signed distance (mm) from brain voxels to the nearest CSF: the convexity, sulci, the interhemispheric and
    Sylvian fissures. Negative inside CSF."""
    x, y, z = p
    effacement = 1.0 - 0.8 * push
    dist = depth - an.csf * effacement

    # Sulci are the zero set of a random field on the sphere: radial clefts of varying depth, lined by cortex.
    radius0 = np.float32(75.0)
    shell = depth < an.sulcus_depth + an.cortex + 4
    if shell.any():
        u = direction[:, shell]
        # Sampling deeper points on a smaller sphere makes sulci bend and branch on their way in.
        sample_radius = radius0 - 0.4 * depth[shell]
        value, grad = _wave_field(u * sample_radius, an.sulci, gradient=True)
        radial = (grad * u).sum(0)
        tangential2 = np.maximum((grad * grad).sum(0) - radial * radial, 0)
        r = np.maximum(np.sqrt((p[:, shell] ** 2).sum(0)), 1.0)
        # Gradient with respect to the voxel position: tangential part scaled to this radius, radial part from the
        # shrinking sample sphere.
        slope = np.sqrt(tangential2 * (sample_radius / r) ** 2 + (0.4 * radial) ** 2 + 1e-4)
        across = np.abs(value) / slope
        sulcus_depth = an.sulcus_depth * (0.75 + 0.2 * _wave_field(u * radius0, an.sulcus_depth_waves))
        below = depth[shell] - sulcus_depth
        gap = across - an.sulcus_width * effacement[shell]
        sulcus = np.where(below <= 0, gap, np.sqrt(np.maximum(gap, 0) ** 2 + below**2))
        dist[shell] = np.minimum(dist[shell], sulcus)

    # The interhemispheric fissure reaches down to the corpus callosum (an arch over the ventricles) and beside the
    # diencephalon it stops; elsewhere it splits the hemispheres.
    y_cc, z_cc, half_length, height = -6.0, -2.0, 38.0, 18.0
    below_arch = np.clip((z_cc - z) / 25.0, 0, 1)
    length = half_length * (1 - 0.45 * below_arch)
    arch = np.sqrt(((y - y_cc) / length) ** 2 + (np.maximum(z - z_cc, 0) / height) ** 2)
    fissure = np.maximum(np.abs(x) - an.fissure_width * effacement, (1 - arch) * height)
    dist = np.minimum(dist, fissure)

    # Sylvian fissure: a cleft curving round the insula, with a lateral limb out to the surface, below the ventricles.
    ax_ = np.abs(x)
    insula = 0.46 * an.a + 5.0 * ((y + 4.0) / 22.0) ** 2 + 1.5 * np.sin(0.4 * y + 0.3 * z)
    extent = np.sqrt(((y + 4.0) / 20.0) ** 2 + ((z + 17.0) / 12.0) ** 2)
    cistern = np.maximum(np.abs(ax_ - insula), (extent - 1) * 12.0)
    limb_extent = np.sqrt((np.maximum(insula - ax_, 0) / 4.0) ** 2 + ((z + 17.0) / 9.0) ** 2)
    limb_offset = y - 12.0 - 0.3 * (ax_ - insula) - 2.5 * np.sin(0.3 * ax_ + 0.4 * z)
    limb = np.maximum(np.abs(limb_offset) * 0.9, (limb_extent - 1) * 9.0)
    sylvian = np.minimum(cistern, limb) - (0.8 + 0.6 * an.sulcus_width)
    return np.minimum(dist, sylvian)


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    """Normalised radius of points ``p`` (3, ...) in an axis-aligned ellipsoid."""
    return np.sqrt(sum(((p[i] - centre[i]) / radii[i]) ** 2 for i in range(3)))


def _ventricles(p: np.ndarray, an: _Anatomy) -> np.ndarray:
    """Lateral ventricles (a butterfly in axial slices) and third ventricle, as a boolean mask."""
    x, y, z = p
    v = an.ventricle_scale
    prof = _VENTRICLE_PROFILE
    ys = prof[:, 0] * an.b / 84.0
    order = np.argsort(ys)
    yq = np.clip(y, ys.min(), ys.max())
    cx, cz, hw, hh = (np.interp(yq, ys[order], prof[order, k]).astype(np.float32) for k in (1, 2, 3, 4))
    inside_y = (y >= ys.min()) & (y <= ys.max())
    side = np.where(x >= 0, 1 + an.ventricle_asymmetry, 1 - an.ventricle_asymmetry)
    width = hw * v * side
    lateral = ((np.abs(x) - (cx - hw) - width) / width) ** 2 + ((z - cz) / (hh * v)) ** 2 < 1
    third = _ellipsoid(p, (0.0, -6.0, -17.0), (1.2 * v, 11.0, 8.0)) < 1
    return (lateral & inside_y) | third


def _tumour_masks(p: np.ndarray, tumour: _TumourShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Necrotic core, enhancing rim and the reach of the oedema, as boolean masks over points ``p`` (3, N)."""
    rel = p - tumour.centre[:, None]
    r = np.sqrt((rel * rel).sum(0))
    u = rel / np.maximum(r, 1e-3)
    g1, g2, g3 = (_wave_field(u, w) for w in tumour.shape_waves)
    outer = tumour.radius * (1 + 0.13 * g1 + 0.06 * g2)
    core = np.minimum(tumour.radius * tumour.core_fraction * (1 + 0.2 * g2 + 0.1 * g3), outer - 2.5)
    oedema = (tumour.radius + tumour.oedema) * (1 + 0.25 * g3 + 0.15 * g1)
    return r < core, (r >= core) & (r < outer), r < oedema


def brain_phantom(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.Generator, tumour: bool = False
) -> Phantom:
    """Draw one T1-weighted post-contrast head phantom on a grid whose axes point R, A, S, centred on the head.

    Args:
        shape: grid size (left-right, posterior-anterior, inferior-superior); slices are along the last axis.
        spacing: voxel size in mm; a field of view of about 180 x 208 x 140 mm holds the whole head.
        rng: the random generator that decides the anatomy, bias field and noise (the only source of randomness).
        tumour: whether to grow a tumour (necrotic core, enhancing rim, oedema, mass effect).

    Returns:
        the phantom: noisy and clean images, tissue labels and the BraTS-labelled tumour mask.
    """
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    an = _Anatomy.draw(rng)
    lesion = _TumourShape.draw(rng, an) if tumour else None
    p = _head_coordinates(shape, spacing, an)
    depth, _ = _inner_table(p, an)

    tissue = np.zeros(shape, np.uint8)
    x_dir = np.abs(p[0]) / np.maximum(np.sqrt((p * p).sum(0)), 1e-3)
    muscle = an.muscle * np.clip((x_dir - 0.6) / 0.3, 0, 1) * np.clip((20.0 - p[2]) / 25.0, 0, 1)
    outside = -depth - an.bone
    tissue[outside < muscle + an.fat + an.skin] = Tissue.SKIN
    tissue[outside < muscle + an.fat] = Tissue.FAT
    tissue[outside < muscle] = Tissue.MUSCLE
    tissue[depth > -an.bone] = Tissue.BONE
    tissue[(depth > -an.bone + an.table) & (depth < -an.table)] = Tissue.DIPLOE

    brain = depth >= 0
    pb = p[:, brain]
    pw, push = _mass_effect(pb, lesion)
    depth_w, direction_w = _inner_table(pw, an)
    depth_b = np.minimum(depth[brain], depth_w)
    to_csf = _cortex_distance(pw, depth_b, direction_w, push, an)
    labels = np.full(pb.shape[1], Tissue.WHITE_MATTER, np.uint8)
    labels[to_csf < an.cortex] = Tissue.GREY_MATTER
    labels[to_csf < 0] = Tissue.CSF
    v = an.ventricle_scale
    for centre, radii in (
        ((11.0 + 3.0 * v, 14.0, -3.0), (5.0, 9.0, 9.0)),  # caudate heads
        ((9.0, -13.0, -15.0), (8.0, 12.0, 8.0)),  # thalami
        ((0.34 * an.a, 0.0, -16.0), (5.0, 13.0, 8.0)),  # lentiform nuclei
    ):
        for side in (-1.0, 1.0):
            deep = _ellipsoid(pw, (side * centre[0], *centre[1:]), radii) < 1
            labels[deep & (to_csf > an.cortex)] = Tissue.DEEP_GREY_MATTER
    ventricle = _ventricles(pw, an)
    labels[ventricle] = Tissue.VENTRICLE
    for side in (-1.0, 1.0):
        glomus = _ellipsoid(pw, (side * 14.0 * v, -21.0 * an.b / 84.0, 1.0), (3.0, 4.0, 3.5)) < 1
        labels[glomus & ventricle] = Tissue.VESSEL
    xb = pb[0]
    sinus = (np.abs(xb) < 3.5 - 0.8 * depth[brain]) & (pb[2] > -20)
    labels[sinus] = Tissue.VESSEL

    mask_b = np.zeros(pb.shape[1], np.uint8)
    if lesion is not None:
        core, rim, oedema_reach = _tumour_masks(pb, lesion)
        oedema = oedema_reach & np.isin(labels, (Tissue.WHITE_MATTER, Tissue.DEEP_GREY_MATTER))
        mask_b[oedema] = TumourLabel.OEDEMA
        mask_b[rim] = TumourLabel.ENHANCING_RIM
        mask_b[core] = TumourLabel.NECROTIC_CORE
        labels[mask_b > 0] = Tissue.TUMOUR
    tissue[brain] = labels
    mask = np.zeros(shape, np.uint8)
    mask[brain] = mask_b

    lut = np.array([an.contrast[Tissue(t)] for t in range(len(Tissue))], np.float32)
    clean = lut[tissue]
    for label, value in TUMOUR_T1C_INTENSITY.items():
        clean[mask == label] = value * rng.uniform(0.92, 1.08)
    texture = _smooth_noise(rng, shape, spacing, 2.5)
    clean *= 1 + 0.03 * texture
    rim = mask == TumourLabel.ENHANCING_RIM
    clean[rim] *= 1 + 0.12 * texture[rim]
    clean = _blur_in_plane(clean)

    gain = rng.uniform(0.85, 1.15)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    xs, ys, zs = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    coeffs = rng.normal(0, 0.08, 9).astype(np.float32)
    log_bias = (
        coeffs[0] * xs + coeffs[1] * ys + coeffs[2] * zs
        + coeffs[3] * xs * ys + coeffs[4] * xs * zs + coeffs[5] * ys * zs
        + coeffs[6] * (xs * xs - 1 / 3) + coeffs[7] * (ys * ys - 1 / 3) + coeffs[8] * (zs * zs - 1 / 3)
    )  # fmt: skip
    signal = clean * (gain * np.exp(log_bias))
    sigma = float(rng.uniform(0.018, 0.03) * an.contrast[Tissue.WHITE_MATTER])
    real = signal + rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    image = np.sqrt(real * real + imag * imag)
    return Phantom(
        image=image.astype(np.float32),
        clean=clean.astype(np.float32),
        tissue=tissue,
        tumour=mask,
        spacing=spacing,
        noise_sigma=sigma,
    )
