"""Both SBOMs from a package list: valid, complete, and a broken one is caught."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imagesmith.errors import ImagesmithError
from imagesmith.outputs import sbom
from imagesmith.outputs.inventory import Package

SUBJECT = sbom.Subject("demo", "demo.img", "ab" * 32, "arm64", "debian-13", datetime(2026, 1, 2, tzinfo=UTC))


def package(name: str, **extra: object) -> Package:
    fields: dict[str, object] = {
        "name": name, "version": "1.0-1", "arch": "arm64", "source": name, "source_version": "1.0-1",
        "installed_size": 2048, "maintainer": "Debian Team <team@lists.debian.org>", "homepage": "",
        "summary": f"the {name} package", "essential": False,
    }  # fmt: skip
    fields.update(extra)
    return Package(**fields)  # type: ignore[arg-type]


PACKAGES = [
    package("libc6", source="glibc", source_version="2.41-12", license="LGPL-2.1-or-later"),
    package(
        "base-files",
        arch="all",
        depends=["libc6"],
        license="GPL-2.0-or-later AND LicenseRef-verbatim",
        license_texts={"LicenseRef-verbatim": "Copy as you like."},
    ),
    package("mystery", maintainer="", license="NOASSERTION"),
]


def test_purl() -> None:
    assert sbom.purl(PACKAGES[0], "debian-13") == "pkg:deb/debian/libc6@1.0-1?arch=arm64&distro=debian-13"
    epoch = package("dpkg", version="1:1.22.21", arch="amd64")
    assert sbom.purl(epoch, "debian-13") == "pkg:deb/debian/dpkg@1:1.22.21?arch=amd64&distro=debian-13"


def test_distro_from_os_release() -> None:
    assert sbom.distro_of('NAME="Debian GNU/Linux"\nVERSION_ID="13"\n', "trixie") == "debian-13"
    assert sbom.distro_of('NAME="Debian GNU/Linux"\n', "forky") == "debian-forky"


def test_spdx_document(tmp_path: Path) -> None:
    target = tmp_path / "demo.spdx.json"
    sbom.write_spdx(SUBJECT, PACKAGES, target)
    assert sbom.check_spdx_file(target) == []
    data = json.loads(target.read_text())
    assert data["spdxVersion"] == "SPDX-2.3" and data["creationInfo"]["created"] == "2026-01-02T00:00:00Z"
    by_name = {p["name"]: p for p in data["packages"]}
    image = by_name["demo"]
    assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": "ab" * 32}]
    libc = by_name["libc6"]
    assert libc["versionInfo"] == "1.0-1" and libc["licenseDeclared"] == "LGPL-2.1-or-later"
    assert libc["supplier"] == "Organization: Debian Team (team@lists.debian.org)"
    assert "glibc 2.41-12" in libc["sourceInfo"]
    assert libc["externalRefs"][0]["referenceLocator"].startswith("pkg:deb/debian/libc6@1.0-1?arch=arm64")
    assert by_name["mystery"]["licenseDeclared"] == "NOASSERTION"
    assert data["hasExtractedLicensingInfos"][0]["licenseId"] == "LicenseRef-verbatim"
    relations = {
        (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"]) for r in data["relationships"]
    }
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image") in relations
    assert ("SPDXRef-Image", "CONTAINS", "SPDXRef-Package-deb-libc6-arm64") in relations
    assert (
        "SPDXRef-Package-deb-base-files-all",
        "DEPENDS_ON",
        "SPDXRef-Package-deb-libc6-arm64",
    ) in relations


def test_a_broken_spdx_document_is_caught(tmp_path: Path) -> None:
    target = tmp_path / "demo.spdx.json"
    sbom.write_spdx(SUBJECT, PACKAGES, target)
    data = json.loads(target.read_text())
    del data["packages"][1]["downloadLocation"]  # required for every package
    target.write_text(json.dumps(data))
    assert sbom.check_spdx_file(target) != []


def test_cyclonedx_document() -> None:
    text = sbom.cyclonedx_json(SUBJECT, PACKAGES)
    sbom.check_cyclonedx(text)
    data = json.loads(text)
    assert data["specVersion"] == "1.6" and data["bomFormat"] == "CycloneDX"
    assert data["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    comps = {c["name"]: c for c in data["components"]}
    assert comps["libc6"]["purl"] == "pkg:deb/debian/libc6@1.0-1?arch=arm64&distro=debian-13"
    assert comps["libc6"]["licenses"] == [{"expression": "LGPL-2.1-or-later"}]
    assert "licenses" not in comps["mystery"]
    assert data["serialNumber"] == json.loads(sbom.cyclonedx_json(SUBJECT, PACKAGES))["serialNumber"]


def test_a_broken_cyclonedx_document_is_caught() -> None:
    data = json.loads(sbom.cyclonedx_json(SUBJECT, PACKAGES))
    del data["components"][0]["name"]  # required for every component
    with pytest.raises(ImagesmithError, match="CycloneDX document is not valid"):
        sbom.check_cyclonedx(json.dumps(data))


def test_the_validator_started_ahead_checks_the_document_in_its_own_process(tmp_path: Path) -> None:
    from imagesmith.host.run import Runner

    runner = Runner(log_path=tmp_path / "log")
    data = json.loads(sbom.cyclonedx_json(SUBJECT, PACKAGES))
    sbom.CYCLONEDX.prepare(runner)
    sbom.CYCLONEDX.check(runner, json.dumps(data))  # valid
    del data["components"][0]["name"]
    sbom.CYCLONEDX.prepare(runner)
    with pytest.raises(ImagesmithError, match="CycloneDX document is not valid") as raised:
        sbom.CYCLONEDX.check(runner, json.dumps(data))
    assert "name" in (raised.value.details or "")
    assert "the CycloneDX validator's output (started ahead)" in (tmp_path / "log").read_text()
    # one started for another build is not used (and stops with that build's runner)
    other = Runner()
    sbom.CYCLONEDX.prepare(other)
    with pytest.raises(ImagesmithError, match="not valid"):
        sbom.CYCLONEDX.check(runner, json.dumps(data))
    assert len(other.started) == 1 and other.started[0].proc.poll() is None, "never fed: still waiting"
    other.close()
    assert other.started == [] and sbom.CYCLONEDX.ahead is None
