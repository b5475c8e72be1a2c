"""Debian copyright files → SPDX expressions."""

from __future__ import annotations

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
