"""What is installed in a rootfs, from dpkg's own database, and why each package is there.

Read once at the end of customize: every package dpkg calls ``install ok installed``,
its source package, size and dependencies (resolved to the installed packages that
satisfy them), its licence from /usr/share/doc/<package>/copyright, and the layer (or
device, or the config) that brought it in. Copyright files are also kept from right
after the bootstrap, so a script that strips /usr/share/doc costs no licence data.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from debian.deb822 import Deb822, PkgRelation

from imagesmith.config import facts
from imagesmith.config.facts import languages
from imagesmith.config.facts import packages as requested
from imagesmith.config.load import Spec
from imagesmith.host.rootfs import inside
from imagesmith.outputs import licenses

STATUS = "/var/lib/dpkg/status"
#: Relations that make apt install a package (apt installs Recommends by default).
RELATIONS = ("Pre-Depends", "Depends", "Recommends")
BOOTSTRAP = "bootstrap"  # brought by mmdebstrap itself: Essential, apt and their dependencies


@dataclass
class Package:
    name: str
    version: str
    arch: str
    source: str
    source_version: str
    installed_size: int  # bytes
    maintainer: str
    homepage: str
    summary: str
    essential: bool
    depends: list[str] = field(default_factory=list)  # installed packages it pulls in
    brought_by: str = BOOTSTRAP
    license: str = licenses.NOASSERTION
    license_texts: dict[str, str] = field(default_factory=dict)
    archive: str = ""  # the extra source it came from ("": the distribution's mirror)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("license_texts")
        if not self.archive:
            data.pop("archive")
        return data


def _source(paragraph: Deb822) -> tuple[str, str]:
    """``Source: glibc (2.41-12)`` → (glibc, 2.41-12); no Source field: the package itself."""
    name, version = paragraph["Package"], paragraph["Version"]
    field_value = paragraph.get("Source", "").strip()
    if field_value:
        src, _, rest = field_value.partition(" ")
        return src, rest.strip(" ()") or version
    return name, version


def _relations(paragraph: Deb822, name: str) -> list[list[dict[str, Any]]]:
    text = paragraph.get(name, "").strip()
    return PkgRelation.parse_relations(text) if text else []  # type: ignore[return-value]


def read_status(rootfs: Path) -> list[Package]:
    """The installed packages, sorted by name and architecture."""
    packages: list[Package] = []
    relations: dict[str, list[list[dict[str, Any]]]] = {}
    provides: dict[str, str] = {}
    with open(inside(rootfs, STATUS), encoding="utf-8", errors="replace") as handle:
        for paragraph in Deb822.iter_paragraphs(handle):
            if paragraph.get("Status", "").split()[-1:] != ["installed"]:
                continue
            source, source_version = _source(paragraph)
            package = Package(
                name=paragraph["Package"],
                version=paragraph["Version"],
                arch=paragraph.get("Architecture", "all"),
                source=source,
                source_version=source_version,
                installed_size=int(paragraph.get("Installed-Size", "0") or 0) * 1024,
                maintainer=paragraph.get("Maintainer", ""),
                homepage=paragraph.get("Homepage", ""),
                summary=paragraph.get("Description", "").split("\n", 1)[0].strip(),
                essential=paragraph.get("Essential", "no") == "yes",
            )
            packages.append(package)
            relations[package.name] = [group for rel in RELATIONS for group in _relations(paragraph, rel)]
            for group in _relations(paragraph, "Provides"):
                for alternative in group:
                    provides.setdefault(alternative["name"], package.name)
    installed = {p.name for p in packages}
    for package in packages:
        wanted: list[str] = []
        for group in relations[package.name]:
            for alternative in group:
                name = alternative["name"]
                found = name if name in installed else provides.get(name)
                if found is not None:
                    if found != package.name and found not in wanted:
                        wanted.append(found)
                    break
        package.depends = wanted
    return sorted(packages, key=lambda p: (p.name, p.arch))


def roots(spec: Spec, package_names: list[str]) -> dict[str, str]:
    """The packages the spec names, each with who named it: a layer, the device or the config."""
    origin: dict[str, str] = {}
    by_file = {ref.path.resolve(): f"layer {ref.name}" for ref in spec.layers}
    for name in facts.device_packages(spec):
        origin.setdefault(name, f"device {spec.device.device}")
    node = spec.tree.get("packages")
    for item in node.value if node is not None and isinstance(node.value, list) else []:
        name = str(item.value)
        if name in package_names and not name.startswith("-"):
            origin.setdefault(name, by_file.get(item.location.file.resolve(), "config"))
    for name in package_names:
        origin.setdefault(name, "config")  # added by imagesmith for a setting (sudo, locales)
    return origin


def attribute(packages: list[Package], origin: dict[str, str]) -> None:
    """Set ``brought_by``: the first root (in merge order) whose dependencies reach it."""
    by_name = {p.name: p for p in packages}
    queue: deque[tuple[str, str]] = deque((name, who) for name, who in origin.items() if name in by_name)
    seen: set[str] = set()
    while queue:
        name, who = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        by_name[name].brought_by = who
        queue.extend((dep, who) for dep in by_name[name].depends if dep not in seen)


def keep_copyrights(rootfs: Path, into: Path) -> None:
    """Copy every package's copyright file out of the rootfs (right after the bootstrap)."""
    into.mkdir(parents=True, exist_ok=True)
    doc = inside(rootfs, "/usr/share/doc")
    if not doc.is_dir():
        return
    for entry in sorted(os.listdir(doc)):
        source = inside(rootfs, f"/usr/share/doc/{entry}/copyright")
        if source.is_file():
            shutil.copyfile(source, into / entry)


