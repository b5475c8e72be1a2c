"""Stage cache entries in an OCI registry: one signed artifact per entry.

An entry ``<stage>-<key>`` of the local cache becomes the artifact ``HOST/REPO:<stage>-<key>``:
one layer, the entry's files as a zstd-compressed tar (owners, modes, links, extended
attributes and holes kept), and a manifest whose annotations hold a *statement* (which
stage and key, the archive's sha256 and size, the digest of the files it unpacks to, the
facts the stage recorded) and an Ed25519 signature of it. The manifest is uploaded last,
so an interrupted push leaves no tag behind, only blobs the registry never names.

A pull trusts nothing it has not checked: the signature against the configured public
keys, the statement against the stage and key asked for (a signed entry cannot be
replayed under another tag), the archive's bytes against the statement, and the
unpacked files against the recorded digest before the entry is renamed into the local
cache. The registry is spoken to with oras (the ORAS project's Python client), without its
retries and with time limits: a registry that is down costs seconds, not minutes.
Credentials come the registry way (``docker login`` / ``~/.docker/config.json``) and
never appear in a URL, a log or an error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagesmith.cache.hashing import file_sha256
from imagesmith.errors import EXIT_CONFIG, ImagesmithError

SCHEMES = {"oci": "https", "oci+http": "http"}
FORMAT = "imagesmith-cache/1"
ARCHIVE_TYPE = "application/vnd.imagesmith.cache.entry.v1.tar+zstd"
ARCHIVE_NAME = "entry.tar.zst"
STATEMENT = "org.imagesmith.cache.statement"
SIGNATURE = "org.imagesmith.cache.signature"
SIGNER = "org.imagesmith.cache.signer"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",)
#: seconds to connect, and to wait for each answer
TIMEOUT = (5.0, 120.0)
CHUNK = 16 * 1024 * 1024
ADDRESS_HINT = (
    "write it as oci://HOST[:PORT]/REPOSITORY (HTTPS), or oci+http://HOST:PORT/REPOSITORY for a "
    "registry without TLS; credentials go through `docker login`, never into the URL"
)


class Unavailable(Exception):
    """The registry could not be used: down, refused, or an answer that makes no sense."""


class Refused(Exception):
    """An entry the registry gave that is not trusted; the message says why."""


@dataclass(frozen=True)
class Address:
    """Where the shared cache lives: ``oci://HOST[:PORT]/REPO`` or ``oci+http://…``."""

    host: str
    repository: str
    plain_http: bool

    @classmethod
    def parse(cls, url: str) -> Address:
        def bad(what: str) -> ImagesmithError:
            shown = url if "@" not in url else "(a URL with credentials, not shown)"
            return ImagesmithError(
                f"--cache-remote {shown}: {what}", hint=ADDRESS_HINT, exit_code=EXIT_CONFIG
            )

        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise bad("not an oci:// address")
        if "@" in parts.netloc:
            raise bad("credentials in the address")
        if not parts.hostname or parts.query or parts.fragment:
            raise bad("it needs a host and a repository, and nothing after them")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise bad("the port is not a number") from None
        repository = parts.path.strip("/")
        if not repository:
            raise bad("it needs a host and a repository, and nothing after them")
        allowed = set("abcdefghijklmnopqrstuvwxyz0123456789._-/")
        if not set(repository) <= allowed or "//" in repository:
            raise bad("the repository must be lower-case letters, digits, '.', '_', '-' and '/'")
        return cls(parts.netloc, repository, SCHEMES[parts.scheme] == "http")

    def __str__(self) -> str:
        return f"{'oci+http' if self.plain_http else 'oci'}://{self.host}/{self.repository}"

    def reference(self, stage: str, key: str) -> str:
        return f"{self.host}/{self.repository}:{stage}-{key}"


