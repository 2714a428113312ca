"""ftui.data.images: every kind of bad file gets its reason, every mode becomes upright 8-bit RGB."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_class_image
from PIL import Image

from ftui.data import images
from ftui.data.images import ImageError, check_image, is_ignored, open_rgb


def _jpeg_bytes(size=(48, 40)) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb without the memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def test_rgb_jpeg_decodes_to_rgb_of_its_size(tmp_path):
    path = write_class_image(tmp_path / "a.jpg", (200, 40, 40), seed=1, size=40)
    im = open_rgb(path)
    assert im.mode == "RGB" and im.size == (40, 40)
    assert check_image(path) is None


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "zero-byte file"),
        ("notes.jpg", b"this is a shopping list, not a photo\n", "not an image (text)"),
        ("notes.txt", b"hello", "not an image file (.txt)"),
        ("README", b"hello", "not an image file (no extension)"),
        ("garbage.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "corrupt or truncated image"),
        ("binary.png", bytes([0, 1, 2, 250, 251]) * 50, "not an image (unknown format)"),
    ],
)
def test_unusable_file_is_reported_with_its_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    assert check_image(path) == reason
    with pytest.raises(ImageError, match="^.*" + reason.replace("(", r"\(").replace(")", r"\)")) as info:
        open_rgb(path)
    assert info.value.reason == reason


def test_truncated_jpeg_is_refused_even_with_draft_decoding(tmp_path):
    data = _jpeg_bytes((200, 160))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert check_image(path, draft_size=16) == "corrupt or truncated image"
    assert check_image(path, draft_size=0) == "corrupt or truncated image"


def test_truncated_png_is_refused(tmp_path):
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    assert check_image(path) == "corrupt or truncated image"


# pytest records warnings per test, which overrides the module's process-wide "error" filter; the marker
# restores what a real run does.
@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_png_header_claiming_gigapixels_is_a_decompression_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming_size(12000, 12000))  # over PIL's warning limit
    assert check_image(path) == "decompression bomb (144 MP)"
    path.write_bytes(_png_claiming_size(30000, 30000))  # over PIL's hard limit
    assert check_image(path) == "decompression bomb (900 MP)"
    path.write_bytes(_png_claiming_size(8000, 6000))  # under PIL's limits, over ours
    assert check_image(path) == "decompression bomb (8000x6000 px)"


def test_image_over_the_pixel_cap_is_refused_with_its_size(tmp_path, monkeypatch):
    path = write_class_image(tmp_path / "big.png", (10, 20, 30), seed=2, size=50)
    monkeypatch.setattr(images, "MAX_PIXELS", 2000)
    assert check_image(path) == "decompression bomb (50x50 px)"


def test_exif_orientation_6_swaps_width_and_height(tmp_path):
    im = Image.new("RGB", (60, 30), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 30))  # blue strip on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif.tobytes())
    upright = open_rgb(path)
    assert upright.size == (30, 60)
    # Rotating clockwise moves the left edge to the top.
    r, _g, b = upright.getpixel((15, 2))
    assert b > 200 and r < 60


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (20, 10), 77).save(path)
    im = open_rgb(path)
    assert im.mode == "RGB" and im.getpixel((3, 3)) == (77, 77, 77)


def test_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "alpha.png"
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.save(path)
    im = open_rgb(path)
    assert im.getpixel((5, 5)) == (255, 255, 255)
    assert im.getpixel((0, 0)) == (255, 0, 0)


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (8, 8), (0, 0)).save(path)
    assert open_rgb(path).getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "pal.png"
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 200, 0] + [10, 10, 10] * 255)
    pal.putpixel((1, 1), 1)
    pal.save(path, transparency=0)
    im = open_rgb(path)
    assert im.getpixel((5, 5)) == (255, 255, 255)
    assert im.getpixel((1, 1)) == (10, 10, 10)


def test_palette_without_transparency_keeps_its_colours(tmp_path):
    path = tmp_path / "pal.gif"
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 200, 0] + [0, 0, 0] * 255)
    pal.save(path)
    assert open_rgb(path).getpixel((2, 2)) == (0, 200, 0)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # pure magenta+yellow ink = red
    r, g, b = open_rgb(path).getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    im = open_rgb(path)
    assert [im.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 4]


def test_float_image_in_unit_range_is_scaled_to_8_bit(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(path)
    im = open_rgb(path)
    assert [im.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_jpeg_draft_keeps_shorter_side_at_least_the_requested_size(tmp_path):
    path = tmp_path / "large.jpg"
    path.write_bytes(_jpeg_bytes((640, 480)))
    im = open_rgb(path, draft_size=100)
    assert 100 <= min(im.size) < 480
    assert open_rgb(path).size == (640, 480)


def test_missing_file_is_reported(tmp_path):
    assert check_image(tmp_path / "nowhere.jpg") == "file not found"


@pytest.mark.parametrize("name", [".DS_Store", "__MACOSX", "Thumbs.db", ".hidden.jpg", "desktop.ini"])
def test_os_leftovers_are_ignored(name):
    assert is_ignored(name)


def test_ordinary_names_are_not_ignored():
    assert not is_ignored("cat_01.jpg") and not is_ignored("bees")
    assert not is_ignored("..") and not is_ignored(".")  # path steps, judged by the zip checks instead


def test_real_photos_decode(shared_data: Path):
    photos = sorted((shared_data / "train" / "bees").glob("*.jpg"))[:3]
    for photo in photos:
        assert open_rgb(photo).mode == "RGB"
    # The tutorial's placeholder GIF is a real (if useless) image: it decodes.
    assert open_rgb(shared_data / "train" / "ants" / "imageNotFound.gif").size == (300, 300)
