"""Property: any config or layer text either loads or fails with a located ImagesmithError."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from imagesmith.config.load import load_spec
from imagesmith.config.model import ImageConfig, User
from imagesmith.errors import ImagesmithError

KEYS = [*ImageConfig.model_fields, "layer", "requires", "description", "includes", "password", "bogus"]
SUBKEYS = [
    *User.model_fields,
    "source",
    "target",
    "owner",
    "run",
    "in",
    "enable",
    "disable",
    "suite",
    "mirror",
]
WORDS = [
    "pi4",
    "qemu-amd64",
    "base",
    "openssh",
    "networkd",
    "trixie",
    "-less",
    "curl",
    "",
    "x" * 70,
    "a b",
    "/",
    "../..",
    "keys/admin.pub",
    "$6$s$h",
    "mine",
    "Europe/Zurich",
    "{{ x }}",
    "-",
    "ssh-ed25519 AAAA",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.sampled_from(WORDS),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(SUBKEYS) | st.text(max_size=6), inner, max_size=4),
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


def dump(data: object) -> str:
    import io

    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


def mutate(text: str, data: st.DataObject) -> str:
    """Cut, duplicate or insert characters: broken YAML as people write it."""
    for _ in range(data.draw(st.integers(0, 3))):
        if not text:
            break
        at = data.draw(st.integers(0, len(text)))
        choice = data.draw(st.sampled_from(["cut", "insert", "dup"]))
        if choice == "cut":
            text = text[:at] + text[at + data.draw(st.integers(1, 5)) :]
        elif choice == "insert":
            text = (
                text[:at]
                + data.draw(st.sampled_from([":", "- ", "[", "{", '"', "\t", "\n  ", "&a", "*a", "!!"]))
                + text[at:]
            )
        else:
            text = text[:at] + text[at : at + 10] + text[at:]
    return text


CASES = {"count": 0}


@given(config=documents, layer=documents, data=st.data())
def test_loader_never_fails_with_anything_but_a_located_error(
    config: dict, layer: dict, data: st.DataObject
) -> None:
    CASES["count"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "keys").mkdir()
        (root / "keys" / "admin.pub").write_text("ssh-ed25519 AAAAC3Nza test\n")
        if data.draw(st.booleans()):  # mostly-valid configs reach deeper code
            config = {"name": "x", "device": "pi4", **config}
            config.setdefault("layers", ["mine"])
        layer = {"layer": "mine", **layer} if data.draw(st.booleans()) else layer
        (root / "mine.yaml").write_text(mutate(dump(layer), data))
        path = root / "img.yaml"
        path.write_text(mutate(dump(config), data))
        try:
            load_spec(
                path,
                sets=data.draw(st.lists(st.sampled_from(["hostname=a", "x=", "a.b=[1", "=1"]), max_size=1)),
            )
        except ImagesmithError as exc:
            assert exc.hint, f"no hint: {exc}"
            if "--set" not in exc.message:
                assert exc.location is not None, f"no location: {exc}"
                name = exc.location.file.name
                assert name in ("img.yaml", "mine.yaml") or name.startswith("--set "), exc.location


def test_report_cases_run() -> None:
    """Runs after the property (same module); says how many generated cases it checked."""
    print(f"\nfuzzed loader cases: {CASES['count']}")
    assert CASES["count"] == 0 or CASES["count"] >= settings().max_examples * 5 // 6  # 500 of 600
