"""bootstrap: mmdebstrap installs the packages from the Debian mirror into a rootfs.

Expensive maintainer-script work that would run under qemu-user once per package is
deferred: initramfs generation, depmod and the udev hardware database are diverted to
no-op stubs here and done once, at the end of customize (see ``deferred.py``).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import shlex
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagesmith import redact
from imagesmith.cache.hashing import file_sha256
from imagesmith.cache.store import Entry
from imagesmith.config.facts import base_packages, components, dpkg_filters, packages
from imagesmith.config.load import Spec
from imagesmith.errors import ImagesmithError, Location, config_error
from imagesmith.host import binfmt as host
from imagesmith.host import diagnose, progress
from imagesmith.host.rootfs import ISOLATE
from imagesmith.host.run import Explain
from imagesmith.outputs import inventory
from imagesmith.repro import lock, mirror, sources
from imagesmith.stages import deferred, installs, tools
from imagesmith.stages.base import KeyInputs, Stage, digest
from imagesmith.stages.context import Context

#: Build-time apt settings (mmdebstrap writes them to 99mmdebstrap; customize removes it).
#: debconf's preconfiguration runs apt-extracttemplates and a perl frontend over every
#: package before unpacking: under emulation about a quarter of the bootstrap, for
#: questions nobody is asked (the build is non-interactive; each postinst still loads
#: its own templates).
APT_OPTIONS = ['Acquire::Languages "none"', "#clear DPkg::Pre-Install-Pkgs;"]
#: No fsync per unpacked file: a failed build is thrown away whole anyway.
DPKG_OPTIONS = ["force-unsafe-io"]
#: What mmdebstrap leaves of those options in the rootfs.
BUILD_ONLY_FILES = ["/etc/apt/apt.conf.d/99mmdebstrap", "/etc/dpkg/dpkg.cfg.d/99mmdebstrap"]
__all__ = ["components", "packages"]  # spec facts, from config.facts (where they live)


def mmdebstrap(
    spec: Spec,
    target: Path,
    *,
    arch: str,
    variant: str,
    include: list[str],
    extra: Sequence[str] = (),
    auth: Path | None = None,
    mirrors: Sequence[str] = (),
) -> list[str]:
    """An mmdebstrap command line from the spec's distribution, with imagesmith's options.
    The mirror's credentials never reach it: ``auth`` (see ``write_auth``) holds them."""
    dist = spec.config.distribution
    return [
        *ISOLATE,  # mmdebstrap's mounts and processes end with it, even if it is killed
        "mmdebstrap",
        "--mode=unshare",  # as root: private namespaces; as an ordinary user: see userns.py
        "--verbose",  # apt's and dpkg's lines: the log has them, and progress counts them
        f"--arch={arch}",
        f"--variant={variant}",
        f"--include={','.join(include)}",
        *[f"--aptopt={opt}" for opt in APT_OPTIONS],
        *[f"--dpkgopt={opt}" for opt in [*DPKG_OPTIONS, *dpkg_filters(spec)]],
        # essential .deb files stay in apt's archive until the end: hashed, and kept in the cache
        "--skip=essential/unlink",
        *auth_hooks(auth),
        *extra,
        dist.suite,
        str(target),
        redact.strip_url(dist.mirror),
        *mirrors,
    ]


AUTH_FILE = "/etc/apt/auth.conf.d/90imagesmith.conf"


def write_auth(spec: Spec, target: Path) -> Path | None:
    """The credentials of the mirror and of the extra sources as apt's auth.conf (mode
    0600) in ``target``; None when no URL has any."""
    entries = []
    for url in [spec.config.distribution.mirror, *(source.url for source in spec.config.sources)]:
        credentials = redact.url_credentials(url)
        if credentials is None:
            continue
        parts = urllib.parse.urlsplit(redact.strip_url(url))
        machine = f"{parts.netloc}{parts.path}".rstrip("/")
        entries.append(f"machine {machine}\nlogin {credentials[0]}\npassword {credentials[1]}\n")
    if not entries:
        return None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(entries))
    return target


