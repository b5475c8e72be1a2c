"""The stage cache on real builds: reuse, invalidation, interruption, two builds at once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imagesmith import quick

from .conftest import REPO, imagesmith

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "cache"
#: the log line of a rootfs restored as an overlay over its cache entry (no copy)
IN_PLACE = r"rootfs: {}-\w+ in place, the build's changes on top \(overlay\)"


def run_build(project: Path, out: Path, cache: Path, *extra: str) -> str:
    """Build; return what it printed (stage lines go to stderr)."""
    proc = imagesmith("build", str(project / "image.yaml"), "-o", str(out), "--cache-dir", str(cache), *extra)
    return proc.stderr


def stages_from_cache(log: str) -> set[str]:
    return set(re.findall(r"^▶ (\w+): from the cache", log, re.M))


def stages_run(log: str) -> set[str]:
    return {m for m in re.findall(r"^▶ (\w+):", log, re.M)} - stages_from_cache(log) - {"artifacts"}


def offset(image: Path, index: int) -> tuple[int, int]:
    table = subprocess.run(
        ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
    ).stdout
    part = json.loads(table)["partitiontable"]["partitions"][index]
    return part["start"] * 512, part["size"] * 512


def partition(image: Path, index: int) -> bytes:
    start, size = offset(image, index)
    with open(image, "rb") as handle:
        handle.seek(start)
        return handle.read(size)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache-project") / "p"
    shutil.copytree(DATA, root)
    return root


@pytest.fixture(scope="module")
def reference(project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """An uninterrupted cold build: (its image, its cache, its log)."""
    base = tmp_path_factory.mktemp("reference")
    log = run_build(project, base / "out", base / "cache")
    return base / "out" / "cached.img", base / "cache", log


def test_no_op_rebuild_takes_everything_from_the_cache(
    project: Path, reference: tuple[Path, Path, str], tmp_path: Path
) -> None:
    image, cache, cold = reference
    assert stages_run(cold) == {"bootstrap", "packages", "customize", "filesystems", "disk"}
    plan = imagesmith("plan", str(project / "image.yaml"), "--cache-dir", str(cache)).stdout
    assert plan.count("come from the cache") == 5
    log = run_build(project, tmp_path / "out", cache)
    assert stages_run(log) == set() and "disk" in stages_from_cache(log)
    out = tmp_path / "out" / "cached.img"
    assert out.read_bytes() == image.read_bytes()
    # the same build into the same directory again: the outputs there are current
    before = {p.name: p.stat().st_ino for p in out.parent.iterdir() if p.name != "build.log"}
    log = run_build(project, tmp_path / "out", cache)
    assert "up to date" in log and stages_run(log) == {"outputs"} and not stages_from_cache(log)
    assert {p.name: p.stat().st_ino for p in out.parent.iterdir() if p.name != "build.log"} == before
    # answered from the record of the call, before the config is even loaded (quick.py)
    assert quick.LABEL in log and quick.LABEL in (out.parent / "build.log").read_text()
    # a published file changed in place (as a boot writes to its image): made again
    with open(out, "r+b") as handle:
        handle.seek(5 * 1024 * 1024)
        handle.write(b"changed")
    log = run_build(project, tmp_path / "out", cache)
    assert "up to date" not in log and "disk" in stages_from_cache(log)
    assert out.read_bytes() == image.read_bytes()
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=out.parent, check=True)


def test_a_call_made_again_is_answered_until_something_it_read_changes(
    project: Path, reference: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The quick no-op (quick.py) on a real build: answered while nothing read changed, and
    never once an overlay file changed or one was added."""
    image, cache, _ = reference
    mine = tmp_path / "p"
    shutil.copytree(project, mine)
    out = tmp_path / "out"
    time.sleep(0.2)  # the copies older than a timestamp's granularity: a record vouches for them
    assert quick.LABEL not in run_build(mine, out, cache)  # put together from the cache
    log = run_build(mine, out, cache)
    assert quick.LABEL in log and stages_run(log) == {"outputs"}
    assert f"done in 0.0s: {out / 'cached.img'}" in log and "rootfs files" in log
    for change in ("changed", "added"):
        if change == "changed":
            (mine / "overlay/etc/cache-test.txt").write_text("answered again\n")
        else:
            (mine / "overlay/etc/another.txt").write_text("a new file\n")
        time.sleep(0.2)
        log = run_build(mine, out, cache)
        assert "up to date" not in log and "customize" in stages_run(log), change
        log = run_build(mine, out, cache)
        assert quick.LABEL in log, change
    root = f"{out / 'cached.img'}?offset={offset(out / 'cached.img', 1)[0]}"
    for name, text in (("cache-test.txt", "answered again\n"), ("another.txt", "a new file\n")):
        cat = subprocess.run(["debugfs", "-R", f"cat /etc/{name}", root], capture_output=True, text=True)
        assert cat.stdout == text
    assert partition(out / "cached.img", 0) == partition(image, 0)


