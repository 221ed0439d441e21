"""Who may read the guard's control surface, in-process (httpx.ASGITransport with a chosen peer
address): trusted networks or a token, a public peer refused, health open to all, a rate limit
of its own."""

from __future__ import annotations

import httpx
import pytest

from crisisctl.guard import Guard, GuardConfig, GuardConfigError
from crisisctl.guard.types import Receive, Scope, Send

PUBLIC = "203.0.113.9"  # TEST-NET-3: a public address as far as the guard can tell


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def client(guard: Guard, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=guard, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://guard")


def guarded(**config: object) -> Guard:
    config.setdefault("token", "")
    config.setdefault("read_token", "")
    return Guard(app, GuardConfig.from_dict(config))


@pytest.mark.parametrize("endpoint", ["status", "metrics", "mode"])
async def test_a_public_peer_is_refused_what_the_surface_reveals(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRISISCTL_GUARD_READ_TOKEN", raising=False)
    async with client(Guard(app, GuardConfig(token="")), PUBLIC) as http:
        response = await http.get(f"/_crisis/{endpoint}")
    assert response.status_code == 403
    error = response.json()["error"]
    assert "loopback and private networks" in error and "read_token" in error
    assert "pid" not in response.text


async def test_health_answers_everyone() -> None:
    async with client(guarded(), PUBLIC) as http:
        response = await http.get("/_crisis/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mode": "normal"}


@pytest.mark.parametrize(
    "peer",
    ["127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.5", "172.31.255.254",
     "192.168.1.1", "fd00::1", "169.254.10.20", "fe80::1", "::ffff:10.0.0.1"],
)  # fmt: skip
async def test_loopback_and_private_peers_may_read(peer: str) -> None:
    async with client(guarded(), peer) as http:
        status = await http.get("/_crisis/status")
        metrics = await http.get("/_crisis/metrics")
    assert status.status_code == 200 and status.json()["service"] == "crisisctl-guard"
    assert metrics.status_code == 200 and "crisisctl_guard_mode" in metrics.text


@pytest.mark.parametrize(
    "peer", ["8.8.8.8", "172.32.0.1", "100.64.0.1", "2001:db8::1", "::ffff:8.8.8.8", "testclient"]
)
async def test_addresses_outside_the_trusted_networks_are_refused(peer: str) -> None:
    async with client(guarded(), peer) as http:
        assert (await http.get("/_crisis/status")).status_code == 403


async def test_a_read_token_or_the_write_token_opens_reading_to_a_public_peer() -> None:
    guard = guarded(read_token="reader", token="writer")
    async with client(guard, PUBLIC) as http:
        for token in ("reader", "writer"):
            auth = {"authorization": f"Bearer {token}"}
            assert (await http.get("/_crisis/status", headers=auth)).status_code == 200
            assert (await http.get("/_crisis/metrics", headers=auth)).status_code == 200
        wrong = await http.get("/_crisis/status", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        # the read token cannot switch the mode
        post = await http.post(
            "/_crisis/mode", json={"mode": "emergency"}, headers={"authorization": "Bearer reader"}
        )
        assert post.status_code == 401
    assert guard.mode == "normal"


async def test_the_read_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRISISCTL_GUARD_READ_TOKEN", "from-env")
    guard = Guard(app, GuardConfig(token=""))
    async with client(guard, PUBLIC) as http:
        ok = await http.get("/_crisis/status", headers={"authorization": "Bearer from-env"})
    assert ok.status_code == 200


async def test_an_unrelated_bearer_from_a_trusted_network_is_not_refused() -> None:
    # triage forwards the app's own --bearer to every probe, the guard's status included
    async with client(guarded(read_token="reader"), "127.0.0.1") as http:
        response = await http.get("/_crisis/status", headers={"authorization": "Bearer app"})
    assert response.status_code == 200


async def test_control_read_open_lets_anyone_read() -> None:
    async with client(guarded(control_read="open"), PUBLIC) as http:
        assert (await http.get("/_crisis/status")).status_code == 200
        assert (await http.get("/_crisis/metrics")).status_code == 200


async def test_empty_control_networks_mean_a_token_is_always_needed() -> None:
    async with client(guarded(control_networks=(), read_token="r"), "127.0.0.1") as http:
        assert (await http.get("/_crisis/status")).status_code == 403
        auth = {"authorization": "Bearer r"}
        assert (await http.get("/_crisis/status", headers=auth)).status_code == 200


async def test_a_request_forwarded_by_an_untrusted_proxy_is_refused() -> None:
    # nginx on loopback forwarding a public client: the peer is 127.0.0.1, the origin is not
    async with client(guarded(), "127.0.0.1") as http:
        for header in ("x-forwarded-for", "forwarded", "x-real-ip"):
            response = await http.get("/_crisis/status", headers={header: PUBLIC})
            assert response.status_code == 403, header
            assert "trusted_proxies" in response.json()["error"]


async def test_behind_a_trusted_proxy_the_forwarded_client_decides() -> None:
    guard = guarded(trusted_proxies=["127.0.0.1"])
    async with client(guard, "127.0.0.1") as http:
        inside = await http.get("/_crisis/status", headers={"x-forwarded-for": "10.0.0.7"})
        outside = await http.get("/_crisis/status", headers={"x-forwarded-for": PUBLIC})
        spoofed = await http.get(
            "/_crisis/status", headers={"x-forwarded-for": f"10.0.0.7, {PUBLIC}"}
        )
        direct = await http.get("/_crisis/status")  # the proxy itself
    assert inside.status_code == 200
    assert outside.status_code == 403
    assert spoofed.status_code == 403  # the proxy appended the real client: it decides
    assert direct.status_code == 200


async def test_status_and_metrics_have_a_rate_limit_of_their_own() -> None:
    guard = guarded(control_rate_limit="3/minute")
    async with client(guard, "127.0.0.1") as http, client(guard, "10.0.0.2") as other:
        answers = [(await http.get(f"/_crisis/{e}")).status_code for e in ("status", "metrics")]
        answers.append((await http.get("/_crisis/status")).status_code)
        limited = await http.get("/_crisis/metrics")
        assert answers == [200, 200, 200]
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["reason"] == "rate_limited"
        # per client; health and the mode history stay unlimited
        assert (await other.get("/_crisis/status")).status_code == 200
        for _ in range(5):
            assert (await http.get("/_crisis/health")).status_code == 200
            assert (await http.get("/_crisis/mode")).status_code == 200


async def test_mode_switch_attempts_pass_the_rate_limit_so_tokens_cannot_be_guessed_at_speed() -> (
    None
):
    guard = guarded(token="s3cret-token", control_rate_limit="3/minute")
    async with client(guard, "127.0.0.1") as http:
        wrong = {"Authorization": "Bearer guess"}
        codes = [
            (await http.post("/_crisis/mode", json={"mode": "normal"}, headers=wrong)).status_code
            for _ in range(3)
        ]
        right = {"Authorization": "Bearer s3cret-token"}
        limited = await http.post("/_crisis/mode", json={"mode": "emergency"}, headers=right)
    assert codes == [401, 401, 401]
    assert limited.status_code == 429 and limited.json()["reason"] == "rate_limited"
    assert guard.mode == "normal"


async def test_the_rate_limit_is_counted_before_the_refusal_of_a_public_peer() -> None:
    async with client(guarded(control_rate_limit="2/minute"), PUBLIC) as http:
        codes = [(await http.get("/_crisis/status")).status_code for _ in range(3)]
    assert codes == [403, 403, 429]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"control_read": "public"}, "unknown control_read 'public': use 'trusted'"),
        ({"control_networks": ["10.0.0.0/8", "intranet"]}, "control network 'intranet'"),
        ({"control_rate_limit": "often"}, "invalid rate limit 'often'"),
    ],
)
def test_control_settings_are_checked_with_a_clear_sentence(
    config: dict[str, object], message: str
) -> None:
    with pytest.raises(GuardConfigError, match=message):
        GuardConfig.from_dict(config)


def test_control_networks_may_be_written_as_one_string() -> None:
    config = GuardConfig.from_dict({"control_networks": "10.0.0.0/8, ::1"})
    assert config.control_networks == ("10.0.0.0/8", "::1")
