"""Paths in a config document are relative to that document; SSH keys are read here."""

from __future__ import annotations

from pathlib import Path

from imagesmith.config.nodes import Node, user_path
from imagesmith.errors import Location, config_error

SSH_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


#: how to make an update signing pair for development (RAUC takes X.509 certificates)
UPDATE_KEYS = (
    "make a development pair: openssl req -x509 -newkey rsa:4096 -nodes -keyout update.key.pem "
    "-out update.cert.pem -days 3650 -subj /CN=development (paths are relative to the file that names them)"
)


def resolve_path(
    node: Node, base: Path, what: str, must_be_file: bool = False, hint: str | None = None
) -> None:
    if not isinstance(node.value, str):
        return  # a wrong type is reported by validation with its location
    path = user_path(node.value, node.location)
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise config_error(
            f"{what} not found: {path}",
            node.location,
            hint or "paths are relative to the file that names them",
        )
    if must_be_file and not path.is_file():
        raise config_error(f"{what} {path} is not a file", node.location, "name a file here, not a directory")
    node.value = str(path.resolve())


def resolve_paths(doc: Node) -> None:
    """The document's `layer_paths:`, made absolute before layers are searched for."""
    paths = doc.get("layer_paths")
    if paths is not None and isinstance(paths.value, list):
        for item in paths.value:
            resolve_path(item, doc.location.file.parent, "layer directory")


def resolve_sources(tree: Node) -> None:
    """Overlay sources, scripts, the signing key and SSH key files in the merged, rendered config: each
    relative to the file that set it (a `--set` value: to the working directory)."""
    for key, field_name, what in (("files", "source", "overlay source"), ("scripts", "run", "script")):
        entries = tree.get(key)
        if entries is not None and isinstance(entries.value, list):
            for entry in entries.value:
                sub = entry.get(field_name) if isinstance(entry.value, dict) else None
                if sub is not None:
                    resolve_path(sub, _base(sub), what, must_be_file=key == "scripts")
    sources = tree.get("sources")
    if sources is not None and isinstance(sources.value, list):
        for source in sources.value:
            key_file = source.get("key") if isinstance(source.value, dict) else None
            if key_file is not None and isinstance(key_file.value, str):
                resolve_path(key_file, _base(key_file), "source key", must_be_file=True)
    update = tree.get("update")
    if update is not None and isinstance(update.value, dict):
        for key, what in (
            ("key", "update signing key"),
            ("cert", "update certificate"),
            ("keyring", "update keyring"),
        ):
            node = update.get(key)
            if node is not None and node.value is not None:
                resolve_path(node, _base(node), what, must_be_file=True, hint=UPDATE_KEYS)
    signing = tree.get("signing_key")
    if signing is not None and signing.value is not None:
        resolve_path(signing, _base(signing), "signing key", must_be_file=True)
    users = tree.get("users")
    if users is not None and isinstance(users.value, list):
        for user in users.value:
            keys = user.get("ssh_authorized_keys") if isinstance(user.value, dict) else None
            if keys is None or not isinstance(keys.value, list):
                continue
            for entry in keys.value:
                if isinstance(entry.value, str) and not entry.value.startswith(SSH_KEY_PREFIXES):
                    resolve_path(entry, _base(entry), "SSH public key file", must_be_file=True)
                    entry.value = _read_public_key(Path(str(entry.value)), entry.location)


def _base(node: Node) -> Path:
    return node.location.file.parent


def _read_public_key(path: Path, where: Location) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines or not all(ln.startswith(SSH_KEY_PREFIXES) for ln in lines):
        raise config_error(
            f"{path} does not look like an SSH public key",
            where,
            "give the .pub file (e.g. ~/.ssh/id_ed25519.pub), never a private key",
        )
    if "PRIVATE KEY" in text:
        raise config_error(f"{path} holds a private key", where, "give the .pub file instead")
    return "\n".join(lines)
