"""slim: the dpkg path filters a config asks for, and the bootstrap that applies them (no build)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from imagesmith.config.facts import dpkg_filters, languages
from imagesmith.config.load import load_spec
from imagesmith.stages import bootstrap

Write = Callable[[str, str], Path]


def test_languages_of_a_locale() -> None:
    assert languages("en_GB.UTF-8") == ["en_GB", "en"]
    assert languages("de_CH.UTF-8@euro") == ["de_CH", "de"]
    assert languages("C.UTF-8") == [] and languages("POSIX") == []


def test_filters_keep_copyright_files_and_the_locale_s_translations(write: Write) -> None:
    spec = load_spec(
        write(
            "s.yaml", "name: s\ndevice: qemu-amd64\nlocale: de_CH.UTF-8\nslim: {docs: true, locales: true}\n"
        )
    )
    filters = dpkg_filters(spec)
    assert filters.index("path-exclude=/usr/share/doc/*") < filters.index(
        "path-include=/usr/share/doc/*/copyright"
    )
    assert (
        "path-include=/usr/share/locale/de_CH/*" in filters
        and "path-include=/usr/share/locale/de/*" in filters
    )
    command = bootstrap.mmdebstrap(spec, Path("/tmp/r"), arch="amd64", variant="apt", include=["x"])
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in command
    assert dpkg_filters(load_spec(write("f.yaml", "name: f\ndevice: qemu-amd64\n"))) == []


def test_slim_changes_the_bootstrap_s_key_and_nothing_else_changes_without_it(write: Write) -> None:
    from imagesmith.stages import plan

    plain = load_spec(write("p.yaml", "name: p\ndevice: qemu-amd64\n"))
    slim = load_spec(write("q.yaml", "name: p\ndevice: qemu-amd64\nslim: {docs: true}\n"))
    keys = [
        {p.name: p for p in plan.stages(spec, b"", {}, None, None)}["bootstrap"] for spec in (plain, slim)
    ]
    assert keys[0].key != keys[1].key
    assert "dpkg filters" in keys[1].inputs and "dpkg filters" not in keys[0].inputs


def test_trim_suggests_the_slim_keys_not_set_first_when_they_save_enough() -> None:
    from imagesmith.outputs import report

    manifest = {"packages": [], "roots": {}, "slimmable": {"slim.docs": 30 << 20, "slim.locales": 12 << 20}}
    chosen, saved = report.trim(manifest, 35 << 20)
    assert [c.what for c in chosen] == ["slim.docs: true", "slim.locales: true"] and saved == 42 << 20
    chosen, saved = report.trim(manifest, 10 << 20)
    assert [c.what for c in chosen] == ["slim.docs: true"] and saved == 30 << 20


def test_what_slim_would_save_is_measured_in_the_rootfs(write: Write, tmp_path: Path) -> None:
    from imagesmith.outputs.inventory import slimmable

    files = {"usr/share/doc/a/changelog.gz": 1000, "usr/share/doc/a/copyright": 300,
             "usr/share/man/man1/a.1.gz": 200, "usr/share/locale/de/LC_MESSAGES/a.mo": 50,
             "usr/share/locale/en/LC_MESSAGES/a.mo": 70, "usr/share/locale/locale.alias": 9}  # fmt: skip
    for path, size in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(bytes(size))
    spec = load_spec(write("t.yaml", "name: t\ndevice: qemu-amd64\nlocale: en_GB.UTF-8\n"))
    assert slimmable(spec, tmp_path) == {"slim.docs": 1200, "slim.locales": 50}
    spec = load_spec(write("u.yaml", "name: t\ndevice: qemu-amd64\nslim: {docs: true, locales: true}\n"))
    assert slimmable(spec, tmp_path) == {}


def test_every_example_and_its_variants_load(tmp_path: Path) -> None:
    from imagesmith.stages.customize import check_spec

    from .test_update import key_pair

    # a copy, with the update key pair examples/ota.yaml asks its user to make
    examples = tmp_path / "examples"
    source = Path(__file__).parents[1] / "examples"
    shutil.copytree(source, examples, ignore=shutil.ignore_patterns("update.*"))
    key_pair(examples / "keys", "update")
    configs = [p for p in examples.glob("*.yaml") if p.name.count(".") == 1]
    assert {p.stem for p in configs} >= {"minimal", "slim", "webkiosk", "ota"}
    for config in configs:
        check_spec(load_spec(config))
        for variant in examples.glob(f"{config.stem}.*.yaml"):
            check_spec(load_spec(config, variant=variant.name.split(".")[1]))


def test_huge_pages_left_out_on_every_kind_of_command_line(write: Write) -> None:
    """slim.huge_pages reaches the kernel whichever way the device boots: cmdline.txt (the
    virtual machines, U-Boot) and raspi-firmware's extra command line (the Pis)."""
    from imagesmith.stages import bootfiles

    for device in ("qemu-amd64", "pi4"):
        text = f"name: s\ndevice: {device}\ncmdline: [quiet]\nslim: {{huge_pages: true}}\n"
        spec = load_spec(write(f"{device}.yaml", text))
        assert bootfiles.cmdline(spec).split()[-2:] == ["quiet", "transparent_hugepage=never"]
        rootfs = write(f"{device}/etc/.keep", "").parent.parent
        bootfiles.before_hooks(spec, rootfs)
        if device == "pi4":
            extra = (rootfs / "etc/default/raspi-extra-cmdline").read_text()
            assert extra == "quiet transparent_hugepage=never\n"
        else:
            assert "transparent_hugepage=never" in (rootfs / "boot/firmware/cmdline.txt").read_text()
    plain = load_spec(write("p.yaml", "name: p\ndevice: qemu-amd64\n"))
    assert "transparent_hugepage" not in bootfiles.cmdline(plain)
