"""Synthetic cubes/spheres (and other shapes) in the DLI layout, rendered offline by ray casting.

A camera and a LiDAR sit together at the origin, looking down +y (x right, z up).
Each scene holds one object, a cube (random 3-D rotation) or a sphere, at a random
position, in a random pastel colour, lit by one directional light from a random
direction (Lambertian shading: faces turned away stay black) on a black background,
with small sensor noise. The camera is a pinhole with its own field of view; the
LiDAR returns the radial distance along each (azimuth, zenith) beam, ``NO_RETURN``
where a beam hits nothing. Optional ground plane and distractor poles make it harder.
``generate(classes=...)`` also renders cylinders, cones, tori and pyramids, randomly
rotated too, each ray-cast by its own analytic intersection (:data:`HITS`).

The defaults are fitted to the original renders (``benchmarks/fit_scene.py``, the
README's "How the generated scenes were fitted"): NVIDIA's own LiDAR classifier
recognises them, and the RGB statistics match the published ones. ``LEGACY`` is the
look of the generator before that fit.

Every scene draws from its own generator seeded by ``(seed, shape, index)`` (the shape's
place in :data:`SHAPES`), so the output is byte-identical for the same arguments, a larger
set starts with the scenes of a smaller one, and a shape's scenes do not depend on the
other classes. ``image_size`` and ``beams`` sample the same fields of view at other
resolutions.
"""

from __future__ import annotations

import colorsys
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import layout
from .workers import process_pool


def beam_angles(n: int) -> np.ndarray:
    """``n`` beams over the course's field of view, -16 degrees up to (not including) +16, in radians."""
    return np.deg2rad(-16.0 + (32.0 / n) * np.arange(n)).astype(np.float32)


#: the course's beam layout: -16 to +15.5 degrees in 0.5 degree steps
BEAM_ANGLES = beam_angles(layout.SIZE)
#: class folder -> shape, in the order that seeds each shape's scenes (cubes and spheres first, as ever)
SHAPES = layout.SHAPES
FOLDERS = {shape: folder for folder, shape in SHAPES.items()}
DEFAULT_CLASSES = ("cube", "sphere")
#: the smallest and largest side of an image or a beam grid
MIN_SIZE, MAX_SIZE = 8, 2048
PALETTES = ("pastel", "primary")
LIGHTS = ("any", "front")
_BATCH = 64  # scenes rendered together (fewer for images or beam grids larger than 64x64)
GROUND_GREY, POLE_GREY = 0.06, 0.12
POLE_HALF_SIZE = (0.15, 0.15, 4.0)  # metres


