"""Debian copyright files → SPDX expressions."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagesmith.outputs.licenses import NOASSERTION, expression, from_copyright, spdx


@pytest.mark.parametrize(
    ("synopsis", "expected"),
    [
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-2", "GPL-2.0-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("GPL", "GPL-1.0-or-later"),
        ("Expat", "MIT"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("zlib", "Zlib"),
        ("Apache-2", "Apache-2.0"),
        ("GFDL-NIV-1.3+", "GFDL-1.3-no-invariants-or-later"),
        ("GPL-1+ or Artistic", "GPL-1.0-or-later OR Artistic-1.0-Perl"),
        ("LGPL-3+ or GPL-2+", "LGPL-3.0-or-later OR GPL-2.0-or-later"),
        ("GPL-3+ with Bison exception", "GPL-3.0-or-later WITH Bison-exception-2.2"),
        ("GPL-2 with Linux-syscall-note exception", "GPL-2.0-only WITH Linux-syscall-note"),
        ("public-domain", "LicenseRef-public-domain"),
        # an exception in SPDX's list, though it reads as a licence (u-boot's copyright file)
        ("eCos-2.0", "LicenseRef-eCos-2.0"),
        ("GPL-2+-with-link-exception", "LicenseRef-GPL-2-plus-with-link-exception"),
        # "or" binds tighter than "and"; a comma closes what came before it
        ("GPL-1+ or Artistic, and BSD-3-clause", "(GPL-1.0-or-later OR Artistic-1.0-Perl) AND BSD-3-Clause"),
        ("GPL-2+ and MIT or ISC", "GPL-2.0-or-later AND (MIT OR ISC)"),
    ],
)
def test_debian_names_become_spdx(synopsis: str, expected: str) -> None:
    assert expression(synopsis) == expected
    assert not spdx().validate(expected).errors or "LicenseRef-" in expected


DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: lib/*
Copyright: 2021 Someone Else
License: Expat or public-domain

Files: debian/*
Copyright: 2022 Packager
License: GPL-2+

License: GPL-2+
 On Debian systems, see /usr/share/common-licenses/GPL-2.

License: public-domain
 The author places this file in the public domain.
"""


def test_a_machine_readable_file_gives_every_licence_once() -> None:
    found = from_copyright(DEP5)
    assert found.machine_readable
    assert found.declared == "GPL-2.0-or-later AND (MIT OR LicenseRef-public-domain)"
    assert found.texts == {"LicenseRef-public-domain": "The author places this file in the public domain."}


@pytest.mark.parametrize("text", [None, "This package was debianized by someone.\n\nIt is GPL.\n"])
def test_no_or_a_free_form_copyright_file_is_noassertion(text: str | None) -> None:
    found = from_copyright(text)
    assert found.declared == NOASSERTION and not found.machine_readable


def test_a_memo_reads_each_copyright_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Licences kept by the text's digest: a second build takes them from the memo, the
    same as parsing; a new text is parsed; a damaged memo is read as empty."""
    from imagesmith.outputs import licenses

    simple = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
    texts = [
        f"{simple}Files: *\nCopyright: 2020 X\nLicense: {name}\n" for name in ("GPL-2+", "Expat", "mine")
    ]
    first = licenses.Memo(tmp_path)
    parsed = [first.read(text) for text in texts]
    first.save()
    assert [p.declared for p in parsed] == ["GPL-2.0-or-later", "MIT", "LicenseRef-mine"]

    def refuse(text: str | None) -> licenses.PackageLicense:
        raise AssertionError("parsed again")

    monkeypatch.setattr(licenses, "from_copyright", refuse)
    second = licenses.Memo(tmp_path)
    assert [second.read(text) for text in texts] == parsed
    assert second.read(None) == licenses.PackageLicense()  # no copyright file: nothing to keep
    monkeypatch.undo()
    assert licenses.Memo(tmp_path).read(texts[0] + "\n") == parsed[0]  # another text: parsed
    for memo in tmp_path.glob("licences-*.json"):
        memo.write_text("{not json")
    assert licenses.Memo(tmp_path).read(texts[1]) == parsed[1]
    assert licenses.Memo(None).read(texts[1]) == parsed[1]  # no cache: parsed each time
