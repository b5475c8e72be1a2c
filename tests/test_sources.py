"""Extra apt sources: config checks, keys, the lines and pins they give (no build)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagesmith.config.load import load_spec
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner
from imagesmith.repro import sources

from .e2e.aptrepo import make_key, stop_agent

Write = Callable[[str, str], Path]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    public = make_key(tmp_path_factory.mktemp("gpg") / "home", "archive")
    yield public
    stop_agent(public.parent)  # exporting the secret key started one


def config(write: Write, key_file: Path, extra: str = "") -> Path:
    return write(
        "a.yaml",
        "name: a\ndevice: qemu-amd64\nsources:\n"
        f"  - name: vendor\n    url: https://user:s3cret@apt.example.com/debian\n    key: {key_file}\n"
        "    packages: [linux-image-*, vendor-firmware]\n" + extra,
    )


def test_lines_pins_and_what_the_manifest_shows(write: Write, key: Path, tmp_path: Path) -> None:
    spec = load_spec(config(write, key))
    keys = sources.stage_keys(Runner(), spec, tmp_path)
    assert [k.in_image for k in keys] == ["/etc/apt/keyrings/imagesmith-vendor.asc"]
    assert sources.apt_lines(spec, keys, in_image=True) == [
        "deb [signed-by=/etc/apt/keyrings/imagesmith-vendor.asc] https://apt.example.com/debian trixie main"
    ]
    assert f"signed-by={tmp_path}/vendor.key]" in sources.apt_lines(spec, keys, in_image=False)[0]
    assert sources.preferences(spec) == (
        'Package: linux-image-* vendor-firmware\nPin: origin "apt.example.com"\nPin-Priority: 990\n\n'
        'Package: *\nPin: origin "apt.example.com"\nPin-Priority: 100\n'
    )
    (shown,) = sources.described(Runner(), spec)
    assert shown["url"] == "https://apt.example.com/debian" and "s3cret" not in str(shown)
    fingerprint = subprocess.run(
        ["gpg", "--homedir", str(key.parent), "--with-colons", "--fingerprint"],
        capture_output=True, text=True, check=True,
    ).stdout.split("fpr:::::::::")[1].split(":")[0]  # fmt: skip
    assert shown["key_fingerprints"] == [fingerprint]
    assert "s3cret" not in str(spec.masked())


def test_a_source_named_twice_is_a_config_error(write: Write, key: Path) -> None:
    spec = load_spec(config(write, key, f"  - {{name: vendor, url: 'http://other.example/', key: {key}}}\n"))
    with pytest.raises(ImagesmithError, match="source 'vendor' is given twice") as caught:
        sources.check(spec)
    assert caught.value.exit_code == 2 and "a.yaml:8" in str(caught.value.location)


def test_key_files_that_are_no_public_key(write: Write, key: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.asc"
    secret.write_bytes(
        subprocess.run(
            ["gpg", "--homedir", str(key.parent), "--batch", "--pinentry-mode", "loopback",
             "--passphrase", "", "--armor", "--export-secret-keys"],
            capture_output=True, check=True,
        ).stdout
    )  # fmt: skip
    junk = tmp_path / "junk.asc"
    junk.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\nnonsense\n")
    for bad, said in ((secret, "holds a secret key"), (junk, "holds no OpenPGP key")):
        spec = load_spec(config(write, bad))
        with pytest.raises(ImagesmithError, match=said) as caught:
            sources.check_keys(Runner(), spec)
        assert caught.value.exit_code == 2 and "a.yaml:6" in str(caught.value.location)
    with pytest.raises(ImagesmithError, match="source key not found"):
        load_spec(config(write, tmp_path / "missing.asc"))


def test_key_staging_of_a_killed_build_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import tempfile

    from imagesmith.stages import bootstrap

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{bootstrap.KEYS_PREFIX}999999999-abc"  # no such process
    alive = tmp_path / f"{bootstrap.KEYS_PREFIX}{os.getpid()}-abc"
    other = tmp_path / f"{bootstrap.KEYS_PREFIX}abc"  # not named by a process: not ours to judge
    for path in (dead, alive, other):
        path.mkdir()
    bootstrap.remove_stale_keys()
    assert not dead.exists() and alive.exists() and other.exists()
