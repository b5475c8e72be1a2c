"""What every stage sees: the spec, the runner, and the build's working directories."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imagesmith.config.load import Spec
from imagesmith.run import Runner


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

    @property
    def rootfs(self) -> Path:
        return self.work / "rootfs"
