"""Drawing Tiny World scenes with numpy: analytic backgrounds and shapes anti-aliased by their distance fields.

Every shape is a signed distance function in units of its nominal radius (y up, centred on its
centroid); a pixel's coverage is `clip(0.5 - distance_in_pixels, 0, 1)`, which anti-aliases the
edge over one pixel at any size without supersampling.
"""

from __future__ import annotations

import math

import numpy as np

from .scene import COLOURS, EXTENT, MOVES, SIZES, TONES, Background, CameraPan, ObjectSpec, Scene, trajectory

SQUARE_HALF_SIDE = 0.88  # nominal radii; the square's area matches the circle's
TRIANGLE_CIRCUMRADIUS = 1.3
STAR_OUTER, STAR_INNER = 1.3, 0.585
CROSS_HALF_LENGTH, CROSS_HALF_WIDTH = 1.1, 0.37
STRIPE_PERIOD = 0.125  # of the frame's shorter side, one light and one dark stripe
CHECKER_PERIOD = 0.25  # two squares
NOISE_CELL = 0.22  # lattice spacing of the mottled texture
NOISE_LATTICE = 32  # the texture repeats after this many cells
NOISE_CONTRAST = 2.5


def _circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.hypot(x, y) - 1.0


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx, dy = np.abs(x) - SQUARE_HALF_SIDE, np.abs(y) - SQUARE_HALF_SIDE
    return np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0)) + np.minimum(np.maximum(dx, dy), 0.0)


