"""customize: turn the bootstrapped rootfs into this image.

Settings, users, overlay files, services and scripts, then the jobs deferred from
bootstrap (initramfs, depmod, hwdb) once, then first-boot hygiene: no SSH host keys,
an uninitialised machine-id.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from rich.markup import escape

from imagesmith.cache.store import Entry
from imagesmith.config import overlay
from imagesmith.config.facts import dpkg_filters
from imagesmith.config.load import Spec
from imagesmith.config.model import FileEntry, User
from imagesmith.disk import ids
from imagesmith.errors import ImagesmithError, config_error
from imagesmith.host.overlay import UPPER
from imagesmith.host.rootfs import chroot, inside, read_ids
from imagesmith.outputs import inventory
from imagesmith.outputs.sbom import distro_of
from imagesmith.repro import reproducible, sources
from imagesmith.stages import bootfiles, bootstrap, deferred, prune, storage, update
from imagesmith.stages.base import KeyInputs, Stage, digest, tree_digest
from imagesmith.stages.bootfiles import write
from imagesmith.stages.context import Context
from imagesmith.stages.jobs import JobCache

POLICY_RC_D = "#!/bin/sh\n# imagesmith: no services start while the image is built\nexit 101\n"
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")


def set_hostname(ctx: Context) -> None:
    name = ctx.spec.config.host_name
    write(ctx.rootfs, "/etc/hostname", f"{name}\n")
    write(
        ctx.rootfs,
        "/etc/hosts",
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n\n"
        "::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
    )


def set_timezone(ctx: Context) -> None:
    tz = ctx.spec.config.timezone
    if not inside(ctx.rootfs, "/usr/share/zoneinfo").is_dir():
        raise config_error(
            f"time zone {tz!r}: the image has no time zone data",
            ctx.spec.locate("timezone"),
            "add tzdata to packages (the base layer has it)",
        )
    if not inside(ctx.rootfs, f"/usr/share/zoneinfo/{tz}").is_file():
        raise config_error(
            f"unknown time zone {tz!r}: /usr/share/zoneinfo/{tz} is not in the image",
            ctx.spec.locate("timezone"),
            "use a name from the tz database, e.g. Europe/Zurich or Etc/UTC",
        )
    localtime = inside(ctx.rootfs, "/etc/localtime", follow_last=False)
    localtime.unlink(missing_ok=True)
    localtime.symlink_to(f"/usr/share/zoneinfo/{tz}")
    write(ctx.rootfs, "/etc/timezone", f"{tz}\n")


def set_locale(ctx: Context) -> None:
    loc = ctx.spec.config.locale
    write(ctx.rootfs, "/etc/default/locale", f"LANG={loc}\n")
    if loc in ("C.UTF-8", "C", "POSIX"):
        return
    supported = inside(ctx.rootfs, "/usr/share/i18n/SUPPORTED")
    entries = (
        {
            line.split()[0]: line.strip()
            for line in supported.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        }
        if supported.exists()
        else {}
    )
    if loc not in entries:
        raise config_error(
            f"unknown locale {loc!r}",
            ctx.spec.locate("locale"),
            "use a name from /usr/share/i18n/SUPPORTED, e.g. en_GB.UTF-8 or de_CH.UTF-8",
        )
    write(ctx.rootfs, "/etc/locale.gen", entries[loc] + "\n")
    job_cache(ctx).data("locale-gen", ctx.rootfs, ctx.tools.locale_gen)


def job_cache(ctx: Context) -> JobCache:
    """Where the deferred jobs keep their results (``jobs.py``), in the build's stage cache."""
    layers = None
    if ctx.lower is not None and ctx.lower_digest is not None:
        layers = (ctx.rootfs.with_name(ctx.rootfs.name + UPPER), ctx.lower_digest)
    return JobCache(ctx.runner, ctx.store, str(ctx.spec.config_path), layers)


def boot_config(ctx: Context) -> None:
    spec, rootfs = ctx.spec, ctx.rootfs
    write(rootfs, "/etc/fstab", ids.fstab(spec.identity, data_mounted_early=spec.layout.data is not None))
    grows = spec.layout.grows.mount
    if grows != "/":  # without the file, the root grows
        write(rootfs, GROW, f"# written by imagesmith: the filesystem that fills the disk\nGROW={grows}\n")
    storage.install(spec, rootfs)
    update.install(spec, rootfs)
    # initramfs-tools cannot probe the root device at build time; without its type the
    # initramfs would carry no fsck and the root filesystem would never be checked
    write(rootfs, "/etc/initramfs-tools/conf.d/imagesmith-root", f"FSTYPE={spec.layout.root.fs}\n")
    bootfiles.before_hooks(spec, rootfs)


