"""The tools tree's own programs run natively inside a foreign image, while its kernel hooks run.

Under qemu-user each program a script starts is a new emulator that loads and translates
the program and its libraries again. mkinitramfs starts about 2100 of them for the Pi 4's
initramfs: a ``cp`` per kernel module (dracut-install forks one wherever the filesystem
cannot clone a file, as on ext4), ``sed``, ``realpath`` and ``readlink`` per file,
then ``cpio`` and ``zstd`` over the whole tree. The tools tree (``tools.py``) has the
same versions of those programs for the build host, so they can run natively and give the
same result: same source, same version, same input; only the CPU differs.

How, without changing the image or what any script reads:

- ``/run/imagesmith-native`` (the command's own tmpfs) holds the tools tree, read-only,
  and one small script per program (``bin/``): the tree's static busybox runs it, and it
  starts the program with the tree's dynamic loader and libraries. busybox is the only
  program that needs no loader: the image has none for the build host's architecture.
- That ``bin/`` comes first in PATH, for the hooks and, through a copy of mkinitramfs
  that says so (it sets its own PATH; the copy is bound over it), for everything
  mkinitramfs starts. Only a program found *through PATH* runs natively: a path such as
  ``/usr/bin/cp`` is still the image's own file, so what ``copy_exec`` copies and what
  ``ldd`` reads are the image's programs.
- A program is used only when its package has exactly the image's version in the tree
  (a rebuilt ``+b1`` of another architecture is another version: it runs emulated).
  ``stdbuf``, ``uname`` and ``arch`` are never used (``LEFT_OUT``).
- A link is used only where its package's program does the work of each link by the
  name it was started as (``BY_NAME``: depmod, modprobe and modinfo are kmod); its script
  starts the program under the link's name.
- dracut-install, which initramfs-tools starts by its full path to copy the kernel
  modules, and dash, which runs every ``#!/bin/sh`` script (``BY_PATH``), have their
  script bound over them while the hooks run, as mkinitramfs has its copy. A hook that
  copies one of them copies the script: the guard below sees it.

The guard: a hook could find one of these scripts through PATH (``command -v sed``) and
copy it into the initramfs, where it would not run. ``cpio`` (always a script here)
first looks for the scripts' directory name in the tree mkinitramfs archives, and the
hooks' other outputs are read after they ran; if it is anywhere, the hooks' outputs are
put back as they were and the hooks run again, emulated.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagesmith.host.rootfs import CHROOT_ENV, Bind, inside, package_version
from imagesmith.host.run import Runner

#: where everything is inside the image while the hooks run (also what the guard looks for)
HOME = "/run/imagesmith-native"
BIN = f"{HOME}/bin"
TREE = f"{HOME}/tools"
STATE = f"{HOME}/state"
COPIED = "copied"
#: the packages whose programs the hooks and mkinitramfs start most
PACKAGES = ("coreutils", "sed", "findutils", "dash", "zstd", "cpio", "kmod", "dracut-install")
#: packages whose links are used too: their program acts as the name it is started by
BY_NAME = frozenset({"kmod"})
#: programs started by their full path (not found through PATH): their script is bound over
#: them, dash's for every ``#!/bin/sh`` script the hooks start
BY_PATH = frozenset({"/usr/lib/dracut/dracut-install", "/usr/bin/dash"})
SHELL_PACKAGE = "busybox-static"
#: stdbuf preloads a library of the build host's architecture into what it starts; uname
#: and arch would name the build host's machine (qemu-user names the image's, and
#: initramfs-tools asks ``uname -m``); insmod, rmmod and lsmod act on the running kernel:
#: nothing of a build's
LEFT_OUT = frozenset({"stdbuf", "uname", "arch", "insmod", "rmmod", "lsmod"})
PROGRAM_DIRS = frozenset({"/usr/bin", "/bin", "/usr/sbin", "/sbin"})
MKINITRAMFS = "/usr/sbin/mkinitramfs"
MKINITRAMFS_PATH = "export PATH='/usr/bin:/sbin:/bin'"
PATH = f"{BIN}:{CHROOT_ENV['PATH']}"


@dataclass(frozen=True)
class Native:
    """What of the tools tree ``tree`` can run inside the image."""

    tree: Path
    shell: str  # busybox, static, in the tree
    loader: str  # the tree's dynamic loader, in the tree
    programs: dict[str, str]  # name → its path in the tree
    versions: dict[str, str]  # package → its version, the same in the image and the tree
    bound: tuple[str, ...] = ()  # programs started by their path: the same path in the image and the tree

    def summary(self) -> str:
        packages = ", ".join(f"{name} {version}" for name, version in sorted(self.versions.items()))
        count = len(set(self.programs) | {path.rpartition("/")[2] for path in self.bound})
        return f"{count} programs of the tools tree run natively ({packages})"


def _listed(tree: Path, package: str) -> list[str]:
    """The paths dpkg lists for ``package`` in ``tree`` (with or without its architecture)."""
    info = tree / "var/lib/dpkg/info"
    for listing in [info / f"{package}.list", *sorted(info.glob(f"{package}:*.list"))]:
        if listing.is_file():
            return listing.read_text(encoding="utf-8", errors="replace").splitlines()
    return []


def _program(tree: Path, path: str, *, link: bool = False) -> str | None:
    """Where ``path`` (as dpkg lists it: /bin/cp on a merged /usr is /usr/bin/cp) is an
    executable plain file in ``tree``, as a path in the tree; None when it is not.
    ``link``: a link is followed (inside the tree) to the program it names."""
    host = inside(tree, path, follow_last=link)
    if not host.is_file() or host.is_symlink() or host.stat().st_mode & 0o111 == 0:
        return None
    return "/" + host.relative_to(tree).as_posix()


def find(image: Path, tree: Path | None) -> Native | None:
    """The programs of ``tree`` that can stand in for the image's own, or None when the
    tree has none, no static busybox or not exactly one dynamic loader."""
    if tree is None:
        return None
    listed = [p for p in _listed(tree, SHELL_PACKAGE) if p.endswith("/busybox")]
    shells = [found for p in listed if (found := _program(tree, p))]
    loaders = [p for p in sorted(tree.glob("usr/lib/*/ld-linux*.so*")) if p.is_file() and not p.is_symlink()]
    if not shells or len(loaders) != 1:
        return None
    programs: dict[str, str] = {}
    versions: dict[str, str] = {}
    bound: set[str] = set()
    for package in PACKAGES:
        version = package_version(image, package)
        if version is None or version != package_version(tree, package):
            continue
        listed = _listed(tree, package)
        plain = {path: found for path in listed if (found := _program(tree, path))}
        for path in listed:
            directory, _, name = path.rpartition("/")
            found = plain.get(path) or (_program(tree, path, link=True) if package in BY_NAME else None)
            if found is None or found not in plain.values():  # a link to another package's program
                continue
            in_path = directory in PROGRAM_DIRS and name not in LEFT_OUT
            if in_path:
                programs[name] = found
            if found in BY_PATH:  # where it is in the tree is where it is in the image
                bound.add(found)
            if in_path or found in BY_PATH:
                versions[package] = version
    if not programs and not bound:
        return None
    loader = "/" + loaders[0].relative_to(tree).as_posix()
    return Native(tree, shells[0], loader, programs, versions, tuple(sorted(bound)))


def wrapper(native: Native, name: str, program: str | None = None) -> str:
    """The script that runs the tree's ``program`` (by default the one of ``name``) as
    ``name``, with the tree's loader and libraries. Without a name (a script bound over a
    program), the program is started as the path it was started by."""
    libraries = str(Path(native.loader).parent)
    loader = [f"{TREE}{native.loader}", "--inhibit-cache", "--library-path", f"{TREE}{libraries}", "--argv0"]
    started = shlex.quote(name) if name else '"$0"'
    program = shlex.quote(f"{TREE}{program or native.programs[name]}")
    return f'#!{TREE}{native.shell} sh\nexec {shlex.join(loader)} {started} {program} "$@"\n'


def cpio_guard(native: Native) -> str:
    """``cpio`` for mkinitramfs: first look for these scripts in the tree it archives (``-D``)."""
    shell = f"{TREE}{native.shell}"
    emulated = 'exec /usr/bin/cpio "$@"'
    program = wrapper(native, "cpio").splitlines()[1] if "cpio" in native.programs else emulated
    return (
        f"#!{shell} sh\n"
        "dir= previous=\n"
        'for arg; do [ "$previous" = -D ] && dir=$arg; previous=$arg; done\n'
        # plain files only: a link (etc/mtab → /proc/self/mounts) is no copy of anything
        f'[ -z "$dir" ] || {shell} find "$dir" -type f -exec {shell} grep -lsF {HOME} {{}} +'
        f" >> {STATE}/{COPIED}\n"
        f"{program}\n"
    )


def patched_mkinitramfs(text: str, native: Native) -> str | None:
    """mkinitramfs with ``bin/`` first in the PATH it sets (and run by the tree's dash when
    the tree has it), or None when it does not set its PATH the way this expects."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\n") != "#!/bin/sh" or text.count(MKINITRAMFS_PATH) != 1:
        return None
    if "dash" in native.programs:
        lines[0] = f"#!{BIN}/dash\n"
    patched = "".join(lines)
    return patched.replace(MKINITRAMFS_PATH, f"export PATH='{BIN}:/usr/bin:/sbin:/bin'")


