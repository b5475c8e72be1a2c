from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.cache.store import Entry
from imagesmith.config.load import load_spec
from imagesmith.host.run import Runner
from imagesmith.stages import bootstrap, installs
from imagesmith.stages.context import Context

Write = Callable[[str, str], Path]


def test_package_list_merges_device_layers_and_removals(write: Write) -> None:
    spec = load_spec(
        write(
            "img.yaml",
            """
            name: x
            device: pi4
            layers: [openssh]
            packages: [curl, -less, -nano, -firmware-brcm80211]
            users: [{name: a, sudo: true}]
            locale: C.UTF-8
            """,
        )
    )
    pkgs = bootstrap.packages(spec)
    assert {"curl", "openssh-server", "linux-image-arm64", "raspi-firmware", "sudo"} <= set(pkgs)
    assert "less" not in pkgs and "firmware-brcm80211" not in pkgs  # removed from a layer / the device
    assert "nano-" in pkgs  # matched nothing: apt keeps it out
    assert pkgs == sorted(p for p in pkgs if not p.endswith("-")) + [p for p in pkgs if p.endswith("-")]


def test_the_configs_own_packages_are_installed_after_the_layers(write: Write) -> None:
    """The bootstrap stage installs what the device and the layers name (with every
    removal), the packages stage what only the config and its settings name."""
    from imagesmith.config import facts

    spec = load_spec(
        write(
            "img.yaml",
            """
            name: x
            device: qemu-amd64
            layers: [base, openssh]
            packages: [curl, less, -fdisk, -nano]
            users: [{name: a, sudo: true}]
            """,
        )
    )
    base, own = facts.base_packages(spec), facts.own_packages(spec)
    assert own == ["curl", "sudo"]  # less: the base layer names it too
    assert {"openssh-server", "less", "systemd-sysv", "linux-image-amd64"} <= set(base)
    assert "fdisk" not in base and "nano-" in base and not set(base) & set(own)
    assert sorted(base + own) == sorted(bootstrap.packages(spec))
    # the second install: onto the bootstrapped rootfs, without diverting the programs again
    command = bootstrap.command(spec, Path("/r/rootfs"), own, onto=True)
    assert "--skip=check/empty" in command and "--include=curl,sudo" in command
    assert not any(a.startswith("--essential-hook=") for a in command)
    first = bootstrap.command(spec, Path("/r/rootfs"), base)
    assert "--skip=check/empty" not in first and any(a.startswith("--essential-hook=") for a in first)
    # no host keys made to be removed again: only where openssh-server is installed
    assert f"--essential-hook={bootstrap.HOST_KEYS_HOOK}" in first
    no_ssh = [name for name in base if name != "openssh-server"]
    assert f"--essential-hook={bootstrap.HOST_KEYS_HOOK}" not in bootstrap.command(spec, Path("/r"), no_ssh)


def test_mmdebstrap_is_called_with_the_spec(
    write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in mmdebstrap records its arguments (the real one runs in the slow tests)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "args.json"
    fake = bindir / "mmdebstrap"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys, os\n"
        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "os.makedirs(sys.argv[-2] + '/etc', exist_ok=True)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    spec = load_spec(
        write(
            "img.yaml", "name: x\ndevice: pi4\ndistribution: {suite: bookworm, mirror: 'http://m/debian'}\n"
        )
    )
    ctx = Context(spec=spec, runner=Runner(), work=tmp_path / "work")
    ctx.work.mkdir()
    bootstrap.run(ctx)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 2, "the image and, alongside, the native tools tree"
    args, tools_args = sorted(calls, key=lambda call: "--arch=amd64" in call)
    assert args[-3:] == ["bookworm", str(ctx.rootfs), "http://m/debian"]
    assert record.exists()
    assert "--arch=arm64" in args and "--mode=unshare" in args and "--variant=apt" in args
    assert "--components=main,non-free-firmware" in args
    # essential .deb files stay until the hooks hashed them and kept them, for both trees
    assert args.count("--skip=essential/unlink") == 1 and tools_args.count("--skip=essential/unlink") == 1
    assert any(a.startswith("--customize-hook=") and "sha256sum" in a for a in args)
    # no debconf preconfiguration pass and no fsync per file while building
    assert "--aptopt=#clear DPkg::Pre-Install-Pkgs;" in args and "--dpkgopt=force-unsafe-io" in args
    include = next(a for a in args if a.startswith("--include="))
    assert "raspi-firmware" in include and "linux-image-arm64" in include
    hook = next(a for a in args if a.startswith("--essential-hook="))
    assert "dpkg-divert" in hook and "/usr/sbin/update-initramfs" in hook and "depmod" in hook
    assert (ctx.rootfs / "etc").is_dir()
    assert "--arch=amd64" in tools_args
    assert "--include=kmod,udev,locales,ca-certificates,busybox-static,zstd,cpio,dracut-install" in tools_args
    assert tools_args[-3:] == ["bookworm", str(ctx.tools_tree), "http://m/debian"]


