"""Config files → a validated Spec: find layers, merge them, validate, locate errors."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from imagesmith.config import catalog, variables
from imagesmith.config.merge import merge
from imagesmith.config.model import Device, ImageConfig, LayerFile, Layout
from imagesmith.config.nodes import Node, load_yaml
from imagesmith.errors import Location, config_error

LAYER_META = ("layer", "description", "requires", "provides", "conflicts", "variables")
SSH_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LayerRef:
    name: str
    path: Path


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


# --- validation errors → located messages -----------------------------------------


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel]:
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        if info is None:
            info = next((f for f in model.model_fields.values() if f.alias == part), None)
        if info is None:
            break
        candidates = [info.annotation, *typing.get_args(info.annotation)]
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            break
        model = sub
    return model


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _templated(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_layer(tree: Node, what: str) -> None:
    """A layer file on its own: keys and types, but a template's value is judged after rendering."""
    _raise_first(LayerFile, tree, what, skip_templates=True)


def validate(model: type[M], tree: Node, what: str) -> M:
    """Validate ``tree`` as ``model``; the first problem becomes a located config error."""
    try:
        return model.model_validate(tree.plain())
    except ValidationError:
        _raise_first(model, tree, what)
        raise AssertionError("unreachable") from None


def _raise_first(model: type[BaseModel], tree: Node, what: str, skip_templates: bool = False) -> None:
    try:
        model.model_validate(tree.plain())
    except ValidationError as exc:
        errors = [e for e in exc.errors() if not (skip_templates and _templated(e.get("input")))]
        if not errors:
            return
        err = errors[0]
        loc = tuple(err["loc"])
        where = tree.locate(loc)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = _keys(_model_at(model, loc[:-1]))
            hint = catalog.suggestion(key, allowed).replace("known:", "allowed keys:")
            if key == "password":
                hint = (
                    "plain-text passwords are never stored: set password_hash to the output of "
                    "`mkpasswd -m yescrypt`, or leave it out to keep the password locked"
                )
            raise config_error(f"unknown key {key!r} in {what}{more}", where, hint) from None
        if kind == "missing":
            raise config_error(
                f"{what}: {_dotted(loc)} is required but missing{more}",
                where,
                f"add `{loc[-1]}:` here",
            ) from None
        msg = err["msg"]
        if kind == "string_pattern_mismatch":
            msg = f"{err['input']!r} is not a valid value"
        raise config_error(
            f"{_dotted(loc) or what}: {msg}{more}",
            where,
            "see `imagesmith schema` for the allowed values",
        ) from None


# --- paths in documents are relative to the document ------------------------------


