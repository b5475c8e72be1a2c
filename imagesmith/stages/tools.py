"""Architecture-independent jobs run natively, with the image's own tool versions.

Under qemu-user, depmod, the udev hwdb compiler, localedef and update-ca-certificates
take close to a minute each, yet what they write is data that does not depend on the
CPU. When the image is for a foreign architecture, imagesmith bootstraps a small *tools
tree* for the build host's architecture from the same suite and mirror (kmod, udev,
locales, ca-certificates: about 20 s natively), and runs those jobs there, with the image
bind-mounted at /target. A job runs in the tools tree only when the package that provides
it has exactly the image's version, so the output is the same file the image's own tool
would write, and when the image's paths it binds over the tree's are no links (a bind
mount resolves them on the host); otherwise it runs in the image under emulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagesmith.config.load import Spec
from imagesmith.host import binfmt as host
from imagesmith.host.rootfs import CHROOT_ENV, ISOLATE, chroot, copy_tree, inside, package_version
from imagesmith.host.run import Runner
from imagesmith.stages import native

#: the jobs' packages, and what runs natively inside the image during the kernel hooks
#: (``native.py``: busybox-static runs its scripts; zstd, cpio and dracut-install are for
#: mkinitramfs; coreutils, sed, findutils and dash are in every tree)
PACKAGES = ["kmod", "udev", "locales", "ca-certificates", "busybox-static", "zstd", "cpio", "dracut-install"]
#: What update-ca-certificates reads and writes in the image, bound over the tools tree's own
CERTIFICATE_PATHS = [
    "/etc/ca-certificates.conf",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    "/etc/ssl/certs",
]

# bind the image at /target (and any extra paths over the tools tree's), then chroot
_ENTER = r"""
set -e
tools=$1; target=$2; shift 2
mkdir -p "$tools/target"
mount --bind "$target" "$tools/target"
while [ "$1" != "--" ]; do
  mount --bind "$target$1" "$tools$1"
  shift
done
shift
mount -t proc proc "$tools/proc"
exec chroot "$tools" /usr/bin/env -i "$@"
"""


def needed(spec: Spec) -> bool:
    return spec.device.arch != host.native_arch()


@dataclass
class Tools:
    """Runs a job natively in the tools tree when it can, in the image otherwise."""

    runner: Runner
    image: Path
    tree: Path | None = None
    source: Path | None = None  # where ``tree`` is copied from the first time a job needs it

    def _ready(self) -> Path | None:
        """The tree, copied from ``source`` (a cache entry, never changed) if not yet there."""
        if self.tree is not None and self.source is not None and not self.tree.exists():
            copy_tree(self.runner, self.source, self.tree)
        return self.tree

    def _usable(self, packages: list[str]) -> bool:
        tree = self._ready()
        if tree is None:
            return False
        for package in packages:
            wanted = package_version(self.image, package)
            have = package_version(tree, package)
            if wanted is None or wanted != have:
                self.runner.detail(
                    f"tools tree has {package} {have}, the image {wanted}: running it emulated"
                )
                return False
        return True

    def _bindable(self, binds: Sequence[str]) -> bool:
        """Whether each path exists in the image with no link on the way: a bind mount is
        made on the host's side, where a link of the image would lead out of it."""
        for path in binds:
            parts = Path(path.lstrip("/")).parts
            prefixes = [self.image.joinpath(*parts[: n + 1]) for n in range(len(parts))]
            if any(p.is_symlink() for p in prefixes) or not prefixes[-1].exists():
                self.runner.detail(f"{path} in the image is a link or missing: running it emulated")
                return False
        return True

    def _native(self, packages: list[str], binds: Sequence[str] = ()) -> bool:
        return self._usable(packages) and self._bindable(binds)

    def _in_tree(self, argv: list[str], binds: Sequence[str] = ()) -> None:
        assert self.tree is not None
        env = [f"{k}={v}" for k, v in CHROOT_ENV.items()]
        self.runner.run(
            [
                *ISOLATE,
                "sh",
                "-c",
                _ENTER,
                "imagesmith-tools",
                str(self.tree),
                str(self.image),
                *binds,
                "--",
                *env,
                *argv,
            ]
        )

    def native(self) -> native.Native | None:
        """The tree's programs that can run natively inside the image (``native.py``)."""
        return native.find(self.image, self._ready())

    def depmod(self, version: str) -> None:
        system_map = f"/boot/System.map-{version}"
        has_map = (self.image / system_map.lstrip("/")).exists()
        if self._usable(["kmod"]):
            extra = ["-F", f"/target{system_map}"] if has_map else []
            self._in_tree(["depmod", "-b", "/target", "-a", *extra, version])
        else:
            chroot(
                self.runner, self.image, ["depmod", "-a", *(["-F", system_map] if has_map else []), version]
            )

    def hwdb(self) -> None:
        binds = ["/usr/lib/udev", "/etc/udev"]
        if self._native(["udev"], binds):
            # not --root: the compiler records source paths, which must be the image's own
            self._in_tree(["systemd-hwdb", "update", "--usr"], binds=binds)
        else:
            chroot(self.runner, self.image, ["systemd-hwdb", "update", "--usr"])

    def certificates(self) -> None:
        hooks = inside(self.image, "/etc/ca-certificates/update.d")  # a hook may be the image's program
        native = not (hooks.is_dir() and any(hooks.iterdir()))
        if native and self._native(["ca-certificates", "openssl"], CERTIFICATE_PATHS):
            # the same paths as in the image: the links in /etc/ssl/certs name the image's files
            self._in_tree(["update-ca-certificates"], binds=CERTIFICATE_PATHS)
        else:
            chroot(self.runner, self.image, ["update-ca-certificates"])

    def locale_gen(self) -> None:
        binds = ["/etc/locale.gen", "/usr/lib/locale"]
        if self._native(["locales", "libc-bin"], binds):
            # the tools tree's own locale-gen, reading the image's locale.gen, writing its archive
            self._in_tree(["locale-gen"], binds=binds)
        else:
            chroot(self.runner, self.image, ["locale-gen"])
