"""Secret values: registered once, never shown; commands see an allow-listed environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagesmith import redact
from imagesmith.host.run import Runner


def test_credentials_in_a_url_are_stripped_and_never_shown() -> None:
    url = "https://builder:p%40ss:w0rd@mirror.example.com:8443/debian"
    assert redact.url_credentials(url) == ("builder", "p@ss:w0rd")
    assert redact.strip_url(url) == "https://mirror.example.com:8443/debian"
    assert (
        redact.redact(f"cannot fetch {url}") == "cannot fetch https://<secret>@mirror.example.com:8443/debian"
    )
    # malformed, a / in the password: all of it still goes
    assert redact.strip_url("http://u:se/cr@t@host/debian") == "http://host/debian"
    assert redact.url_credentials("http://deb.debian.org/debian") is None


def test_registered_values_are_masked_longest_first() -> None:
    redact.register("hunter2-long-secret")
    redact.register("abc")  # too short to mask without garbling every text
    assert redact.redact("psk=hunter2-long-secret abc") == "psk=<secret> abc"


def test_commands_see_only_allow_listed_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESMITH_SIGNING_KEY_PASSPHRASE", "do-not-leak-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak-2")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    out = Runner().run(["env"], env={"ROOTFS": "/x"}, capture=True)
    assert "do-not-leak" not in out
    assert "http_proxy=http://proxy.example:3128" in out and "ROOTFS=/x" in out
    assert f"PATH={os.environ['PATH']}" in out


def test_the_log_and_errors_never_hold_a_registered_secret(tmp_path: Path) -> None:
    redact.register("wifi-psk-value-9")
    runner = Runner(log_path=tmp_path / "build.log")
    with pytest.raises(Exception) as info:
        runner.run(["sh", "-c", "echo using wifi-psk-value-9; exit 1"])
    runner.close()
    assert "wifi-psk-value-9" not in (tmp_path / "build.log").read_text()
    assert "wifi-psk-value-9" not in str(getattr(info.value, "details", ""))