def test_kernel_versions_sort_by_version(tmp_path: Path) -> None:
    from imagesmith.stages.deferred import kernel_versions

    for version in ("6.12.9+deb13-arm64", "6.12.10+deb13-arm64", "6.1.0-28-arm64", "6.13-no-image"):
        (tmp_path / "usr" / "lib" / "modules" / version).mkdir(parents=True)
        (tmp_path / "boot").mkdir(exist_ok=True)
        if "no-image" not in version:
            (tmp_path / "boot" / f"vmlinuz-{version}").write_text("")
    assert kernel_versions(tmp_path) == ["6.1.0-28-arm64", "6.12.9+deb13-arm64", "6.12.10+deb13-arm64"]


def test_a_package_the_suite_does_not_have_is_found_at_its_config_line(write: Write) -> None:
    from imagesmith.errors import ImagesmithError
    from imagesmith.repro.mirror import Index

    config = write(
        "img.yaml",
        """
        name: x
        device: qemu-amd64
        packages:
          - curl
          - openssh-servr
        """,
    )
    spec = load_spec(config)
    known = {p: {"1": ""} for p in [*bootstrap.packages(spec), "openssh-server", "openssh-client"]}
    index = Index(
        {(name, "amd64"): v for name, v in known.items() if name != "openssh-servr"}, {"ssh-server"}
    )
    with pytest.raises(ImagesmithError) as info:
        bootstrap.unknown_packages(spec, index)
    exc = info.value
    assert exc.exit_code == 2
    assert str(exc).startswith(f"{config}:5:")
    assert "no package 'openssh-servr' in trixie (amd64)" in exc.message
    assert exc.hint == "did you mean openssh-server or ssh-server?"
    # a virtual package counts: apt installs a package that provides it
    spec = load_spec(write("ok.yaml", "name: x\ndevice: qemu-amd64\npackages: [ssh-server]\n"))
    bootstrap.unknown_packages(spec, Index({(n, "amd64"): v for n, v in known.items()}, {"ssh-server"}))


def _status(rootfs: Path, versions: dict[str, str]) -> None:
    status = rootfs / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    stanzas = [f"Package: {n}\nStatus: install ok installed\nVersion: {v}\n" for n, v in versions.items()]
    status.write_text("\n".join(stanzas))


