"""host/overlay.py: a cache entry used in place under an overlay mount (the parts that
need no mount; the e2e cache and rootless tests rebuild over real ones)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagesmith.disk.fs.base import tree_usage
from imagesmith.errors import ImagesmithError
from imagesmith.host import overlay
from imagesmith.host.run import Runner


def test_the_options_name_the_three_directories_and_refuse_what_they_cannot_carry() -> None:
    given = overlay.options(Path("/c/e/rootfs"), Path("/w/rootfs.upper"), Path("/w/rootfs.overlay-work"),
                            userxattr=False)  # fmt: skip
    assert given == "lowerdir=/c/e/rootfs,upperdir=/w/rootfs.upper,workdir=/w/rootfs.overlay-work,index=on"
    assert overlay.options(Path("/a"), Path("/b"), Path("/c"), userxattr=True) == (
        "lowerdir=/a,upperdir=/b,workdir=/c,userxattr"
    )
    for bad in ("/cache,x/e", "/cache:x/e", "/cache\\x/e"):
        assert overlay.options(Path(bad), Path("/b"), Path("/c"), userxattr=False) is None


def test_only_the_namespace_a_build_made_for_itself_is_mounted_in(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.delenv(overlay.NAMESPACE, raising=False)
    assert not overlay.available()
    lower = tmp_path / "lower"
    lower.mkdir()
    assert overlay.layer(Runner(), lower, tmp_path / "rootfs") is False  # the caller copies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lower"]  # and nothing was made
    monkeypatch.setenv(overlay.NAMESPACE, str(os.stat("/proc/self/ns/mnt").st_ino))
    assert overlay.available()  # this process's (a child of the build shares it)
    monkeypatch.setenv(overlay.NAMESPACE, "1")
    assert not overlay.available()  # another namespace's: never the host's by mistake


class _Grown:
    """A directory entry whose directories report the blocks a long history left them."""

    def __init__(self, entry: os.DirEntry[str]) -> None:
        self.entry, self.name, self.path = entry, entry.name, entry.path

    def __getattr__(self, name: str) -> object:
        return getattr(self.entry, name)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        info = self.entry.stat(follow_symlinks=follow_symlinks)
        if not self.entry.is_dir(follow_symlinks=False):
            return info
        fields = list(info)
        return os.stat_result((*fields[:10],), {"st_blocks": info.st_blocks + 4096, "st_blksize": 4096})


def test_a_directory_counts_by_its_names_not_by_the_blocks_its_history_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    for tree in (grown, fresh):
        (tree / "d").mkdir(parents=True)
        (tree / "d" / "kept").write_bytes(b"x" * 5000)
    for number in range(600):  # on ext4 the directory grows past one block and never shrinks back
        (grown / "d" / f"temporary-file-{number:04}").touch()
    for number in range(600):
        (grown / "d" / f"temporary-file-{number:04}").unlink()
    assert tree_usage(grown) == tree_usage(fresh)
    # on any filesystem: directories that report 2 MiB more blocks each count the same
    usage, scandir = tree_usage(fresh), os.scandir

    class Listing:
        def __init__(self, path: Path) -> None:
            self.listed = scandir(path)

        def __enter__(self) -> list[_Grown]:
            return [_Grown(entry) for entry in self.listed.__enter__()]

        def __exit__(self, *exc: object) -> None:
            self.listed.__exit__(None, None, None)

    monkeypatch.setattr(os, "scandir", Listing)
    assert tree_usage(fresh).blocks != 0 and tree_usage(fresh) == usage
    many = tmp_path / "many"
    many.mkdir()
    for number in range(600):
        (many / f"temporary-file-{number:04}").touch()
    assert tree_usage(many).blocks == 600 * 32 // 4096 * 4096 + 4096  # 32 bytes an entry, in blocks


def merged_view(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A lower layer whose ``bin/tool`` and ``bin/tool-1.0`` are one file, and a plain
    directory standing for the merged view: the links as a user namespace's overlayfs
    leaves them after ``bin/tool`` was changed (copied up, with its origin recorded)."""
    lower, target = tmp_path / "lower", tmp_path / "rootfs"
    upper = tmp_path / ("rootfs" + overlay.UPPER)
    for tree in (lower, target, upper):
        (tree / "bin").mkdir(parents=True)
    (lower / "bin/tool").write_text("old\n")
    os.link(lower / "bin/tool", lower / "bin/tool-1.0")
    (upper / "bin/tool").write_text("new\n")
    os.setxattr(upper / "bin/tool", "user.overlay.origin", b"x")
    (target / "bin/tool").write_text("new\n")
    (target / "bin/tool-1.0").write_text("old\n")
    return lower, target, upper


