"""``cf.wait`` and ``cf.as_completed`` (cfstream.futures) on the real broker, with outcomes that
arrive while they wait: what returns when, through deferral chains, and that they let go."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from events_harness import Append, eventually, ids_in, in_thread

import cfstream as cf
from cfstream.ids import new_execution_id
from cfstream.settings import Settings

pytestmark = pytest.mark.kafka


@pytest.fixture
def client(events_settings: Settings) -> Iterator[cf.Client]:
    client = cf.Client(events_settings)
    yield client
    client.close()


def handles(client: cf.Client, count: int) -> list[cf.Execution]:
    return [cf.Execution(new_execution_id(), client=client) for _ in range(count)]


def later(seconds: float, call: object) -> threading.Timer:
    timer = threading.Timer(seconds, call)  # type: ignore[arg-type]
    timer.start()
    return timer


def test_first_completed_returns_at_the_first_outcome_and_lets_go_of_the_rest(
        client: cf.Client, append: Append) -> None:
    a, b, c = handles(client, 3)
    later(0.3, lambda: append("succeeded", b.id, result="b"))
    began = time.monotonic()
    done, not_done = cf.wait([a, b, c], timeout=30, return_when=cf.FIRST_COMPLETED)
    assert done == {b} and not_done == {a, c}
    assert 0.3 <= time.monotonic() - began < 5
    assert b.done() and b.result(timeout=0) == "b"
    assert not a.done()
    eventually(lambda: sum(client.waiters().waiting().values()) == 0)


def test_first_exception_returns_at_a_failure_with_what_finished_before(
        client: cf.Client, append: Append) -> None:
    # On one partition, so that they are read in the order they were written.
    ok, bad, open_ = (cf.Execution(i, client=client) for i in ids_in(1, 3))

    def finish() -> None:
        append("succeeded", ok.id, result=1)
        time.sleep(0.2)
        append("failed", bad.id, error={"type": "KeyError", "message": "k", "traceback": ""})

    later(0.1, finish)
    done, not_done = cf.wait([ok, bad, open_], timeout=30, return_when=cf.FIRST_EXCEPTION)
    assert done == {ok, bad} and not_done == {open_}
    error = bad.exception(timeout=0)
    assert isinstance(error, cf.ExecutionFailed) and error.error_type == "KeyError"
    assert ok.exception(timeout=0) is None


def test_all_completed_with_a_timeout_returns_what_finished(client: cf.Client,
                                                           append: Append) -> None:
    finished, unfinished = handles(client, 2)
    append("succeeded", finished.id, result=None)
    assert finished.result(timeout=30) is None  # the reader is warm: the timeout is the wait's
    began = time.monotonic()
    done, not_done = cf.wait([finished, unfinished, finished], timeout=0.5)
    assert done == {finished} and not_done == {unfinished}
    assert 0.5 <= time.monotonic() - began < 3


def test_a_deferred_call_is_done_when_its_successor_finishes(client: cf.Client,
                                                             append: Append) -> None:
    head, middle, last = (new_execution_id() for _ in range(3))
    append("deferred", head, successor=middle, reason="replaced")
    execution = cf.Execution(head, client=client)
    thread, box = in_thread(lambda: cf.wait([execution], timeout=30))
    time.sleep(0.3)
    assert thread.is_alive()  # deferred is not done
    append("deferred", middle, successor=last, reason="replaced")
    append("succeeded", last, result="latest")
    thread.join(30)
    done, _ = box[0]  # type: ignore[misc]
    assert done == {execution} and execution.result(timeout=0) == "latest"


def test_as_completed_yields_in_the_order_they_finish(client: cf.Client,
                                                      append: Append) -> None:
    early, late, known = handles(client, 3)
    append("succeeded", known.id, result=0)
    assert known.result(timeout=30) == 0  # read: as_completed yields it before it waits

    def finish() -> None:
        append("succeeded", early.id, result=1)
        time.sleep(0.3)
        append("cancelled", late.id, reason="by test")

    later(0.1, finish)
    order = [e.id for e in cf.as_completed([late, early, known, late], timeout=30)]
    assert order == [known.id, early.id, late.id]
    with pytest.raises(cf.ExecutionCancelled):
        late.result(timeout=0)


def test_as_completed_raises_timeout_for_those_left(client: cf.Client, append: Append) -> None:
    done_one, never = handles(client, 2)
    append("succeeded", done_one.id, result=1)
    assert done_one.result(timeout=30) == 1
    seen = []
    with pytest.raises(TimeoutError, match="1 \\(of 2\\) executions"):
        for execution in cf.as_completed([done_one, never], timeout=0.5):
            seen.append(execution)
    assert seen == [done_one]
    eventually(lambda: sum(client.waiters().waiting().values()) == 0)


def test_first_completed_counts_every_one_already_finished(client: cf.Client,
                                                          append: Append) -> None:
    """As concurrent.futures: done holds all that finished, not only the first seen."""
    first, second, open_ = handles(client, 3)
    for execution in (first, second):
        append("succeeded", execution.id, result=execution.id)
        assert execution.result(timeout=30) == execution.id
    done, not_done = cf.wait([open_, first, second], timeout=30,
                             return_when=cf.FIRST_COMPLETED)
    assert done == {first, second} and not_done == {open_}


def test_return_when_must_be_one_of_the_three(client: cf.Client) -> None:
    with pytest.raises(ValueError, match="FIRST_COMPLETED"):
        cf.wait(handles(client, 1), return_when="ANY")


def test_closing_the_client_ends_a_wait_on_many(events_settings: Settings) -> None:
    client = cf.Client(events_settings)
    executions = handles(client, 2)
    errors: list[Exception] = []

    def wait() -> None:
        try:
            cf.wait(executions)  # no timeout
        except cf.CfStreamError as error:
            errors.append(error)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    eventually(lambda: sum(client.waiters().waiting().values()) == 2)
    client.close()
    thread.join(10)
    assert not thread.is_alive() and "closed" in str(errors[0])  # not a wait forever
