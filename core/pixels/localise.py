"""Label-free painting localisation: find the painting in a photo and rectify it (``embed.crop``).

A visitor photo shows the painting on a wall, in its frame, or tilted inside pale padding. GrabCut
(OpenCV), started from a rectangle a few percent inside the border, separates the painting from what
surrounds it; the largest foreground region's quadrilateral (``approxPolyDP``, else its rotated
bounding box) is warped to an upright rectangle, and so are up to two more paintings hanging beside
it. Where no clear painting stands out (a studio image or a tight crop: the foreground fills the
frame, or is no quadrilateral) there is no crop, and the image stays as it is.
"""

from __future__ import annotations

import cv2
import numpy as np

# GrabCut runs on a copy of this longer side: the outline needs no more, and the cost grows with area.
WORK_SIDE = 240
# The starting rectangle leaves this share of each side as sure background.
BORDER = 0.03
# A painting covers between these shares of the photo, and fills this share of its quadrilateral.
MIN_AREA, MAX_AREA, MIN_FILL = 0.08, 0.85, 0.85
# Another painting beside it covers at least this share of the largest one's area (smaller regions are
# labels, light switches, frames' shadows).
OTHER_AREA = 0.25


def order_corners(quad: np.ndarray) -> np.ndarray:
    """The four corners as top-left, top-right, bottom-right, bottom-left (float32, shape (4, 2)).

    >>> order_corners(np.array([[9, 9], [0, 0], [9, 0], [0, 9]])).tolist()
    [[0.0, 0.0], [9.0, 0.0], [9.0, 9.0], [0.0, 9.0]]
    """
    q = np.asarray(quad, np.float32).reshape(4, 2)
    s, d = q.sum(axis=1), q[:, 1] - q[:, 0]
    return np.stack([q[np.argmin(s)], q[np.argmin(d)], q[np.argmax(s)], q[np.argmax(d)]])


def find_paintings(image: np.ndarray, max_paintings: int = 3, iterations: int = 3) -> list[np.ndarray]:
    """The corners of the paintings in ``image`` (RGB uint8), largest first, each as
    :func:`order_corners` orders them; empty where no painting stands out.

    The largest foreground region must cover ``MIN_AREA``-``MAX_AREA`` of the photo; a second or
    third painting on the same wall counts when it is at least ``OTHER_AREA`` of the largest.
    Every region must fill ``MIN_FILL`` of its quadrilateral.
    """
    h, w = image.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    small = cv2.resize(image, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    mx, my = max(1, round(sw * BORDER)), max(1, round(sh * BORDER))
    mask = np.zeros((sh, sw), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut's colour models start from k-means on OpenCV's process-wide random generator: seeded here,
    # an image's outline is its own, whatever was localised before it in the process.
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), mask, (mx, my, sw - 2 * mx, sh - 2 * my),
                    background, foreground, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # a flat image: GrabCut cannot model one of its two classes
        return []
    fg = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hulls = sorted((cv2.convexHull(c) for c in contours), key=cv2.contourArea, reverse=True)
    if not hulls or not MIN_AREA <= cv2.contourArea(hulls[0]) / (sh * sw) <= MAX_AREA:
        return []
    found = []
    for hull in hulls[:max_paintings]:
        area = cv2.contourArea(hull)
        if area < OTHER_AREA * cv2.contourArea(hulls[0]):
            break
        quad = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
        if len(quad) != 4:
            quad = cv2.boxPoints(cv2.minAreaRect(hull))
        if area / max(cv2.contourArea(quad.reshape(4, 2).astype(np.float32)), 1e-6) >= MIN_FILL:
            found.append(order_corners(quad) / np.float32(scale))
        elif not found:  # the largest region is no painting: neither are the smaller ones
            return []
    return found


def rectify(image: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """The quadrilateral ``corners`` (top-left first, clockwise) of ``image`` warped to a rectangle."""
    tl, tr, br, bl = corners
    width = round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    width, height = max(8, width), max(8, height)
    target = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    return cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def painting_crops(image: np.ndarray, max_paintings: int = 3) -> list[np.ndarray]:
    """The rectified paintings of ``image``, largest first, or ``[image]`` where none is found."""
    return [rectify(image, c) for c in find_paintings(image, max_paintings)] or [image]
