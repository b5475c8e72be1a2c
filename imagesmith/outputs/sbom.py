"""SBOMs of a built image: SPDX 2.3 (spdx-tools) and CycloneDX 1.6 (cyclonedx-python-lib).

Both are made from the image's own package database (see ``inventory.py``), validated
by their library's validator before they are written, and say the same things: every
installed package with its version, architecture, supplier (the Debian maintainer),
purl, source package and declared licence; the image itself is the top component,
with its sha256, and contains every package. Serial numbers and namespaces derive from
the image's name and hash, so the same image always gets the same SBOM.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imagesmith import __version__
from imagesmith.errors import ImagesmithError
from imagesmith.host.run import Runner, Started
from imagesmith.outputs import licenses
from imagesmith.outputs.base import Output, Release
from imagesmith.outputs.files import sha256
from imagesmith.outputs.inventory import Package

NAMESPACE = "https://imagesmith.dev/spdx/"
_UUID_NS = uuid.UUID("4a5f2a0e-8d3c-5b7e-9f1a-2c6d8e0b4a71")


@dataclass(frozen=True)
class Subject:
    """The image the SBOMs describe."""

    name: str
    file: str
    sha256: str
    arch: str
    distro: str  # purl qualifier, e.g. debian-13
    created: datetime  # SOURCE_DATE_EPOCH when given, else the build's time


def purl(package: Package, distro: str) -> str:
    from packageurl import PackageURL

    return str(
        PackageURL(
            type="deb",
            namespace=package.archive or "debian",  # an extra source's packages: its name
            name=package.name,
            version=package.version,
            qualifiers={"arch": package.arch, "distro": distro},
        )
    )


def distro_of(os_release: str, suite: str) -> str:
    """``debian-13`` from /etc/os-release's VERSION_ID; testing and sid have none: the suite."""
    match = re.search(r'^VERSION_ID="?([^"\n]+)"?$', os_release, re.M)
    return f"debian-{match.group(1) if match else suite}"


def _spdx_id(package: Package) -> str:
    return "SPDXRef-Package-deb-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{package.name}-{package.arch}")


def _supplier(maintainer: str) -> tuple[str, str | None]:
    match = re.match(r"^\s*(.*?)\s*<([^>]*)>\s*$", maintainer)
    return (match.group(1), match.group(2)) if match else (maintainer.strip(), None)


def spdx_document(subject: Subject, packages: list[Package]) -> object:
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        Checksum,
        ChecksumAlgorithm,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        ExtractedLicensingInfo,
        PackagePurpose,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.model import Package as SpdxPackage

    spdx = licenses.spdx()
    info = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=f"{subject.name} disk image",
        document_namespace=f"{NAMESPACE}{subject.name}-{subject.sha256}",
        creators=[Actor(ActorType.TOOL, f"imagesmith-{__version__}")],
        created=subject.created,
    )
    image = SpdxPackage(
        spdx_id="SPDXRef-Image",
        name=subject.name,
        download_location=SpdxNoAssertion(),
        file_name=subject.file,
        files_analyzed=False,
        checksums=[Checksum(ChecksumAlgorithm.SHA256, subject.sha256)],
        primary_package_purpose=PackagePurpose.OPERATING_SYSTEM,
        license_concluded=SpdxNoAssertion(),
        license_declared=SpdxNoAssertion(),
        copyright_text=SpdxNoAssertion(),
        supplier=SpdxNoAssertion(),
    )
    spdx_packages = [image]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-Image")]
    extracted: dict[str, str] = {}
    ids = {p.name: _spdx_id(p) for p in packages}
    for package in packages:
        name, email = _supplier(package.maintainer)
        declared = (
            SpdxNoAssertion() if package.license == licenses.NOASSERTION else spdx.parse(package.license)
        )
        spdx_packages.append(
            SpdxPackage(
                spdx_id=ids[package.name],
                name=package.name,
                version=package.version,
                download_location=SpdxNoAssertion(),
                files_analyzed=False,
                supplier=Actor(ActorType.ORGANIZATION, name, email) if name else SpdxNoAssertion(),
                homepage=package.homepage or None,
                source_info=f"built from the Debian source package {package.source} {package.source_version}",
                license_concluded=SpdxNoAssertion(),
                license_declared=declared,
                copyright_text=SpdxNoAssertion(),
                summary=package.summary or None,
                external_references=[
                    ExternalPackageRef(
                        ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl(package, subject.distro)
                    )
                ],
                primary_package_purpose=PackagePurpose.LIBRARY
                if package.name.startswith("lib")
                else PackagePurpose.APPLICATION,
            )
        )
        relationships.append(Relationship("SPDXRef-Image", RelationshipType.CONTAINS, ids[package.name]))
        relationships.extend(
            Relationship(ids[package.name], RelationshipType.DEPENDS_ON, ids[dep])
            for dep in package.depends
            if dep in ids
        )
        extracted.update(package.license_texts)
    licensing = [
        ExtractedLicensingInfo(
            license_id=ref, extracted_text=text, license_name=ref.removeprefix("LicenseRef-")
        )
        for ref, text in sorted(extracted.items())
    ]
    return Document(info, spdx_packages, relationships=relationships, extracted_licensing_info=licensing)


def write_spdx(subject: Subject, packages: list[Package], target: Path) -> None:
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_file

    document = spdx_document(subject, packages)
    problems = validate_full_spdx_document(document)  # type: ignore[arg-type]
    if problems:
        raise ImagesmithError(
            f"the SPDX document is not valid ({len(problems)} problems)",
            hint="this is a bug in imagesmith: please report it with build.log",
            details="\n".join(p.validation_message for p in problems[:20]),
        )
    write_document_to_file(document, str(target), validate=False)  # type: ignore[arg-type]


