"""Thousands of hypothesis-made records on the calls topic of a real processor and worker.

Garbage bytes, broken and non-object JSON, calls with missing, mistyped or out-of-range fields,
unknown versions, clock skew, oversize records, wrong keys, deep nesting, huge numbers, lone
surrogates, malformed tagged arguments, stray tick/cancel records, replays, and valid calls of
registered (and unregistered) tasks, produced with a plain confluent-kafka producer.

What must hold:
- the processor and the worker stay up the whole time, and afterwards run a fresh call;
- every invalid record is on ``<prefix>.dead-letter`` (``cfstream-source`` header = the
  record's topic:partition:offset) with an ``invalid`` event naming the same place, and nothing
  else is dead-lettered;
- every valid call ends ``succeeded``, ``failed``, ``deferred`` or (a far-off one, cancelled at
  the end by the test) ``cancelled``, and runs at most once; tick/cancel records naming no
  pending call change nothing.

Whether a record is valid is decided here, independently of cfstream.wire: JSON (RFC 8259,
UTF-8) read with the calls-topic JSON Schema (cfstream/schemas/call.json), plus what that schema
documents beside it (7-day clock skew, the record key, the size limit). Where JSON or the
schema's prose leave latitude (a BOM, UTF-16, NaN literals, 1.7e12 for submitted_ms, a lone
surrogate in a control record), either outcome passes, as long as it is a whole one:
dead-lettered with its event, or processed like a call.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pipeline_tasks
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from cfstream.ids import new_execution_id
from cfstream.wire import KEY_SEPARATOR, MAX_CLOCK_SKEW_MS, MAX_DELAY_MS

pytestmark = pytest.mark.kafka

MAX_BYTES = 10_000  # the replica's CFSTREAM_MAX_PAYLOAD_BYTES: oversize records stay cheap
BATCH = 100  # records per hypothesis example: its choice buffer holds a few hundred at most
EXAMPLES = 24  # the first is hypothesis' simplest batch; the rest are random
SECOND, HOUR, DAY = 1000, 3_600_000, 86_400_000
FAR_MS = 20 * SECOND  # valid calls due later than this are cancelled by the test at the end
SETTLE_TIMEOUT = 240.0
STALL = 45.0  # seconds without a new event or dead letter: stuck, stop waiting
MAX_DEPTH = 800  # JSON nested deeper is beyond what the processor can read
FINAL = ("succeeded", "failed", "deferred", "cancelled")
TASKS = [pipeline_tasks.latest.name, pipeline_tasks.notify.name, pipeline_tasks.explode.name,
         pipeline_tasks.async_echo.name, pipeline_tasks.after_seconds.name,
         "fuzz.nowhere:task"]

INVALID, CALL, CONTROL, EITHER, REPLAY = "invalid", "call", "control", "either", "replay"


# -- records ----------------------------------------------------------------------------------


@dataclass
class Context:
    """What a batch is built against: the clock, and valid calls seen so far (for replays and
    for control records aimed at real keys)."""

    now: int
    call_keys: list[bytes] = field(default_factory=list)
    call_records: list[tuple[bytes | None, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Raw:
    """A JSON literal written as is (json.dumps cannot write these)."""

    text: str


@dataclass(frozen=True)
class Rel:
    """A time relative to the build's clock: ms (int), a float of the ms, or seconds."""

    offset: int
    form: str = "ms"

    def resolve(self, now: int) -> Any:
        ms = now + self.offset
        return {"ms": ms, "float": float(ms), "seconds": ms // 1000, "text": str(ms)}[self.form]


def resolve(value: Any, now: int, raws: list[str]) -> Any:
    if isinstance(value, Rel):
        return value.resolve(now)
    if isinstance(value, Raw):
        raws.append(value.text)
        return f"__fuzz_raw_{len(raws) - 1}__"
    if isinstance(value, list):
        return [resolve(v, now, raws) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, now, raws) for k, v in value.items()}
    return value


def encode(data: Any, now: int, ascii_only: bool) -> bytes:
    raws: list[str] = []
    text = json.dumps(resolve(data, now, raws), ensure_ascii=ascii_only)
    for i, raw in enumerate(raws):
        text = text.replace(f'"__fuzz_raw_{i}__"', raw)
    # surrogatepass: a lone surrogate in non-ASCII mode becomes bytes that are not UTF-8.
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Bytes:
    label: str
    key: bytes | None
    value: bytes | None

    def build(self, ctx: Context) -> tuple[bytes | None, bytes | None]:
        return self.key, self.value


