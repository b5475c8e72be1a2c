"""Editor backups and version-control data stay out of overlays (unless asked for)."""

from __future__ import annotations

from pathlib import Path

from imagesmith.config import overlay
from imagesmith.stages import plan


def tree(root: Path) -> Path:
    for rel in ("etc/app.conf", "etc/app.conf~", "etc/.app.conf.swp", "etc/x.orig", "etc/x.rej",
                ".git/config", "sub/.svn/entries", "sub/keep.txt"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    return root


def test_backups_and_vcs_data_are_skipped_and_named(tmp_path: Path) -> None:
    found = overlay.walk(tree(tmp_path), overlay.DEFAULT_IGNORE)
    rels = [str(p.relative_to(tmp_path)) for p in found.files]
    assert rels == ["etc", "sub", "etc/app.conf", "sub/keep.txt"]
    assert sorted(found.skipped) == [".git/", "etc/.app.conf.swp", "etc/app.conf~", "etc/x.orig",
                                     "etc/x.rej", "sub/.svn/"]  # fmt: skip


def test_an_empty_ignore_list_copies_everything(tmp_path: Path) -> None:
    found = overlay.walk(tree(tmp_path), [])
    assert not found.skipped and len([p for p in found.files if p.is_file()]) == 8


def test_a_changed_backup_file_does_not_change_the_stage_key(tmp_path: Path) -> None:
    root = tree(tmp_path)
    before = plan.tree_digest(root, overlay.DEFAULT_IGNORE)
    (root / "etc/app.conf~").write_text("edited")
    (root / ".git/config").write_text("edited")
    assert plan.tree_digest(root, overlay.DEFAULT_IGNORE) == before
    (root / "etc/app.conf").write_text("edited")
    assert plan.tree_digest(root, overlay.DEFAULT_IGNORE) != before
