"""The stages of a build, in order: ``build`` runs this list and ``plan`` keys it."""

from __future__ import annotations

from imagesmith.stages import bootstrap, customize, disk, filesystems, packages
from imagesmith.stages.base import Stage

STAGES: tuple[Stage, ...] = (bootstrap.STAGE, packages.STAGE, customize.STAGE, filesystems.STAGE, disk.STAGE)
NAMES = tuple(stage.name for stage in STAGES)


def stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)
