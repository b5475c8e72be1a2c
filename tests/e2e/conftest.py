"""Real builds, shared by the tests of one module (`--dist loadfile` keeps a module on one worker)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imagesmith.stages.prune import Modules

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def stage_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One stage cache per test worker, empty at its start: every module's first build is
    cold, and later builds of a module (and the .deb files) reuse what the earlier made."""
    path = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(path)
    return path / "imagesmith"


def imagesmith(
    *args: str, check: bool = True, timeout: float = 3000, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would (``env``: over the test's environment)."""
    proc = subprocess.run(
        [sys.executable, "-m", "imagesmith", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
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
    boot_index: int = 0  # the FAT partition that boot_file() reads
    root_index: int = 1  # the ext4 root that cat() and debugfs() read

    @property
    def partitions(self) -> list[dict[str, Any]]:
        """The partition table's entries, as sfdisk --json gives them."""
        parts = self.table["partitions"]
        assert isinstance(parts, list)
        return parts

    def partition_offset(self, index: int) -> int:
        parts = self.table["partitions"]
        assert isinstance(parts, list)
        return int(parts[index]["start"]) * 512

    def root(self) -> str:
        """debugfs device spec of the root filesystem inside the image."""
        return f"{self.image}?offset={self.partition_offset(self.root_index)}"

    def boot(self) -> str:
        """mtools device spec of the boot filesystem inside the image."""
        return f"{self.image}@@{self.partition_offset(self.boot_index)}"

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


def extract(image: Path, entry: dict[str, Any], target: Path) -> Path:
    """Partition ``entry`` (sfdisk's) of ``image`` as a file of its own, holes kept as holes."""
    where = [f"skip={entry['start'] * 512}", f"count={entry['size'] * 512}", "iflag=skip_bytes,count_bytes"]
    argv = ["dd", f"if={image}", f"of={target}", "bs=1M", *where, "conv=sparse", "status=none"]
    subprocess.run(argv, check=True)
    return target


def check_filesystem(image: Path, entry: dict[str, Any], fs: str, work: Path) -> None:
    """fsck.vfat -n or e2fsck -fn of one partition, extracted and removed again."""
    part = extract(image, entry, work / "partition")
    try:
        checker = ["fsck.vfat", "-n"] if fs == "vfat" else ["e2fsck", "-fn"]
        result = subprocess.run([*checker, str(part)], capture_output=True, text=True)
        assert result.returncode == 0, (entry, result.stdout + result.stderr)
    finally:
        part.unlink()


def same_bytes(image: Path, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two partitions of ``image`` hold the same bytes (compared by cmp, in place)."""
    if a["size"] != b["size"]:
        return False
    skip = f"{a['start'] * 512}:{b['start'] * 512}"
    return subprocess.run(["cmp", "--quiet", f"--ignore-initial={skip}", f"--bytes={a['size'] * 512}",
                           str(image), str(image)]).returncode == 0  # fmt: skip


def build(config: Path | None, output: Path, *extra: str) -> Built:
    args = ["build", "-o", str(output), *extra]
    if config is not None:
        args.insert(1, str(config))
    imagesmith(*args)
    return built(output)


def kernel_modules(built: Built) -> tuple[str, Modules]:
    """The kernel version in a built image and its modules, as depmod described them."""
    listing = built.debugfs("ls -p /usr/lib/modules").splitlines()
    version = next(
        e.split("/")[5] for e in listing if e.count("/") > 5 and e.split("/")[5] not in (".", "..")
    )
    files = (
        built.cat(f"/usr/lib/modules/{version}/modules.{n}") for n in ("dep", "softdep", "builtin", "alias")
    )
    return version, Modules.parse(*files)


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
