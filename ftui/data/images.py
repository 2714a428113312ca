"""Decoding image files: the only place in ftui that opens them.

Every file is decoded in full (never `LOAD_TRUNCATED_IMAGES`), turned upright (EXIF orientation) and into
8-bit RGB whatever its mode. A file that cannot be used raises `ImageError` carrying a short reason that
the dataset summary shows next to the skipped file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ftui.errors import FtuiError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

# Larger images are refused before their pixels are decoded (a 40 MP photo is already unusually big;
# a few KB of PNG can claim gigapixels).
MAX_PIXELS = 40_000_000

# Names that operating systems and archivers leave behind: ignored silently, never reported as skipped.
# `_removed` is where `ftui fix remove` puts files (ftui.data.fixes): out of the dataset, one undo away.
REMOVED_DIR = "_removed"
IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "__macosx", REMOVED_DIR})

# PIL only warns between its own limit and twice that. Make the warning an exception so such files are
# refused like any other bomb; a process-wide filter, because `warnings.catch_warnings` is not thread-safe
# and files are judged in a thread pool.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

# Leading bytes of formats we decode; a file starting with one of these is a damaged image, not a non-image.
_MAGIC = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*", b"P1", b"P2", b"P3",
          b"P4", b"P5", b"P6")


class ImageError(FtuiError):
    """An image file that cannot be used; `reason` is the short explanation shown to the user."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_ignored(name: str) -> bool:
    """True for a hidden file or folder name and OS/archiver leftovers (.DS_Store, __MACOSX, Thumbs.db)."""
    return (name.startswith(".") and name not in (".", "..")) or name.lower() in IGNORED_NAMES


def has_image_extension(path: str | Path) -> bool:
    """True when the file name ends in an extension ftui decodes."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def open_rgb(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Decode a file fully into an upright 8-bit RGB image, or raise ImageError with the reason.

    `draft_size` lets JPEGs decode at a reduced scale whose shorter side stays >= draft_size (every byte
    of the file is still entropy-decoded, so damage is still detected).
    """
    path = Path(path)
    if not has_image_extension(path):
        suffix = path.suffix.lower() or "no extension"
        raise ImageError(path, f"not an image file ({suffix})")
    try:
        if path.stat().st_size == 0:
            raise ImageError(path, "zero-byte file")
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise ImageError(path, f"decompression bomb ({width}x{height} px)")
            if draft_size and im.format == "JPEG":
                im.draft(None, (draft_size, draft_size))
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"decompression bomb ({_pixels_in(str(exc))})") from None
    except UnidentifiedImageError:
        raise ImageError(path, _unidentified_reason(path)) from None
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except PermissionError:
        raise ImageError(path, "unreadable file (permission denied)") from None
    except IsADirectoryError:
        raise ImageError(path, "a folder, not a file") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError):
        # PIL signals damaged data with any of these, depending on the format and where it breaks.
        raise ImageError(path, "corrupt or truncated image") from None


def check_image(path: str | Path, draft_size: int = 64) -> str | None:
    """The reason a file is unusable, or None when it decodes cleanly."""
    try:
        open_rgb(path, draft_size=draft_size)
    except ImageError as exc:
        return exc.reason
    return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: transparency over white, 16-bit and float scaled, not clipped."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im), im.mode)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _scale_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Map high-bit-depth grey values onto 0..255 by their nominal range."""
    values = array.astype(np.float64)
    if mode.startswith("I;16"):
        top = 65535.0
    else:
        # "I" and "F" carry no bit depth: use the smallest common range that holds the data.
        peak = float(values.max()) if values.size else 0.0
        low = float(values.min()) if values.size else 0.0
        if low < 0:
            values = values - low
            peak -= low
        top = next((t for t in (1.0, 255.0, 65535.0) if peak <= t), peak or 1.0)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _pixels_in(message: str) -> str:
    """'Image size (144000000 pixels) exceeds ...' -> '144 MP' for the skip reason."""
    for token in message.replace("(", " ").split():
        if token.isdigit():
            return f"{int(token) / 1e6:.0f} MP"
    return "too many pixels"


def _unidentified_reason(path: Path) -> str:
    """Tell a damaged image apart from a file that was never an image (text, PDF, ...)."""
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith(_MAGIC):
        return "corrupt or truncated image"
    if b"\x00" not in head and _is_utf8(head):
        return "not an image (text)"
    return "not an image (unknown format)"


def _is_utf8(head: bytes) -> bool:
    """True when `head` is UTF-8 text, allowing a multi-byte character cut off at the end."""
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False
