"""Config files → a validated Spec: find layers, merge them, validate, locate errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from imagesmith import redact
from imagesmith.config import catalog, variables
from imagesmith.config.layers import LayerRef, check_capabilities, resolve_layers, strip_meta
from imagesmith.config.merge import merge
from imagesmith.config.model import Device, ImageConfig, Kernel, Layout
from imagesmith.config.nodes import Node, load_yaml
from imagesmith.config.paths import resolve_path, resolve_paths, resolve_sources
from imagesmith.config.validate import M, validate
from imagesmith.disk.ids import Identity
from imagesmith.errors import Location, config_error

__all__ = ["LayerRef", "Spec", "find_node", "load_spec", "parse_key"]


SECRET = "<secret>"


@dataclass
class Spec:
    """Everything a build needs, validated."""

    config: ImageConfig
    device: Device
    layout: Layout
    config_path: Path
    layers: list[LayerRef]
    tree: Node = field(repr=False)
    notes: list[str] = field(default_factory=list)  # things worth telling the user

    def locate(self, *path: str | int) -> Location:
        return self.tree.locate(tuple(path))

    @property
    def kernel_name(self) -> str:
        """The kernel chosen (``kernel:``), or the device's first."""
        return self.config.kernel or next(iter(self.device.kernels))

    @property
    def kernel(self) -> Kernel:
        return self.device.kernels[self.kernel_name]

    @property
    def console(self) -> str:
        """The serial console as the chosen kernel names it."""
        return self.kernel.console or self.device.console

    @property
    def identity(self) -> Identity:
        """What the image's identifiers derive from (``disk/ids.py``)."""
        return Identity(self.config.name, self.device.device, self.layout)

    def portable(self, path: str) -> str:
        """A path as outputs and keys show it: built-in files as ``imagesmith:…``, the
        project's relative to the config's directory, so no directory of the build host shows."""
        resolved = Path(path)
        for base, prefix in (
            (catalog.builtin_dir("layers").parent, "imagesmith:"),
            (self.config_path.parent, ""),
        ):
            if resolved.is_relative_to(base):
                return prefix + str(resolved.relative_to(base))
        return path

    def keyed(self, hide: Callable[[Any], Any]) -> dict[str, Any]:
        """The config as stage keys read it: ``masked`` with every path of the build host as
        ``portable`` shows it, so two checkouts of a project at different paths (two machines
        of a build farm) have the same keys. What the files hold is keyed by their digests."""
        data = self.masked(hide)
        for key, name in (("files", "source"), ("scripts", "run"), ("sources", "key")):
            for entry in data.get(key) or []:
                if isinstance(entry.get(name), str):
                    entry[name] = self.portable(entry[name])
        for name in ("key", "cert", "keyring"):
            if isinstance(data.get("update"), dict) and isinstance(data["update"].get(name), str):
                data["update"][name] = self.portable(data["update"][name])
        if isinstance(data.get("signing_key"), str):
            data["signing_key"] = self.portable(data["signing_key"])
        data["layer_paths"] = [self.portable(path) for path in data.get("layer_paths") or []]
        return data

    def masked(self, hide: Callable[[Any], Any] = lambda _value: SECRET) -> dict[str, Any]:
        """The merged config for people and outputs: every secret value replaced by
        ``hide(value)`` (by default <secret>)."""
        data: dict[str, Any] = self.config.model_dump(mode="json", by_alias=True)
        data["distribution"]["mirror"] = redact.strip_url(data["distribution"]["mirror"])
        for source in data.get("sources", []):
            source["url"] = redact.strip_url(source["url"])
        for path in self.tree.secrets():
            holder: Any = data
            for part in path[:-1]:
                holder = holder[part]
            holder[path[-1]] = hide(holder[path[-1]])
        return data


def _catalog_item(kind: str, model: type[M], name_node: Node | None, default: str | None, project: Path) -> M:
    """A device or layout: ``devices/NAME.yaml`` or ``layouts/NAME.yaml`` next to the
    config first, then the built-in catalog."""
    name = name_node.value if name_node is not None else default
    where = name_node.location if name_node is not None else None
    if not isinstance(name, str):
        raise config_error(f"{kind} must be a name", where, f"write e.g. `{kind}: {default or 'pi4'}`")
    search = [project / f"{kind}s"]
    path = catalog.find(f"{kind}s", name, search)
    if path is None:
        raise config_error(
            f"unknown {kind} {name!r}", where, catalog.suggestion(name, catalog.names(f"{kind}s", search))
        )
    info = path.stat()
    return cast(M, _read_item(model, str(path), info.st_mtime_ns, info.st_size, f"{kind} {name}"))


