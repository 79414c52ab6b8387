"""Waiting on many executions at once, shaped like :mod:`concurrent.futures`:
``cf.wait(executions, timeout=..., return_when=...)`` and ``cf.as_completed(executions)``.

Each execution is followed along its deferral chain by the process's one events reader, with no
thread per execution; outcomes already read are known at once. (In coroutines,
``asyncio.gather(*executions)`` and ``asyncio.as_completed(executions)`` do the same.)
"""

from __future__ import annotations

import queue
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from typing import NamedTuple

from cfstream.errors import CfStreamError
from cfstream.execution import Execution, Follower

__all__ = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "DoneAndNotDone",
           "as_completed", "wait"]

RETURN_WHEN = (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION)


class DoneAndNotDone(NamedTuple):
    done: set[Execution]
    not_done: set[Execution]


def wait(executions: Iterable[Execution], timeout: float | None = None,
         return_when: str = ALL_COMPLETED) -> DoneAndNotDone:
    """Wait until the executions finish (``ALL_COMPLETED``), one finishes
    (``FIRST_COMPLETED``), one fails or is cancelled or rejected (``FIRST_EXCEPTION``), or
    ``timeout`` seconds pass. Returns the sets of those finished and those not; each finished
    one's :meth:`~Execution.result` then answers at once."""
    if return_when not in RETURN_WHEN:
        raise ValueError(f"return_when must be one of {', '.join(RETURN_WHEN)}, "
                         f"not {return_when!r}")
    pending = set(executions)
    done: set[Execution] = set()
    completions = _completions(pending, _deadline(timeout), timeout)
    try:
        for execution in completions:
            done.add(execution)
            if return_when == FIRST_COMPLETED or (
                    return_when == FIRST_EXCEPTION and _raised(execution)):
                break
    except TimeoutError:
        pass
    finally:
        completions.close()  # lets go of the waits still open
    # As concurrent.futures: those finished already are done, whichever came first.
    done |= {e for e in pending - done if e.done()}
    return DoneAndNotDone(done, pending - done)


def as_completed(executions: Iterable[Execution],
                 timeout: float | None = None) -> Iterator[Execution]:
    """The executions (each once) as they finish, those already finished first. Raises
    TimeoutError if some have not finished ``timeout`` seconds after the call."""
    return _completions(set(executions), _deadline(timeout), timeout)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _completions(executions: set[Execution], deadline: float | None,
                 timeout: float | None) -> Generator[Execution, None, None]:
    finished: queue.SimpleQueue[Execution] = queue.SimpleQueue()
    followers = []
    try:
        for execution in executions:
            follower = Follower(execution, finished.put)
            followers.append(follower)
            follower.start()
        for count in range(len(followers)):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                execution = finished.get(timeout=left)
            except queue.Empty:
                raise TimeoutError(f"{len(followers) - count} (of {len(followers)}) executions "
                                   f"did not finish within {timeout} s") from None
            if not execution.done():  # its wait ended with no outcome: the client was closed
                raise CfStreamError("the client was closed; create a new one to wait")
            yield execution
    finally:
        for follower in followers:
            follower.stop()


def _raised(execution: Execution) -> bool:
    return execution.exception(timeout=0) is not None
