"""A task's call arguments as its records take them: bound to its signature, written as JSON
text, and turned into the call's defer key (``defer=True``, ``cf.Defer(params=[...])`` or a
function)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from cfstream.codec import SCALAR_TEXT, canonical, json_text, to_json_value
from cfstream.errors import ConfigurationError, DeferKeyError

# Keys longer than this are replaced by their SHA-256: record keys stay small and readable ones
# (ids, "user:document") stay as they are for `cfstream pending --key`.
MAX_READABLE_KEY = 128
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class Defer:
    """Defer on the named parameters only: ``cf.Defer(params=["user_id"])``."""

    params: Sequence[str]


DeferOption = bool | Callable[..., str] | Defer | None


@dataclass(frozen=True, slots=True)
class _Positional:
    """A signature of positional parameters only, as submit's fast path needs it: calls with
    ``least`` to ``most`` positional arguments and no keywords bind to those arguments as given."""

    least: int
    most: int
    # JSON text of each parameter's default ("": no default, or not a plain scalar).
    defaults: tuple[str, ...]
    # The defer key from the arguments' texts, as canonical() writes it (sorted names; plain
    # scalars write the same either way): '{{"a":{1},"b":{0}}}'. None: not keyed by parameters.
    key_format: str | None


@dataclass(frozen=True)
class Arguments:
    """One task's arguments: a call's are bound to the task's signature (:meth:`bind`),
    written as JSON text (:meth:`encode`), and give the call's defer key (:meth:`defer_key`)."""

    task: str  # the task's name, for messages
    signature: inspect.Signature
    defer: DeferOption

    def check(self) -> None:
        """Raise ConfigurationError for a defer option this task cannot take."""
        if isinstance(self.defer, Defer):
            known = set(self.signature.parameters)
            unknown = [p for p in self.defer.params if p not in known]
            if unknown or not self.defer.params:
                raise ConfigurationError(
                    f"Defer(params=...) must name parameters of {self.task}: unknown {unknown}, "
                    f"known {sorted(known)}"
                )
        elif not (self.defer is None or isinstance(self.defer, bool) or callable(self.defer)):
            raise ConfigurationError(
                "defer must be True, False, a function returning the key, or cf.Defer(params=[...])"
            )

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
            raise TypeError(f"{self.task}: {exc}") from None
        return bound

    def check_fit(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise TypeError unless a call with these arguments binds to the signature (as a
        worker checks a call before running it)."""
        shape = self._positional
        if shape is not None and not kwargs and shape.least <= len(args) <= shape.most:
            return
        self.signature.bind(*args, **kwargs)

    def encode(self, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> tuple[str, str, str | None]:
        """A call's positional and keyword arguments as JSON text, and its defer key.

        Raises TypeError naming a bad argument, or DeferKeyError."""
        shape = self._positional
        if shape is not None and not kwargs and shape.least <= len(args) <= shape.most:
            try:
                texts = [SCALAR_TEXT[type(value)](value) for value in args]
            except (KeyError, ValueError):
                pass  # not a plain scalar: to_json_value encodes it or names it below
            else:
                args_json = f"[{','.join(texts)}]"
                if shape.key_format is None:
                    if self.defer is None or self.defer is False:
                        return args_json, "{}", None
                    return args_json, "{}", self._key_from_function(args, {})
                if len(texts) < shape.most:
                    texts += shape.defaults[len(texts):]
                if "" not in texts:
                    key = shape.key_format.format(*texts)
                    return args_json, "{}", key if len(key) <= MAX_READABLE_KEY else _hashed(key)
        bound = self.bind(args, kwargs)
        defer_key = self.defer_key(bound)
        names = self.positional_names(len(bound.args))
        return (
            json_text([to_json_value(v, f"{self.task}: argument {name!r}")
                       for name, v in zip(names, bound.args, strict=True)]),
            json_text({k: to_json_value(v, f"{self.task}: argument {k!r}")
                       for k, v in bound.kwargs.items()}),
            defer_key,
        )

    @cached_property
    def _positional(self) -> _Positional | None:
        params = list(self.signature.parameters.values())
        if any(p.kind not in POSITIONAL for p in params):
            return None
        defaults = tuple(_scalar_text(p.default) for p in params)
        key_format = None
        if self.defer is True or isinstance(self.defer, Defer):
            chosen = {p.name for p in params} if self.defer is True else set(self.defer.params)
            fields = [json_text(p.name).replace("{", "{{").replace("}", "}}") + f":{{{i}}}"
                      for i, p in sorted(enumerate(params), key=lambda item: item[1].name)
                      if p.name in chosen]
            key_format = "{{" + ",".join(fields) + "}}"
        return _Positional(
            least=sum(p.default is p.empty for p in params), most=len(params),
            defaults=defaults, key_format=key_format,
        )

    def defer_key(self, bound: inspect.BoundArguments) -> str | None:
        """The user-level defer key for these arguments (None: not deferred)."""
        if self.defer is None or self.defer is False:
            return None
        if self.defer is True or isinstance(self.defer, Defer):
            full = _with_defaults(bound)
            chosen = full if self.defer is True else {p: full[p] for p in self.defer.params}
            key = canonical(to_json_value(chosen, f"{self.task} defer key"))
            return key if len(key) <= MAX_READABLE_KEY else _hashed(key)
        return self._key_from_function(bound.args, bound.kwargs)

    def _key_from_function(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        key_function = cast(Callable[..., Any], self.defer)  # not None, a bool or a Defer
        try:
            key = key_function(*args, **kwargs)
        except Exception as exc:
            raise DeferKeyError(
                f"{self.task}: the defer key function raised {type(exc).__name__}: {exc}; "
                "it must accept the task's arguments and return a string"
            ) from exc
        if not isinstance(key, str):
            raise DeferKeyError(
                f"{self.task}: the defer key function returned {type(key).__name__} "
                f"({key!r}); it must return a string"
            )
        return key


def _hashed(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _scalar_text(value: Any) -> str:
    try:
        return SCALAR_TEXT[type(value)](value)
    except (KeyError, ValueError):
        return ""


def _with_defaults(bound: inspect.BoundArguments) -> dict[str, Any]:
    full = inspect.BoundArguments(bound.signature, bound.arguments.copy())
    full.apply_defaults()
    return dict(full.arguments)
