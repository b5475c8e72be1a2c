"""Signing SHA256SUMS and `verify`: a flipped byte or a replaced signature is named."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagesmith.cli import main
from imagesmith.errors import ImagesmithError
from imagesmith.outputs import files, sign
from imagesmith.outputs.files import checksums


def keypair(directory: Path, name: str) -> tuple[Path, Path]:
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True)
    return private, public


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    for name, content in (("demo.img", b"\0" * 4096 + b"image"), ("manifest.json", b"{}\n")):
        (out / name).write_bytes(content)
    checksums([out / "demo.img", out / "manifest.json"], out / "SHA256SUMS")
    private, public = keypair(tmp_path, "release")
    sign.sign(out / "SHA256SUMS", private, out / sign.SIG)
    return out, public


def test_a_good_build_verifies_and_openssl_agrees(signed: tuple[Path, Path]) -> None:
    out, public = signed
    report = sign.verify(out, public)
    assert report.ok and report.signature == "good" and report.checked == ["demo.img", "manifest.json"]
    subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin",
         "-in", str(out / "SHA256SUMS"), "-sigfile", str(out / sign.SIG)],
        check=True, capture_output=True,
    )  # fmt: skip


def test_one_flipped_byte_is_named(signed: tuple[Path, Path]) -> None:
    out, public = signed
    with open(out / "demo.img", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\1")
    result = CliRunner().invoke(main, ["verify", str(out), "--key", str(public)])
    assert result.exit_code == 1
    assert "FAILED  demo.img: checksum differs" in result.output and "ok      manifest.json" in result.output


def test_a_replaced_signature_is_named(signed: tuple[Path, Path], tmp_path: Path) -> None:
    out, public = signed
    other, _ = keypair(tmp_path, "other")
    sign.sign(out / "SHA256SUMS", other, out / sign.SIG)
    report = sign.verify(out, public)
    assert [name for name, _ in report.failed] == [sign.SIG]
    result = CliRunner().invoke(main, ["verify", str(out), "--key", str(public)])
    assert result.exit_code == 1 and "SHA256SUMS.sig" in result.output


def test_without_a_key_the_signature_is_reported_unchecked(signed: tuple[Path, Path]) -> None:
    out, _ = signed
    assert sign.verify(out, None).signature == "not checked"
    (out / "demo.img").unlink()
    assert sign.verify(out, None).failed == [("demo.img", "missing")]


def test_keys_must_be_ed25519(tmp_path: Path) -> None:
    rsa = tmp_path / "rsa.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "rsa", "-out", str(rsa)], check=True, capture_output=True
    )
    with pytest.raises(ImagesmithError, match="must be an Ed25519 key") as info:
        sign.load_private_key(rsa)
    assert info.value.hint and "genpkey -algorithm ed25519" in info.value.hint
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ImagesmithError, match="not a PEM private key"):
        sign.load_private_key(tmp_path / "junk.pem")


def test_an_empty_or_cut_sha256sums_fails_and_says_nothing_was_signed(signed: tuple[Path, Path]) -> None:
    out, _ = signed
    (out / sign.SIG).unlink()
    (out / "SHA256SUMS").write_text("")
    assert ("SHA256SUMS", "names no file") in sign.verify(out, None).failed
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 1
    assert "no signature was checked (there is no SHA256SUMS.sig)" in result.output
    # the image's line taken out: the rest still matches, but the image is not vouched for
    checksums([out / "manifest.json"], out / "SHA256SUMS")
    failed = sign.verify(out, None).failed
    assert ("SHA256SUMS", "names no image") in failed and ("demo.img", "not named in SHA256SUMS") in failed
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 1


def test_a_good_unsigned_build_passes_with_a_plain_note(signed: tuple[Path, Path]) -> None:
    out, _ = signed
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 0
    assert (
        "no signature was checked (SHA256SUMS.sig is there: give the public key with --key" in result.output
    )


def test_a_digest_read_ahead_is_the_one_asked_for_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import threading

    image = tmp_path / "a.img"
    image.write_bytes(b"data" * 100_000)
    files.hash_ahead(image)
    files.hash_ahead(image)  # once is enough
    assert len([t for t in threading.enumerate() if t.name == "sha256 a.img"]) <= 1
    for ahead in list(files._AHEAD.values()):
        ahead.result()
    read: list[Path] = []

    def again(path: Path) -> str:
        read.append(path)
        return ""

    monkeypatch.setattr(files, "file_sha256", again)
    assert files.sha256(image) == hashlib.sha256(image.read_bytes()).hexdigest()
    assert read == []  # not read again
    monkeypatch.undo()
    image.write_bytes(b"other")  # another version of the file: read again
    files.hash_ahead(image)
    assert files.sha256(image) == hashlib.sha256(b"other").hexdigest()


def test_an_image_flushed_in_the_background_is_waited_for_before_it_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Callable[[str, str], Path]
) -> None:
    import os
    import threading

    from imagesmith.build.pipeline import publish
    from imagesmith.config.load import load_spec
    from imagesmith.outputs import handlers

    image = tmp_path / "a.img"
    image.write_bytes(b"data")
    release = threading.Event()
    synced: list[int] = []

    def slow_fsync(fd: int) -> None:
        release.wait(5)
        synced.append(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    files.flush_ahead(image)
    threading.Timer(0.2, release.set).start()
    out = tmp_path / "out"
    out.mkdir()
    raw = next(h for h in handlers.HANDLERS if h.name == "image")
    placed = publish([(raw, [image])], load_spec(write("a.yaml", "name: a\ndevice: qemu-amd64\n")), out)
    assert synced and placed == [out / "a.img"], "on disk before it has its published name"
    files.flushed(out / "a.img")  # nothing left to wait for
