"""The transport room's parsers and rules: targets, --resolve pins, auth flags, redaction."""

from __future__ import annotations

import base64
import re
import string
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from crisisctl.transport.headers import (
    REDACTED,
    Redactor,
    build_auth,
    is_secret_header,
    parse_header,
)
from crisisctl.transport.request import build_request
from crisisctl.transport.resolve import parse_pins, parse_resolve
from crisisctl.transport.settings import TransportSpec
from crisisctl.transport.target import parse_url


def test_a_pin_changes_only_the_address_connected_to() -> None:
    spec = TransportSpec(resolve=["API.test.local:8443:127.0.0.2"])
    target = spec.target("https://api.test.local:8443/v1?x=1", headers={"X-A": "1"})
    assert target.connect_host == "127.0.0.2"
    assert target.server_hostname == "api.test.local"  # SNI and the name check: the URL's host
    assert target.host_header == "api.test.local:8443" and target.path == "/v1?x=1"
    raw = build_request(target)
    assert b"Host: api.test.local:8443\r\n" in raw and b"X-A: 1\r\n" in raw
    # another port is not pinned
    assert spec.target("https://api.test.local:443/").connect_host == "api.test.local"


def test_ipv6_pins_and_defaults() -> None:
    assert parse_resolve("h:80:[::1]") == (("h", 80), "::1")
    assert parse_pins(["a:1:127.0.0.1", "a:1:127.0.0.3"]) == {("a", 1): "127.0.0.3"}
    assert parse_url("https://h/").port == 443 and parse_url("http://h/").port == 80


@pytest.mark.parametrize(
    "text", ["h:80", "h::1.2.3.4", ":80:1.2.3.4", "h:0:1.2.3.4", "h:x:1.1.1.1"]
)
def test_bad_pins_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT:ADDR"):
        parse_resolve(text)


def test_a_pin_to_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        parse_resolve("h:80:other.host")


def test_auth_flags_build_headers_and_know_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", "tok-123456")
    auth = build_auth(["X-Trace: 1", "Cookie: sid=abc123"], bearer="env:T_TOKEN")
    assert auth.headers == {
        "X-Trace": "1",
        "Cookie": "sid=abc123",
        "Authorization": "Bearer tok-123456",
    }
    assert set(auth.secrets) == {"tok-123456", "sid=abc123"}
    basic = build_auth(basic="ops:pa55word")
    encoded = base64.b64encode(b"ops:pa55word").decode()
    assert basic.headers == {"Authorization": f"Basic {encoded}"}
    assert {"pa55word", encoded, "ops:pa55word"} <= set(basic.secrets)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"header_texts": ["nocolon"]}, "-H"),
        ({"header_texts": ["X: env:T_MISSING_VAR"]}, "T_MISSING_VAR"),
        ({"bearer": "env:T_MISSING_VAR"}, "T_MISSING_VAR"),
        ({"basic": "nopassword"}, "USER:PASSWORD"),
        ({"bearer": "a", "basic": "u:p"}, "not both"),
    ],
)
def test_bad_auth_flags_are_one_sentence(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        build_auth(**kwargs)
    assert str(info.value).endswith(".")


@pytest.mark.parametrize(
    "name", ["Authorization", "cookie", "X-Api-Key", "X-Auth-Token", "Proxy-Authorization"]
)
def test_secret_header_names(name: str) -> None:
    assert is_secret_header(name)
    assert not is_secret_header("X-Trace")


_TOKEN_CHARS = string.ascii_letters + string.digits + "-_"
_secret = st.text(_TOKEN_CHARS, min_size=8, max_size=40)
_json = st.recursive(
    st.text(max_size=20) | st.integers() | st.none(),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)


@given(secret=_secret, tree=_json, prefix=st.text(max_size=10), suffix=st.text(max_size=10))
def test_a_known_secret_never_survives_redaction(
    secret: str, tree: Any, prefix: str, suffix: str
) -> None:
    assume(secret not in REDACTED)  # the marker itself cannot be told from a secret
    data = {"report": tree, "detail": f"{prefix}{secret}{suffix}", "list": [secret, {"k": secret}]}
    out = repr(Redactor([secret]).tree(data))
    assert secret not in out


@given(value=st.text(string.printable.replace("\r", "").replace("\n", ""), max_size=30))
def test_secret_header_values_are_redacted_by_name(value: str) -> None:
    out = Redactor().tree({"config": {"headers": {"Authorization": value, "X-Trace": "v"}}})
    assert out == {"config": {"headers": {"Authorization": REDACTED, "X-Trace": "v"}}}


@given(
    name=st.text(string.ascii_letters + "-", min_size=1, max_size=20),
    value=st.text(string.ascii_letters + string.digits + " :=/", max_size=30),
)
def test_header_text_round_trips(name: str, value: str) -> None:
    assert parse_header(f"{name}: {value}") == (name, value.strip())


def test_a_short_secret_is_redacted_where_it_stands_alone_not_inside_words() -> None:
    redactor = Redactor(["t", "s3cr3t-token"])
    text = "could not reach https://api.test: Bearer t (token t); s3cr3t-tokens"
    assert redactor.text(text) == (
        "could not reach https://api.test: Bearer [REDACTED] (token [REDACTED]); [REDACTED]s"
    )


@given(st.text(alphabet="abc t:;/", max_size=40))
def test_a_short_secret_never_survives_as_a_word(text: str) -> None:
    out = Redactor(["t"]).text(text)
    assert "t" not in re.split(r"[^\w-]+", out)
