from __future__ import annotations

from pathlib import Path

from imagesmith.config.merge import merge
from imagesmith.config.nodes import load_yaml


def doc(tmp_path: Path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return load_yaml(path)


def test_scalars_last_wins_and_history_keeps_every_place(tmp_path: Path) -> None:
    a = doc(tmp_path, "a.yaml", "hostname: one\n")
    b = doc(tmp_path, "b.yaml", "x: 1\nhostname: two\n")
    c = doc(tmp_path, "c.yaml", "\n\nhostname: three\n")
    merged = merge(merge(a, b), c)
    node = merged.get("hostname")
    assert node is not None and node.value == "three"
    assert [(loc.file.name, loc.line) for loc in [*node.history, node.location]] == [
        ("a.yaml", 1),
        ("b.yaml", 2),
        ("c.yaml", 3),
    ]


def test_maps_merge_by_key(tmp_path: Path) -> None:
    a = doc(tmp_path, "a.yaml", "distribution: {suite: bookworm, mirror: http://m/debian}\n")
    b = doc(tmp_path, "b.yaml", "distribution: {suite: trixie}\n")
    assert merge(a, b).plain() == {"distribution": {"suite": "trixie", "mirror": "http://m/debian"}}


def test_lists_append_drop_duplicates_and_remove(tmp_path: Path) -> None:
    a = doc(tmp_path, "a.yaml", "packages: [vim, nano, curl]\n")
    b = doc(tmp_path, "b.yaml", "packages: [curl, -nano, htop, htop]\n")
    assert merge(a, b).plain() == {"packages": ["vim", "curl", "htop"]}


def test_unmatched_removal_is_kept_and_cancelled_by_a_later_add(tmp_path: Path) -> None:
    a = doc(tmp_path, "a.yaml", "packages: [vim]\n")
    b = doc(tmp_path, "b.yaml", "packages: [-nano]\n")
    merged = merge(a, b)
    assert merged.plain() == {"packages": ["vim", "-nano"]}
    c = doc(tmp_path, "c.yaml", "packages: [nano]\n")
    assert merge(merged, c).plain() == {"packages": ["vim", "nano"]}


def test_list_of_maps_drops_equal_entries(tmp_path: Path) -> None:
    a = doc(tmp_path, "a.yaml", "files: [{source: x, target: /}]\n")
    b = doc(tmp_path, "b.yaml", "files: [{source: x, target: /}, {source: y}]\n")
    assert merge(a, b).plain() == {"files": [{"source": "x", "target": "/"}, {"source": "y"}]}


def test_inputs_are_not_modified(tmp_path: Path) -> None:
    a = doc(tmp_path, "a.yaml", "packages: [vim]\n")
    b = doc(tmp_path, "b.yaml", "packages: [-vim]\n")
    merge(a, b)
    assert a.plain() == {"packages": ["vim"]}


def test_redefined_anchor_loads_quietly(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        node = doc(tmp_path, "a.yaml", "a: &x 1\nb: &x 2\nc: *x\n")
    assert node.plain() == {"a": 1, "b": 2, "c": 2}
