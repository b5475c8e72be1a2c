"""Boot a built image in qemu-system and watch its serial console.

The image's own kernel, initrd and command line (from its boot partition) are booted
with ``-kernel``/``-initrd`` on a generic virtual machine of the image's architecture.
An image that boots through U-Boot's A/B boot counter (device qemu-arm64) is booted by
its own U-Boot instead (``u-boot.bin`` on its boot partition, given as the firmware),
which runs its ``boot.scr`` and boots a slot as the device would.
The image itself is never written: the guest runs on a copy-on-write overlay that is
larger than the image, so first-boot growth of the root partition is exercised too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect

from imagesmith.disk import table
from imagesmith.errors import EXIT_CONFIG, ImagesmithError
from imagesmith.host import binfmt as host
from imagesmith.host.diagnose import missing_tool
from imagesmith.host.run import Runner
from imagesmith.redact import environment

LOGIN = re.compile(rb"login: ?$|login: ", re.MULTILINE)
PANIC = re.compile(rb"Kernel panic - not syncing[^\r\n]*")
KVM_ERROR = re.compile(rb"KVM internal error|KVM: entry failed")
#: the guest's kernel has started (the first line Linux prints)
GUEST_STARTED = re.compile(rb"Linux version \d")
TAIL = 30
EMERGENCY = re.compile(rb"(You are in emergency mode|Give root password for maintenance|\(initramfs\) )")

MACHINES = {
    "arm64": {
        "system": "qemu-system-aarch64",
        "args": ["-M", "virt"],
        "cpu": "cortex-a72",
        "tcg": "tcg",
        "console": "ttyAMA0",
    },
    "amd64": {
        "system": "qemu-system-x86_64",
        "args": ["-M", "q35"],
        # emulated: every feature but 5-level paging, which both guest panics seen under
        # qemu 7.2's emulation ran with (AVX stays: without it, the kiosk test's browser did
        # not render within 10 minutes)
        "cpu": "max,la57=off",
        "tcg": "tcg",
        "console": "ttyS0",
    },
}


@dataclass
class BootFiles:
    arch: str
    kernel: Path | None
    initrd: Path | None
    cmdline: str
    firmware: Path | None = None  # U-Boot, which boots the image itself


def _partitions(runner: Runner, image: Path) -> list[dict[str, object]]:
    out = runner.run(
        ["sfdisk", "--json", str(image)], capture=True, hint="is this a disk image built by imagesmith?"
    )
    parts: list[dict[str, object]] = json.loads(out)["partitiontable"].get("partitions", [])
    return parts


def _config_txt(text: str) -> tuple[str | None, str | None]:
    kernel = initrd = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("kernel="):
            kernel = line.split("=", 1)[1].strip()
        elif line.startswith("initramfs "):
            initrd = line.split()[1]
    return kernel, initrd


def _arch_of(kernel: Path) -> str:
    """From the image header alone: arm64's magic at 0x38, x86's "HdrS" boot protocol at 0x202."""
    with open(kernel, "rb") as handle:
        head = handle.read(0x210)
    if head[0x38:0x3C] == b"ARM\x64":
        return "arm64"
    if b"HdrS" in head[0x200:0x210]:
        return "amd64"
    raise ImagesmithError(f"cannot tell the architecture of the kernel {kernel.name}")


def extract(runner: Runner, image: Path, into: Path) -> BootFiles:
    """Kernel, initrd and command line from the image's FAT boot partition."""
    boot = next((p for p in _partitions(runner, image) if table.holds_fat(str(p.get("type")))), None)
    if boot is None:
        raise ImagesmithError(f"{image} has no FAT boot partition", hint="boot images built by imagesmith")
    spec = f"{image}@@{int(str(boot['start'])) * 512}"

    def fetch(name: str) -> Path | None:
        target = into / Path(name).name
        try:
            runner.run(["mcopy", "-n", "-i", spec, f"::{name}", str(target)])
        except ImagesmithError:
            return None
        return target

    config = fetch("config.txt")
    if fetch("boot.scr") is not None:
        if config is not None:  # the Raspberry Pi firmware runs U-Boot: not the virt machine's
            raise ImagesmithError(
                f"{image} boots through U-Boot for the Raspberry Pi, which qemu's virtual machine cannot run",
                hint="boot the same config built for device qemu-arm64 (e.g. its qemu variant)",
            )
        uboot = fetch("u-boot.bin")
        if uboot is None:
            raise ImagesmithError(f"{image}: the boot partition has boot.scr but no u-boot.bin")
        return BootFiles("arm64", None, None, "", firmware=uboot)
    cmdline_file = fetch("cmdline.txt")
    if cmdline_file is None:
        raise ImagesmithError(f"{image}: the boot partition has no cmdline.txt")
    kernel_name, initrd_name = "vmlinuz", "initrd.img"
    if config is not None:
        k, i = _config_txt(config.read_text(errors="replace"))
        kernel_name, initrd_name = k or kernel_name, i or initrd_name
    kernel = fetch(kernel_name)
    if kernel is None:
        raise ImagesmithError(f"{image}: the boot partition has no kernel {kernel_name}")
    initrd = fetch(initrd_name)
    return BootFiles(_arch_of(kernel), kernel, initrd, cmdline_file.read_text().strip())