def test_an_overlay_change_reuses_the_installs(
    project: Path, reference: tuple[Path, Path, str], tmp_path: Path
) -> None:
    image, cache, _ = reference
    changed = tmp_path / "p"
    shutil.copytree(project, changed)
    (changed / "overlay/etc/cache-test.txt").write_text("second version\n")
    plan = imagesmith("plan", str(changed / "image.yaml"), "--cache-dir", str(cache)).stdout
    # a copy of the project is another config for the build record, so plan cannot name the
    # input; what it must say is that only the installs come from the cache
    stages = ("bootstrap", "packages", "customize", "filesystems", "disk")
    rows = {line.split()[1]: line for line in plan.splitlines() if line.startswith("│ ")}
    assert set(stages) <= set(rows)
    assert "come from the cache" in rows["bootstrap"] and "come from the cache" in rows["packages"]
    assert all(" run " in rows[stage] for stage in stages[2:])
    log = run_build(changed, tmp_path / "out", cache)
    assert stages_from_cache(log) == {"packages"} and stages_run(log) == {"customize", "filesystems", "disk"}
    built_log = (tmp_path / "out/build.log").read_text()
    assert re.search(IN_PLACE.format("(bootstrap|packages)"), built_log)
    # the CycloneDX document was checked by the validator started ahead, in its own process
    assert "the CycloneDX validator's output (started ahead):\n[exit 0 after" in built_log
    # nothing the kernel hooks read changed: their initramfs and boot files are put back
    assert re.search(r"kernel \S+: postinst hooks: from the cache", log), log
    assert re.search(r"kernel \S+: depmod: from the cache", log), log
    for job in ("udev hwdb", "certificate store"):  # (the locale is C.UTF-8: no locale-gen)
        assert f"{job}: from the cache" in log, job
    new = tmp_path / "out" / "cached.img"
    assert partition(new, 0) == partition(image, 0), "the boot partition is the same, byte for byte"
    assert partition(new, 1) != partition(image, 1)
    root = f"{new}?offset={offset(new, 1)[0]}"
    cat = subprocess.run(
        ["debugfs", "-R", "cat /etc/cache-test.txt", root], capture_output=True, text=True
    ).stdout
    assert cat == "second version\n"


