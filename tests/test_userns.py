from __future__ import annotations

from pathlib import Path

import pytest

from imagesmith.errors import ImagesmithError
from imagesmith.host import userns


def test_subordinate_ranges_by_name_or_number(tmp_path: Path) -> None:
    table = tmp_path / "subuid"
    table.write_text(
        "alice:100000:65536\n1001:300000:1000\nbob:165536:65536\nbroken line\n1001:400000:65536\n"
    )
    assert userns.subordinate(table, "alice", 1000) == [userns.Range(100000, 65536)]
    ranges = userns.subordinate(table, "carol", 1001)
    assert ranges == [userns.Range(300000, 1000), userns.Range(400000, 65536)]
    assert userns.usable(ranges) == userns.Range(400000, 65536)  # the first one large enough
    assert userns.subordinate(tmp_path / "missing", "alice", 1000) == []


def test_no_subordinate_range_is_a_clear_error_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "subordinate", lambda path, user, uid: [userns.Range(100000, 10)])
    with pytest.raises(ImagesmithError, match="no range of 65536 subordinate ids") as caught:
        userns.reexec(["true"])
    assert "imagesmith doctor" in (caught.value.hint or "")
