"""The catalog's layers: each loads, their capabilities exclude each other, their variables check."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagesmith.cli import main
from imagesmith.config import catalog
from imagesmith.config.load import load_spec
from imagesmith.config.variables import wpa_psk
from imagesmith.errors import EXIT_CONFIG, ImagesmithError

Write = Callable[[str, str], Path]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq3l4me/mJmtXbb6a/89bNbso97felumOUamNVwuknF t"
# values for the catalog's required variables, by layer
REQUIRED = {
    "wifi": "  wifi_country: CH\n  wifi_ssid: lab\n  wifi_psk: correct horse\n",
    "sudo-user": f"  sudo_user_ssh_key: {KEY}\n",
    "kiosk": "  kiosk_url: https://example.org/\n",
}


def values(layer: str) -> str:
    return f"variables:\n{REQUIRED[layer]}" if layer in REQUIRED else ""


BUILTIN = catalog.names("layers", [])
EXPECTED = {"base", "networkd", "network-manager", "openssh", "wifi", "timesyncd", "chrony",
            "avahi", "sudo-user", "debug-tools", "kiosk"}  # fmt: skip


def error_of(path: Path) -> ImagesmithError:
    with pytest.raises(ImagesmithError) as info:
        load_spec(path)
    assert info.value.exit_code == EXIT_CONFIG and info.value.hint
    return info.value


def test_the_catalog_has_every_layer() -> None:
    assert set(BUILTIN) >= EXPECTED


@pytest.mark.parametrize("layer", sorted(EXPECTED))
def test_each_layer_loads_and_is_described(layer: str, write: Write) -> None:
    spec = load_spec(write("img.yaml", f"name: x\ndevice: qemu-amd64\nlayers: [{layer}]\n{values(layer)}"))
    assert [ref.name for ref in spec.layers][-1] == layer
    shown = CliRunner().invoke(main, ["layers", "show", layer])
    assert shown.exit_code == 0 and shown.output.startswith(f"{layer}: ") and "file:" in shown.output


@pytest.mark.parametrize(("a", "b", "capability"), [("timesyncd", "chrony", "time-sync"),
                                                     ("networkd", "network-manager", "network")])  # fmt: skip
def test_two_providers_of_a_capability_are_refused(a: str, b: str, capability: str, write: Write) -> None:
    exc = error_of(write("img.yaml", f"name: x\ndevice: pi4\nlayers: [{a}, {b}]\n"))
    assert f"both provide {capability!r}" in exc.message
    assert f"{a}.yaml" in exc.message and f"{b}.yaml" in exc.message


def test_wifi_country_is_checked_at_its_line(write: Write) -> None:
    path = write(
        "img.yaml",
        "name: x\ndevice: pi4\nlayers: [wifi]\nvariables:\n  wifi_country: XX\n"
        "  wifi_ssid: lab\n  wifi_psk: correct horse\n",
    )
    exc = error_of(path)
    assert "variable wifi_country must be one of AD, AE" in exc.message
    assert exc.location is not None and exc.location.line == 5
    assert "regulatory domain" in (exc.hint or "")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ("{wifi_country: CH, wifi_ssid: lab}", "variable wifi_psk is required"),
        ("{wifi_country: CH, wifi_ssid: lab, wifi_psk: short}", "wifi_psk must be text matching"),
        ("{wifi_country: CH, wifi_ssid: '', wifi_psk: correct horse}", "wifi_ssid must be text matching"),
    ],
)
def test_wifi_variables(variables: str, message: str, write: Write) -> None:
    exc = error_of(write("img.yaml", f"name: x\ndevice: pi4\nlayers: [wifi]\nvariables: {variables}\n"))
    assert message in exc.message


def test_wpa_psk_is_the_standard_derivation() -> None:
    # IEEE 802.11i-2004, annex H.4.1: passphrase "password", SSID "IEEE"
    assert wpa_psk("password", "IEEE") == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    assert wpa_psk("x" * 8, "ü") == hashlib.pbkdf2_hmac("sha1", b"x" * 8, "ü".encode(), 4096, 32).hex()


def test_a_variable_declared_secret_is_masked_however_given(write: Write) -> None:
    path = write("img.yaml", f"name: x\ndevice: pi4\nlayers: [wifi]\n{values('wifi')}")
    spec = load_spec(path)
    wpa = next(f for f in spec.config.files if f.target.endswith("wpa_supplicant-wlan0.conf"))
    assert wpa.content is not None and f"psk={wpa_psk('correct horse', 'lab')}" in wpa.content
    assert wpa.mode == "0600"
    shown = CliRunner().invoke(main, ["config", "show", str(path)])
    assert shown.exit_code == 0 and "correct horse" not in shown.output
    assert wpa_psk("correct horse", "lab") not in shown.output, "a value made from a secret is secret"
    assert "wifi_psk: <secret>" in shown.output and "wifi_ssid: lab" in shown.output


def test_sudo_user_without_a_hash_has_no_password(write: Write) -> None:
    spec = load_spec(write("img.yaml", f"name: x\ndevice: pi4\nlayers: [sudo-user]\n{values('sudo-user')}"))
    (user,) = spec.config.users
    assert (user.name, user.sudo, user.password_hash, user.ssh_authorized_keys) == (
        "admin",
        True,
        None,
        [KEY],
    )
    path = "/home/me/.ssh/id_ed25519"
    exc = error_of(
        write(
            "bad.yaml",
            f"name: x\ndevice: pi4\nlayers: [sudo-user]\nvariables: {{sudo_user_ssh_key: {path}}}\n",
        )
    )
    assert "sudo_user_ssh_key must be text matching" in exc.message


def test_kiosk_url_is_escaped_for_systemd(write: Write) -> None:
    given = values("kiosk").replace("https://example.org/", "https://example.org/a%20b?x=$HOME")
    spec = load_spec(write("img.yaml", f"name: x\ndevice: pi4\nlayers: [kiosk]\n{given}"))
    unit = next(f for f in spec.config.files if f.target.endswith("imagesmith-kiosk.service"))
    assert unit.content is not None and "https://example.org/a%%20b?x=$$HOME\n" in unit.content
    bad = values("kiosk").replace("https://example.org/", "https://example.org/ --no-sandbox")
    exc = error_of(write("bad.yaml", f"name: x\ndevice: pi4\nlayers: [kiosk]\n{bad}"))
    assert "kiosk_url must be text matching" in exc.message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{source: a.txt, content: x, target: /etc/a}", "either `source:`"),
        ("{target: /etc/a}", "either `source:`"),
        ("{content: x, target: /etc/}", "`target:` is the file's path"),
        ("{content: x, target: /etc/a, mode: 755}", "valid string"),
        ("{content: x, target: /etc/a, mode: '0999'}", "not a valid value"),
    ],
)
def test_file_entries_are_checked(entry: str, message: str, write: Write) -> None:
    write("a.txt", "a")
    exc = error_of(write("img.yaml", f"name: x\ndevice: pi4\nfiles:\n  - {entry}\n"))
    assert message in exc.message and exc.location is not None and exc.location.line == 4