def auth_hooks(auth: Path | None) -> list[str]:
    """Hooks that put the credentials where apt reads them during the bootstrap only."""
    if auth is None:
        return []
    rel = AUTH_FILE.lstrip("/")
    return [
        f'--setup-hook=mkdir -p "$1/{Path(rel).parent}" && '
        f'install -m 600 {shlex.quote(str(auth))} "$1/{rel}"',
        f'--customize-hook=rm -f "$1/{rel}"',
    ]


def deb_cache(debs: Path | None) -> list[str]:
    """mmdebstrap options that take .deb files from ``debs`` and put new downloads there.

    Cached files are hard-linked (or copied) into the rootfs's apt archive before apt runs;
    apt checks each against the index and downloads only what is missing or different.
    New files go back under a unique temporary name and are renamed, so two builds at once never
    see a half-written .deb. The rootfs's archive is emptied by mmdebstrap's cleanup."""
    if debs is None:
        return []
    store = shlex.quote(str(debs))
    sync_in = (
        'mkdir -p "$1/var/cache/apt/archives"; '
        f'for f in {store}/*.deb; do [ -e "$f" ] || continue; '
        'ln "$f" "$1/var/cache/apt/archives/" 2>/dev/null || cp "$f" "$1/var/cache/apt/archives/"; done'
    )
    sync_out = (
        'for f in "$1"/var/cache/apt/archives/*.deb; do [ -e "$f" ] || continue; '
        f'n={store}/"${{f##*/}}"; [ -e "$n" ] && continue; '
        # a unique temporary name: builds in their own PID namespaces share $$ values
        't=$(mktemp "$n.part.XXXXXX") && cp "$f" "$t" && chmod 644 "$t" && mv "$t" "$n"; done'
    )
    return [f"--setup-hook={sync_in}", f"--customize-hook={sync_out}"]


def deb_hashes(target: Path) -> list[str]:
    """A hook that writes the sha256 of every .deb apt used to ``target``, outside the
    rootfs: the lock file records them."""
    out = shlex.quote(str(target))
    # none at all when a second install found everything installed and no .deb store is used
    return [
        f'--customize-hook=cd "$1/var/cache/apt/archives" && '
        f'for f in *.deb; do [ ! -e "$f" ] || sha256sum -- "$f"; done > {out}'
    ]


def pinned(preferences: Path | None) -> list[str]:
    """Hooks that put the lock's apt preferences in place for the bootstrap only."""
    if preferences is None:
        return []
    rel = lock.PREFERENCES.lstrip("/")
    return [
        f'--setup-hook=mkdir -p "$1/{Path(rel).parent}" && cp {shlex.quote(str(preferences))} "$1/{rel}"',
        f'--customize-hook=rm -f "$1/{rel}"',
    ]


#: openssh-server's postinst makes each host key that is not there yet (RSA under
#: emulation: seconds). Every device makes its own on first boot and customize removes
#: /etc/ssh/ssh_host_* from the image, so a stand-in file for each, made before the
#: package is configured, saves making keys nobody keeps.
HOST_KEYS_HOOK = (
    'mkdir -p "$1/etc/ssh" && for t in rsa ecdsa ed25519; do : > "$1/etc/ssh/ssh_host_${t}_key"; done'
)


def command(
    spec: Spec,
    target: Path,
    include: list[str],
    debs: Path | None = None,
    hashes: Path | None = None,
    preferences: Path | None = None,
    auth: Path | None = None,
    sources_options: Sequence[str] = (),
    *,
    onto: bool = False,
) -> list[str]:
    """An image's install of ``include``: the bootstrap's, or (``onto``) the packages
    stage's over a bootstrapped rootfs, where apt finds the essential packages installed
    and installs only ``include`` (``packages.py``). ``sources_options``: the extra
    sources' hooks, then their apt lines (mirrors after the distribution's)."""
    hooks = [o for o in sources_options if o.startswith("--")]
    lines = [o for o in sources_options if not o.startswith("--")]
    # the programs are diverted once, before the first package that calls them
    first = ["--skip=check/empty"] if onto else [f"--essential-hook={deferred.divert_hook()}"]
    if not onto and "openssh-server" in include:
        first.append(f"--essential-hook={HOST_KEYS_HOOK}")
    return mmdebstrap(
        spec,
        target,
        arch=spec.device.arch,
        variant="apt",
        include=include,
        auth=auth,
        extra=[
            f"--components={','.join(components(spec))}",
            *first,
            *pinned(preferences),
            *deb_cache(debs),
            *deb_hashes(hashes or target.with_name(lock.DEB_HASHES)),
            *hooks,
        ],
        mirrors=lines,
    )


