"""Serve's authentication: passwords, tokens, signed sessions, CSRF, and refusing to start open."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.server.auth import (
    ANONYMOUS,
    Authenticator,
    Principal,
    hash_password,
    load_or_create_key,
    verify_password,
)
from crisisctl.server.settings import (
    ServeConfig,
    ServeConfigError,
    ServeSettings,
    parse_serve_text,
)

OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789"


@pytest.fixture(scope="module")
def bob_hash() -> str:
    return hash_password("correct horse")


def _auth(monkeypatch: pytest.MonkeyPatch, bob_hash: str, **extra: object) -> Authenticator:
    monkeypatch.setenv("T_OP", OPERATOR)
    monkeypatch.setenv("T_VIEW", VIEWER)
    config = ServeConfig.model_validate(
        {
            "tokens": [
                {"name": "alice", "token": "env:T_OP", "role": "operator"},
                {"name": "victor", "token": "env:T_VIEW", "role": "viewer"},
            ],
            "users": [{"name": "bob", "password_hash": bob_hash, "role": "operator"}],
            **extra,
        }
    )
    return Authenticator(ServeSettings.build(config), b"k" * 32)


def test_a_password_hash_verifies_only_its_password(bob_hash: str) -> None:
    assert bob_hash.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", bob_hash)
    assert not verify_password("correct horse ", bob_hash)
    assert not verify_password("correct horse", "scrypt$1$2$3$not-base64$")
    assert hash_password("correct horse") != bob_hash  # a new salt each time


def test_tokens_and_passwords_name_their_principal(
    monkeypatch: pytest.MonkeyPatch, bob_hash: str
) -> None:
    auth = _auth(monkeypatch, bob_hash)
    assert auth.by_token(OPERATOR) == Principal("alice", "operator", "bearer")
    assert auth.by_token(VIEWER) == Principal("victor", "viewer", "bearer")
    assert auth.by_token(OPERATOR + "x") is None
    assert auth.by_password("bob", "correct horse") == Principal("bob", "operator", "session")
    assert auth.by_password("bob", "wrong") is None
    assert auth.by_password("nobody", "correct horse") is None
    assert auth.identify({"authorization": f"Bearer {VIEWER}"}) == auth.by_token(VIEWER)
    assert auth.identify({}) is None


def test_a_session_cookie_is_honoured_until_forged_expired_or_its_user_is_gone(
    monkeypatch: pytest.MonkeyPatch, bob_hash: str
) -> None:
    auth = _auth(monkeypatch, bob_hash)
    value, csrf = auth.issue(Principal("bob", "operator", "session"), now=1000.0)
    who = auth.session(value, now=1001.0)
    assert who == Principal("bob", "operator", "session", csrf)
    assert auth.session(value, now=1000.0 + auth.ttl + 1) is None
    head, _, signature = value.partition(".")
    assert auth.session(f"{head}.{signature[:-2]}AA", now=1001.0) is None
    assert auth.session("garbage", now=1001.0) is None
    other_key = Authenticator(auth.settings, b"x" * 32)
    assert other_key.session(value, now=1001.0) is None
    demoted = _auth(monkeypatch, bob_hash)
    demoted.users = {}  # bob was removed from the serve file
    assert demoted.session(value, now=1001.0) is None


def test_a_session_change_needs_the_csrf_header_equal_to_its_own_value(
    monkeypatch: pytest.MonkeyPatch, bob_hash: str
) -> None:
    auth = _auth(monkeypatch, bob_hash)
    value, csrf = auth.issue(Principal("bob", "operator", "session"))
    cookie = f"crisisctl_session={value}; crisisctl_csrf={csrf}"
    who = auth.identify({"cookie": cookie})
    assert who is not None and who.csrf == csrf
    assert auth.csrf_ok(who, "GET", {"cookie": cookie})
    assert not auth.csrf_ok(who, "POST", {"cookie": cookie})
    assert auth.csrf_ok(who, "POST", {"cookie": cookie, "x-csrf-token": csrf})
    assert not auth.csrf_ok(who, "DELETE", {"cookie": cookie, "x-csrf-token": csrf + "x"})
    planted = f"crisisctl_session={value}; crisisctl_csrf=planted"
    assert not auth.csrf_ok(who, "POST", {"cookie": planted, "x-csrf-token": "planted"})
    bearer = auth.by_token(OPERATOR)
    assert bearer is not None and auth.csrf_ok(bearer, "POST", {})


def test_anonymous_viewers_only_when_allowed(
    monkeypatch: pytest.MonkeyPatch, bob_hash: str
) -> None:
    auth = _auth(monkeypatch, bob_hash, allow_anonymous_viewer=True)
    assert auth.identify({}) == ANONYMOUS and not ANONYMOUS.can_change


def test_the_session_key_is_kept_private_and_reused(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "state")
    assert len(key) == 32 and load_or_create_key(tmp_path / "state") == key
    assert (tmp_path / "state" / "session.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        ({}, "no tokens or users are configured"),
        ({"allow_anonymous_viewer": True, "listen": "0.0.0.0:8700"}, "only on a loopback"),
    ],
)
def test_serve_refuses_to_start_open(data: dict[str, object], sentence: str) -> None:
    problem = ServeSettings.build(ServeConfig.model_validate(data)).problem()
    assert problem is not None and sentence in problem


def test_anonymous_viewers_on_loopback_may_start() -> None:
    for listen in ("127.0.0.1:8700", "[::1]:8700", "localhost:1"):
        config = ServeConfig.model_validate({"allow_anonymous_viewer": True, "listen": listen})
        assert ServeSettings.build(config).problem() is None


def test_a_literal_token_an_unset_variable_or_a_short_token_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ServeConfigError, match=r"serve.yaml:2: tokens\[0\]\.token: write the"):
        parse_serve_text("tokens:\n  - {name: a, token: abc}\n", "serve.yaml")
    monkeypatch.delenv("T_UNSET", raising=False)
    config = parse_serve_text("tokens: [{name: a, token: env:T_UNSET}]\n", "serve.yaml")
    with pytest.raises(ValueError, match="T_UNSET"):
        ServeSettings.build(config)
    monkeypatch.setenv("T_SHORT", "short")
    config = parse_serve_text("tokens: [{name: a, token: env:T_SHORT}]\n", "serve.yaml")
    with pytest.raises(ValueError, match="shorter than 16"):
        ServeSettings.build(config)
    with pytest.raises(ServeConfigError, match="not HOST:PORT"):
        parse_serve_text("listen: nowhere\n", "serve.yaml")


@given(st.text(max_size=300))
def test_no_cookie_text_authenticates_or_raises(text: str) -> None:
    auth = Authenticator(
        ServeSettings.build(ServeConfig.model_validate({"allow_anonymous_viewer": False})),
        b"k" * 32,
    )
    assert auth.session(text) is None
    assert auth.identify({"cookie": text}) is None
    assert auth.identify({"cookie": f"crisisctl_session={text}"}) is None
    assert auth.identify({"authorization": f"Bearer {text}"}) is None
