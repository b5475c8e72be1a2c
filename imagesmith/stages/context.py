"""What every stage sees: the spec, the runner, and the build's working directories."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imagesmith.config.load import Spec
from imagesmith.host.run import Runner
from imagesmith.repro.lock import Lock
from imagesmith.stages.tools import Tools


@dataclass
class PartitionImage:
    """A filesystem image made for one partition of the layout."""

    name: str
    path: Path
    size: int
    type: str
    label: str
    bootable: bool


@dataclass
class Context:
    spec: Spec
    runner: Runner
    work: Path  # private scratch space of this build, removed at the end
    partitions: list[PartitionImage] = field(default_factory=list)
    image: Path | None = None
    tools_tree: Path | None = None  # native tools of the image's versions (foreign targets)
    debs: Path | None = None  # downloaded .deb files shared between builds (the cache's)
    lock: Lock | None = None  # the lock file's pins, when the build uses one
    epoch: int = 1  # SOURCE_DATE_EPOCH: no later time reaches the image (see reproducible.py)

    @property
    def rootfs(self) -> Path:
        return self.work / "rootfs"

    @property
    def tools(self) -> Tools:
        return Tools(self.runner, self.rootfs, self.tools_tree)