def tools_command(spec: Spec, target: Path, debs: Path | None = None, auth: Path | None = None) -> list[str]:
    """The native tools tree (see ``tools.py``): same suite and mirror, the host's arch."""
    return mmdebstrap(
        spec,
        target,
        arch=host.native_arch(),
        variant="essential",
        include=tools.PACKAGES,
        extra=deb_cache(debs),
        auth=auth,
    )


def unknown_packages(spec: Spec, index: mirror.Index) -> None:
    """Fail at the config line that names a package the suite does not have, before the
    minutes of a bootstrap (apt would say so only after the essential packages)."""
    names = index.names()
    unknown = [name for name in packages(spec) if not name.endswith("-") and name.split(":")[0] not in names]
    if not unknown:
        return
    name = unknown[0]
    dist = spec.config.distribution
    others = f" (and {len(unknown) - 1} more: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.7)
    raise config_error(
        f"no package {name!r} in {dist.suite} ({spec.device.arch}) on "
        f"{redact.strip_url(dist.mirror)}{others}",
        _where_named(spec, name),
        f"did you mean {' or '.join(close)}?"
        if close
        else f"check the spelling: the names are those of https://packages.debian.org/{dist.suite}/",
    )


def _where_named(spec: Spec, name: str) -> Location:
    """The config or layer line that asks for ``name`` (else the device line: its catalog
    entry asks for it)."""
    listed = spec.tree.get("packages")
    if listed is not None and isinstance(listed.value, list):
        for item in listed.value:
            if item.value == name:
                return item.location
    return spec.locate("device")


def check_names(ctx: Context) -> None:
    """``unknown_packages`` against the mirror's index, when the index can be read (else
    mmdebstrap reports what it finds: an unreachable mirror, say)."""
    spec, dist = ctx.spec, ctx.spec.config.distribution
    try:
        index = mirror.fetch(dist.mirror, dist.suite, components(spec), spec.device.arch)
        for source in spec.config.sources:
            for suite in sources.suites(spec, source):
                extra = mirror.fetch(source.url, suite, list(source.components), spec.device.arch)
                index = index.merged(extra)
    except ImagesmithError as exc:
        ctx.runner.log(f"package names not checked before the bootstrap: {exc}")
        return
    unknown_packages(spec, index)


def check_mirror(ctx: Context) -> None:
    """Before the first install of a build: the mirror still has the locked versions, or
    (no lock) every package named exists. Once a build: both install stages call it."""
    if ctx.mirror_checked:
        return
    if ctx.lock is not None:
        with ctx.runner.stage("lock", f"the mirror still has the {len(ctx.lock.packages)} locked versions"):
            lock.check_available(ctx.lock, ctx.spec)
    else:  # a lock names exactly what the mirror had
        check_names(ctx)
    ctx.mirror_checked = True


KEYS_PREFIX = "imagesmith-keys-"