def _set_shadow_password(rootfs: Path, name: str, value: str) -> None:
    """Set a user's password field directly: the hash never reaches a command line or log."""
    shadow = inside(rootfs, "/etc/shadow")
    lines = shadow.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == name:
            fields[1] = value
            lines[i] = ":".join(fields)
    mode = stat.S_IMODE(shadow.stat().st_mode)
    shadow.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.chmod(shadow, mode)


def add_user(ctx: Context, index: int, user: User) -> None:
    rootfs = ctx.rootfs
    groups = read_ids(rootfs, "group")
    wanted = list(user.groups) + (["sudo"] if user.sudo and "sudo" not in user.groups else [])
    for j, group in enumerate(wanted):
        if group not in groups:
            raise config_error(
                f"user {user.name!r}: group {group!r} does not exist in the image",
                ctx.spec.locate("users", index, "groups", j),
                f"groups in the image: {', '.join(sorted(groups))}",
            )
    argv = ["useradd", "--create-home", "--shell", user.shell, "--user-group"]
    if user.uid is not None:
        argv += ["--uid", str(user.uid)]
    if wanted:
        argv += ["--groups", ",".join(wanted)]
    chroot(ctx.runner, rootfs, [*argv, user.name], hint=f"useradd failed for user {user.name!r}")
    # '*' : no password can match, key logins still work; a given hash is set as is
    _set_shadow_password(rootfs, user.name, user.password_hash or "*")
    uid = read_ids(rootfs, "passwd")[user.name]
    gid = read_ids(rootfs, "group")[user.name]
    if user.ssh_authorized_keys:
        ssh = inside(rootfs, f"/home/{user.name}/.ssh")
        ssh.mkdir(mode=0o700, exist_ok=True)
        keys = inside(rootfs, f"/home/{user.name}/.ssh/authorized_keys", follow_last=False)
        keys.unlink(missing_ok=True)  # a link there would be written through
        write(
            rootfs,
            f"/home/{user.name}/.ssh/authorized_keys",
            "\n".join(user.ssh_authorized_keys) + "\n",
            0o600,
        )
        for path in (ssh, keys):
            os.chown(path, uid, gid)
    if user.sudo and user.password_hash is None:
        write(
            rootfs,
            f"/etc/sudoers.d/90-imagesmith-{user.name}",
            f"{user.name} ALL=(ALL) NOPASSWD:ALL\n",
            0o440,
        )


def _owner(ctx: Context, entry: FileEntry, index: int) -> tuple[int, int]:
    user, _, group = entry.owner.partition(":")
    users, groups = read_ids(ctx.rootfs, "passwd"), read_ids(ctx.rootfs, "group")
    group = group or user
    if user not in users or group not in groups:
        raise config_error(
            f"owner {entry.owner!r} does not exist in the image",
            ctx.spec.locate("files", index, "owner"),
            "name a user and group that the image has (packages or `users:` create them)",
        )
    return users[user], groups[group]