def test_a_file_changed_by_one_name_is_seen_by_its_other_names(tmp_path: Path) -> None:
    lower, target, _ = merged_view(tmp_path)
    overlay.rejoin_links(Runner(), target, lower)
    assert os.stat(target / "bin/tool-1.0").st_ino == os.stat(target / "bin/tool").st_ino
    assert (target / "bin/tool-1.0").read_text() == "new\n"
    assert (lower / "bin/tool-1.0").read_text() == "old\n"  # the cache entry is never written


def test_a_name_given_a_new_file_stays_a_file_of_its_own(tmp_path: Path) -> None:
    lower, target, upper = merged_view(tmp_path)
    (upper / "bin/tool-1.0").write_text("replaced\n")  # a rename over it: no origin
    (target / "bin/tool-1.0").write_text("replaced\n")
    overlay.rejoin_links(Runner(), target, lower)
    assert (target / "bin/tool-1.0").read_text() == "replaced\n"
    assert os.stat(target / "bin/tool-1.0").st_ino != os.stat(target / "bin/tool").st_ino


def test_both_names_changed_differently_is_an_error_not_a_guess(tmp_path: Path) -> None:
    lower, target, upper = merged_view(tmp_path)
    (upper / "bin/tool-1.0").write_text("other\n")
    os.setxattr(upper / "bin/tool-1.0", "user.overlay.origin", b"x")
    (target / "bin/tool-1.0").write_text("other\n")
    with pytest.raises(ImagesmithError, match="changed separately") as caught:
        overlay.rejoin_links(Runner(), target, lower)
    assert "--no-cache" in (caught.value.hint or "")


def test_the_lower_layer_is_walked_only_when_a_linked_file_was_copied_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower, target, upper = merged_view(tmp_path)
    os.removexattr(upper / "bin/tool", "user.overlay.origin")  # a new file, not a copy up
    (upper / "etc").mkdir()
    (upper / "etc/motd").write_text("hi\n")
    os.setxattr(upper / "etc/motd", "user.overlay.origin", b"x")  # copied up, one name only
    (lower / "etc").mkdir()
    (lower / "etc/motd").write_text("old\n")
    walked: list[Path] = []

    def links(path: Path) -> dict[int, list[str]]:
        walked.append(path)
        return {}

    monkeypatch.setattr(overlay, "_links", links)
    overlay.rejoin_links(Runner(), target, lower)
    assert walked == []
    os.setxattr(upper / "bin/tool", "user.overlay.origin", b"x")
    overlay.rejoin_links(Runner(), target, lower)
    assert walked == [lower]


def test_a_tree_the_build_left_alone_is_the_lower_layer_s(tmp_path: Path) -> None:
    upper = tmp_path / "rootfs.upper"
    (upper / "usr/lib").mkdir(parents=True)  # copied up: something else in /usr/lib changed
    (upper / "usr/lib/other").write_text("x\n")
    assert overlay.untouched(upper, Path("usr/lib/modules/6.12"))
    assert overlay.untouched(upper, Path("boot"))
    (upper / "usr/lib/modules/6.12").mkdir(parents=True)
    (upper / "usr/lib/modules/6.12/modules.dep").write_text("\n")
    assert not overlay.untouched(upper, Path("usr/lib/modules/6.12"))
    assert not overlay.untouched(upper, Path("usr/lib/modules/6.12/modules.dep"))
    assert overlay.untouched(upper, Path("usr/lib/modules/6.13"))
    os.setxattr(upper / "usr/lib/modules", "user.overlay.opaque", b"y")  # made anew: lower hidden
    assert not overlay.untouched(upper, Path("usr/lib/modules/6.13"))
    (upper / "boot").write_text("")  # a file (or a whiteout) over a directory of the lower layer
    assert not overlay.untouched(upper, Path("boot/firmware"))
    assert not overlay.untouched(upper, Path("."))
