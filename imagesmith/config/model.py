"""Typed models of image configs, layers, devices and layouts (pydantic v2)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from imagesmith.config.overlay import DEFAULT_IGNORE
from imagesmith.disk.layout import ROLES, Layout, Partition, Role
from imagesmith.schema import NAME_RE, Size, Strict, parse_size

__all__ = ["ROLES", "Layout", "Partition", "Role", "Size", "Strict", "parse_size"]

PACKAGE_RE = r"^-?[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?$"
HOSTNAME_RE = r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
USER_RE = r"^[a-z_][a-z0-9_-]{0,31}$"
#: a systemd unit name: never an option (no leading "-"), no path
UNIT_RE = r"^[A-Za-z0-9@_.:\\][A-Za-z0-9@_.:\\-]*$"
GROUP_RE = r"^[a-z_][a-z0-9_-]{0,31}$"
COMPONENT_RE = r"^[a-z0-9][a-z0-9-]*$"
#: one line of a file (cmdline.txt, config.txt): no line break, no NUL
ONE_LINE_RE = r"^[^\n\r\x00]*$"
#: a directory kept on the data partition: absolute, under /var, /home, /srv or /opt, no
#: "..", no space or quote (it is written into a shell script of the initramfs)
PERSIST_RE = r"^/(var|home|srv|opt|root)(/[A-Za-z0-9_.@+-]+)*$"
#: a crypt(3) hash as /etc/shadow holds it: $id$..., nothing that ends the field or line
CRYPT_RE = re.compile(r"\$[0-9a-z]+\$[^\s:\x00]+")


class Distribution(Strict):
    name: Literal["debian"] = "debian"
    suite: str = Field("trixie", pattern=r"^[a-z][a-z0-9-]*$")
    mirror: str = Field("http://deb.debian.org/debian", pattern=r"^(https?|file)://\S+$")
    components: list[Annotated[str, Field(pattern=COMPONENT_RE)]] = Field(default_factory=lambda: ["main"])


class User(Strict):
    name: str = Field(pattern=USER_RE)
    uid: int | None = Field(None, ge=1000, le=59999)
    groups: list[Annotated[str, Field(pattern=GROUP_RE)]] = Field(default_factory=list)
    sudo: bool = False
    shell: str = Field("/bin/bash", pattern=r"^/[^\s:\x00]*$", description="an absolute path, e.g. /bin/sh")
    password_hash: str | None = None
    ssh_authorized_keys: list[str] = Field(default_factory=list)

    @field_validator("password_hash")
    @classmethod
    def _hashed(cls, value: str | None) -> str | None:
        if value == "":
            return None  # e.g. a layer variable left empty: no password
        if value is not None and not CRYPT_RE.fullmatch(value):
            raise ValueError(
                "password_hash must be one crypt(3) hash such as $y$... or $6$... (no ':', space or line "
                "break), never a plain-text password"
            )
        return value


class FileEntry(Strict):
    source: str | None = Field(None, description="a file or directory to copy (relative to this file)")
    content: str | None = Field(None, description="the text of the file `target` (templates allowed)")
    target: str = Field("/", pattern=r"^/")
    owner: str = Field("root:root", pattern=r"^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$")
    mode: str | None = Field(
        None, pattern=r"^0?[0-7]{3,4}$", description="octal mode of the files written, e.g. '0600'"
    )
    ignore: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE),
        description="names not copied from a `source:` directory (a pattern ending in / matches "
        "directories); [] copies everything",
    )

    @model_validator(mode="after")
    def _one_source(self) -> FileEntry:
        if (self.source is None) == (self.content is None):
            raise ValueError("give either `source:` (a file or directory) or `content:` (text), not both")
        if self.content is not None and self.target.endswith("/"):
            raise ValueError("with `content:`, `target:` is the file's path, e.g. /etc/motd")
        return self


class Script(Strict):
    run: str
    in_: Literal["host", "chroot"] = Field("chroot", alias="in")


class Services(Strict):
    enable: list[Annotated[str, Field(pattern=UNIT_RE)]] = Field(default_factory=list)
    disable: list[Annotated[str, Field(pattern=UNIT_RE)]] = Field(default_factory=list)
    mask: list[Annotated[str, Field(pattern=UNIT_RE)]] = Field(default_factory=list)


class Source(Strict):
    """An apt archive besides the distribution's mirror, verified with its own key."""

    name: str = Field(pattern=NAME_RE, description="names the source (its key and pins in the image)")
    url: str = Field(pattern=r"^(https?|file)://\S+$", description="the archive's URL")
    suites: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9./-]*$")]] = Field(
        default_factory=list, description="default: the distribution's suite"
    )
    components: list[Annotated[str, Field(pattern=COMPONENT_RE)]] = Field(default_factory=lambda: ["main"])
    key: str = Field(description="the archive's OpenPGP public key (a file, relative to this file)")
    fingerprint: str | None = Field(
        None,
        pattern=r"^[0-9A-Fa-f]{4}( ?[0-9A-Fa-f]{4}){9}$",
        description="the key's primary fingerprint (40 hex digits): a key file without it is refused",
    )
    packages: list[Annotated[str, Field(pattern=r"^[a-z0-9*][a-z0-9+.*-]*$")]] = Field(
        default_factory=list,
        description="packages (apt patterns such as linux-image-*) taken from this source",
    )
    priority: int = Field(
        100,
        ge=-1,
        le=1000,
        description="apt pin priority of the rest of the source: 100 (the default) installs from it only "
        "what the distribution lacks",
    )


