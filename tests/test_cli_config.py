"""config show / explain, schema, layers list / show."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from imagesmith.cli import main
from imagesmith.config.load import load_spec

Write = Callable[[str, str], Path]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def three(write: Write, tmp_path: Path) -> Path:
    """hostname set in a layer, changed in a second layer, changed again in the config."""
    write("one.yaml", "layer: one\nhostname: first\npackages: [curl, jq]\n")
    write("two.yaml", "layer: two\nrequires: [one]\n\nhostname: second\npackages: [-jq, vim]\n")
    return write("img.yaml", "name: x\ndevice: pi4\nlayers: [two]\n\n\nhostname: third\n")


def test_explain_shows_every_place_in_order(three: Path) -> None:
    code, out = invoke("config", "explain", str(three), "hostname")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == 'hostname = "third"'
    assert [line.split(": ")[0].rsplit("/", 1)[-1] for line in lines[1:]] == [
        "one.yaml:2:11",
        "two.yaml:4:11",
        "img.yaml:6:11",
    ]
    assert lines[1].endswith("set") and lines[3].endswith("changed")


def test_explain_list_items_name_their_file(three: Path) -> None:
    code, out = invoke("config", "explain", str(three), "packages")
    assert code == 0 and out.splitlines()[0] == 'packages = ["curl", "vim"]'
    assert '"curl"  ← ' in out and "one.yaml:3" in out and "two.yaml:5" in out
    assert '"jq"' not in out.split("\n", 1)[1]


def test_explain_default_and_unknown_key(three: Path) -> None:
    code, out = invoke("config", "explain", str(three), "timezone")
    assert code == 0 and 'timezone = "Etc/UTC"' in out and "the default" in out
    code, out = invoke("config", "explain", str(three), "users[3].name")
    assert code == 2 and "not a setting" in out


def test_show_prints_the_merged_config_as_yaml_and_json(three: Path) -> None:
    expected = load_spec(three).config.model_dump(mode="json", by_alias=True)
    code, out = invoke("config", "show", str(three))
    assert code == 0 and out.startswith("# ")
    assert YAML(typ="safe").load(out) == expected
    code, out = invoke("config", "show", "--json", str(three))
    assert code == 0 and json.loads(out) == expected


def test_show_of_a_bad_config_is_a_located_error(write: Write) -> None:
    code, out = invoke("config", "show", str(write("img.yaml", "name: x\ndevice: pi4\nlocale: 5\n")))
    assert code == 2 and "img.yaml:3:9" in out


def test_schema_for_configs_and_layers() -> None:
    code, out = invoke("schema")
    data = json.loads(out)
    assert code == 0 and data["title"] == "imagesmith image config"
    assert set(data["required"]) == {"name", "device"} and "hostname" in data["properties"]
    assert data["additionalProperties"] is False
    code, out = invoke("schema", "--layer")
    data = json.loads(out)
    assert data["required"] == ["layer"] and "requires" in data["properties"]


def test_layers_list_and_show_with_an_override(write: Write, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "openssh.yaml").write_text("layer: openssh\ndescription: my own sshd\npackages: [dropbear]\n")
    code, out = invoke("layers", "list", "--layers", str(mine))
    assert code == 0
    for name in ("base", "networkd", "openssh"):
        assert name in out
    assert "my own sshd" in out
    code, out = invoke("layers", "show", "openssh", "--layers", str(mine))
    assert code == 0 and "overrides the built-in layer" in out and "dropbear" in out
    code, out = invoke("layers", "show", "base")
    assert code == 0 and "overrides" not in out and "systemd-sysv" in out
    code, out = invoke("layers", "show", "opensh")
    assert code == 2 and "did you mean 'openssh'" in out


def test_layer_errors_point_into_the_layer_file(write: Write) -> None:
    write("bad.yaml", "layer: bad\npackges: [curl]\n")
    code, out = invoke("config", "show", str(write("img.yaml", "name: x\ndevice: pi4\nlayers: [bad]\n")))
    assert code == 2 and "bad.yaml:2:10: unknown key 'packges' in layer bad" in out
    assert "did you mean 'packages'" in out


def test_build_takes_layer_directories(write: Write, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "tools.yaml").write_text("layer: tools\nrequires: [base]\npackages: [strace]\n")
    path = write("sub/img.yaml", "name: x\ndevice: pi4\nlayers: [tools]\n")
    spec = load_spec(path, [extra])
    assert [r.name for r in spec.layers] == ["base", "tools"] and "strace" in spec.config.packages


def test_includes_variant_and_set_stack_in_order(write: Write) -> None:
    write("common.yaml", "hostname: common\ntimezone: Europe/Berlin\npackages: [curl]\n")
    write("img.yaml", "includes: [common.yaml]\nname: x\ndevice: pi4\nhostname: img\n")
    write("img.dev.yaml", "hostname: dev\npackages: [gdb]\n")
    path = write("img.yaml", "includes: [common.yaml]\nname: x\ndevice: pi4\nhostname: img\n")
    spec = load_spec(path)
    assert (spec.config.hostname, spec.config.timezone, spec.config.packages) == (
        "img",
        "Europe/Berlin",
        ["curl"],
    )
    spec = load_spec(path, variant="dev")
    assert spec.config.hostname == "dev" and spec.config.packages == ["curl", "gdb"]
    spec = load_spec(
        path, variant="dev", sets=["hostname=cli", "distribution.suite=bookworm", "packages=[-curl]"]
    )
    assert spec.config.hostname == "cli" and spec.config.distribution.suite == "bookworm"
    assert spec.config.packages == ["gdb"]
    code, out = invoke(
        "config", "explain", str(path), "hostname", "--variant", "dev", "--set", "hostname=cli"
    )
    assert code == 0
    assert [line.strip().split(": ")[0].rsplit("/", 1)[-1] for line in out.splitlines()[1:]] == [
        "common.yaml:1:11",
        "img.yaml:4:11",
        "img.dev.yaml:1:11",
        "--set hostname=cli",
    ]


def test_missing_variant_is_a_note_not_an_error(write: Write) -> None:
    path = write("img.yaml", "name: x\ndevice: pi4\n")
    spec = load_spec(path, variant="prod")
    assert spec.notes == ["no img.prod.yaml next to img.yaml: variant 'prod' adds nothing"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "hostname"], "expected KEY=VALUE"),
        (["--set", "host name=x"], "expected KEY=VALUE"),
        (["--set", "hostname=[x"], "not valid YAML"),
        (["--set", "hostname=-bad-"], "hostname"),
    ],
)
def test_bad_set_is_a_config_error(write: Write, args: list[str], message: str) -> None:
    path = write("img.yaml", "name: x\ndevice: pi4\n")
    code, out = invoke("config", "show", str(path), *args)
    assert code == 2 and message in out and "Traceback" not in out


def test_include_errors(write: Write) -> None:
    write("a.yaml", "includes: [b.yaml]\n")
    write("b.yaml", "includes: [a.yaml]\n")
    code, out = invoke("config", "show", str(write("img.yaml", "includes: [a.yaml]\nname: x\ndevice: pi4\n")))
    assert code == 2 and "cycle" in out and "b.yaml:1:" in out
    code, out = invoke(
        "config", "show", str(write("img2.yaml", "includes: [nope.yaml]\nname: x\ndevice: pi4\n"))
    )
    assert code == 2 and "img2.yaml:1:12: included file not found" in out


def test_layers_show_lists_variables(write: Write, tmp_path: Path) -> None:
    write(
        "site.yaml",
        "layer: site\nvariables:\n  site: {type: string, required: true, description: the site code}\n"
        "  port: {type: int, default: 8080}\n",
    )
    code, out = invoke("layers", "show", "site", "--layers", str(tmp_path))
    assert code == 0
    assert "variable site (string, required): the site code" in out
    assert "variable port (int, default 8080)" in out