def remove_stale_keys() -> None:
    """Key staging directories of builds that were killed (their process is gone)."""
    for path in Path(tempfile.gettempdir()).glob(f"{KEYS_PREFIX}*"):
        pid = path.name.removeprefix(KEYS_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Access:
    """What apt needs to reach the archives during an install, valid inside ``access``."""

    auth: Path | None  # the credentials (apt's auth.conf)
    preferences: Path | None  # the lock's pins
    options: list[str]  # the extra sources' hooks and apt lines
    explain: Explain  # apt's errors → what went wrong and what to do


@contextlib.contextmanager
def access(ctx: Context) -> Iterator[Access]:
    """The credentials, the lock's pins and the extra sources' keys, for one install; the
    credentials and keys are gone when it ends, whatever happened."""
    dist = ctx.spec.config.distribution
    extra = [(source.name, redact.strip_url(source.url)) for source in ctx.spec.config.sources]
    explain = functools.partial(
        diagnose.apt, mirror=redact.strip_url(dist.mirror), suite=dist.suite, extra=extra
    )
    preferences = None
    if ctx.lock is not None:
        preferences = ctx.work / "lock.pref"
        preferences.write_text(lock.preferences(ctx.lock), encoding="utf-8")
    auth = write_auth(ctx.spec, ctx.work / "apt-auth.conf")
    remove_stale_keys()
    # apt takes no spaces in signed-by: not in the output directory, which may have some
    staging = Path(tempfile.mkdtemp(prefix=f"{KEYS_PREFIX}{os.getpid()}-"))
    try:
        keys = sources.stage_keys(ctx.runner, ctx.spec, staging)
        pins = None
        if keys:
            pins = staging / "sources.pref"
            pins.write_text(sources.preferences(ctx.spec), encoding="utf-8")
        options = [*sources.hooks(ctx.spec, keys, pins), *sources.apt_lines(ctx.spec, keys, in_image=False)]
        yield Access(auth, preferences, options, explain)
    finally:  # the credentials exist only while apt needs them
        if auth is not None:
            auth.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)


#: what mmdebstrap's setup copies from the build host into a rootfs that has none: also
#: through a dangling symlink (systemd-resolved's /etc/resolv.conf), which may point anywhere
HOST_FILES = ("etc/resolv.conf", "etc/hostname")
#: what its setup writes only where there is none, and must write as in the first install:
#: the sources apt reads during the install (the extra sources' hooks rewrite it at the end)
SETUP_FILES = ("etc/apt/sources.list",)
HELD = ".imagesmith-held"


@contextlib.contextmanager
def setup_files(rootfs: Path, host: Path = Path("/")) -> Iterator[None]:
    """mmdebstrap run over a rootfs sets it up as over an empty one and leaves nothing of
    the build host's in it. The rootfs's own HOST_FILES and SETUP_FILES are moved aside
    while it runs (it then writes only new plain files in the rootfs's /etc). Afterwards
    its copies of the host's files are removed, and each held file is put back unless a
    new one is there (its setup's sources, or a file a package installed meanwhile wrote)."""
    copied = {name: (host / name).read_bytes() if (host / name).is_file() else None for name in HOST_FILES}
    for name in (*HOST_FILES, *SETUP_FILES):
        if os.path.lexists(rootfs / name):
            os.rename(rootfs / name, rootfs / (name + HELD))
    try:
        yield
    finally:
        for name in (*HOST_FILES, *SETUP_FILES):
            path, kept = rootfs / name, rootfs / (name + HELD)
            host_copy = name in HOST_FILES and not path.is_symlink() and path.is_file()
            if host_copy and path.read_bytes() == copied[name]:
                path.unlink()  # the host's, copied by mmdebstrap
            if os.path.lexists(kept):
                if os.path.lexists(path):
                    os.unlink(kept)
                else:
                    os.rename(kept, path)


def run(ctx: Context) -> None:
    """The rootfs of ``base_packages`` (and the tools tree); ``ctx.work/debs.sha256``
    lists the .deb files used."""
    include = base_packages(ctx.spec)
    ctx.runner.detail(f"packages: {shlex.join(include)}")
    tree = ctx.work / "tools" if tools.needed(ctx.spec) else None
    with access(ctx) as apt, setup_files(ctx.rootfs), contextlib.ExitStack() as both:
        if tree is not None:  # native, on the other core while the image's install is emulated
            both.enter_context(
                ctx.runner.alongside(
                    tools_command(ctx.spec, tree, ctx.debs, apt.auth),
                    ctx.work / "tools.out",
                    name="mmdebstrap (the native tools tree)",
                    explain=apt.explain,
                )
            )
        ctx.runner.run(
            command(ctx.spec, ctx.rootfs, include, ctx.debs, ctx.work / lock.DEB_HASHES, apt.preferences,
                    apt.auth, apt.options),
            name="mmdebstrap",
            explain=apt.explain,
            progress=progress.Apt(),
        )  # fmt: skip
    if tree is not None:
        (ctx.work / "tools.out").unlink()
        ctx.tools_tree = tree


