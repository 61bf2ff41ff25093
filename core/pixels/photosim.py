"""A deterministic visitor-photo simulator (OpenCV + NumPy), for evaluation data only.

It turns a clean painting into a phone photo taken in a gallery: a frame and a wall around it, a
perspective tilt, uneven and dim light with a colour cast, a glare spot, blur, sensor noise and
JPEG (``simulate_visitor_photo``: the sample museum's photos). ``simulate_query`` makes the held-out
synthetic queries of ``eval`` the way the real competition queries look (the one public inspection
of them): a painting tilted a few degrees inside pale padding, often zoomed in, in dim light or at
low resolution, and in 44% of cases turned by a multiple of 90 degrees; a third are today's wall and
frame photos. Each query says which conditions it shows, so Hit@k can be reported per condition.
It is deliberately separate from the training augmentations (``ssl.augment``, albumentations), so a
model is never scored on the exact distortions it was trained to ignore.
"""

from __future__ import annotations

import cv2
import numpy as np

FRAME_COLOURS = ((40, 30, 20), (120, 85, 40), (190, 160, 90), (20, 20, 20), (235, 235, 230))


def _framed(painting: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = painting.shape[:2]
    width = max(1, int(round(min(h, w) * rng.uniform(0.03, 0.10))))
    colour = np.array(FRAME_COLOURS[rng.integers(len(FRAME_COLOURS))], np.float32)
    colour = np.clip(colour * rng.uniform(0.8, 1.2), 0, 255)
    return cv2.copyMakeBorder(painting, width, width, width, width, cv2.BORDER_CONSTANT,
                              value=tuple(float(c) for c in colour))


def _wall(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(150, 235) * np.array([1.0, rng.uniform(0.93, 1.03), rng.uniform(0.85, 1.0)])
    ramp = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.1), h, dtype=np.float32)[:, None, None]
    return np.clip(np.ones((h, w, 3), np.float32) * base[None, None, :] * ramp, 0, 255)


