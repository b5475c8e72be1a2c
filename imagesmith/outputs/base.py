"""What an output is: one object that makes some of the files a build publishes.

The list in ``outputs/handlers.py`` runs in order; each handler sees what the earlier ones
made (``Release.files``), so the manifest lists the image and SBOMs, SHA256SUMS covers
everything before it, and the signature signs SHA256SUMS. A new output format is one
module with one ``Output`` and one line in that list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from imagesmith.config.load import Spec
from imagesmith.host.run import Runner
from imagesmith.outputs.inventory import Inventory


@dataclass
class Release:
    """What the outputs describe, and where they are written."""

    spec: Spec
    runner: Runner
    work: Path  # the build's private directory: outputs are made here, then published
    image: Path
    inventory: Inventory
    created: datetime  # the epoch: the time every output states
    signing_key: Path | None = None
    table: dict[str, Any] = field(default_factory=dict)  # sfdisk's view of the image (release phase)
    tools: dict[str, str] = field(default_factory=dict)  # host package versions (the manifest's)
    files: list[Path] = field(default_factory=list)  # made so far, in handler order
    usage: dict[str, int] = field(default_factory=dict)  # partition name → bytes its files take
    partitions: dict[str, Path] = field(default_factory=dict)  # partition name → its filesystem image


class Output:
    """One kind of output file."""

    name: str = ""
    #: "image": made with the image and kept in the disk stage's cache entry (it depends on
    #: the image and the inventory only); "release": made by every build
    phase: Literal["image", "release"] = "release"
    #: it vouches for the others (checksums, signature): an old one is removed before any
    #: file is replaced, the new one placed after all the others
    vouches: bool = False

    def wanted(self, release: Release) -> bool:
        """Whether this build makes it (a signature only with a key)."""
        return True

    def make(self, release: Release) -> list[Path]:
        """Write the files into ``release.work``; return them."""
        raise NotImplementedError

    def prepare(self, runner: Runner) -> None:
        """Start, in the background, slow work that needs no image (loading a validator),
        while the stage before the one that makes this output runs. Default: none."""

    def names(self, spec: Spec) -> list[str]:
        """The file names it may publish (for the ones an earlier build left)."""
        return []
