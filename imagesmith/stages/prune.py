"""``slim.modules``, ``slim.firmware`` and ``slim.device_trees``: the kernel modules,
firmware files and device trees the device does not use are left out of the image.

Modules: what is kept is named (the device's catalog entry, ``slim.keep_modules``, the
modules the layout's filesystems and systemd need, and every name in /etc/modules,
modules-load.d and /etc/initramfs-tools/modules), then closed over depmod's own view of
the dependencies (modules.dep, and modules.softdep's pre/post modules). Modules outside
the kernel's ``kernel/`` tree (DKMS and other add-ons) are always kept. Pruning runs
between two depmod runs and before the kernel's hooks, so the initramfs is made from the
pruned tree and modules.dep describes exactly the modules that are there.

Firmware: files under /usr/lib/firmware are kept when they match the device's catalog
globs or ``slim.keep_firmware``, and so are the targets of kept links; the wireless
regulatory database always stays. The Raspberry Pi's GPU firmware (raspi-firmware ships
every model's, about 22 MiB, and copies it to the boot partition when it is installed) is
kept for the device's own model only (its catalog ``boot_firmware``). Device trees:
under /usr/lib/linux-image-VERSION (where the kernel packages put every board's), what
the device's catalog globs name.
Both go before the kernel's hooks copy anything to the initramfs or the boot partition.

What is kept is chosen by pure functions over the file lists (``kept_modules``,
``kept_files``); only the ``prune_*`` functions touch the image.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from imagesmith.config.load import Spec
from imagesmith.disk import fs
from imagesmith.errors import config_error
from imagesmith.host.rootfs import inside
from imagesmith.host.run import Runner
from imagesmith.stages import bootfiles

_KO = re.compile(r"\.ko(\.(xz|zst|gz))?$")
#: what systemd loads by itself at boot (its modprobe@ units, autofs for automounts)
SYSTEM_MODULES = ("autofs4", "configfs", "dm_mod", "drm", "efi_pstore", "fuse", "loop")
#: overlayfs: the read-only root's /etc (stages/storage.py's initramfs script)
READ_ONLY_MODULES = ("overlay",)
#: RAUC mounts a bundle: its squashfs on a loop device, checked by dm-verity (or dm-crypt)
UPDATE_MODULES = ("squashfs", "dm_verity", "dm_crypt")
#: lists of modules the system loads by name
LOAD_LISTS = ("/etc/modules", "/etc/initramfs-tools/modules")
LOAD_DIRS = ("/etc/modules-load.d", "/usr/lib/modules-load.d")
FIRMWARE = "/usr/lib/firmware"
#: read by cfg80211 whatever the chip
ALWAYS_FIRMWARE = ("regulatory.db", "regulatory.db.p7s")
#: where raspi-firmware keeps the GPU firmware of every Raspberry Pi model, and its names
#: (the boot partition, bootfiles.FIRMWARE, holds the copies its postinst made)
GPU_FIRMWARE_DIR = "/usr/lib/raspi-firmware"
GPU_FIRMWARE = ("bootcode.bin", "start*.elf", "fixup*.dat")


def check(spec: Spec) -> None:
    """Before a build: slim.initramfs only where the kernel can mount the root without one."""
    if not spec.config.slim.initramfs:
        return
    where = spec.locate("slim", "initramfs")
    if spec.kernel.needs_initramfs:
        others = [name for name, k in spec.device.kernels.items() if not k.needs_initramfs]
        raise config_error(
            f"the {spec.kernel_name} kernel of {spec.device.device} needs an initramfs "
            "(it loads its storage and filesystem drivers from it)",
            where,
            "leave slim.initramfs out"
            + (f"; the {others[0]} kernel (kernel: {others[0]}) mounts the root itself" if others else ""),
        )
    if spec.layout.data is not None:
        raise config_error(
            f"layout {spec.layout.layout!r} has a data partition, which the initramfs prepares "
            "(growing it, the read-only root's /etc)",
            where,
            "leave slim.initramfs out, or use layout simple or simple-gpt",
        )


def module_name(path: str) -> str:
    """kernel/fs/ext4/ext4.ko.xz → ext4; dashes and underscores are one (as modprobe reads them)."""
    return _KO.sub("", path.rsplit("/", 1)[-1]).replace("-", "_")


@dataclass(frozen=True)
class Modules:
    """One kernel's modules, as depmod described them."""

    paths: dict[str, str]  # name → path relative to the kernel's module directory
    depends: dict[str, list[str]]  # name → names it needs (modules.dep: all of them)
    softdeps: dict[str, list[str]]  # name → names modprobe loads before or after it
    builtin: frozenset[str]
    #: plain aliases (no wildcard) → the modules that give them: softdeps and the kernel's
    #: own requests name some modules so (ext4 asks for "crc32c")
    aliases: dict[str, list[str]]

    @classmethod
    def parse(cls, dep: str, softdep: str, builtin: str, alias: str = "") -> Modules:
        paths: dict[str, str] = {}
        depends: dict[str, list[str]] = {}
        for line in dep.splitlines():
            path, sep, needs = line.partition(":")
            if sep:
                paths[module_name(path)] = path.strip()
                depends[module_name(path)] = [module_name(n) for n in needs.split()]
        softdeps: dict[str, list[str]] = {}
        for line in softdep.splitlines():
            words = line.split()
            if len(words) > 2 and words[0] == "softdep":
                softdeps[module_name(words[1])] = [
                    module_name(w) for w in words[2:] if w not in ("pre:", "post:")
                ]
        names = frozenset(module_name(line.strip()) for line in builtin.splitlines() if line.strip())
        aliases: dict[str, list[str]] = {}
        for line in alias.splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "alias" and not any(c in words[1] for c in "*?["):
                aliases.setdefault(module_name(words[1]), []).append(module_name(words[2]))
        return cls(paths, depends, softdeps, names, aliases)

    @classmethod
    def read(cls, directory: Path) -> Modules:
        def text(name: str) -> str:
            path = directory / name
            return path.read_text() if path.is_file() else ""

        return cls.parse(
            text("modules.dep"), text("modules.softdep"), text("modules.builtin"), text("modules.alias")
        )

    def resolve(self, name: str) -> list[str]:
        """The modules a name stands for: itself, or those that give it as an alias."""
        name = module_name(name)
        return [name] if name in self.paths else self.aliases.get(name, [])

    def known(self, name: str) -> bool:
        return bool(self.resolve(name)) or module_name(name) in self.builtin


