"""`probe.guard_mode.control_url` and `endpoint`: any URL of a service, pointed at one control
endpoint, keeps its origin (and a `Target` keeps its TLS, pins and headers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crisisctl.probe.guard_mode import ENDPOINTS, GuardModeError, control_url, endpoint
from crisisctl.transport.target import parse_url

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0-_", min_size=1, max_size=8)
prefixes = st.lists(segment, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
bases = st.sampled_from(
    ["http://127.0.0.1:8000", "https://api.test.local", "https://[::1]:8443", "http://h/app"]
)


@given(bases, prefixes, st.sampled_from(ENDPOINTS), st.sampled_from(ENDPOINTS))
def test_control_url_is_stable_whatever_endpoint_the_url_already_names(
    base: str, prefix: str, first: str, second: str
) -> None:
    once = control_url(base, prefix, first)
    assert once == f"{base}{prefix}/{first}"
    assert control_url(once, prefix, second) == f"{base}{prefix}/{second}"
    assert control_url(base + prefix, prefix, second) == f"{base}{prefix}/{second}"
    assert control_url(base + prefix + "/", prefix, second) == f"{base}{prefix}/{second}"


def test_control_url_refuses_what_is_not_http() -> None:
    for url in ("ftp://x", "127.0.0.1:8000", ""):
        try:
            control_url(url, "/_crisis", "status")
        except GuardModeError as exc:
            assert "is not an http(s) URL" in str(exc) and not exc.unreachable
        else:
            raise AssertionError(f"{url!r} was accepted")


@given(prefixes, st.sampled_from(ENDPOINTS))
def test_endpoint_keeps_the_target_but_its_path(prefix: str, name: str) -> None:
    target = parse_url(
        f"https://guard.test.local:8443{prefix}/mode",
        pins={("guard.test.local", 8443): "127.0.0.1"},
        headers={"Authorization": "Bearer t0ken"},
    )
    moved = endpoint(target, prefix, name)
    assert moved.path == f"{prefix}/{name}"
    assert (moved.connect_host, moved.host_header, moved.ssl, moved.headers) == (
        "127.0.0.1", "guard.test.local:8443", target.ssl, target.headers,
    )  # fmt: skip