@dataclass(frozen=True)
class JsonRecord:
    label: str
    key: bytes | None
    data: Any
    ascii_only: bool = True

    def build(self, ctx: Context) -> tuple[bytes | None, bytes | None]:
        return self.key, encode(self.data, ctx.now, self.ascii_only)


@dataclass(frozen=True)
class CallRecord:
    """A valid call, then mutations (field -> value, or ``DELETE``), keyed as ``key_mode``
    says, padded to ``size`` bytes with a field the processor ignores, in an ``encoding``."""

    label: str
    task: str
    args: Any
    submitted: int
    delay: int | None
    defer_key: str | None
    max_wait: int | None
    mutations: tuple[tuple[str, Any], ...] = ()
    key_mode: str = "right"
    size: int | None = None
    encoding: str = "ascii"

    def build(self, ctx: Context) -> tuple[bytes | None, bytes | None]:
        data: dict[str, Any] = {"v": 1, "id": new_execution_id(), "task": self.task,
                                "args": self.args, "kwargs": {},
                                "submitted_ms": Rel(self.submitted)}
        for name, value in (("delay_ms", self.delay), ("defer_key", self.defer_key),
                            ("max_wait_ms", self.max_wait)):
            if value is not None:
                data[name] = value
        for name, value in self.mutations:
            if value is DELETE:
                data.pop(name, None)
            elif name == "id" and isinstance(value, str) and value and "\ud800" not in value:
                data[name] = f"{value}-{uuid.uuid4().hex}"  # ids stay unique
            else:
                data[name] = value
        key = self._key(data)
        value = encode(data, ctx.now, self.encoding != "raw")
        if self.size is not None and len(value) < self.size:
            data["pad"] = ""
            base = len(encode(data, ctx.now, self.encoding != "raw"))
            data["pad"] = "x" * max(0, self.size - base)
            value = encode(data, ctx.now, self.encoding != "raw")
        if self.encoding == "bom":
            value = b"\xef\xbb\xbf" + value
        elif self.encoding == "utf-16":
            value = value.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
        return key, value

    def _key(self, data: dict[str, Any]) -> bytes | None:
        if self.key_mode == "none":
            return None
        task, call_id, defer_key = data.get("task"), data.get("id"), data.get("defer_key")
        if isinstance(defer_key, str) and isinstance(task, str):
            right = f"{task}{KEY_SEPARATOR}{defer_key}"
        elif isinstance(call_id, str):
            right = call_id
        else:
            right = "no-key"
        raw = right.encode("utf-8", "surrogatepass")
        return raw + b"~" if self.key_mode == "wrong" else raw


@dataclass(frozen=True)
class ControlRecord:
    """A tick or cancel with an id no pending call has, keyed at random or like a real call."""

    label: str
    kind: str
    call_id: str
    target: int | None  # index into the valid calls' keys; None: ``key``
    key: bytes | None
    extra: tuple[tuple[str, Any], ...] = ()

    def build(self, ctx: Context) -> tuple[bytes | None, bytes | None]:
        key = self.key
        if self.target is not None and ctx.call_keys:
            key = ctx.call_keys[self.target % len(ctx.call_keys)]
        data = {"v": 1, "kind": self.kind, "id": self.call_id, **dict(self.extra)}
        return key, encode(data, ctx.now, True)


@dataclass(frozen=True)
class Replay:
    """The exact bytes of an earlier valid call, again."""

    label: str
    target: int

    def build(self, ctx: Context) -> tuple[bytes | None, bytes | None]:
        if not ctx.call_records:
            return b"k", b"\x00replay with nothing to replay"
        return ctx.call_records[self.target % len(ctx.call_records)]


DELETE = object()

# -- strategies -------------------------------------------------------------------------------

