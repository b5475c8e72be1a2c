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
