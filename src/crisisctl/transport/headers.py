"""Headers and auth for every command that sends traffic, and the redaction of secrets.

``-H 'Name: value'`` (repeatable), ``--bearer TOKEN`` and ``--basic user:pass``; any value may be
``env:NAME``, read from the environment so the secret stays out of shell history. `Redactor`
knows every secret a run was given (the values of secret-looking headers, tokens, passwords,
every value read from the environment) and replaces them with ``[REDACTED]`` in anything a
report, a timeline or a log line holds.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

REDACTED = "[REDACTED]"
#: header names whose values are secrets (plus any matching `_SECRET_NAME`)
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"}
)
_SECRET_NAME = re.compile(r"(api[-_]?key|token|secret|passw|auth|session|cookie)", re.I)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def is_secret_header(name: str) -> bool:
    """Whether a header's value is a secret (Authorization, Cookie, X-Api-Key-like names)."""
    lowered = name.strip().lower()
    return lowered in SECRET_HEADERS or bool(_SECRET_NAME.search(lowered))


def env_value(text: str, option: str) -> tuple[str, bool]:
    """`text`, or the environment variable it names as ``env:NAME``; (value, from_env).

    ValueError (one sentence) when the variable is not set."""
    if not text.startswith("env:"):
        return text, False
    name = text[4:].strip()
    value = os.environ.get(name)
    if not name or value is None:
        raise ValueError(
            f"{option} names the environment variable {name or '(none)'!r}, which is not set: "
            "export it or give the value itself."
        )
    return value, True


def parse_header(text: str) -> tuple[str, str]:
    """``Name: value`` -> (name, value); ValueError (one sentence) when it is not a header."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not _TOKEN.match(name) or any(c in text for c in "\r\n"):
        raise ValueError(f"-H {text!r} is not a header: write -H 'Name: value'.")
    return name, value.strip()


@dataclass(frozen=True, slots=True)
class Auth:
    """The extra headers of a run and the secrets they hold (for `Redactor`)."""

    headers: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()

    def redactor(self) -> Redactor:
        """A redactor that knows this run's secrets."""
        return Redactor(self.secrets)


def build_auth(
    header_texts: Iterable[str] = (), bearer: str | None = None, basic: str | None = None
) -> Auth:
    """The headers of ``-H``/``--bearer``/``--basic`` (``env:NAME`` values read);
    ValueError (one sentence) on a malformed option or a missing variable."""
    headers: dict[str, str] = {}
    secrets: list[str] = []
    for text in header_texts:
        name, raw = parse_header(text)
        value, from_env = env_value(raw, f"-H {name}")
        if any(c in value for c in "\r\n"):
            raise ValueError(f"-H {name}: the value contains a line break.")
        headers[name] = value
        if value and (from_env or is_secret_header(name)):
            secrets.append(value)
    if bearer is not None and basic is not None:
        raise ValueError("give either --bearer or --basic, not both.")
    if bearer is not None:
        token, _ = env_value(bearer, "--bearer")
        if not token or any(c in token for c in "\r\n "):
            raise ValueError("--bearer needs a token without spaces or line breaks.")
        headers["Authorization"] = f"Bearer {token}"
        secrets.append(token)
    if basic is not None:
        credentials, _ = env_value(basic, "--basic")
        user, sep, password = credentials.partition(":")
        if not sep or not user:
            raise ValueError("--basic needs USER:PASSWORD (or env:NAME holding it).")
        encoded = base64.b64encode(credentials.encode()).decode("ascii")
        headers["Authorization"] = f"Basic {encoded}"
        secrets += [encoded, credentials]
        if password:
            secrets.append(password)
    return Auth(headers, tuple(dict.fromkeys(s for s in secrets if s)))


#: secrets at least this long are replaced wherever they occur, shorter ones only as whole words
MIN_SUBSTRING_SECRET = 4


class Redactor:
    """Replaces known secret values (and secret headers' values) with ``[REDACTED]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first: a token inside a longer "Bearer token" string goes whole
        self.secrets = sorted({s for s in secrets if len(s) >= 1}, key=len, reverse=True)
        # a short secret ("t", "abc") is replaced only where it stands alone: replacing every
        # occurrence would garble each sentence that contains those letters
        self._short = {
            s: re.compile(rf"(?<![\w-]){re.escape(s)}(?![\w-])")
            for s in self.secrets
            if len(s) < MIN_SUBSTRING_SECRET
        }

    def text(self, value: str) -> str:
        """`value` with every known secret replaced."""
        for secret in self.secrets:
            if secret in value:
                short = self._short.get(secret)
                value = short.sub(REDACTED, value) if short else value.replace(secret, REDACTED)
        return value

    def headers(self, headers: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `headers` with secret headers' values redacted."""
        return {
            name: REDACTED if is_secret_header(name) else self.tree(value)
            for name, value in headers.items()
        }

    def tree(self, data: Any) -> Any:
        """A copy of a JSON-like tree with every secret redacted: known values anywhere, and
        the values of secret header names in any mapping called ``headers``."""
        if isinstance(data, str):
            return self.text(data) if self.secrets else data
        if isinstance(data, Mapping):
            out: dict[Any, Any] = {}
            for key, value in data.items():
                if key == "headers" and isinstance(value, Mapping):
                    out[key] = self.headers(value)
                else:
                    out[key] = self.tree(value)
            return out
        if isinstance(data, list | tuple):
            return [self.tree(item) for item in data]
        return data