texts = st.text(max_size=12)
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=8)
keys = st.none() | st.binary(max_size=40) | texts.map(str.encode)
huge_literal = st.integers(4301, 6000).map(lambda n: Raw("9" * n))
deep = st.integers(1500, 4500).map(lambda d: Raw("[" * d + "]" * d))
surrogate = st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800"])
nasty = st.one_of(
    scalars, json_values, huge_literal, deep, surrogate,
    st.floats(),  # NaN, infinities
    st.sampled_from([-1, 0, 1, MAX_DELAY_MS, MAX_DELAY_MS + 1, 2**63, 10**30, 10**400,
                     True, False, "", "1", 1.5, -0.0, 1e308]),
)
tagged_garbage = st.sampled_from([{"$uuid": 5}, {"$decimal": "abc"}, {"$dict": [1]},
                                  {"$datetime": 3}, {"$date": "2026-13-45"},
                                  {"$bytes": "***"}, {"$uuid": "nope"}])
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "v": st.sampled_from([0, 2, -1, "1", True, 1.0, None, [1]]),
    "kind": st.sampled_from(["call", "tick", "cancel", "execution", "", "CALL", None, 1]),
    "id": st.sampled_from(["", None, 7, ["x"], "fuzz-id", "\ud800"]),
    "task": st.sampled_from(["", None, "a|b", "|", 3, "pipeline_tasks:latest", "\ud800x"]),
    "args": st.one_of(st.sampled_from([None, {}, "[]", 5, True]),
                      st.lists(tagged_garbage, min_size=1, max_size=2), st.lists(json_values)),
    "kwargs": st.sampled_from([None, [], "{}", 5, {"key": "k", "n": 1}, {"": 1}]),
    "submitted_ms": st.one_of(
        st.sampled_from([None, "", True, 0, -1, 2**63, 10**400, 1.5]),
        st.builds(Rel, st.integers(MAX_CLOCK_SKEW_MS + HOUR, 200 * 365 * DAY)),
        st.builds(Rel, st.integers(-200 * 365 * DAY, -MAX_CLOCK_SKEW_MS - HOUR)),
        st.builds(Rel, st.integers(-2 * SECOND, 0), st.sampled_from(["float", "seconds",
                                                                     "text"]))),
    "delay_ms": st.one_of(st.sampled_from([-1, MAX_DELAY_MS + 1, 10**400, True, "5", 1.5,
                                           float("nan"), float("inf"), [], None]),
                          st.integers(max_value=-1), st.integers(min_value=MAX_DELAY_MS + 1)),
    "max_wait_ms": st.sampled_from([-5, 10**400, float("nan"), True, "9", 2.5, None, 500]),
    "defer_key": st.sampled_from([None, "", 5, ["k"], {"k": 1}, True, "\udcff"]),
}
mutation = st.one_of(
    st.tuples(st.sampled_from(sorted(FIELD_VALUES)), st.just(DELETE)),
    st.sampled_from(sorted(FIELD_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), FIELD_VALUES[name] | nasty)),
    st.tuples(texts, nasty),  # fields the processor ignores
)
good_args = {
    pipeline_tasks.latest.name: st.tuples(texts, st.integers(0, 100)).map(list),
    pipeline_tasks.notify.name: st.tuples(texts, st.integers(0, 100)).map(list),
    pipeline_tasks.explode.name: st.tuples(texts, st.integers(0, 3)).map(list),
    pipeline_tasks.async_echo.name: st.tuples(
        st.dictionaries(texts, scalars, max_size=3)).map(list),
    pipeline_tasks.after_seconds.name: st.tuples(texts).map(list),
    "fuzz.nowhere:task": st.lists(scalars, max_size=2),
}


@st.composite
def calls(draw: st.DrawFn, label: str = "call") -> CallRecord:
    task = draw(st.sampled_from(TASKS))
    args = draw(st.one_of(good_args[task], good_args[task], st.lists(json_values, max_size=3)))
    defer_key = draw(st.none() | st.sampled_from(["a", "b", "", "key"]) | texts)
    far = draw(st.integers(0, 19)) == 0  # one in twenty is due in hours or days
    if far:
        submitted = draw(st.integers(0, MAX_CLOCK_SKEW_MS - DAY))
        delay = draw(st.integers(0, 30 * DAY))
    else:
        submitted = draw(st.integers(-6 * DAY, 500) if draw(st.integers(0, 9)) == 0
                         else st.integers(-2 * SECOND, 500))
        delay = draw(st.none() | st.integers(0, 2500))
    max_wait = draw(st.none() | st.integers(0, 4000)) if defer_key is not None else None
    return CallRecord(label, task, args, submitted, delay, defer_key, max_wait)