def copy_overlay(ctx: Context, index: int, entry: FileEntry) -> None:
    """Copy a file or directory tree into the image (or write ``content``): owner as configured,
    modes kept unless ``mode`` is given."""
    uid, gid = _owner(ctx, entry, index)
    mode = int(entry.mode, 8) if entry.mode is not None else None
    if entry.content is not None:
        dest = inside(ctx.rootfs, entry.target)
        if dest.is_dir():
            raise ImagesmithError(
                f"`content:` would replace the directory {entry.target} in the image",
                location=ctx.spec.locate("files", index, "target"),
                hint="give the file's path in `target:`",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        # created with its final mode, so a secret is never readable by others, even briefly
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644 if mode is None else mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(entry.content)
        os.chown(dest, uid, gid)
        os.chmod(dest, 0o644 if mode is None else mode)
        return
    assert entry.source is not None
    source = Path(entry.source)
    pairs: list[tuple[Path, str]] = []
    if source.is_dir():
        found = overlay.walk(source, entry.ignore)
        pairs = [(path, str(Path(entry.target) / path.relative_to(source))) for path in found.files]
        if found.skipped:
            shown = ", ".join(found.skipped[:8]) + (" …" if len(found.skipped) > 8 else "")
            what = escape(f"files[{index}] ({source.name}/): not copied, as `ignore:` says: {shown}")
            ctx.runner.note(what)
    else:
        target = entry.target + source.name if entry.target.endswith("/") else entry.target
        pairs.append((source, target))
    for src, target in pairs:
        dest = inside(ctx.rootfs, target, follow_last=False)
        info = src.lstat()
        if stat.S_ISDIR(info.st_mode):
            real = inside(ctx.rootfs, target)
            if not real.is_dir():
                real.mkdir(parents=True)
                os.chmod(real, stat.S_IMODE(info.st_mode))
                os.chown(real, uid, gid)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            if dest.is_dir() and not dest.is_symlink():
                raise ImagesmithError(
                    f"overlay file {src} would replace the directory {target} in the image",
                    location=ctx.spec.locate("files", index, "source"),
                )
            dest.unlink()
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(src), dest)
            os.lchown(dest, uid, gid)
            continue
        shutil.copyfile(src, dest)
        os.chown(dest, uid, gid)
        os.chmod(dest, stat.S_IMODE(info.st_mode) if mode is None else mode)


def _unit_exists(rootfs: Path, unit: str) -> bool:
    names = {unit}
    if "@" in unit:  # an instance such as getty@tty1.service comes from getty@.service
        prefix, _, rest = unit.partition("@")
        names.add(f"{prefix}@.{rest.rsplit('.', 1)[-1]}")
    return any(inside(rootfs, f"/{d}/{n}").exists() for d in UNIT_DIRS for n in names)


def services(ctx: Context) -> None:
    svc = ctx.spec.config.services
    for verb, units in (("enable", svc.enable), ("disable", svc.disable), ("mask", svc.mask)):
        if not units:
            continue
        for i, unit in enumerate(units):
            if verb != "mask" and not _unit_exists(ctx.rootfs, unit):
                raise config_error(
                    f"cannot {verb} {unit!r}: no such unit in the image",
                    ctx.spec.locate("services", verb, i),
                    "check the name (e.g. ssh.service) and that a package or layer installs it",
                )
        chroot(ctx.runner, ctx.rootfs, ["systemctl", verb, "--", *units])  # units are never options


def run_scripts(ctx: Context) -> None:
    for index, script in enumerate(ctx.spec.config.scripts):
        path = Path(script.run)
        argv = [str(path)] if os.access(path, os.X_OK) else ["sh", str(path)]
        hint = f"script {path} failed (listed at {ctx.spec.locate('scripts', index, 'run')})"
        if script.in_ == "host":
            env = {
                "ROOTFS": str(ctx.rootfs),
                "IMAGESMITH_NAME": ctx.spec.config.name,
                "IMAGESMITH_DEVICE": ctx.spec.device.device,
                "IMAGESMITH_ARCH": ctx.spec.device.arch,
            }
            ctx.runner.run(argv, env=env, cwd=path.parent, hint=hint)
        else:
            staged = stage_script(ctx.rootfs, index, path)
            try:
                chroot(ctx.runner, ctx.rootfs, [f"/{staged.relative_to(ctx.rootfs)}"], hint=hint)
            finally:
                staged.unlink(missing_ok=True)


def stage_script(rootfs: Path, index: int, source: Path) -> Path:
    """A copy of ``source`` in the image's /tmp, made as a new file (never through a link)."""
    staged = inside(rootfs, f"/tmp/imagesmith-script-{index}", follow_last=False)
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "wb") as out:
        out.write(source.read_bytes())
    return staged


PRESET = "/etc/systemd/system-preset/00-imagesmith.preset"
#: the dpkg path filters of ``slim``, kept in the image
SLIM = "/etc/dpkg/dpkg.cfg.d/imagesmith-slim"
#: read by the base layer's growroot: which filesystem fills the disk on first boot
GROW = "/usr/lib/imagesmith/grow.env"


