"""Alertmanager's webhook payload: what is accepted, how alerts are bounded and keyed, how
each becomes a watch alert; and the intake's credential check."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.severity import Severity
from crisisctl.watch.amwebhook import (
    MAX_LABELS,
    MAX_NAME,
    MAX_VALUE,
    PayloadError,
    parse_payload,
    received_alerts,
    to_alert,
)
from crisisctl.watch.config_sources import IntakeSpec
from crisisctl.watch.intake_auth import IntakeAuth, IntakeConfigError, intake_auth
from crisisctl.watch.model import AlertState, RuleKind

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def am_alert(**over: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "status": "firing",
        "labels": {"alertname": "HighLatency", "job": "api", "severity": "P1"},
        "annotations": {"summary": "p95 over 250 ms"},
        "startsAt": "2026-12-06T09:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x",
        "fingerprint": "a1b2c3d4e5f60718",
    }
    alert.update(over)
    return alert


def payload(*alerts: dict[str, Any], **over: Any) -> bytes:
    doc: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "crisisctl",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts) or [am_alert()],
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_a_version_4_payload_is_read_with_go_nanosecond_times_and_the_zero_end_time() -> None:
    [item] = received_alerts(parse_payload(payload()))
    assert item.starts_at == datetime(2026, 12, 6, 9, 0, 0, 123456, tzinfo=UTC)
    assert item.ends_at is None
    assert item.alertname == "HighLatency"
    assert item.generator_url.startswith("http://127.0.0.1:9090/graph")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (payload(version="3"), 'version is not "4"'),
        (json.dumps({"version": "4"}).encode(), "alerts"),
        (payload(am_alert(status="pending")), "alerts.0.status"),
        (payload(am_alert(startsAt="yesterday")), "alerts.0.startsAt"),
    ],
)
def test_a_bad_body_is_one_sentence_naming_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_payload(body)
    message = str(caught.value)
    assert words in message
    assert message.count("\n") == 0 and message.endswith(".")


def test_the_dedup_key_is_fingerprint_start_and_status_never_the_group_key() -> None:
    first = received_alerts(parse_payload(payload(groupKey="a")))[0]
    other_group = received_alerts(parse_payload(payload(groupKey="b", receiver="peer")))[0]
    resolved = received_alerts(parse_payload(payload(am_alert(status="resolved"))))[0]
    restarted = received_alerts(parse_payload(payload(am_alert(startsAt="2026-12-06T10:00:00Z"))))[
        0
    ]
    assert first.dedup_key == other_group.dedup_key
    assert len({first.dedup_key, resolved.dedup_key, restarted.dedup_key}) == 3


def test_the_same_instant_in_another_offset_is_the_same_notification() -> None:
    utc = received_alerts(parse_payload(payload(am_alert(startsAt="2026-12-06T09:00:00Z"))))
    paris = received_alerts(parse_payload(payload(am_alert(startsAt="2026-12-06T10:00:00+01:00"))))
    assert utc[0].dedup_key == paris[0].dedup_key


def test_repeats_inside_one_payload_are_kept_once() -> None:
    assert len(received_alerts(parse_payload(payload(am_alert(), am_alert())))) == 1


label_maps = st.dictionaries(
    st.text(min_size=1, max_size=300), st.text(max_size=2000), max_size=100
)


@given(labels=label_maps, annotations=label_maps)
def test_labels_and_annotations_are_bounded_whatever_the_sender_writes(
    labels: dict[str, str], annotations: dict[str, str]
) -> None:
    body = payload(am_alert(labels=labels, annotations=annotations))
    [item] = received_alerts(parse_payload(body))
    for mapping in (item.labels, item.annotations):
        assert len(mapping) <= MAX_LABELS
        assert all(len(name) <= MAX_NAME for name in mapping)
    assert all(len(value) <= MAX_VALUE for value in item.labels.values())
    alert = to_alert(item, Severity.P2, T0)
    assert alert.kind is RuleKind.ALERTMANAGER
    assert len(alert.summary) <= 300 and len(alert.rule) <= 200
    # the same labels always make the same watch alert (its fingerprint keys watch_alerts)
    again = to_alert(received_alerts(parse_payload(body))[0], Severity.P2, T0)
    assert again.fingerprint == alert.fingerprint


@given(
    fingerprint=st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
    seconds=st.integers(min_value=0, max_value=10**9),
    status=st.sampled_from(["firing", "resolved"]),
)
def test_any_well_formed_alert_is_accepted_and_keyed_by_its_three_parts(
    fingerprint: str, seconds: int, status: str
) -> None:
    start = (datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).isoformat()
    body = payload(am_alert(fingerprint=fingerprint, startsAt=start, status=status))
    [item] = received_alerts(parse_payload(body))
    assert (item.am_fingerprint, item.status) == (fingerprint, status)
    assert len(item.dedup_key) == 64


@pytest.mark.parametrize(
    ("label", "expected"),
    [("P0", Severity.P0), ("p3", Severity.P3), ("critical", Severity.P2), (None, Severity.P2)],
)
def test_severity_comes_from_a_p0_to_p3_label_else_the_default(
    label: str | None, expected: Severity
) -> None:
    labels = {"alertname": "X", "job": "api"}
    if label is not None:
        labels["severity"] = label
    [item] = received_alerts(parse_payload(payload(am_alert(labels=labels))))
    assert to_alert(item, Severity.P2, T0).severity is expected


def test_a_firing_alert_names_its_service_and_keeps_the_generator_url() -> None:
    [item] = received_alerts(parse_payload(payload()))
    alert = to_alert(item, Severity.P2, T0)
    assert (alert.rule, alert.service, alert.state) == ("HighLatency", "api", AlertState.FIRING)
    assert alert.evidence["generator_url"] == "http://127.0.0.1:9090/graph?g0.expr=x"
    assert alert.summary == "p95 over 250 ms"
    labels = dict(alert.labels)
    labels["service"] = "web"
    [item] = received_alerts(parse_payload(payload(am_alert(labels=labels))))
    assert to_alert(item, Severity.P2, T0).service == "web"


def test_a_resolved_alert_is_resolved_at_its_end_time() -> None:
    body = payload(am_alert(status="resolved", endsAt="2026-12-06T09:05:00Z"))
    alert = to_alert(received_alerts(parse_payload(body))[0], Severity.P2, T0)
    assert alert.state is AlertState.RESOLVED
    assert alert.resolved_at == datetime(2026, 12, 6, 9, 5, tzinfo=UTC)


def test_a_truncated_notification_says_so_in_each_alerts_evidence() -> None:
    """Alertmanager's ``max_alerts`` leaves alerts out and says how many in ``truncatedAlerts``
    (they never arrive): the alerts that did arrive carry the count to the timeline."""
    [item] = received_alerts(parse_payload(payload(truncatedAlerts=7)))
    assert to_alert(item, Severity.P2, T0).evidence["truncated_alerts"] == 7
    [whole] = received_alerts(parse_payload(payload()))
    assert "truncated_alerts" not in to_alert(whole, Severity.P2, T0).evidence
    with pytest.raises(PayloadError, match="truncatedAlerts"):
        parse_payload(payload(truncatedAlerts=-1))


# -- credentials -------------------------------------------------------------------------------
def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_bearer_intake_accepts_exactly_its_token() -> None:
    auth = IntakeAuth(bearer="s3cret")
    assert auth.allows("Bearer s3cret")
    assert auth.allows("bearer s3cret")
    for header in (None, "", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"):
        assert not auth.allows(header)


def test_a_basic_intake_needs_both_user_and_password() -> None:
    auth = IntakeAuth(basic=("am", "pw:with:colons"))
    assert auth.allows(basic("am", "pw:with:colons"))
    assert not auth.allows(basic("am", "pw"))
    assert not auth.allows(basic("other", "pw:with:colons"))
    assert not auth.allows("Basic !!!not-base64")
    assert not auth.allows("Bearer pw:with:colons")


def test_the_secret_is_not_in_the_auth_objects_repr() -> None:
    assert "s3cret" not in repr(IntakeAuth(bearer="s3cret"))
    assert "pw" not in repr(IntakeAuth(basic=("am", "pw")))


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_TOKEN", "tok\n")
    auth = intake_auth(IntakeSpec(bearer="env:AM_TOKEN"), "0.0.0.0")
    assert auth.allows("Bearer tok")  # credentials_file content is trimmed, as Alertmanager does


def test_an_intake_without_credential_refuses_to_start_unless_allowed_on_loopback() -> None:
    with pytest.raises(IntakeConfigError, match="has no credential"):
        intake_auth(None, "127.0.0.1")
    allowed = IntakeSpec(allow_unauthenticated=True)
    with pytest.raises(IntakeConfigError, match="loopback"):
        intake_auth(allowed, "0.0.0.0")
    with pytest.raises(IntakeConfigError, match="loopback"):
        intake_auth(allowed, "10.0.0.5")
    for host in ("127.0.0.1", "::1", "localhost"):
        assert intake_auth(allowed, host).allows(None)


def test_a_literal_secret_in_the_watch_file_is_refused() -> None:
    with pytest.raises(ValueError, match="env:NAME"):
        IntakeSpec(bearer="s3cret")