def guest_cmdline(cmdline: str, console: str) -> str:
    """The image's command line with its consoles replaced by the virtual machine's."""
    args = [a for a in cmdline.split() if not a.startswith("console=")]
    return " ".join([*args, f"console={console},115200"])


def boot(
    image: Path,
    runner: Runner,
    *,
    timeout: float = 600,
    grow: int = 512 * 1024 * 1024,
    log: Path | None = None,
    expect: str | None = None,
    disk: Path | None = None,
    attach: tuple[Path, ...] = (),
) -> str:
    """Boot ``image`` until a login prompt (or the text ``expect``); return the console
    transcript. The guest writes to a qcow2 overlay over the image (the image itself is
    never changed): a temporary one, or ``disk``, made if missing and kept, so that a
    later boot with the same ``disk`` sees what this one wrote. Each of ``attach`` is given
    to the guest as one more disk, read-only."""
    if not image.is_file():
        raise ImagesmithError(f"no such image: {image}", exit_code=EXIT_CONFIG)
    with tempfile.TemporaryDirectory(prefix="imagesmith-boot-") as tmp:
        work = Path(tmp)
        files = extract(runner, image, work)
        machine = MACHINES[files.arch]
        system = str(machine["system"])
        for tool in (system, "qemu-img"):
            if shutil.which(tool) is None:
                raise ImagesmithError(f"{tool} is not installed", hint=missing_tool(tool, []).hint)
        overlay = disk or work / "disk.qcow2"
        size = image.stat().st_size + grow
        if not overlay.exists():
            runner.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    str(image.resolve()),
                    str(overlay),
                    str(size),
                ]
            )
        argv = [system, *machine["args"], "-smp", "2", "-m", "1024", "-nographic", "-no-reboot"]
        if files.firmware is not None:
            argv += ["-bios", str(files.firmware)]
        else:
            assert files.kernel is not None
            line = guest_cmdline(files.cmdline, str(machine["console"]))
            argv += ["-kernel", str(files.kernel), "-append", line]
            if files.initrd is not None:
                argv += ["-initrd", str(files.initrd)]
        argv += ["-drive", f"if=none,id=disk,format=qcow2,file={overlay}"]
        argv += ["-device", "virtio-blk-pci,drive=disk"]
        for number, extra in enumerate(attach):
            if not extra.is_file():
                raise ImagesmithError(f"no such file to attach: {extra}", exit_code=EXIT_CONFIG)
            argv += [
                "-drive",
                f"if=none,id=extra{number},format=raw,readonly=on,file={extra}",
                "-device",
                f"virtio-blk-pci,drive=extra{number}",
            ]
        # U-Boot would load the network card's boot ROM, which qemu may not have: none
        nic = "virtio-net-pci,netdev=net" + (",romfile=" if files.firmware is not None else "")
        argv += ["-netdev", "user,id=net", "-device", nic]
        return run_guest(argv, accelerators(files.arch), runner, timeout, log, expect)


class KvmFailed(ImagesmithError):
    """The guest could not start or run under KVM (seen with nested virtualisation, in
    several forms): emulation may still work."""


class Panicked(ImagesmithError):
    """The guest's kernel panicked."""


#: found out once per process: later boots go straight to emulation
_kvm_broken = False


