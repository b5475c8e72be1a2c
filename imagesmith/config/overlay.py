"""Which files of an overlay directory go into the image: all but editor backups and
version-control data (by default), in a stable order.

The same walk feeds the customize stage (what is copied) and the plan (what the key
hashes), so a changed ``.swp`` file neither reaches the image nor forces a rebuild.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

#: skipped unless a file entry says otherwise (``ignore: []`` copies everything)
DEFAULT_IGNORE = ("*~", "*.swp", "*.orig", "*.rej", ".git/", ".svn/")


def ignored(name: str, is_dir: bool, patterns: tuple[str, ...] | list[str]) -> bool:
    """``name`` matches a pattern; a pattern ending in / matches directories only."""
    for pattern in patterns:
        if pattern.endswith("/"):
            if is_dir and fnmatch.fnmatchcase(name, pattern[:-1]):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


@dataclass
class Walk:
    files: list[Path] = field(default_factory=list)  # directories first, then their files, sorted
    skipped: list[str] = field(default_factory=list)  # relative paths, a directory with a trailing /


def walk(source: Path, patterns: tuple[str, ...] | list[str]) -> Walk:
    """Every path under ``source`` (itself excluded) to copy, and what was skipped."""
    found = Walk()
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if ignored(name, True, patterns):
                found.skipped.append(f"{(here / name).relative_to(source)}/")
                dirnames.remove(name)
        dirnames.sort()
        for name in dirnames:
            found.files.append(here / name)
        for name in sorted(filenames):
            path = here / name
            if ignored(name, path.is_dir(), patterns):
                found.skipped.append(str(path.relative_to(source)))
            else:
                found.files.append(path)
    return found
