"""Spec → the build's stages, each with a key: a hash of exactly the inputs it reads.

A key covers the relevant config values, the content (and mode) of every file and
script the stage copies or runs, the key of the stage before it, the Debian versions of
the host tools it calls and imagesmith's own code for it. Secrets enter a key only as
an HMAC with the cache's own random salt, so the cache reveals nothing about them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagesmith import __version__
from imagesmith.config.load import Spec
from imagesmith.host import requirements
from imagesmith.repro.lock import Lock
from imagesmith.stages.base import KeyInputs, Stage, digest, tree_digest
from imagesmith.stages.pipeline import NAMES, STAGES

__all__ = [
    "NAMES",
    "StagePlan",
    "changed_inputs",
    "config_id",
    "digest",
    "restore_point",
    "secret_stages",
    "stages",
    "tree_digest",
]

_PACKAGE = Path(__file__).resolve().parent.parent  # the imagesmith package


def code_digest(stage: Stage) -> str:
    h = hashlib.sha256(__version__.encode())
    for rel in stage.code:
        h.update((_PACKAGE / rel).read_bytes())
    return h.hexdigest()


@dataclass
class StagePlan:
    name: str
    inputs: dict[str, str]  # input name → digest
    key: str = ""
    cached: bool = False
    changed: list[str] = field(default_factory=list)  # inputs that differ from the last build


def stages(
    spec: Spec,
    salt: bytes,
    tool_versions: dict[str, str],
    locked: Lock | None = None,
    epoch: int | None = None,
) -> list[StagePlan]:
    """The stages with their inputs and keys (cache state is filled in by the caller).
    ``epoch``: SOURCE_DATE_EPOCH when the build is given one (else the lock's, if any)."""

    def hidden(value: Any) -> str:
        encoded = json.dumps(value, default=str).encode()
        return "hmac:" + hmac.new(salt, encoded, hashlib.sha256).hexdigest()

    if epoch is None and locked is not None:
        epoch = locked.source_date_epoch
    given = KeyInputs(spec, spec.keyed(hidden), locked, epoch)
    plans: list[StagePlan] = []
    for stage in STAGES:
        found = {f"tool {t}": tool_versions.get(t, "absent") for t in requirements.for_stage(stage.name)}
        found["imagesmith code"] = code_digest(stage)
        if plans:
            found[f"{plans[-1].name} stage"] = plans[-1].key
        found.update(stage.inputs(given))
        plans.append(_keyed(StagePlan(stage.name, found)))
    return plans


def secret_stages(
    spec: Spec, tool_versions: dict[str, str], locked: Lock | None = None, epoch: int | None = None
) -> set[str]:
    """The stages whose key depends on a secret of the config, and so every stage after
    one (its files may hold the secret): exactly those whose keys differ between two salts."""
    one = stages(spec, bytes(32), tool_versions, locked, epoch)
    two = stages(spec, bytes([1]) * 32, tool_versions, locked, epoch)
    return {a.name for a, b in zip(one, two, strict=True) if a.key != b.key}


def _keyed(plan: StagePlan) -> StagePlan:
    plan.key = digest(plan.inputs)[:32]
    return plan


def restore_point(plans: list[StagePlan], present: Callable[[StagePlan], bool]) -> int:
    """The index of the stage a build restores from the cache, -1 for none: the latest
    resumable stage whose entry, and the entries it restores with, are ``present``.
    The build loop (``build/stages.py``) looks the same way, under the stages' locks."""
    by_name = {p.name: p for p in plans}
    for index in range(len(STAGES) - 1, -1, -1):
        stage = STAGES[index]
        if stage.resumable and all(present(by_name[name]) for name in (stage.name, *stage.restore_with)):
            return index
    return -1


def changed_inputs(now: dict[str, str], before: dict[str, str]) -> list[str]:
    if not before:
        return ["(no earlier build of this config)"]
    names = sorted(now.keys() | before.keys())
    return [n for n in names if now.get(n) != before.get(n)]


def config_id(spec: Spec, variant: str | None, sets: list[str]) -> str:
    """Which config a build record belongs to: the file, the variant and the --set values."""
    return digest([str(spec.config_path), variant, sorted(sets)])[:24]