def key_id(public_key: Any) -> str:
    """A short name of an Ed25519 public key: the start of the sha256 of its raw bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass
class Trust:
    """Who signs what this machine pushes, and whose entries it takes."""

    signer: Any = None  # an Ed25519 private key, or None: this machine only pulls
    keys: dict[str, Any] = field(default_factory=dict)  # key id → Ed25519 public key

    def __post_init__(self) -> None:
        if self.signer is not None:
            public = self.signer.public_key()
            self.keys.setdefault(key_id(public), public)

    def sign(self, data: bytes) -> dict[str, str]:
        assert self.signer is not None
        signature = base64.b64encode(self.signer.sign(data)).decode()
        return {SIGNER: key_id(self.signer.public_key()), SIGNATURE: signature}

    def check(self, annotations: dict[str, str], data: bytes) -> None:
        from cryptography.exceptions import InvalidSignature

        signer = annotations.get(SIGNER, "")
        public = self.keys.get(signer)
        if public is None:
            raise Refused(f"signed by a key this build does not trust ({signer[:16] or 'none'})")
        try:
            public.verify(base64.b64decode(annotations.get(SIGNATURE, ""), validate=True), data)
        except (InvalidSignature, ValueError):
            raise Refused(f"its signature is not valid for key {signer}") from None


@dataclass(frozen=True)
class Statement:
    """What a signed entry says of itself."""

    stage: str
    key: str
    archive_sha256: str
    archive_size: int
    content_sha256: str
    facts: dict[str, Any]

    def encode(self) -> bytes:
        data = {"format": FORMAT, **self.__dict__}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Statement:
        try:
            raw = json.loads(data)
            if raw.pop("format") != FORMAT:
                raise ValueError("another format")
            found = cls(**raw)
            if not isinstance(found.facts, dict) or not isinstance(found.archive_size, int):
                raise ValueError("wrong types")
            return found
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise Refused(f"its statement cannot be read ({exc})") from None


class Registry:
    """The few registry operations the shared cache needs, on one repository."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._client = _client(address)

    def has(self, stage: str, key: str) -> bool:
        """A HEAD on the entry's manifest: the cheap hit-or-miss question."""
        code = self._manifest_request(stage, key, "HEAD").status_code
        if code in (200, 404):
            return bool(code == 200)
        raise Unavailable(f"the registry answered {code} to a manifest request")

    def statement(self, stage: str, key: str, trust: Trust) -> tuple[Statement, str] | None:
        """The entry's checked statement and its archive's digest; None if it is not there."""
        response = self._manifest_request(stage, key, "GET")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise Unavailable(f"the registry answered {response.status_code} to a manifest request")
        try:
            manifest = response.json()
            annotations = dict(manifest.get("annotations") or {})
            layers = manifest["layers"]
            digest = str(layers[0]["digest"])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise Refused("its manifest is not one imagesmith wrote") from None
        data = str(annotations.get(STATEMENT, "")).encode()
        trust.check(annotations, data)
        found = Statement.decode(data)
        if (found.stage, found.key) != (stage, key):
            raise Refused(f"it is signed as {found.stage}-{found.key}, not as the entry asked for")
        if len(layers) != 1 or digest != f"sha256:{found.archive_sha256}":
            raise Refused("its manifest names another archive than its statement")
        return found, digest

    def download(self, digest: str, target: Path) -> None:
        container = self._client.get_container(self.address.reference("x", "x"))
        try:
            self._client.auth.load_configs(container)
            with self._client.get_blob(container, digest, stream=True) as response:
                if response.status_code != 200:
                    raise Unavailable(f"the registry answered {response.status_code} to a blob request")
                with open(target, "wb") as out:
                    for chunk in response.iter_content(chunk_size=1024 * 1024):
                        out.write(chunk)
        except _TRANSPORT_ERRORS as exc:
            raise Unavailable(_said(exc)) from None

    def push(self, statement: Statement, archive: Path, signature: dict[str, str]) -> None:
        """Blobs first, the manifest last: until it lands, no tag names the entry."""
        annotations = {STATEMENT: statement.encode().decode(), **signature}
        try:
            self._client.push(
                self.address.reference(statement.stage, statement.key),
                files=[f"{archive}:{ARCHIVE_TYPE}"],
                manifest_annotations=annotations,
                disable_path_validation=True,
                do_chunked=True,  # a file is read a chunk at a time, never whole
                chunk_size=CHUNK,
                quiet=True,
            )
        except _TRANSPORT_ERRORS as exc:
            raise Unavailable(_said(exc)) from None

    def _manifest_request(self, stage: str, key: str, method: str) -> Any:
        container = self._client.get_container(self.address.reference(stage, key))
        url = f"{self._client.prefix}://{container.manifest_url()}"
        try:
            self._client.auth.load_configs(container)
            return self._client.do_request(url, method, headers={"Accept": ", ".join(MANIFEST_TYPES)})
        except _TRANSPORT_ERRORS as exc:
            raise Unavailable(_said(exc)) from None


def archive_statement(stage: str, key: str, archive: Path, content: str, facts: dict[str, Any]) -> Statement:
    return Statement(stage, key, file_sha256(archive), archive.stat().st_size, content, facts)


def _said(exc: BaseException) -> str:
    """What went wrong, in one line without a URL's query (upload session ids)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split("?", 1)[0][:200]


def _client(address: Address) -> Any:
    """An oras client that gives up at once (this module decides what a failure means)
    and never waits longer than ``TIMEOUT``."""
    import oras.provider
    import requests

    class Session(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", TIMEOUT)
            return super().request(*args, **kwargs)

    class Client(oras.provider.Registry):  # type: ignore[misc]
        def do_request(self, *args: Any, **kwargs: Any) -> Any:
            return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)

    client = Client(hostname=address.host, insecure=address.plain_http)
    session = Session()
    session.cookies = client.session.cookies  # oras's policy: no cookies
    client.session = session
    client.auth.session = session
    return client


def _transport_errors() -> tuple[type[BaseException], ...]:
    import requests

    # oras raises ValueError for an answer it did not expect; a file that cannot be
    # written (a full disk) is not the registry's fault and is not caught
    return (requests.RequestException, ValueError)


_TRANSPORT_ERRORS = _transport_errors()
