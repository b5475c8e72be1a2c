"""What a Debian mirror offers now: the versions and sha256 of every package of a suite.

Read from the suite's InRelease and the components' Packages.xz files (each checked
against the sha256 InRelease gives). The signature is not checked here: this index only
decides whether a locked version can still be had; mmdebstrap verifies the signed index
and every downloaded file during the build.
"""

from __future__ import annotations

import base64
import hashlib
import io
import lzma
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

from imagesmith import redact
from imagesmith.errors import ImagesmithError

#: snapshot.debian.org style: <host>/archive/<archive>/<timestamp>
_SNAPSHOT = re.compile(r"^(?P<base>https?://[^/]+/archive/[^/]+)/(?P<stamp>\d{8}T\d{6}Z)/?$")


def snapshot_of(mirror: str) -> str | None:
    """The snapshot timestamp of a snapshot-style mirror URL (None for a live mirror)."""
    match = _SNAPSHOT.match(mirror)
    return match.group("stamp") if match else None


@dataclass
class Index:
    """(package, architecture) → {version: sha256 of the .deb}; and the virtual package
    names that packages provide."""

    packages: dict[tuple[str, str], dict[str, str]]
    provided: set[str] = field(default_factory=set)

    def versions(self, name: str, arch: str) -> dict[str, str]:
        return self.packages.get((name, arch), {})

    def merged(self, other: Index) -> Index:
        """A new index with ``other``'s packages and provided names as well (another
        archive's); neither is changed (``fetch`` shares the indexes it read)."""
        packages = dict(self.packages)
        for key, versions in other.packages.items():
            packages[key] = {**packages.get(key, {}), **versions}
        return Index(packages, self.provided | other.provided)

    def names(self) -> set[str]:
        """Every name apt can install: real packages and the virtual ones provided."""
        return {name for name, _arch in self.packages} | self.provided


def _get(url: str) -> bytes:
    """The file at ``url``; credentials in the URL are sent as HTTP basic auth, never shown."""
    shown = redact.strip_url(url)
    request = urllib.request.Request(shown)
    credentials = redact.url_credentials(url)
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data: bytes = response.read()
            return data
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = redact.redact(str(getattr(exc, "reason", exc)))
        raise ImagesmithError(
            f"cannot read the mirror's index {shown}: {reason}",
            hint="check the network and the distribution's mirror: in the config",
        ) from None


def release_hashes(text: str) -> dict[str, str]:
    """path → sha256 from the SHA256 section of a Release/InRelease file."""
    hashes: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("SHA256:"):
            inside = True
            continue
        if inside:
            if not line.startswith(" "):
                break
            fields = line.split()
            if len(fields) == 3:
                hashes[fields[2]] = fields[0]
    return hashes


def parse_packages(
    lines: Iterable[str], provided: set[str] | None = None
) -> dict[tuple[str, str], dict[str, str]]:
    """(package, architecture) → {version: sha256} of a Packages file, read line by line
    (the file is tens of MB: never held whole); the names in its Provides: fields are
    added to ``provided``."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    fields: dict[str, str] = {}

    def stanza_ends() -> None:
        if "Package" in fields:
            found.setdefault((fields["Package"], fields.get("Architecture", "")), {})[
                fields.get("Version", "")
            ] = fields.get("SHA256", "")
        if provided is not None and "Provides" in fields:
            provided.update(item.split("(")[0].strip() for item in fields["Provides"].split(","))
        fields.clear()

    for line in lines:
        line = line.rstrip("\n")
        if not line:
            stanza_ends()
            continue
        key, sep, value = line.partition(": ")
        if sep and key in ("Package", "Version", "Architecture", "SHA256", "Provides"):
            fields[key] = value
    stanza_ends()
    return found


#: indexes read by this process (a build reads each archive's once: name check, lock, archives)
_FETCHED: dict[tuple[str, str, tuple[str, ...], str], Index] = {}


def fetch(mirror: str, suite: str, components: list[str], arch: str) -> Index:
    """The index of ``suite``'s ``components`` for ``arch``, read once per process and
    shared by its callers (the name check, the lock check, the extra sources' lookups),
    who never change it: ``Index.merged`` makes a new one. A suite's index is tens of MB
    of Python objects; no caller needs a copy of its own."""
    key = (mirror, suite, tuple(components), arch)
    if key not in _FETCHED:
        _FETCHED[key] = _fetch(mirror, suite, components, arch)
    return _FETCHED[key]


def _fetch(mirror: str, suite: str, components: list[str], arch: str) -> Index:
    base = mirror.rstrip("/")
    shown = redact.strip_url(base)
    release = _get(f"{base}/dists/{suite}/InRelease").decode("utf-8", errors="replace")
    hashes = release_hashes(release)
    packages: dict[tuple[str, str], dict[str, str]] = {}
    provided: set[str] = set()
    for component in components:
        rel = f"{component}/binary-{arch}/Packages.xz"
        if rel not in hashes:
            raise ImagesmithError(
                f"the mirror's {suite} has no {rel}",
                hint=f"check the suite and components: {shown}/dists/{suite}/InRelease lists what it has",
            )
        data = _get(f"{base}/dists/{suite}/{rel}")
        if hashlib.sha256(data).hexdigest() != hashes[rel]:
            raise ImagesmithError(
                f"{shown}/dists/{suite}/{rel} does not match its InRelease (the mirror is being updated?)",
                hint="try again in a few minutes",
            )
        with io.TextIOWrapper(lzma.LZMAFile(io.BytesIO(data)), encoding="utf-8", errors="replace") as text:
            parsed = parse_packages(text, provided)
        del data
        if not packages:  # the first component's as read, without a copy
            packages = parsed
            continue
        for key, versions in parsed.items():
            packages.setdefault(key, {}).update(versions)
    return Index(packages, provided)