@functools.lru_cache(maxsize=64)
def _read_item(model: type[BaseModel], path: str, mtime_ns: int, size: int, what: str) -> BaseModel:
    """A device or layout file read and validated once per version of it (the models are
    frozen, so every spec may share one)."""
    return validate(model, load_yaml(Path(path)), what)


def _expand_includes(doc: Node, stack: tuple[Path, ...] = ()) -> Node:
    """``doc`` over the files it includes (in order, each over its own includes)."""
    includes = doc.get("includes")
    if includes is None:
        return doc
    if not isinstance(includes.value, list):
        raise config_error("includes must be a list of files", includes.location, "write e.g. [common.yaml]")
    merged: Node | None = None
    for item in includes.value:
        if not isinstance(item.value, str):
            raise config_error("an included file must be a path", item.location, "write e.g. common.yaml")
        resolve_path(item, doc.location.file.parent, "included file", must_be_file=True)
        path = Path(str(item.value))
        if path in stack or path == doc.location.file:
            chain = " → ".join(str(p) for p in [*stack, doc.location.file, path])
            raise config_error(
                f"files include each other in a cycle: {chain}", item.location, "remove one of the includes"
            )
        included = load_yaml(path, named_at=item.location)
        if included.get("layer") is not None:
            raise config_error(
                f"{path.name} is a layer: list it under `layers:`",
                item.location,
                "includes: takes config fragments",
            )
        resolve_paths(included)
        included = _expand_includes(included, (*stack, doc.location.file))
        merged = included if merged is None else merge(merged, included)
    assert isinstance(doc.value, dict)
    own = Node({k: v for k, v in doc.value.items() if k != "includes"}, doc.location)
    return own if merged is None else merge(merged, own)


def _layer_paths(doc: Node) -> list[Path]:
    """The config's own `layer_paths:` (already made absolute by ``_resolve_paths``)."""
    node = doc.get("layer_paths")
    if node is None or not isinstance(node.value, list):
        return []  # a wrong type is reported by validation
    return [Path(str(item.value)) for item in node.value if isinstance(item.value, str)]


def _setting(assignment: str) -> Node:
    """``--set distribution.suite=bookworm`` as a one-key document (the value is YAML)."""
    key, sep, text = assignment.partition("=")
    where = Location(Path(f"--set {assignment}"))
    if not sep or not key or not all(part.isidentifier() for part in key.split(".")):
        raise config_error(
            f"--set {assignment!r}: expected KEY=VALUE",
            None,
            "e.g. --set hostname=kiosk-1 or --set distribution.suite=bookworm",
        )
    try:
        from io import StringIO

        from ruamel.yaml import YAML

        loaded = YAML(typ="rt").load(StringIO(text)) if text.strip() else ""
    except Exception as exc:
        raise config_error(
            f"--set {assignment!r}: the value is not valid YAML ({exc})",
            None,
            "quote text with special characters",
        ) from None
    node = _to_node_at(loaded, where)
    for part in reversed(key.split(".")):
        node = Node({part: node}, where)
    return node


def _to_node_at(data: object, where: Location) -> Node:
    if isinstance(data, dict):
        return Node({str(k): _to_node_at(v, where) for k, v in data.items()}, where)
    if isinstance(data, list):
        return Node([_to_node_at(v, where) for v in data], where)
    if data is None or isinstance(data, (bool, int, float)):
        return Node(data, where)
    return Node(str(data), where)