@dataclass(frozen=True)
class SceneConfig:
    """Physical scene parameters; the defaults are fitted to the original renders."""

    distance: tuple[float, float] = (15.48, 19.78)  # sensor to object centre, metres
    size: tuple[float, float] = (1.15, 1.21)  # sphere radius, metres
    cube_scale: float = 1.0  # a cube's half-edge per unit of size: 1 = edge as long as the sphere's diameter
    offset: float = 0.6  # lateral and vertical offset, as a fraction of the LiDAR's half field of view
    camera_fov: float | None = 47.0  # the camera's field of view, degrees; None: the LiDAR's
    palette: str = "pastel"  # object colours: light pastel hues, or one dominant primary channel
    light: str = "any"  # the light's direction: from anywhere up to back_light, or from the sensor's side ("front")
    #: with light "any": how far behind the object the light may be (-1 to 1: up to right behind)
    back_light: float = 0.25
    brightness: float = 0.7  # light strength times peak reflectance
    ambient: tuple[float, float] = (0.0, 0.0)  # share of light reaching faces turned from the light
    rgb_noise: float = 0.0  # std of camera noise, in [0, 1] intensity units (the original has none: black is 0)
    depth_noise: float = 0.01  # std of range noise on valid returns, metres
    no_return: float = layout.NO_RETURN  # the range stored where a beam hits nothing (any value >= 50)
    ground_plane: bool = False  # a grey floor under the sensor
    ground_height: float = 2.0  # sensor height above the floor, metres
    distractors: int = 0  # grey poles scattered behind the object

    def __post_init__(self):
        for name in ("distance", "size", "ambient"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi if name == "ambient" else 0 < lo <= hi):
                raise ValueError(f"SceneConfig.{name}: expected 0 < low <= high, got {(lo, hi)}")
        if not -1 <= self.back_light <= 1:
            raise ValueError(f"SceneConfig.back_light: expected a value in [-1, 1], got {self.back_light}")
        for name in ("offset", "brightness", "rgb_noise", "depth_noise", "distractors"):
            if getattr(self, name) < 0:
                raise ValueError(f"SceneConfig.{name}: must be >= 0, got {getattr(self, name)}")
        if not self.no_return >= layout.NO_RETURN:
            raise ValueError(f"SceneConfig.no_return: expected a value >= {layout.NO_RETURN}, got {self.no_return}")
        if self.cube_scale <= 0:
            raise ValueError(f"SceneConfig.cube_scale: must be > 0, got {self.cube_scale}")
        if self.camera_fov is not None and not 0 < self.camera_fov < 180:
            raise ValueError(f"SceneConfig.camera_fov: expected degrees in (0, 180), got {self.camera_fov}")
        for name, allowed in (("palette", PALETTES), ("light", LIGHTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SceneConfig.{name}: unknown value {getattr(self, name)!r}; "
                                 f"expected one of {', '.join(allowed)}")


#: the generator's look before it was fitted to the original: larger, nearer, dim pure
#: red/green/blue objects lit from the sensor's side, cubes shrunk to cover a sphere's area
LEGACY = SceneConfig(distance=(9.0, 14.0), size=(0.7, 1.4), cube_scale=0.85, offset=0.35, camera_fov=None,
                     palette="primary", light="front", brightness=0.25, ambient=(0.05, 0.2), rgb_noise=0.004)

#: the looks ``cilp generate --look`` offers
LOOKS = {"default": SceneConfig(), "legacy": LEGACY}


# --------------------------------------------------------------------------- rays


def lidar_rays(azimuth: np.ndarray, zenith: np.ndarray) -> np.ndarray:
    """Unit beam directions ``(A*Z, 3)``, rows following azimuth (course convention)."""
    az, ze = -azimuth[:, None], -zenith[None, :]
    rays = np.stack(np.broadcast_arrays(np.sin(az) * np.cos(ze), np.cos(az) * np.cos(ze), np.sin(ze)), -1)
    return rays.reshape(-1, 3).astype(np.float32)


def camera_rays(height: int, width: int, half_fov: float) -> np.ndarray:
    """Unit pinhole ray directions ``(height*width, 3)``, row 0 at the top; ``half_fov`` spans half the
    width, pixels are square."""
    across = np.tan(half_fov) * ((np.arange(width) + 0.5) * 2 / width - 1)
    down = np.tan(half_fov) * (height / width) * ((np.arange(height) + 0.5) * 2 / height - 1)
    x, z = np.meshgrid(across, -down)
    rays = np.stack([x, np.ones_like(x), z], -1).reshape(-1, 3)
    return (rays / np.linalg.norm(rays, axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- surfaces


def _dot(vectors: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """``vectors @ rays.T`` without BLAS, whose threads would fight the worker processes."""
    return sum(vectors[:, k, None] * rays[None, :, k] for k in range(3))

# Each returns, per scene and ray, the hit distance t (inf where missed) and the
# cosine between the surface normal and the light direction. Arrays are (N, P).


def _hit_sphere(rays, center, radius, light):
    b = _dot(center, rays)
    disc = b * b - ((center * center).sum(1) - radius * radius)[:, None]
    t = b - np.sqrt(np.maximum(disc, 0))
    t = np.where((disc >= 0) & (t > 0), t, np.inf)
    # normal = (t d - c) / r
    cosine = (np.where(np.isfinite(t), t, 0) * _dot(light, rays) - (center * light).sum(1)[:, None])
    return t, cosine / radius[:, None]


def _hit_box(rays, center, half, rotation, light):
    """Slab test in the box frame; ``rotation``'s columns are the box axes."""
    t_near = np.full((len(center), len(rays)), -np.inf, np.float32)
    t_far = np.full_like(t_near, np.inf)
    cosine = np.zeros_like(t_near)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(3):
            axis = rotation[:, :, j]
            direction = _dot(axis, rays)  # ray direction along the box axis
            origin = -(axis * center).sum(1)[:, None]  # sensor position along it
            t1 = (-half[:, j, None] - origin) / direction
            t2 = (half[:, j, None] - origin) / direction
            near = np.minimum(t1, t2)
            # the face hit is on the slab entered last; its normal faces the ray
            entered_last = near > t_near
            face_cosine = -np.sign(direction) * (axis * light).sum(1)[:, None]
            cosine = np.where(entered_last, face_cosine, cosine)
            t_near = np.maximum(t_near, near)
            t_far = np.minimum(t_far, np.maximum(t1, t2))
    t = np.where((t_far >= t_near) & (t_near > 0), t_near, np.inf)
    return t, cosine


def _hit_ground(rays, height, light):
    with np.errstate(divide="ignore"):
        t = -height / rays[:, 2]
    t = np.broadcast_to(np.where(t > 0, t, np.inf), (len(light), len(rays)))
    return t, np.broadcast_to(light[:, 2:3], t.shape)


# The other shapes are intersected in their own frame: centred at the origin, axis along z
# (``rotation``'s third column in the world), scaled by the scene's ``size`` s. Each returns the
# hit distance t (inf where missed) and the outward surface normal there, (N, P) and (N, P, 3),
# from the ray origins ``o`` (N, 1, 3) and unit directions ``d`` (N, P, 3), in float64.


def _hit_local(intersect):
    """A shape's ``hit`` from its intersection in its own frame (see above)."""

    def hit(rays, center, size, rotation, light, config):
        rotation = rotation.astype(np.float64)
        origin = -np.einsum("nij,ni->nj", rotation, center.astype(np.float64))[:, None, :]
        direction = np.einsum("nij,pi->npj", rotation, rays.astype(np.float64))
        t, normal = intersect(origin, direction, size.astype(np.float64)[:, None])
        light_here = np.einsum("nij,ni->nj", rotation, light.astype(np.float64))[:, None, :]
        length = np.linalg.norm(normal, axis=-1)
        cosine = (normal * light_here).sum(-1) / np.where(length > 0, length, 1)
        return t, cosine

    return hit


def _point(o, d, t):
    return o + np.where(np.isfinite(t), t, 0)[..., None] * d


def _ahead(t, keep):
    """``t`` where the hit is in front of the sensor and ``keep`` holds, else inf."""
    return np.where(keep & (t > 0), t, np.inf)


def _quadratic(a, half_b, c):
    """The two roots of ``a t^2 + 2 half_b t + c``; nan where there is none."""
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(half_b * half_b - a * c)
        return (-half_b - root) / a, (-half_b + root) / a


def _nearest(hits):
    """The nearest of several ``(t, normal)`` candidates per ray."""
    ts = np.stack([np.where(np.isnan(t), np.inf, t) for t, _ in hits])
    first = ts.argmin(0)
    normals = np.stack([np.broadcast_to(normal, first.shape + (3,)) for _, normal in hits])
    return (np.take_along_axis(ts, first[None], 0)[0],
            np.take_along_axis(normals, first[None, ..., None], 0)[0])


def _cap(o, d, height, radius, facing):
    """The disc of ``radius`` at ``z = height`` whose normal is ``(0, 0, facing)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (height - o[..., 2]) / d[..., 2]
    p = _point(o, d, t)
    return _ahead(t, p[..., 0] ** 2 + p[..., 1] ** 2 <= radius * radius), np.array([0.0, 0.0, facing])


def _cylinder(o, d, s):
    """Radius s, height 2s."""
    hits = [_cap(o, d, s, s, 1.0), _cap(o, d, -s, s, -1.0)]
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    half_b = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1]
    for t in _quadratic(a, half_b, o[..., 0] ** 2 + o[..., 1] ** 2 - s * s):
        p = _point(o, d, t)
        hits.append((_ahead(t, np.abs(p[..., 2]) <= s), p * [1.0, 1.0, 0.0]))
    return _nearest(hits)


def _cone(o, d, s):
    """Base radius s at z = -s, apex at z = +s: x^2 + y^2 = k^2 (s - z)^2 with k = 1/2."""
    k2 = 0.25
    below_apex = s - o[..., 2]
    a = d[..., 0] ** 2 + d[..., 1] ** 2 - k2 * d[..., 2] ** 2
    half_b = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1] + k2 * below_apex * d[..., 2]
    c = o[..., 0] ** 2 + o[..., 1] ** 2 - k2 * below_apex ** 2
    hits = [_cap(o, d, -s, s, -1.0)]
    for t in _quadratic(a, half_b, c):
        p = _point(o, d, t)
        normal = np.stack([p[..., 0], p[..., 1], k2 * (s - p[..., 2])], -1)
        hits.append((_ahead(t, np.abs(p[..., 2]) <= s), normal))
    return _nearest(hits)


def _pyramid(o, d, s):
    """A square base of half-width s at z = -s, apex at z = +s: five half-spaces ``n . p <= offset``,
    slab-tested like the box (the face entered last is the one hit)."""
    planes = [((0.0, 0.0, -1.0), s)] + [((2.0 * x, 2.0 * y, 1.0), s) for x, y in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    t_near = np.full(d.shape[:-1], -np.inf)
    t_far = np.full_like(t_near, np.inf)
    normal = np.zeros(d.shape)
    for n, offset in planes:
        n = np.asarray(n)
        towards, room = (d * n).sum(-1), offset - (o * n).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = room / towards
        # parallel to the plane: inside it all along, or never
        enters = np.where(towards < 0, t, np.where((towards == 0) & (room < 0), np.inf, -np.inf))
        normal = np.where((enters > t_near)[..., None], n, normal)
        t_near = np.maximum(t_near, enters)
        t_far = np.minimum(t_far, np.where(towards > 0, t, np.inf))
    return _ahead(t_near, t_far >= t_near), normal


def _torus(o, d, s):
    """Ring radius 0.7 s, tube radius 0.3 s, around z: the smallest real root of its quartic, solved
    (as the eigenvalues of its companion matrix) for the rays that pass through its bounding sphere."""
    ring, tube = 0.7 * s, 0.3 * s
    along = -(o * d).sum(-1)  # from the sensor to the ray's point nearest the centre: solved from there
    start = _point(o, d, along)
    inside = (start * start).sum(-1) < ((ring + tube) ** 2)
    t = np.full(along.shape, np.inf)
    normal = np.zeros(d.shape)
    if not inside.any():
        return t, normal
    q, u = start[inside], d[inside]
    r2 = np.broadcast_to(ring * ring, inside.shape)[inside]
    g = (q * q).sum(-1) + r2 - np.broadcast_to(tube * tube, inside.shape)[inside]
    h = (q * u).sum(-1)
    coefficients = np.stack([  # monic: t^4 + c3 t^3 + c2 t^2 + c1 t + c0
        4 * h,
        4 * h * h + 2 * g - 4 * r2 * (u[:, 0] ** 2 + u[:, 1] ** 2),
        4 * h * g - 8 * r2 * (q[:, 0] * u[:, 0] + q[:, 1] * u[:, 1]),
        g * g - 4 * r2 * (q[:, 0] ** 2 + q[:, 1] ** 2)], -1)
    companion = np.zeros((len(q), 4, 4))
    companion[:, 0] = -coefficients
    companion[:, [1, 2, 3], [0, 1, 2]] = 1
    roots = np.linalg.eigvals(companion)
    hits = along[inside][:, None] + roots.real
    real = np.abs(roots.imag) <= 1e-6 * np.sqrt(r2)[:, None]
    t[inside] = np.where(real & (hits > 0), hits, np.inf).min(-1)
    p = _point(o, d, t)
    around = np.hypot(p[..., 0], p[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        to_ring = np.stack([p[..., 0], p[..., 1], np.zeros_like(around)], -1) * (ring / around)[..., None]
    normal = np.where(np.isfinite(t)[..., None], np.nan_to_num(p - to_ring), 0.0)
    return t, normal


def _cube(rays, center, size, rotation, light, config):
    half = np.repeat(config.cube_scale * size[:, None], 3, 1)
    return _hit_box(rays, center, half, rotation, light)


def _sphere(rays, center, size, rotation, light, config):
    return _hit_sphere(rays, center, size, light)


#: shape -> its ``hit(rays, center, size, rotation, light, config)``: distances and light cosines (N, P)
HITS = {"cube": _cube, "sphere": _sphere, "cylinder": _hit_local(_cylinder), "cone": _hit_local(_cone),
        "torus": _hit_local(_torus), "pyramid": _hit_local(_pyramid)}


# --------------------------------------------------------------------------- scenes


def _random_rotation(rng) -> np.ndarray:
    w, x, y, z = rng.normal(size=4)
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ], np.float32)


def _colour(rng, palette: str) -> np.ndarray:
    if palette == "primary":
        colour = rng.uniform(0.0, 0.12, 3)
        colour[rng.integers(3)] = rng.uniform(0.7, 1.0)
        return colour
    hue = np.asarray(colorsys.hsv_to_rgb(rng.uniform(), 1.0, 1.0))
    white = rng.uniform(0.3, 0.75)  # pastel: the hue mixed with white
    return white + (1 - white) * hue


def _light_direction(rng, config: SceneConfig) -> np.ndarray:
    """Unit vector towards the light: uniform over the directions whose component away from the
    sensor is at most ``back_light`` (a light right behind the object leaves it black), or from
    the sensor's side."""
    if config.light == "front":
        direction = np.array([rng.uniform(-1, 1), -rng.uniform(0.3, 1.0), rng.uniform(-0.2, 1.0)])
        return direction / np.linalg.norm(direction)
    away, around = rng.uniform(-1, config.back_light), rng.uniform(0, 2 * np.pi)
    across = np.sqrt(1 - away * away)
    return np.array([across * np.cos(around), away, across * np.sin(around)])


def _sample_scene(rng, config: SceneConfig, half_fov: float) -> dict:
    distance = rng.uniform(*config.distance)
    spread = config.offset * np.tan(half_fov) * distance
    colour, light = _colour(rng, config.palette), _light_direction(rng, config)  # drawn first: the legacy order
    scene = {
        "center": np.array([rng.uniform(-spread, spread), distance, rng.uniform(-spread, spread)]),
        "size": rng.uniform(*config.size),
        "rotation": _random_rotation(rng),
        "albedo": config.brightness * colour,
        "light": light,
        "ambient": rng.uniform(*config.ambient),
        "poles": [],
    }
    for _ in range(config.distractors):
        pole_distance = rng.uniform(distance + 2, distance + 12)
        x = rng.uniform(-1, 1) * np.tan(half_fov) * pole_distance
        scene["poles"].append(np.array([x, pole_distance, 0.0]))
    return scene


def _stack(scenes, key):
    return np.asarray([s[key] for s in scenes], np.float32)


def _shade(rays, scenes, shape: str, config: SceneConfig):
    """Render a batch of scenes along ``rays``: distances (N, P) and colours (N, P, 3)."""
    n = len(scenes)
    center, size, light = _stack(scenes, "center"), _stack(scenes, "size"), _stack(scenes, "light")
    t, cosine = HITS[shape](rays, center, size, _stack(scenes, "rotation"), light, config)
    ambient = _stack(scenes, "ambient")[:, None]
    intensity = ambient + (1 - ambient) * np.clip(cosine, 0, None)
    colour = intensity[..., None] * _stack(scenes, "albedo")[:, None, :]

    extras = []  # (t, cosine, grey level) of each background surface
    if config.ground_plane:
        extras.append((*_hit_ground(rays, config.ground_height, light), GROUND_GREY))
    if config.distractors:
        upright = np.broadcast_to(np.eye(3, dtype=np.float32), (n, 3, 3))
        half = np.broadcast_to(np.asarray(POLE_HALF_SIZE, np.float32), (n, 3))
        for k in range(config.distractors):
            pole = np.asarray([s["poles"][k] for s in scenes], np.float32)
            extras.append((*_hit_box(rays, pole, half, upright, light), POLE_GREY))
    for t_extra, cosine_extra, grey in extras:
        closer = t_extra < t
        shade = grey * (0.3 + 0.7 * np.clip(cosine_extra, 0, None))
        colour = np.where(closer[..., None], shade[..., None], colour)
        t = np.where(closer, t_extra, t)
    colour = np.where(np.isfinite(t)[..., None], colour, 0.0)
    return t, colour


def render_batch(
    rngs: list, shape: str, config: SceneConfig, azimuth: np.ndarray, zenith: np.ndarray,
    image_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene per generator: RGBA uint8 ``(N, H, W, 4)`` (``image_size``; default square, as
    many pixels a side as azimuth beams), depth float32 ``(N, A, Z)`` along the beams."""
    height, width = image_size or (len(azimuth), len(azimuth))
    pixels, beams = height * width, len(azimuth) * len(zenith)
    half_fov = float(np.abs(azimuth).max())
    camera_half_fov = half_fov if config.camera_fov is None else np.deg2rad(config.camera_fov) / 2
    scenes = [_sample_scene(rng, config, half_fov) for rng in rngs]
    _, colour = _shade(camera_rays(height, width, camera_half_fov), scenes, shape, config)
    t, _ = _shade(lidar_rays(azimuth, zenith), scenes, shape, config)

    rgb_noise = np.stack([rng.standard_normal((pixels, 3), np.float32) for rng in rngs])
    depth_noise = np.stack([rng.standard_normal(beams, np.float32) for rng in rngs])
    colour = np.clip(colour + config.rgb_noise * rgb_noise, 0, 1)
    rgba = np.full((len(rngs), pixels, 4), 255, np.uint8)
    rgba[..., :3] = np.rint(colour * 255).astype(np.uint8)
    depth = np.where(np.isfinite(t) & (t < layout.NO_RETURN), t + config.depth_noise * depth_noise, config.no_return)
    depth = np.where(depth < layout.NO_RETURN, depth, config.no_return).astype(np.float32)
    return rgba.reshape(-1, height, width, 4), depth.reshape(-1, len(azimuth), len(zenith))


# --------------------------------------------------------------------------- files


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """``classes`` as a tuple of shapes, or ``ValueError`` naming what is wrong with it."""
    classes = tuple(classes)
    if not classes:
        raise ValueError(f"classes: expected at least one of {', '.join(FOLDERS)}")
    for shape in classes:
        if shape not in FOLDERS:
            raise ValueError(f"classes: unknown shape {shape!r}; expected some of {', '.join(FOLDERS)}")
        if classes.count(shape) > 1:
            raise ValueError(f"classes: {shape!r} is given twice")
    return classes


def check_sides(name: str, sides: Sequence[int]) -> tuple[int, int]:
    """``sides`` (``image_size`` or ``beams``) as two ints in ``[MIN_SIZE, MAX_SIZE]``, or ``ValueError``."""
    sides = tuple(sides)
    if len(sides) != 2 or not all(isinstance(n, (int, np.integer)) and MIN_SIZE <= n <= MAX_SIZE for n in sides):
        raise ValueError(f"{name}: expected two whole numbers from {MIN_SIZE} to {MAX_SIZE}, got {sides}")
    return int(sides[0]), int(sides[1])


def _write_chunk(root: str, folder: str, start: int, stop: int, seed: int, config: SceneConfig, width: int,
                 image_size: tuple[int, int], beams: tuple[int, int]) -> int:
    class_dir = Path(root) / folder
    rngs = [np.random.default_rng([seed, _seed_index(folder), i]) for i in range(start, stop)]
    rgba, depth = render_batch(rngs, SHAPES[folder], config, beam_angles(beams[0]), beam_angles(beams[1]), image_size)
    for i, image, ranges in zip(range(start, stop), rgba, depth):
        layout.write_pair(class_dir, f"{i:0{width}d}", image, ranges)
    return stop - start


def generate(
    dest: Path | str,
    n_per_class: int = 1000,
    seed: int = 42,
    config: SceneConfig = SceneConfig(),
    *,
    force: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    quirks: int = 0,
    classes: Sequence[str] = DEFAULT_CLASSES,
    image_size: tuple[int, int] = (layout.SIZE, layout.SIZE),
    beams: tuple[int, int] = (layout.SIZE, layout.SIZE),
) -> Path:
    """Render ``n_per_class`` pairs per class into ``dest`` in the DLI layout.

    ``classes``: the shapes, one class folder each (:data:`FOLDERS`), in this order. ``image_size``:
    the RGB images' height and width (the camera's field of view spans the width). ``beams``: the
    number of azimuth and zenith beams (a range image's rows and columns), spread over the course's
    field of view (:func:`beam_angles`). Only the defaults give data that ``layout.scan`` reads today.

    The files are written to a temporary folder beside ``dest`` and moved into
    place at the end, so a failed run leaves nothing behind. ``progress`` is
    called with the number of pairs finished since its last call. ``quirks``
    gives each class that many of each quirk of published copies (see
    :func:`add_quirks`); none by default.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class: expected a positive number of pairs, got {n_per_class}")
    _check_quirks(quirks, n_per_class)
    classes = check_classes(classes)
    image_size, beams = check_sides("image_size", image_size), check_sides("beams", beams)
    batch = max(1, min(_BATCH, _BATCH * layout.SIZE ** 2 // max(image_size[0] * image_size[1], beams[0] * beams[1])))
    dest = Path(dest).resolve()
    if dest.exists() and any(dest.iterdir()) and not force:
        raise FileExistsError(f"{dest}: already exists and is not empty (use --force to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    width = max(4, len(str(n_per_class - 1)))
    workers = workers or min(2, os.cpu_count() or 1)
    try:
        jobs = []
        for folder in (FOLDERS[shape] for shape in classes):
            layout.write_angles(layout.make_class_dirs(staging, folder), beam_angles(beams[0]), beam_angles(beams[1]))
            for start in range(0, n_per_class, batch):
                stop = min(start + batch, n_per_class)
                jobs.append((str(staging), folder, start, stop, seed, config, width, image_size, beams))
        if workers > 1 and len(jobs) > 1:
            with process_pool(workers) as pool:
                for done in pool.map(_write_chunk, *zip(*jobs)):
                    if progress:
                        progress(done)
        else:
            for job in jobs:
                done = _write_chunk(*job)
                if progress:
                    progress(done)
        add_quirks(staging, quirks, seed, image_size)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _seed_index(folder: str) -> int:
    """The class's part of its scenes' seeds: its shape's place in :data:`SHAPES`, whatever the other classes."""
    return list(SHAPES).index(folder)


# --------------------------------------------------------------------------- quirks

#: the stems one quirk of each kind takes: a blank image, a copy, and a duplicate with its original
_STEMS_PER_QUIRK = 4


def _check_quirks(quirks: int, n_per_class: int) -> None:
    if quirks < 0:
        raise ValueError(f"quirks: expected a number >= 0, got {quirks}")
    if _STEMS_PER_QUIRK * quirks > n_per_class:
        raise ValueError(f"quirks: {quirks} of each kind take {_STEMS_PER_QUIRK * quirks} pairs per class, "
                         f"but n_per_class is {n_per_class}")


def add_quirks(root: Path | str, quirks: int, seed: int, image_size: tuple[int, int] = (layout.SIZE, layout.SIZE),
               ) -> None:
    """Give each class folder under ``root`` ``quirks`` of each quirk of published copies, on distinct
    stems drawn by a generator seeded with ``(seed, class)``:

    - an all-black RGB image (alpha 255) in place of a pair's image: these are byte-identical;
    - an unpaired copy ``STEM (1).npy`` of a LiDAR file, or (every second one) ``STEM (1).png`` of an
      RGB file, byte-identical to its original;
    - a duplicate pair: a later stem's two files replaced by an earlier stem's, byte for byte.

    The number of pairs stays the same. Applied after rendering: the scenes do not change.
    """
    if not quirks:
        return
    root = Path(root)
    for folder in SHAPES:
        class_dir = root / folder
        if not class_dir.is_dir():
            continue
        stems = sorted(path.stem for path in (class_dir / "lidar").glob("*.npy"))
        _check_quirks(quirks, len(stems))
        drawn = np.random.default_rng([seed, _seed_index(folder)]).permutation(len(stems))[:_STEMS_PER_QUIRK * quirks]
        chosen = [stems[i] for i in drawn]
        blank, copied, duplicated = chosen[:quirks], chosen[quirks:2 * quirks], chosen[2 * quirks:]
        for stem in blank:
            path = class_dir / "rgb" / f"{stem}.png"
            black = np.zeros((*image_size, 4), np.uint8)
            black[..., 3] = 255
            path.write_bytes(layout.encode_png(black))
        for k, stem in enumerate(copied):
            kind, suffix = (("lidar", ".npy"), ("rgb", ".png"))[k % 2]
            shutil.copyfile(class_dir / kind / f"{stem}{suffix}", class_dir / kind / f"{stem} (1){suffix}")
        for first, second in zip(duplicated[::2], duplicated[1::2]):
            original, duplicate = sorted((first, second))
            for kind, suffix in (("rgb", ".png"), ("lidar", ".npy")):
                shutil.copyfile(class_dir / kind / f"{original}{suffix}", class_dir / kind / f"{duplicate}{suffix}")
