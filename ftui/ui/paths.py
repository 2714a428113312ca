"""Which server paths the app may read: a path typed into the UI must resolve inside an allowed root."""

from __future__ import annotations

from pathlib import Path

from ftui.errors import FtuiError


class PathNotAllowedError(FtuiError):
    """A path outside every folder the operator allowed, or one that does not exist."""


def is_inside(path: str | Path, root: str | Path) -> bool:
    """True when `path` (symlinks resolved) is `root` or lies below it."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def resolve_under(path: str, roots: list[Path], what: str = "path") -> Path:
    """Resolve a user-typed path against the allowed roots; refuse anything that escapes them."""
    text = (path or "").strip()
    if not text:
        raise PathNotAllowedError(f"no {what} given")
    if not roots:
        raise PathNotAllowedError(
            "reading folders on the server is switched off: start the app with --data-root DIR "
            "to allow paths under DIR, or upload the data instead"
        )
    candidate = Path(text).expanduser()
    # A relative path is read relative to the first allowed root, never to the server's working directory.
    candidates = [candidate] if candidate.is_absolute() else [root / candidate for root in roots]
    for full in candidates:
        for root in roots:
            if is_inside(full, root):
                resolved = full.resolve()
                if not resolved.exists():
                    raise PathNotAllowedError(f"{what} not found: {text}")
                return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise PathNotAllowedError(f"{what} {text!r} is outside the folders this server allows ({allowed})")
