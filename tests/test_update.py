"""RAUC update bundles and RAUC in the image: config checks, system.conf, and real bundles
made and checked with the host's rauc from small slot images (no image build)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imagesmith.config.facts import packages
from imagesmith.config.load import load_spec
from imagesmith.disk import ids
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner
from imagesmith.outputs import bundle
from imagesmith.outputs.base import Release
from imagesmith.outputs.inventory import Inventory
from imagesmith.stages import update

Write = Callable[[str, str], Path]
MiB = 1024 * 1024


def key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A development key and certificate, made as the README says."""
    key, cert = directory / f"{name}.key.pem", directory / f"{name}.cert.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
            "-out", str(cert), "-days", "3650", "-subj", f"/CN={name}"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    return key, cert


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("update-keys")
    (key, cert), (other_key, other_cert) = key_pair(work, "dev"), key_pair(work, "other")
    return {"key": key, "cert": cert, "other_key": other_key, "other_cert": other_cert}


def config(
    write: Write, keys: dict[str, Path], layout: str = "ab-tryboot", extra: str = "", device: str = "pi4"
) -> Path:
    kernel = "\nkernel: raspberrypi" if device in ("pi4", "pi5") else ""
    return write(
        "u.yaml",
        f"name: u\ndevice: {device}{kernel}\nlayout: {layout}\nread_only: true\n"
        f"update: {{key: {keys['key']}, cert: {keys['cert']}{extra}}}\n",
    )


def test_the_image_s_system_conf_names_both_slots_and_the_tryboot_backend(
    write: Write, keys: dict[str, Path]
) -> None:
    spec = load_spec(config(write, keys))
    update.check(spec)
    conf = update.system_conf(spec)
    assert "compatible=u-pi4\nbootloader=custom\nmountprefix=/run/rauc/mnt\n" in conf
    assert (
        "bootloader-custom-backend=/usr/sbin/imagesmith-tryboot\n" in conf
        and "path=/etc/rauc/keyring.pem" in conf
    )
    for index, (root, boot, name) in enumerate(((4, 2, "A"), (5, 3, "B"))):
        assert (f"[slot.rootfs.{index}]\ndevice=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, root)}\n"
                f"type=ext4\nbootname={name}\n") in conf  # fmt: skip
        assert (
            f"[slot.bootfs.{index}]\ndevice=/dev/disk/by-partuuid/{ids.partuuid(spec.identity, boot)}\n"
            in conf
        )
    assert {"rauc", "rauc-service", "mtools"} <= set(packages(spec))


@pytest.mark.parametrize(
    ("layout", "device", "said"),
    [
        ("simple", "pi4", "need A/B slots"),
        ("ab", "pi5", "U-Boot's boot counter, and the catalog has no U-Boot for device pi5"),
    ],
)
def test_bundles_need_slots_and_a_way_to_switch(
    write: Write, keys: dict[str, Path], layout: str, device: str, said: str
) -> None:
    spec = load_spec(config(write, keys, layout, device=device))
    with pytest.raises(ImagesmithError, match=said) as caught:
        update.check(spec)
    assert caught.value.exit_code == 2 and "u.yaml:6" in str(caught.value.location)


def test_a_missing_key_says_how_to_make_one(write: Write, keys: dict[str, Path], tmp_path: Path) -> None:
    missing = {**keys, "key": tmp_path / "nowhere.key.pem"}
    with pytest.raises(ImagesmithError, match="update signing key not found") as caught:
        load_spec(config(write, missing))
    assert caught.value.exit_code == 2 and "openssl req -x509 -newkey rsa:4096 -nodes" in (
        caught.value.hint or ""
    )


def slot_images(work: Path) -> dict[str, Path]:
    root, boot = work / "root-a.ext4", work / "boot-a.vfat"
    for path in (root, boot):
        with open(path, "wb") as handle:
            handle.truncate(8 * MiB)
    tree = work / "tree"
    tree.mkdir()
    (tree / "payload").write_bytes(os.urandom(256 * 1024))  # a bundle's squashfs must hold something
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-F", "-d", str(tree), str(root)], check=True)
    subprocess.run(["mkfs.vfat", str(boot)], check=True, capture_output=True)
    return {"root-a": root, "boot-a": boot}


def test_a_real_bundle_is_signed_and_checked_against_the_keyring(
    write: Write, keys: dict[str, Path], tmp_path: Path
) -> None:
    spec = load_spec(config(write, keys))
    parts = slot_images(tmp_path)
    image = tmp_path / "u.img"
    image.write_bytes(b"image")
    when = datetime(2026, 12, 3, tzinfo=UTC)
    release = Release(spec, Runner(), tmp_path, image, Inventory([], {}, ""), when, partitions=parts)
    [made] = bundle.OUTPUT.make(release)
    assert made.name == "u.raucb" and not (tmp_path / "bundle-content").exists()
    info = subprocess.run(["rauc", "info", f"--keyring={keys['cert']}", "--output-format=shell", str(made)],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "RAUC_MF_COMPATIBLE='u-pi4'" in info and "RAUC_MF_VERSION='2026.12.03-000000'" in info
    assert "RAUC_IMAGE_CLASS_0='rootfs'" in info and "RAUC_IMAGE_CLASS_1='bootfs'" in info
    refused = subprocess.run(
        ["rauc", "info", f"--keyring={keys['other_cert']}", str(made)], capture_output=True
    )
    assert refused.returncode != 0, "a device that trusts another certificate refuses the bundle"


def test_a_keyring_that_does_not_trust_the_signer_fails_the_build(
    write: Write, keys: dict[str, Path], tmp_path: Path
) -> None:
    spec = load_spec(config(write, keys, extra=f", keyring: {keys['other_cert']}"))
    release = Release(spec, Runner(), tmp_path, tmp_path / "u.img", Inventory([], {}, ""),
                      datetime(2026, 12, 3, tzinfo=UTC), partitions=slot_images(tmp_path))  # fmt: skip
    (tmp_path / "u.img").write_bytes(b"image")
    with pytest.raises(ImagesmithError, match="rauc info") as caught:
        bundle.OUTPUT.make(release)
    assert "does not trust the certificate" in (caught.value.hint or "")


def test_verify_checks_each_bundle_s_signer_against_a_keyring(
    write: Write, keys: dict[str, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from imagesmith.cli import main
    from imagesmith.outputs.files import sha256

    spec = load_spec(config(write, keys))
    out = tmp_path / "out"
    out.mkdir()
    image = out / "u.img"
    image.write_bytes(b"image")
    when = datetime(2026, 12, 3, tzinfo=UTC)
    release = Release(
        spec, Runner(), tmp_path, image, Inventory([], {}, ""), when, partitions=slot_images(tmp_path)
    )
    [made] = bundle.OUTPUT.make(release)
    made.rename(out / made.name)
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / n)}  {n}\n" for n in ("u.img", "u.raucb")))

    def verify(*extra: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["verify", str(out), *extra])
        return result.exit_code, result.output

    code, output = verify("--keyring", str(keys["cert"]))
    assert code == 0 and "ok      u.raucb (rauc: signed by a certificate of" in output
    code, output = verify("--keyring", str(keys["other_cert"]))
    assert code == 1 and "FAILED  u.raucb: rauc refuses it with" in output
    code, output = verify()
    assert code == 0 and "u.raucb: its signer was not checked (give the keyring" in output
    assert "rauc install u.raucb" in bundle.how_to_install(out / "u.raucb")
