"""Validation errors as people need them: the file, line and column, and a hint."""

from __future__ import annotations

import typing
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from imagesmith import redact
from imagesmith.config import catalog
from imagesmith.config.model import LayerFile
from imagesmith.config.nodes import Node
from imagesmith.errors import config_error

M = TypeVar("M", bound=BaseModel)


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
    raise_first(LayerFile, tree, what, skip_templates=True)


def validate(model: type[M], tree: Node, what: str) -> M:
    """Validate ``tree`` as ``model``; the first problem becomes a located config error."""
    try:
        return model.model_validate(tree.plain())
    except ValidationError:
        raise_first(model, tree, what)
        raise AssertionError("unreachable") from None


def raise_first(model: type[BaseModel], tree: Node, what: str, skip_templates: bool = False) -> None:
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
        node = tree.find(loc)
        secret = node is not None and bool(node.secrets())
        if kind == "string_pattern_mismatch":
            value = err["input"]
            if isinstance(value, str):  # masked before repr() escapes what a secret holds
                value = redact.redact(redact.strip_url(value))
            msg = (
                "the value (secret, not shown) is not valid" if secret else f"{value!r} is not a valid value"
            )
        msg = redact.redact(msg)
        raise config_error(
            f"{_dotted(loc) or what}: {msg}{more}",
            where,
            "see `imagesmith schema` for the allowed values",
        ) from None
