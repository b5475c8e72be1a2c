"""U-Boot's A/B boot counter: the boot state's two copies, the script image, the script
filled in for a layout, RAUC's system.conf for it; and the script itself run by real
U-Boot (Debian's u-boot-qemu) in qemu against a small disk, one boot per qemu run."""

from __future__ import annotations

import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.facts import boots_through_uboot, packages
from imagesmith.config.load import load_spec
from imagesmith.disk import ids
from imagesmith.errors import ImagesmithError
from imagesmith.stages import bootfiles, uboot, update

from .test_update import key_pair

Write = Callable[[str, str], Path]
UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return key_pair(tmp_path_factory.mktemp("uboot-keys"), "dev")


def config(
    write: Write, keys: tuple[Path, Path], layout: str = "ab", extra: str = "", device: str = "qemu-arm64"
) -> Path:
    key, cert = keys
    return write(
        "u.yaml",
        f"name: u\ndevice: {device}\nlayout: {layout}\nupdate: {{key: {key}, cert: {cert}{extra}}}\n",
    )


def test_a_copy_reads_back_and_a_damaged_one_is_refused() -> None:
    state = uboot.initial_state(3)
    raw = uboot.environment_copy(state, 7)
    assert len(raw) == uboot.ENV_SIZE and raw[4] == 7
    assert uboot.read_copy(raw) == (7, {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
    damaged = bytearray(raw)
    damaged[40] ^= 0x01
    assert uboot.read_copy(bytes(damaged)) is None
    assert uboot.read_copy(raw[:100]) is None  # cut short


def test_libubootenv_reads_both_copies_and_writes_the_older_with_a_higher_counter(tmp_path: Path) -> None:
    first, second = tmp_path / "uboot.env", tmp_path / "uboot-redund.env"
    state = uboot.initial_state(3)
    first.write_bytes(uboot.environment_copy(state, 1))
    second.write_bytes(uboot.environment_copy(state, 0))
    conf = tmp_path / "fw_env.config"
    conf.write_text(f"{first} 0x0000 0x4000\n{second} 0x0000 0x4000\n")
    shown = subprocess.run(["fw_printenv", "-c", str(conf)], capture_output=True, text=True, check=True)
    assert "BOOT_ORDER=A B" in shown.stdout.splitlines()
    subprocess.run(["fw_setenv", "-c", str(conf), "BOOT_ORDER", "B A"], check=True, capture_output=True)
    assert uboot.read_copy(first.read_bytes()) == (1, state)
    assert uboot.read_copy(second.read_bytes()) == (2, {**state, "BOOT_ORDER": "B A"})


def test_the_script_image_has_u_boot_s_legacy_header() -> None:
    image = uboot.script_image("echo hi\n", 1_700_000_000)
    magic, hcrc, when, size, _load, _ep, dcrc, os_, arch, kind, comp, name = struct.unpack(
        ">IIIIIIIBBBB32s", image[:64]
    )
    assert (magic, when, os_, arch, kind, comp) == (0x27051956, 1_700_000_000, 5, 22, 6, 0)
    assert hcrc == zlib.crc32(image[:4] + b"\0\0\0\0" + image[8:64])
    payload = image[64:]
    assert size == len(payload) and dcrc == zlib.crc32(payload)
    assert payload == struct.pack(">II", 8, 0) + b"echo hi\n"
    assert name.rstrip(b"\0") == b"imagesmith boot counter"


@pytest.mark.parametrize("layout", ["ab", "ab-gpt"])
def test_the_script_names_the_layout_s_partitions_and_slots(
    write: Write, keys: tuple[Path, Path], layout: str
) -> None:
    spec = load_spec(config(write, keys, layout, ", attempts: 5"))
    assert boots_through_uboot(spec)
    script = uboot.boot_script(spec, bootfiles.cmdline(spec))
    assert "@" not in script.replace("imagesmith-boot", "")  # every placeholder filled
    assert f"setenv root_B {ids.root_device(spec.identity, 'b')}\n" in script
    assert "setenv part_A 2\nsetenv part_B 3\n" in script and "setenv BOOT_A_LEFT 5\n" in script
    args = script.split('setenv bootargs "')[1].split('"')[0]
    assert "root=${root} rauc.slot=${slot}" in args and "root=PARTUUID" not in args
    assert "u-boot-qemu" in packages(spec) and "libubootenv-tool" in packages(spec)


def test_rauc_keeps_the_boot_state_with_u_boot_and_only_root_slots(
    write: Write, keys: tuple[Path, Path]
) -> None:
    spec = load_spec(config(write, keys, extra=", attempts: 2"))
    update.check(spec)
    conf = update.system_conf(spec)
    assert "bootloader=uboot\n" in conf and "boot-attempts=2\nboot-attempts-primary=2\n" in conf
    assert "[slot.rootfs.1]" in conf and "bootfs" not in conf and "custom" not in conf
    plain = update.system_conf(load_spec(config(write, keys)))
    assert "boot-attempts" not in plain  # RAUC's default, 3: the keys need RAUC 1.10


def test_attempts_other_than_three_need_a_newer_rauc(write: Write, keys: tuple[Path, Path]) -> None:
    path = config(write, keys, extra=", attempts: 2")
    path.write_text(path.read_text() + "distribution: {suite: bookworm}\n")
    with pytest.raises(ImagesmithError, match=r"RAUC 1\.10") as caught:
        update.check(load_spec(path))
    assert caught.value.exit_code == 2 and "u.yaml:4" in str(caught.value.location)


# -- the script in real U-Boot ---------------------------------------------------------

SECTOR = 512
KERNELS = {"A": 2, "B": 5}  # bytes
BOOT_START, ROOT_A_START, ROOT_B_START, PART_SECTORS = 2048, 67584, 100352, 32768


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


class Disk:
    """A small dos disk as the ab layout has it: FAT with the script and the state, two
    ext4 slots whose /boot/vmlinuz says which slot it is (not a kernel: booti refuses
    it, the script resets, and qemu stops: one boot per run)."""

    def __init__(self, work: Path, script: str) -> None:
        self.work, self.path = work, work / "disk.img"
        boot = work / "boot.vfat"
        with open(boot, "wb") as handle:
            handle.truncate(32 * 1024 * 1024)
        run(["mkfs.vfat", str(boot)])
        files = {"boot.scr": uboot.script_image(script, 0)}
        for name, counter in zip(uboot.ENV_FILES, (1, 0), strict=True):
            files[name] = uboot.environment_copy(uboot.initial_state(2), counter)
        for name, data in files.items():
            (work / name).write_bytes(data)
            run(["mcopy", "-i", str(boot), str(work / name), "::"])
        with open(self.path, "wb") as handle:
            handle.truncate(80 * 1024 * 1024)
        layout = (
            f"label: dos\nstart={BOOT_START}, size=65536, type=c, bootable\n"
            f"start={ROOT_A_START}, size={PART_SECTORS}, type=83\n"
            f"start={ROOT_B_START}, size={PART_SECTORS}, type=83\n"
        )
        run(["sfdisk", "-q", str(self.path)], input=layout)
        self.put(boot, BOOT_START)
        for slot, start in (("A", ROOT_A_START), ("B", ROOT_B_START)):
            tree = work / f"root-{slot}"
            (tree / "boot").mkdir(parents=True)
            (tree / "boot" / "vmlinuz-1").write_text(slot * KERNELS[slot])
            (tree / "boot" / "initrd.img-1").write_text("initrd\n")
            (tree / "boot" / "vmlinuz").symlink_to("vmlinuz-1")
            (tree / "boot" / "initrd.img").symlink_to("initrd.img-1")
            fs = work / f"root-{slot}.ext4"
            run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(fs), "16M"])
            self.put(fs, start)

    def put(self, part: Path, start: int) -> None:
        run(["dd", f"if={part}", f"of={self.path}", "bs=512", f"seek={start}", "conv=notrunc", "status=none"])

    def boot(self) -> str:
        """One boot: what the script said."""
        argv = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", "512", "-nographic",
                "-no-reboot", "-nic", "none", "-bios", str(UBOOT), "-device", "virtio-blk-device,drive=d0",
                "-drive", f"if=none,id=d0,format=raw,file={self.path}"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL).stdout
        text = out.decode(errors="replace")
        said = [ln.strip() for ln in text.splitlines() if "imagesmith-boot:" in ln]
        # which slot's kernel was read: their sizes differ
        said += [f"kernel of {slot} read" for slot, size in KERNELS.items() if f"\n{size} bytes read" in text]
        return "\n".join(said)

    def spec_of(self, name: str) -> str:
        return f"{self.path}@@{BOOT_START * SECTOR}"

    def copy(self, name: str) -> tuple[int, dict[str, str]] | None:
        raw = subprocess.run(
            ["mcopy", "-n", "-i", self.spec_of(name), f"::{name}", "-"], capture_output=True
        ).stdout
        return uboot.read_copy(raw)

    def replace(self, name: str, data: bytes) -> None:
        (self.work / name).write_bytes(data)
        run(["mcopy", "-o", "-i", self.spec_of(name), str(self.work / name), f"::{name}"])