def test_restoring_one_program_leaves_the_others_deferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagesmith.stages import deferred

    for stub in deferred.DIVERTED:
        (tmp_path / stub.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / stub.lstrip("/")).write_text(f"#!/bin/sh\n{deferred.STUB_MARK}\nexit 0\n")
    diversions = tmp_path / "var/lib/dpkg/diversions"
    diversions.parent.mkdir(parents=True)
    diversions.write_text(
        "".join(f"{p}\n{p}{deferred.SUFFIX}\n:\n" for ps in deferred.DIVERTED.values() for p in ps)
    )
    calls: list[list[str]] = []
    monkeypatch.setattr(deferred, "chroot", lambda runner, rootfs, argv, **kw: calls.append(argv))
    runner = Runner(log_path=tmp_path / "log")

    deferred.restore(runner, tmp_path, [deferred.CERTIFICATES])
    assert not (tmp_path / deferred.CERTIFICATES.lstrip("/")).exists()
    assert all((tmp_path / p.lstrip("/")).exists() for p in deferred.DIVERTED if p != deferred.CERTIFICATES)
    assert len(calls) == 1 and "/usr/sbin/update-ca-certificates /sbin/update-ca-certificates" in calls[0][-1]
    assert "depmod" not in calls[0][-1]

    diversions.write_text("")  # dpkg-divert removed them: nothing left to undo, nothing run
    deferred.restore(runner, tmp_path, [deferred.CERTIFICATES])
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("tree_versions", "hook", "native"),
    [
        ({"ca-certificates": "1", "openssl": "3"}, False, True),
        ({"ca-certificates": "1", "openssl": "2"}, False, False),  # another openssl: emulated
        ({"ca-certificates": "1", "openssl": "3"}, True, False),  # an update hook of the image's
    ],
)
def test_the_certificate_store_is_made_natively_only_by_the_image_s_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree_versions: dict[str, str], hook: bool, native: bool
) -> None:
    from imagesmith.stages import tools

    image, tree = tmp_path / "image", tmp_path / "tree"
    _status(image, {"ca-certificates": "1", "openssl": "3"})
    _status(tree, tree_versions)
    for path in tools.CERTIFICATE_PATHS:  # what the native run binds over the tree's
        (image / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    if hook:
        (image / "etc/ca-certificates/update.d").mkdir(parents=True)
        (image / "etc/ca-certificates/update.d/jks-keystore").write_text("#!/bin/sh\n")
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(tools, "chroot", lambda runner, rootfs, argv, **kw: ran.append(("emulated", argv)))
    job = tools.Tools(Runner(log_path=tmp_path / "log"), image, tree)
    monkeypatch.setattr(job, "_in_tree", lambda argv, binds=(): ran.append(("native", [*argv, *binds])))
    job.certificates()
    assert [kind for kind, _ in ran] == ["native" if native else "emulated"]
    assert ran[0][1][0] == "update-ca-certificates"
    if native:  # the links it makes name the image's own paths
        assert ran[0][1][1:] == tools.CERTIFICATE_PATHS


@pytest.mark.parametrize("link", ["etc/ssl/certs", "etc/ssl"])
def test_a_link_in_the_image_where_a_job_binds_runs_it_emulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    """A bind mount resolves the image's link on the host: /etc/ssl/certs -> /somewhere
    would let the native job write there."""
    from imagesmith.stages import tools

    image, tree, host = tmp_path / "image", tmp_path / "tree", tmp_path / "host"
    for root in (image, tree):
        _status(root, {"ca-certificates": "1", "openssl": "3"})
    for path in tools.CERTIFICATE_PATHS:
        (image / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (image / path.lstrip("/")).mkdir(exist_ok=True)
    host.mkdir()
    target = image / link
    target.rename(tmp_path / "moved")
    target.symlink_to(host)
    ran: list[str] = []
    monkeypatch.setattr(tools, "chroot", lambda runner, rootfs, argv, **kw: ran.append("emulated"))
    job = tools.Tools(Runner(log_path=tmp_path / "log"), image, tree)
    monkeypatch.setattr(job, "_in_tree", lambda argv, binds=(): ran.append("native"))
    job.certificates()
    assert ran == ["emulated"] and list(host.iterdir()) == []
    assert "is a link or missing: running it emulated" in (tmp_path / "log").read_text()


def test_a_second_install_is_set_up_as_the_first_and_leaves_nothing_of_the_host(tmp_path: Path) -> None:
    """mmdebstrap copies the host's resolv.conf and hostname into a rootfs without them,
    through a dangling symlink too, and writes apt's sources only where there are none:
    the rootfs's own are kept aside while it runs, and put back unless a new one is there."""
    host, rootfs = tmp_path / "host", tmp_path / "rootfs"
    (host / "etc/apt").mkdir(parents=True)
    (rootfs / "etc/apt").mkdir(parents=True)
    (host / "etc/resolv.conf").write_text("nameserver 10.0.0.1\n")
    (host / "etc/hostname").write_text("buildhost\n")
    (host / "etc/apt/sources.list").write_text("deb http://deb.debian.org/debian trixie main\n")
    (rootfs / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    (rootfs / "etc/apt/sources.list").write_text(
        "deb [signed-by=/etc/apt/keyrings/x.asc] http://x trixie main\n"
    )

    def setup() -> None:  # what mmdebstrap's setup does
        for name in (*bootstrap.HOST_FILES, *bootstrap.SETUP_FILES):
            assert not os.path.lexists(rootfs / name)
        for name in bootstrap.HOST_FILES:
            (rootfs / name).write_bytes((host / name).read_bytes())
        # the same text as the host's: still the install's own, kept
        (rootfs / "etc/apt/sources.list").write_text("deb http://deb.debian.org/debian trixie main\n")

    with bootstrap.setup_files(rootfs, host):
        setup()
    assert os.readlink(rootfs / "etc/resolv.conf") == "/run/systemd/resolve/stub-resolv.conf"
    assert not os.path.lexists(rootfs / "etc/hostname")
    assert (rootfs / "etc/apt/sources.list").read_text() == "deb http://deb.debian.org/debian trixie main\n"
    # a package installed meanwhile that writes its own keeps it
    with bootstrap.setup_files(rootfs, host):
        setup()
        (rootfs / "etc/resolv.conf").write_text("nameserver 127.0.0.53\n")
    assert (rootfs / "etc/resolv.conf").read_text() == "nameserver 127.0.0.53\n"
    assert sorted(p.name for p in (rootfs / "etc").iterdir()) == ["apt", "resolv.conf"]
    assert [p.name for p in (rootfs / "etc/apt").iterdir()] == ["sources.list"]
    # nothing written (a failed run): the rootfs's own come back
    with pytest.raises(RuntimeError), bootstrap.setup_files(rootfs, host):
        raise RuntimeError("mmdebstrap failed")
    assert (rootfs / "etc/resolv.conf").read_text() == "nameserver 127.0.0.53\n"
    assert (rootfs / "etc/apt/sources.list").is_file()


def test_a_cached_tools_tree_is_copied_only_when_a_job_first_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild whose deferred jobs all come from the cache copies none of the tree; the
    first job that runs copies it once, and the cache entry's tree is never run in."""
    from imagesmith.stages import tools
    from imagesmith.stages.context import Context

    entry, work = tmp_path / "entry", tmp_path / "work"
    _status(entry / "tools", {"kmod": "34.2-2"})
    _status(work / "rootfs", {"kmod": "34.2-2"})
    ctx = Context(spec=None, work=work, runner=Runner(log_path=tmp_path / "log"))  # type: ignore[arg-type]
    installs.restore_tools(ctx, Entry("bootstrap", "k", entry, {}))  # no overlay here: the copy
    assert ctx.tools_tree == work / "tools" and not ctx.tools_tree.exists()
    ran: list[str] = []
    monkeypatch.setattr(tools.Tools, "_in_tree", lambda self, argv, binds=(): ran.append(str(self.tree)))
    monkeypatch.setattr(tools, "chroot", lambda *a, **kw: ran.append("emulated"))
    (work / "rootfs/boot").mkdir()
    ctx.tools.depmod("6.12")
    assert ran == [str(work / "tools")] and (work / "tools/var/lib/dpkg/status").is_file()
    (work / "tools/made-by-a-job").write_text("")
    ctx.tools.depmod("6.12")  # already there: not copied again
    assert ran == [str(work / "tools")] * 2 and (work / "tools/made-by-a-job").exists()
    assert (tmp_path / "log").read_text().count("$ cp -a") == 1
    assert not (entry / "tools/made-by-a-job").exists()
