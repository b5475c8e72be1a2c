"""Debian machine-readable copyright files (DEP-5) → SPDX licence expressions.

Debian's short names mostly predate SPDX's: ``GPL-2+`` is ``GPL-2.0-or-later``,
``Expat`` is ``MIT``, ``BSD-3-clause`` is ``BSD-3-Clause``. A name with no SPDX identifier
becomes ``LicenseRef-<name>`` and its text (from the copyright file) goes with it; a
package whose copyright file is not machine-readable has no declared licence
(NOASSERTION). In a synopsis, ``or`` binds tighter than ``and``, and a comma before
``and``/``or`` closes what comes before it (``GPL-1+ or Artistic, and BSD-3-clause``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from license_expression import ExpressionError, get_spdx_licensing

#: Debian names whose SPDX identifier is not a case-insensitive match or a GPL-family form.
ALIASES = {
    "expat": "MIT",
    "mit/x11": "MIT",
    "artistic": "Artistic-1.0-Perl",  # Debian's "Artistic" is Perl's licence
    "artistic-1": "Artistic-1.0",
    "artistic-2": "Artistic-2.0",
    "apache": "Apache-1.0",
    "apache-2": "Apache-2.0",
    "apache-1.1": "Apache-1.1",
    "openldap-2.8": "OLDAP-2.8",
    "zlib": "Zlib",
    "bsl-1": "BSL-1.0",
    "mpl-1.1": "MPL-1.1",
    "mpl-2": "MPL-2.0",
    "cc0": "CC0-1.0",
    "psf-2": "PSF-2.0",
    "python": "Python-2.0",
    "ofl-1.1": "OFL-1.1",
    "bzip": "bzip2-1.0.6",
    "sleepycat": "Sleepycat",
    "bsd-2.2-clause": "BSD-2-Clause",
    "bsd3": "BSD-3-Clause",
}
#: Exceptions after "with": the Debian wording (lower case, without "exception") → SPDX.
EXCEPTIONS = {
    "autoconf": "Autoconf-exception-generic",
    "autoconf generic": "Autoconf-exception-generic",
    "autoconf-data": "Autoconf-exception-generic",
    "autoconf-2.0~archive": "Autoconf-exception-2.0",
    "autoconf-3.0": "Autoconf-exception-3.0",
    "bison": "Bison-exception-2.2",
    "bison-2.2": "Bison-exception-2.2",
    "gcc-runtime-3.1": "GCC-exception-3.1",
    "libtool": "Libtool-exception",
    "linux-syscall-note": "Linux-syscall-note",
    "llvm": "LLVM-exception",
    "openssl": "OpenSSL-exception",
    "texinfo": "Texinfo-exception",
    "classpath": "Classpath-exception-2.0",
    "font": "Font-exception-2.0",
}
_GPL = re.compile(r"^(A|L)?GPL-?(\d(?:\.\d)?)?(\.0)?(\+|-or-later|-only)?$", re.IGNORECASE)
_GFDL = re.compile(r"^GFDL(-NIV)?-(\d\.\d)(\+)?$", re.IGNORECASE)
_WITH = re.compile(r"^(.*?)\s+with\s+(.+?)\s+exception$", re.IGNORECASE)
NOASSERTION = "NOASSERTION"


@cache
def spdx() -> Any:
    return get_spdx_licensing()


@cache
def _known() -> dict[str, str]:
    """SPDX licence and exception identifiers by their lower-case form."""
    names: dict[str, str] = {}
    for symbol in spdx().known_symbols.values():
        key = str(symbol.key)
        names[key.lower()] = key
    return names


@cache
def _exceptions() -> frozenset[str]:
    """Identifiers that SPDX lets stand only after WITH (e.g. eCos-2.0, an exception in
    the licence list, though its name reads as a licence), lower-case."""
    return frozenset(str(s.key).lower() for s in spdx().known_symbols.values() if s.is_exception)


def ref(name: str) -> str:
    """``LicenseRef-`` with only the characters SPDX allows in an identifier."""
    name = name.replace("+", "-plus")
    return "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "unnamed")


def _gpl(name: str) -> str | None:
    match = _GPL.match(name)
    if match:
        family, version, _, suffix = match.groups()
        family = (family or "").upper() + "GPL"
        if version is None:  # "GPL": any version; "LGPL": 2.0 or later
            version, suffix = ("2" if family == "LGPL" else "3" if family == "AGPL" else "1"), "+"
        if "." not in version:
            version += ".0"
        tail = "-or-later" if suffix in ("+", "-or-later") else "-only"
        candidate = f"{family}-{version}{tail}"
        return candidate if candidate.lower() in _known() else None
    match = _GFDL.match(name)
    if match:
        niv, version, plus = match.groups()
        candidate = f"GFDL-{version}{'-no-invariants' if niv else ''}{'-or-later' if plus else '-only'}"
        return candidate if candidate.lower() in _known() else None
    return None


@cache
def identifier(name: str) -> str:
    """One Debian licence name (maybe with an exception) → an SPDX expression atom."""
    name = name.strip()
    with_match = _WITH.match(name)
    if with_match:
        base, exception = with_match.groups()
        spdx_exception = EXCEPTIONS.get(exception.lower())
        base_id = identifier(base)
        if spdx_exception and not base_id.startswith("LicenseRef-"):
            return f"{base_id} WITH {spdx_exception}"
        return ref(name)
    lowered = name.lower()
    if lowered in ALIASES:
        return ALIASES[lowered]
    gpl = _gpl(name)
    if gpl:
        return gpl
    known = _known().get(lowered)
    if known and known.lower() not in _exceptions():
        return known
    return ref(name)


def _split(text: str, separator: str) -> list[str]:
    return [part for part in re.split(separator, text, flags=re.IGNORECASE) if part.strip()]


def parse(synopsis: str) -> list[list[list[str]]]:
    """A synopsis as groups (closed by ", and"/", or") of AND-ed terms of OR-ed names."""
    groups = []
    for group in _split(" ".join(synopsis.split()), r",\s*(?=(?:and|or)\s)"):
        group = re.sub(r"^(and|or)\s+", "", group.strip(), flags=re.IGNORECASE)
        terms = [[n.strip() for n in _split(term, r"\s+or\s+")] for term in _split(group, r"\s+and\s+")]
        groups.append(terms)
    return groups


@cache
def expression(synopsis: str) -> str:
    """A DEP-5 licence synopsis → an SPDX licence expression (validated)."""
    groups = []
    for terms in parse(synopsis):
        ands = []
        for names in terms:
            ors = [identifier(name) for name in names]
            ands.append(ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")")
        groups.append(" AND ".join(ands))
    joiner = " AND " if re.search(r",\s*and\s", synopsis, re.IGNORECASE) else " OR "
    text = groups[0] if len(groups) == 1 else joiner.join(f"({g})" for g in groups)
    try:
        return str(spdx().parse(text, simple=False))
    except ExpressionError:
        return ref(synopsis)


@dataclass
class PackageLicense:
    """What a package's copyright file says: an expression (or NOASSERTION), and the texts
    of the licences that have no SPDX identifier, by their LicenseRef."""

    declared: str = NOASSERTION
    texts: dict[str, str] = field(default_factory=dict)
    machine_readable: bool = False


def from_copyright(text: str | None) -> PackageLicense:
    """Read a copyright file; every licence of every Files paragraph, joined with AND."""
    if text is None:
        return PackageLicense()
    from debian.copyright import Copyright, NotMachineReadableError

    logging.getLogger("debian.copyright").setLevel(logging.ERROR)  # it warns of every quirk it forgives
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = Copyright(text.splitlines(keepends=True), strict=False)
    except (NotMachineReadableError, ValueError):
        return PackageLicense()
    texts = {}
    for license_paragraph in parsed.all_license_paragraphs():
        standalone: Any = license_paragraph.license  # python-debian's License(synopsis, text)
        if standalone is not None and standalone.text.strip():
            texts[standalone.synopsis.strip().lower()] = standalone.text
    parts: list[str] = []
    refs: dict[str, str] = {}
    for paragraph in parsed.all_files_paragraphs():
        lic: Any = paragraph.license
        if lic is None or not lic.synopsis.strip():
            continue
        expr = expression(lic.synopsis)
        if expr not in parts:
            parts.append(expr)
        for name in (n for terms in parse(lic.synopsis) for names in terms for n in names):
            if identifier(name).startswith("LicenseRef-"):
                refs[ref(name)] = lic.text or texts.get(name.lower(), "")
        if expr.startswith("LicenseRef-") and " " not in expr and expr not in refs:
            refs[expr] = lic.text or texts.get(lic.synopsis.strip().lower(), "")
    if not parts:
        return PackageLicense()
    declared = parts[0] if len(parts) == 1 else " AND ".join(f"({p})" if " " in p else p for p in parts)
    declared = str(spdx().dedup(declared))
    used = {r: (t.strip() or "(no text in the package's copyright file)") for r, t in refs.items()}
    used = {r: t for r, t in used.items() if r in declared}
    return PackageLicense(declared, used, True)


class Memo:
    """What copyright files said, by the sha256 of their text, kept in ``directory`` (the
    stage cache's): python-debian takes about 10 ms to parse one, and a build reads a few
    hundred that the last build read too. The file's name carries the digest of this
    module and the parsers' versions, so a change to either starts a new one."""

    def __init__(self, directory: Path | None) -> None:
        self.path: Path | None = None
        self.known: dict[str, dict[str, Any]] = {}
        self.new = False
        if directory is None:
            return
        versions = [metadata.version(name) for name in ("python-debian", "license-expression")]
        code = hashlib.sha256(Path(__file__).read_bytes() + repr(versions).encode()).hexdigest()[:16]
        self.path = directory / f"licences-{code}.json"
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(found, dict):
            self.known = {k: v for k, v in found.items() if isinstance(v, dict)}

    def read(self, text: str | None) -> PackageLicense:
        if text is None:
            return PackageLicense()
        if self.path is None:
            return from_copyright(text)
        key = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
        if key in self.known:
            try:
                return PackageLicense(**self.known[key])
            except TypeError:  # not what this code writes: read the file again
                pass
        found = from_copyright(text)
        self.known[key], self.new = asdict(found), True
        return found

    def save(self) -> None:
        """Written whole under a temporary name, then renamed: never half a file."""
        if self.path is None or not self.new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-licences-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.known, out)
        os.replace(tmp, self.path)
        self.new = False