class SourcePart(Source):
    """A source as a layer gives it: the config (or a later layer) may add the rest, such as
    the key, to the source of the same name."""

    url: str | None = Field(None, pattern=r"^(https?|file)://\S+$")  # type: ignore[assignment]
    key: str | None = None  # type: ignore[assignment]


class Imager(Strict):
    """An entry for Raspberry Pi Imager's repository list (``rpi-imager --repo URL``)."""

    url: str = Field(pattern=r"^https?://\S+/$", description="where the files will be served, ending in /")
    name: str | None = Field(None, description="as Imager lists it; default: the image's name")
    description: str = Field("", description="one line under the name")
    icon: str = Field("", description="URL of a 40x40 PNG or SVG")
    website: str | None = None


class Publish(Strict):
    """The files a build publishes besides the SBOMs, manifest and checksums."""

    compress: Literal["none", "xz", "zstd", "gzip"] = Field(
        "none", description="also write NAME.img.xz, .img.zst or .img.gz (reproducible, multithreaded)"
    )
    raw: bool = Field(True, description="publish the raw NAME.img too (false: only the compressed one)")
    imager: Imager | None = Field(None, description="write NAME.rpi-imager.json for Raspberry Pi Imager")

    @model_validator(mode="after")
    def _something_to_flash(self) -> Publish:
        if not self.raw and self.compress == "none":
            raise ValueError("with raw: false, set compress (xz, zstd or gzip): a file must hold the image")
        return self


MODULE_RE = r"^[A-Za-z0-9_-]+$"


def _firmware_path(value: str) -> str:
    """A path under /usr/lib/firmware, with shell wildcards: relative, no "..", one line."""
    if not value or value.startswith("/") or ".." in value.split("/") or "\n" in value or "\0" in value:
        raise ValueError(f"{value!r}: a path relative to /usr/lib/firmware, without '..'")
    return value


FirmwarePath = Annotated[str, AfterValidator(_firmware_path)]


class Slim(Strict):
    """What the image leaves out: files dpkg leaves out (path filters, now and on the device
    later), kernel modules and firmware the device does not use."""

    docs: bool = Field(
        False,
        description="no /usr/share/doc (copyright files are kept: the SBOMs' licences), man or info pages",
    )
    locales: bool = Field(
        False, description="no message translations but those of the configured locale's language"
    )
    modules: bool = Field(
        False,
        description="only the kernel modules the device's catalog entry, keep_modules, /etc/modules, "
        "modules-load.d and the layout's filesystems need, with their dependencies",
    )
    keep_modules: list[Annotated[str, Field(pattern=MODULE_RE)]] = Field(
        default_factory=list, description="with modules: more modules to keep, by name (e.g. usb_storage)"
    )
    firmware: bool = Field(
        False, description="only the firmware files of the device's chips (catalog) and keep_firmware"
    )
    device_trees: bool = Field(
        False, description="only the device trees (and overlays) of the device's board (catalog)"
    )
    initramfs: bool = Field(
        False,
        description="no initramfs: only with a kernel that mounts the root itself (the Raspberry Pi "
        "kernel) and a layout without a data partition",
    )
    keep_firmware: list[FirmwarePath] = Field(
        default_factory=list,
        description="with firmware: more files to keep, paths under /usr/lib/firmware (wildcards allowed)",
    )
    huge_pages: bool = Field(
        False,
        description="no transparent huge pages (transparent_hugepage=never): the kernel then keeps a few MiB "
        "free instead of up to 5% of the RAM (45 MiB of 1 GiB) for making huge pages",
    )


