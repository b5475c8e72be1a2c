"""Layer variables (declared with a type, set anywhere) and Jinja2 templates over them.

A layer declares a variable under ``variables:`` with a map::

    variables:
      wifi_country: {type: enum, values: [CH, DE, GB, US], default: GB, description: ...}

and any config, variant file or ``--set variables.NAME=VALUE`` sets it with a plain
value. String values anywhere in the merged config may then use ``{{ wifi_country }}``;
an undefined name or a template error is reported at the file and line of the value.
Templates are rendered by Jinja2 in a sandbox, never by a shell.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from imagesmith import redact
from imagesmith.config.model import parse_size
from imagesmith.config.nodes import Node
from imagesmith.errors import Location, config_error

TYPES = ("string", "bool", "int", "size", "enum", "regex")
DECLARATION_KEYS = {"type", "default", "description", "required", "values", "pattern", "secret"}


@dataclass
class Variable:
    name: str
    type: str
    location: Location
    default: Any = None
    description: str = ""
    required: bool = False
    values: list[Any] | None = None
    pattern: str | None = None
    secret: bool = False  # its value is used in the build but shown as <secret>

    def check(self, value: Any, where: Location, secret: bool = False) -> Any:
        """``value`` converted to this variable's type, or a located error (which never
        shows a secret value)."""
        problem = None
        if self.type == "bool":
            if not isinstance(value, bool):
                problem = "true or false"
        elif self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                problem = "a whole number"
        elif self.type == "size":
            try:
                return parse_size(value)
            except ValueError:
                problem = "a size such as 512MiB"
        elif self.type == "enum":
            if value not in (self.values or []):
                problem = "one of " + ", ".join(map(str, self.values or []))
        elif not isinstance(value, str):
            problem = "text"
        elif self.type == "regex" and not re.fullmatch(self.pattern or "", value):
            problem = f"text matching {self.pattern}"
        if problem:
            shown = "its value (secret, not shown)" if secret or self.secret else repr(value)
            raise config_error(
                f"variable {self.name} must be {problem}, not {shown}",
                where,
                self.description or f"declared at {self.location}",
            )
        return value


def declare(name: str, node: Node) -> Variable:
    """A declaration from a layer's ``variables:`` map."""
    if not isinstance(node.value, dict):
        raise config_error(
            f"variable {name}: a layer declares it with a map",
            node.location,
            "write e.g. `name: {type: string, default: x, description: ...}`",
        )
    spec = node.plain()
    unknown = set(spec) - DECLARATION_KEYS
    if unknown:
        raise config_error(
            f"variable {name}: unknown key {sorted(unknown)[0]!r}",
            node.location,
            f"allowed: {', '.join(sorted(DECLARATION_KEYS))}",
        )
    kind = spec.get("type", "string")
    if kind not in TYPES:
        raise config_error(
            f"variable {name}: unknown type {kind!r}", node.location, f"use one of {', '.join(TYPES)}"
        )
    if kind == "enum" and not isinstance(spec.get("values"), list):
        raise config_error(
            f"variable {name}: an enum needs `values: [...]`", node.location, "list the allowed values"
        )
    if kind == "regex":
        try:
            re.compile(str(spec.get("pattern")))
        except re.error as exc:
            raise config_error(
                f"variable {name}: bad pattern: {exc}", node.location, "give a Python regex"
            ) from None
        if not isinstance(spec.get("pattern"), str):
            raise config_error(
                f"variable {name}: a regex needs `pattern:`", node.location, "give a Python regex"
            )
    variable = Variable(
        name,
        kind,
        node.location,
        spec.get("default"),
        str(spec.get("description") or ""),
        bool(spec.get("required", False)),
        spec.get("values"),
        spec.get("pattern"),
        bool(spec.get("secret", False)),
    )
    if variable.default is not None:
        variable.default = variable.check(variable.default, node.location)
    return variable


def resolve(declared: dict[str, Variable], values: Node | None) -> dict[str, Any]:
    """Declared defaults overridden by the values set in configs; every check located."""
    result = {name: var.default for name, var in declared.items()}
    if values is not None:
        if not isinstance(values.value, dict):
            raise config_error(
                "variables must be a map of NAME: value", values.location, "e.g. {wifi_country: CH}"
            )
        for name, node in values.value.items():
            if name not in declared:
                known = ", ".join(sorted(declared)) or "none: no layer in use declares variables"
                raise config_error(
                    f"unknown variable {name!r}", node.location, f"declared variables: {known}"
                )
            result[name] = declared[name].check(node.plain(), node.location, bool(node.secrets()))
    for name, var in declared.items():
        if var.required and result[name] is None:
            raise config_error(
                f"variable {name} is required",
                var.location,
                f"set it in the config: `variables: {{{name}: ...}}`"
                + (f" ({var.description})" if var.description else ""),
            )
    return result


def wpa_psk(passphrase: str, ssid: str) -> str:
    """The 256-bit WPA key of a passphrase (IEEE 802.11i PBKDF2), as wpa_passphrase prints it."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.filters["wpa_psk"] = wpa_psk


def render(tree: Node, context: dict[str, Any], secrets: frozenset[str] = frozenset()) -> None:
    """Render every templated string in ``tree`` in place.

    A result is secret when its template names a secret variable (``secrets``). A secret
    value itself is never a template: ``pass{{ 7*7 }}`` from ``!env`` stays as it is."""
    if isinstance(tree.value, dict):
        for child in tree.value.values():
            render(child, context, secrets)
    elif isinstance(tree.value, list):
        for child in tree.value:
            render(child, context, secrets)
    elif isinstance(tree.value, str) and ("{{" in tree.value or "{%" in tree.value) and not tree.secret:
        names: set[str] = set()
        try:
            names = meta.find_undeclared_variables(_ENV.parse(tree.value))
            tree.value = _ENV.from_string(tree.value).render(context)
            tree.secret = bool(names & secrets)
            if tree.secret:
                redact.register(tree.value)
        except UndefinedError as exc:
            raise config_error(
                f"template: {exc.message}",
                tree.location,
                "templates see the variables declared by the layers in use: "
                + (", ".join(sorted(context)) or "there are none"),
            ) from None
        except TemplateError as exc:
            raise config_error(
                f"template error: {redact.redact(str(exc))}",
                tree.location,
                "check the {{ }} and {% %} syntax",
            ) from None
        except Exception as exc:  # a filter or method failed on a value: it may be a secret
            shown = "details not shown: the template uses a secret" if names & secrets else str(exc)
            raise config_error(
                f"template failed: {type(exc).__name__}: {redact.redact(shown)}",
                tree.location,
                "check what the template does with its variables",
            ) from None
