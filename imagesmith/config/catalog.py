"""Find devices, layouts and layers: the user's directories first, then the built-in catalog."""

from __future__ import annotations

import difflib
from pathlib import Path

CATALOG = Path(__file__).resolve().parent.parent / "catalog"
DEFAULT_CONFIG = CATALOG / "examples" / "minimal.yaml"


def builtin_dir(kind: str) -> Path:
    return CATALOG / kind


def _declares(path: Path, key: str) -> bool:
    """Whether a YAML file names itself as ``key:`` (a layer, device or layout file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return any(line.startswith(f"{key}:") for line in handle)
    except OSError:
        return False


def names(kind: str, search: list[Path] | None = None) -> list[str]:
    found: set[str] = set()
    for directory in [*(search or []), builtin_dir(kind)]:
        if directory.is_dir():
            found.update(p.stem for p in directory.glob("*.yaml") if _declares(p, kind.rstrip("s")))
    return sorted(found)


def find(kind: str, name: str, search: list[Path] | None = None) -> Path | None:
    """The file for ``name`` of ``kind`` (devices, layouts, layers), or None."""
    for directory in [*(search or []), builtin_dir(kind)]:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def suggestion(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    listing = ", ".join(choices)
    if close:
        return f"did you mean {close[0]!r}? known: {listing}"
    return f"known: {listing}"
