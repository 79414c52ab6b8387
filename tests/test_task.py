"""``@cf.task`` options: delay, defer keys, max_wait (cfstream.task)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cfstream as cf
from cfstream.codec import json_text, to_json_value
from cfstream.task import registered


def key_of(task: cf.Task[..., Any], *args: Any, **kwargs: Any) -> str | None:
    return task.arguments.defer_key(task.arguments.bind(args, kwargs))


def notify(user_id: int, document_id: int, update: str = "") -> None:
    """A module-level function, so its qualname is plain."""


# -- delay ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("delay", "ms"), [
    (dt.timedelta(minutes=10), 600_000),
    (dt.timedelta(milliseconds=1), 1),
    (60, 60_000),
    (0, 0),
    (0.5, 500),
    (1.25, 1_250),
])
def test_delay_is_given_as_timedelta_or_seconds(delay: Any, ms: int) -> None:
    @cf.task(delay=delay)
    def remind(reminder_id: int) -> None: ...

    assert remind.delay_ms == ms


def test_no_options_means_no_delay_and_no_defer() -> None:
    @cf.task
    def plain(x: int) -> int:
        return x

    assert plain.delay_ms == 0
    assert plain.defer is None
    assert plain.max_wait_ms is None
    assert key_of(plain, 1) is None
    assert plain.fn(3) == 3


@pytest.mark.parametrize("delay", [-1, -0.001, dt.timedelta(seconds=-1), float("nan"),
                                   float("inf"), "60", True, [60]])
def test_bad_delay_raises_at_decoration_time(delay: Any) -> None:
    with pytest.raises(cf.ConfigurationError, match="delay"):
        cf.task(delay=delay)


def test_delay_over_ten_years_is_a_unit_mistake() -> None:
    with pytest.raises(cf.ConfigurationError, match="10 years"):
        cf.task(delay=dt.timedelta(days=3651))


def test_configuration_error_is_a_value_error_and_a_cfstream_error() -> None:
    with pytest.raises(ValueError):
        cf.task(delay=-1)
    with pytest.raises(cf.CfStreamError):
        cf.task(delay=-1)


# -- max_wait -------------------------------------------------------------------------------


def test_max_wait_with_defer() -> None:
    @cf.task(delay=60, defer=True, max_wait=dt.timedelta(minutes=10))
    def batched(x: int) -> None: ...

    assert batched.max_wait_ms == 600_000


@pytest.mark.parametrize("max_wait", [60, 30, 0])
def test_max_wait_not_above_delay_raises(max_wait: int) -> None:
    with pytest.raises(cf.ConfigurationError, match="must be greater than delay"):
        @cf.task(delay=60, defer=True, max_wait=max_wait)
        def f(x: int) -> None: ...


@pytest.mark.parametrize("defer", [False, None])
def test_max_wait_without_defer_raises(defer: Any) -> None:
    with pytest.raises(cf.ConfigurationError, match="defer"):
        @cf.task(delay=60, defer=defer, max_wait=600)
        def f(x: int) -> None: ...


def test_bad_max_wait_value_raises() -> None:
    with pytest.raises(cf.ConfigurationError, match="max_wait"):
        cf.task(delay=1, defer=True, max_wait=-5)


# -- deferring modes ------------------------------------------------------------------------


def test_modes_are_kept_and_written_on_the_call() -> None:
    @cf.task(delay=5, defer=True, leading=True, keep="first")
    def f(x: int) -> None: ...

    assert (f.modes.leading, f.modes.keep) == (True, "first")
    key, value = f.records.record("id", "[1]", "{}", 7, "k")
    assert b'"v":2,' in value and value.endswith(b',"leading":true,"keep":"first"}')
    plain = f.with_defer(True)
    assert plain.modes.keep == "first" and plain.with_delay(2).modes.leading


@pytest.mark.parametrize(("options", "match"), [
    ({"delay": 5, "defer": True, "leading": 1}, "leading must be True or False"),
    ({"delay": 5, "defer": True, "leading": "yes"}, "leading must be True or False"),
    ({"delay": 5, "defer": True, "keep": "latest"}, "keep must be 'last' or 'first'"),
    ({"delay": 5, "defer": True, "keep": None}, "keep must be 'last' or 'first'"),
    ({"delay": 5, "leading": True}, "set defer on the task"),
    ({"delay": 5, "defer": False, "keep": "first"}, "set defer on the task"),
    ({"defer": True, "leading": True}, "needs a delay"),
    ({"delay": 0, "defer": True, "leading": True}, "needs a delay"),
    ({"defer": True, "if_running": "wait"}, "if_running must be 'concurrent' or 'after'"),
    ({"delay": 5, "if_running": "after"}, "set defer on the task"),
    ({"defer": True, "collect": True, "if_running": "after"}, "does not take collect"),
])
def test_bad_modes_raise_at_decoration(options: dict[str, Any], match: str) -> None:
    with pytest.raises(cf.ConfigurationError, match=match):
        cf.task(**options)


def test_if_running_after_is_kept_and_written_on_the_call() -> None:
    @cf.task(delay=5, defer=True, if_running="after")
    def f(x: int) -> None: ...

    assert f.modes.if_running == "after" and f.with_delay(1).modes.if_running == "after"
    _, value = f.records.record("id", "[1]", "{}", 7, "k")
    assert b'"v":2,' in value and value.endswith(b',"if_running":"after"}')
    _, plain = cf.task(delay=5, defer=True)(f.fn).records.record("id", "[1]", "{}", 7, "k")
    assert b'"v":1,' in plain and b'"if_running":' not in plain


def test_a_copy_that_drops_what_a_mode_needs_raises() -> None:
    @cf.task(delay=5, defer=True, leading=True)
    def f(x: int) -> None: ...

    with pytest.raises(cf.ConfigurationError, match="needs a delay"):
        f.with_delay(0)
    with pytest.raises(cf.ConfigurationError, match="set defer on the task"):
        f.with_defer(False)


def test_a_collect_task_takes_the_list_and_is_submitted_one_item_at_a_time() -> None:
    @cf.task(delay=5, defer=True, collect=cf.Collect(max_calls=3, max_bytes=20))
    def digest(items: list[int]) -> int:
        return sum(items)

    assert digest.modes.collect == cf.Collect(max_calls=3, max_bytes=20)
    key, value = digest.records.record("id", "[7]", "{}", 1, "k")
    assert value.endswith(b',"collect":{"max_calls":3,"max_bytes":20}}') and b'"v":2' in value
    assert cf.task(delay=5, defer=True, collect=True)(digest.fn).modes.collect == cf.Collect()
    with pytest.raises(TypeError, match="one argument at a time"):
        digest.submit_to(cf.Client(cf.Settings()), 1, 2)  # type: ignore[call-arg]
    with pytest.raises(cf.SubmitError, match="exceeds its collect.max_bytes of 20"):
        digest.submit_to(cf.Client(cf.Settings()), "x" * 30)  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "match"), [
    ({"collect": True}, "set defer on the task"),
    ({"defer": True, "collect": True, "keep": "first"}, "keep='first' does not apply"),
    ({"defer": True, "collect": 1}, "collect must be True, False or cf.Collect"),
])
def test_bad_collect_options_raise_at_decoration(options: dict[str, Any], match: str) -> None:
    with pytest.raises(cf.ConfigurationError, match=match):
        cf.task(**options)


@pytest.mark.parametrize(("bounds", "match"), [
    ({"max_calls": 0}, "max_calls"), ({"max_calls": 10_001}, "max_calls"),
    ({"max_bytes": 200_001}, "max_bytes"), ({"max_bytes": 1.5}, "max_bytes"),
    ({"max_calls": True}, "max_calls"),
])
def test_bad_collect_bounds_raise(bounds: dict[str, Any], match: str) -> None:
    with pytest.raises(cf.ConfigurationError, match=match):
        cf.Collect(**bounds)


def test_a_collect_task_must_take_one_list_parameter() -> None:
    with pytest.raises(cf.ConfigurationError, match="one positional parameter"):
        @cf.task(defer=True, collect=True)
        def two(a: list[int], b: int) -> None: ...
    with pytest.raises(cf.ConfigurationError, match="one positional parameter"):
        @cf.task(defer=True, collect=True)
        def keyword_only(*, items: list[int]) -> None: ...


@pytest.mark.parametrize(("options", "match"), [
    ({"delay": 5, "leading": True}, "a defer_key on a call"),
    ({"collect": True}, "a defer_key on a call"),
    ({"defer_key": "k", "collect": True, "kwargs": {"a": 1}}, "exactly one argument"),
    ({"defer_key": "k", "collect": cf.Collect(max_bytes=2), "args": ["long"]},
     "exceeds its collect.max_bytes of 2"),
    ({"keep": "first"}, "a defer_key on a call"),
    ({"defer_key": "k", "leading": True}, "needs a delay"),
    ({"defer_key": "k", "keep": "middle"}, "keep must be"),
    ({"if_running": "after"}, "a defer_key on a call"),
    ({"defer_key": "k", "if_running": True}, "if_running must be"),
])
def test_submit_by_name_checks_the_modes(options: dict[str, Any], match: str) -> None:
    args = options.pop("args", [1])
    with pytest.raises(cf.SubmitError, match=match):
        cf.submit("app.tasks:f", args, **options)


# -- names ----------------------------------------------------------------------------------


def test_default_name_is_module_and_qualname() -> None:
    task = cf.task(delay=1)(notify)
    assert task.name == f"{__name__}:notify"
    assert registered(task.name) is task


def test_nested_function_name_uses_its_qualname() -> None:
    @cf.task
    def inner() -> None: ...

    assert inner.name == (
        f"{__name__}:test_nested_function_name_uses_its_qualname.<locals>.inner"
    )


def test_explicit_name() -> None:
    task = cf.task(name="billing.charge")(notify)
    assert task.name == "billing.charge"
    assert registered("billing.charge") is task


def test_name_with_key_separator_raises() -> None:
    with pytest.raises(cf.ConfigurationError, match=r"\|"):
        cf.task(name="a|b")(notify)


def test_decorating_a_non_function_raises() -> None:
    with pytest.raises(cf.ConfigurationError, match="decorates a function"):
        cf.task(delay=1)(42)  # type: ignore[arg-type]


# -- defer=True -----------------------------------------------------------------------------


def test_defer_true_keys_are_equal_however_the_arguments_are_passed() -> None:
    task = cf.task(delay=60, defer=True)(notify)
    keys = {
        key_of(task, 1, 2),
        key_of(task, 1, 2, ""),
        key_of(task, 1, document_id=2),
        key_of(task, user_id=1, document_id=2),
        key_of(task, document_id=2, user_id=1),
        key_of(task, 1, 2, update=""),
    }
    assert len(keys) == 1
    assert None not in keys


def test_defer_true_keys_differ_for_different_arguments() -> None:
    task = cf.task(delay=60, defer=True)(notify)
    keys = [key_of(task, 1, 2), key_of(task, 1, 3), key_of(task, 2, 1), key_of(task, 1, 2, "u"),
            key_of(task, "1", 2)]
    assert len(set(keys)) == len(keys)


def test_defer_true_key_encodes_special_values() -> None:
    @cf.task(defer=True)
    def on(day: dt.date) -> None: ...

    assert key_of(on, dt.date(2026, 1, 1)) == key_of(on, day=dt.date(2026, 1, 1))
    assert key_of(on, dt.date(2026, 1, 1)) != key_of(on, dt.date(2026, 1, 2))


def test_defer_true_with_unencodable_argument_names_the_task() -> None:
    task = cf.task(defer=True)(notify)
    with pytest.raises(TypeError, match="notify defer key"):
        key_of(task, {1}, 2)


def test_long_defer_keys_are_hashed() -> None:
    task = cf.task(defer=True)(notify)
    key = key_of(task, 1, 2, "x" * 500)
    assert key is not None
    assert key.startswith("sha256:")
    assert len(key) == len("sha256:") + 64
    assert key == key_of(task, user_id=1, document_id=2, update="x" * 500)
    assert key != key_of(task, 1, 2, "x" * 499)
    short = key_of(task, 1, 2)
    assert short is not None and not short.startswith("sha256:")


# -- defer key function ---------------------------------------------------------------------


def test_seed_key_function_works_with_positional_and_keyword_calls() -> None:
    @cf.task(delay=60, defer=lambda u, d, _: f"#{u}:#{d}")
    def send_notification(user_id: int, document_id: int, update: str) -> None: ...

    assert key_of(send_notification, 1, 2, "first") == "#1:#2"
    assert key_of(send_notification, user_id=1, document_id=2, update="second") == "#1:#2"
    assert key_of(send_notification, 1, document_id=2, update="third") == "#1:#2"
    assert key_of(send_notification, 1, 3, "x") == "#1:#3"


def test_key_function_that_raises() -> None:
    def broken(u: int, d: int, _: str) -> str:
        raise KeyError("nope")

    task = cf.task(defer=broken)(notify)
    with pytest.raises(cf.DeferKeyError, match="raised KeyError") as info:
        key_of(task, 1, 2, "u")
    assert isinstance(info.value.__cause__, KeyError)
    assert task.name in str(info.value)


def test_key_function_with_the_wrong_arity_raises_defer_key_error() -> None:
    task = cf.task(defer=lambda u: str(u))(notify)
    with pytest.raises(cf.DeferKeyError, match="raised TypeError"):
        key_of(task, 1, 2, "u")


@pytest.mark.parametrize("returned", [1, None, b"k", ("a",)])
def test_key_function_returning_a_non_string(returned: Any) -> None:
    task = cf.task(defer=lambda *args: returned)(notify)
    with pytest.raises(cf.DeferKeyError, match="must return a string"):
        key_of(task, 1, 2, "u")


def test_defer_key_error_is_a_submit_error() -> None:
    assert issubclass(cf.DeferKeyError, cf.SubmitError)
    assert issubclass(cf.DeferKeyError, cf.CfStreamError)


# -- cf.Defer(params=...) -------------------------------------------------------------------


def test_defer_params_uses_only_those_parameters() -> None:
    task = cf.task(delay=60, defer=cf.Defer(params=["user_id", "document_id"]))(notify)

    assert key_of(task, 1, 2, "a") == key_of(task, 1, 2, "b")
    assert key_of(task, 1, 2, "a") == key_of(task, update="c", document_id=2, user_id=1)
    assert key_of(task, 1, 2) != key_of(task, 1, 3)
    assert key_of(task, 1, 2) != key_of(task, 2, 2)


def test_defer_params_may_name_a_parameter_left_to_its_default() -> None:
    task = cf.task(defer=cf.Defer(params=["update"]))(notify)
    assert key_of(task, 1, 2) == key_of(task, 9, 9, "")
    assert key_of(task, 1, 2) != key_of(task, 1, 2, "x")


@pytest.mark.parametrize("params", [["user"], ["user_id", "nope"], []])
def test_defer_params_must_name_parameters(params: list[str]) -> None:
    with pytest.raises(cf.ConfigurationError, match="must name parameters"):
        cf.task(defer=cf.Defer(params=params))(notify)


@pytest.mark.parametrize("defer", [1, "user_id", ["user_id"]])
def test_unknown_defer_option_raises(defer: Any) -> None:
    with pytest.raises(cf.ConfigurationError, match="defer must be"):
        cf.task(defer=defer)(notify)


# -- copies ---------------------------------------------------------------------------------


def test_with_delay_returns_a_configured_copy() -> None:
    task = cf.task(delay=60, defer=True)(notify)
    quick = task.with_delay(dt.timedelta(seconds=5))

    assert quick.delay_ms == 5_000
    assert quick.defer is True
    assert quick.name == task.name
    assert task.delay_ms == 60_000
    with pytest.raises(cf.ConfigurationError):
        task.with_delay(-1)


def test_with_defer_returns_a_configured_copy() -> None:
    task = cf.task(delay=60)(notify)
    deferred = task.with_defer(True)

    assert deferred.defer is True
    assert key_of(deferred, 1, 2) is not None
    assert task.defer is None
    assert key_of(task, 1, 2) is None
    assert deferred.with_defer(False).defer is None
    assert deferred.defer is True


def test_with_delay_rechecks_max_wait() -> None:
    task = cf.task(delay=60, defer=True, max_wait=120)(notify)
    with pytest.raises(cf.ConfigurationError, match="must be greater than delay"):
        task.with_delay(120)
    with pytest.raises(cf.ConfigurationError, match="defer"):
        task.with_defer(False)


# -- bind -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "kwargs"), [
    ((1,), {}),
    ((1, 2, "u", 4), {}),
    ((1, 2), {"colour": "red"}),
    ((1, 2), {"user_id": 1}),
])
def test_bind_with_wrong_arguments_names_the_task(args: tuple[Any, ...],
                                                  kwargs: dict[str, Any]) -> None:
    task = cf.task(name="app:notify_user")(notify)
    with pytest.raises(TypeError, match=r"^app:notify_user: "):
        task.arguments.bind(args, kwargs)


def test_positional_names_for_error_messages() -> None:
    task = cf.task(notify)
    assert task.arguments.positional_names(2) == ["user_id", "document_id"]
    assert task.arguments.positional_names(5) == ["user_id", "document_id", "update", "*3", "*4"]


# -- Arguments.encode ------------------------------------------------------------------------


def general_encoding(task: cf.Task[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> tuple[str, str, str | None]:
    """What Arguments.encode returns, the long way: bind, defer_key, to_json_value, JSON text."""
    bound = task.arguments.bind(args, kwargs)
    key = task.arguments.defer_key(bound)
    return (json_text([to_json_value(v) for v in bound.args]),
            json_text({k: to_json_value(v) for k, v in bound.kwargs.items()}), key)


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (TypeError, ValueError, cf.DeferKeyError) as exc:
        return type(exc)


def scored(user_id: Any, score: Any = 1.5, label: Any = "x", flag: Any = None) -> None:
    """Defaults of every scalar type; parameter names not in alphabetical order."""


def with_date(when: Any, at: Any = dt.date(2026, 1, 1)) -> None:
    """A default that is no plain scalar."""


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(),
                    st.dates(), st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
ENCODED_TASKS = [
    cf.Task(fn=scored, name="t:scored"),
    cf.Task(fn=scored, name="t:scored", defer=True),
    cf.Task(fn=scored, name="t:scored", defer=cf.Defer(params=["label", "user_id", "label"])),
    cf.Task(fn=scored, name="t:scored", defer=lambda *a: repr(a)),
    cf.Task(fn=scored, name="t:scored", defer=lambda *a: a),  # not a string: DeferKeyError
    cf.Task(fn=with_date, name="t:with_date", defer=True),
    cf.Task(fn=notify, name="t:notify", defer=True),
]


@settings(max_examples=300)
@given(st.sampled_from(ENCODED_TASKS), st.lists(SCALARS, max_size=5),
       st.dictionaries(st.sampled_from(["score", "label", "at", "colour"]), SCALARS, max_size=2))
def test_encoding_writes_what_the_general_encoding_writes(
        task: cf.Task[..., Any], args: list[Any], kwargs: dict[str, Any]) -> None:
    assert outcome(task.arguments.encode, tuple(args), kwargs) == \
        outcome(general_encoding, task, tuple(args), kwargs)


def test_encoding_names_a_bad_argument() -> None:
    task = cf.Task(fn=scored, name="t:scored")
    with pytest.raises(TypeError, match=r"^t:scored: argument 'score': nan has no JSON"):
        task.arguments.encode((1, float("nan")), {})
    with pytest.raises(TypeError, match=r"^t:scored: argument 'flag': set cannot be sent"):
        task.arguments.encode((1, 2, "x", {1}), {})
    keyed = cf.Task(fn=scored, name="t:scored", defer=True)
    with pytest.raises(TypeError, match=r"^t:scored defer key\['user_id'\]: object cannot"):
        keyed.arguments.encode((object(),), {})


# -- retries ----------------------------------------------------------------------------------


def test_retries_options_and_their_backoff() -> None:
    @cf.task(retries=2)
    def twice() -> None: ...

    assert twice.retries == cf.Retries(limit=2)
    assert [twice.retries.delay_ms(n) for n in (1, 2)] == [0, 0]
    growing = cf.Retries(limit=5, delay_min=300, delay_max=dt.timedelta(minutes=10))
    assert [growing.delay_ms(n) for n in range(1, 6)] == [300_000, 375_000, 450_000, 525_000,
                                                          600_000]
    assert [growing.allows(n) for n in (5, 6)] == [True, False]
    forever = cf.Retries(limit=None, delay_min=1, delay_max=10)
    assert [forever.delay_ms(n) for n in (1, 2, 3, 4, 5, 100)] == [1_000, 2_000, 4_000, 8_000,
                                                                   10_000, 10_000]
    assert forever.allows(10**6)
    assert cf.Retries(limit=1, delay_min=2, delay_max=9).delay_ms(1) == 2_000
    picky = cf.Retries(on=ConnectionError)
    assert picky.on == (ConnectionError,)
    assert picky.retries_on(ConnectionResetError()) and not picky.retries_on(ValueError())
    assert picky.retries_on(None)  # a lost worker always retries


@pytest.mark.parametrize("bad", [-1, True, "3", 2.5, cf.Retries])
def test_bad_retries_fail_at_decoration(bad: object) -> None:
    with pytest.raises(cf.ConfigurationError, match="retries"):
        cf.task(retries=bad)(lambda: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [
    {"limit": -1}, {"limit": 1.5}, {"delay_min": -1}, {"delay_min": float("nan")},
    {"delay_min": 10, "delay_max": 5}, {"on": (ValueError, "x")}, {"on": ()}, {"on": int},
])
def test_bad_retries_options_say_what_is_wrong(options: dict[str, object]) -> None:
    with pytest.raises(cf.ConfigurationError, match="Retries"):
        cf.Retries(**options)  # type: ignore[arg-type]


def test_no_retries_means_none() -> None:
    for value in (None, 0, cf.Retries(limit=0)):
        assert cf.task(retries=value)(lambda: None).retries is None


def test_a_collect_task_takes_retries() -> None:
    @cf.task(defer=True, collect=True, retries=2)
    def digest(items: list[int]) -> None: ...

    assert digest.retries == cf.Retries(limit=2) and digest.modes.collect == cf.Collect()