def prepare(native: Native, image: Path, where: Path) -> list[Bind]:
    """Write the scripts under ``where`` (a directory of the build's) and say what to bind."""
    (where / "bin").mkdir(parents=True)
    (where / "state").mkdir()
    for name in native.programs:
        (where / "bin" / name).write_text(wrapper(native, name), encoding="utf-8")
    (where / "bin" / "cpio").write_text(cpio_guard(native), encoding="utf-8")
    for script in (where / "bin").iterdir():
        script.chmod(0o755)
    binds = [Bind(where, HOME), Bind(native.tree, TREE, read_only=True)]
    if _plain(image, MKINITRAMFS):
        own = image / MKINITRAMFS.lstrip("/")
        patched = patched_mkinitramfs(own.read_text(encoding="utf-8", errors="replace"), native)
        if patched is not None:
            (where / "mkinitramfs").write_text(patched, encoding="utf-8")
            (where / "mkinitramfs").chmod(0o755)
            binds.append(Bind(where / "mkinitramfs", MKINITRAMFS, read_only=True))
    for index, path in enumerate(native.bound):
        if _plain(image, path):
            script = where / f"bound-{index}"
            script.write_text(wrapper(native, "", path), encoding="utf-8")
            script.chmod(0o755)
            binds.append(Bind(script, path, read_only=True))
    return binds


