"""A file's identity and whole-file JSON writes: the standard library only, so that the
quick no-op (``quick.py``) can use them before anything else of imagesmith is loaded."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

#: what identifies one version of a file (st_ctime_ns changes with any change to it)
IDENTITY = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
#: as loaded: what a recorder puts in os.stat's place (``quick.Recorder``) does not see these
STAT, LSTAT = os.stat, os.lstat


def identity(path: Path | str) -> list[int] | None:
    """The identity of what ``path`` names now (links followed); None if nothing."""
    try:
        info = STAT(path)
    except OSError:
        return None
    return identity_of(info)


def identity_of(info: os.stat_result) -> list[int]:
    return [int(getattr(info, field)) for field in IDENTITY]


def write_json(path: Path, data: dict[str, Any], scratch: Path | None = None) -> None:
    """``path`` replaced whole by ``data``, written first in ``scratch`` (the same
    filesystem; default: beside it; a killed build's is removed as its other leftovers)."""
    prefix = f"{os.getpid()}-json-" if scratch else ".tmp-"
    fd, tmp = tempfile.mkstemp(dir=scratch or path.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mark_used(meta: dict[str, Any], config: str, now: float) -> None:
    """A cache entry's metadata after a use by ``config``: when, and the last ten configs."""
    meta["last_used"] = now
    meta["configs"] = [config, *(c for c in meta.get("configs", []) if c != config)][:10]


def published_name(output: Path) -> str:
    """The name, in the cache's ``published/``, of what the last build into ``output`` published."""
    return f"{hashlib.sha256(str(output).encode()).hexdigest()[:32]}.json"
