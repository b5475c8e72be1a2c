"""manifest.json: what was built, from what, with what — for people and for `packages`/`diff`.

It holds the resolved config (secrets masked), the layers in merge order with the
sha256 of each file, every package (version, size, source, licence, what brought it
in, what it depends on), the partition table, every other output's sha256 and size,
and the versions of the host tools that made the image.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from imagesmith import __version__
from imagesmith.config.facts import update_compatible
from imagesmith.config.load import Spec
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.host import requirements
from imagesmith.outputs.base import Output, Release
from imagesmith.outputs.files import IMAGES, output_file, sha256
from imagesmith.outputs.inventory import Package
from imagesmith.repro import sources

NAME = "manifest.json"
FORMAT = 1


def host_tools() -> dict[str, str]:
    """Debian versions of the host packages that provide the build's tools."""
    if shutil.which("dpkg-query") is None:
        return {}
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Status}\n", *requirements.recorded()],
        capture_output=True,
        text=True,
        check=False,
    )
    found = {}
    for line in proc.stdout.splitlines():
        name, version, status = ([*line.split(), "", "", ""])[:3]
        if status == "installed":
            found[name] = version
    return found


def _portable_config(spec: Spec) -> dict[str, Any]:
    data = spec.masked()
    for entry in data.get("files", []):
        if entry.get("source"):
            entry["source"] = spec.portable(entry["source"])
    for entry in data.get("scripts", []):
        entry["run"] = spec.portable(entry["run"])
    for entry in data.get("sources", []):
        entry["key"] = spec.portable(entry["key"])
    data["layer_paths"] = [spec.portable(p) for p in data.get("layer_paths", [])]
    if data.get("signing_key"):
        data["signing_key"] = spec.portable(data["signing_key"])
    for key in ("key", "cert", "keyring"):
        if data.get("update") and data["update"].get(key):
            data["update"][key] = spec.portable(data["update"][key])
    return data


def partitions(
    spec: Spec, table: dict[str, Any], fs_ids: dict[str, str], usage: dict[str, int]
) -> list[dict[str, Any]]:
    from imagesmith.disk import ids

    rows = []
    sector = int(table.get("sectorsize", 512))
    for index, (part, entry) in enumerate(zip(spec.layout.partitions, table["partitions"], strict=True), 1):
        rows.append(
            {
                "number": index,
                "name": part.name,
                "label": part.label,
                "fs": part.fs,
                "mount": part.mount,
                "role": part.role,
                "slot": part.slot,
                "type": entry["type"],
                "bootable": bool(entry.get("bootable", False)),
                "offset": int(entry["start"]) * sector,
                "size": int(entry["size"]) * sector,
                "used": usage.get(part.name, 0),
                "partuuid": ids.partuuid(spec.identity, index),
                "fs_id": fs_ids.get(part.name, ""),
            }
        )
    return rows


def sizes(spec: Spec, image: Path | None, outputs: list[Path], usage: dict[str, int]) -> dict[str, int]:
    """The bytes of the root filesystem's files, the image's size and the compressed
    image's (when there is one): figures that are the same for the same image on any host."""
    found: dict[str, int] = {"rootfs": usage.get(spec.layout.root.name, 0)}
    if image is not None:
        found["image"] = image.stat().st_size
    for path in outputs:
        if path.name.endswith(IMAGES) and not path.name.endswith(".img"):
            found["compressed"] = path.stat().st_size
    return found


def build_manifest(
    spec: Spec,
    packages: list[Package],
    table: dict[str, Any],
    outputs: list[Path],
    roots: dict[str, str],
    created: str,
    tools: dict[str, str],
    usage: dict[str, int] | None = None,
    image: Path | None = None,
) -> dict[str, Any]:
    from imagesmith.disk import ids

    fs_ids = {p.name: ids.fs_id(spec.identity, p.name) for p in spec.layout.partitions}
    return {
        "format": FORMAT,
        "imagesmith": __version__,
        "name": spec.config.name,
        "created": created,
        "device": spec.device.device,
        "arch": spec.device.arch,
        "config_file": spec.config_path.name,
        "config": _portable_config(spec),
        "layers": [
            {"name": ref.name, "file": spec.portable(str(ref.path)), "sha256": sha256(ref.path)}
            for ref in spec.layers
        ],
        "roots": roots,
        "packages": [p.to_json() for p in packages],
        "disk": {
            "table": table.get("label", spec.layout.table),
            "signature": ids.disk_signature(spec.identity),
            "sector_size": int(table.get("sectorsize", 512)),
        },
        "partitions": partitions(spec, table, fs_ids, usage or {}),
        "sizes": sizes(spec, image, outputs, usage or {}),
        "outputs": [{"file": p.name, "sha256": sha256(p), "size": p.stat().st_size} for p in outputs],
        "host_tools": tools,
    }


def write(data: dict[str, Any], target: Path) -> None:
    target.write_text(
        json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def read(outdir: Path) -> dict[str, Any]:
    """The manifest of a build's output directory, or a clear error."""
    path = output_file(outdir, NAME)
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImagesmithError(
            f"{path} cannot be read: {exc}", hint="rebuild the image", exit_code=EXIT_CONFIG
        ) from None
    if data.get("format") != FORMAT:
        raise ImagesmithError(
            f"{path} has format {data.get('format')!r}; this imagesmith reads format {FORMAT}",
            hint="rebuild the image with this version of imagesmith",
            exit_code=EXIT_CONFIG,
        )
    return data


class Manifest(Output):
    name = "manifest"

    def make(self, release: Release) -> list[Path]:
        found = release.inventory
        data = build_manifest(
            release.spec, found.packages, release.table, list(release.files), found.roots,
            release.created.isoformat(), release.tools, release.usage, release.image,
        )  # fmt: skip
        if release.spec.config.update is not None:  # what the bundle says it is for
            made_by = release.runner.run(["rauc", "--version"], capture=True).strip()
            data["update"] = {"compatible": update_compatible(release.spec), "rauc": made_by}
        if found.slimmable:  # what the slim keys not set would save
            data["slimmable"] = found.slimmable
        if release.spec.config.sources:  # the archives besides the distribution's, with their keys
            data["sources"] = sources.described(release.runner, release.spec)
        target = release.work / NAME
        write(data, target)
        release.runner.detail(f"{len(found.packages)} packages in the SBOMs and the manifest")
        return [target]


OUTPUT = Manifest()