@pytest.mark.slow
def test_real_u_boot_counts_down_falls_back_and_survives_a_damaged_copy(
    write: Write, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = load_spec(config(write, keys, extra=", attempts: 2"))
    disk = Disk(tmp_path, uboot.boot_script(spec, bootfiles.cmdline(spec)))
    said = [disk.boot() for _ in range(5)]
    # two attempts of A, two of B, then none left: both get theirs back
    assert said[0].startswith("imagesmith-boot: slot A (order A B, attempts left A 1 B 2)")
    assert said[1].startswith("imagesmith-boot: slot A (order A B, attempts left A 0 B 2)")
    assert said[2].startswith("imagesmith-boot: slot B (order A B, attempts left A 0 B 1)")
    assert said[3].startswith("imagesmith-boot: slot B (order A B, attempts left A 0 B 0)")
    assert "no slot has attempts left" in said[4]
    for text, slot in zip(said[:4], "AABB", strict=True):
        assert f"kernel of {slot} read" in text and f"slot {slot} did not boot: a reset" in text
    # what RAUC does after an install, written as fw_setenv writes it: B first
    newest = max(uboot.ENV_FILES, key=lambda n: (disk.copy(n) or (-1, {}))[0])
    counter, state = disk.copy(newest) or (0, {})
    older = next(n for n in uboot.ENV_FILES if n != newest)
    disk.replace(
        older, uboot.environment_copy({**state, "BOOT_ORDER": "B A", "BOOT_B_LEFT": "2"}, counter + 1)
    )
    said_now = disk.boot()
    assert said_now.startswith("imagesmith-boot: slot B (order B A, attempts left A 2 B 1)")
    assert "kernel of B read" in said_now
    # the newest copy damaged (a power cut while it was written): the other one's state
    newest = max(uboot.ENV_FILES, key=lambda n: (disk.copy(n) or (-1, {}))[0])
    raw = bytearray(uboot.environment_copy({"BOOT_ORDER": "A B"}, 200))
    raw[10] ^= 0xFF
    disk.replace(newest, bytes(raw))
    assert disk.copy(newest) is None
    # the state before the last write (B had 2 left), one attempt taken again
    assert disk.boot().startswith("imagesmith-boot: slot B (order B A, attempts left A 2 B 1)")
    assert disk.copy(newest) is not None, "the damaged copy is written anew"
    # both damaged: U-Boot's start, slot A, said as such
    for name in uboot.ENV_FILES:
        disk.replace(name, bytes(raw))
    said_now = disk.boot()
    assert "no valid boot state: starting from slot A" in said_now
    assert "slot A (order A B, attempts left A 1 B 2)" in said_now


def fat_disk(work: Path, files: dict[str, bytes]) -> Path:
    """A dos disk whose one partition is FAT holding ``files``."""
    boot, disk = work / "boot.vfat", work / "disk.img"
    with open(boot, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    run(["mkfs.vfat", str(boot)])
    for name, data in files.items():
        (work / name).write_bytes(data)
        run(["mcopy", "-i", str(boot), str(work / name), "::"])
    with open(disk, "wb") as handle:
        handle.truncate(10 * 1024 * 1024)
    run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048, type=c\n")
    run(["dd", f"if={boot}", f"of={disk}", "bs=512", "seek=2048", "conv=notrunc", "status=none"])
    return disk


def test_boot_runs_the_image_s_own_u_boot_and_refuses_the_pi_s(tmp_path: Path) -> None:
    from imagesmith.boot import qemu
    from imagesmith.host.run import Runner

    files = {"boot.scr": uboot.script_image("echo hi\n", 0), "u-boot.bin": b"u-boot"}
    (tmp_path / "vm").mkdir()
    found = qemu.extract(Runner(), fat_disk(tmp_path / "vm", files), tmp_path / "vm")
    assert found.firmware is not None and found.firmware.read_bytes() == b"u-boot"
    assert (found.arch, found.kernel) == ("arm64", None)
    (tmp_path / "pi").mkdir()
    pi = fat_disk(tmp_path / "pi", {**files, "config.txt": b"kernel=u-boot.bin\n"})
    with pytest.raises(ImagesmithError, match="U-Boot for the Raspberry Pi") as caught:
        qemu.extract(Runner(), pi, tmp_path / "pi")
    assert "qemu-arm64" in (caught.value.hint or "")


def test_devices_say_which_a_b_method_each_kernel_has() -> None:
    from imagesmith.cli.config import update_methods
    from imagesmith.config import catalog
    from imagesmith.config.model import Device
    from imagesmith.config.nodes import load_yaml
    from imagesmith.config.validate import validate

    def device(name: str) -> Device:
        path = catalog.find("devices", name)
        assert path is not None
        return validate(Device, load_yaml(path), name)

    pi4, pi5 = device("pi4"), device("pi5")
    assert update_methods(pi4, pi4.kernels["debian"]) == ["ab, ab-gpt (U-Boot)"]
    assert "ab-tryboot" in update_methods(pi4, pi4.kernels["raspberrypi"])
    assert update_methods(pi5, pi5.kernels["debian"]) == []


def test_slim_keeps_what_rauc_mounts_a_bundle_with(
    write: Write, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    from imagesmith.stages.prune import wanted_modules

    path = config(write, keys)
    path.write_text(path.read_text() + "slim: {modules: true}\n")
    spec = load_spec(path)
    names = wanted_modules(spec, tmp_path)
    assert {"loop", "squashfs", "dm_verity", "dm_mod"} <= set(names)


def test_placing_u_boot_never_writes_through_a_link_and_links_the_slot_s_kernel(
    write: Write, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = load_spec(config(write, keys))
    rootfs, outside = tmp_path / "rootfs", tmp_path / "outside"
    outside.write_text("the build host's\n")
    (rootfs / "usr/lib/u-boot/qemu_arm64").mkdir(parents=True)
    (rootfs / "usr/lib/u-boot/qemu_arm64/u-boot.bin").write_bytes(b"u-boot")
    (rootfs / "boot/firmware").mkdir(parents=True)
    for name in ("vmlinuz-1", "initrd.img-1"):
        (rootfs / "boot" / name).write_text(name)
    (rootfs / "boot/firmware/vmlinuz").write_text("a copy the hooks left")
    (rootfs / "boot/firmware/uboot.env").symlink_to(outside)
    uboot.place(spec, rootfs, bootfiles.cmdline(spec), "1", 0)
    assert outside.read_text() == "the build host's\n"
    firmware = rootfs / "boot/firmware"
    assert sorted(p.name for p in firmware.iterdir()) == [
        "boot.scr",
        "u-boot.bin",
        "uboot-redund.env",
        "uboot.env",
    ]
    assert uboot.read_copy((firmware / "uboot.env").read_bytes()) == (1, uboot.initial_state(3))
    assert (rootfs / "boot/vmlinuz").readlink() == Path("vmlinuz-1")
    assert (
        (rootfs / "etc/fw_env.config").read_text().endswith("/boot/firmware/uboot-redund.env 0x0000 0x4000\n")
    )


def test_a_layout_without_a_fat_boot_partition_is_a_config_error(
    write: Write, keys: tuple[Path, Path]
) -> None:
    ab = (Path(uboot.__file__).parents[1] / "catalog" / "layouts" / "ab.yaml").read_text()
    write(
        "layouts/mine.yaml",
        ab.replace("layout: ab", "layout: mine").replace("mount: /boot/firmware", "mount: /boot"),
    )
    with pytest.raises(ImagesmithError, match="no FAT partition at /boot/firmware") as caught:
        update.check(load_spec(config(write, keys, layout="mine")))
    assert caught.value.exit_code == 2 and "u.yaml:3" in str(caught.value.location)
