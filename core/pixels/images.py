"""Image collections: listing folders, decoding any common image robustly, an optional resized cache.

Every decoded image is an RGB ``uint8`` array of shape (H, W, 3), upright (EXIF orientation applied).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from core.base.atomic import atomic_write_bytes
from core.base.errors import ImageDecodeError, MissingInputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# PIL's default bomb guard (89 Mpx) rejects real scans of paintings; above this we stop with advice.
MAX_PIXELS = 250_000_000
# PIL's own guard would stop at twice its 89 Mpx default, before the check below can say why.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Above this many pixels a non-JPEG image is decoded through libvips at the size the caller needs
# (a full decode holds several copies of ~3 bytes a pixel). Below it PIL decodes whole: at most
# ~50 MB of pixels, which is also the bound on one decode with ``min_side`` set.
STREAM_PIXELS = 16_000_000


def _fix_advice(path: Path) -> str:
    return (f"cannot read image {path}: {{}}. Fix: re-export or remove the file, "
            "or set data.skip_corrupt=true to skip it (skipped files are listed in the run log)")


# What the first bytes of a file say it is, for files whose name lacks an image extension.
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(path: Path) -> bool:
    """Whether the first bytes of the regular file ``path`` say it is an image (PNG, JPEG, BMP, TIFF, WebP)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def file_key(path: Path) -> tuple[int, int] | Path:
    """The identity of the file behind ``path``: the same for a file and its hard or symbolic links."""
    try:
        st = path.stat()
    except OSError:  # a broken link: kept, so decoding names it
        return path
    return st.st_dev, st.st_ino


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _warn(what: str, paths: list[Path], root: Path) -> None:
    if paths:
        shown = ", ".join(p.relative_to(root).as_posix() for p in sorted(paths)[:5])
        log.warning("left out %d %s under %s: %s%s", len(paths), what, root, shown, ", ..." if len(paths) > 5 else "")