def _plain(image: Path, path: str) -> bool:
    """``path`` is a plain file in the image with no link on the way (a bind mount over a
    link would follow it on the build host)."""
    own = image / path.lstrip("/")
    return inside(image, path, follow_last=False) == own and own.is_file() and not own.is_symlink()


def _holds(path: Path, needle: bytes) -> bool:
    with path.open("rb") as handle:
        tail = b""
        while chunk := handle.read(1 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-(len(needle) - 1) :]
    return False


def copied(where: Path, image: Path, outputs: Sequence[str]) -> str | None:
    """Where one of the scripts ended up in the hooks' outputs: in the tree mkinitramfs
    archived (cpio's guard wrote its files' names) or in a file under ``outputs``."""
    guard = where / "state" / COPIED
    names = guard.read_text(encoding="utf-8", errors="replace").split() if guard.is_file() else []
    if names:
        return f"{names[0]} in the tree mkinitramfs packed"
    needle = HOME.encode()
    for top in outputs:
        host = inside(image, top, follow_last=False)
        if _directory(image, top):
            for path in sorted(host.rglob("*")):
                if path.is_file() and not path.is_symlink() and _holds(path, needle):
                    return "/" + path.relative_to(image).as_posix()
    return None


def run(
    runner: Runner,
    native: Native | None,
    image: Path,
    outputs: Sequence[str],
    job: Callable[[Sequence[Bind], str], None],
) -> None:
    """``job(binds, PATH)`` with the native programs in place; when one of their scripts
    ended up in ``outputs``, those are put back as they were and ``job`` runs emulated."""
    if native is None:
        job((), CHROOT_ENV["PATH"])
        return
    with tempfile.TemporaryDirectory(dir=image.parent, prefix=".imagesmith-native-") as scratch:
        before = Path(scratch) / "before"
        tops = [top for top in outputs if _directory(image, top)]
        for top in tops:
            (before / top.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            runner.run(["cp", "-a", str(inside(image, top)), str(before / top.lstrip("/"))])
        where = Path(scratch) / "native"
        job(prepare(native, image, where), PATH)
        found = copied(where, image, outputs)  # also what the hooks made anew
        if found is None:
            return
        runner.info(f"a hook copied one of the programs run natively into its output ({found}): "
                    "running the hooks again, emulated")  # fmt: skip
        for top in outputs:
            host = inside(image, top, follow_last=False)
            if host.is_dir() and not host.is_symlink():
                shutil.rmtree(host)
        for top in tops:
            runner.run(["cp", "-a", str(before / top.lstrip("/")), str(inside(image, top))])
        job((), CHROOT_ENV["PATH"])


def _directory(image: Path, path: str) -> bool:
    host = inside(image, path, follow_last=False)
    return host.is_dir() and not host.is_symlink()
