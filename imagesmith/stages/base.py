"""What a stage is: one object that names its inputs, runs, and saves and restores its result.

``build/stages.py`` runs the list of stages in ``stages/pipeline.py`` (restoring the last one the
cache holds, running the rest) and ``stages/plan.py`` keys the same list, so a new stage is
one module with one ``Stage`` and one line in that list.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagesmith.cache import hashing
from imagesmith.cache.store import Entry
from imagesmith.config import overlay
from imagesmith.config.load import Spec
from imagesmith.repro.lock import Lock
from imagesmith.stages.context import Context


def digest(value: Any) -> str:
    """The sha256 of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def tree_digest(path: Path, ignore: tuple[str, ...] | list[str] = ()) -> str:
    """Content, type, mode and symlink target of a file or every file under a directory
    (but those ``ignore`` leaves out, as the overlay copy does)."""
    return hashing.tree(path, overlay.walk(path, ignore).files if path.is_dir() else None)


def source_digest(part: object) -> str:
    """The sha256 of the module that defines ``part``'s class (an output, a filesystem):
    a change to its code changes the key of the stage that uses it."""
    module = sys.modules[type(part).__module__]
    return hashlib.sha256(Path(str(module.__file__)).read_bytes()).hexdigest()


@dataclass(frozen=True)
class KeyInputs:
    """What every stage's inputs are read from: the spec, its config with secrets masked
    and host paths made portable (``spec.keyed``), the lock when the build uses one, and
    the epoch when it is known before the build (given, or the lock's)."""

    spec: Spec
    config: dict[str, Any]
    lock: Lock | None
    epoch: int | None


class Stage:
    """One step of the pipeline. Subclasses set the class attributes and override ``run``,
    ``save`` and, when a later build may start after it, ``restore``."""

    #: how the build log, the cache and ``--rebuild-from`` name it
    name: str = ""
    #: imagesmith's own modules (relative to the package) that it runs: their text is in its key
    code: tuple[str, ...] = ()
    #: earlier stages whose cache entries its ``restore`` reads too
    restore_with: tuple[str, ...] = ()
    #: a build may start after this stage with its cache entry (False: its entry only
    #: serves a later stage's restore)
    resumable: bool = True
    #: its entry is hashed and renamed into place while the next stage runs (what it saves
    #: is big, and the next stage only reads it); ``committed`` is called once it is
    commit_in_background: bool = False
    #: later builds read only some of the top-level names of its entries (``reads``): the
    #: digest of each is recorded, so that only those are checked; else (what it saves is
    #: read whole) each file is hashed once, for the whole entry's digest only
    parts_read: bool = False

    def inputs(self, given: KeyInputs) -> dict[str, str]:
        """What this stage reads besides the code, tools and the stage before: name → digest."""
        raise NotImplementedError

    def check(self, ctx: Context) -> None:
        """Checks before the stage runs (not when it comes from the cache)."""

    def prepare(self, ctx: Context) -> None:
        """Called as the stage before this one starts to run: start slow work in the
        background that needs nothing that stage makes (a thread: best where that stage
        mostly waits for the programs it runs)."""

    def title(self, ctx: Context) -> str:
        """The line the build log shows when the stage runs."""
        return ""

    def run(self, ctx: Context) -> None:
        raise NotImplementedError

    def save(self, ctx: Context, entry: Path) -> dict[str, str]:
        """Write what a later build restores into the new cache entry ``entry``; return
        facts to record with it."""
        raise NotImplementedError

    def committed(self, ctx: Context, entry: Entry) -> None:
        """Called once ``save``'s entry is in the cache (under this stage's lock): the
        build may go on with the entry itself (an install's rootfs moved into it is used
        in place, see installs.py)."""

    def reads(self, ctx: Context, stage: str) -> frozenset[str] | None:
        """The top-level names of ``stage``'s entry (this one's, or one of ``restore_with``)
        that ``restore`` reads: only those are checked against their digests. None: all."""
        return None

    def restore(self, ctx: Context, entries: dict[str, Entry]) -> bool:
        """Put the cached result into ``ctx`` from ``entries`` (this stage's and those of
        ``restore_with``, by stage name). False: the entry does not give what it recorded;
        the stage runs instead."""
        raise NotImplementedError
