"""The serve file (``serve.yaml``): where `crisisctl serve` listens, whom it admits, what it reads.

    listen: 127.0.0.1:8700
    watch: watch.yaml              # the watch file (relative to this file); optional
    state_dir: .crisisctl/serve    # the event ring buffer and the session key live here
    db: env:CRISISCTL_DB           # the incident store (default: the watch file's db)
    tokens:                        # API tokens (Authorization: Bearer, or the sign-in form)
      - {name: alice, token: env:ALICE_TOKEN, role: operator}
    users:                         # static users (`crisisctl serve hash-password` makes a hash)
      - {name: bob, password_hash: "scrypt$16384$8$1$…", role: viewer}
    allow_anonymous_viewer: false  # only on a loopback address: anyone reads, nobody changes
    session_ttl: 12h
    secure_cookies: auto           # auto: Secure when the request came over https
    events: {buffer: 1000, buffer_mb: 64, ping: 15s, client_queue: 512, client_mb: 8,
             persist_every: 5s}

Every model refuses unknown fields; `load_serve_file` reports every problem as
``file:line: field: message``. `ServeSettings` is what the app factory takes: the validated
file plus the resolved paths and secrets (tokens resolved from ``env:NAME`` at start, so an
unset variable is one sentence before anything listens).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crisisctl.load.scenario import Duration, ScenarioError, field_problems, read_yaml
from crisisctl.watch.config import resolve_secret

__all__ = [
    "EventsConfig",
    "ServeConfig",
    "ServeConfigError",
    "ServeSettings",
    "TokenSpec",
    "UserSpec",
    "is_loopback",
    "load_serve_file",
    "parse_listen",
    "parse_serve_text",
]

Role = Literal["operator", "viewer"]


class ServeConfigError(ScenarioError):
    """An invalid serve file (or flags); `problems` are ``file:line: field: message`` lines."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        super().__init__(source, problems)
        if len(self.problems) == 1:
            self.args = (f"{source} is not a valid serve file: {self.problems[0]}",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]


class TokenSpec(_Strict):
    """An API token: who it is, the token (``env:NAME`` only), and the role."""

    name: _NAME
    token: str
    role: Role = "viewer"

    @field_validator("token")
    @classmethod
    def _env_token(cls, value: str) -> str:
        if not value.startswith("env:"):
            raise ValueError("write the token as env:NAME (never the token itself in a file)")
        return value


class UserSpec(_Strict):
    """A static user with a scrypt password hash (``crisisctl serve hash-password``)."""

    name: _NAME
    password_hash: str
    role: Role = "viewer"

    @field_validator("password_hash")
    @classmethod
    def _scrypt(cls, value: str) -> str:
        if not value.startswith("scrypt$") or value.count("$") != 5:
            raise ValueError(
                "expected a scrypt$N$r$p$salt$hash value: make one with "
                "`crisisctl serve hash-password`"
            )
        return value


class EventsConfig(_Strict):
    """The event hub: ring buffer size, ping period, per-client queue, persistence period."""

    buffer: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    #: the buffer's byte budget (MiB): the oldest events leave early beyond it
    buffer_mb: Annotated[float, Field(gt=0, le=4096)] = 64.0
    ping: Annotated[Duration, Field(gt=0)] = 15.0
    client_queue: Annotated[int, Field(ge=1, le=100_000)] = 512
    #: bytes (MiB) queued for one stream before it is dropped as too slow
    client_mb: Annotated[float, Field(gt=0, le=1024)] = 8.0
    persist_every: Annotated[Duration, Field(gt=0)] = 5.0


class ServeConfig(_Strict):
    """A whole serve file."""

    listen: str = "127.0.0.1:8700"
    watch: str | None = None
    state_dir: str = ".crisisctl/serve"
    db: str | None = None
    tokens: list[TokenSpec] = Field(default_factory=list)
    users: list[UserSpec] = Field(default_factory=list)
    allow_anonymous_viewer: bool = False
    session_ttl: Annotated[Duration, Field(gt=0)] = 12 * 3600.0
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    events: EventsConfig = EventsConfig()

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8700`` for IPv6) → (host, port); ValueError in one sentence."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT: write e.g. 127.0.0.1:8700")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """What `create_app` needs: the file, its paths resolved, the tokens resolved.

    `tokens` maps a token to (name, role); it never leaves the process. `watch_path` None:
    no watch (the fleet is empty; incidents and events still work)."""

    config: ServeConfig = field(default_factory=ServeConfig)
    watch_path: Path | None = None
    state_dir: Path = Path(".crisisctl/serve")
    db_url: str | None = None
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    @property
    def host(self) -> str:
        return parse_listen(self.config.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.config.listen)[1]

    def problem(self) -> str | None:
        """Why this configuration must not start (one sentence), or None."""
        if self.tokens or self.config.users:
            return None
        if not self.config.allow_anonymous_viewer:
            return (
                "no tokens or users are configured: add `tokens:` or `users:` to the serve "
                "file (or --allow-anonymous-viewer on a loopback address for read-only use)."
            )
        if not is_loopback(self.host):
            return (
                f"anonymous viewers are allowed only on a loopback address, not {self.host}: "
                "listen on 127.0.0.1 or configure tokens or users."
            )
        return None

    @classmethod
    def build(cls, config: ServeConfig, *, base: Path | None = None) -> ServeSettings:
        """Resolve paths against `base` (the serve file's folder) and tokens from the
        environment; ValueError (one sentence) for an unset variable or a repeated name."""
        root = base or Path.cwd()
        names: set[str] = set()
        tokens: dict[str, tuple[str, str]] = {}
        for name in [t.name for t in config.tokens] + [u.name for u in config.users]:
            if name in names:
                raise ValueError(f"the name {name!r} is given twice: names must be unique.")
            names.add(name)
        for token in config.tokens:
            value = resolve_secret(token.token)
            if len(value) < 16:
                raise ValueError(
                    f"the token of {token.name!r} ({token.token}) is shorter than 16 "
                    "characters: use a long random value (e.g. `openssl rand -hex 24`)."
                )
            tokens[value] = (token.name, token.role)
        watch = root / config.watch if config.watch else None
        db = resolve_secret(config.db) if config.db else None
        return cls(config, watch, root / config.state_dir, db, tokens)


def parse_serve_text(text: str, source: str) -> ServeConfig:
    """Validate a serve file's text; ServeConfigError lists every problem with its line."""
    root, data = read_yaml(text, source, ServeConfigError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ServeConfigError(source, [f"{source}:1: serve: must be a YAML mapping of fields"])
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ServeConfigError(source, field_problems(exc, source, root, "serve")) from None


def load_serve_file(path: Path) -> ServeConfig:
    """Read and validate a serve file; ServeConfigError (file:line: field: message)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ServeConfigError(source, [f"cannot be read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise ServeConfigError(source, ["is not UTF-8 text"]) from None
    return parse_serve_text(text, source)