def copyright_text(rootfs: Path, kept: Path | None, name: str) -> str | None:
    for candidate in (inside(rootfs, f"/usr/share/doc/{name}/copyright"), kept / name if kept else None):
        if candidate is not None and candidate.is_file():
            return candidate.read_text(encoding="utf-8", errors="replace")
    return None


def collect(
    spec: Spec,
    rootfs: Path,
    kept: Path | None = None,
    archives: dict[str, str] | None = None,
    memo: Path | None = None,
) -> tuple[list[Package], dict[str, str]]:
    """Everything the SBOMs and the manifest say about the image's packages, and the
    packages the spec names with who named each; ``archives``: ``name:arch`` → the extra
    source a package came from; ``memo``: where the licences of copyright files read
    before are kept (``licenses.Memo``)."""
    packages = read_status(rootfs)
    for package in packages:
        package.archive = (archives or {}).get(f"{package.name}:{package.arch}", "")

    origin = roots(spec, [n for n in requested(spec) if not n.endswith("-")])
    attribute(packages, origin)
    known = licenses.Memo(memo)
    for package in packages:
        found = known.read(copyright_text(rootfs, kept, package.name))
        package.license, package.license_texts = found.declared, found.texts
    known.save()
    return packages, origin


def removable(packages: list[Package], origin: dict[str, str], drop: set[str]) -> set[str]:
    """The packages that would no longer be installed if the roots in ``drop`` were not named."""
    by_name = {p.name: p for p in packages}

    def reach(starts: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = [s for s in starts if s in by_name]
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(by_name[name].depends)
        return seen

    bootstrap = [p.name for p in packages if p.brought_by == BOOTSTRAP or p.essential]
    everything = reach([*origin, *bootstrap])
    kept = reach([*(n for n in origin if n not in drop), *bootstrap])
    return everything - kept


@dataclass
class Inventory:
    """The installed packages (with licences and what brought each in), for the SBOMs and
    the manifest: taken after customize, before any filesystem is made."""

    packages: list[Package]
    roots: dict[str, str]
    distro: str
    #: what each slim key not set would save, in bytes (``packages --trim`` suggests them)
    slimmable: dict[str, int] = field(default_factory=dict)

    def save(self, target: Path) -> None:
        data = {"packages": [asdict(p) for p in self.packages], "roots": self.roots, "distro": self.distro,
                "slimmable": self.slimmable}  # fmt: skip
        target.write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, source: Path) -> Inventory:
        data = json.loads(source.read_text(encoding="utf-8"))
        packages = [Package(**p) for p in data["packages"]]
        return cls(packages, data["roots"], data["distro"], data.get("slimmable", {}))


def _size(top: Path, keep: Callable[[Path], bool]) -> int:
    """Bytes of the regular files under ``top`` that ``keep`` does not keep (links not followed)."""
    total = 0
    if top.is_dir() and not top.is_symlink():
        for dirpath, _dirnames, filenames in os.walk(top):
            for name in filenames:
                path = Path(dirpath) / name
                if not path.is_symlink() and not keep(path):
                    total += path.lstat().st_size
    return total


def slimmable(spec: Spec, rootfs: Path) -> dict[str, int]:
    """What each ``slim`` key that is not set would leave out of this rootfs, in bytes."""
    found = {}
    if not spec.config.slim.docs:
        docs = _size(inside(rootfs, "/usr/share/doc"), lambda p: p.name == "copyright")
        found["slim.docs"] = docs + sum(
            _size(inside(rootfs, d), lambda _p: False) for d in ("/usr/share/man", "/usr/share/info")
        )
    if not spec.config.slim.locales:
        top = inside(rootfs, "/usr/share/locale")
        kept = set(languages(spec.config.locale))
        found["slim.locales"] = _size(
            top, lambda p: p.name == "locale.alias" or p.relative_to(top).parts[0] in kept
        )
    return found
