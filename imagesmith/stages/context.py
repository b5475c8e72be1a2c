"""What every stage sees: the spec, the runner, and the build's working directories."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagesmith.cache.store import Cache
from imagesmith.config.load import Spec
from imagesmith.host.run import Runner
from imagesmith.repro.lock import Lock
from imagesmith.stages.tools import Tools

COPYRIGHTS = "copyrights"


@dataclass
class PartitionImage:
    """A filesystem image made for one partition of the layout."""

    name: str
    path: Path
    size: int
    type: str
    label: str
    bootable: bool
    used: int = 0  # bytes its files take (the build summary and the manifest)


@dataclass
class Context:
    spec: Spec
    runner: Runner
    work: Path  # private scratch space of this build, removed at the end
    partitions: list[PartitionImage] = field(default_factory=list)
    image: Path | None = None
    tools_tree: Path | None = None  # native tools of the image's versions (foreign targets)
    tools_source: Path | None = None  # a cache entry's tools tree, copied to tools_tree when needed
    debs: Path | None = None  # downloaded .deb files shared between builds (the cache's)
    store: Cache | None = None  # the stage cache: deferred jobs keep their results in it
    lock: Lock | None = None  # the lock file's pins, when the build uses one
    #: SOURCE_DATE_EPOCH: given, the lock's, or (after the bootstrap) the packages' newest
    #: changelog; no later time reaches the image (see reproducible.py)
    epoch: int | None = None
    #: stages whose result this build already holds (the bootstrap, after a re-lock)
    done: set[str] = field(default_factory=set)
    #: the package names (or the lock's versions) were checked against the mirror
    mirror_checked: bool = False
    #: what a stage hands to later ones and to the outputs, by name (the customize stage's
    #: inventory, the disk stage's image facts)
    products: dict[str, Any] = field(default_factory=dict)
    #: what the build holds until it ends (``build()`` closes it before the work directory
    #: goes): overlay mounts over cache entries, and those entries' use locks
    held: ExitStack = field(default_factory=ExitStack)
    #: the cache entry's rootfs under the work directory's, when it is an overlay over one
    lower: Path | None = None
    #: the digest recorded for that rootfs (what names its content, for ``jobs.JobCache``)
    lower_digest: str | None = None

    def set_epoch(self, epoch: int) -> None:
        """The epoch for the rest of the build: every program run from now on sees it."""
        self.epoch = epoch
        self.runner.epoch = epoch

    @property
    def known_epoch(self) -> int:
        if self.epoch is None:
            raise AssertionError("the epoch is known from the customize stage on")
        return self.epoch

    @property
    def rootfs(self) -> Path:
        return self.work / "rootfs"

    @property
    def copyrights(self) -> Path:
        """The packages' copyright files, kept before any script can strip them."""
        return self.work / COPYRIGHTS

    @property
    def tools(self) -> Tools:
        return Tools(self.runner, self.rootfs, self.tools_tree, self.tools_source)
