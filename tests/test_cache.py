"""The stage cache: atomic commits, locks, listing, pruning, clearing."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from imagesmith.cache import Cache
from imagesmith.errors import ImagesmithError


def test_commit_is_atomic_and_a_failed_make_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")

    def broken(directory: Path) -> None:
        (directory / "half").write_text("half-made")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.commit("bootstrap", "k1", broken)
    assert cache.lookup("bootstrap", "k1") is None
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    entry = cache.commit("bootstrap", "k1", lambda d: (d / "rootfs").mkdir(), {"inputs": {"a": "1"}})
    assert entry.meta["inputs"] == {"a": "1"} and (entry.path / "rootfs").is_dir()
    assert cache.lookup("bootstrap", "k1") is not None


def test_a_stage_run_again_on_purpose_replaces_its_entry(tmp_path: Path) -> None:
    """Two builds making one key keep the first entry; a forced run (newer packages from
    --rebuild-from, a re-lock) replaces it, so later builds get what it made."""
    cache = Cache(tmp_path / "c")
    cache.commit("bootstrap", "k1", lambda d: (d / "f").write_text("old"))
    assert (
        cache.commit("bootstrap", "k1", lambda d: (d / "f").write_text("meanwhile")).path / "f"
    ).read_text() == "old"
    entry = cache.commit("bootstrap", "k1", lambda d: (d / "f").write_text("new"), replace=True)
    assert (entry.path / "f").read_text() == "new"
    assert list((tmp_path / "c" / "tmp").iterdir()) == []


def test_an_entry_without_its_meta_is_never_used(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    (tmp_path / "entries" / "disk-k2").mkdir()
    assert cache.lookup("disk", "k2") is None


def test_leftovers_of_a_killed_build_are_removed(tmp_path: Path) -> None:
    Cache(tmp_path)
    dead = tmp_path / "tmp" / "999999999-bootstrap-x"
    dead.mkdir()
    alive = tmp_path / "tmp" / f"{os.getpid()}-bootstrap-y"
    alive.mkdir()
    Cache(tmp_path)
    assert not dead.exists() and alive.exists()


def test_one_key_is_made_once_by_two_builds(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    made: list[int] = []

    def build(number: int) -> None:
        with cache.lock("customize", "k"):
            if cache.lookup("customize", "k") is None:
                time.sleep(0.3)
                made.append(number)
                cache.commit("customize", "k", lambda d: (d / "x").write_text(str(number)))

    threads = [threading.Thread(target=build, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1
    entry = cache.lookup("customize", "k")
    assert entry is not None and (entry.path / "x").read_text() == str(made[0])


def test_list_prune_and_clear(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for number in range(4):
        entry = cache.commit("bootstrap", f"k{number}", lambda d: (d / "f").write_bytes(b"x" * 100_000))
        entry.meta["last_used"] = 1000 + number
        (entry.path / "meta.json").write_text(json.dumps(entry.meta))
    cache.commit("disk", "d1", lambda d: (d / "f").write_bytes(b"y"))
    cache.touch(cache.lookup("disk", "d1"), "/p/image.yaml")  # type: ignore[arg-type]
    assert cache.lookup("disk", "d1").meta["configs"] == ["/p/image.yaml"]  # type: ignore[union-attr]
    removed = cache.prune(keep_last=2)
    assert sorted(e.key for e in removed) == ["k0", "k1"]
    assert sorted(e.key for e in cache.entries()) == ["d1", "k2", "k3"]
    (cache.debs / "a.deb").write_bytes(b"z" * 50_000)
    cache.prune(max_size=150_000)
    assert "k2" not in {e.key for e in cache.entries()}  # least recently used goes first
    count = len(cache.entries())
    (cache.memo / "trees").mkdir()
    (cache.memo / "trees" / "abc").write_text("0" * 64)  # a tree's digest kept for an entry
    assert count > 0 and cache.clear() == count
    assert cache.entries() == [] and list(cache.debs.iterdir()) == [] and list(cache.memo.iterdir()) == []


def test_salt_is_private_and_stable(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    salt = cache.salt
    assert len(salt) == 32 and Cache(tmp_path).salt == salt
    assert (tmp_path / "salt").stat().st_mode & 0o077 == 0


def test_debs_shared_from_another_cache_that_does_not_exist_yet(tmp_path: Path) -> None:
    shared = tmp_path / "main" / "debs"
    cache = Cache(tmp_path / "scratch", debs=shared)
    assert cache.debs == shared and shared.is_dir()
    assert Cache(tmp_path / "own").debs == tmp_path / "own" / "debs"


@pytest.mark.parametrize(
    "layout",
    [
        [],  # empty
        [("hole", 5 * 1024 * 1024)],  # all hole
        [("data", 3000)],  # no hole, not a whole block
        [("hole", 2 * 1024 * 1024 + 17), ("data", 70000), ("hole", 4096 * 3), ("data", 5)],
        [("data", 4096), ("hole", 1024 * 1024 * 3 + 1)],  # ends in a hole
        [("data", 1), ("zeros", 3 * 1024 * 1024), ("data", 2)],  # zeros written as data
    ],
)
def test_digests_skip_holes_and_stay_those_of_the_bytes(
    tmp_path: Path, layout: list[tuple[str, int]]
) -> None:
    """A file's digest reads only its data: holes count as the zeros they read as, so the
    digest is sha256 of the bytes, as `sha256sum` sees them."""
    import hashlib

    from imagesmith.cache.hashing import extents, file_sha256, tree

    path = tmp_path / "file"
    expected = hashlib.sha256()
    with open(path, "wb") as out:
        for kind, size in layout:
            if kind == "hole":
                out.seek(size, os.SEEK_CUR)
                out.truncate(out.tell())
                expected.update(bytes(size))
            else:
                chunk = bytes(size) if kind == "zeros" else bytes((i * 7 + 1) % 251 for i in range(size))
                out.write(chunk)
                expected.update(chunk)
    assert file_sha256(path) == expected.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    with open(path, "rb") as handle:
        ranges = list(extents(handle.fileno()))
    data = sum(size for kind, size in layout if kind != "hole")
    if any(kind == "hole" and size >= 1024 * 1024 for kind, size in layout):
        assert sum(stop - start for start, stop in ranges) < path.stat().st_size  # a hole was skipped
    assert sum(stop - start for start, stop in ranges) >= data
    # a tree's digest does the same: the same file written out whole gives the same digest
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_bytes(path.read_bytes())
    (tmp_path / "one").mkdir()
    os.rename(path, tmp_path / "one" / "file")
    os.chmod(other / "file", os.stat(tmp_path / "one" / "file").st_mode)
    assert tree(tmp_path / "one") == tree(other)


def test_an_entry_a_build_uses_in_place_is_neither_pruned_nor_cleared(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for number in range(3):
        entry = cache.commit("bootstrap", f"k{number}", lambda d: (d / "f").write_bytes(b"x"))
        entry.meta["last_used"] = 1000 + number
        (entry.path / "meta.json").write_text(json.dumps(entry.meta))
    oldest = cache.lookup("bootstrap", "k0")
    assert oldest is not None
    with cache.using(oldest):
        assert [e.key for e in cache.prune(keep_last=1)] == ["k1"]  # k0 is in use: kept
        assert cache.remove(oldest) is False and (oldest.path / "f").is_file()
        assert cache.clear() == 1  # k2 went, k0 stayed
        assert [e.key for e in cache.entries()] == ["k0"]
    assert cache.clear() == 1 and cache.entries() == []


def test_an_entry_in_use_is_never_replaced_nor_trusted_when_damaged(tmp_path: Path) -> None:
    """A stage run again on purpose must not go on with the old entry another build holds,
    and a damaged entry another build holds is an error, not used and not half-removed."""
    cache = Cache(tmp_path)
    entry = cache.commit("bootstrap", "k", lambda d: (d / "f").write_bytes(b"old"))
    with cache.using(entry):
        with pytest.raises(ImagesmithError, match="to be replaced, but another build is using it"):
            cache.commit("bootstrap", "k", lambda d: (d / "f").write_bytes(b"new"), replace=True)
        assert (entry.path / "f").read_bytes() == b"old"
        (entry.path / "f").write_bytes(b"rot")
        with pytest.raises(ImagesmithError, match=r"damaged .* another build is using it"):
            cache.checked("bootstrap", "k", lambda text: None)
        assert (entry.path / "f").is_file()
    notes: list[str] = []
    assert cache.checked("bootstrap", "k", notes.append) is None
    assert "discarded" in notes[0] and cache.lookup("bootstrap", "k") is None


def test_a_build_checks_only_the_parts_of_an_entry_it_reads(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def make(entry: Path) -> None:
        (entry / "rootfs" / "etc").mkdir(parents=True)
        (entry / "rootfs" / "etc" / "motd").write_text("hi\n")
        (entry / "tools").mkdir()
        (entry / "tools" / "depmod").write_text("#!/bin/sh\n")
        (entry / "debs.sha256").write_text("abc  x.deb\n")

    entry = cache.commit("bootstrap", "k", make)
    assert set(entry.meta["part_sha256"]) == {"rootfs", "tools", "debs.sha256"}
    (entry.path / "rootfs" / "etc" / "motd").write_text("changed\n")
    notes: list[str] = []
    # a build that reads its tools alone takes it; one that reads the rootfs does not
    assert cache.checked("bootstrap", "k", notes.append, {"tools", "debs.sha256"}) is not None
    assert notes == []
    assert cache.checked("bootstrap", "k", notes.append, {"rootfs"}) is None
    assert "damaged" in notes[0] and cache.lookup("bootstrap", "k") is None
    again = cache.commit("bootstrap", "k", make)
    shutil.rmtree(again.path / "tools")  # a part gone is damage too, not a traceback
    assert cache.checked("bootstrap", "k", notes.append, {"tools"}) is None


def test_an_entry_recording_no_part_digests_is_checked_whole(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def make(entry: Path) -> None:
        (entry / "tools").mkdir()
        (entry / "f").write_text("a")

    entry = cache.commit("bootstrap", "k", make)
    meta = json.loads((entry.path / "meta.json").read_text())
    del meta["part_sha256"]  # made before entries recorded them
    (entry.path / "meta.json").write_text(json.dumps(meta))
    (entry.path / "f").write_text("b")
    assert cache.checked("bootstrap", "k", lambda text: None, {"tools"}) is None


def test_an_entry_placed_in_the_background_is_whole_or_absent(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    made = threading.Event()

    def make(entry: Path) -> None:
        (entry / "root.ext4").write_bytes(b"x" * 100_000)
        made.set()

    placing = cache.commit_in_background("filesystems", "k", make, {"note": "kept"})
    assert made.is_set(), "make runs before the call returns"
    entry = placing.result()
    assert entry.meta["note"] == "kept" and cache.checked("filesystems", "k", lambda text: None) is not None
    with pytest.raises(OSError):
        cache.commit_in_background("filesystems", "j", lambda d: (_ for _ in ()).throw(OSError("full")))
    with cache.using(entry):  # a replacement refused in the thread: raised to whoever waits
        refused = cache.commit_in_background("filesystems", "k", make, replace=True)
        with pytest.raises(ImagesmithError, match="another build is using it"):
            refused.result()
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == []


def test_a_use_recorded_while_another_build_checks_the_entry_is_no_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metadata is rewritten outside the entry: a check at the same time (the digest
    covers every name in the entry but the metadata) sees no stray file."""
    cache = Cache(tmp_path / "cache")
    entry = cache.commit("customize", "k", lambda d: (d / "rootfs").mkdir(), parts=False)
    assert "part_sha256" not in entry.meta  # read whole: no part digests
    seen: list[str] = []
    real = os.replace

    def replace(source: str, target: str) -> None:  # the moment the new metadata is put in place
        seen.append(str(Path(source).parent))
        assert cache.damage(entry) is None
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    cache.touch(entry, "other.yaml")
    assert seen == [str(cache.root / "tmp")]
