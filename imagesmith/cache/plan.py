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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagesmith import __version__
from imagesmith.cache import hashing
from imagesmith.config import facts, overlay
from imagesmith.config.load import Spec
from imagesmith.host import requirements
from imagesmith.repro.lock import Lock

STAGES = ("bootstrap", "customize", "filesystems", "disk")
_PACKAGE = Path(__file__).resolve().parent.parent  # the imagesmith package
#: imagesmith's own code that each stage runs (a change to it changes the stage's key)
CODE = {
    "bootstrap": ["stages/bootstrap.py", "stages/deferred.py", "stages/tools.py", "host/rootfs.py",
                  "host/binfmt.py", "repro/lock.py"],
    "customize": ["stages/customize.py", "stages/deferred.py", "stages/tools.py", "host/rootfs.py",
                  "disk/ids.py", "outputs/inventory.py", "outputs/licenses.py", "repro/reproducible.py",
                  "config/overlay.py"],
    "filesystems": ["stages/filesystems.py", "disk/ids.py", "repro/reproducible.py"],
    "disk": ["stages/disk.py", "disk/ids.py", "disk/table.py"],
}  # fmt: skip
#: config keys that only the bootstrap reads, and those no image stage reads at all
BOOTSTRAP_KEYS = ("distribution", "packages")
NOT_IN_IMAGE = ("includes", "layer_paths", "layers", "variables", "signing_key", "packages", "distribution")


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def tree_digest(path: Path, ignore: tuple[str, ...] | list[str] = ()) -> str:
    """Content, type, mode and symlink target of a file or every file under a directory
    (but those ``ignore`` leaves out, as the overlay copy does)."""
    return hashing.tree(path, overlay.walk(path, ignore).files if path.is_dir() else None)


def code_digest(stage: str) -> str:
    h = hashlib.sha256(__version__.encode())
    for rel in CODE[stage]:
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
    spec: Spec, salt: bytes, tool_versions: dict[str, str], locked: Lock | None = None
) -> list[StagePlan]:
    """The stages with their inputs and keys (cache state is filled in by the caller)."""
    from imagesmith.outputs.manifest import portable
    from imagesmith.stages import bootstrap as boot
    from imagesmith.stages import deferred, tools

    def hidden(value: Any) -> str:
        encoded = json.dumps(value, default=str).encode()
        return "hmac:" + hmac.new(salt, encoded, hashlib.sha256).hexdigest()

    config = spec.masked(hidden)
    plans: list[StagePlan] = []

    def common(stage: str) -> dict[str, str]:
        found = {f"tool {t}": tool_versions.get(t, "absent") for t in requirements.for_stage(stage)}
        found["imagesmith code"] = code_digest(stage)
        if plans:
            found[f"{plans[-1].name} stage"] = plans[-1].key
        return found

    first = common("bootstrap")
    first["packages"] = digest(facts.packages(spec))
    first["distribution"] = digest([config["distribution"], facts.components(spec)])
    first["architecture"] = digest([spec.device.arch, tools.needed(spec), tools.PACKAGES])
    if locked is not None:
        first["lock"] = digest(locked.digest_input())
    first["mmdebstrap options"] = digest([boot.APT_OPTIONS, boot.DPKG_OPTIONS, deferred.divert_hook()])
    plans.append(_keyed(StagePlan("bootstrap", first)))

    second = common("customize")
    for name, value in config.items():
        if name not in NOT_IN_IMAGE:
            second[name] = digest(value)
    for index, entry in enumerate(spec.config.files):
        if entry.source is not None:
            second[f"files[{index}] {portable(entry.source, spec)}"] = tree_digest(
                Path(entry.source), entry.ignore
            )
    for index, script in enumerate(spec.config.scripts):
        second[f"scripts[{index}] {portable(script.run, spec)}"] = tree_digest(Path(script.run))
    second["SOURCE_DATE_EPOCH"] = os.environ.get("SOURCE_DATE_EPOCH", "from the packages")
    second["device"] = digest(spec.device.model_dump(mode="json"))
    second["layout"] = digest(spec.layout.model_dump(mode="json"))
    plans.append(_keyed(StagePlan("customize", second)))

    third = common("filesystems")
    third["layout"] = digest(spec.layout.model_dump(mode="json"))
    third["identity"] = digest([spec.config.name, spec.device.device])  # UUIDs and volume ids
    plans.append(_keyed(StagePlan("filesystems", third)))

    fourth = common("disk")
    fourth["layout"] = digest(spec.layout.model_dump(mode="json"))
    fourth["identity"] = digest([spec.config.name, spec.device.device])  # the disk signature
    plans.append(_keyed(StagePlan("disk", fourth)))
    return plans


def _keyed(plan: StagePlan) -> StagePlan:
    plan.key = digest(plan.inputs)[:32]
    return plan


def changed_inputs(now: dict[str, str], before: dict[str, str]) -> list[str]:
    if not before:
        return ["(no earlier build of this config)"]
    names = sorted(now.keys() | before.keys())
    return [n for n in names if now.get(n) != before.get(n)]


def config_id(spec: Spec, variant: str | None, sets: list[str]) -> str:
    """Which config a build record belongs to: the file, the variant and the --set values."""
    return digest([str(spec.config_path), variant, sorted(sets)])[:24]
