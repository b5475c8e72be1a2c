"""The content-addressed stage cache: lookup, atomic commit, locking, list, prune, clear.

An entry is a directory ``entries/<stage>-<key>/`` holding a stage's outputs and a
``meta.json``. It is made in ``tmp/`` and renamed into place only once complete (a
rename is atomic), so a build that is killed leaves at most a ``tmp/`` directory that no
build will ever read (and the next build removes). One lock per key: two builds that
need the same entry make it once; the second waits, then reuses it.

Downloaded .deb files live in ``debs/`` and are shared by every bootstrap.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from imagesmith import background
from imagesmith.cache import hashing
from imagesmith.errors import ImagesmithError
from imagesmith.filestate import mark_used, published_name, write_json
from imagesmith.host.rootfs import remove_tree

META = "meta.json"
#: the metadata key of the digest of what an entry holds (names, modes, links, contents)
CONTENT = "content_sha256"
#: the metadata key of the digests of each top-level name in an entry (``hashing.tree``
#: of each): a build that reads some of an entry checks only those
PARTS = "part_sha256"


def default_dir() -> Path:
    """$XDG_CACHE_HOME/imagesmith, else ~/.cache/imagesmith (a relative $XDG_CACHE_HOME is
    ignored, as the XDG base directory specification says)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or "")
    return (base if base.is_absolute() else Path.home() / ".cache") / "imagesmith"


class ContentMismatch(Exception):
    """What a new entry holds is not what it was expected to hold (nothing was kept)."""


class DamagedEntry(ImagesmithError):
    """An entry a build took from the cache was found damaged after the build started with
    it (its check runs while the build goes on): nothing made from it was kept, and the
    build starts again once it is discarded (``build.pipeline``)."""

    def __init__(self, entry: Entry, why: str) -> None:
        super().__init__(
            f"the cache entry {entry.stage} {entry.key[:12]} is damaged ({why})",
            hint="build again: a build discards a damaged entry and makes it again",
        )
        self.entry, self.why = entry, why


@dataclass
class Entry:
    stage: str
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def size(self) -> int:
        total = 0
        for dirpath, dirnames, filenames in os.walk(self.path):
            for name in [*dirnames, *filenames]:
                with suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        return total

    @property
    def last_used(self) -> float:
        return float(self.meta.get("last_used", self.meta.get("created", 0)))


