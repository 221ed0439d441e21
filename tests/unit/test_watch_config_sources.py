"""The watch file's ``intake:`` and ``source:`` sections: safe defaults, clear refusals, and
the PromQL a Prometheus source runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from crisisctl.watch.config import WatchFileError, load_watch_file, parse_watch_text
from crisisctl.watch.promsource import derived_queries


def load(text: str) -> object:
    return parse_watch_text(text, "watch.yaml")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("intake: {bearer: s3cret}\n", "env:NAME"),
        ("intake: {bearer: env:A, basic: {user: u, password: env:B}}\n", "not both"),
        ("intake: {allow_unauthenticated: true, bearer: env:A}\n", "makes no sense"),
        ("intake: {basic: {user: u, password: plain}}\n", "env:NAME"),
        ("intake: {max_body: 10}\n", "greater than or equal"),
        ("source: {prometheus: 'ftp://x'}\n", "http:// or https://"),
        ("source: {prometheus: 'http://p:9090', selector: 'job=\"a\"'}\n", "label matchers"),
        ("source: {prometheus: 'http://p:9090', bearer: tok}\n", "env:NAME"),
        ("source: {prometheus: 'http://p:9090', service_label: 'a-b'}\n", "service_label"),
    ],
)
def test_unsafe_or_malformed_sections_are_refused_with_their_line(text: str, words: str) -> None:
    with pytest.raises(WatchFileError) as caught:
        load(text)
    assert words in str(caught.value)
    assert "watch.yaml:1:" in str(caught.value)


def test_the_intake_is_closed_and_bounded_by_default() -> None:
    config = parse_watch_text("intake: {bearer: env:TOKEN}\n", "watch.yaml")
    assert config.intake is not None
    assert config.intake.allow_unauthenticated is False
    assert (config.intake.max_body, config.intake.max_alerts) == (1024 * 1024, 1000)
    assert config.intake.default_severity == "P2"


def test_a_selector_is_added_to_every_query_and_the_service_label_groups_them() -> None:
    config = parse_watch_text(
        "source: {prometheus: 'http://p:9090/', selector: '{env=\"prod\"}'}\n", "watch.yaml"
    )
    assert config.source is not None and config.source.prometheus == "http://p:9090"
    queries = derived_queries(config.source)
    assert all('env="prod"' in q for q in queries.values())
    assert "sum by (service, job, instance)" in queries["guard_requests_total"]
    assert 'status_class="5xx"' in queries["guard_errors_total"]
    by_job = parse_watch_text(
        "source: {prometheus: 'http://p:9090', service_label: job}\n", "watch.yaml"
    ).source
    assert by_job is not None
    assert "sum by (job, instance, le)" in derived_queries(by_job)["guard_duration_le_total"]


def test_the_alertmanager_example_is_a_valid_watch_file() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_watch_file(root / "examples" / "watch-alertmanager.yaml")
    assert config.intake is not None and config.intake.bearer == "env:AM_INTAKE_TOKEN"
    assert config.source is not None and config.source.service_label == "service"
