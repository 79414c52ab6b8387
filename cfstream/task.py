"""``@cf.task``: a function plus when it runs (delay) and what it merges with (defer)."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from cfstream.arguments import POSITIONAL, Arguments, DeferOption
from cfstream.client import Client, current_client
from cfstream.clock import now_ms
from cfstream.errors import ConfigurationError, SubmitError
from cfstream.execution import Execution
from cfstream.ids import new_execution_id
from cfstream.retries import Retries, retries_option
from cfstream.tracing import submitting
from cfstream.wire import (
    KEY_SEPARATOR,
    MAX_DELAY_MS,
    NO_MODES,
    CallRecords,
    Collect,
    Modes,
    ModesError,
)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_registry: dict[str, Task[Any, Any]] = {}


Keep = Literal["last", "first"]
IfRunning = Literal["concurrent", "after"]


def to_ms(value: dt.timedelta | float | int | None, what: str) -> int | None:
    """A delay given as a timedelta or as seconds, in whole milliseconds."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"{what} must be a datetime.timedelta or a number of seconds, got {value!r}"
        )
    if math.isnan(seconds) or seconds < 0 or seconds * 1000 > MAX_DELAY_MS:
        raise ConfigurationError(
            f"{what} must be between 0 and 10 years, got {value!r}"
        )
    return round(seconds * 1000)


@dataclass(frozen=True)
class Task(Generic[P, R]):
    """A registered task. Call it to run and wait; :meth:`submit` to get an Execution at once
    (``await task.submit(...)`` waits for the result in a coroutine)."""

    fn: Callable[P, R]
    name: str
    delay_ms: int = 0
    defer: DeferOption = None
    max_wait_ms: int | None = None
    retries: Retries | None = None
    modes: Modes = NO_MODES

    def __post_init__(self) -> None:
        if KEY_SEPARATOR in self.name:
            raise ConfigurationError(f"task name {self.name!r} must not contain {KEY_SEPARATOR!r}")
        self.modes.check(deferred=bool(self.defer), delay_ms=self.delay_ms)
        if self.modes.collect is not None:
            params = list(self.signature.parameters.values())
            if len(params) != 1 or params[0].kind not in POSITIONAL:
                raise ConfigurationError(
                    f"{self.name}: a collect task takes one positional parameter, the list of "
                    f"each call's argument (def {self.fn.__name__}(items: list[...])), got "
                    f"{self.signature}")
        if self.max_wait_ms is not None:
            if not self.defer:
                raise ConfigurationError("max_wait only applies with defer; set defer=True too")
            if self.max_wait_ms <= self.delay_ms:
                raise ConfigurationError(
                    f"max_wait ({self.max_wait_ms / 1000:g} s) must be greater than delay "
                    f"({self.delay_ms / 1000:g} s): it caps how long a stream of calls can "
                    "postpone one run"
                )
        self.arguments.check()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Submit and wait for the result."""
        result: R = self.submit(*args, **kwargs).result()
        return result

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        """Publish a call and return its Execution without waiting (nor blocking an event
        loop)."""
        return self.submit_to(current_client(), *args, **kwargs)

    def submit_to(self, client: Client, /, *args: P.args, **kwargs: P.kwargs) -> Execution:
        """:meth:`submit` through ``client`` rather than the process's client."""
        collect = self.modes.collect
        if collect is not None and (len(args) != 1 or kwargs):
            raise TypeError(f"{self.name}: a collect task is submitted one argument at a time")
        args_json, kwargs_json, defer_key = self.arguments.encode(args, kwargs)
        if collect is not None:
            try:
                collect.check_item(json.loads(args_json), None)
            except ModesError as exc:
                raise SubmitError(f"{self.name}: {exc}") from None
        now = now_ms()
        call_id = new_execution_id(now)
        span = submitting(self.name, call_id, defer_key, client.settings)
        if span is None:
            key, value = self.records.record(call_id, args_json, kwargs_json, now, defer_key)
            client.send(self.name, key, value)
        else:
            with span:
                key, value = self.records.record(call_id, args_json, kwargs_json, now,
                                                 defer_key, span.traceparent)
                client.send(self.name, key, value)
        return Execution(call_id, task=self.name, client=client)

    def with_delay(self, delay: dt.timedelta | float | int) -> Task[P, R]:
        return replace(self, delay_ms=to_ms(delay, "delay") or 0)

    def with_defer(self, defer: DeferOption) -> Task[P, R]:
        return replace(self, defer=None if defer is False else defer)

    @cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    @cached_property
    def is_async(self) -> bool:
        """Whether ``fn`` is a coroutine function: a worker runs it on its event loop."""
        return inspect.iscoroutinefunction(self.fn)

    @cached_property
    def arguments(self) -> Arguments:
        """How this task's calls' arguments are bound, written and keyed."""
        return Arguments(self.name, self.signature, self.defer)

    @cached_property
    def records(self) -> CallRecords:
        """Writes this task's calls-topic records."""
        return CallRecords(self.name, self.delay_ms, self.max_wait_ms, self.modes)


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *, delay: dt.timedelta | float | int = 0, defer: DeferOption = False,
    max_wait: dt.timedelta | float | int | None = None, name: str | None = None,
    leading: bool = False, keep: Keep = "last", collect: Literal[False] = False,
    retries: int | Retries | None = None, if_running: IfRunning = "concurrent",
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
@overload
def task(
    *, delay: dt.timedelta | float | int = 0, defer: DeferOption = False,
    max_wait: dt.timedelta | float | int | None = None, name: str | None = None,
    leading: bool = False, keep: Keep = "last", collect: Literal[True] | Collect,
    retries: int | Retries | None = None, if_running: Literal["concurrent"] = "concurrent",
) -> Callable[[Callable[[list[T]], R]], Task[[T], R]]: ...


