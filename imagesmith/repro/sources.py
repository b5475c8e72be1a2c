"""The apt archives a build installs from besides the distribution's mirror.

Each source has its own OpenPGP key (a file the user gives, never fetched): mmdebstrap's
apt verifies the source's InRelease with that key alone (``signed-by``), so a Release
signed by any other key fails the build. In the image, the key is
``/etc/apt/keyrings/imagesmith-NAME.asc`` (or ``.gpg``), the source a line of
``/etc/apt/sources.list`` naming it, and the pins ``/etc/apt/preferences.d/imagesmith-sources``:
the source's ``packages`` come from it, the rest of it has its ``priority`` (100 by
default: only what the distribution lacks is taken from it).
"""

from __future__ import annotations

import json
import shlex
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from imagesmith import redact
from imagesmith.config.load import Spec
from imagesmith.config.model import Source
from imagesmith.errors import ImagesmithError, config_error
from imagesmith.host.run import Runner
from imagesmith.repro import mirror

KEYRINGS = "/etc/apt/keyrings"
PREFERENCES = "/etc/apt/preferences.d/imagesmith-sources"
ARMOR = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"


@dataclass(frozen=True)
class Key:
    """A source's key as the build uses it: where it is staged and where it goes in the image."""

    source: Source
    staged: Path  # a copy outside the image (apt reads it during the bootstrap)
    in_image: str  # /etc/apt/keyrings/imagesmith-NAME.asc (armored) or .gpg


def suites(spec: Spec, source: Source) -> list[str]:
    return source.suites or [spec.config.distribution.suite]


def check(spec: Spec) -> None:
    """Each source named once (layers may add sources: two of one name is a config error)."""
    seen: dict[str, int] = {}
    for index, source in enumerate(spec.config.sources):
        if source.name in seen:
            raise config_error(
                f"source {source.name!r} is given twice",
                spec.locate("sources", index, "name"),
                "give each source its own name, or set it once (a layer's source can be removed with -)",
            )
        seen[source.name] = index


def fingerprints(runner: Runner, spec: Spec, index: int) -> tuple[str, ...]:
    """The fingerprints of the public keys in source ``index``'s key file; a file that holds
    no public key, or a secret key, is a config error at the line that names it."""
    source = spec.config.sources[index]
    content = Path(source.key).read_bytes()
    if content in _READ:
        return _READ[content]
    where = spec.locate("sources", index, "key")
    with tempfile.TemporaryDirectory(prefix="imagesmith-gpg-") as home:
        try:
            out = runner.run(
                ["gpg", "--homedir", home, "--batch", "--with-colons", "--show-keys", source.key],
                capture=True,
                name="gpg (reading the source's key)",
            )
        except ImagesmithError:
            raise config_error(
                f"{source.key} holds no OpenPGP key",
                where,
                "give the archive's public key (armored .asc or binary .gpg), as the archive publishes it",
            ) from None
    records = [line.split(":") for line in out.splitlines()]
    if any(fields[0] in ("sec", "ssb") for fields in records):
        raise config_error(
            f"{source.key} holds a secret key", where, "give the archive's public key only (gpg --export)"
        )
    found = tuple(fields[9] for fields in records if fields[0] == "fpr" and len(fields) > 9)
    if not found:
        raise config_error(
            f"{source.key} holds no OpenPGP public key", where, "give the archive's public key"
        )
    _READ[content] = found
    return found


def expected(source: Source) -> str | None:
    """The fingerprint a source's key must have, as gpg prints it (40 upper-case hex digits)."""
    return source.fingerprint.replace(" ", "").upper() if source.fingerprint else None


def check_fingerprint(spec: Spec, index: int, found: tuple[str, ...]) -> None:
    source = spec.config.sources[index]
    wanted = expected(source)
    if wanted is not None and wanted not in found:
        raise config_error(
            f"source {source.name!r}: the key in {spec.portable(source.key)} is {', '.join(found)}, "
            f"not {wanted}",
            spec.locate("sources", index, "key"),
            "this is not the archive's key: fetch it again from the archive's publisher and compare "
            f"the fingerprint (gpg --show-keys FILE); the expected one is set at "
            f"{spec.locate('sources', index, 'fingerprint')}",
        )


#: key file contents already read by this process → their fingerprints
_READ: dict[bytes, tuple[str, ...]] = {}


def check_keys(runner: Runner, spec: Spec) -> None:
    """Before a build: names once each, every key file a public key."""
    check(spec)
    for index in range(len(spec.config.sources)):
        check_fingerprint(spec, index, fingerprints(runner, spec, index))


