"""Work that maintainer scripts would repeat per package, done once at the end instead.

During bootstrap, ``update-initramfs``, ``depmod``, ``systemd-hwdb`` and
``update-ca-certificates`` are diverted (dpkg-divert, the Debian way) to stubs, so
installing a kernel, firmware, udev and ca-certificates does not build the initramfs
twice, or run depmod, the hwdb compiler and the certificate store's shell loops under
emulation (the store: 20 to 25 s a run, twice, postinst then trigger). In customize the
real programs come back and each job runs once:

- the certificate store (/etc/ssl/certs) is made after the overlay files (a site's own
  CAs in /usr/local/share/ca-certificates count) and before the scripts (which may
  need it), natively in the tools tree when it has the image's ca-certificates and
  openssl and the image has no update hooks of its own;
- depmod and the hwdb compiler write architecture-independent data: they run natively
  in the tools tree when it has the image's versions (see ``tools.py``);
- the kernel's postinst hooks (/etc/kernel/postinst.d) run once per installed kernel,
  which makes the initramfs and, on Raspberry Pi, fills /boot/firmware; what they write
  is kept in the cache by a fingerprint of what they read, and put back when that is
  unchanged (``jobs.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from imagesmith.host.progress import Steps
from imagesmith.host.rootfs import Bind, chroot, inside
from imagesmith.host.run import Runner
from imagesmith.stages.base import digest
from imagesmith.stages.jobs import OUTPUTS, JobCache, hook_inputs, module_inputs
from imagesmith.stages.native import Native
from imagesmith.stages.native import run as run_natively
from imagesmith.stages.tools import Tools

SUFFIX = ".imagesmith-deferred"
STUB_MARK = "# imagesmith: deferred to the end of the build"
# every spelling a package may ship (merged /usr aliases), and where the stub goes
DIVERTED = {
    "/usr/sbin/update-initramfs": ["/usr/sbin/update-initramfs", "/sbin/update-initramfs"],
    "/usr/sbin/depmod": ["/usr/sbin/depmod", "/sbin/depmod"],
    "/usr/bin/systemd-hwdb": ["/usr/bin/systemd-hwdb", "/bin/systemd-hwdb"],
    "/usr/sbin/update-ca-certificates": ["/usr/sbin/update-ca-certificates", "/sbin/update-ca-certificates"],
}
CERTIFICATES = "/usr/sbin/update-ca-certificates"


def divert_hook() -> str:
    """An mmdebstrap --essential-hook: divert before the first package that calls them."""
    paths = " ".join(p for aliases in DIVERTED.values() for p in aliases)
    stubs = " ".join(DIVERTED)
    return (
        "set -e; "
        f'for p in {paths}; do chroot "$1" dpkg-divert --quiet --local --rename '
        f'--divert "$p{SUFFIX}" --add "$p"; done; '
        f"for p in {stubs}; do printf '#!/bin/sh\\n{STUB_MARK}\\nexit 0\\n' > \"$1$p\"; "
        'chmod 755 "$1$p"; done'
    )


def restore(runner: Runner, rootfs: Path, programs: Sequence[str] = tuple(DIVERTED)) -> None:
    """Remove the stubs and the diversions of ``programs`` (keys of DIVERTED); the
    packages' own programs return. A program restored before is left as it is."""
    for stub in programs:
        host = inside(rootfs, stub, follow_last=False)
        if host.is_file() and STUB_MARK in host.read_text(errors="replace"):
            host.unlink()
    diverted = inside(rootfs, "/var/lib/dpkg/diversions")
    listed = set(diverted.read_text(errors="replace").splitlines()) if diverted.is_file() else set()
    paths = [p for program in programs for p in DIVERTED[program] if p in listed]
    if not paths:
        return
    script = " ".join(paths)
    chroot(
        runner,
        rootfs,
        ["sh", "-ec", f'for p in {script}; do dpkg-divert --quiet --local --rename --remove "$p"; done'],
    )