class Cache:
    def __init__(self, root: Path, debs: Path | None = None, salt: bytes | None = None) -> None:
        """A cache in ``root``; ``debs``: take .deb files from another cache's store;
        ``salt``: the salt of the keys (a team's, shared; default: this cache's own)."""
        self.root = root
        self._salt = salt
        #: the shared cache behind this one (``share.Shared``), set by the command line
        self.remote: Any = None
        self._debs = debs or root / "debs"
        try:
            for sub in ("entries", "tmp", "locks", "debs", "builds", "published", "memo"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            self._debs.mkdir(parents=True, exist_ok=True)  # another cache's, maybe not made yet
        except OSError as exc:
            raise ImagesmithError(
                f"cannot use the cache directory {root}: {exc.strerror}",
                hint="give a writable directory with --cache-dir, or build with --no-cache",
            ) from None
        self._remove_stale_tmp()

    # -- salt: secrets enter keys only as HMACs with this cache's own random salt
    @property
    def salt(self) -> bytes:
        return self._salt if self._salt is not None else self.own_salt()

    def own_salt(self) -> bytes:
        """This cache's random salt (made on first use), whether or not a team's is set: it
        also keeps what the quick no-op records of a call (``quick.py``) unreadable to others."""
        path = self.root / "salt"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
            os.chmod(tmp, 0o600)
            with suppress(FileExistsError):
                os.link(tmp, path)  # the first writer wins; everyone reads the same salt
            os.unlink(tmp)
        return path.read_bytes()

    @property
    def debs(self) -> Path:
        return self._debs

    @property
    def memo(self) -> Path:
        """Results of pure work kept by their input's digest (the licences of copyright files)."""
        return self.root / "memo"

    def _path(self, stage: str, key: str) -> Path:
        return self.root / "entries" / f"{stage}-{key}"

    def lookup(self, stage: str, key: str) -> Entry | None:
        """The entry, as its metadata describes it (not checked: see ``checked``)."""
        path = self._path(stage, key)
        try:
            meta = json.loads((path / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return Entry(stage, key, path, meta)

    def checked(
        self, stage: str, key: str, report: Callable[[str], None], parts: Collection[str] | None = None
    ) -> Entry | None:
        """The entry, only when what it holds still has the digest recorded when it was
        made (``parts``: only these top-level names of it, the ones the build reads, where
        the entry records their digests); a damaged one is reported, removed (so the stage
        runs again) and not returned."""
        entry = self.lookup(stage, key)
        if entry is None:
            return None
        why = self.damage(entry, parts)
        if why is None:
            return entry
        self.discard(entry, why, report, "the stage runs again")
        return None

    def damage(self, entry: Entry, parts: Collection[str] | None = None) -> str | None:
        """Why ``entry`` can't be trusted; None: it (or its ``parts``, see ``checked``) still
        has the digest recorded when it was made."""
        recorded = entry.meta.get(CONTENT)
        each = entry.meta.get(PARTS)
        if parts is not None and isinstance(each, dict) and all(part in each for part in parts):
            if all(_intact(entry.path / part, each[part]) for part in sorted(parts)):
                return None
        elif recorded is not None and _intact(entry.path, recorded, entry=True):
            return None
        return "its files changed since it was made" if recorded else "it records no digest of its files"

    def discard(self, entry: Entry, why: str, report: Callable[[str], None], then: str) -> None:
        """A damaged entry removed, and said (``then``: what the build does now); an error
        while another build uses it."""
        if not self.remove(entry):
            raise ImagesmithError(
                f"the cache entry {entry.stage} {entry.key[:12]} is damaged ({why})"
                " and another build is using it",
                hint="build again once that build is done: the entry is then discarded and made again",
            )
        report(f"the cache entry {entry.stage} {entry.key[:12]} is damaged ({why}): discarded, {then}")

    def check_in_background(self, entry: Entry, parts: Collection[str] | None = None) -> Future[str | None]:
        """``damage(entry, parts)`` worked out in a thread while the build goes on (and
        reads the entry): whatever the build makes from it waits for the answer."""
        return background.start(lambda: self.damage(entry, parts), f"check {entry.stage}", daemon=True)

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        with FileLock(str(self.root / "locks" / f"{stage}-{key}.lock")):
            yield

    def commit(
        self,
        stage: str,
        key: str,
        make: Callable[[Path], None],
        meta: dict[str, Any] | None = None,
        expected: str | None = None,
        replace: bool = False,
        parts: bool = True,
    ) -> Entry:
        """Run ``make(directory)`` in a private directory, then rename it into place.
        ``expected``: the digest what it made must have (else ``ContentMismatch``).
        ``replace``: an entry already there is removed first (a stage run again on purpose,
        say with newer packages, is what later builds must get); else it is kept.
        ``parts``: the digest of each top-level name is recorded too (``PARTS``), for
        builds that read only some of them; without, the entry is checked whole."""
        return self._place(stage, key, self._made(stage, make), meta, expected, replace, parts)

    def commit_in_background(
        self,
        stage: str,
        key: str,
        make: Callable[[Path], None],
        meta: dict[str, Any] | None = None,
        replace: bool = False,
        parts: bool = True,
    ) -> Future[Entry]:
        """``commit``, but only ``make`` runs now: hashing what it made and renaming it into
        place run in a thread while the caller goes on (``meta`` is read there, once
        ``make`` returned). The entry is in place, or the commit failed, once the future is
        done; a process that exits meanwhile waits for it."""
        tmp = self._made(stage, make)
        place = lambda: self._place(stage, key, tmp, meta, None, replace, parts)  # noqa: E731
        return background.start(place, f"commit {stage}")

    def _made(self, stage: str, make: Callable[[Path], None]) -> Path:
        """``make``'s private directory, or nothing left of it if it failed."""
        tmp = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{stage}-", dir=self.root / "tmp"))
        try:
            make(tmp)
        except BaseException:
            remove_tree(tmp)
            raise
        return tmp

    def _place(
        self,
        stage: str,
        key: str,
        tmp: Path,
        meta: dict[str, Any] | None,
        expected: str | None,
        replace: bool,
        parts: bool = True,
    ) -> Entry:
        """What ``make`` left in ``tmp`` hashed, recorded, flushed and renamed into place."""
        try:
            if parts:
                content, each = hashing.tree_and_parts(tmp, _content(tmp))
            else:  # each file hashed once, not twice
                content, each = hashing.tree(tmp, _content(tmp)), None
            if expected is not None and content != expected:
                raise ContentMismatch(f"{stage}-{key}")
            now = time.time()
            data = {
                "stage": stage,
                "key": key,
                "created": now,
                "last_used": now,
                "configs": [],
                **(meta or {}),
                CONTENT: content,
                **({PARTS: each} if each is not None else {}),
            }
            (tmp / META).write_text(json.dumps(data, indent=2), encoding="utf-8")
            _sync(tmp)  # on disk before it has its name: a power cut never leaves half an entry
            final = self._path(stage, key)
            old = self.lookup(stage, key) if replace else None
            if old is not None and not self.remove(old):
                raise ImagesmithError(
                    f"the cache entry {stage} {key[:12]} is to be replaced, but another build is using it",
                    hint="run this build again once that one is done",
                )
            try:
                os.rename(tmp, final)
                _sync(final.parent)
            except OSError:
                if not (final / META).exists():
                    raise
                remove_tree(tmp)  # made meanwhile by another build: keep theirs
        except BaseException:
            remove_tree(tmp)
            raise
        entry = self.lookup(stage, key)
        assert entry is not None
        return entry

    def touch(self, entry: Entry, config: str) -> None:
        """Record a use: when, and by which config (for `cache list` and pruning)."""
        mark_used(entry.meta, config, time.time())
        # written beside the entries, not in the entry: a build checking it meanwhile (its
        # digest covers every name in it but META) must never see a half-written file
        write_json(entry.path / META, entry.meta, self.root / "tmp")

    def entries(self) -> list[Entry]:
        found = []
        for path in sorted((self.root / "entries").iterdir()):
            stage, _, key = path.name.partition("-")
            entry = self.lookup(stage, key)
            if entry is not None:
                found.append(entry)
        return found

    @contextmanager
    def using(self, entry: Entry) -> Iterator[None]:
        """Held while a build reads ``entry`` in place (the lower layer of its rootfs, see
        host/overlay.py): ``remove`` leaves it be until then."""
        with open(self._use_lock(entry), "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            yield

    def _use_lock(self, entry: Entry) -> Path:
        return self.root / "locks" / f"{entry.stage}-{entry.key}.use"

    def remove(self, entry: Entry) -> bool:
        """Out of the namespace first (a rename), then deleted: never half-present. False
        (and kept) while a build uses it in place."""
        with open(self._use_lock(entry), "a", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            doomed = Path(tempfile.mkdtemp(prefix="removed-", dir=self.root / "tmp"))
            os.rename(entry.path, doomed / "entry")
        remove_tree(doomed)
        return True

    def prune(self, keep_last: int | None = None, max_size: int | None = None) -> list[Entry]:
        """Drop the least recently used entries: beyond ``keep_last`` per stage, then until
        everything (the .deb files included) fits in ``max_size``."""
        removed: list[Entry] = []
        entries = sorted(self.entries(), key=lambda e: e.last_used, reverse=True)
        if keep_last is not None:
            per_stage: dict[str, int] = {}
            for entry in entries:
                per_stage[entry.stage] = per_stage.get(entry.stage, 0) + 1
                if per_stage[entry.stage] > keep_last:
                    with self.lock(entry.stage, entry.key):
                        if self.remove(entry):
                            removed.append(entry)
        if max_size is not None:
            kept = [e for e in entries if e not in removed]
            sizes = {e.path: e.size for e in kept}
            total = sum(sizes.values()) + self.debs_size()
            for entry in reversed(kept):  # least recently used first
                if total <= max_size:
                    break
                with self.lock(entry.stage, entry.key):
                    if not self.remove(entry):
                        continue  # in use by a build: kept
                removed.append(entry)
                total -= sizes[entry.path]
            if total > max_size:
                for deb in sorted(self.debs.glob("*.deb"), key=lambda p: p.stat().st_atime):
                    if total <= max_size:
                        break
                    total -= deb.stat().st_blocks * 512
                    deb.unlink()
        return removed

    def debs_size(self) -> int:
        return sum(p.stat().st_blocks * 512 for p in self.debs.glob("*.deb"))

    def clear(self) -> int:
        """Every entry not in use by a build, the .deb files and the records: how many
        entries went."""
        removed = 0
        for entry in self.entries():
            with self.lock(entry.stage, entry.key):
                removed += self.remove(entry)
        for deb in self.debs.glob("*.deb"):
            deb.unlink()
        for record in [*(self.root / "builds").glob("*.json"), *(self.root / "published").glob("*.json"),
                       *(self.root / "memo").glob("*.json")]:  # fmt: skip
            record.unlink()
        remove_tree(self.root / "memo" / "trees")  # the digests of entries' trees (stages/jobs.py)
        return removed

    # -- what the last build of a config used, so `plan` can say what changed
    def last_build(self, config_id: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / "builds" / f"{config_id}.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def record_build(self, config_id: str, stages: dict[str, Any]) -> None:
        write_json(self.root / "builds" / f"{config_id}.json", stages)

    # -- what the last build into an output directory published (``build/current.py``)
    def _published_path(self, output: Path) -> Path:
        return self.root / "published" / published_name(output)

    def published(self, output: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._published_path(output).read_text(encoding="utf-8"))
            return data
        except (OSError, ValueError):
            return {}

    def record_published(self, output: Path, record: dict[str, Any]) -> None:
        write_json(self._published_path(output), {"output": str(output), **record})

    def forget_published(self, output: Path) -> None:
        self._published_path(output).unlink(missing_ok=True)

    def _remove_stale_tmp(self) -> None:
        """Leftovers of killed builds (their process is gone): never read, now removed."""
        for path in (self.root / "tmp").iterdir():
            pid = path.name.split("-", 1)[0]
            if path.name.startswith("removed-") or (pid.isdigit() and not Path(f"/proc/{pid}").exists()):
                with suppress(OSError):
                    remove_tree(path) if path.is_dir() else path.unlink()


def _intact(path: Path, recorded: object, *, entry: bool = False) -> bool:
    """A part of an entry (or, ``entry``, a whole one but its metadata) is there and has
    the digest recorded for it."""
    try:
        return hashing.tree(path, _content(path) if entry else None) == recorded
    except OSError:  # gone, or unreadable
        return False


def _content(entry: Path) -> list[Path]:
    """What an entry's digest covers: everything but its metadata (which changes on use)."""
    return hashing.everything(entry, frozenset({META}))


def _sync(path: Path) -> None:
    """Everything written to the filesystem of ``path`` is on disk (syncfs), and so is the
    directory ``path`` itself."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _LIBC.syncfs(fd) != 0:
            os.fsync(fd)
        os.fsync(fd)
    finally:
        os.close(fd)


_LIBC = ctypes.CDLL(None, use_errno=True)
