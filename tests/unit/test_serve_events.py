"""The serve event hub: ids, ring buffer replay, reset, slow clients, persistence."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from crisisctl.server.events import EventHub, format_id, parse_event_id


@given(st.integers(0, 10**18), st.integers(0, 10**18))
def test_an_event_id_parses_back_to_its_epoch_and_seq(epoch: int, seq: int) -> None:
    assert parse_event_id(format_id(epoch, seq)) == (epoch, seq)
    assert parse_event_id(f" {format_id(epoch, seq)}\t") == (epoch, seq)


@given(st.text(max_size=40))
def test_any_other_text_is_not_an_event_id(text: str) -> None:
    parsed = parse_event_id(text)
    if parsed is not None:  # only digits-dash-digits (with blanks around) parse
        left, _, right = text.strip().partition("-")
        assert left.isdigit() and right.isdigit() and left.isascii() and right.isascii()
        assert parsed == (int(left), int(right))


def _hub(size: int = 5, queue: int = 100) -> EventHub:
    return EventHub(size, queue, epoch=7)


def test_a_resuming_client_gets_every_event_after_its_id_in_order() -> None:
    hub = _hub()
    ids = [hub.publish("fleet", {"n": n}).id for n in range(4)]
    reset, events = hub.since(ids[1])
    assert not reset
    assert [e.id for e in events] == ids[2:]
    assert [e.as_dict()["data"] for e in events] == [{"n": 2}, {"n": 3}]
    assert hub.since(ids[-1]) == (False, [])


def test_a_client_without_an_id_gets_no_backlog() -> None:
    hub = _hub()
    hub.publish("fleet", {})
    assert hub.since(None) == (False, [])
    assert hub.since("") == (False, [])


def test_an_id_older_than_the_buffer_another_epoch_or_the_future_gets_a_reset() -> None:
    hub = _hub(size=3)
    ids = [hub.publish("alert", {"n": n}).id for n in range(6)]  # buffer holds seq 4..6
    assert hub.since(ids[2])[0] is False  # seq 3: exactly the one before the oldest
    assert hub.since(ids[1]) == (True, [])
    assert hub.since("8-3") == (True, [])
    assert hub.since("7-99") == (True, [])
    assert hub.since("garbage") == (True, [])
    reset = hub.reset_event()
    assert reset.type == "reset" and reset.id == ids[-1]
    assert reset.wire == f"id: {ids[-1]}\nevent: reset\ndata: {{}}\n\n".encode()


def test_an_event_is_encoded_once_and_shared_by_every_subscriber() -> None:
    hub = _hub()
    subs = [hub.subscribe() for _ in range(3)]
    event = hub.publish("timeline", {"incident_id": 1, "entry": {"text": "a\nb"}})
    assert event.wire.count(b"\n") == 4  # id, event, data (newline escaped), blank line
    chunks = [sub.take() for sub in subs]
    assert all(chunk is event.wire or chunk == event.wire for chunk in chunks)
    assert all(sub.ready.is_set() for sub in subs)


def test_a_slow_subscriber_is_dropped_without_holding_the_others() -> None:
    hub = _hub(queue=2)
    slow, fast = hub.subscribe(), hub.subscribe()
    for n in range(3):
        hub.publish("fleet", {"n": n})
        fast.take()
    assert slow.dropped and slow.closed
    assert slow not in hub.subscribers and fast in hub.subscribers
    assert hub.dropped == 1 and not fast.closed


def test_close_ends_every_stream_and_later_subscribers_start_closed() -> None:
    hub = _hub()
    sub = hub.subscribe()
    hub.close()
    assert sub.closed and sub.ready.is_set() and not hub.subscribers
    assert hub.subscribe().closed


def test_a_clean_save_restores_the_same_epoch_and_history(tmp_path: Path) -> None:
    hub = _hub()
    ids = [hub.publish("fleet", {"n": n}).id for n in range(7)]
    hub.save(tmp_path / "events.json", clean=True)
    again = EventHub(5, 100)
    assert again.load(tmp_path / "events.json") == 5
    assert again.epoch == 7 and again.last_id == ids[-1]
    assert [e.id for e in again.since(ids[3])[1]] == ids[4:]
    assert again.publish("fleet", {}).id == format_id(7, 8)


def test_an_unclean_save_starts_a_new_epoch(tmp_path: Path) -> None:
    hub = _hub()
    last = hub.publish("fleet", {}).id
    hub.save(tmp_path / "events.json", clean=False)
    again = EventHub(5, 100)
    assert again.load(tmp_path / "events.json") == 0
    assert again.epoch != 7
    assert again.since(last)[0] is True


def test_a_missing_or_unreadable_history_starts_fresh(tmp_path: Path) -> None:
    assert EventHub().load(tmp_path / "none.json") == 0
    (tmp_path / "bad.json").write_text("{not json")
    assert EventHub().load(tmp_path / "bad.json") == 0


def test_the_buffer_keeps_its_byte_budget_and_an_event_is_held_once() -> None:
    hub = EventHub(100, 100, max_bytes=3000, epoch=7)
    ids = [hub.publish("fleet", {"pad": "x" * 900}).id for _ in range(10)]
    assert len(hub.buffer) == 3 and hub.buffered_bytes <= 3000
    assert hub.buffered_bytes == sum(len(e.wire) for e in hub.buffer)
    assert hub.since(ids[-4])[0] is False and hub.since(ids[-5])[0] is True
    event = hub.buffer[-1]
    assert event.as_dict() == {"id": ids[-1], "type": "fleet", "data": {"pad": "x" * 900}}
    huge = hub.publish("fleet", {"pad": "y" * 5000})
    assert list(hub.buffer) == [huge]  # the newest event stays, whatever its size


def test_a_subscriber_is_dropped_when_its_queued_bytes_exceed_its_budget() -> None:
    hub = EventHub(100, 100, client_bytes=2500, epoch=7)
    sub = hub.subscribe()
    hub.publish("fleet", {"pad": "x" * 1000})
    hub.publish("fleet", {"pad": "x" * 1000})
    assert not sub.dropped and sub.queued_bytes > 2000
    sub.take()
    assert sub.queued_bytes == 0
    for _ in range(3):
        hub.publish("fleet", {"pad": "x" * 1000})
    assert sub.dropped and sub not in hub.subscribers


async def test_a_running_server_marks_its_history_unclean_until_it_stops(tmp_path: Path) -> None:
    from crisisctl.server.runtime import ServeRuntime
    from crisisctl.server.settings import ServeConfig, ServeSettings

    config = ServeConfig.model_validate(
        {"state_dir": str(tmp_path), "db": f"sqlite:///{tmp_path / 'i.db'}"}
    )
    first = ServeRuntime(ServeSettings.build(config))
    await first.start()
    last = first.hub.publish("fleet", {}).id
    await first.stop()
    second = ServeRuntime(ServeSettings.build(config))
    await second.start()
    assert second.hub.since(last) == (False, [])  # a clean stop: same history
    second.hub.publish("fleet", {})
    third = ServeRuntime(ServeSettings.build(config))  # the second "crashed": no stop
    await third.start()
    assert third.hub.epoch != second.hub.epoch and third.hub.since(last)[0] is True
    await third.stop()
    await second.stop()
