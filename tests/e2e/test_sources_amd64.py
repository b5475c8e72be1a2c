"""Extra apt sources on a real build: a signed archive made here (file://), its packages
pinned over Debian's, the rest from Debian, its key in the image; a wrong key fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .aptrepo import Deb, archive, make_key
from .conftest import Built, build, imagesmith, installed

pytestmark = pytest.mark.slow
SUITE = "trixie"
MARKER = "/usr/share/imagesmith-marker/marker"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two archives of the same packages: one signed with the key the config gives, one
    with another key."""
    base = tmp_path_factory.mktemp("apt")
    good, other = make_key(base / "good-gpg", "good"), make_key(base / "other-gpg", "other")
    debs = [
        Deb("imagesmith-marker", "1.0", {MARKER: "from the extra source\n"}),
        # a newer version of a Debian package, not pinned: Debian's must still win
        Deb("hello", "99.0", {"/usr/share/doc/hello-fake": "not Debian's\n"}),
    ]
    archive(base / "signed", SUITE, debs, base / "good-gpg")
    archive(base / "wrongly-signed", SUITE, debs, base / "other-gpg")
    return {"signed": base / "signed", "wrong": base / "wrongly-signed", "key": good, "other": other}


def project(root: Path, repos: dict[str, Path], archive_name: str) -> Path:
    root.mkdir(parents=True)
    (root / "keys").mkdir()
    shutil.copy(repos["key"], root / "keys" / "local.asc")
    config = root / "image.yaml"
    config.write_text(
        "name: sources\ndevice: qemu-amd64\nlayers: [base]\npackages: [imagesmith-marker, hello]\n"
        "sources:\n"
        f"  - {{name: local, url: 'file://{repos[archive_name]}', key: keys/local.asc,\n"
        "     packages: [imagesmith-marker]}\n"
    )
    return config


@pytest.fixture(scope="module")
def image(repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("sources")
    return build(project(base / "p", repos, "signed"), base / "out")


def test_pinned_packages_come_from_the_source_and_the_rest_from_debian(image: Built) -> None:
    assert image.cat(MARKER) == "from the extra source\n"
    versions = installed(image.cat("/var/lib/dpkg/status"))
    assert versions["imagesmith-marker"] == ("1.0", "all")
    assert not versions["hello"][0].startswith("99"), "hello is Debian's, not the source's newer one"


def test_the_image_trusts_the_source_by_its_own_key(image: Built, repos: dict[str, Path]) -> None:
    sources = image.cat("/etc/apt/sources.list")
    assert (
        f"deb [signed-by=/etc/apt/keyrings/imagesmith-local.asc] file://{repos['signed']} {SUITE} main"
        in sources
    )
    assert "imagesmith-keys-" not in sources, "no path of the build host"
    assert image.cat("/etc/apt/keyrings/imagesmith-local.asc") == repos["key"].read_text()
    pins = image.cat("/etc/apt/preferences.d/imagesmith-sources")
    assert 'Package: imagesmith-marker\nPin: origin ""\nPin-Priority: 990' in pins
    manifest = json.loads((image.output / "manifest.json").read_text())
    assert manifest["config"]["sources"][0]["key"] == "keys/local.asc", "no directory of the build host"
    (source,) = manifest["sources"]
    assert source["name"] == "local" and source["url"] == f"file://{repos['signed']}"
    assert len(source["key_fingerprints"]) == 1 and len(source["key_fingerprints"][0]) == 40


def test_an_archive_signed_by_another_key_fails_the_build(repos: dict[str, Path], tmp_path: Path) -> None:
    proc = imagesmith("build", str(project(tmp_path / "p", repos, "wrong")), "-o", str(tmp_path / "out"),
                      check=False)  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "InRelease" in proc.stderr and ("NO_PUBKEY" in proc.stderr or "not signed" in proc.stderr)
    assert "extra source 'local' is not signed by the key" in proc.stderr
    assert not list((tmp_path / "out").glob("*.img"))


def test_a_key_file_that_is_no_public_key_is_a_config_error(repos: dict[str, Path], tmp_path: Path) -> None:
    config = project(tmp_path / "p", repos, "signed")
    (tmp_path / "p" / "keys" / "local.asc").write_text("not a key\n")
    proc = imagesmith("build", str(config), "-o", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2
    assert "image.yaml:6" in proc.stderr and "holds no OpenPGP key" in proc.stderr


def test_sboms_and_manifest_name_the_source_of_each_package(image: Built) -> None:
    manifest = json.loads((image.output / "manifest.json").read_text())
    by_name = {p["name"]: p for p in manifest["packages"]}
    assert by_name["imagesmith-marker"]["archive"] == "local"
    assert "archive" not in by_name["hello"], "Debian's packages carry no archive"
    cdx = json.loads((image.output / "sources.cdx.json").read_text())
    purls = {c["name"]: c["purl"] for c in cdx["components"] if "purl" in c}
    assert purls["imagesmith-marker"].startswith("pkg:deb/local/imagesmith-marker@1.0")
    assert purls["hello"].startswith("pkg:deb/debian/hello@")


def test_the_lock_pins_the_source_and_catches_a_changed_deb(
    repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("locked")
    served = base / "archive"  # an archive of its own: the test changes it
    shutil.copytree(repos["signed"], served)
    config = project(base / "p", {**repos, "mine": served}, "mine")
    imagesmith("lock", str(config))
    text = (base / "p" / "image.yaml.lock").read_text()
    assert f'url: "file://{served}"' in text and "key_fingerprints" in text
    lines = {line.split('"')[1]: line for line in text.splitlines() if line.startswith("  - {name: ")}
    assert 'archive: "local"' in lines["imagesmith-marker"]
    assert "archive" not in lines["hello"], "Debian's packages name no archive"
    build(config, base / "out")
    # the archive now serves another .deb under the same version
    shutil.rmtree(served)
    archive(
        served,
        SUITE,
        [Deb("imagesmith-marker", "1.0", {MARKER: "changed\n"})],
        repos["signed"].parent / "good-gpg",
    )
    # (a bootstrap from the cache holds the locked bytes: a new one must check the archive)
    proc = imagesmith(
        "build", str(config), "-o", str(base / "out2"), "--rebuild-from", "bootstrap", check=False
    )
    assert proc.returncode != 0 and "imagesmith-marker 1.0" in proc.stderr and "sha256" in proc.stderr
