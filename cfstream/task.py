"""``@cf.task``: a function plus when it runs (delay) and what it merges with (defer)."""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from cfstream.codec import canonical, to_json_value
from cfstream.errors import ConfigurationError, DeferKeyError
from cfstream.wire import KEY_SEPARATOR, MAX_DELAY_MS

if TYPE_CHECKING:
    from cfstream.execution import Execution

P = ParamSpec("P")
R = TypeVar("R")

# Keys longer than this are replaced by their SHA-256: record keys stay small and readable ones
# (ids, "user:document") stay as they are for `cfstream pending --key`.
MAX_READABLE_KEY = 128

_registry: dict[str, Task[Any, Any]] = {}


@dataclass(frozen=True, slots=True)
class Defer:
    """Defer on the named parameters only: ``cf.Defer(params=["user_id"])``."""

    params: Sequence[str]


DeferOption = bool | Callable[..., str] | Defer | None


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
    """A registered task. Call it to run and wait; :meth:`submit` to get an Execution at once."""

    fn: Callable[P, R]
    name: str
    delay_ms: int = 0
    defer: DeferOption = None
    max_wait_ms: int | None = None

    def __post_init__(self) -> None:
        if KEY_SEPARATOR in self.name:
            raise ConfigurationError(f"task name {self.name!r} must not contain {KEY_SEPARATOR!r}")
        if self.max_wait_ms is not None:
            if not self.defer:
                raise ConfigurationError("max_wait only applies with defer; set defer=True too")
            if self.max_wait_ms <= self.delay_ms:
                raise ConfigurationError(
                    f"max_wait ({self.max_wait_ms / 1000:g} s) must be greater than delay "
                    f"({self.delay_ms / 1000:g} s): it caps how long a stream of calls can "
                    "postpone one run"
                )
        if isinstance(self.defer, Defer):
            known = set(self.signature.parameters)
            unknown = [p for p in self.defer.params if p not in known]
            if unknown or not self.defer.params:
                raise ConfigurationError(
                    f"Defer(params=...) must name parameters of {self.name}: unknown {unknown}, "
                    f"known {sorted(known)}"
                )
        elif not (self.defer is None or isinstance(self.defer, bool) or callable(self.defer)):
            raise ConfigurationError(
                "defer must be True, False, a function returning the key, or cf.Defer(params=[...])"
            )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Submit and wait for the result."""
        result: R = self.submit(*args, **kwargs).result()
        return result

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        """Publish a call and return its Execution without waiting."""
        from cfstream.client import current_client

        return current_client().submit_task(self, args, kwargs)

    def with_delay(self, delay: dt.timedelta | float | int) -> Task[P, R]:
        return replace(self, delay_ms=to_ms(delay, "delay") or 0)

    def with_defer(self, defer: DeferOption) -> Task[P, R]:
        return replace(self, defer=None if defer is False else defer)

    @cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def positional_names(self, count: int) -> list[str]:
        """Names for the first ``count`` positional arguments, for error messages."""
        names = []
        for param in self.signature.parameters.values():
            if param.kind is param.VAR_POSITIONAL:
                break
            names.append(param.name)
        names += [f"*{len(names) + i}" for i in range(max(0, count - len(names)))]
        return names[:count]

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None
        return bound

    def defer_key(self, bound: inspect.BoundArguments) -> str | None:
        """The user-level defer key for these arguments (None: not deferred)."""
        if self.defer is None or self.defer is False:
            return None
        if self.defer is True or isinstance(self.defer, Defer):
            full = _with_defaults(bound)
            chosen = full if self.defer is True else {p: full[p] for p in self.defer.params}
            text = canonical(to_json_value(chosen, f"{self.name} defer key"))
            if len(text) > MAX_READABLE_KEY:
                return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
            return text
        try:
            key = self.defer(*bound.args, **bound.kwargs)
        except Exception as exc:
            raise DeferKeyError(
                f"{self.name}: the defer key function raised {type(exc).__name__}: {exc}; "
                "it must accept the task's arguments and return a string"
            ) from exc
        if not isinstance(key, str):
            raise DeferKeyError(
                f"{self.name}: the defer key function returned {type(key).__name__} "
                f"({key!r}); it must return a string"
            )
        return key


def _with_defaults(bound: inspect.BoundArguments) -> dict[str, Any]:
    full = inspect.BoundArguments(bound.signature, bound.arguments.copy())
    full.apply_defaults()
    return dict(full.arguments)


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *, delay: dt.timedelta | float | int = 0, defer: DeferOption = False,
    max_wait: dt.timedelta | float | int | None = None, name: str | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[..., Any] | None = None, /, *, delay: dt.timedelta | float | int = 0,
    defer: DeferOption = False, max_wait: dt.timedelta | float | int | None = None,
    name: str | None = None,
) -> Any:
    """Register a task: ``@cf.task`` or ``@cf.task(delay=60, defer=True, max_wait=600)``."""
    delay_ms = to_ms(delay, "delay") or 0
    max_wait_ms = to_ms(max_wait, "max_wait")

    def register(func: Callable[P, R]) -> Task[P, R]:
        if not callable(func):
            raise ConfigurationError(f"@cf.task decorates a function, got {func!r}")
        task_name = name or f"{func.__module__}:{func.__qualname__}"
        new = Task(fn=func, name=task_name, delay_ms=delay_ms,
                   defer=None if defer is False else defer, max_wait_ms=max_wait_ms)
        _registry[task_name] = new
        return new

    return register(fn) if fn is not None else register


def registered(name: str) -> Task[Any, Any] | None:
    """The task registered under ``name`` in this process, if any."""
    return _registry.get(name)


def registry() -> dict[str, Task[Any, Any]]:
    return dict(_registry)
