"""Decoding the images users actually have, and clear errors for the ones that cannot be read."""

import logging

import cv2
import numpy as np
import pytest
from PIL import Image

import core.pixels.images as images
from core.base.errors import ImageDecodeError, MissingInputError
from core.pixels.images import ImageCache, ImageReader, decode_image, list_images, unique_files


def _gradient(w=40, h=30):
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    return np.ascontiguousarray(np.broadcast_to(x, (h, w, 3)))


def test_listing_is_nested_sorted_and_filtered(tmp_path):
    for rel in ["b.png", "a/c.JPG", "a/d.webp", "z/e.tiff", "f.bmp", "notes.txt", ".hidden.png", ".git/x.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("x")
        else:
            Image.fromarray(_gradient()).save(tmp_path / rel)
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a/c.JPG", "a/d.webp", "b.png", "f.bmp", "z/e.tiff"]


def test_links_inside_are_followed_once_and_links_out_of_the_folder_left_out(tmp_path, caplog):
    root, outside = tmp_path / "imgs", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for path in (root / "a.png", root / "sub" / "b.png", outside / "c.png"):
        Image.fromarray(_gradient()).save(path)
    (root / "sub" / "loop").symlink_to("..", target_is_directory=True)  # a link back up: nothing new
    (root / "self").symlink_to(".", target_is_directory=True)
    (root / "linked").symlink_to(outside, target_is_directory=True)  # a folder elsewhere: left out
    (root / "alias.png").symlink_to(root / "a.png")  # the same file under a second name: listed under both
    with caplog.at_level(logging.WARNING, logger="core.pixels.images"):
        paths = list_images(root)
    assert [p.relative_to(root).as_posix() for p in paths] == ["a.png", "alias.png", "sub/b.png"]
    assert unique_files(paths) == [0, 0, 2]
    assert "left out 1 link(s) that lead outside the folder" in caplog.text and "linked" in caplog.text


def test_images_without_extension_are_read_by_content_and_the_rest_named(tmp_path, caplog):
    Image.fromarray(_gradient()).save(tmp_path / "photo", format="PNG")
    Image.fromarray(_gradient()).save(tmp_path / "scan.dat", format="JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="core.pixels.images"):
        names = [p.name for p in list_images(tmp_path)]
    assert names == ["photo", "scan.dat"]
    assert "left out 2 file(s)" in caplog.text and "empty, notes.txt" in caplog.text
    assert decode_image(tmp_path / "photo").shape == (30, 40, 3)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "I;16", "CMYK"])
def test_large_images_decode_streamed_at_the_size_asked(tmp_path, monkeypatch, mode):
    smooth = np.asarray(Image.fromarray(_gradient(400, 300)).resize((400, 300), Image.BILINEAR))
    img = Image.fromarray(smooth)
    if mode == "I;16":
        img = Image.fromarray(smooth[..., 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        img = img.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    whole = decode_image(path)
    monkeypatch.setattr(images, "STREAM_PIXELS", 1000)  # this image now counts as large
    streamed = decode_image(path, min_side=60)
    assert streamed.dtype == np.uint8 and streamed.shape == (60, 80, 3)
    if mode != "CMYK":  # libvips converts CMYK through a colour profile, PIL by formula
        reference = cv2.resize(whole, (80, 60), interpolation=cv2.INTER_AREA)
        assert np.abs(streamed.astype(int) - reference).mean() < 2.0
    with pytest.raises(ImageDecodeError, match="broken.png"):
        data = path.read_bytes()
        (tmp_path / "broken.png").write_bytes(data[: len(data) // 2])
        decode_image(tmp_path / "broken.png", min_side=60)


def test_empty_or_missing_folder_names_it(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MissingInputError, match=str(tmp_path)):
        list_images(tmp_path)
    with pytest.raises(MissingInputError, match="not found"):
        list_images(tmp_path / "nope")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.fromarray(_gradient()).convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    arr = decode_image(path)
    assert arr.dtype == np.uint8 and arr.shape == (30, 40, 3)
    # Dark left, bright right survives every conversion (1-bit only keeps the two halves).
    assert arr[:, :5].mean() < 80 and arr[:, -5:].mean() > 170


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert decode_image(tmp_path / "t.png").min() == 255


def test_sixteen_bit_uses_the_full_range(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None, :].repeat(8, 0)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    arr = decode_image(tmp_path / "deep.png")
    assert arr[0, 0, 0] == 0 and arr[0, -1, 0] == 255 and 100 < arr[0, 32, 0] < 160


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(_gradient(40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    arr = decode_image(tmp_path / "rot.jpg")
    assert arr.shape == (40, 30, 3)
    # The dark-to-bright left-to-right ramp now runs top to bottom.
    assert arr[:5].mean() < 80 and arr[-5:].mean() > 170


def test_tiny_and_large_jpeg_draft(tmp_path):
    Image.fromarray(np.full((1, 1, 3), 7, np.uint8)).save(tmp_path / "tiny.png")
    assert decode_image(tmp_path / "tiny.png").shape == (1, 1, 3)
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, 2000:] = 200
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=80)
    full = decode_image(tmp_path / "big.jpg")
    reduced = decode_image(tmp_path / "big.jpg", min_side=300)
    assert full.shape == (3000, 4000, 3)
    # Reduced JPEG decoding: never below the requested side, far below the original.
    assert 300 <= min(reduced.shape[:2]) < 1000
    assert abs(reduced[:, :10].mean() - 0) < 5 and abs(reduced[:, -10:].mean() - 200) < 5


def test_too_many_pixels_is_a_clear_error(tmp_path, monkeypatch):
    Image.fromarray(_gradient(100, 100)).save(tmp_path / "huge.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 5000)
    with pytest.raises(ImageDecodeError, match=r"huge.png is 100x100 pixels.*Fix: downscale"):
        decode_image(tmp_path / "huge.png")


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_file_names_file_and_fix(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as err:
        decode_image(path)
    assert str(path) in str(err.value) and "data.skip_corrupt=true" in str(err.value)


def test_truncated_jpeg_is_an_error(tmp_path):
    Image.fromarray(_gradient(200, 200)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="t.jpg"):
        decode_image(tmp_path / "t.jpg")


def test_cache_serves_a_resized_copy_and_follows_changes(tmp_path):
    src = tmp_path / "src.png"
    Image.fromarray(_gradient(400, 300)).save(src)
    cache = ImageCache(tmp_path / "cache", max_side=100)
    reader = ImageReader(cache=cache)
    first = reader(src)
    assert first.shape == (75, 100, 3)
    entries = list((tmp_path / "cache").rglob("*.png"))
    assert len(entries) == 1 and not list((tmp_path / "cache").rglob("*.tmp"))
    np.testing.assert_array_equal(reader(src), first)  # served from the entry
    Image.fromarray(255 - _gradient(400, 300)).save(src)  # the file changes: a new entry
    assert reader(src)[:, :5].mean() > 170
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 2