def kernel_versions(rootfs: Path) -> list[str]:
    modules = inside(rootfs, "/usr/lib/modules")
    if not modules.is_dir():
        return []
    found = [p.name for p in modules.iterdir() if inside(rootfs, f"/boot/vmlinuz-{p.name}").exists()]
    # oldest first, by version: 6.12.10 comes after 6.12.9
    return sorted(found, key=lambda v: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)])


def run_kernel_hooks(
    runner: Runner, rootfs: Path, version: str, *, initramfs: bool = True, native: Native | None = None
) -> None:
    """The kernel's postinst hooks; without ``initramfs``, INITRD=No (the kernel packages'
    convention) tells initramfs-tools' hook to make none, and any made anyway is removed.
    ``native``: the tools tree's programs that run natively meanwhile (``native.py``)."""
    env = {"DEB_MAINT_PARAMS": "configure", **({} if initramfs else {"INITRD": "No"})}
    if native is not None:
        runner.detail(f"kernel {version}: postinst hooks with {native.summary()}")

    def hooks(binds: Sequence[Bind], path: str) -> None:
        chroot(
            runner,
            rootfs,
            [
                "run-parts",
                "--verbose",
                "--exit-on-error",
                f"--arg={version}",
                f"--arg=/boot/vmlinuz-{version}",
                "/etc/kernel/postinst.d",
            ],
            env={**env, "PATH": path},
            hint="the kernel's postinst hooks (initramfs, boot firmware) failed; see build.log",
            progress=Steps(f"kernel {version}: postinst hooks"),
            binds=binds,
        )

    run_natively(runner, native, rootfs, OUTPUTS, hooks)
    if not initramfs:
        made = inside(rootfs, f"/boot/initrd.img-{version}", follow_last=False)
        if made.exists() or made.is_symlink():
            runner.detail(f"slim.initramfs: removed the initramfs a hook made for {version}")
            made.unlink()


def certificates(runner: Runner, rootfs: Path, tools: Tools, jobs: JobCache | None = None) -> None:
    """The certificate store, made once: update-ca-certificates comes back and runs, if
    ca-certificates is installed (its result from the cache when ``jobs`` has it, unless
    update.d holds hooks, which may write anywhere)."""
    restore(runner, rootfs, [CERTIFICATES])
    if not inside(rootfs, CERTIFICATES).exists():
        return
    hooks = inside(rootfs, "/etc/ca-certificates/update.d")
    if jobs is None or (hooks.is_dir() and any(hooks.iterdir())):
        tools.certificates()
    else:
        jobs.data("certificate store", rootfs, tools.certificates)


def finish(
    runner: Runner,
    rootfs: Path,
    tools: Tools,
    prune: Callable[[str], None] | None = None,
    *,
    initramfs: bool = True,
    jobs: JobCache | None = None,
    epoch: int = 0,
    pruning: str = "-",
) -> None:
    """Restore the diverted programs and run each deferred job once. ``prune`` (slim.modules)
    removes a kernel's modules between depmod's two runs: the first tells it what depends
    on what, the second describes what is left, and the initramfs is made from that;
    ``pruning`` is the digest of what it keeps (part of depmod's cache key)."""
    restore(runner, rootfs)
    if inside(rootfs, "/usr/bin/systemd-hwdb").exists():
        tools.hwdb() if jobs is None else jobs.data("udev hwdb", rootfs, tools.hwdb)
    for version in kernel_versions(rootfs):

        def modules(version: str = version) -> None:
            tools.depmod(version)
            if prune is not None:
                prune(version)
                tools.depmod(version)

        if jobs is None:
            modules()
        else:
            inputs = module_inputs(rootfs, version, pruning, jobs.tree)
            jobs.run(f"kernel {version}: depmod", rootfs, inputs, modules, [f"/usr/lib/modules/{version}"])
            after_depmod = digest(inputs)

        def hooks(version: str = version) -> None:
            run_kernel_hooks(runner, rootfs, version, initramfs=initramfs, native=tools.native())

        if jobs is None:
            hooks()
        else:  # put back from the cache when what they read is unchanged (stages/jobs.py)
            inputs = hook_inputs(rootfs, version, epoch, initramfs, after_depmod, jobs.tree)
            jobs.run(f"kernel {version}: postinst hooks", rootfs, inputs, hooks)
