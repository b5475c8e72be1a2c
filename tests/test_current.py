"""Outputs already current (build/current.py): what makes a record hold, and what breaks it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from imagesmith.build import current
from imagesmith.cache import Cache
from imagesmith.config.load import load_spec
from imagesmith.stages.plan import StagePlan


@pytest.fixture
def published(tmp_path: Path) -> tuple[Cache, Path, list[Path]]:
    cache = Cache(tmp_path / "cache")
    out = tmp_path / "out"
    out.mkdir()
    files = []
    for name, text in (("x.img", "image"), ("manifest.json", "{}"), ("SHA256SUMS", "sums")):
        (out / name).write_text(text)
        files.append(out / name)
    current.record(cache, out, "key-1", files, {"label": "dos"})
    time.sleep(0.02)  # past the clock tick of the writes: a kernel without fine change times has one
    return cache, out, files


def test_untouched_outputs_with_the_same_key_are_current(published: tuple[Cache, Path, list[Path]]) -> None:
    cache, out, _ = published
    found = current.current(cache, out, "key-1")
    assert found is not None and list(found["files"]) == ["x.img", "manifest.json", "SHA256SUMS"]
    assert found["table"] == {"label": "dos"}
    assert current.current(cache, out, "key-2") is None  # other inputs
    assert current.current(cache, out.parent / "elsewhere", "key-1") is None  # another directory


CHANGES = ["write", "same bytes rewritten", "chmod", "replaced", "removed", "times set"]


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_a_published_file_breaks_the_record(
    published: tuple[Cache, Path, list[Path]], change: str
) -> None:
    cache, out, files = published
    image = files[0]
    if change == "write":
        with open(image, "r+b") as handle:
            handle.write(b"I")
    elif change == "same bytes rewritten":
        image.write_text("image")
    elif change == "chmod":
        image.chmod(0o600)
    elif change == "replaced":
        (out / "new").write_text("image")
        os.replace(out / "new", image)
    elif change == "removed":
        image.unlink()
    elif change == "times set":  # a program can set the modification time back, not the change time
        info = image.stat()
        image.write_text("IMAGE")
        os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert current.current(cache, out, "key-1") is None


def test_a_forgotten_record_holds_nothing(published: tuple[Cache, Path, list[Path]]) -> None:
    cache, out, _ = published
    cache.forget_published(out)
    assert current.current(cache, out, "key-1") is None
    current.record(cache, out, "key-1", [out / "x.img"], {})
    cache.clear()
    assert current.current(cache, out, "key-1") is None


def test_the_release_key_follows_stages_tools_and_signing_keys(tmp_path: Path) -> None:
    (tmp_path / "img.yaml").write_text("name: x\ndevice: qemu-amd64\nlayers: [base]\n")
    spec = load_spec(tmp_path / "img.yaml")
    plans = [StagePlan("bootstrap", {}, key="a"), StagePlan("disk", {}, key="b")]
    signing = tmp_path / "signing.pem"
    signing.write_text("one")
    salt = b"s" * 32

    def key(**changes: object) -> str:
        args: dict[str, object] = {"plans": plans, "spec": spec, "tools": {"mtools": "1"},
                                   "signing_key": signing, "salt": salt, **changes}  # fmt: skip
        return current.release_key(**args)  # type: ignore[arg-type]

    base = key()
    assert key() == base
    assert key(plans=[plans[0], StagePlan("disk", {}, key="c")]) != base  # any stage's inputs
    assert key(tools={"mtools": "2"}) != base  # the host tools the manifest names
    assert key(signing_key=None) != base
    assert key(salt=b"t" * 32) != base  # the key file enters as an HMAC only
    signing.write_text("two")
    assert key() != base
    assert "one" not in base and "two" not in key()


def test_an_unreadable_key_is_a_clear_error(tmp_path: Path) -> None:
    from imagesmith.errors import ImagesmithError

    (tmp_path / "img.yaml").write_text("name: x\ndevice: qemu-amd64\nlayers: [base]\n")
    spec = load_spec(tmp_path / "img.yaml")
    with pytest.raises(ImagesmithError, match="cannot read the key"):
        current.release_key([StagePlan("disk", {}, key="b")], spec, {}, tmp_path / "gone.pem", b"s")