def _resolve_path(node: Node, base: Path, what: str, must_be_file: bool = False) -> None:
    if not isinstance(node.value, str):
        return  # a wrong type is reported by validation with its location
    path = Path(node.value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise config_error(
            f"{what} not found: {path}", node.location, "paths are relative to the file that names them"
        )
    if must_be_file and not path.is_file():
        raise config_error(f"{what} {path} is not a file", node.location, "name a file here, not a directory")
    node.value = str(path.resolve())


def _resolve_paths(doc: Node) -> None:
    base = doc.location.file.parent
    for key, field_name, what in (("files", "source", "overlay source"), ("scripts", "run", "script")):
        entries = doc.get(key)
        if entries is not None and isinstance(entries.value, list):
            for entry in entries.value:
                sub = entry.get(field_name)
                if sub is not None:
                    _resolve_path(sub, base, what, must_be_file=key == "scripts")
    paths = doc.get("layer_paths")
    if paths is not None and isinstance(paths.value, list):
        for item in paths.value:
            _resolve_path(item, base, "layer directory")
    users = doc.get("users")
    if users is not None and isinstance(users.value, list):
        for user in users.value:
            keys = user.get("ssh_authorized_keys")
            if keys is None or not isinstance(keys.value, list):
                continue
            for entry in keys.value:
                if isinstance(entry.value, str) and not entry.value.startswith(SSH_KEY_PREFIXES):
                    _resolve_path(entry, base, "SSH public key file", must_be_file=True)
                    entry.value = _read_public_key(Path(str(entry.value)), entry.location)


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


# --- layers -------------------------------------------------------------------------


def _names(node: Node | None) -> list[Node]:
    if node is None:
        return []
    if not isinstance(node.value, list):
        raise config_error("expected a list of layer names", node.location, "write e.g. [base, openssh]")
    return node.value


def _resolve_layers(doc: Node, search: list[Path]) -> list[tuple[LayerRef, Node]]:
    """Layers named by ``doc`` and, first, everything they require (depth first)."""
    ordered: list[tuple[LayerRef, Node]] = []
    done: set[str] = set()

    def visit(name_node: Node, stack: list[LayerRef]) -> None:
        name = name_node.value
        if not isinstance(name, str):
            raise config_error("a layer name must be text", name_node.location, "write e.g. openssh")
        if name.startswith("-") or name in done:
            return
        if any(ref.name == name for ref in stack):
            cycle = " → ".join(f"{r.name} ({r.path})" for r in [*stack, stack[0]])
            raise config_error(
                f"layers require each other in a cycle: {cycle}",
                name_node.location,
                "remove one of the `requires` entries",
            )
        path = catalog.find("layers", name, search)
        if path is None:
            raise config_error(
                f"unknown layer {name!r}",
                name_node.location,
                catalog.suggestion(name, catalog.names("layers", search)),
            )
        layer = load_yaml(path)
        declared = layer.get("layer")
        if declared is None or declared.value != name:
            raise config_error(
                f"{path.name} is not the layer {name!r}: it must start with `layer: {name}`",
                declared.location if declared else layer.location,
                "a layer file names itself with the `layer:` key",
            )
        check_layer(layer, f"layer {name}")
        ref = LayerRef(name, path)
        for required in _names(layer.get("requires")):
            visit(required, [*stack, ref])
        done.add(name)
        ordered.append((ref, layer))

    for name_node in _names(doc.get("layers")):
        visit(name_node, [])
    return ordered


def _check_capabilities(layers: list[tuple[LayerRef, Node]]) -> None:
    """No capability provided twice; no layer together with one it conflicts with."""
    providers: dict[str, LayerRef] = {}
    for ref, layer in layers:
        for item in _names(layer.get("provides")):
            capability = str(item.value)
            if capability in providers:
                first = providers[capability]
                raise config_error(
                    f"layers {first.name} ({first.path}) and {ref.name} ({ref.path}) "
                    f"both provide {capability!r}",
                    item.location,
                    f"use one of them: remove {ref.name} or {first.name} from `layers:`",
                )
            providers[capability] = ref
    present = {ref.name: ref for ref, _ in layers}
    for ref, layer in layers:
        for item in _names(layer.get("conflicts")):
            other = present.get(str(item.value)) or providers.get(str(item.value))
            if other is not None and other.name != ref.name:
                raise config_error(
                    f"layer {ref.name} ({ref.path}) conflicts with {item.value!r}, "
                    f"which layer {other.name} ({other.path}) brings",
                    item.location,
                    f"remove {ref.name} or {other.name} from `layers:`",
                )


def _strip_meta(layer: Node) -> Node:
    assert isinstance(layer.value, dict)
    return Node({k: v for k, v in layer.value.items() if k not in LAYER_META}, layer.location)


def _catalog_item(kind: str, model: type[M], name_node: Node | None, default: str | None) -> M:
    name = name_node.value if name_node is not None else default
    where = name_node.location if name_node is not None else None
    if not isinstance(name, str):
        raise config_error(f"{kind} must be a name", where, f"write e.g. `{kind}: {default or 'pi4'}`")
    path = catalog.find(f"{kind}s", name)
    if path is None:
        raise config_error(
            f"unknown {kind} {name!r}", where, catalog.suggestion(name, catalog.names(f"{kind}s"))
        )
    return validate(model, load_yaml(path), f"{kind} {name}")


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
        _resolve_path(item, doc.location.file.parent, "included file", must_be_file=True)
        path = Path(str(item.value))
        if path in stack or path == doc.location.file:
            chain = " → ".join(str(p) for p in [*stack, doc.location.file, path])
            raise config_error(
                f"files include each other in a cycle: {chain}", item.location, "remove one of the includes"
            )
        included = load_yaml(path)
        if included.get("layer") is not None:
            raise config_error(
                f"{path.name} is a layer: list it under `layers:`",
                item.location,
                "includes: takes config fragments",
            )
        _resolve_paths(included)
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
    _resolve_paths(doc)
    doc = _expand_includes(doc)
    notes: list[str] = []
    if variant is not None:
        variant_path = path.with_name(f"{path.stem}.{variant}{path.suffix}")
        if variant_path.is_file():
            extra = load_yaml(variant_path)
            _resolve_paths(extra)
            doc = merge(doc, _expand_includes(extra))
        else:
            notes.append(f"no {variant_path.name} next to {path.name}: variant {variant!r} adds nothing")
    for assignment in sets or []:
        doc = merge(doc, _setting(assignment))
    search = [path.parent, *_layer_paths(doc), *(d.resolve() for d in layer_dirs or [])]
    layers = _resolve_layers(doc, search)
    _check_capabilities(layers)
    declared: dict[str, variables.Variable] = {}
    merged: Node | None = None
    for _ref, layer in layers:
        _resolve_paths(layer)
        decls = layer.get("variables")
        if decls is not None and isinstance(decls.value, dict):
            for var_name, decl in decls.value.items():
                declared[var_name] = variables.declare(var_name, decl)
        stripped = _strip_meta(layer)
        merged = stripped if merged is None else merge(merged, stripped)
    merged = doc if merged is None else merge(merged, doc)
    assert isinstance(merged.value, dict)
    values = variables.resolve(declared, merged.value.get("variables"))
    where = merged.value["variables"].location if "variables" in merged.value else merged.location
    given = merged.value.get("variables")
    secret_names = {
        k
        for k, v in (given.value.items() if given is not None and isinstance(given.value, dict) else [])
        if v.secret
    }
    merged.value["variables"] = Node(
        {k: Node(v, where, secret=k in secret_names) for k, v in values.items()}, where
    )
    hidden = tuple(str(values[k]) for k in secret_names if values.get(k))
    for key, child in merged.value.items():
        if key != "variables":
            variables.render(child, values, hidden)
    config = validate(ImageConfig, merged, "image config")
    device = _catalog_item("device", Device, merged.get("device"), None)
    layout = _catalog_item("layout", Layout, merged.get("layout"), "simple")
    return Spec(config, device, layout, path, [ref for ref, _ in layers], merged, notes)


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
    node: Node | None = tree
    for part in path:
        if node is None:
            return None
        if isinstance(node.value, dict) and isinstance(part, str):
            node = node.value.get(part)
        elif isinstance(node.value, list) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node
