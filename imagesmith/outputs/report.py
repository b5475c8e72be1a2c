"""Reports from build manifests: packages by size, what to trim, what changed between two builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagesmith.outputs.inventory import BOOTSTRAP, Package, removable


def packages_of(manifest: dict[str, Any]) -> list[Package]:
    return [Package(**{k: v for k, v in p.items() if k != "license_texts"}) for p in manifest["packages"]]


@dataclass
class Suggestion:
    what: str  # "layer NAME" or "package NAME"
    removes: list[str]
    saves: int  # bytes


def trim(manifest: dict[str, Any], target: int) -> tuple[list[Suggestion], int]:
    """Removable layers and packages, largest saving first, until ``target`` bytes are saved.

    A candidate is a package the config or a layer names (never the device's, nor what the
    bootstrap needs), or a whole layer (every package it names); what it saves is every
    package that would no longer be installed without it. Returns the chosen suggestions
    and the total they save together.
    """
    packages = packages_of(manifest)
    sizes = {p.name: p.installed_size for p in packages}
    origin: dict[str, str] = manifest["roots"]
    candidates: dict[str, set[str]] = {}
    for name, who in origin.items():
        if who.startswith("device ") or who == BOOTSTRAP or name not in sizes:
            continue
        candidates[f"package {name}"] = {name}
        if who.startswith("layer ") and who != "layer base":
            candidates.setdefault(who, set()).add(name)
    chosen: list[Suggestion] = []
    dropped: set[str] = set()
    gone: set[str] = set()
    # slim keys not set: files left out whatever the packages (see slimmable in the manifest)
    slimming = sorted(manifest.get("slimmable", {}).items(), key=lambda item: -item[1])
    for key, saving in slimming:
        if saving and sum(c.saves for c in chosen) < target:
            chosen.append(Suggestion(f"{key}: true", [], saving))
    slimmed = sum(c.saves for c in chosen)
    while slimmed + sum(sizes[n] for n in gone) < target:
        best: Suggestion | None = None
        for what, names in candidates.items():
            if names <= dropped:
                continue
            removes = removable(packages, origin, dropped | names) - gone
            saving = sum(sizes[n] for n in removes)
            if saving and (best is None or saving > best.saves):
                best = Suggestion(what, sorted(removes), saving)
        if best is None:
            break
        chosen.append(best)
        dropped |= candidates[best.what]
        gone |= set(best.removes)
    return chosen, slimmed + sum(sizes[n] for n in gone)


@dataclass
class Diff:
    added: list[tuple[str, str]]  # (name, version)
    removed: list[tuple[str, str]]
    changed: list[tuple[str, str, str]]  # (name, old, new)
    partitions: list[tuple[str, int, int]]  # (name, old size, new size)
    size_change: int  # installed size, bytes


def diff(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    def index(manifest: dict[str, Any]) -> dict[str, tuple[str, int]]:
        return {
            f"{p['name']}:{p['arch']}": (p["version"], int(p["installed_size"])) for p in manifest["packages"]
        }

    a, b = index(old), index(new)
    parts_a = {p["name"]: int(p["size"]) for p in old["partitions"]}
    parts_b = {p["name"]: int(p["size"]) for p in new["partitions"]}
    return Diff(
        added=[(k, b[k][0]) for k in sorted(b.keys() - a.keys())],
        removed=[(k, a[k][0]) for k in sorted(a.keys() - b.keys())],
        changed=[(k, a[k][0], b[k][0]) for k in sorted(a.keys() & b.keys()) if a[k][0] != b[k][0]],
        partitions=[
            (n, parts_a.get(n, 0), parts_b.get(n, 0)) for n in sorted(parts_a.keys() | parts_b.keys())
        ],
        size_change=sum(s for _, s in b.values()) - sum(s for _, s in a.values()),
    )


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def sizes(manifest: dict[str, Any]) -> list[str]:
    """The end of a build, in a few lines: each partition's size and how much its files
    take, the root filesystem, the image and the compressed image."""
    lines = []
    for part in manifest.get("partitions", []):
        role = part.get("role") or "-"
        lines.append(
            f"p{part['number']} {part['name']:<10} {role:<7} {part['fs']:<5} {mib(int(part['size'])):>11}"
            f"  files {mib(int(part.get('used', 0))):>11}  {part.get('mount') or ''}"
        )
    found = manifest.get("sizes", {})
    if "image" in found:
        line = f"rootfs files {mib(found['rootfs'])}; image {mib(found['image'])}"
        if "compressed" in found:
            line += f"; compressed {mib(found['compressed'])}"
        lines.append(line)
    return lines
