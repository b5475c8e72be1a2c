"""Merge config documents, lowest layer first, remembering who set what.

Rules: scalars — the last writer wins; maps — merged key by key; lists — appended in
order with duplicates dropped, and a text item ``-name`` removes ``name`` added below
(a removal that matches nothing is kept, so a later stage can act on it). Lists of
named maps (``sources``) are merged item by item: an item with the name of one below is
merged over it, so a config can add its key to a layer's source.
"""

from __future__ import annotations

from imagesmith.config.nodes import Node


def _is_removal(node: Node) -> bool:
    return isinstance(node.value, str) and node.value.startswith("-") and len(node.value) > 1


def _merge_lists(base: list[Node], top: list[Node]) -> list[Node]:
    result = list(base)
    for item in top:
        plain = item.plain()
        if _is_removal(item):
            target = plain[1:]
            kept = [n for n in result if n.plain() != target]
            if len(kept) == len(result) and all(n.plain() != plain for n in result):
                kept.append(item)  # nothing to remove here: keep the request
            result = kept
            continue
        if isinstance(plain, str):
            # adding "x" cancels an earlier unmatched "-x"
            result = [n for n in result if n.plain() != f"-{plain}"]
        if any(n.plain() == plain for n in result):
            continue
        result.append(item)
    return result


#: top-level lists whose items are maps merged by this key
KEYED = {"sources": "name"}


def _name(node: Node, key: str) -> object:
    if isinstance(node.value, dict) and key in node.value:
        return node.value[key].plain()
    return None


def _merge_keyed(base: list[Node], top: list[Node], key: str) -> list[Node]:
    result = list(base)
    for item in top:
        name = _name(item, key)
        at = next((i for i, n in enumerate(result) if name is not None and _name(n, key) == name), None)
        if at is None:
            result.append(item)
        else:
            result[at] = merge(result[at], item)
    return result


def _keyed(key: str, below: Node, top: Node) -> Node | None:
    """``top`` merged over ``below`` item by item, if ``key`` holds a list of named maps."""
    if key not in KEYED or not isinstance(below.value, list) or not isinstance(top.value, list):
        return None
    items = _merge_keyed(below.value, top.value, KEYED[key])
    return Node(items, top.location, [*below.history, below.location, *top.history])


def merge(base: Node, top: Node, keyed: bool = True) -> Node:
    """``top`` merged over ``base``; neither input is modified. ``keyed``: the top level of
    a document, where the lists of ``KEYED`` are merged by name."""
    if isinstance(base.value, dict) and isinstance(top.value, dict):
        merged = dict(base.value)
        for key, node in top.value.items():
            if key not in merged:
                merged[key] = node
                continue
            by_name = _keyed(key, merged[key], node) if keyed else None
            merged[key] = by_name if by_name is not None else merge(merged[key], node, keyed=False)
        # a map made by --set (no line) does not move the map away from the file that has it
        where = top.location if top.location.line else base.location
        return Node(merged, where, [*base.history, base.location, *top.history])
    if isinstance(base.value, list) and isinstance(top.value, list):
        return Node(
            _merge_lists(base.value, top.value),
            top.location,
            [*base.history, base.location, *top.history],
        )
    return Node(top.value, top.location, [*base.history, base.location, *top.history], top.secret)