def _triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Equilateral, apex up (Inigo Quilez's exact distance)."""
    k = math.sqrt(3.0)
    half_side = TRIANGLE_CIRCUMRADIUS * k / 2
    x = np.abs(x) - half_side
    y = y + half_side / k
    fold = x + k * y > 0.0
    x, y = np.where(fold, (x - k * y) / 2, x), np.where(fold, (-k * x - y) / 2, y)
    x = x - np.clip(x, -2.0 * half_side, 0.0)
    return -np.hypot(x, y) * np.sign(y)


def _star(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Five points, one up: fold the plane into one tenth and measure to the tip-to-notch edge."""
    sector = 2.0 * math.pi / 5
    phi = np.abs((np.arctan2(x, y) + sector / 2) % sector - sector / 2)
    rho = np.hypot(x, y)
    px, py = rho * np.sin(phi), rho * np.cos(phi) - STAR_OUTER  # relative to the tip
    bx, by = STAR_INNER * math.sin(sector / 2), STAR_INNER * math.cos(sector / 2) - STAR_OUTER
    h = np.clip((px * bx + py * by) / (bx * bx + by * by), 0.0, 1.0)
    distance = np.hypot(px - h * bx, py - h * by)
    return np.where(bx * py - by * px < 0.0, -distance, distance)


def _cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A plus sign (Inigo Quilez's exact distance)."""
    x, y = np.abs(x), np.abs(y)
    x, y = np.maximum(x, y), np.minimum(x, y)
    qx, qy = x - CROSS_HALF_LENGTH, y - CROSS_HALF_WIDTH
    k = np.maximum(qx, qy)
    wx = np.where(k > 0.0, qx, CROSS_HALF_WIDTH - x)
    wy = np.where(k > 0.0, qy, -k)
    return np.sign(k) * np.hypot(np.maximum(wx, 0.0), np.maximum(wy, 0.0))


DISTANCES = {"circle": _circle, "square": _square, "triangle": _triangle, "star": _star, "cross": _cross}


def frame_times(frames: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


def _camera_offsets(pan: CameraPan | None, times: np.ndarray, height: int, width: int) -> tuple:
    """Where each frame's top-left corner sits on the background, in pixels."""
    if pan is None:
        return np.zeros_like(times), np.zeros_like(times)
    dx, dy = MOVES[pan.direction]
    return dx * pan.travel * width * times, dy * pan.travel * height * times


def _square_wave(position: np.ndarray, period: float) -> np.ndarray:
    """0/1 bands of half a period each, anti-aliased over one pixel of `position` (pixels)."""
    distance = np.abs((position / period) % 1.0 - 0.5) * period
    return np.clip(distance - period / 4 + 0.5, 0.0, 1.0)


def _lattice_weights(position: np.ndarray, cell: float) -> np.ndarray:
    """(..., n) positions to (..., n, NOISE_LATTICE) smoothstep interpolation weights on a wrapped lattice."""
    grid = position / cell
    index = np.floor(grid).astype(np.int64)
    f = grid - index
    f = f * f * (3.0 - 2.0 * f)
    weights = np.zeros((*position.shape, NOISE_LATTICE), dtype=np.float32)
    np.put_along_axis(weights, (index % NOISE_LATTICE)[..., None], (1.0 - f)[..., None], axis=-1)
    np.put_along_axis(weights, ((index + 1) % NOISE_LATTICE)[..., None], f[..., None], axis=-1)
    return weights


def _noise(background: Background, xs: np.ndarray, ys: np.ndarray, short_side: int) -> np.ndarray:
    """Two octaves of value noise; xs (T, W) and ys (T, H) pixel positions on the background."""
    rng = np.random.default_rng(background.seed)
    total = np.zeros((xs.shape[0], ys.shape[1], xs.shape[1]), dtype=np.float32)
    for octave, weight in ((1, 1.0), (2, 0.5)):
        lattice = rng.random((NOISE_LATTICE, NOISE_LATTICE), dtype=np.float32)
        cell = NOISE_CELL * short_side / octave
        rows, columns = _lattice_weights(ys, cell), _lattice_weights(xs, cell)
        total += weight * np.einsum("thi,twi->thw", rows @ lattice, columns)  # a strided batched @ is slow
    return np.clip((total / 1.5 - 0.5) * NOISE_CONTRAST + 0.5, 0.0, 1.0)


def _pattern(background: Background, pan: CameraPan | None, times: np.ndarray, height: int, width: int):
    """How far each pixel is from the tone's base colour towards its second colour, (T, H, W) or broadcastable."""
    short_side = min(height, width)
    off_x, off_y = _camera_offsets(pan, times, height, width)
    xs = (np.arange(width) + 0.5)[None, :] + off_x[:, None]  # (T, W)
    ys = (np.arange(height) + 0.5)[None, :] + off_y[:, None]  # (T, H)
    if background.pattern == "stripes":
        normal = math.radians(background.angle)
        across = xs[:, None, :] * math.cos(normal) + ys[:, :, None] * math.sin(normal)
        return _square_wave(across, STRIPE_PERIOD * short_side)
    if background.pattern == "checker":
        a = _square_wave(xs[:, None, :], CHECKER_PERIOD * short_side)
        b = _square_wave(ys[:, :, None], CHECKER_PERIOD * short_side)
        return a + b - 2.0 * a * b  # a soft exclusive or
    if background.pattern == "gradient":
        return (ys / height)[:, :, None]
    if background.pattern == "noise":
        return _noise(background, xs, ys, short_side)
    return np.zeros((1, 1, 1))


def _draw(canvas: np.ndarray, obj: ObjectSpec, times: np.ndarray) -> None:
    """Blend one object into the (T, H, W, 3) float canvas, frame by frame, inside its bounding square."""
    _, height, width, _ = canvas.shape
    x, y, scale, angle = trajectory(obj, times)
    radius = SIZES[obj.size] * min(height, width) * scale  # pixels per nominal radius, per frame
    cx, cy = x * width, y * height
    half = math.ceil(radius.max() * EXTENT[obj.shape] + 1.0)
    left, top = np.floor(cx).astype(np.int64) - half, np.floor(cy).astype(np.int64) - half
    offsets = np.arange(2 * half + 1) + 0.5
    u = ((left - cx)[:, None] + offsets[None, :]) / radius[:, None]  # (T, n) along x
    v = ((cy - top)[:, None] - offsets[None, :]) / radius[:, None]  # (T, n) along y, up
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = u[:, None, :], v[:, :, None]
    # Sample the shape upright: turn the pixel grid back by the object's angle.
    distance = DISTANCES[obj.shape](u * cos + v * sin, v * cos - u * sin) * radius[:, None, None]
    coverage = np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)[..., None]
    colour = np.asarray(COLOURS[obj.colour], dtype=np.float32)
    size = 2 * half + 1
    for t in range(len(times)):
        y0, x0 = max(top[t], 0), max(left[t], 0)
        y1, x1 = min(top[t] + size, height), min(left[t] + size, width)
        if y1 <= y0 or x1 <= x0:
            continue
        alpha = coverage[t, y0 - top[t] : y1 - top[t], x0 - left[t] : x1 - left[t]]
        region = canvas[t, y0:y1, x0:x1]
        region += alpha * (colour - region)


def render(scene: Scene, frames: int = 17, height: int = 128, width: int = 128) -> np.ndarray:
    """The scene as uint8 RGB video frames, T×H×W×3."""
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(
            f"render needs at least 1 frame of 8x8 pixels, got {frames} frames of {width}x{height}."
        )
    times = frame_times(frames)
    base, second = (np.asarray(c, dtype=np.float32) for c in TONES[scene.background.tone])
    pattern = _pattern(scene.background, scene.pan, times, height, width).astype(np.float32)
    canvas = np.empty((frames, height, width, 3), dtype=np.float32)
    canvas[...] = base + pattern[..., None] * (second - base)
    for obj in scene.objects:
        _draw(canvas, obj, times)
    return (canvas + 0.5).astype(np.uint8)
