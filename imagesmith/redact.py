"""Secret values, known once, kept out of every text imagesmith writes.

A value becomes secret where it enters: ``!env``/``!file`` in a config, a template that
uses a secret variable, the credentials of a URL, the signing key's passphrase. Each is
registered here, and ``redact`` replaces it in any text before it reaches the terminal,
the build log or an error message. This is the net under the rules that keep secrets out
in the first place (masked config, no secret in a command line or a lock).

The environment of the commands imagesmith runs is allow-listed (``environment``): a
script or mmdebstrap never sees the builder's tokens and passphrases.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping

MASK = "<secret>"
#: shorter values would garble every text they appear in (and are no secret worth the name)
MIN_LENGTH = 4
_known: list[str] = []  # longest first, so a secret that contains another is masked whole

#: what commands may see of imagesmith's own environment
ALLOWED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TERM", "TMPDIR", "TZ",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
    "NO_PROXY", "ftp_proxy", "all_proxy", "XDG_RUNTIME_DIR",
)  # fmt: skip
ALLOWED_PREFIXES = ("LC_",)


def register(value: str) -> None:
    """From now on, ``value`` is shown as <secret>."""
    for part in (value, value.strip()):
        if len(part) >= MIN_LENGTH and part not in _known:
            _known.append(part)
            _known.sort(key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by <secret> (longest first)."""
    for value in _known:  # every log line passes here: no sorting per call
        if value in text:
            text = text.replace(value, MASK)
    return text


#: scheme://USERINFO@rest: everything up to the last @ counts as user information, so a
#: malformed URL (a / in a password, say) still loses all of it
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>.*)@(?P<rest>.*)$", re.S)


def url_credentials(url: str) -> tuple[str, str] | None:
    """(user, password) written into a URL, registered as secrets; None if it has none."""
    found = _USERINFO.match(url)
    if found is None:
        return None
    userinfo = found.group("userinfo")
    user, _, password = userinfo.partition(":")
    for value in (userinfo, password, urllib.parse.unquote(password)):
        register(value)
    return urllib.parse.unquote(user), urllib.parse.unquote(password)


def strip_url(url: str) -> str:
    """A URL as logs, messages, locks and manifests show it: without user name or password."""
    found = _USERINFO.match(url)
    return url if found is None else found.group("scheme") + found.group("rest")


def environment(
    extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allow-listed part of ``base`` (default: this process's environment) and ``extra``."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k in ALLOWED_ENV or k.startswith(ALLOWED_PREFIXES)}
    env.update(extra or {})
    return env
