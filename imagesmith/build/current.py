"""Outputs already current: a build with the same inputs as the last build into the same
output directory, whose files nobody has touched since, has nothing to do.

A build that publishes records, in the stage cache, the key of what it published (the
last stage's key, which chains every stage's inputs, and what only the release phase
reads: the host tools the manifest names, the release outputs' code, the keys that sign)
and each published file's identity: device, inode, size, modification and change time.
The change time is set by the kernel on every write, rename, link or chmod, and no
program can set it back, so a file that matches its identity holds the bytes published.
The record is removed before a build replaces any file, and written after the last one.
The same call made again is answered before any of this loads (``quick.py``), from the
identities of what this decision read.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

from imagesmith import __version__
from imagesmith.cache import Cache
from imagesmith.config.load import Spec
from imagesmith.errors import ImagesmithError
from imagesmith.filestate import identity
from imagesmith.outputs import handlers
from imagesmith.stages.base import digest, source_digest, tree_digest
from imagesmith.stages.plan import StagePlan


def release_key(
    plans: list[StagePlan], spec: Spec, tools: dict[str, str], signing_key: Path | None, salt: bytes
) -> str:
    """What the published files of a build depend on, as one digest. Key files enter it
    as HMACs with the cache's salt, as secrets enter the stage keys."""

    def secret(path: Path) -> str:
        try:
            return hmac.new(salt, path.read_bytes(), hashlib.sha256).hexdigest()
        except OSError as exc:
            raise ImagesmithError(
                f"{path}: cannot read the key: {exc.strerror}",
                hint="the build signs with it: make it readable by the user who builds",
            ) from None

    signing: dict[str, str] = {}
    if signing_key is not None:
        signing["checksums"] = secret(signing_key)
    update = spec.config.update
    if update is not None:  # the update bundle: signed with its key, checked against the keyring
        signing["bundle key"] = secret(Path(update.key))
        signing["bundle cert"] = tree_digest(Path(update.cert))
        if update.keyring is not None:
            signing["bundle keyring"] = tree_digest(Path(update.keyring))
    return digest(
        {
            "stages": plans[-1].key,
            "tools": tools,
            "outputs": [(h.name, source_digest(h)) for h in handlers.HANDLERS],
            "code": [__version__, hashlib.sha256(Path(__file__).read_bytes()).hexdigest()],
            "signing": signing,
        }
    )


def current(cache: Cache, output: Path, key: str) -> dict[str, Any] | None:
    """The record of the last build into ``output`` when it had ``key`` and every file it
    published is as it left it; else None."""
    record = cache.published(output)
    if record.get("key") != key or not record.get("files"):
        return None
    for name, recorded in record["files"].items():
        if identity(output / name) != recorded:
            return None
    return record


def record(cache: Cache, output: Path, key: str, published: list[Path], table: dict[str, Any]) -> None:
    files = {}
    for path in published:
        found = identity(path)
        if found is None:  # gone already: nothing to vouch for
            return
        files[path.name] = found
    cache.record_published(output, {"key": key, "files": files, "table": table})