def cyclonedx_json(subject: Subject, packages: list[Package]) -> str:
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.contact import OrganizationalContact, OrganizationalEntity
    from cyclonedx.model.license import LicenseExpression
    from cyclonedx.model.tool import ToolRepository
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    image = Component(
        name=subject.name,
        type=ComponentType.OPERATING_SYSTEM,
        bom_ref="image",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=subject.sha256)],
        properties=[Property(name="imagesmith:file", value=subject.file)],
    )
    components = []
    refs: dict[str, Component] = {}
    for package in packages:
        name, email = _supplier(package.maintainer)
        component = Component(
            name=package.name,
            version=package.version,
            type=ComponentType.LIBRARY if package.name.startswith("lib") else ComponentType.APPLICATION,
            bom_ref=purl(package, subject.distro),
            purl=PackageURL.from_string(purl(package, subject.distro)),
            supplier=OrganizationalEntity(
                name=name, contacts=[OrganizationalContact(email=email)] if email else None
            )
            if name
            else None,
            description=package.summary or None,
            licenses=[LicenseExpression(package.license)]
            if package.license != licenses.NOASSERTION
            else None,
            properties=[
                Property(name="debian:source", value=f"{package.source} {package.source_version}"),
                Property(name="debian:architecture", value=package.arch),
                Property(name="debian:installed-size", value=str(package.installed_size)),
                Property(name="imagesmith:brought-by", value=package.brought_by),
            ],
        )
        components.append(component)
        refs[package.name] = component
    bom = Bom(
        components=components,
        serial_number=uuid.uuid5(_UUID_NS, f"{subject.name}:{subject.sha256}"),
        metadata=BomMetaData(
            component=image,
            timestamp=subject.created,
            tools=ToolRepository(
                components=[Component(type=ComponentType.APPLICATION, name="imagesmith", version=__version__)]
            ),
        ),
    )
    bom.register_dependency(image, components)
    for package in packages:
        bom.register_dependency(refs[package.name], [refs[d] for d in package.depends if d in refs])
    return str(JsonV1Dot6(bom).output_as_string(indent=2))


def load_cyclonedx_validator() -> None:
    """Import the CycloneDX validator (the slow part of validating: ``cdxcheck.py``)."""
    import cyclonedx.validation.json  # noqa: F401


def cyclonedx_problem(text: str) -> str | None:
    """What makes ``text`` an invalid CycloneDX 1.6 JSON document (strict); None: nothing."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    return None if error is None else str(error)[:2000]


def not_valid(problem: str) -> ImagesmithError:
    return ImagesmithError(
        "the CycloneDX document is not valid",
        hint="this is a bug in imagesmith: please report it with build.log",
        details=problem,
    )


def check_cyclonedx(text: str) -> None:
    """Validate a CycloneDX 1.6 JSON document against the schema (strict), here."""
    problem = cyclonedx_problem(text)
    if problem is not None:
        raise not_valid(problem)


def check_spdx_file(path: Path) -> list[str]:
    """Problems found by spdx-tools when it reads ``path`` back (none: an empty list)."""
    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    try:
        document = parse_file(str(path))
    except SPDXParsingError as exc:
        return [str(m) for m in exc.get_messages()]  # type: ignore[no-untyped-call]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return [f"{type(exc).__name__}: {exc}"]
    return [m.validation_message for m in validate_full_spdx_document(document)]


def subject(release: Release) -> Subject:
    image, found = release.image, release.inventory
    return Subject(
        release.spec.config.name,
        image.name,
        sha256(image),
        release.spec.device.arch,
        found.distro,
        release.created,
    )


class Sbom(Output):
    """One SBOM format: ``NAME<suffix>``, written by ``writer``."""

    phase = "image"

    def __init__(self, name: str, suffix: str, writer: Callable[[Subject, list[Package], Path], None]):
        self.name, self.suffix, self.writer = name, suffix, writer

    def make(self, release: Release) -> list[Path]:
        target = release.work / f"{release.spec.config.name}{self.suffix}"
        self.writer(subject(release), release.inventory.packages, target)
        return [target]


#: validates a CycloneDX document on its standard input, in a process of its own
CHECKER = "imagesmith.outputs.cdxcheck"


class CycloneDx(Output):
    """``NAME.cdx.json``, validated by a validator loaded ahead in a process of its own
    (``prepare``, ``cdxcheck.py``)."""

    name, phase = "cyclonedx", "image"
    suffix = ".cdx.json"

    def __init__(self) -> None:
        self.ahead: Started | None = None

    def prepare(self, runner: Runner) -> None:
        # -P: nothing from the working directory; PYTHONPATH: this very imagesmith
        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        argv = [sys.executable, "-P", "-m", CHECKER]
        self.ahead = runner.start(argv, env=env, name="the CycloneDX validator")

    def make(self, release: Release) -> list[Path]:
        text = cyclonedx_json(subject(release), release.inventory.packages)
        self.check(release.runner, text)
        target = release.work / f"{release.spec.config.name}{self.suffix}"
        target.write_text(text + "\n", encoding="utf-8")
        return [target]

    def check(self, runner: Runner, text: str) -> None:
        """``text`` validated: by the validator started ahead for ``runner``'s build, else here."""
        ahead, self.ahead = self.ahead, None
        if ahead is None or ahead.runner is not runner:
            check_cyclonedx(text)
            return
        code, lines = ahead.finish(text)
        if code == 1:
            raise not_valid("\n".join(lines))
        if code != 0:
            raise runner.failure(ahead.name, code, lines, "a bug in imagesmith: please report it", None)


SPDX = Sbom("spdx", ".spdx.json", write_spdx)
CYCLONEDX = CycloneDx()