def stage_keys(runner: Runner, spec: Spec, into: Path) -> list[Key]:
    """Every source's key checked and copied into ``into`` (a directory whose path apt can
    take in ``signed-by``: no spaces)."""
    check(spec)
    if spec.config.sources and any(c.isspace() for c in str(into)):
        raise ImagesmithError(
            f"the keys of extra sources cannot be staged in {into}: apt takes no spaces in signed-by",
            hint="set TMPDIR to a directory without spaces",
        )
    keys = []
    for index, source in enumerate(spec.config.sources):
        check_fingerprint(spec, index, fingerprints(runner, spec, index))  # or a config error
        content = Path(source.key).read_bytes()
        staged = into / f"{source.name}.key"
        staged.write_bytes(content)
        suffix = ".asc" if content.lstrip().startswith(ARMOR) else ".gpg"
        keys.append(Key(source, staged, f"{KEYRINGS}/imagesmith-{source.name}{suffix}"))
    return keys


def apt_lines(spec: Spec, keys: list[Key], *, in_image: bool) -> list[str]:
    """One-line sources for the bootstrap (keys where they are staged) or for the image.
    For the bootstrap a ``file://`` archive is read with apt's ``copy:`` method: its .debs
    are copied into apt's archive (dpkg runs in the new root, which does not see the
    host's path; and the lock hashes what is there)."""
    lines = []
    for key in keys:
        source = key.source
        signed_by = key.in_image if in_image else str(key.staged)
        url = redact.strip_url(source.url)
        if not in_image and url.startswith("file://"):
            url = "copy://" + url.removeprefix("file://")
        for suite in suites(spec, source):
            lines.append(f"deb [signed-by={signed_by}] {url} {suite} {' '.join(source.components)}")
    return lines


def origin(source: Source) -> str:
    """What apt's ``Pin: origin`` matches for the source: its host (empty for file://)."""
    return urllib.parse.urlsplit(redact.strip_url(source.url)).hostname or ""


def preferences(spec: Spec) -> str:
    """apt pins: each source's packages from it, the rest of it at its priority."""
    stanzas = []
    for source in spec.config.sources:
        host = origin(source)
        if source.packages:
            stanzas.append(f'Package: {" ".join(source.packages)}\nPin: origin "{host}"\nPin-Priority: 990\n')
        stanzas.append(f'Package: *\nPin: origin "{host}"\nPin-Priority: {source.priority}\n')
    return "\n".join(stanzas)


def hooks(spec: Spec, keys: list[Key], preferences_file: Path | None) -> list[str]:
    """mmdebstrap hooks: the pins before apt resolves anything; at the end, the keys in
    the image and its sources naming them (not the build's staged copies)."""
    if not keys:
        return []
    found = []
    if preferences_file is not None:
        rel = PREFERENCES.lstrip("/")
        found.append(
            f'--setup-hook=mkdir -p "$1/{Path(rel).parent}" && '
            f'install -m 644 {shlex.quote(str(preferences_file))} "$1/{rel}"'
        )
    install = [f'mkdir -p "$1{KEYRINGS}"']
    for key in keys:
        install.append(f'install -m 644 {shlex.quote(str(key.staged))} "$1{key.in_image}"')
    # the lines apt used name the staged keys: the image gets its own lines instead
    staging = shlex.quote(f"signed-by={keys[0].staged.parent}/")
    image_lines = shlex.quote("".join(f"{line}\n" for line in apt_lines(spec, keys, in_image=True)))
    listed = '"$1/etc/apt/sources.list"'
    install += [
        f"{{ grep -v -F {staging} {listed} || true; printf %s {image_lines}; }} > {listed}.new",
        f"mv {listed}.new {listed}",
    ]
    found.append("--customize-hook=" + " && ".join(install))
    return found


#: what the bootstrap writes next to the rootfs: which extra source each package came from
ARCHIVES = "archives.json"


def archives_of(spec: Spec, installed: dict[tuple[str, str, str], str]) -> dict[str, str]:
    """``name:arch`` → the extra source whose index has exactly that .deb (by sha256), for
    the installed packages that came from one (the others are the distribution's)."""
    found: dict[str, str] = {}
    for source in spec.config.sources:
        for suite in suites(spec, source):
            index = mirror.fetch(source.url, suite, list(source.components), spec.device.arch)
            for (name, version, arch), digest in installed.items():
                if digest and index.versions(name, arch).get(version) == digest:
                    found[f"{name}:{arch}"] = source.name
    return found


def write_archives(found: dict[str, str], target: Path) -> None:
    target.write_text(json.dumps(found, sort_keys=True), encoding="utf-8")


def read_archives(source: Path) -> dict[str, str]:
    """What ``write_archives`` wrote ({} when the build has no extra source)."""
    if not source.is_file():
        return {}
    data: dict[str, str] = json.loads(source.read_text(encoding="utf-8"))
    return data


def described(runner: Runner, spec: Spec) -> list[dict[str, object]]:
    """The sources as the manifest lists them (no credentials)."""
    return [
        {
            "name": source.name,
            "url": redact.strip_url(source.url),
            "suites": suites(spec, source),
            "components": list(source.components),
            "key_fingerprints": list(fingerprints(runner, spec, index)),
            "packages": list(source.packages),
            "priority": source.priority,
        }
        for index, source in enumerate(spec.config.sources)
    ]
