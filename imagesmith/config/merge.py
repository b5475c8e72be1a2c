"""Merge config documents, lowest layer first, remembering who set what.

Rules: scalars — the last writer wins; maps — merged key by key; lists — appended in
order with duplicates dropped, and a text item ``-name`` removes ``name`` added below
(a removal that matches nothing is kept, so a later stage can act on it).
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


def merge(base: Node, top: Node) -> Node:
    """``top`` merged over ``base``; neither input is modified."""
    if isinstance(base.value, dict) and isinstance(top.value, dict):
        merged = dict(base.value)
        for key, node in top.value.items():
            merged[key] = merge(merged[key], node) if key in merged else node
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
