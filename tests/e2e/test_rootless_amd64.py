"""A build by an ordinary user (subordinate ids, no sudo) against the same build by root.

The user is made by the README's test command (`./dev test`): a system user with a
subordinate id range, set up by `imagesmith doctor --fix --user imagesmith-test`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagesmith import quick

from .conftest import REPO, Built, build, tree

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="compares with a build by root: run as root, as ./dev test does"
    ),
]
USER = "imagesmith-test"
DATA = Path(__file__).parent / "data" / "amd64"
OPTIONS = ("--variant", "test", "--set", "variables.site=pipeline")


def user_build(base: Path, out: str, *options: str) -> str:
    """``imagesmith build`` of the project by the user, into ``base/out`` with the user's
    cache; what it printed."""
    command = [sys.executable, "-m", "imagesmith", "build", str(base / "project" / "image.yaml"), *options]
    command += ["-o", str(base / out), "--cache-dir", str(base / "cache")]
    done = subprocess.run(
        ["runuser", "-u", USER, "--", "env", f"HOME={base}", *command],
        cwd=REPO, capture_output=True, text=True, timeout=3000,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


@pytest.fixture(scope="module")
def builds() -> Iterator[tuple[Built, Built, Path]]:
    try:
        account = pwd.getpwnam(USER)
    except KeyError:
        pytest.fail(f"no user {USER}: `./dev test` makes it (see the dev script)")
    base = Path(tempfile.mkdtemp(prefix="imagesmith-rootless-"))  # the user cannot enter pytest's tmp
    try:
        os.chmod(base, 0o755)
        project = base / "project"
        shutil.copytree(DATA, project, symlinks=True)
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", "release.pem"],
                       cwd=project / "secrets", check=True, capture_output=True)  # fmt: skip
        for path in [base, *base.rglob("*")]:
            os.lchown(path, account.pw_uid, account.pw_gid)
        # after the chown, which clears setuid bits
        (project / "overlay/usr/local/bin/app-tool").chmod(0o4755)
        (project / "overlay/etc/app/app.conf").chmod(0o640)
        (project / "scripts/host.sh").chmod(0o755)
        as_root = build(project / "image.yaml", base / "by-root", *OPTIONS)
        user_build(base, "by-user", *OPTIONS)
        image = base / "by-user" / "pipeline.img"
        yield as_root, Built(base / "by-user", image, as_root.table), base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_user_build_ran_unprivileged_with_its_own_ids(builds: tuple[Built, Built, Path]) -> None:
    _, by_user, base = builds
    account = pwd.getpwnam(USER)
    # the outputs belong to the user, not to root
    for path in by_user.output.iterdir():
        assert path.stat().st_uid == account.pw_uid, path
    # the cached rootfs: root's files are the user's, a system user's are in the subordinate range
    rootfs = next((base / "cache" / "entries").glob("bootstrap-*")) / "rootfs"
    assert (rootfs / "etc" / "passwd").stat().st_uid == account.pw_uid
    start = next(int(line.split(":")[1]) for line in Path("/etc/subgid").read_text().splitlines()
                 if line.startswith(f"{USER}:"))  # fmt: skip
    assert (rootfs / "etc" / "shadow").stat().st_gid == start + 42 - 1  # group shadow is 42 in the image


def test_every_path_has_the_same_owner_group_mode_and_type(builds: tuple[Built, Built, Path]) -> None:
    by_root, by_user, _ = builds
    root_tree = tree(by_root.image, by_root.partition_offset(1))
    user_tree = tree(by_user.image, by_user.partition_offset(1))
    assert len(root_tree) > 10000
    differing = sorted(p for p in root_tree.keys() | user_tree.keys() if root_tree.get(p) != user_tree.get(p))
    assert differing == []
    # the kinds of ownership a rootless build could lose, present in both
    assert root_tree["/usr/bin/su"][0] & 0o4000  # setuid root
    assert root_tree["/usr/local/bin/app-tool"][0] == 0o104755
    assert root_tree["/etc/app/owned.conf"][1:] == (1200, 4)  # ops:adm from the config
    assert root_tree["/etc/shadow"][1:] == (0, 42)  # root:shadow
    assert root_tree["/dev/console"] == (0o020600, 0, 0)  # a device node, made without mknod
    assert any(uid not in (0, 1200) for _, uid, _ in root_tree.values())  # system users own files


def test_the_images_are_byte_identical(builds: tuple[Built, Built, Path]) -> None:
    by_root, by_user, _ = builds
    for name in ("pipeline.img", "pipeline.spdx.json", "pipeline.cdx.json", "manifest.json"):
        assert (by_root.output / name).read_bytes() == (by_user.output / name).read_bytes(), name


def test_a_rebuild_by_the_user_uses_the_cached_rootfs_in_place_and_gives_root_s_bytes(
    builds: tuple[Built, Built, Path],
) -> None:
    """Another hostname: customize runs again over the user's cached installs, which an
    overlay in the user's own namespaces puts under the work directory's rootfs (no copy)."""
    _, _, base = builds
    options = ("--variant", "test", "--set", "variables.site=second")
    as_root = build(base / "project" / "image.yaml", base / "by-root-2", *options)
    stages = re.findall(r"^▶ .*", user_build(base, "by-user-2", *options), re.M)
    assert "▶ packages: from the cache" in stages, stages
    log = (base / "by-user-2" / "build.log").read_text()
    in_place = r"rootfs: packages-\w+ in place, the build's changes on top \(overlay\)"
    assert re.search(in_place, log), log[-3000:]
    for name in ("pipeline.img", "manifest.json"):
        assert (as_root.output / name).read_bytes() == (base / "by-user-2" / name).read_bytes(), name
    assert not list((base / "by-user-2").glob(".imagesmith-work-*")), "the work directory is gone"
    # the same call again: answered by the user's own process, before any user namespace,
    # from what the build inside one recorded (quick.py)
    again = user_build(base, "by-user-2", *options)
    assert quick.LABEL in again, again[-3000:]
    assert quick.LABEL in (base / "by-user-2" / "build.log").read_text()


def test_the_user_clears_the_cache_holding_files_of_subordinate_ids(
    builds: tuple[Built, Built, Path],
) -> None:
    _, _, base = builds
    entries = base / "cache" / "entries"
    assert any(entries.iterdir())
    done = subprocess.run(
        ["runuser", "-u", USER, "--", sys.executable, "-m", "imagesmith", "cache", "clear", "--cache-dir",
         str(base / "cache")],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list(entries.iterdir()) == []