def found_packages(ctx: Context) -> None:
    """After an install: which packages the extra sources gave (SBOMs, manifest, lock), and
    every copyright file kept (a script that strips /usr/share/doc must not cost the SBOM
    its licences)."""
    if ctx.spec.config.sources:
        found = sources.archives_of(ctx.spec, installed_debs(ctx))
        sources.write_archives(found, ctx.work / sources.ARCHIVES)
    inventory.keep_copyrights(ctx.rootfs, ctx.copyrights)


def installed_debs(ctx: Context) -> dict[tuple[str, str, str], str]:
    """(name, version, arch) → sha256 of the .deb, for every package dpkg installed."""
    hashes = lock.read_deb_hashes(ctx.work / lock.DEB_HASHES)
    found = {}
    for package in inventory.read_status(ctx.rootfs):
        key = (package.name, package.version, package.arch)
        found[key] = hashes.get(key, "")
    return found


class Bootstrap(Stage):
    """The rootfs of the device's and the layers' packages, their copyright files, the
    sha256 of each .deb used, and the native tools tree of a foreign target. The config's
    own packages come in the next stage (``packages.py``)."""

    name = "bootstrap"
    parts_read = True  # the packages stage reads its tools tree alone; the rootfs's digest keys jobs
    # not stages/deferred.py: the bootstrap takes only its divert hook, whose text is an
    # input ("mmdebstrap options"); how the deferred jobs run later is customize's code
    code = ("stages/bootstrap.py", "stages/installs.py", "stages/tools.py", "host/rootfs.py",
            "host/binfmt.py", "repro/lock.py", "repro/mirror.py", "repro/sources.py")  # fmt: skip

    def inputs(self, given: KeyInputs) -> dict[str, str]:
        spec = given.spec
        found = {
            "packages": digest(base_packages(spec)),
            "distribution": digest([given.config["distribution"], components(spec)]),
            "architecture": digest([spec.device.arch, tools.needed(spec), tools.PACKAGES]),
        }
        if given.lock is not None:
            found["lock"] = digest(given.lock.digest_input())
        if spec.config.sources:  # each by what it says and the key's content (not where the key is)
            found["sources"] = digest(
                [
                    {**entry, "key": file_sha256(Path(source.key))}
                    for entry, source in zip(given.config["sources"], spec.config.sources, strict=True)
                ]
            )
        found["mmdebstrap options"] = digest([APT_OPTIONS, DPKG_OPTIONS, deferred.divert_hook()])
        if dpkg_filters(spec):  # slim: what dpkg leaves out
            found["dpkg filters"] = digest(dpkg_filters(spec))
        return found

    def check(self, ctx: Context) -> None:
        check_mirror(ctx)

    def title(self, ctx: Context) -> str:
        dist = ctx.spec.config.distribution
        return f"{dist.name} {dist.suite} {ctx.spec.device.arch} with mmdebstrap"

    def run(self, ctx: Context) -> None:
        run(ctx)
        found_packages(ctx)
        if ctx.lock is not None:  # the config's own packages are not there yet
            lock.check_installed(ctx.lock, installed_debs(ctx), ctx.spec.config_path, partial=True)

    def save(self, ctx: Context, entry: Path) -> dict[str, str]:
        installs.save_install(ctx, entry)
        installs.save_tools(ctx, entry)
        return {}

    def committed(self, ctx: Context, entry: Entry) -> None:
        installs.committed(ctx, entry)

    def restore(self, ctx: Context, entries: dict[str, Entry]) -> bool:
        installs.restore_install(ctx, entries[self.name])
        installs.restore_tools(ctx, entries[self.name])
        return True


STAGE = Bootstrap()
