import threading
import time

import pytest

from smartcloset.stream.slot import NewestSlot, SlotClosed
from smartcloset.stream.transport import BoundedInbox


def test_newest_frame_wins_and_drops_are_counted():
    slot: NewestSlot[int] = NewestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert slot.put(3) == 2
    assert slot.get(0) == 3
    assert (slot.put_count, slot.dropped) == (3, 2)
    assert slot.get(0.01) is None


def test_get_waits_for_a_producer():
    slot: NewestSlot[str] = NewestSlot()
    threading.Timer(0.05, slot.put, args=("frame",)).start()
    assert slot.get(2.0) == "frame"


def test_close_wakes_waiters_and_refuses_puts():
    slot: NewestSlot[int] = NewestSlot()
    result = []

    def consumer():
        try:
            slot.get()
        except SlotClosed:
            result.append("closed")

    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.05)
    slot.close()
    t.join(2)
    assert result == ["closed"]
    with pytest.raises(SlotClosed):
        slot.put(1)


def test_slots_sharing_a_condition_wake_one_consumer():
    cond = threading.Condition()
    a, b = NewestSlot(cond), NewestSlot(cond)
    got = []

    def consumer():
        with cond:
            cond.wait_for(lambda: a.peek() is not None or b.peek() is not None, 2)
        got.append((a.take(), b.take()))

    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.02)
    b.put("x")
    t.join(2)
    assert got == [(None, "x")]


def test_memory_stays_at_one_item_under_a_fast_producer():
    slot: NewestSlot[bytes] = NewestSlot()
    for _ in range(10_000):
        slot.put(bytes(10))
    assert slot.dropped == 9_999 and slot.take() is not None and slot.take() is None


def test_bounded_inbox_keeps_the_newest_frames_and_every_control_message():
    inbox = BoundedInbox(3, [b"1", b"2"], text_limit=4)
    for i in range(3, 10):
        inbox.append(str(i).encode())
        inbox.append(f"text{i}")
    assert [x for x in inbox if isinstance(x, bytes)] == [b"7", b"8", b"9"] and inbox.dropped == 6
    assert [x for x in inbox if isinstance(x, str)] == ["text6", "text7", "text8", "text9"] and inbox.dropped_text == 3
    assert inbox.pop(0) == "text6" and len(inbox) == 6


def test_bounded_inbox_appends_and_pops_from_two_threads():
    """The socket's reader thread appends while the session pops: nothing raises, nothing is lost."""
    inbox = BoundedInbox(4)
    n = 50_000
    errors: list[BaseException] = []
    taken = 0

    def reader():
        try:
            for i in range(n):
                inbox.append(i.to_bytes(4, "little"))
        except BaseException as exc:  # noqa: BLE001 - the failure is what is asserted
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    while t.is_alive() or inbox:
        try:
            inbox.pop(0)
            taken += 1
        except IndexError:
            pass
    t.join()
    assert not errors and taken + inbox.dropped == n


def test_in_order_drops_a_reply_that_comes_back_after_a_newer_one():
    from smartcloset.stream.slot import InOrder

    gate = InOrder(window_ms=2000.0)
    assert gate.admit(1000.0) and gate.admit(1033.0)
    assert not gate.admit(1010.0)  # a batch that finished after a newer frame's batch
    assert gate.admit(1033.0)  # the same time again is not "older"
    assert gate.admit(1066.0) and gate.late == 1
    # A wall-clock step back of seconds is not a reordering: it passes and resets the order.
    assert gate.admit(-5000.0) and gate.admit(-4967.0) and not gate.admit(-4990.0)
    assert gate.late == 2


def test_waiting_since_the_slot_filled_not_since_the_newest_item():
    slot = NewestSlot()
    slot.put(1)
    filled = slot.since
    time.sleep(0.01)
    slot.put(2)  # replaces 1: still waiting since the first put
    assert slot.since == filled and slot.take() == 2
    time.sleep(0.01)
    slot.put(3)  # empty before: a new wait begins
    assert slot.since > filled
