"""YAML files read into a tree of nodes that remember where each value was written."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError

from imagesmith import redact
from imagesmith.errors import Location, config_error

Scalar = str | int | float | bool | None


@dataclass
class Node:
    """A value with the place that set it, and every earlier place that set it too."""

    value: dict[str, Node] | list[Node] | Scalar
    location: Location
    history: list[Location] = field(default_factory=list)
    secret: bool = False  # from !env or !file: used in the build, never shown

    def plain(self) -> Any:
        """The value with locations stripped: what validation sees."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value

    def secrets(self, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
        """Paths of the secret values in this tree."""
        if self.secret:
            return [prefix]
        if isinstance(self.value, dict):
            return [p for k, v in self.value.items() for p in v.secrets((*prefix, k))]
        if isinstance(self.value, list):
            return [p for i, v in enumerate(self.value) for p in v.secrets((*prefix, i))]
        return []

    def get(self, key: str) -> Node | None:
        return self.value.get(key) if isinstance(self.value, dict) else None

    def find(self, path: tuple[str | int, ...]) -> Node | None:
        """The node at ``path``, or None."""
        node: Node | None = self
        for part in path:
            if node is None:
                return None
            if isinstance(node.value, dict) and isinstance(part, str):
                node = node.value.get(part)
            elif isinstance(node.value, list) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return None
        return node

    def locate(self, path: tuple[str | int, ...]) -> Location:
        """The location of the value at ``path``, or of its nearest existing parent."""
        node: Node = self
        for part in path:
            child: Node | None = None
            if isinstance(node.value, dict) and isinstance(part, str):
                child = node.value.get(part)
            elif isinstance(node.value, list) and isinstance(part, int) and 0 <= part < len(node.value):
                child = node.value[part]
            if child is None:
                break
            node = child
        return node.location


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _position(getter: Any, key: object, fallback: Location) -> Location:
    """ruamel's 0-based (line, column) of a key or item, 1-based; the parent's if unknown."""
    try:
        line, col = getter(key)
    except (TypeError, KeyError, ValueError):
        return fallback
    return Location(fallback.file, line + 1, col + 1)


def _secret(data: TaggedScalar, loc: Location, path: Path) -> Node:
    """``!env NAME`` and ``!file path``: private values, read now, masked in every output."""
    tag = str(data.tag.value if hasattr(data.tag, "value") else data.tag)
    name = str(data.value)
    if tag == "!env":
        if name not in os.environ:
            raise config_error(
                f"environment variable {name} is not set", loc, f"export {name}=... before running imagesmith"
            )
        redact.register(os.environ[name])
        return Node(os.environ[name], loc, secret=True)
    if tag == "!file":
        source = user_path(name, loc)
        source = source if source.is_absolute() else path.parent / source
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise config_error(
                f"cannot read the secret file {source}: {getattr(exc, 'strerror', None) or exc}",
                loc,
                "paths are relative to the file that names them",
            ) from None
        redact.register(text)
        return Node(text.removesuffix("\n"), loc, secret=True)
    raise config_error(f"unknown tag {tag}", loc, "imagesmith knows !env NAME and !file path")


def user_path(text: str, where: Location) -> Path:
    """``text`` as a path, with ``~`` and ``~user`` expanded (a located error if they cannot be)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise config_error(
            f"cannot expand {text.split('/')[0]!r}: no such user",
            where,
            "write the path without ~, or as ~/… for your own home directory",
        ) from None


def _to_node(data: Any, loc: Location, path: Path) -> Node:
    if isinstance(data, TaggedScalar):
        return _secret(data, loc, path)
    if isinstance(data, CommentedMap):
        items: dict[str, Node] = {}
        for key, value in data.items():
            key_loc = _position(data.lc.key, key, loc)
            if not isinstance(key, str):
                raise config_error(
                    f"keys must be text, not {type(key).__name__} {key!r}", key_loc, "quote the key"
                )
            items[key] = _to_node(value, _position(data.lc.value, key, key_loc), path)
        return Node(items, loc)
    if isinstance(data, CommentedSeq):
        seq: list[Node] = []
        for i, value in enumerate(data):
            seq.append(_to_node(value, _position(data.lc.item, i, loc), path))
        return Node(seq, loc)
    if data is None or isinstance(data, (bool, int, float, str)):
        # ruamel gives str subclasses (quoted scalars) and int subclasses: normalise
        if isinstance(data, bool) or data is None:
            return Node(data, loc)
        if isinstance(data, int):
            return Node(int(data), loc)
        if isinstance(data, float):
            return Node(float(data), loc)
        return Node(str(data), loc)
    raise config_error(
        f"unsupported YAML value of type {type(data).__name__}",
        loc,
        "use text, numbers, booleans, lists and maps",
    )


def load_yaml(path: Path, named_at: Location | None = None) -> Node:
    """Read one YAML file into a Node tree; every problem becomes a located error.

    ``named_at`` is where another file names this one (an `includes:` entry): a file that
    is not a map of settings at all (say, a key file) is reported there."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise config_error(f"file not found: {path}", None, "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise config_error(
            f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) else exc}",
            Location(path),
            "name a readable UTF-8 text file",
        ) from None
    try:
        with warnings.catch_warnings():
            # YAML allows an anchor to be defined again; ruamel only warns about it
            warnings.simplefilter("ignore", ReusedAnchorWarning)
            data = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        problem = exc.problem or exc.context or "invalid YAML"
        hint = "fix the YAML syntax (indentation, a missing ':' or an unclosed quote or bracket)"
        if "duplicate key" in str(problem):
            hint = "each key may appear once in a map; remove or merge the repeated one"
        raise config_error(f"YAML syntax error: {problem}", loc, hint) from None
    except YAMLError as exc:
        raise config_error(f"YAML error: {exc}", Location(path, 1, 1), "fix the YAML syntax") from None
    root = Location(path, 1, 1)
    if data is None:
        return Node({}, root)
    if not isinstance(data, CommentedMap):
        if named_at is not None:
            raise config_error(
                f"{path.name} is not a config file: it holds a {type(data).__name__}, not a map of settings",
                named_at,
                "includes: takes YAML config fragments such as common.yaml",
            )
        raise config_error(
            f"the file must be a map of settings, not a {type(data).__name__}",
            root,
            "start with `name: ...` and other keys at the top level",
        )
    return _to_node(data, root, path)
