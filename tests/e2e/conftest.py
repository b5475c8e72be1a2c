"""Real builds, shared by the tests of one module (`--dist loadfile` keeps a module on one worker)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def stage_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One stage cache per test worker, empty at its start: every module's first build is
    cold, and later builds of a module (and the .deb files) reuse what the earlier made."""
    path = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(path)
    return path / "imagesmith"


def imagesmith(*args: str, check: bool = True, timeout: float = 3000) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "imagesmith", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"imagesmith {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return proc


@dataclass
class Built:
    output: Path
    image: Path
    table: dict[str, object]

    def partition_offset(self, index: int) -> int:
        parts = self.table["partitions"]
        assert isinstance(parts, list)
        return int(parts[index]["start"]) * 512

    def root(self) -> str:
        """debugfs device spec of the root filesystem inside the image."""
        return f"{self.image}?offset={self.partition_offset(1)}"

    def boot(self) -> str:
        """mtools device spec of the boot filesystem inside the image."""
        return f"{self.image}@@{self.partition_offset(0)}"

    def debugfs(self, request: str) -> str:
        return subprocess.run(
            ["debugfs", "-R", request, self.root()], capture_output=True, text=True, check=True
        ).stdout

    def cat(self, path: str) -> str:
        return self.debugfs(f"cat {path}")

    def boot_file(self, name: str) -> str:
        return subprocess.run(
            ["mtype", "-i", self.boot(), f"::{name}"], capture_output=True, text=True, check=True
        ).stdout


def build(config: Path | None, output: Path, *extra: str) -> Built:
    args = ["build", "-o", str(output), *extra]
    if config is not None:
        args.insert(1, str(config))
    imagesmith(*args)
    return built(output)


def built(output: Path) -> Built:
    """The build whose outputs are in ``output``."""
    images = list(output.glob("*.img"))
    assert len(images) == 1, images
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(images[0])], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    return Built(output, images[0], table)


def tree(image: Path, offset: int) -> dict[str, tuple[int, int, int]]:
    """path → (mode with the file type, uid, gid) of every file of an ext4 filesystem in
    ``image`` at byte ``offset``, read with debugfs (one run per directory level)."""
    found: dict[str, tuple[int, int, int]] = {}
    level = ["/"]
    while level:
        script = "".join(f'ls -p "{d}"\n' for d in level)
        out = subprocess.run(
            ["debugfs", "-f", "-", f"{image}?offset={offset}"],
            input=script, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        current, level = "/", []
        for line in out.splitlines():
            if line.startswith("debugfs: ls -p "):
                current = line.removeprefix("debugfs: ls -p ").strip('"')
                continue
            fields = line.split("/")
            if len(fields) < 7 or fields[5] in (".", ".."):
                continue
            path = f"{current.rstrip('/')}/{fields[5]}"
            mode = int(fields[2], 8)
            found[path] = (mode, int(fields[3]), int(fields[4]))
            if mode & 0o170000 == 0o040000:
                level.append(path)
    return found


def installed(status: str) -> dict[str, tuple[str, str]]:
    """Name → (version, architecture) of every installed package in a dpkg status file."""
    found = {}
    for paragraph in status.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", paragraph, re.M))
        if fields.get("Status", "").endswith(" installed"):
            found[fields["Package"]] = (fields["Version"], fields["Architecture"])
    return found


def deb_purl(name: str, version: str, arch: str) -> str:
    """``pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-13``, encoded by packageurl-python."""
    from packageurl import PackageURL

    return str(PackageURL("deb", "debian", name, version, {"arch": arch, "distro": "debian-13"}).to_string())