@st.composite
def mutated_calls(draw: st.DrawFn) -> CallRecord:
    base = draw(calls())
    changes = tuple(draw(st.lists(mutation, min_size=1, max_size=3)))
    label = "mutated:" + ",".join(sorted({str(name)[:12] for name, _ in changes}))
    return CallRecord(label, base.task, base.args, base.submitted, base.delay, base.defer_key,
                      base.max_wait, changes)


@st.composite
def odd_calls(draw: st.DrawFn) -> CallRecord:
    """Valid calls in an odd envelope: wrong key, oversize or exactly the limit, other bytes."""
    base = draw(calls())
    how = draw(st.sampled_from(["key-none", "key-wrong", "over", "at-limit", "raw", "bom",
                                "utf-16"]))
    changes: dict[str, Any] = {"label": f"odd:{how}"}
    if how == "key-none":
        changes["key_mode"] = "none"
    elif how == "key-wrong":
        changes["key_mode"] = "wrong"
    elif how == "over":
        changes["size"] = draw(st.sampled_from([MAX_BYTES + 1, MAX_BYTES + 2])
                               | st.integers(MAX_BYTES + 1, 3 * MAX_BYTES))
    elif how == "at-limit":
        changes["size"] = draw(st.sampled_from([MAX_BYTES, MAX_BYTES - 1]))
    else:
        changes["encoding"] = how
        if how == "raw":  # non-ASCII as UTF-8, sometimes a lone surrogate (not UTF-8 at all)
            changes["mutations"] = (("defer_key", draw(texts | surrogate)),)
    fields = {**base.__dict__, **changes}
    return CallRecord(**fields)


controls = st.builds(
    ControlRecord, label=st.just("control"), kind=st.sampled_from(["tick", "cancel"]),
    call_id=st.one_of(texts, st.uuids().map(str), st.just("")),
    target=st.none() | st.integers(0, 10_000), key=keys,
    extra=st.lists(st.one_of(st.tuples(st.just("reason"), st.none() | texts),
                             st.tuples(st.sampled_from(["due_ms", "task", "x"]), scalars)),
                   max_size=2).map(tuple),
)
not_json = st.one_of(
    st.binary(max_size=64),
    texts.map(str.encode),
    st.sampled_from([b"", b"{", b'{"v": 1', b"nul", b"[1,]", b'{"v":1,}', b"\xff\xfe",
                     b'{"v":1,"id":"a","task":"t","submitted_ms":1', b"\x00" * 10]),
)
not_objects = st.one_of(scalars, st.lists(json_values, max_size=4)).map(
    lambda v: JsonRecord("json-not-object", b"k", v))
json_dicts = st.dictionaries(texts, json_values, max_size=5)
unknown_version = st.builds(
    lambda v, extra: JsonRecord("unknown-version", b"k", {**extra, "v": v}),
    FIELD_VALUES["v"], json_dicts)
# Repeated alternatives weigh more: most records are calls, mutated or not.
records = st.one_of(
    st.builds(Bytes, st.just("bytes"), keys, st.none() | st.binary(max_size=64)),
    st.builds(Bytes, st.just("not-json"), keys, not_json),
    not_objects,
    unknown_version,
    st.builds(lambda d: JsonRecord("random-object", b"k", {"v": 1, **d}), json_dicts),
    calls(), calls(), calls(),
    mutated_calls(), mutated_calls(), mutated_calls(), mutated_calls(), mutated_calls(),
    odd_calls(), odd_calls(),
    controls, controls, controls,
    st.builds(Replay, st.just("replay"), st.integers(0, 10_000)),
)

# -- deciding what a record is ----------------------------------------------------------------

