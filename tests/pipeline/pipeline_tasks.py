"""Tasks the pipeline tests submit; workers import this module as ``pipeline_tasks``."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import cfstream as cf

D = 1.5  # the delay most tests use, in seconds
D_MS = int(D * 1000)


@cf.task(delay=dt.timedelta(seconds=D))
def after_timedelta(tag: str) -> str:
    return tag


@cf.task(delay=D)
def after_seconds(tag: str) -> str:
    return tag


@cf.task(delay=D, defer=True)
def notify(user_id: str, document_id: int) -> str:
    return f"{user_id}:{document_id}"


@cf.task(delay=D, defer=lambda u, d, _: f"#{u}:#{d}")
def notify_update(user_id: str, document_id: int, update: str) -> str:
    return f"{user_id}:{document_id}:{update}"


@cf.task(delay=D, defer=cf.Defer(params=["tag"]))
def explode(tag: str, attempt: int) -> None:
    raise ValueError(f"boom {tag} attempt {attempt}")


@cf.task(defer=cf.Defer(params=["key"]))
def latest(key: str, n: int) -> int:
    return n


@cf.task
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@cf.task
async def async_echo(value: dict) -> dict:
    await asyncio.sleep(0.01)
    return value


@cf.task
async def async_mixed(n: int) -> int:
    """Fails for multiples of 7, returns without waiting for multiples of 5, else sleeps."""
    if n % 7 == 0:
        raise ValueError(f"no {n}")
    if n % 5:
        await asyncio.sleep(0.002)
    return n


@cf.task
def whoami() -> str | None:
    execution = cf.current_execution()
    return execution.id if execution else None


@cf.task
def recorded(seconds: float) -> float:
    """Notes each run in $RUN_LOG (one line per run), then sleeps."""
    import os

    execution = cf.current_execution()
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(f"{execution.id if execution else None}\n")
    time.sleep(seconds)
    return seconds


@cf.task(retries=cf.Retries(limit=3, delay_min=0.5, delay_max=1.0))
def flaky(tag: str, failures: int) -> int:
    """Fails its first ``failures`` attempts; returns the attempt that succeeded."""
    current = cf.current_execution()
    attempt = current.attempt if current is not None else 1
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} of {tag} failed")
    return attempt


@cf.task(retries=cf.Retries(limit=2, on=(ConnectionError,)))
def picky(kind: str) -> None:
    """Retries on ConnectionError only."""
    raise (ConnectionError if kind == "connection" else ValueError)(kind)


@cf.task(retries=1)
def outlives_a_crash(seconds: float) -> int:
    """Its first attempt sleeps ``seconds`` (long enough to kill the worker under it)."""
    current = cf.current_execution()
    attempt = current.attempt if current is not None else 1
    if attempt == 1:
        time.sleep(seconds)
    return attempt


@cf.task(defer=cf.Defer(params=["key"]), retries=cf.Retries(limit=1, delay_min=5))
def settles(key: str, value: str) -> str:
    if value == "bad":
        raise ConnectionError("bad value")
    return value


@cf.task(delay=D, defer=cf.Defer(params=["key"]), leading=True)
def leading_edge(key: str, n: int) -> int:
    return n


@cf.task(delay=D, defer=cf.Defer(params=["key"]), keep="first")
def keep_first(key: str, n: int) -> int:
    return n


@cf.task(delay=D, defer=lambda item: item["key"], collect=True)
def collected(items: list[dict]) -> list[int]:
    return [item["n"] for item in items]


@cf.task(delay=D, defer=lambda item: item["key"], collect=True,
         retries=cf.Retries(limit=1, delay_min=1.0))
def collected_flaky(items: list[dict]) -> list[int]:
    """Its first attempt fails: the retry must get the same list."""
    current = cf.current_execution()
    if current is not None and current.attempt == 1:
        raise ConnectionError(f"first attempt of {len(items)} items")
    return [item["n"] for item in items]


@cf.task(delay=60, defer=lambda item: item["key"], collect=cf.Collect(max_calls=3))
def collected_in_threes(items: list[dict]) -> list[int]:
    return [item["n"] for item in items]


@cf.task(delay=D, defer=cf.Defer(params=["key"]), if_running="after")
def one_at_a_time(key: str, n: int, seconds: float) -> int:
    """Sleeps ``seconds``; a key's calls wait while it runs."""
    time.sleep(seconds)
    return n


@cf.task(delay=D, defer=cf.Defer(params=["key"]))
def side_by_side(key: str, n: int, seconds: float) -> int:
    """The same with the default (if_running="concurrent")."""
    time.sleep(seconds)
    return n