def first_boot_hygiene(rootfs: Path) -> None:
    """Nothing that must be unique per device is baked into the image."""
    for key in inside(rootfs, "/etc/ssh").glob("ssh_host_*"):
        key.unlink()  # the entry itself: a link is removed, never followed
    write(rootfs, "/etc/machine-id", "uninitialized\n", 0o444)
    # On its first boot (machine-id "uninitialized") systemd enables every unit that its
    # presets allow, and Debian's presets allow nearly all: networkd would start next to
    # NetworkManager, a disabled service would come back. The image's units stay exactly
    # as the build left them.
    write(rootfs, PRESET, "# written by imagesmith: units are enabled at build time only\ndisable *\n")
    for path in [
        "/var/lib/dbus/machine-id",
        "/var/cache/apt/pkgcache.bin",
        "/var/cache/apt/srcpkgcache.bin",
        *bootstrap.BUILD_ONLY_FILES,
    ]:
        inside(rootfs, path, follow_last=False).unlink(missing_ok=True)


def run(ctx: Context) -> None:
    spec, rootfs = ctx.spec, ctx.rootfs
    write(rootfs, "/usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)
    set_hostname(ctx)
    set_timezone(ctx)
    set_locale(ctx)
    filters = dpkg_filters(spec)
    if filters:  # what the bootstrap left out stays out when the device installs more
        write(
            rootfs, SLIM, "# written by imagesmith (slim): what dpkg leaves out\n" + "\n".join(filters) + "\n"
        )
    boot_config(ctx)
    for index, user in enumerate(spec.config.users):
        add_user(ctx, index, user)
    for index, entry in enumerate(spec.config.files):
        copy_overlay(ctx, index, entry)
    # after the files (a site's own CAs), before the scripts (which may fetch over https)
    deferred.certificates(ctx.runner, rootfs, ctx.tools, job_cache(ctx))
    services(ctx)
    run_scripts(ctx)
    if spec.config.slim.firmware:  # before the initramfs copies any of it
        prune.prune_firmware(ctx.runner, spec, rootfs)
    if spec.config.slim.device_trees:  # before the hooks copy them to the boot partition
        prune.prune_device_trees(ctx.runner, spec, rootfs)
    deferred.finish(
        ctx.runner,
        rootfs,
        ctx.tools,
        prune=pruner(ctx) if spec.config.slim.modules else None,
        initramfs=not spec.config.slim.initramfs,
        jobs=job_cache(ctx),
        epoch=ctx.known_epoch,
        pruning=digest(prune.configured_modules(spec)) if spec.config.slim.modules else "-",
    )
    bootfiles.after_hooks(spec, rootfs, ctx.known_epoch)
    first_boot_hygiene(rootfs)
    storage.finish(spec, rootfs)
    reproducible.clamp_shadow(rootfs, ctx.known_epoch)
    inside(rootfs, "/usr/sbin/policy-rc.d", follow_last=False).unlink(missing_ok=True)


def pruner(ctx: Context) -> Callable[[str], None]:
    return lambda version: prune.prune_modules(ctx.runner, ctx.spec, ctx.rootfs, version)


def check_spec(spec: Spec) -> None:
    """Checks that need no rootfs, so that `build` fails before a long bootstrap.

    Time zone and locale names are checked against the build host's data when it has
    it; the image's own tzdata and locales are checked again during customize.
    """
    storage.check(spec)
    update.check(spec)
    prune.check(spec)
    for index, user in enumerate(spec.config.users):
        for other in spec.config.users[:index]:
            if other.name == user.name:
                raise config_error(
                    f"user {user.name!r} is listed twice",
                    spec.locate("users", index, "name"),
                    "merge the two entries",
                )
    zoneinfo = Path("/usr/share/zoneinfo")
    tz = spec.config.timezone
    if (zoneinfo / "Etc" / "UTC").exists() and not (zoneinfo / tz).is_file():
        raise config_error(
            f"unknown time zone {tz!r}",
            spec.locate("timezone"),
            "use a name from the tz database, e.g. Europe/Zurich or Etc/UTC",
        )
    supported = Path("/usr/share/i18n/SUPPORTED")
    loc = spec.config.locale
    if loc not in ("C.UTF-8", "C", "POSIX") and supported.exists():
        names = {line.split()[0] for line in supported.read_text().splitlines() if line.strip()}
        if loc not in names:
            raise config_error(
                f"unknown locale {loc!r}",
                spec.locate("locale"),
                "use a name from /usr/share/i18n/SUPPORTED, e.g. en_GB.UTF-8 or de_CH.UTF-8",
            )


#: config keys that no image stage reads (the bootstrap's own are in its inputs)
NOT_IN_IMAGE = (
    "includes", "layer_paths", "layers", "variables", "signing_key", "packages", "distribution", "sources",
    "publish",
)  # fmt: skip


def take_inventory(ctx: Context) -> inventory.Inventory:
    archives = sources.read_archives(ctx.work / sources.ARCHIVES)
    memo = ctx.store.memo if ctx.store is not None else None
    packages, roots = inventory.collect(ctx.spec, ctx.rootfs, ctx.copyrights, archives, memo)
    os_release = inside(ctx.rootfs, "/etc/os-release")
    text = os_release.read_text() if os_release.is_file() else ""
    distro = distro_of(text, ctx.spec.config.distribution.suite)
    slimmable = inventory.slimmable(ctx.spec, ctx.rootfs) | prune.savings(ctx.spec, ctx.rootfs)
    return inventory.Inventory(packages, roots, distro, slimmable)


INVENTORY = "inventory.json"


class Customize(Stage):
    """The bootstrapped rootfs made into this image; its inventory is this stage's cache
    entry (the customized rootfs itself is kept only as the filesystems made from it)."""

    name = "customize"
    code = ("stages/customize.py", "stages/bootfiles.py", "stages/storage.py", "stages/update.py",
            "stages/uboot.py",
            "stages/deferred.py", "stages/tools.py", "host/rootfs.py", "disk/ids.py", "outputs/inventory.py",
            "outputs/licenses.py", "repro/reproducible.py", "config/overlay.py", "stages/prune.py",
            "stages/jobs.py", "stages/native.py", "disk/fs/base.py", "disk/fs/ext4.py",
            "disk/fs/vfat.py")  # fmt: skip
    resumable = False  # a later stage restores it with its own entry

    def inputs(self, given: KeyInputs) -> dict[str, str]:
        spec = given.spec
        found = {name: digest(value) for name, value in given.config.items() if name not in NOT_IN_IMAGE}
        for index, entry in enumerate(spec.config.files):
            if entry.source is not None:
                found[f"files[{index}] {spec.portable(entry.source)}"] = tree_digest(
                    Path(entry.source), entry.ignore
                )
        for index, script in enumerate(spec.config.scripts):
            found[f"scripts[{index}] {spec.portable(script.run)}"] = tree_digest(Path(script.run))
        found["SOURCE_DATE_EPOCH"] = "from the packages" if given.epoch is None else str(given.epoch)
        if spec.layout.data is not None:
            found["imagesmith:storage/"] = tree_digest(storage.FILES)  # the initramfs script
        if spec.config.update is not None:  # the certificates the device trusts
            trusted = spec.config.update.keyring or spec.config.update.cert
            found[f"update keyring {spec.portable(trusted)}"] = tree_digest(Path(trusted))
            found["imagesmith:storage/update/"] = tree_digest(update.FILES)  # the mark-good unit
        found["device"] = digest(spec.device.model_dump(mode="json"))
        found["layout"] = digest(spec.layout.model_dump(mode="json"))
        return found

    def title(self, ctx: Context) -> str:
        return "settings, users, files, services, scripts, initramfs"

    def run(self, ctx: Context) -> None:
        if ctx.epoch is None:  # neither given nor locked: the packages' newest changelog
            ctx.set_epoch(reproducible.source_date_epoch(ctx.rootfs))
        run(ctx)
        ctx.products[INVENTORY] = take_inventory(ctx)

    def save(self, ctx: Context, entry: Path) -> dict[str, str]:
        ctx.products[INVENTORY].save(entry / INVENTORY)
        return {"epoch": str(ctx.known_epoch)}  # the later stages' epoch, when this one is not run

    def restore(self, ctx: Context, entries: dict[str, Entry]) -> bool:
        entry = entries[self.name]
        epoch = str(entry.meta.get("epoch", ""))
        if not epoch.isdigit():
            return False
        if ctx.epoch is None:
            ctx.set_epoch(int(epoch))
        ctx.products[INVENTORY] = inventory.Inventory.load(entry.path / INVENTORY)
        return True


STAGE = Customize()