def list_images(root: str | Path, skip_folder: Callable[[Path], bool] | None = None) -> list[Path]:
    """All images under ``root`` (nested folders included), one per name, sorted by relative path.

    Hidden files and folders are ignored. Links are followed where they stay inside ``root``: each real
    folder is walked once (a link back up, such as ``loop -> ..``, adds nothing), and a file reached
    under two names (a hard or symbolic link beside it) is listed under both (``unique_files`` tells
    them apart). A link that leads outside ``root`` is left out, as is anything that is not a regular
    file (a FIFO, a socket, a device: reading one could block forever), every folder ``skip_folder``
    says to skip (e.g. run folders of earlier runs) and every file that is not an image (by its
    extension or, without one, by its first bytes); each kind is named in a warning. Raises
    MissingInputError when there are no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"image folder not found: {root}. Fix: pass an existing folder")
    real_root = root.resolve()
    found: list[Path] = []
    left_out: dict[str, list[Path]] = {"file(s) that are not images": [], "link(s) that lead outside the folder": [],
                                       "entries that are not regular files": [], "folder(s) of earlier runs": []}
    folders_seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in folders_seen:
            dirnames[:] = []
            continue
        folders_seen.add((st.st_dev, st.st_ino))
        kept = []
        for d in sorted(dirnames):
            folder = Path(dirpath) / d
            if d.startswith("."):
                continue
            if not _inside(folder.resolve(), real_root):
                left_out["link(s) that lead outside the folder"].append(folder)
            elif skip_folder is not None and skip_folder(folder):
                left_out["folder(s) of earlier runs"].append(folder)
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            if path.is_symlink() and not _inside(path.resolve(), real_root):
                left_out["link(s) that lead outside the folder"].append(path)
                continue
            try:
                regular = stat.S_ISREG(path.stat().st_mode)
            except OSError:  # a broken link: kept, so decoding names it
                regular = True
            if not regular:
                left_out["entries that are not regular files"].append(path)
            elif name.lower().endswith(IMAGE_EXTENSIONS) or looks_like_image(path):
                found.append(path)
            else:
                left_out["file(s) that are not images"].append(path)
    for what, paths in left_out.items():
        _warn(what, paths, root)
    if not found:
        raise MissingInputError(
            f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} files, and files whose content is "
            "an image, in it and its subfolders). Fix: point to the folder that holds the images")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def unique_files(paths: Sequence[Path]) -> list[int]:
    """For each of ``paths``, the index of the first path to the same file (itself where it is the first).

    >>> unique_files([Path("/nonexistent/a"), Path("/nonexistent/b")])
    [0, 1]
    """
    first: dict[tuple[int, int] | Path, int] = {}
    return [first.setdefault(file_key(p), i) for i, p in enumerate(paths)]


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: scale the actual range into 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float32)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if mode in ("RGBA", "LA", "PA") or img.mode in ("RGBA", "LA"):
        # Transparent areas become white, as a viewer would show them on a page.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"))


def _decode_streamed(path: Path, side: int) -> np.ndarray:
    """Decode a large image through libvips, shrinking while it reads, so that its longer side is
    ``side``: memory follows the output, not the file (a 15,000 px PNG needs ~0.15 GB, not ~4 GB)."""
    import pyvips  # loads libvips: only for the rare image large enough to need it

    try:
        # Sequential access streams the file through the shrink; fail_on: a truncated file is an error,
        # not an image with a grey bottom.
        image = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error")
        image = image.thumbnail_image(side, height=side, size="down").autorot()  # EXIF orientation
        image = image.colourspace("srgb")  # CMYK, greyscale and 16-bit become 8-bit sRGB
        if image.hasalpha():
            image = image.flatten(background=[255, 255, 255])  # transparent areas white, as on a page
        return image.cast("uchar").numpy()
    except pyvips.Error as e:
        raise OSError(" ".join(str(e).split())) from None


def decode_image(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Decode ``path`` to an upright RGB uint8 array.

    ``min_side``: the smallest side the caller needs; large images are then decoded at a reduced
    scale (never below it): JPEGs by PIL's draft mode (several times faster), anything above
    ``STREAM_PIXELS`` by libvips while it reads, which bounds the memory of one decode by the size
    asked for instead of the file's.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageDecodeError(
                    f"image {path} is {w}x{h} pixels, above the {MAX_PIXELS:,} pixel limit. "
                    "Fix: downscale it (e.g. to at most 8000 px a side) or remove it")
            scale = min_side / min(w, h) if min_side else 1.0
            if scale < 1 and img.format != "JPEG" and w * h > STREAM_PIXELS:
                arr = _decode_streamed(path, math.ceil(max(w, h) * scale))
            else:
                if scale < 1 and img.format == "JPEG":
                    img.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
                arr = _to_rgb(ImageOps.exif_transpose(img))
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(_fix_advice(path).format(e)) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageDecodeError(_fix_advice(path).format(f"unexpected decoded shape {arr.shape}"))
    return np.ascontiguousarray(arr)


def shrink_to(arr: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longer side is at most ``max_side`` (area interpolation); never upscales."""
    h, w = arr.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return arr
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class ImageCache:
    """Resized copies of decoded images, keyed by the source file's path, size and mtime.

    Repeated epochs then decode a small lossless PNG instead of a full-size original. Entries are
    written atomically, so parallel workers and interrupted runs never leave a half-written file.
    """

    folder: Path
    max_side: int = 512

    def _entry(self, path: Path) -> Path:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.max_side}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.png"

    def load(self, path: str | Path) -> np.ndarray:
        path = Path(path)
        entry = self._entry(path)
        if entry.exists():
            cached = cv2.imread(str(entry), cv2.IMREAD_COLOR)
            if cached is not None:
                return cv2.cvtColor(cached, cv2.COLOR_BGR2RGB)
            log.warning("unreadable cache entry %s for %s: decoding the original again", entry, path)
        arr = shrink_to(decode_image(path, min_side=self.max_side), self.max_side)
        # Compression level 1: the cache exists for speed, not for disk space.
        ok, buf = cv2.imencode(".png", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise OSError(f"cannot encode cache entry for {path}")
        atomic_write_bytes(entry, buf.tobytes())
        return arr


class ImageReader:
    """Reads images through the cache when one is configured, else straight from disk."""

    def __init__(self, cache: ImageCache | None = None, min_side: int | None = None):
        self.cache = cache
        self.min_side = min_side

    def __call__(self, path: str | Path) -> np.ndarray:
        if self.cache is not None:
            return self.cache.load(path)
        return decode_image(path, min_side=self.min_side)


def make_reader(data_cfg, min_side: int | None) -> ImageReader:
    """The reader a recipe's ``data`` section asks for (with or without the resized cache)."""
    cache = ImageCache(Path(data_cfg.cache_dir), int(data_cfg.cache_max_side)) if data_cfg.cache_dir else None
    if cache and min_side and cache.max_side < min_side:
        log.warning("data.cache_max_side=%d is below the %d px the model needs: cached images will be "
                    "enlarged. Fix: raise data.cache_max_side", cache.max_side, min_side)
    return ImageReader(cache=cache, min_side=min_side)