def kept_modules(modules: Modules, wanted: Iterable[str]) -> set[str]:
    """The paths of the modules ``wanted`` needs (names not in this kernel are passed over),
    and of every module outside ``kernel/``."""
    todo = [name for n in wanted for name in modules.resolve(n)]
    todo += [name for name, path in modules.paths.items() if not path.startswith("kernel/")]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in modules.paths:
            continue
        seen.add(name)
        todo += modules.depends.get(name, [])
        todo += [m for soft in modules.softdeps.get(name, []) for m in modules.resolve(soft)]
    return {modules.paths[name] for name in seen}


def listed(text: str) -> list[str]:
    """Module names of a modules-load.d or /etc/modules file (comments and options dropped)."""
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith(";"):
            found.append(line.split()[0])
    return found


def load_lists(rootfs: Path) -> list[str]:
    """Every module the image names for loading at boot."""
    files = [inside(rootfs, p) for p in LOAD_LISTS]
    for directory in LOAD_DIRS:
        host = inside(rootfs, directory)
        if host.is_dir():
            files += sorted(p for p in host.iterdir() if p.suffix == ".conf")
    return [name for f in files if f.is_file() for name in listed(f.read_text(errors="replace"))]


def wanted_modules(spec: Spec, rootfs: Path) -> list[str]:
    """The names slim.modules keeps, before their dependencies."""
    return configured_modules(spec) + load_lists(rootfs)


def configured_modules(spec: Spec) -> list[str]:
    """The names slim.modules keeps for the device, the config and the layout (the image's
    own lists of modules loaded at boot come on top)."""
    filesystems = {p.fs for p in spec.layout.partitions}
    names = [*spec.device.modules, *spec.config.slim.keep_modules, *SYSTEM_MODULES]
    names += [m for f in sorted(filesystems) for m in fs.get(f).modules]
    if spec.config.read_only:
        names += READ_ONLY_MODULES
    if spec.config.update is not None:
        names += UPDATE_MODULES
    return names