class Update(Strict):
    """Signed RAUC update bundles of the root slot, and RAUC in the image to install them."""

    compatible: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._+-]+$",
        description="RAUC's compatible string: a device installs only bundles that name it; "
        "default: NAME-DEVICE",
    )
    key: str = Field(description="the private key (PEM) that signs bundles; relative to this file")
    cert: str = Field(description="its certificate (PEM); relative to this file")
    keyring: str | None = Field(None, description="the certificate(s) a device trusts (PEM); default: cert")
    attempts: int = Field(
        3,
        ge=1,
        le=15,
        description="boots a slot gets before U-Boot falls back to the other (layouts ab and ab-gpt); "
        "a new slot gets as many",
    )
    health: str | None = Field(
        None,
        min_length=1,
        description="a shell command that must succeed, once the system has reached its target, before "
        "the booted slot is marked good; failing, the device reboots and the boot counter falls",
    )
    watchdog: str | None = Field(
        None,
        pattern=r"^[0-9]+(ms|s|min)$",
        description="systemd's RuntimeWatchdogSec, e.g. 30s: a hung system is reset by the hardware watchdog",
    )


class ImageConfig(Strict):
    """The merged config: what the user wrote over the layers it uses."""

    includes: list[str] = Field(
        default_factory=list, description="config files merged below this one (paths relative to it)"
    )
    layer_paths: list[str] = Field(
        default_factory=list, description="directories of layers, searched after this file's own directory"
    )
    variables: dict[str, Any] = Field(
        default_factory=dict, description="values for variables that layers declare; usable as {{ name }}"
    )
    name: str = Field(pattern=NAME_RE, description="names the image and its output files")
    device: str = Field(pattern=NAME_RE, description="a device from `imagesmith devices`, e.g. pi4")
    layout: str = Field("simple", pattern=NAME_RE, description="a partition layout from the catalog")
    kernel: str | None = Field(
        None,
        pattern=NAME_RE,
        description="one of the device's kernels (`imagesmith devices`); default: its first",
    )
    distribution: Distribution = Field(default_factory=lambda: Distribution())
    sources: list[Source] = Field(
        default_factory=list, description="more apt archives, each with its key; `packages` come from them"
    )
    layers: list[str] = Field(
        default_factory=list, description="layers to use, by name; they may require more"
    )
    packages: list[Annotated[str, Field(pattern=PACKAGE_RE)]] = Field(
        default_factory=list, description='Debian packages to install; "-name" removes one added below'
    )
    hostname: str | None = Field(None, pattern=HOSTNAME_RE, description="defaults to the image name")
    timezone: str = Field(
        "Etc/UTC", pattern=r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$", description="a tz database name"
    )
    locale: str = Field(
        "C.UTF-8", pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9-]+)?(@[a-z]+)?$", description="e.g. en_GB.UTF-8"
    )
    users: list[User] = Field(default_factory=list)
    files: list[FileEntry] = Field(default_factory=list, description="overlay files and directories")
    scripts: list[Script] = Field(default_factory=list, description="run in order, after files")
    services: Services = Field(default_factory=lambda: Services())
    cmdline: list[Annotated[str, Field(pattern=ONE_LINE_RE)]] = Field(
        default_factory=list, description="extra kernel command-line arguments"
    )
    config_txt: list[Annotated[str, Field(pattern=ONE_LINE_RE)]] = Field(
        default_factory=list, description="extra Raspberry Pi config.txt lines"
    )
    read_only: bool = Field(
        False,
        description="the root filesystem is mounted read-only; /etc is an overlay kept on the data "
        "partition, /var one in memory (needs a layout with a data partition, e.g. ab)",
    )
    persist: list[Annotated[str, Field(pattern=PERSIST_RE)]] = Field(
        default_factory=list,
        description="with read_only: directories kept on the data partition across reboots and "
        "updates (bind mounts), e.g. /var/log, /home, /var/lib/myapp",
    )
    update: Update | None = Field(None, description="RAUC update bundles (A/B layouts)")
    slim: Slim = Field(default_factory=lambda: Slim())
    publish: Publish = Field(default_factory=lambda: Publish())
    signing_key: str | None = Field(
        None, description="Ed25519 private key (PEM) that signs SHA256SUMS; relative to this file"
    )

    @field_validator("persist")
    @classmethod
    def _no_dot_parts(cls, value: list[str]) -> list[str]:
        for path in value:
            if any(part in (".", "..") for part in path.split("/")):
                raise ValueError(f"{path!r}: write the path without . or .. parts")
        return value

    @property
    def host_name(self) -> str:
        return self.hostname or self.name