def load_spec(
    config_path: Path | None = None,
    layer_dirs: list[Path] | None = None,
    *,
    sets: list[str] | None = None,
    variant: str | None = None,
) -> Spec:
    """Load, merge and validate an image config and everything it names.

    From the bottom up: the layers (required ones first), the files the config includes,
    the config, its variant file ``<config>.<variant>.yaml`` and ``--set`` values.
    Layers are looked up in the config's directory, then in ``layer_dirs``, then in the
    built-in catalog.
    """
    path = (config_path or catalog.DEFAULT_CONFIG).resolve()
    doc = load_yaml(path)
    if doc.get("layer") is not None:
        raise config_error(
            "this file is a layer, not an image config",
            doc.locate(("layer",)),
            "build an image config that lists this layer under `layers:`",
        )
    resolve_paths(doc)
    doc = _expand_includes(doc)
    notes: list[str] = []
    if variant is not None:
        variant_path = path.with_name(f"{path.stem}.{variant}{path.suffix}")
        if variant_path.is_file():
            extra = load_yaml(variant_path)
            resolve_paths(extra)
            doc = merge(doc, _expand_includes(extra))
        else:
            notes.append(f"no {variant_path.name} next to {path.name}: variant {variant!r} adds nothing")
    for assignment in sets or []:
        doc = merge(doc, _setting(assignment))
    search = [path.parent, *_layer_paths(doc), *(d.resolve() for d in layer_dirs or [])]
    layers = resolve_layers(doc, search)
    check_capabilities(layers)
    declared: dict[str, variables.Variable] = {}
    merged: Node | None = None
    for _ref, layer in layers:
        resolve_paths(layer)
        decls = layer.get("variables")
        if decls is not None and isinstance(decls.value, dict):
            for var_name, decl in decls.value.items():
                declared[var_name] = variables.declare(var_name, decl)
        stripped = strip_meta(layer)
        merged = stripped if merged is None else merge(merged, stripped)
    merged = doc if merged is None else merge(merged, doc)
    assert isinstance(merged.value, dict)
    values = variables.resolve(declared, merged.value.get("variables"))
    where = merged.value["variables"].location if "variables" in merged.value else merged.location
    given = merged.value.get("variables")
    secret_names = frozenset(
        {
            k
            for k, v in (given.value.items() if given is not None and isinstance(given.value, dict) else [])
            if v.secret
        }
        | {k for k, var in declared.items() if var.secret}
    )
    merged.value["variables"] = Node(
        {k: Node(v, where, secret=k in secret_names) for k, v in values.items()}, where
    )
    for key, child in merged.value.items():
        if key != "variables":
            variables.render(child, values, secret_names)
    resolve_sources(merged)
    mirror = merged.find(("distribution", "mirror"))
    if mirror is not None and isinstance(mirror.value, str):
        redact.url_credentials(mirror.value)  # user and password: never shown
    listed = merged.get("sources")
    for source in listed.value if listed is not None and isinstance(listed.value, list) else []:
        source_url = source.get("url") if isinstance(source.value, dict) else None
        if source_url is not None and isinstance(source_url.value, str):
            redact.url_credentials(source_url.value)
        _has_key(source)
    config = validate(ImageConfig, merged, "image config")
    device = _catalog_item("device", Device, merged.get("device"), None, path.parent)
    layout = _catalog_item("layout", Layout, merged.get("layout"), "simple", path.parent)
    if config.kernel is not None and config.kernel not in device.kernels:
        raise config_error(
            f"device {device.device} has no kernel {config.kernel!r}",
            merged.locate(("kernel",)),
            f"its kernels: {', '.join(device.kernels)} (see `imagesmith devices`)",
        )
    return Spec(config, device, layout, path, [ref for ref, _ in layers], merged, notes)


def _has_key(source: Node) -> None:
    """A source without a key (a layer's, which leaves the key to the user) is a config error
    that says how to give it."""
    if not isinstance(source.value, dict) or "key" in source.value:
        return
    name = source.value.get("name")
    shown = name.value if name is not None and isinstance(name.value, str) else "NAME"
    raise config_error(
        f"source {shown!r} has no key: every archive is verified with its own key",
        source.location,
        f"in your config, give the archive's public key file: `sources: [{{name: {shown}, key: FILE}}]` "
        "(relative to the config; the README says where each catalog source's key comes from)",
    )


def parse_key(key: str) -> tuple[str | int, ...]:
    """``users[0].name`` → ("users", 0, "name")."""
    path: list[str | int] = []
    for part in key.split("."):
        name, *indexes = part.split("[")
        if name:
            path.append(name)
        for index in indexes:
            number = index.rstrip("]")
            if not number.isdigit():
                raise config_error(
                    f"bad key {key!r}: {number!r} is not a list index", None, "write e.g. users[0].name"
                )
            path.append(int(number))
    if not path:
        raise config_error(f"bad key {key!r}", None, "write e.g. hostname or distribution.suite")
    return tuple(path)


def find_node(tree: Node, path: tuple[str | int, ...]) -> Node | None:
    return tree.find(path)