def test_hooks_put_back_from_the_cache_give_the_bytes_of_a_cold_build(
    project: Path, reference: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A warm build (kernel hooks and depmod from the cache) and a cold one of the same
    changed config, and changes the initramfs (modprobe.d) and depmod (depmod.d) read,
    which run them again."""
    _, cache, _ = reference
    changed = tmp_path / "p"
    shutil.copytree(project, changed)
    (changed / "overlay/etc/cache-test.txt").write_text("third version\n")
    warm = run_build(changed, tmp_path / "warm", cache)
    assert re.search(r"postinst hooks: from the cache", warm)
    cold = run_build(
        changed, tmp_path / "cold", tmp_path / "empty-cache", "--shared-debs", str(cache / "debs")
    )
    assert "from the cache" not in cold
    assert (tmp_path / "warm/cached.img").read_bytes() == (tmp_path / "cold/cached.img").read_bytes()
    (changed / "overlay/etc/modprobe.d").mkdir(parents=True)
    (changed / "overlay/etc/modprobe.d/test.conf").write_text("options loop max_loop=4\n")
    (changed / "overlay/etc/depmod.d").mkdir(parents=True)
    (changed / "overlay/etc/depmod.d/test.conf").write_text("search updates built-in\n")
    again = run_build(changed, tmp_path / "again", cache)
    assert "postinst hooks: from the cache" not in again and "customize" in stages_run(again)
    assert "depmod: from the cache" not in again


def test_a_package_added_runs_the_packages_stage_alone_and_gives_the_bytes_of_a_cold_build(
    project: Path, reference: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The config's own package: installed over the cached bootstrap, downloading only
    what is new, and the image is the one a cold build (both installs run) makes."""
    _, cache, _ = reference
    debs_before = {p.name for p in (cache / "debs").glob("*.deb")}
    assert len(debs_before) > 100, "the cold build kept its downloads"
    warm = run_build(project, tmp_path / "warm", cache, "--set", "packages=[jq]")
    assert stages_from_cache(warm) == {"bootstrap"}
    assert stages_run(warm) == {"packages", "customize", "filesystems", "disk"}
    # mmdebstrap installed over the cached bootstrap in place, not over a copy of it
    assert re.search(IN_PLACE.format("bootstrap"), (tmp_path / "warm/build.log").read_text())
    new = {p.name for p in (cache / "debs").glob("*.deb")} - debs_before
    assert any(n.startswith("jq_") for n in new) and len(new) <= 5, new
    cold = run_build(
        project, tmp_path / "cold", tmp_path / "empty-cache", "--shared-debs", str(cache / "debs"),
        "--set", "packages=[jq]",
    )  # fmt: skip
    assert "from the cache" not in cold and "bootstrap" in stages_run(cold)
    image = tmp_path / "warm/cached.img"
    assert image.read_bytes() == (tmp_path / "cold/cached.img").read_bytes()
    root = f"{image}?offset={offset(image, 1)[0]}"
    listed = subprocess.run(["debugfs", "-R", "stat /usr/bin/jq", root], capture_output=True, text=True)
    assert "Type: regular" in listed.stdout, listed.stderr
    # the host's resolver and name are not left in the image by the second install
    hostname = subprocess.run(["debugfs", "-R", "cat /etc/hostname", root], capture_output=True, text=True)
    assert hostname.stdout == "cached\n"


def kill_during(project: Path, out: Path, cache: Path, marker: str, delay: float) -> None:
    """Start a build, SIGKILL it (and everything it started) ``delay`` s after ``marker``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagesmith", "build", str(project / "image.yaml"), "-o", str(out),
         "--cache-dir", str(cache)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = threading.Event()

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(marker):
                seen.set()

    threading.Thread(target=watch, daemon=True).start()
    assert seen.wait(600), f"the build never reached {marker!r}"
    time.sleep(delay)
    assert proc.poll() is None, f"the build ended before it was killed ({marker})"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(out.glob("*.img")), "a killed build leaves no image"


def test_killed_builds_leave_nothing_a_later_build_trusts(
    project: Path, reference: tuple[Path, Path, str], tmp_path: Path
) -> None:
    image, _, _ = reference
    cache, out = tmp_path / "cache", tmp_path / "out"
    for marker, delay in (
        ("▶ bootstrap", 8),
        ("▶ customize", 4),
        ("▶ filesystems", 1),
        ("▶ disk", 0.5),
    ):
        kill_during(project, out, cache, marker, delay)
        for entry in (cache / "entries").iterdir():
            assert (entry / "meta.json").is_file(), f"{entry.name} is in place only when complete"
    run_build(project, out, cache)
    assert (out / "cached.img").read_bytes() == image.read_bytes(), "same image as the uninterrupted build"
    assert [p.name for p in (cache / "tmp").iterdir() if not p.name.startswith(str(os.getpid()))] == []
    assert not list(out.glob(".imagesmith-work-*")), "the killed builds' work directories are gone"


def test_two_builds_at_once_make_each_stage_once(
    project: Path, reference: tuple[Path, Path, str], tmp_path: Path
) -> None:
    image, _, _ = reference
    cache = tmp_path / "cache"
    logs: dict[int, str] = {}

    def one(number: int) -> None:
        logs[number] = run_build(project, tmp_path / f"out{number}", cache)

    threads = [threading.Thread(target=one, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(logs) == 2
    assert sum("bootstrap" in stages_run(log) for log in logs.values()) == 1, (
        "one bootstraps, one waits and reuses"
    )
    for number in (1, 2):
        assert (tmp_path / f"out{number}" / "cached.img").read_bytes() == image.read_bytes()
