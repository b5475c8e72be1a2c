"""NAME.raucb: a RAUC update bundle of slot A's root filesystem (and boot filesystem),
signed with the config's update key, checked against the device's keyring once made.

The slot images are the ones in the disk image, byte for byte; the bundle is a verity
bundle (RAUC checks every block it installs). It is made by every build: its CMS
signature carries the time it was made, so two builds give two bundles with the same
payload and different signatures.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from imagesmith.config.facts import update_compatible
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner
from imagesmith.outputs.base import Output, Release
from imagesmith.outputs.files import sha256

SUFFIX = ".raucb"


def raucm(release: Release, compatible: str, images: dict[str, str]) -> str:
    lines = [
        "[update]",
        f"compatible={compatible}",
        f"version={release.created:%Y.%m.%d-%H%M%S}",
        f"build={sha256(release.image)[:16]}",
        "",
        "[bundle]",
        "format=verity",
    ]
    for slot_class, filename in images.items():
        lines += ["", f"[image.{slot_class}]", f"filename={filename}"]
    return "\n".join(lines) + "\n"


def _place(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the same filesystem: no copy of a root image
    except OSError:
        shutil.copyfile(source, target)


class Bundle(Output):
    name = "bundle"

    def wanted(self, release: Release) -> bool:
        return release.spec.config.update is not None

    def make(self, release: Release) -> list[Path]:
        spec, update = release.spec, release.spec.config.update
        assert update is not None
        content = release.work / "bundle-content"
        if content.exists():
            shutil.rmtree(content)
        content.mkdir()
        images = {"rootfs": "rootfs.ext4"}
        _place(release.partitions[spec.layout.root.name], content / "rootfs.ext4")
        boot = spec.layout.role("boot-a")
        if boot is not None:
            images["bootfs"] = "bootfs.vfat"
            _place(release.partitions[boot.name], content / "bootfs.vfat")
        (content / "manifest.raucm").write_text(
            raucm(release, update_compatible(spec), images), encoding="utf-8"
        )
        target = release.work / f"{spec.config.name}{SUFFIX}"
        release.runner.run(
            ["rauc", "bundle", f"--cert={update.cert}", f"--key={update.key}", str(content), str(target)],
            name="rauc bundle",
            hint="the key must be the certificate's, in PEM, without a passphrase",
        )
        release.runner.run(
            ["rauc", "info", f"--keyring={update.keyring or update.cert}", str(target)],
            name="rauc info (the bundle against the device's keyring)",
            hint="the keyring the image carries does not trust the certificate that signed the bundle",
        )
        shutil.rmtree(content)
        return [target]


def how_to_install(bundle: Path) -> str:
    return (
        f"to update a device: copy {bundle.name} to it and run `rauc install {bundle.name}` there, "
        "then reboot into the new slot"
    )


def refused(runner: Runner, bundle: Path, keyring: Path) -> str | None:
    """Why RAUC, trusting only ``keyring``, refuses ``bundle`` (None: it accepts it)."""
    try:
        runner.run(["rauc", "info", f"--keyring={keyring}", str(bundle)], capture=True, name="rauc info")
    except ImagesmithError as exc:
        lines = [line for line in (exc.details or exc.message).splitlines() if line.strip()]
        return lines[-1].strip() if lines else "rauc info failed"
    return None


OUTPUT = Bundle()
