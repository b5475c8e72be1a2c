from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagesmith.cli import main
from imagesmith.config.load import load_spec
from imagesmith.errors import ImagesmithError

Write = Callable[[str, str], Path]
HASH = "$6$salt$Zm9vYmFy"


@pytest.fixture
def project(write: Write, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPS_HASH", HASH)
    write("psk.txt", "correct horse battery staple\n")
    write("w.yaml", "layer: w\nvariables:\n  psk: {type: string}\ncmdline: ['wifi.psk={{ psk }}', plain]\n")
    return write(
        "img.yaml",
        "name: x\ndevice: pi4\nlayers: [w]\nvariables: {psk: !file psk.txt}\n"
        "users: [{name: ops, password_hash: !env OPS_HASH}]\n",
    )


def test_secrets_are_used(project: Path) -> None:
    spec = load_spec(project)
    assert spec.config.users[0].password_hash == HASH
    assert spec.config.variables["psk"] == "correct horse battery staple"
    assert spec.config.cmdline == ["wifi.psk=correct horse battery staple", "plain"]


@pytest.mark.parametrize("args", [["config", "show"], ["config", "show", "--json"]])
def test_config_show_masks_secrets(project: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, [*args, str(project)])
    assert result.exit_code == 0, result.output
    assert HASH not in result.output and "battery" not in result.output
    assert result.output.count("<secret>") == 3  # the hash, the variable, the templated cmdline entry
    if "--json" in args:
        data = json.loads(result.output)
        assert data["cmdline"] == ["<secret>", "plain"] and data["users"][0]["password_hash"] == "<secret>"


def test_config_explain_masks_secrets(project: Path) -> None:
    for key in ("users[0].password_hash", "variables.psk", "cmdline"):
        result = CliRunner().invoke(main, ["config", "explain", str(project), key])
        assert result.exit_code == 0 and "<secret>" in result.output
        assert HASH not in result.output and "battery" not in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!env NO_SUCH_VARIABLE_X", "environment variable NO_SUCH_VARIABLE_X is not set"),
        ("!file nothere.txt", "cannot read the secret file"),
        ("!vault key", "unknown tag !vault"),
    ],
)
def test_secret_errors_are_located(write: Write, value: str, message: str) -> None:
    with pytest.raises(ImagesmithError) as info:
        load_spec(write("img.yaml", f"name: x\ndevice: pi4\nhostname: {value}\n"))
    assert message in info.value.message and info.value.hint
    assert info.value.location is not None and info.value.location.line == 3


def test_a_secret_value_is_never_shown_in_an_error(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIFI_PSK", "hunter2-hunter2")
    write("w.yaml", "layer: w\nvariables:\n  n: {type: int}\n")
    config = write("img.yaml", "name: x\ndevice: pi4\nlayers: [w]\nvariables: {n: !env WIFI_PSK}\n")
    result = CliRunner().invoke(main, ["config", "show", str(config)])
    assert result.exit_code == 2 and "variable n must be a whole number" in result.output
    assert "hunter2" not in result.output
    # a value that fails its pattern: named by its place, not shown
    monkeypatch.setenv("HOST_SECRET", "hunter3 not a hostname")
    config = write("img.yaml", "name: x\ndevice: pi4\nhostname: !env HOST_SECRET\n")
    result = CliRunner().invoke(main, ["config", "show", str(config)])
    assert result.exit_code == 2 and "hostname" in result.output and "hunter3" not in result.output


def test_a_secret_is_not_a_template(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARG", "pass{{ 7*7 }}")
    spec = load_spec(write("img.yaml", "name: x\ndevice: pi4\ncmdline: [!env ARG, 'n={{ 7*7 }}']\n"))
    assert spec.config.cmdline == ["pass{{ 7*7 }}", "n=49"]


def test_a_template_that_fails_on_a_secret_does_not_show_it(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WIFI_PSK", "hunter2-hunter2")
    write(
        "w.yaml",
        "layer: w\nvariables:\n  psk: {type: string, secret: true}\ncmdline: ['{{ psk.encode(psk) }}']\n",
    )
    config = write("img.yaml", "name: x\ndevice: pi4\nlayers: [w]\nvariables: {psk: !env WIFI_PSK}\n")
    result = CliRunner().invoke(main, ["config", "show", str(config)])
    assert result.exit_code == 2, result.output  # a located config error, not an internal error
    assert "w.yaml:4" in result.output and "template failed: LookupError" in result.output
    assert "hunter2" not in result.output and "internal error" not in result.output


def test_credentials_in_the_mirror_url_are_masked_everywhere(write: Write) -> None:
    config = write(
        "img.yaml",
        "name: x\ndevice: pi4\ndistribution: {mirror: 'https://me:tok3n-value@deb.example/debian'}\n",
    )
    spec = load_spec(config)
    assert spec.masked()["distribution"]["mirror"] == "https://deb.example/debian"
    result = CliRunner().invoke(main, ["config", "show", str(config)])
    assert "tok3n-value" not in result.output