def check_modules(spec: Spec, modules: Modules, version: str) -> None:
    """A module the config names must be one of this kernel's (a typo keeps nothing)."""
    for index, name in enumerate(spec.config.slim.keep_modules):
        if not modules.known(name):
            raise config_error(
                f"kernel {version} has no module {name!r}",
                spec.locate("slim", "keep_modules", index),
                f"the name modprobe takes (see modules.dep under /usr/lib/modules/{version} in the image)",
            )


def prune_modules(runner: Runner, spec: Spec, rootfs: Path, version: str) -> None:
    """Remove the modules of ``version`` that nothing keeps (depmod must have run)."""
    directory = inside(rootfs, f"/usr/lib/modules/{version}")
    modules = Modules.read(directory)
    if not modules.paths:
        runner.detail(f"slim.modules: kernel {version} has no modules.dep: nothing pruned")
        return
    check_modules(spec, modules, version)
    wanted = wanted_modules(spec, rootfs)
    unknown = sorted({n for n in wanted if not modules.known(n)})
    if unknown:
        runner.detail(f"slim.modules: not modules of kernel {version}: {', '.join(unknown)}")
    keep = kept_modules(modules, wanted)
    removed, size = 0, 0
    for path in sorted(set(modules.paths.values()) - keep):
        target = directory / path
        if target.is_file() and not target.is_symlink():
            size += target.stat().st_size
            target.unlink()
            removed += 1
    _remove_empty_dirs(directory / "kernel")
    runner.info(
        f"slim.modules: kernel {version}: kept {len(keep)} modules, left out {removed} ({size // 1024} KiB)"
    )


def kept_files(files: dict[str, str | None], patterns: Iterable[str]) -> set[str]:
    """The paths kept: those matching ``patterns`` (shell wildcards; a compressed file
    matches as its plain name too) and what kept links point to. ``files`` maps each path
    to its link's target in the same tree (None: not a link, or one leaving the tree)."""
    globs = list(patterns)

    def matches(path: str) -> bool:
        plain = re.sub(r"\.(xz|zst)$", "", path)
        return any(fnmatch.fnmatchcase(p, g) for g in globs for p in (path, plain))

    todo = [path for path in files if matches(path)]
    keep: set[str] = set()
    while todo:
        path = todo.pop()
        if path in keep:
            continue
        if path not in files:  # a kept link to a directory keeps what is in it
            todo += [p for p in files if p.startswith(path + "/")]
            continue
        keep.add(path)
        target = files[path]
        if target is not None:
            todo.append(target)
    return keep


def tree_files(directory: Path, rootfs: Path) -> dict[str, str | None]:
    """Each file or link under ``directory``: its relative path → its link's target, relative
    to ``directory`` (None for a file, or a link that leaves the directory). Absolute links
    are read as the image reads them, from ``rootfs``."""
    found: dict[str, str | None] = {}
    for root, dirs, names in os.walk(directory):
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(root, d)))]:
            path = Path(root) / name
            rel = path.relative_to(directory).as_posix()
            target: str | None = None
            if path.is_symlink():
                link = os.readlink(path)
                start = (
                    os.path.join(rootfs, link.lstrip("/"))
                    if link.startswith("/")
                    else os.path.join(root, link)
                )
                inner = os.path.relpath(os.path.normpath(start), directory)
                target = None if inner.startswith("..") else inner
            found[rel] = target
    return found


def prune_tree(runner: Runner, what: str, directory: Path, rootfs: Path, patterns: list[str]) -> None:
    """Remove what ``patterns`` do not keep under ``directory``; say how much went."""
    files = tree_files(directory, rootfs)
    keep = kept_files(files, patterns)
    size = 0
    for rel in sorted(set(files) - keep):
        path = directory / rel
        if not path.is_symlink():
            size += path.stat().st_size
        path.unlink()
    _remove_empty_dirs(directory)
    runner.info(f"{what}: kept {len(keep)} files, left out {len(files) - len(keep)} ({size // 1024} KiB)")


def firmware_patterns(spec: Spec) -> list[str]:
    return [*ALWAYS_FIRMWARE, *spec.device.firmware, *spec.config.slim.keep_firmware]


def prune_firmware(runner: Runner, spec: Spec, rootfs: Path) -> None:
    """Remove the firmware files the device's chips and the config do not name."""
    directory = inside(rootfs, FIRMWARE)
    if directory.is_dir():
        prune_tree(runner, "slim.firmware", directory, rootfs, firmware_patterns(spec))
    prune_gpu_firmware(runner, spec, rootfs)


