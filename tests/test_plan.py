"""Stage keys: each input changes exactly the keys it should."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.stages import plan

from .e2e.aptrepo import make_key

Write = Callable[[str, str], Path]
TOOLS = {"mmdebstrap": "1.5", "e2fsprogs": "1.47", "dosfstools": "4.2", "mtools": "4", "fdisk": "2.38"}
BASE = "name: x\ndevice: qemu-amd64\nlayers: [base]\nfiles: [{source: overlay/, target: /}]\n"


def keys(path: Path, tools: dict[str, str] = TOOLS, salt: bytes = b"s", **load: object) -> dict[str, str]:
    return {p.name: p.key for p in plan.stages(load_spec(path, **load), salt, tools)}  # type: ignore[arg-type]


@pytest.fixture
def project(write: Write) -> Path:
    write("overlay/etc/motd", "hello\n")
    return write("img.yaml", BASE)


def differs(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [stage for stage in plan.NAMES if before[stage] != after[stage]]


def test_same_inputs_same_keys(project: Path) -> None:
    assert keys(project) == keys(project)


def test_an_overlay_file_changes_customize_and_what_follows(project: Path) -> None:
    before = keys(project)
    (project.parent / "overlay/etc/motd").write_text("changed\n")
    assert differs(before, keys(project)) == ["customize", "filesystems", "disk"]
    before = keys(project)
    (project.parent / "overlay/etc/motd").chmod(0o600)
    assert differs(before, keys(project)) == ["customize", "filesystems", "disk"]


@pytest.mark.parametrize(
    ("line", "changed"),
    [
        # the config's own package: its stage, not the bootstrap of the layers' packages
        ("packages: [jq]\n", ["packages", "customize", "filesystems", "disk"]),
        ("users: [{name: a, sudo: true}]\n", ["packages", "customize", "filesystems", "disk"]),
        # a layer's package taken away: never installed, so the bootstrap's
        ("packages: [-less]\n", ["bootstrap", "packages", "customize", "filesystems", "disk"]),
        ("distribution: {suite: bookworm}\n", ["bootstrap", "packages", "customize", "filesystems", "disk"]),
        ("hostname: other\n", ["customize", "filesystems", "disk"]),
        ("services: {disable: [e2scrub_reap.service]}\n", ["customize", "filesystems", "disk"]),
        ("signing_key: img.yaml\n", []),  # signs the outputs; the image is the same
    ],
)
def test_each_input_changes_its_stages(project: Path, line: str, changed: list[str]) -> None:
    before = keys(project)
    project.write_text(BASE + line)
    assert differs(before, keys(project)) == changed


def test_tool_versions_change_the_stages_that_call_them(project: Path) -> None:
    before = keys(project)
    assert differs(before, keys(project, {**TOOLS, "e2fsprogs": "1.48"})) == ["filesystems", "disk"]
    assert differs(before, keys(project, {**TOOLS, "mmdebstrap": "1.6"})) == list(plan.NAMES)
    assert differs(before, keys(project, {**TOOLS, "fdisk": "2.40"})) == ["disk"]


def test_secrets_enter_keys_only_through_the_salt(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASH", "$6$a$b")
    path = write("img.yaml", "name: x\ndevice: qemu-amd64\nusers: [{name: ops, password_hash: !env HASH}]\n")
    first = keys(path)
    assert keys(path, salt=b"other")["customize"] != first["customize"]
    monkeypatch.setenv("HASH", "$6$a$c")
    assert keys(path)["customize"] != first["customize"]
    stages = {p.name: p for p in plan.stages(load_spec(path), b"s", TOOLS)}
    assert "$6$a$c" not in str(stages["customize"].inputs)


def test_changed_inputs_are_named(project: Path) -> None:
    spec = load_spec(project)
    before = plan.stages(spec, b"s", TOOLS)[2].inputs
    (project.parent / "overlay/etc/motd").write_text("changed\n")
    after = plan.stages(load_spec(project), b"s", TOOLS)[2].inputs
    assert plan.NAMES[2] == "customize"
    changed = plan.changed_inputs(after, before)
    assert len(changed) == 1 and changed[0].startswith("files[1]") and changed[0].endswith("overlay")
    assert plan.changed_inputs(after, {}) == ["(no earlier build of this config)"]


def test_two_checkouts_at_different_paths_have_the_same_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = make_key(tmp_path / "gpg", "archive")
    source = "sources: [{name: vendor, url: 'https://apt.example.com/debian', key: keys/vendor.asc}]\n"
    for machine in ("a", "b"):
        root = tmp_path / machine / "project"
        (root / "overlay/etc").mkdir(parents=True)
        (root / "overlay/etc/motd").write_text("hello\n")
        (root / "setup.sh").write_text("#!/bin/sh\ntrue\n")
        (root / "keys").mkdir()
        (root / "keys/vendor.asc").write_bytes(public.read_bytes())
        (root / "img.yaml").write_text(BASE + "scripts: [{run: setup.sh, in: chroot}]\n" + source)
    # keyed from another working directory: no path is read relative to it
    monkeypatch.chdir(tmp_path)
    assert keys(tmp_path / "a/project/img.yaml") == keys(tmp_path / "b/project/img.yaml")
    (tmp_path / "b/project/keys/vendor.asc").write_bytes(make_key(tmp_path / "gpg2", "other").read_bytes())
    assert (
        differs(keys(tmp_path / "a/project/img.yaml"), keys(tmp_path / "b/project/img.yaml"))[0]
        == "bootstrap"
    )