def run_guest(
    argv: list[str],
    attempts: list[list[str]],
    runner: Runner,
    timeout: float,
    log: Path | None,
    expect: str | None,
) -> str:
    """Run the guest with the first accelerator that works: when KVM fails in any way
    before the guest's kernel runs, say so in one line and boot again with TCG. A panic
    under emulation is booted once more, on one CPU: the emulator of Debian 12 (qemu 7.2)
    panics an x86 guest with two CPUs now and then, while a panic the image causes happens
    again."""
    global _kvm_broken
    if _kvm_broken:
        attempts = [a for a in attempts if "kvm" not in a] or attempts
    retried = False
    for number, accel in enumerate(attempts, 1):
        full = [argv[0], *accel, *argv[1:]]
        runner.detail("$ " + " ".join(full))
        try:
            try:
                return _watch(full, runner, timeout, log, expect, kvm="kvm" in accel)
            except Panicked:
                if "kvm" in accel or retried:
                    raise
                retried = True
                runner.info(
                    "the kernel panicked under emulation (TCG): booting once more, on one CPU, to tell it "
                    "from the image"
                )
                return _watch(one_cpu(full), runner, timeout, log, expect)
        except KvmFailed as exc:
            if number == len(attempts):
                raise
            _kvm_broken = True
            said = (exc.details or "").splitlines()
            why = f" ({said[0].strip()[:160]})" if said else ""
            runner.info(f"KVM does not work on this host{why}: booting with TCG (emulation, slower)")
    raise AssertionError("unreachable")


def one_cpu(argv: list[str]) -> list[str]:
    """``argv`` with one virtual CPU: the x86 panics seen under emulation (an int3 in
    sched_clock_cpu) are one CPU running code that another was patching, which a single
    CPU cannot do."""
    if "-smp" not in argv:
        return argv
    at = argv.index("-smp") + 1
    return [*argv[:at], "1", *argv[at + 1 :]]


def accelerators(arch: str) -> list[list[str]]:
    """The ways to run the guest, best first: KVM with the host's CPU when the guest is the
    host's architecture and /dev/kvm is usable, then emulation of the machine's CPU."""
    machine = MACHINES[arch]
    tcg = ["-accel", str(machine["tcg"]), "-cpu", str(machine["cpu"])]
    if arch == host.native_arch() and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return [["-accel", "kvm", "-cpu", "host"], tcg]
    return [tcg]


def _watch(
    argv: list[str], runner: Runner, timeout: float, log: Path | None, expect: str | None, kvm: bool = False
) -> str:
    """Watch the console until ``expect`` (default: a login prompt). With ``kvm``, a qemu
    that stops before the guest's kernel speaks raises ``KvmFailed``."""
    wanted = re.compile(re.escape(expect.encode())) if expect is not None else LOGIN
    transcript = bytearray()
    pending = b""  # the unfinished last line, shown once it ends
    start = time.monotonic()
    child = pexpect.spawn(argv[0], argv[1:], timeout=None, env=environment())
    outcome = "timeout"
    # the console log is written as it comes, so `tail -f` shows a boot in progress
    sink = log.open("wb") if log is not None else None
    try:
        while time.monotonic() - start < timeout:
            try:
                data: bytes = child.read_nonblocking(65536, timeout=1)  # type: ignore[assignment]
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                outcome = "exited"
                break
            window = bytes(transcript[-4096:]) + data
            transcript += data
            if sink is not None:
                sink.write(data)
                sink.flush()
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                runner.detail(f"console: {line.decode(errors='replace').rstrip()}")
            if wanted.search(window):
                outcome = "login"
                break
            if PANIC.search(window):
                outcome = "panic"
                break
            if KVM_ERROR.search(window):
                outcome = "kvm"
                break
            if EMERGENCY.search(window):
                outcome = "emergency"
                break
    finally:
        child.close(force=True)
        if sink is not None:
            sink.close()
    text = transcript.decode(errors="replace")
    elapsed = time.monotonic() - start
    goal = "a login prompt" if expect is None else repr(expect)
    if outcome == "login":
        runner.info(f"{goal} after {elapsed:.0f}s")
        return text
    what = {
        "timeout": f"no {goal} within {timeout:.0f}s".replace("no a ", "no "),
        "panic": "the kernel panicked",
        "kvm": "KVM stopped the virtual machine",
        "emergency": "the system fell into an emergency shell",
        "exited": f"qemu exited before {goal}",
    }[outcome]
    tail = [ln for ln in text.splitlines() if ln.strip()][-TAIL:]
    kvm_failed = outcome == "kvm" or (kvm and outcome == "exited" and not GUEST_STARTED.search(transcript))
    if kvm_failed:  # qemu's own error lines first: the one-line note shows the first
        tail.sort(key=lambda ln: "qemu" not in ln.lower() and "kvm" not in ln.lower())
    kind = KvmFailed if kvm_failed else Panicked if outcome == "panic" else ImagesmithError
    raise kind(
        f"boot failed: {what}",
        hint="the last console lines are above; --console-log FILE keeps the whole console",
        details="\n".join(tail),
    )
