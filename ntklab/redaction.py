"""Secrets out of every text ntklab prints or records.

A SQLAlchemy/libpq database URL can carry a secret in three places: the userinfo
(`postgresql://user:SECRET@host/db`), a libpq `password=`/`sslpassword=` parameter (in the query
string, or in a keyword/value connection string quoted by a driver's error), and any other
parameter whose name says it is a secret (token, secret, api_key, ...). `redact` masks all of
them in any text (messages, log lines, tracebacks, reports, provenance): URL userinfo,
`key=value` and `'key': 'value'` pairs of secret keys, and the literal values of every secret in
the URLs this process resolved (`remember_secrets`), raw and percent-encoded, so a secret is
masked even where a library quotes it in a shape the patterns do not know.
"""

import re
import sys
import urllib.parse

MASK = "***"
MIN_REMEMBERED = 4
"""Shorter secrets are masked by the patterns only: replacing every occurrence of a one- or
three-character string would mangle the text around it."""

_SECRET_NAME = r"[\w.-]*(?:pass|pwd|secret|token|credential|api_?key|access_?key|private_?key)[\w.-]*"
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<secret>[^@\s]*)@")
_ASSIGNMENT = re.compile(
    rf"(?P<head>\b{_SECRET_NAME}\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,)'\"]+)", re.IGNORECASE)
_MAPPING = re.compile(
    rf"(?P<head>(?P<quote>['\"]){_SECRET_NAME}(?P=quote)\s*:\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")",
    re.IGNORECASE)
_SECRET_KEY = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)

_remembered: set[str] = set()


def _secrets_in(url: str) -> set[str]:
    """The secret values a URL carries: its userinfo password and its secret query parameters."""
    found: set[str] = set()
    match = _USERINFO.search(url)
    if match and match["secret"]:
        found.add(match["secret"])
    query = url.partition("?")[2]
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        if _SECRET_KEY.match(key):
            found.add(value)
    decoded = {urllib.parse.unquote(s) for s in found}
    encoded = {urllib.parse.quote(s, safe="") for s in found | decoded}
    return {s for s in found | decoded | encoded if len(s) >= MIN_REMEMBERED}


def remember_secrets(url: str) -> None:
    """Mask the secrets of `url` in everything `redact` sees from now on in this process."""
    _remembered.update(_secrets_in(url))


def redact(text: str) -> str:
    """`text` with every secret it holds replaced by ***."""
    for secret in sorted(_remembered, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _ASSIGNMENT.sub(lambda m: m["head"] + MASK, text)
    return _MAPPING.sub(lambda m: m["head"] + f"'{MASK}'", text)


class RedactingStream:
    """A text stream (standard output or error, looked up on each write so that redirections made
    after start-up are honored) whose writes pass through `redact`."""

    def __init__(self, name: str):
        self._name = name

    @property
    def _stream(self):
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, attribute: str):
        return getattr(self._stream, attribute)
