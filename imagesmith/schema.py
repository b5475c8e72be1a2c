"""The base of every model read from YAML (configs, layers, devices, layouts, locks):
strict frozen models, sizes with units, names."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: object) -> int:
    """``"256MiB"``, ``"1G"``, ``"4096"`` or an int → bytes (binary units)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number with an optional unit, e.g. 256MiB")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size; write e.g. 256MiB, 2GiB or 4096")
    unit = (match.group(2) or "").upper()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


Size = Annotated[int, BeforeValidator(parse_size)]

#: a catalog name: devices, layouts, layers, partitions
NAME_RE = r"^[a-z0-9][a-z0-9._-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
