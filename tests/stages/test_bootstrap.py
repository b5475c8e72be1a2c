from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.host.run import Runner
from imagesmith.stages import bootstrap
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
    bootstrap.run(ctx)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 2, "the image, then the native tools tree"
    args, tools_args = calls
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
    assert "--arch=amd64" in tools_args and "--include=kmod,udev,locales" in tools_args
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
