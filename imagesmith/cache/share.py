"""The shared stage cache behind the local one: pulled from on a local miss, pushed to
after a build (``--cache-remote``, see ``remote.py`` for what an entry is and how it is
checked).

What may be shared: a stage whose key does not depend on a secret of the config is shared
as it is. A stage whose key does (a value from ``!env``/``!file``, and every stage after
it, whose files may hold it) is neither pushed nor pulled, unless the team gives a shared
salt (IMAGESMITH_CACHE_SALT, itself a secret): then every key is made with it, every
stage is shared, and only those who know the salt can find an entry.

A registry that cannot be reached is said once and then left alone for the rest of the
build, which goes on from local work; an entry that fails a check is said, not used, and
the stage runs.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagesmith import redact
from imagesmith.cache.remote import (
    Address,
    Refused,
    Registry,
    Trust,
    Unavailable,
    archive_statement,
    key_id,
)
from imagesmith.cache.store import CONTENT, META, PARTS, Cache, ContentMismatch, Entry
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.host.rootfs import remove_tree
from imagesmith.host.run import Runner, format_duration

REMOTE_ENV = "IMAGESMITH_CACHE_REMOTE"
KEY_ENV = "IMAGESMITH_CACHE_KEY"
TRUST_ENV = "IMAGESMITH_CACHE_TRUST"
SALT_ENV = "IMAGESMITH_CACHE_SALT"
#: a team salt shorter than this is guessable from the keys it makes
MIN_SALT = 16
#: what an entry's metadata holds that only makes sense on the machine that wrote it
LOCAL_FACTS = frozenset({"stage", "key", "created", "last_used", "configs", CONTENT, PARTS})
#: the archive keeps what the stage cache keeps: owners, modes, links, holes, attributes
TAR_FLAGS = ("--numeric-owner", "--sparse", "--xattrs", "--xattrs-include=*", "--zstd")


@dataclass
class Shared:
    registry: Registry
    trust: Trust
    team_salt: bool = False
    #: stages whose key depends on a secret, known once the build has its keys (see
    #: ``plan.secret_stages``); until then (None) nothing is shared
    secret: set[str] | None = None
    down: str = ""  # why the registry is not used any more in this build

    @property
    def address(self) -> Address:
        return self.registry.address

    def shared(self, stage: str) -> bool:
        if self.down:
            return False
        return self.team_salt or (self.secret is not None and stage not in self.secret)

    def pull(self, cache: Cache, stage: str, key: str, runner: Runner) -> Entry | None:
        """The entry from the registry, checked and renamed into ``cache``; None when it is
        not there, not trusted, or the registry cannot be reached."""
        if not self.shared(stage):
            return None
        start = time.monotonic()
        try:
            found = self.registry.statement(stage, key, self.trust)
            if found is None:
                return None
            statement, digest = found
            scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-pull-", dir=cache.root / "tmp"))
            try:
                archive = scratch / "entry.tar.zst"
                self.registry.download(digest, archive)
                checked = archive_statement(stage, key, archive, statement.content_sha256, statement.facts)
                if (checked.archive_sha256, checked.archive_size) != (
                    statement.archive_sha256,
                    statement.archive_size,
                ):
                    raise Refused("its archive is not the one it was signed with")

                def unpack(entry: Path) -> None:
                    runner.run(
                        ["tar", "--extract", "--same-permissions", *TAR_FLAGS, "-C", entry, "-f", archive]
                    )

                entry = cache.commit(stage, key, unpack, statement.facts, expected=statement.content_sha256)
            except ContentMismatch:
                raise Refused("its files are not the ones it was signed with") from None
            finally:
                remove_tree(scratch)
        except Unavailable as exc:
            self._give_up(runner, str(exc))
            return None
        except ImagesmithError as exc:  # the archive would not unpack here: the stage runs
            runner.note(f"the shared entry {stage} {key[:12]} could not be unpacked "
                        f"({exc.message}); the stage runs here")  # fmt: skip
            return None
        except Refused as exc:
            runner.note(f"the shared entry {stage} {key[:12]} is refused: {exc}; "
                        "the stage runs here")  # fmt: skip
            return None
        size = _megabytes(statement.archive_size)
        runner.info(
            f"  {stage} {key[:12]} from {self.address} ({size}, {format_duration(time.monotonic() - start)})"
        )
        return entry

    def push(self, cache: Cache, stages: Iterable[tuple[str, str]], runner: Runner) -> list[str]:
        """Every entry of ``stages`` (name, key) that the local cache holds, may be shared
        and the registry lacks, pushed; returns the names pushed."""
        pushed: list[str] = []
        if self.trust.signer is None:
            runner.info(
                f"  nothing pushed to {self.address}: no --cache-key to sign with (this machine only pulls)"
            )
            return pushed
        for stage, key in stages:
            entry = cache.lookup(stage, key)
            if entry is None or not self.shared(stage):
                continue
            try:
                if self.registry.has(stage, key):
                    continue
                self._push(cache, entry, runner)
            except Unavailable as exc:
                self._give_up(runner, str(exc))
                break
            except (ImagesmithError, OSError) as exc:  # packing failed: the build's outputs stand
                said = exc.message if isinstance(exc, ImagesmithError) else str(exc)
                runner.note(f"{stage} {key[:12]} not pushed: {said}")
                continue
            pushed.append(stage)
        return pushed

    def _push(self, cache: Cache, entry: Entry, runner: Runner) -> None:
        scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-push-", dir=cache.root / "tmp"))
        try:
            archive = scratch / "entry.tar.zst"
            start = time.monotonic()
            runner.run(
                ["tar", "--create", *TAR_FLAGS, f"--exclude=./{META}", "-C", entry.path, "-f", archive, "."]
            )
            facts = {k: v for k, v in entry.meta.items() if k not in LOCAL_FACTS}
            statement = archive_statement(entry.stage, entry.key, archive, str(entry.meta[CONTENT]), facts)
            self.registry.push(statement, archive, self.trust.sign(statement.encode()))
            took = format_duration(time.monotonic() - start)
            size = _megabytes(statement.archive_size)
            runner.info(f"  {entry.stage} {entry.key[:12]} to {self.address} ({size}, {took})")
        finally:
            remove_tree(scratch)

    def _give_up(self, runner: Runner, why: str) -> None:
        if not self.down:
            self.down = why
            said = redact.redact(why)
            runner.note(f"the shared cache {self.address} cannot be used ({said}): "
                        "this build goes on without it")  # fmt: skip


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def team_salt() -> bytes | None:
    """IMAGESMITH_CACHE_SALT: the salt every key is made with, so that stages with secret
    inputs can be shared by those who know it."""
    value = os.environ.get(SALT_ENV, "")
    if not value:
        return None
    redact.register(value)
    if len(value) < MIN_SALT:
        raise ImagesmithError(
            f"{SALT_ENV} is too short to keep the secrets in the keys it makes secret",
            hint=f"give the whole team at least {MIN_SALT} random characters, e.g. `openssl rand -hex 32`",
            exit_code=EXIT_CONFIG,
        )
    return value.encode()


def open_shared(remote: str | None, signer: Any, trusted: Iterable[Any]) -> Shared | None:
    """The shared cache at ``remote`` (None: no shared cache), pushing entries signed with
    ``signer`` (an Ed25519 private key, or None) and taking those of the ``trusted`` public
    keys and of the signer."""
    if not remote:
        return None
    address = Address.parse(remote)
    trust = Trust(signer, {key_id(public): public for public in trusted})
    if not trust.keys:
        raise ImagesmithError(
            f"the shared cache {address} needs a key to trust: nothing it holds would be used",
            hint="give the public key(s) whose entries this build takes with --cache-trust FILE, and "
            "--cache-key FILE to sign what it pushes (a machine without one only pulls)",
            exit_code=EXIT_CONFIG,
        )
    return Shared(Registry(address), trust, team_salt=team_salt() is not None)