def task(
    fn: Callable[..., Any] | None = None, /, *, delay: dt.timedelta | float | int = 0,
    defer: DeferOption = False, max_wait: dt.timedelta | float | int | None = None,
    name: str | None = None, leading: bool = False, keep: Keep = "last",
    collect: bool | Collect = False, retries: int | Retries | None = None,
    if_running: IfRunning = "concurrent",
) -> Any:
    """Register a task: ``@cf.task`` or ``@cf.task(delay=60, defer=True, max_wait=600,
    retries=cf.Retries(limit=5, delay_min=10, delay_max=300))``.

    ``leading=True`` runs a quiet key's first call at once (then debounces the rest into one
    trailing run); ``keep="first"`` runs a window's first call, each newer one pushing it back;
    ``collect=True`` (or ``cf.Collect(...)``) runs the window once with every call's argument:
    the function takes one ``list`` and is submitted one item at a time.
    ``if_running="after"`` holds a key's calls while its execution runs: they collapse into one
    run after it ends, so a key never runs twice at once (the default, ``"concurrent"``, lets a
    call whose quiet period ended run beside it).
    """
    delay_ms = to_ms(delay, "delay") or 0
    max_wait_ms = to_ms(max_wait, "max_wait")
    retry = retries_option(retries)
    modes = Modes.checked(leading, keep, collect, if_running,  # before func comes
                          deferred=bool(defer), delay_ms=delay_ms)

    def register(func: Callable[P, R]) -> Task[P, R]:
        if not callable(func):
            raise ConfigurationError(f"@cf.task decorates a function, got {func!r}")
        task_name = name or f"{func.__module__}:{func.__qualname__}"
        new = Task(fn=func, name=task_name, delay_ms=delay_ms,
                   defer=None if defer is False else defer, max_wait_ms=max_wait_ms,
                   retries=retry, modes=modes)
        _registry[task_name] = new
        return new

    return register(fn) if fn is not None else register


def registered(name: str) -> Task[Any, Any] | None:
    """The task registered under ``name`` in this process, if any."""
    return _registry.get(name)


def registry() -> dict[str, Task[Any, Any]]:
    return dict(_registry)
