"""The upload gate: admits up to a bound, refuses past it at once, frees on exit; and
the slots of streamed uploads, the same way."""

from __future__ import annotations

import contextlib
import sys
import threading

import pytest

from imageblur.admission import StreamSlots, UploadGate
from imageblur.domain import Overloaded
from support import wait_until

BUDGET = 16_000_000


def test_uploads_past_the_bound_are_refused_at_once_until_one_leaves() -> None:
    gate = UploadGate(max_checking=1, max_in_hand=2, pixel_budget=BUDGET)
    with contextlib.ExitStack() as held:
        held.enter_context(gate.admit())
        held.enter_context(gate.admit())
        with pytest.raises(Overloaded), gate.admit():
            pass
    with gate.admit():  # both left: room again
        pass


def test_a_refused_or_failed_upload_does_not_keep_its_place() -> None:
    gate = UploadGate(max_checking=1, max_in_hand=1, pixel_budget=BUDGET)
    with pytest.raises(ValueError), gate.admit():
        raise ValueError("a bad upload")
    with gate.admit():
        pass


def test_decodes_wait_for_a_slot() -> None:
    gate = UploadGate(max_checking=1, max_in_hand=4, pixel_budget=BUDGET)
    order: list[str] = []

    def second() -> None:
        with gate.checking():
            order.append("second")

    with gate.checking():
        thread = threading.Thread(target=second)
        thread.start()
        wait_until(lambda: blocked_on_a_lock(thread), what="the second to wait for the slot")
        assert order == []  # waits while the slot is taken
        order.append("first")
    thread.join(timeout=30)
    assert order == ["first", "second"]


def test_decodes_share_the_pixel_budget_and_one_alone_always_runs() -> None:
    gate = UploadGate(max_checking=4, max_in_hand=16, pixel_budget=BUDGET)
    started = threading.Event()

    def large() -> None:
        with gate.checking(), gate.decoding(12_000_000):
            started.set()

    with gate.checking(), gate.decoding(50_000_000):  # over the budget, alone: runs
        thread = threading.Thread(target=large)
        thread.start()
        # 12 MP more does not fit beside it: waits, holding its decode slot.
        wait_until(lambda: gate.budget.waiting == 1, what="the large decode to wait for room")
        assert not started.is_set()
    assert started.wait(30)
    thread.join(timeout=30)
    with gate.checking(), gate.decoding(8_000_000), gate.decoding(8_000_000):
        pass  # what fits runs together


def blocked_on_a_lock(thread: threading.Thread) -> bool:
    """The thread waits in a `threading` primitive (the gate's semaphore): seen in its
    stack, not guessed from how long it has not finished."""
    assert thread.ident is not None
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "acquire" and frame.f_code.co_filename == threading.__file__:
            return True
        frame = frame.f_back
    return False


def test_streamed_uploads_past_their_bound_are_refused_and_slots_come_back() -> None:
    slots = StreamSlots(2)
    with contextlib.ExitStack() as held:
        held.enter_context(slots.admit())
        with pytest.raises(ValueError), slots.admit():  # a failed one gives its slot back
            raise ValueError("client gone")
        held.enter_context(slots.admit())
        assert slots.in_flight == 2
        with pytest.raises(Overloaded, match="2 large uploads"), slots.admit():
            pass
    assert slots.in_flight == 0
    with pytest.raises(ValueError):
        StreamSlots(0)