def other_models(names: Iterable[str], keep: list[str] | None) -> list[str]:
    """Of the GPU firmware files ``names`` (a directory's), those the device's model does not
    load (``keep``: its catalog globs; None: the catalog does not say, all are kept)."""
    if keep is None:
        return []
    gpu = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in GPU_FIRMWARE)]
    return sorted(n for n in gpu if not any(fnmatch.fnmatchcase(n, g) for g in keep))


def gpu_firmware_left_out(spec: Spec, rootfs: Path) -> dict[str, int]:
    """The GPU firmware files slim.firmware leaves out, each with its size."""
    directory = inside(rootfs, GPU_FIRMWARE_DIR)
    if not directory.is_dir():
        return {}
    files = [p for p in directory.iterdir() if p.is_file() and not p.is_symlink()]
    sizes = {p.name: p.stat().st_size for p in files}
    return {name: sizes[name] for name in other_models(sizes, spec.device.boot_firmware)}


def prune_gpu_firmware(runner: Runner, spec: Spec, rootfs: Path) -> None:
    """Remove the other Raspberry Pi models' GPU firmware, and the copies raspi-firmware's
    postinst put on the boot partition."""
    gone = gpu_firmware_left_out(spec, rootfs)
    for name in gone:
        for top in (GPU_FIRMWARE_DIR, bootfiles.FIRMWARE):
            path = inside(rootfs, f"{top}/{name}", follow_last=False)
            if path.is_file() and not path.is_symlink():
                path.unlink()
    if gone:
        runner.info(
            f"slim.firmware: kept the GPU firmware of {spec.device.device} only, left out {len(gone)} files "
            f"({sum(gone.values()) // 1024} KiB)"
        )


def device_tree_dirs(rootfs: Path) -> list[Path]:
    """Where Debian's (and the Raspberry Pi's) kernel packages put their device trees."""
    return sorted(p for p in inside(rootfs, "/usr/lib").glob("linux-image-*") if p.is_dir())


def prune_device_trees(runner: Runner, spec: Spec, rootfs: Path) -> None:
    """Remove the device trees (and overlays) of other boards, before the kernel's hooks
    copy the device's own to the boot partition."""
    for directory in device_tree_dirs(rootfs):
        prune_tree(
            runner, f"slim.device_trees ({directory.name})", directory, rootfs, spec.device.device_trees
        )


def savings(spec: Spec, rootfs: Path) -> dict[str, int]:
    """What slim.modules, slim.firmware and slim.device_trees, where not set, would leave
    out, in bytes (``packages --trim`` suggests them)."""
    found: dict[str, int] = {}
    slim = spec.config.slim
    modules_dir = inside(rootfs, "/usr/lib/modules")
    if not slim.modules and modules_dir.is_dir():
        wanted, total = wanted_modules(spec, rootfs), 0
        for directory in sorted(p for p in modules_dir.iterdir() if p.is_dir()):
            modules = Modules.read(directory)
            for path in set(modules.paths.values()) - kept_modules(modules, wanted):
                if (directory / path).is_file():
                    total += (directory / path).lstat().st_size
        found["slim.modules"] = total
    trees: list[tuple[str, Path, list[str]]] = []
    if not slim.firmware:
        trees.append(("slim.firmware", inside(rootfs, FIRMWARE), firmware_patterns(spec)))
    if not slim.device_trees:
        trees += [("slim.device_trees", d, spec.device.device_trees) for d in device_tree_dirs(rootfs)]
    for key, directory, patterns in trees:
        if directory.is_dir():
            files = tree_files(directory, rootfs)
            left_out = set(files) - kept_files(files, patterns)
            found[key] = found.get(key, 0) + sum(
                (directory / rel).stat().st_size for rel in left_out if not (directory / rel).is_symlink()
            )
    if not slim.firmware:
        gpu = sum(gpu_firmware_left_out(spec, rootfs).values())
        found["slim.firmware"] = found.get("slim.firmware", 0) + gpu
    return {key: size for key, size in found.items() if size}


def _remove_empty_dirs(top: Path) -> None:
    for root, _dirs, _names in sorted(os.walk(top), key=lambda w: -len(w[0])):
        if Path(root) != top and not any(Path(root).iterdir()):
            Path(root).rmdir()
