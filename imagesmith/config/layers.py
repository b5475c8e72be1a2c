"""Layers: found on the search path, ordered by what they require, checked together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagesmith.config import catalog
from imagesmith.config.nodes import Node, load_yaml
from imagesmith.config.validate import check_layer
from imagesmith.errors import config_error

LAYER_META = ("layer", "description", "requires", "provides", "conflicts", "variables")


@dataclass(frozen=True)
class LayerRef:
    name: str
    path: Path


def names(node: Node | None) -> list[Node]:
    if node is None:
        return []
    if not isinstance(node.value, list):
        raise config_error("expected a list of layer names", node.location, "write e.g. [base, openssh]")
    return node.value


def resolve_layers(doc: Node, search: list[Path]) -> list[tuple[LayerRef, Node]]:
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
        for required in names(layer.get("requires")):
            visit(required, [*stack, ref])
        done.add(name)
        ordered.append((ref, layer))

    for name_node in names(doc.get("layers")):
        visit(name_node, [])
    return ordered


def check_capabilities(layers: list[tuple[LayerRef, Node]]) -> None:
    """No capability provided twice; no layer together with one it conflicts with."""
    providers: dict[str, LayerRef] = {}
    for ref, layer in layers:
        for item in names(layer.get("provides")):
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
        for item in names(layer.get("conflicts")):
            other = present.get(str(item.value)) or providers.get(str(item.value))
            if other is not None and other.name != ref.name:
                raise config_error(
                    f"layer {ref.name} ({ref.path}) conflicts with {item.value!r}, "
                    f"which layer {other.name} ({other.path}) brings",
                    item.location,
                    f"remove {ref.name} or {other.name} from `layers:`",
                )


def strip_meta(layer: Node) -> Node:
    assert isinstance(layer.value, dict)
    return Node({k: v for k, v in layer.value.items() if k not in LAYER_META}, layer.location)
