"""Client tiers: the tiered key function's results, the per-tier lookups, a raising key function."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.guard.config import GuardConfig, GuardConfigError, TierConfig
from crisisctl.guard.tiers import (
    ApiKeyTable,
    ClientIdentity,
    RateLimitedLog,
    TierTable,
    api_key_id,
)
from crisisctl.guard.types import Scope

LOGGER = "crisisctl.guard"
TIERS = (
    TierConfig("free", rate_limit="10/minute", max_concurrent_per_key=1),
    TierConfig("pro", rate_limit="1000/minute", max_concurrent_per_key=4),
    TierConfig("internal", emergency_max_concurrent_per_key=8),
)


def scope(headers: list[tuple[bytes, bytes]] | None = None, peer: str = "10.0.0.7") -> Scope:
    return {"type": "http", "method": "GET", "path": "/", "headers": headers or [],
            "client": (peer, 5000)}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_api_key_table_names_the_tier_and_never_the_secret() -> None:
    table = ApiKeyTable({"k-pro-123": "pro", "k-ops": "internal"})
    assert table(scope([(b"x-api-key", b"k-pro-123")])) == (api_key_id("k-pro-123"), "pro")
    key, tier = table(scope([(b"x-api-key", b"k-ops")]))  # type: ignore[misc]
    assert tier == "internal" and "k-ops" not in key and key.startswith("apikey:")
    # unknown key or no header: the peer address, not believed to be anyone
    assert table(scope([(b"x-api-key", b"guess")])) == "10.0.0.7"
    assert table(scope()) == "10.0.0.7"
    anonymous = ApiKeyTable({"k": "pro"}, header="X-Key", anonymous_tier="free")
    assert anonymous(scope([(b"x-key", b"k")])) == (api_key_id("k"), "pro")
    assert anonymous(scope()) == ("10.0.0.7", "free")


def test_identify_accepts_a_key_or_a_key_and_a_known_tier() -> None:
    table = TierTable(TIERS, "free", key_func=ApiKeyTable({"k": "pro"}))
    assert table.identify(scope([(b"x-api-key", b"k")])) == ClientIdentity(api_key_id("k"), "pro")
    assert table.identify(scope()) == ClientIdentity("10.0.0.7", "free")


def test_an_unknown_tier_is_the_default_one(caplog: pytest.LogCaptureFixture) -> None:
    table = TierTable(TIERS, "free", key_func=lambda s: ("alice", "platinum"))
    with caplog.at_level(logging.WARNING, LOGGER):
        assert table.identify(scope()) == ClientIdentity("alice", "free")
    assert "'platinum', which is not configured" in caplog.text


def test_a_raising_key_function_puts_the_request_in_the_default_tier_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()

    def broken(scope: Scope) -> str:
        raise KeyError("no claims")

    table = TierTable(TIERS, "free", key_func=broken, warnings=RateLimitedLog(60.0, clock))
    with caplog.at_level(logging.WARNING, LOGGER):
        for _ in range(50):
            assert table.identify(scope(peer="10.9.9.9")) == ClientIdentity("10.9.9.9", "free")
        assert len(caplog.records) == 1
        assert "raised KeyError" in caplog.records[0].getMessage()
        clock.now = 61.0
        table.identify(scope())
    assert len(caplog.records) == 2
    assert "49 more like it suppressed" in caplog.records[1].getMessage()


def test_a_key_function_returning_garbage_is_the_default_tier(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = TierTable(TIERS, "free", key_func=lambda s: 42)  # type: ignore[arg-type,return-value]
    with caplog.at_level(logging.WARNING, LOGGER):
        assert table.identify(scope()) == ClientIdentity("10.0.0.7", "free")
    assert "returned a int" in caplog.text


def test_rate_limit_per_tier() -> None:
    table = TierTable(TIERS, "free")
    assert table.rate_limit("pro", "5/second") == "1000/minute"
    assert table.rate_limit("internal", "5/second") == "5/second"
    assert table.rate_limit("nobody", None) is None


def test_max_concurrent_per_key_per_tier_and_in_emergency() -> None:
    table = TierTable(TIERS, "free")
    assert table.max_concurrent_per_key("pro", 2) == 4
    assert table.max_concurrent_per_key("internal", 2) == 2
    assert table.max_concurrent_per_key("pro", 2, emergency=True) == 2  # 4 * 0.5
    assert table.max_concurrent_per_key("internal", 2, emergency=True) == 8
    assert table.max_concurrent_per_key("free", 1, emergency=True) == 1  # never below 1
    assert table.max_concurrent_per_key("other", 6, emergency=True, emergency_rule_value=3) == 3
    # a tier's own normal value wins over the rule's emergency value, tightened
    assert table.max_concurrent_per_key("pro", 6, emergency=True, emergency_rule_value=3) == 2
    assert table.max_concurrent_per_key("other", None, emergency=True) is None


@given(
    tier=st.sampled_from(["free", "pro", "internal", "other"]),
    rule=st.one_of(st.none(), st.integers(1, 50)),
    emergency_rule=st.one_of(st.none(), st.integers(1, 50)),
    factor=st.floats(0.01, 1.0),
)
def test_emergency_never_loosens_a_quota_without_an_explicit_value(
    tier: str, rule: int | None, emergency_rule: int | None, factor: float
) -> None:
    table = TierTable(TIERS, "free")
    normal = table.max_concurrent_per_key(tier, rule)
    tight = table.max_concurrent_per_key(
        tier, rule, emergency=True, emergency_rule_value=emergency_rule, emergency_factor=factor
    )
    assert (normal is None) == (tight is None) or tier == "internal" or emergency_rule
    if normal is not None and tight is not None and emergency_rule is None and tier != "internal":
        assert 1 <= tight <= normal


def test_tier_config_validation_and_from_dict() -> None:
    config = GuardConfig.from_dict(
        {"tiers": {"pro": {"rate_limit": "100/second"}, "free": None}, "default_tier": "free"}
    )
    assert [t.name for t in config.tiers] == ["pro", "free"]
    assert config.tiers[0].rate_limit == "100/second"
    listed = GuardConfig.from_dict({"tiers": [{"name": "pro", "max_concurrent_per_key": 3}]})
    assert listed.tiers[0].max_concurrent_per_key == 3
    with pytest.raises(GuardConfigError, match="tier name"):
        TierConfig("Pro Plan")
    with pytest.raises(GuardConfigError, match="invalid rate limit"):
        TierConfig("pro", rate_limit="lots")
    with pytest.raises(GuardConfigError, match="whole number"):
        TierConfig("pro", max_concurrent_per_key=0)
    with pytest.raises(GuardConfigError, match="unique"):
        GuardConfig(tiers=(TierConfig("pro"), TierConfig("pro")))
    with pytest.raises(GuardConfigError, match="quota_lease_s"):
        GuardConfig(quota_lease_s=0)