def _place_with_tilt(framed: np.ndarray, rng: np.random.Generator, on_wall: bool) -> np.ndarray:
    """Warp the framed painting, tilted, into a photo canvas with a wall behind it."""
    fh, fw = framed.shape[:2]
    fill = rng.uniform(0.5, 0.8) if on_wall else rng.uniform(0.92, 1.0)
    out_w, out_h = int(round(fw / fill)), int(round(fh / fill))
    off_x, off_y = (out_w - fw) / 2 * rng.uniform(0.3, 1.7), (out_h - fh) / 2 * rng.uniform(0.3, 1.7)
    src = np.float32([[0, 0], [fw, 0], [fw, fh], [0, fh]])
    tilt = 0.12 if on_wall else 0.05
    jitter = rng.uniform(-tilt, tilt, size=(4, 2)) * np.float32([fw, fh])
    dst = (src + np.float32([off_x, off_y]) + jitter).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(framed.astype(np.float32), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((fh, fw), np.float32), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
    background = _wall(out_h, out_w, rng)
    return warped * mask[..., None] + background * (1 - mask[..., None])


def _light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    illumination = rng.uniform(0.45, 1.0) * (1 + rng.uniform(0.0, 0.35) * (ramp - ramp.mean()))
    cast = np.array([rng.uniform(0.85, 1.15), 1.0, rng.uniform(0.8, 1.15)], np.float32)
    out = img * illumination[..., None] * cast
    gamma = rng.uniform(0.8, 1.3)
    return 255.0 * np.clip(out / 255.0, 0, 1) ** gamma


def _glare(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    radius = rng.uniform(0.05, 0.2) * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
    strength = rng.uniform(0.3, 0.8)
    return img * (1 - strength * spot[..., None]) + 255.0 * strength * spot[..., None]


def _blur_noise_jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=rng.uniform(0.4, 1.5))
    else:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    img = img + rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    quality = int(rng.integers(45, 90))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def simulate_visitor_photo(painting: np.ndarray, rng: np.random.Generator, on_wall: bool | None = None
                           ) -> np.ndarray:
    """A visitor's photo of ``painting`` (RGB uint8). ``on_wall``: show the wall around the frame
    (True), crop tightly to the painting (False), or draw at random (None)."""
    if on_wall is None:
        on_wall = bool(rng.random() < 0.6)
    img = _framed(painting, rng) if on_wall else painting
    img = _place_with_tilt(img, rng, on_wall)
    img = _light(img, rng)
    if rng.random() < 0.7:
        img = _glare(img, rng)
    return _blur_noise_jpeg(img, rng)


# Quarter turns of the real queries (clockwise degrees -> share): 180 29%, 270 11%, 90 4%.
QUARTER_TURNS = {0: 0.56, 180: 0.29, 270: 0.11, 90: 0.04}
TURN_CONDITIONS = {0: "upright", 90: "rot90", 180: "rot180", 270: "rot270"}
# Every condition a query may carry (a query has one turn and any of the others).
CONDITIONS = (*TURN_CONDITIONS.values(), "wall/frame", "pale padding", "zoom", "dim", "low resolution")
PALE = (232.0, 228.0, 218.0)


def _zoom(painting: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A window of 50-95% of the painting's sides, anywhere in it (the visitor stepped closer)."""
    h, w = painting.shape[:2]
    f = rng.uniform(0.5, 0.95)
    ch, cw = max(8, int(h * f)), max(8, int(w * f))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return painting[y:y + ch, x:x + cw]


def _tilt_in_padding(painting: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The painting turned 2-10 degrees either way inside a pale frame and padding."""
    h, w = painting.shape[:2]
    pad = int(round(min(h, w) * rng.uniform(0.05, 0.2)))
    colour = tuple(float(c) for c in np.clip(np.array(PALE) * rng.uniform(0.9, 1.05), 0, 255))
    padded = cv2.copyMakeBorder(painting.astype(np.float32), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=colour)
    angle = rng.uniform(2.0, 10.0) * rng.choice([-1.0, 1.0])
    ph, pw = padded.shape[:2]
    matrix = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
    return cv2.warpAffine(padded, matrix, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=colour)


def _low_resolution(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down to a longer side of 64-128 px (a thumbnail, a far-away shot), kept at that size."""
    h, w = img.shape[:2]
    side = int(rng.integers(64, 129))
    scale = min(1.0, side / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


# The kinds of the balanced yardstick (synthetic.style=hard), one per photo in turn: a wall photo and
# each hard condition alone, so each is measured on as many photos as the others.
HARD_KINDS = ("wall/frame", "dim", "low resolution", "zoom")


def simulate_hard_query(painting: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, list[str]]:
    """A query of one ``kind`` of ``HARD_KINDS`` (RGB uint8) and its conditions, turn first: a wall photo, or
    the painting tilted in pale padding with that one hard condition at the strengths of ``simulate_query``
    (dim 0.25-0.5 of the light, low resolution 64-128 px, a window of 50-95% of the painting).

    >>> photo, conditions = simulate_hard_query(np.full((80, 60, 3), 128, np.uint8), np.random.default_rng(0), "dim")
    >>> conditions[1:]
    ['pale padding', 'dim']
    """
    if kind == "wall/frame":
        photo = simulate_visitor_photo(painting, rng, on_wall=True)
    else:
        img = _zoom(painting, rng) if kind == "zoom" else painting
        img = _tilt_in_padding(img, rng)
        if kind == "dim":
            img = img * rng.uniform(0.25, 0.5)
        img = _light(img, rng)
        if rng.random() < 0.5:
            img = _glare(img, rng)
        if kind == "low resolution":
            img = _low_resolution(img, rng)
        photo = _blur_noise_jpeg(img, rng)
    turn = int(rng.choice(list(QUARTER_TURNS), p=list(QUARTER_TURNS.values())))
    conditions = [kind] if kind == "wall/frame" else ["pale padding", kind]
    return np.ascontiguousarray(np.rot90(photo, k=-turn // 90)), [TURN_CONDITIONS[turn], *conditions]


def simulate_query(painting: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A query as the competition's look (RGB uint8) and the conditions it shows, turn first.

    >>> photo, conditions = simulate_query(np.full((80, 60, 3), 128, np.uint8), np.random.default_rng(0))
    >>> conditions[0] in TURN_CONDITIONS.values() and set(conditions) <= set(CONDITIONS)
    True
    """
    if rng.random() < 1 / 3:
        photo, conditions = simulate_visitor_photo(painting, rng, on_wall=True), ["wall/frame"]
    else:
        conditions = []
        img = painting
        if rng.random() < 0.5:
            img, conditions = _zoom(img, rng), [*conditions, "zoom"]
        img = _tilt_in_padding(img, rng)
        conditions.append("pale padding")
        if rng.random() < 0.35:
            img = img * rng.uniform(0.25, 0.5)
            conditions.append("dim")
        img = _light(img, rng)
        if rng.random() < 0.5:
            img = _glare(img, rng)
        if rng.random() < 0.35:
            img = _low_resolution(img, rng)
            conditions.append("low resolution")
        photo = _blur_noise_jpeg(img, rng)
    turn = int(rng.choice(list(QUARTER_TURNS), p=list(QUARTER_TURNS.values())))
    # np.rot90 turns counter-clockwise: k = -turn / 90 turns clockwise.
    return np.ascontiguousarray(np.rot90(photo, k=-turn // 90)), [TURN_CONDITIONS[turn], *conditions]