class LayerFile(ImageConfig):
    """A layer: the keys of an image config, all optional, and what names the layer."""

    layer: str = Field(pattern=NAME_RE, description="the layer's name: the file is <layer>.yaml")
    description: str = ""
    requires: list[str] = Field(default_factory=list, description="layers merged before this one")
    provides: list[str] = Field(
        default_factory=list, description="capabilities (e.g. time-sync) that no other layer may also provide"
    )
    conflicts: list[str] = Field(
        default_factory=list, description="layers or capabilities that cannot be in the same image"
    )
    variables: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="declarations: NAME: {type, default, description, required, values, pattern}",
    )
    name: str | None = Field(None, pattern=NAME_RE)  # type: ignore[assignment]
    device: str | None = Field(None, pattern=NAME_RE)  # type: ignore[assignment]
    sources: list[SourcePart] = Field(  # type: ignore[assignment]
        default_factory=list, description="apt archives; merged by name with the config's"
    )


# --- catalog data -------------------------------------------------------------------


class Kernel(Strict):
    """One kernel a device can run, and what it gives on that device."""

    packages: list[str] = Field(min_length=1)
    #: the kernel's serial console when it names the device's UART differently
    console: str | None = None
    #: Raspberry Pi OS boot files: the kernel and initramfs under the names the firmware
    #: loads (kernel8.img, initramfs8), device trees and overlays copied from the package
    image: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    initramfs: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    tryboot: bool = False  # the kernel can ask the firmware for a one-time boot of the other slot
    #: False: its storage and filesystem drivers are built in, so it mounts the root itself
    #: and slim.initramfs may leave the initramfs out
    needs_initramfs: bool = True
    gives: list[str] = Field(default_factory=list)
    lacks: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _paired(self) -> Kernel:
        if (self.image is None) != (self.initramfs is None):
            raise ValueError("give both `image:` and `initramfs:` (the names the firmware loads), or neither")
        return self


class UBoot(Strict):
    """The U-Boot build a device boots through for the A/B boot counter."""

    package: str = Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")
    #: the binary in the image, copied to the boot partition as u-boot.bin
    binary: str = Field(pattern=r"^/usr/lib/u-boot/[A-Za-z0-9_.-]+/u-boot\.bin$")


class Device(Strict):
    device: str = Field(pattern=NAME_RE)
    description: str
    arch: Literal["arm64", "amd64"]
    boot: Literal["raspi-firmware", "direct-kernel"]
    packages: list[str]  # besides the kernel's
    components: list[str] = Field(default_factory=lambda: ["main"])
    console: str  # serial console for the kernel command line, e.g. ttyS1,115200
    firmware_config: list[str] = Field(default_factory=list)
    wireless: bool = False
    #: the kernel modules of the board's own hardware (what slim.modules keeps)
    modules: list[Annotated[str, Field(pattern=MODULE_RE)]] = Field(default_factory=list)
    #: the firmware files of its chips, under /usr/lib/firmware (what slim.firmware keeps)
    firmware: list[FirmwarePath] = Field(default_factory=list)
    #: its device trees and overlays, under /usr/lib/linux-image-VERSION (slim.device_trees)
    device_trees: list[FirmwarePath] = Field(default_factory=list)
    #: the Raspberry Pi GPU firmware its boot ROM loads (start*.elf, fixup*.dat,
    #: bootcode.bin), under /usr/lib/raspi-firmware: slim.firmware leaves out the other
    #: models' (an empty list: the board loads none; not given: all are kept)
    boot_firmware: list[FirmwarePath] | None = None
    kernels: dict[str, Kernel] = Field(min_length=1, description="the first is the default")
    #: U-Boot for the boot counter of layouts ab and ab-gpt (none: those layouts cannot update)
    uboot: UBoot | None = None
    #: Raspberry Pi Imager's device tags (its os_list ``devices``), e.g. pi4-64bit
    imager_tags: list[str] = Field(default_factory=list)
    notes: str = ""

    @field_validator("kernels")
    @classmethod
    def _named(cls, value: dict[str, Kernel]) -> dict[str, Kernel]:
        for name in value:
            if not re.fullmatch(NAME_RE, name):
                raise ValueError(f"kernel name {name!r}: use lower-case letters, digits and -")
        return value

    @model_validator(mode="after")
    def _firmware_names(self) -> Device:
        for name, kernel in self.kernels.items():
            if kernel.image is not None and self.boot != "raspi-firmware":
                raise ValueError(f"kernel {name!r}: `image:` names a file for the Raspberry Pi firmware only")
        return self