SCHEMA = Draft202012Validator(json.loads(
    (resources.files("cfstream") / "schemas" / "call.json").read_text("utf-8")))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encodable(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _depth(data: Any) -> int:
    """How deeply arrays and objects nest (iteratively: the data may be deeper than the stack)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def judge(key: bytes | None, value: bytes | None, now: int) -> str:
    """INVALID, CALL, CONTROL or EITHER for one record, as the wire format documents it."""
    if value is None or len(value) > MAX_BYTES:
        return INVALID
    lenient = False
    try:
        data = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        try:  # a BOM, UTF-16/32, NaN/Infinity: Python reads them, RFC 8259 JSON does not
            data = json.loads(value)
        except (ValueError, RecursionError):
            return INVALID
        lenient = True
    if not isinstance(data, dict):
        return INVALID
    # Python's parser stops at its recursion limit (~1000 minus the stack in use; hypothesis
    # raises the limit while it runs, so this process may read deeper than the processor).
    depth = _depth(data)
    if depth > MAX_DEPTH:
        return INVALID
    lenient = lenient or depth > MAX_DEPTH // 4
    if not SCHEMA.is_valid(data):
        return INVALID
    if data.get("kind", "call") != "call":
        return EITHER if lenient or not _encodable(data) else CONTROL
    if not _encodable(data):
        return INVALID  # a lone surrogate: cannot be written back as UTF-8
    submitted = data["submitted_ms"]
    if isinstance(submitted, float):
        # JSON Schema's integer includes 1.7e12; the schema's prose says to write an integer.
        lenient = True
    skew = abs(submitted - now)
    if skew > MAX_CLOCK_SKEW_MS + HOUR:
        return INVALID
    if skew > MAX_CLOCK_SKEW_MS - HOUR:
        lenient = True  # the processor reads its clock seconds after this one
    right = data["id"] if data.get("defer_key") is None else (
        f"{data['task']}{KEY_SEPARATOR}{data['defer_key']}")
    if key != right.encode():
        return INVALID
    return EITHER if lenient else CALL


def due_in(value: bytes, now: int) -> float:
    data = json.loads(value)
    return data["submitted_ms"] + (data.get("delay_ms") or 0) - now


# -- producing and reconciling ---------------------------------------------------------------


@dataclass
class Produced:
    index: int
    label: str
    verdict: str
    key: bytes | None
    value: bytes | None
    partition: int = -1
    offset: int = -1
    call_id: str | None = None
    far: bool = False

    @property
    def source(self) -> str:
        return f"{self.partition}:{self.offset}"

    def describe(self) -> str:
        shown = repr(self.value)[:160] if self.value is not None else "None"
        return (f"#{self.index} {self.label} ({self.verdict}) @{self.source} "
                f"key={self.key!r:.60} value={shown}")


class Fuzzer:
    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.producer = Producer({"bootstrap.servers": self.settings.bootstrap_servers,
                                  "partitioner": "murmur2_random", "enable.idempotence": True,
                                  "linger.ms": 5})
        self.run = uuid.uuid4().hex
        self.records: list[Produced] = []
        self.ctx = Context(now=0)
        self.errors: list[str] = []

    def produce(self, recipes: list[Any]) -> None:
        self.ctx.now = int(time.time() * 1000)
        for recipe in recipes:
            key, value = recipe.build(self.ctx)
            verdict = judge(key, value, self.ctx.now)
            if isinstance(recipe, Replay) and self.ctx.call_records:
                verdict = REPLAY
            record = Produced(len(self.records), recipe.label, verdict, key, value)
            if verdict in (CALL, EITHER) and value is not None:
                try:
                    data = json.loads(value)
                    if data.get("kind", "call") == "call":  # not a tick or cancel
                        record.call_id = data["id"]
                        record.far = due_in(value, self.ctx.now) > FAR_MS
                except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                    pass
            if verdict == CALL:
                assert key is not None and value is not None
                self.ctx.call_keys.append(key)
                self.ctx.call_records.append((key, value))
            self.records.append(record)
            self._send(record)
        assert self.producer.flush(30) == 0
        assert not self.errors, self.errors[:5]

    def _send(self, record: Produced) -> None:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.errors.append(f"{record.describe()}: {err}")
                return
            record.partition, record.offset = msg.partition(), msg.offset()

        headers = [("fuzz-run", self.run.encode()), ("fuzz-index", str(record.index).encode())]
        while True:
            try:
                self.producer.produce(self.settings.calls_topic, key=record.key,
                                      value=record.value, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                self.producer.poll(0.1)

    def cancel_far_calls(self) -> None:
        """Far-off valid calls would wait hours: cancel them (a cancel of a call that already
        fired or was replaced does nothing)."""
        for record in self.records:
            if record.far and record.call_id is not None and record.key is not None:
                value = json.dumps({"v": 1, "kind": "cancel", "id": record.call_id,
                                    "reason": "fuzz cleanup"}).encode()
                self.producer.produce(self.settings.calls_topic, key=record.key, value=value)
        assert self.producer.flush(30) == 0


class DeadLetters:
    """The dead-letter topic, read from the start: cfstream-source -> headers."""

    def __init__(self, topic: str, bootstrap: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fuzz-unused",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.by_source: dict[str, list[dict[str, bytes]]] = {}

    def read(self, seconds: float = 0.5) -> None:
        for message in self.consumer.consume(1000, seconds):
            if message.error() is None:
                headers = dict(message.headers() or [])
                source = headers.get("cfstream-source", b"?").decode()
                self.by_source.setdefault(source, []).append(headers)

    def close(self) -> None:
        self.consumer.close()


def alive(pipeline: Any) -> None:
    for name, service in pipeline.services.started.items():
        assert service.running, (
            f"{name} exited with {service.returncode}:\n{pipeline.services.log(name)[-4000:]}")


def errors_logged(pipeline: Any) -> str:
    """The last errors each process logged (a crashed process says why)."""
    out = []
    for name in pipeline.services.started:
        lines = [line[:300] for line in pipeline.services.log(name).splitlines()
                 if " ERROR " in line or "CRITICAL" in line or "Crashed" in line]
        out.append(f"{name}: {len(lines)} error lines; the last ones:\n  "
                   + "\n  ".join(lines[-6:]))
    return "\n".join(out)


def settle(fuzzer: Fuzzer, dead: DeadLetters) -> dict[str, list[str]]:
    """Wait until every record is accounted for; the problems left at the deadline."""
    pipeline = fuzzer.pipeline
    topic = fuzzer.settings.calls_topic
    deadline = time.monotonic() + SETTLE_TIMEOUT
    seen, moved = -1, time.monotonic()
    while True:
        alive(pipeline)
        dead.read()
        with pipeline.events._cond:
            events = list(pipeline.events.events)
        progress = len(events) + sum(map(len, dead.by_source.values()))
        if progress != seen:
            seen, moved = progress, time.monotonic()
        invalid_at = {f"{e.get('partition')}:{e.get('offset')}" for e in events
                      if e.get("type") == "invalid" and e.get("topic") == topic}
        final = {e["id"] for e in events if e.get("type") in FINAL and "id" in e}
        problems: dict[str, list[str]] = {}
        for record in fuzzer.records:
            parked = f"{topic}:{record.source}" in dead.by_source
            noted = record.source in invalid_at
            if record.verdict == INVALID or (record.verdict == EITHER and (parked or noted)):
                if not parked:
                    problems.setdefault("invalid, not dead-lettered", []).append(
                        record.describe())
                if not noted:
                    problems.setdefault("invalid, no invalid event", []).append(
                        record.describe())
            elif (record.verdict in (CALL, EITHER) and record.call_id is not None
                  and record.call_id not in final):
                problems.setdefault("valid call without an outcome or deferral", []).append(
                    record.describe())
        if not problems or time.monotonic() > deadline or time.monotonic() - moved > STALL:
            return problems
        time.sleep(1.0)


def test_the_processor_survives_and_accounts_for_every_record(pipeline_factory: Any) -> None:
    pipeline = pipeline_factory(start=False)
    pipeline.services.processor("processor-0", CFSTREAM_MAX_PAYLOAD_BYTES=str(MAX_BYTES))
    pipeline.services.worker("worker-0", concurrency=4)
    pipeline.wait_ready()
    fuzzer = Fuzzer(pipeline)
    dead = DeadLetters(pipeline.settings.dead_letter_topic, pipeline.settings.bootstrap_servers)
    try:
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.generate], print_blob=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(st.lists(records, min_size=BATCH, max_size=BATCH))
        def produce_batch(batch: list[Any]) -> None:
            fuzzer.produce(batch)
            alive(pipeline)

        produce_batch()
        verdicts = Counter(r.verdict for r in fuzzer.records)
        enough = {INVALID: 500, CALL: 150, CONTROL: 20}
        assert len(fuzzer.records) >= 2000 and all(verdicts[v] >= n for v, n in enough.items()), (
            verdicts)
        fuzzer.cancel_far_calls()
        problems = settle(fuzzer, dead)
        alive(pipeline)
        report = {kind: f"{len(items)}: " + "\n  ".join(items[:8])
                  for kind, items in problems.items()}
        assert not problems, (f"{verdicts}\n" + "\n".join(f"{k} {v}" for k, v in report.items())
                              + "\n" + errors_logged(pipeline))

        # Nothing valid was dead-lettered, nothing twice; nothing ran twice.
        time.sleep(2.0)
        dead.read()
        topic = pipeline.settings.calls_topic
        wrongly = [r.describe() for r in fuzzer.records if r.verdict in (CALL, CONTROL, REPLAY)
                   and f"{topic}:{r.source}" in dead.by_source]
        assert not wrongly, "\n".join(wrongly[:10])
        twice = {s: len(h) for s, h in dead.by_source.items() if len(h) > 1}
        assert not twice, twice
        with pipeline.events._cond:
            events = list(pipeline.events.events)
        started = Counter(e["id"] for e in events if e.get("type") == "started")
        assert not [i for i, n in started.items() if n > 1], started.most_common(5)
        # Control records name no pending call: the only cancellations are the test's own.
        far_ids = {r.call_id for r in fuzzer.records if r.far}
        stray = [e for e in events if e.get("type") == "cancelled" and e["id"] not in far_ids]
        assert not stray, stray[:5]

        # Still working: a fresh call runs end to end.
        alive(pipeline)
        user = f"fresh-{uuid.uuid4().hex[:8]}"
        assert pipeline.submit(pipeline_tasks.notify, user, 3).result(timeout=60) == f"{user}:3"
        alive(pipeline)
        print(f"fuzz: {len(fuzzer.records)} records, {dict(verdicts)}, "
              f"{sum(map(len, dead.by_source.values()))} dead letters")
    finally:
        dead.close()


def test_the_record_judge_agrees_with_the_schema_on_plain_cases() -> None:
    """The test's own oracle, on records whose fate is obvious."""
    now = int(time.time() * 1000)
    call_id = new_execution_id(now)
    call = {"v": 1, "id": call_id, "task": "m:t", "submitted_ms": now}
    raw = json.dumps(call).encode()
    assert judge(call_id.encode(), raw, now) == CALL
    assert judge(b"other", raw, now) == INVALID
    assert judge(call_id.encode(), json.dumps({**call, "v": 3}).encode(), now) == INVALID
    leading = {**call, "v": 2, "defer_key": "k", "delay_ms": 1_000, "leading": True}
    assert judge(b"m:t|k", json.dumps(leading).encode(), now) == CALL  # v2: a deferring mode
    assert judge(call_id.encode(), json.dumps({**call, "v": True}).encode(), now) == INVALID
    assert judge(call_id.encode(), json.dumps({**call, "delay_ms": -1}).encode(), now) == INVALID
    assert judge(call_id.encode(), json.dumps({**call, "delay_ms": 1.5}).encode(), now) == INVALID
    assert judge(call_id.encode(), json.dumps({**call, "delay_ms": 5.0}).encode(), now) == CALL
    assert judge(call_id.encode(), json.dumps({**call, "submitted_ms": float(now)}).encode(),
                 now) == EITHER
    assert judge(call_id.encode(), b"\xef\xbb\xbf" + raw, now) == EITHER
    assert judge(call_id.encode(), json.dumps({**call, "submitted_ms": now + 8 * DAY}).encode(),
                 now) == INVALID
    assert judge(call_id.encode(), json.dumps({**call, "id": "\ud800"}).encode(), now) == INVALID
    assert judge(call_id.encode(), b"[" * 5000 + b"]" * 5000, now) == INVALID
    deep = {**call, "x": Raw("[" * 1500 + "]" * 1500)}
    assert judge(call_id.encode(), encode(deep, now, True), now) == INVALID
    assert judge(b"k", b'{"v":1,"kind":"tick","id":"x"}', now) == CONTROL
    assert judge(b"k", b'{"v":1,"kind":"tick"}', now) == INVALID
    assert judge(None, None, now) == INVALID
    padded = CallRecord("t", "m:t", [], 0, None, None, None, size=MAX_BYTES)
    key, value = padded.build(Context(now))
    assert value is not None and len(value) == MAX_BYTES and judge(key, value, now) == CALL
    assert judge(key, value + b" ", now) == INVALID
