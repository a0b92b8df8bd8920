"""Credentials out of error texts and log lines.

Model clients build error messages from the base URL, the SDK's exception text and the
provider's error body. Each can carry a secret: ``http://user:password@host`` in a base
URL, an ``Authorization: Bearer …`` or ``x-api-key: …`` header echoed by a proxy, an
``api_key=…`` query parameter, the API key itself quoted in a "key rejected" reply. Every
error text and log line of the clients goes through :func:`redact` first.

Three layers, so one missed shape is caught by another:

1. **Known secrets, verbatim.** The client passes its own secrets (API key, URL password,
   header values) and every occurrence is replaced — also URL-quoted forms. Secrets
   shorter than 4 characters are ignored (they would mangle ordinary text).
2. **Shapes.** The userinfo of any URL (``scheme://user:pw@`` → ``scheme://***@``); the
   value after an auth-like header or parameter name (``authorization``, ``x-api-key``,
   ``api-key``, ``api_key``, ``token``, ``password``, ``secret``, …) whether written as
   ``Name: value``, ``name=value`` or ``"name": "value"``; ``Bearer``/``Basic`` credentials.
3. **Key formats.** Strings shaped like provider keys (``sk-…``, ``sk-ant-…``, ``sk-proj-…``,
   ``hf_…``, ``AKIA…``) of 16 or more characters.

The replacement is ``***``, so a reader sees that something was there. Redaction is
idempotent and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

MASK = "***"

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")
_AUTH_NAMES = (
    r"(?:proxy-)?authorization|x-api-key|api[-_]?key|x-goog-api-key|apikey|access[-_]?token|"
    r"refresh[-_]?token|auth[-_]?token|token|password|passwd|pwd|secret|client[-_]?secret"
)
# "Name: value" (header lines, dict reprs) and name=value (query strings, kwargs reprs).
_AUTH_FIELD = re.compile(
    r"(?P<name>(?<![A-Za-z0-9_-])(?:" + _AUTH_NAMES + r"))(?P<q1>['\"]?)(?P<sep>\s*[:=]\s*)(?P<q2>['\"])?"
    r"(?P<value>(?(q2)[^'\"\n]+|(?:(?:Bearer|Basic|Token)\s+)?[^\s'\",;&}\])]+))",
    re.IGNORECASE,
)
_SCHEME_CRED = re.compile(r"\b(?P<kind>Bearer|Basic)\s+(?P<value>[A-Za-z0-9._~+/=\-]{8,})")
_KEY_SHAPES = re.compile(r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{16,}|AKIA[A-Z0-9]{16})\b")


def url_secrets(url: str | None) -> list[str]:
    """The password (and user name) in ``url``'s userinfo, decoded and as written."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    for value in (parts.password, parts.username):
        if value:
            found.extend({value, unquote(value)})
    return found


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", url)


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """``str(text)`` with credentials masked (see the module docstring)."""
    try:
        out = str(text)
    except Exception:  # a broken __str__ must not hide the error it describes
        out = repr(text)
    for secret in sorted({s for s in secrets if isinstance(s, str) and len(s) >= 4}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            out = out.replace(form, MASK)
    out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", out)
    out = _AUTH_FIELD.sub(_mask_field, out)
    out = _SCHEME_CRED.sub(lambda m: f"{m.group('kind')} {MASK}", out)
    return _KEY_SHAPES.sub(MASK, out)


def _mask_field(m: re.Match[str]) -> str:
    value = m.group("value")
    if value == MASK or value.endswith(" " + MASK):
        return m.group(0)
    scheme = re.match(r"(?:Bearer|Basic|Token)\s+", value, re.IGNORECASE)
    kept = scheme.group(0) if scheme else ""
    return f"{m.group('name')}{m.group('q1')}{m.group('sep')}{m.group('q2') or ''}{kept}{MASK}"


def redact_error(err: BaseException, secrets: Iterable[str | None] = ()) -> BaseException:
    """``err`` with its message (and that of a wrapped ``final`` error) redacted in place."""
    secrets = list(secrets)
    for e in (err, getattr(err, "final", None)):
        if isinstance(e, BaseException) and e.args:
            e.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in e.args)
    return err
