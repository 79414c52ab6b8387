"""3. Pending-key scale and 4. recovery, measured on the same states.

The state of ``n`` pending calls (distinct keys, due in an hour) is written straight to the
replica's changelog topic, record for record what the replica writes when it takes the calls in
(``cfstream.processor.state`` encodes them; partition = murmur2 of the call key, as the calls
topic places them). Taking 1M calls in through the calls topic would take ~10 minutes at the
measured ingest rate (benchmark 1), so the state is built this way; the replica then restores it
like any replica that lost its disk.

At each size:
- **recovery, fresh**: a replica with an empty state dir, from launch to /readyz 200 (it joins
  the group and restores the whole changelog first);
- **recovery, resume**: the same replica restarted on its state dir (restores only the changelog
  tail past the offset RocksDB remembers);
- **memory and disk**: VmRSS of the replica once ready, size of its state dir;
- baseline: one raw consumer reading the same changelog into a RocksDB opened with the replica's
  options (the least a restore has to do).

The cost of one timer turn is measured in this process on the real code path:
``PartitionTask.fire_due`` on a partition DB opened as the replica opens it, filled with ``n``
keys' "k:" and "d:" entries; then again after part of them were replaced or fired (their "d:"
entries deleted, as the replica does) and after a compaction. The turn from the running task's
cursor is timed twice: right after the writes, while RocksDB's background flushes and
compactions still run, and at rest, once they are done.

``python -m bench.scale [SIZE...]`` runs the timer-turn measure alone and prints its rows.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Producer, murmur2
from confluent_kafka.admin import AdminClient, NewTopic

from bench import calls, env
from cfstream.clock import now_ms
from cfstream.dev.services import Service
from cfstream.kafka.config import admin_config
from cfstream.observability.metrics import ProcessorMetrics
from cfstream.processor import state
from cfstream.processor.db import Databases
from cfstream.processor.outputs import Outputs
from cfstream.processor.partition import PartitionTask
from cfstream.scheduling.rules import Slot
from cfstream.settings import Settings

QUICK_SIZES = [0, 10_000, 100_000]
FULL_SIZES = [0, 10_000, 100_000, 1_000_000, 10_000_000]
QUICK_TICK_SIZES = [10_000, 100_000]
FULL_TICK_SIZES = [10_000, 100_000, 1_000_000, 10_000_000]


def open_store(path: Path) -> Any:
    """A partition DB opened exactly as the replica opens one (same shared options)."""
    return Databases(path, "bench").open(0)


class _NoOutputs(Outputs):
    """A task's outputs for the in-process timer measure, where nothing is due."""

    def __init__(self) -> None:
        self.changelog_topic = "unused"

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the timer measure fired something")


def timer_task(db: Any) -> PartitionTask:
    return PartitionTask(Settings(), 0, db, _NoOutputs(), ProcessorMetrics(), position=0)


def scan(task: PartitionTask, now: int, from_start: bool = False, kept: bool = False) -> None:
    """One turn's timer for one partition: ``fire_due`` with its limit at ``now`` (from the start
    of the due index, as after a restart, or from the task's cursor, as in a running replica);
    with the iterator of the turn before (``kept``: timers came due then too) or a new one (the
    first turn with timers due after one without)."""
    if from_start:
        task.cursor = 0
    if not kept:
        task.scan = None
    task.next_due = 0  # look, whatever the last turn found
    task.horizon_ms = now
    task.fire_due(now)


def pending_records(i: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The call key of pending call ``i`` and the two table entries the replica keeps for it:
    its slot (also on the changelog) and its due-index entry (local, rebuilt from the slots)."""
    c = calls.call(i, defer_key=f"k{i}")
    key = c.key.encode()
    slot = Slot(call=c, first_ms=c.submitted_ms, due_ms=c.submitted_ms + c.delay_ms)
    return key, [(state.slot_key(key), state.encode_slot(slot)),
                 (state.due_key(slot.due_ms, key), slot.timer_id.encode())]


def write_changelog(settings: Settings, producer: Producer, start: int, stop: int) -> None:
    topic = settings.changelog_topic
    progress = env.Progress(f"writing pending keys {start:,}..{stop:,} to the changelog",
                            stop - start, "keys")
    for i in range(start, stop):
        key, entries = pending_records(i)
        partition = murmur2(key, settings.partitions)
        for k, v in entries[:1]:  # the slot: the due index is not on the changelog
            while True:
                try:
                    producer.produce(topic, key=k, value=v, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
            progress(i - start)
    progress(stop - start)
    progress.finish()
    if producer.flush(120):
        raise RuntimeError("changelog records still queued after 120 s")


def raw_restore(settings: Settings, workdir: Path, records: int) -> float:
    """Seconds for one raw consumer to read the changelog into a RocksDB (batched writes)."""
    from rocksdict import WriteBatch

    path = workdir / f"raw-restore-{records}"
    db = open_store(path)
    consumer = env.raw_consumer(settings, settings.changelog_topic,
                                **{"fetch.max.bytes": 52428800})
    started = time.monotonic()
    seen = 0
    deadline = started + 600
    progress = env.Progress("raw restore: changelog into RocksDB", records)
    while seen < records and time.monotonic() < deadline:
        batch = WriteBatch(raw_mode=True)
        for message in consumer.consume(5000, 1.0):
            if message.error() is None:
                batch.put(message.key() or b"", message.value() or b"")
                seen += 1
        db.write(batch)
        progress(seen)
    progress.finish()
    elapsed = time.monotonic() - started
    consumer.close()
    db.close()
    if seen < records:
        raise RuntimeError(f"raw restore read {seen} of {records} records")
    return elapsed


def pending_gauge(service: Service) -> float | None:
    """The replica's own count of pending calls (cfstream_pending_keys summed), if exported."""
    url = f"http://127.0.0.1:{service.http_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            text = response.read().decode()
    except OSError:
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("cfstream_pending_keys{")]
    return sum(values) if values else None


def replica_steps(bootstrap: str, workdir: Path, sizes: list[int]) -> list[dict[str, Any]]:
    settings = env.new_settings(bootstrap, "scale")
    admin = AdminClient(admin_config(settings))
    topic = settings.changelog_topic
    if topic not in admin.list_topics(timeout=30).topics:  # cfstream may create it itself
        for future in admin.create_topics([NewTopic(
                topic, num_partitions=settings.partitions, replication_factor=1,
                config={"cleanup.policy": "compact"})]).values():
            future.result(timeout=30)
    producer = env.raw_producer(settings, overrides={"linger.ms": 20})
    services = env.services(settings, workdir)
    steps = []
    written = 0
    try:
        for size in sizes:
            started = time.monotonic()
            write_changelog(settings, producer, written, size)
            written = size
            env.log(f"scale: {size:,} keys written to the changelog in "
                    f"{time.monotonic() - started:.1f}s")
            state_dir = workdir / f"state-{size}"
            timeout = 180 + size / 2_000
            fresh = services.processor(f"fresh-{size}", state_dir=state_dir)
            restore_s = fresh.wait_ready(timeout)
            rss_fresh, hwm_fresh = fresh.rss_kib(), fresh.hwm_kib()
            fresh.stop()
            disk = env.dir_bytes(state_dir)
            resumed = services.processor(f"resume-{size}", state_dir=state_dir)
            resume_s = resumed.wait_ready(timeout)
            rss_resume = resumed.rss_kib()
            gauge = None
            if size == sizes[-1]:  # the replica's own count: the state restored is what we wrote
                deadline = time.monotonic() + 60  # counted in the background after restore
                while gauge is None or gauge < size:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                    gauge = pending_gauge(resumed)
            resumed.stop()
            raw_s = raw_restore(settings, workdir, size) if size else None
            step = {"keys": size, "changelog_records": size, "restore_fresh_s": restore_s,
                    "resume_s": resume_s, "raw_restore_s": raw_s,
                    "rss_fresh_kib": rss_fresh, "hwm_fresh_kib": hwm_fresh,
                    "rss_resume_kib": rss_resume, "state_dir_bytes": disk,
                    "pending_gauge": gauge}
            env.log(f"scale: {size:,} keys: restore {restore_s:.1f}s (raw "
                    f"{raw_s or 0:.1f}s), resume {resume_s:.1f}s, RSS {rss_fresh} KiB, "
                    f"disk {disk / 1e6:.1f} MB, gauge {gauge}")
            steps.append(step)
    finally:
        services.close()
    return steps


def tick_costs(workdir: Path, sizes: list[int]) -> list[dict[str, Any]]:
    """Microseconds one turn's timer (``PartitionTask.fire_due``) takes on one partition's DB:

    - ``idle``: ``n`` pending keys, none due (the usual turn);
    - ``after_replaced``: then ``m`` of the earliest keys were called again (a deferred call
      replaces the pending one: a later "d:" entry is written, the old one stays until the timer
      reaches and drops it), none due;
    - ``after_fired``: then ``m`` other keys fired (their "d:" entries deleted), none due; from
      the start of the index (the first turn after a restart) and from the task's cursor;
    - ``after_compaction``: the same after a manual compaction of the whole DB.

    The turns from the cursor are timed with a new iterator (a tailing one, as the task makes
    after turns with nothing due) and with the one kept from the turn before, 50 calls written
    between two turns; right after the writes and again at rest.
    """
    from rocksdict import WriteBatch

    out = []
    for size in sizes:
        path = Path(tempfile.mkdtemp(prefix=f"tick-{size}-", dir=workdir))
        db = open_store(path)
        task = timer_task(db)
        now = now_ms()
        base = now + calls.HOUR_MS
        started = time.monotonic()
        _key, (slot_entry, _due) = pending_records(0)
        slot_value = slot_entry[1]
        timer_id = b"0190e0f4-0000-7000-8000-000000000000"

        def key_of(i: int) -> bytes:
            return f"{calls.PARKED}|k{i}".encode()

        batch = WriteBatch(raw_mode=True)
        progress = env.Progress("tick: filling a table", size, "keys")
        for i in range(size):
            batch.put(state.slot_key(key_of(i)), slot_value)
            batch.put(state.due_key(base + i, key_of(i)), timer_id)
            if i % 50_000 == 49_999:
                db.write(batch)
                batch = WriteBatch(raw_mode=True)
                progress(i + 1)
        db.write(batch)
        progress(size)
        progress.finish()
        fill_s = time.monotonic() - started

        a_turn_s_writes = functools.partial(write_a_turn, db, [0], slot_value, base, timer_id)

        def tick_us(at: int, from_start: bool = False, repeat: int = 30,
                    kept: bool = False) -> float:
            # Called within this round only: the loop's variables are this round's.
            return statistics.median(_timed(lambda: scan(task, at, from_start, kept),  # noqa: B023
                                            repeat,
                                            before=a_turn_s_writes if kept else None))  # noqa: B023

        idle = tick_us(now, from_start=True)
        moved = min(size // 4, 100_000)
        for i in range(moved):  # keys 0..moved called again: a later entry, the old one stays
            db.put(state.due_key(base + size + i, key_of(i)), timer_id)
        after_replaced = tick_us(now, from_start=True, repeat=5 if moved > 10_000 else 20)
        for i in range(2 * moved):  # the first keys' entries fired or were dropped: deleted
            db.delete(state.due_key(base + i, key_of(i)))
        last_fired = base + 2 * moved - 1
        after_fired = tick_us(last_fired, from_start=True, repeat=5 if moved > 10_000 else 20)
        task.cursor = last_fired  # where a running replica's last turn stopped
        l0_busy = l0_files(db)
        from_cursor_busy = tick_us(last_fired)
        from_cursor_busy_kept = tick_us(last_fired, kept=True)
        settle_s = settle(db)
        l0_at_rest = l0_files(db)
        from_cursor = tick_us(last_fired)
        from_cursor_kept = tick_us(last_fired, kept=True)
        db.compact_range(None, None)
        after_compaction = tick_us(last_fired, from_start=True)
        task.close()
        disk = env.dir_bytes(path)
        row = {"keys": size, "fill_s": fill_s, "idle_tick_us": idle,
               "replaced": moved, "idle_tick_after_replaced_us": after_replaced,
               "fired": moved, "idle_tick_after_fired_us": after_fired,
               "idle_tick_after_fired_from_cursor_busy_us": from_cursor_busy,
               "idle_tick_after_fired_from_cursor_busy_kept_us": from_cursor_busy_kept,
               "l0_files_busy": l0_busy, "settle_s": settle_s, "l0_files_at_rest": l0_at_rest,
               "idle_tick_after_fired_from_cursor_us": from_cursor,
               "idle_tick_after_fired_from_cursor_kept_us": from_cursor_kept,
               "idle_tick_after_compaction_us": after_compaction, "db_bytes": disk}
        env.log(f"tick: {size:,} keys: idle {idle:.1f}us, after {moved:,} replaced "
                f"{after_replaced:,.0f}us, after {moved:,} fired {after_fired:,.0f}us "
                f"(from cursor, new / kept iterator: {from_cursor_busy:.1f} / "
                f"{from_cursor_busy_kept:.1f}us with {l0_busy} L0 files, {from_cursor:.1f} / "
                f"{from_cursor_kept:.1f}us at rest after {settle_s:.1f}s), "
                f"compacted {after_compaction:.1f}us")
        out.append(row)
        _rmtree(path)
    return out


def l0_files(db: Any) -> int:
    """Sorted runs a seek merges besides the levels: one per level-0 file."""
    return int(db.property_int_value("rocksdb.num-files-at-level0") or 0)


def settle(db: Any, most_s: float = 600.0) -> float:
    """Seconds until RocksDB has no flush or compaction pending or running: the DB at rest, as a
    replica's is once the background work of a burst of writes (a restore, the fill here) is
    done. A seek merges every level-0 file, so right after a burst it costs several times more
    (measured: 10M keys, 10 level-0 files, 24.8 us; at rest 4.2 us)."""
    began = time.monotonic()
    busy = ("rocksdb.mem-table-flush-pending", "rocksdb.compaction-pending",
            "rocksdb.num-running-flushes", "rocksdb.num-running-compactions")
    while time.monotonic() - began < most_s:
        if not any(db.property_int_value(name) for name in busy):
            break
        time.sleep(0.2)
    return time.monotonic() - began


def write_a_turn(db: Any, written: list[int], slot_value: bytes, base: int,
                 timer_id: bytes) -> None:
    """What a turn writes besides firing: 50 calls taken in, due later (the memtable, which
    every seek reads again, grows; a kept iterator would otherwise find the same memtable each
    turn). ``written`` counts the calls written so far."""
    from rocksdict import WriteBatch

    turn = WriteBatch(raw_mode=True)
    for _ in range(50):
        written[0] += 1
        key = f"{calls.PARKED}|new{written[0]}".encode()
        turn.put(state.slot_key(key), slot_value)
        turn.put(state.due_key(base + calls.HOUR_MS + written[0], key), timer_id)
    db.write(turn)


def _timed(fn: Any, repeat: int, before: Any = None) -> list[float]:
    times = []
    for _ in range(repeat):
        if before is not None:  # not timed
            before()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    return times


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def measure(bootstrap: str, workdir: Path, quick: bool, shared: dict[str, Any]) -> dict[str, Any]:
    """Runs once for both benchmarks (a failure is not retried by the second)."""
    if "scale" not in shared:
        shared["scale"] = None
        shared["scale"] = {
            "steps": replica_steps(bootstrap, workdir, QUICK_SIZES if quick else FULL_SIZES),
            "ticks": tick_costs(workdir, QUICK_TICK_SIZES if quick else FULL_TICK_SIZES),
        }
    if shared["scale"] is None:
        raise RuntimeError("the pending-key states could not be built (see pending)")
    return shared["scale"]


def run_pending(bootstrap: str, workdir: Path, quick: bool, profile: bool,
                shared: dict[str, Any]) -> env.Result:
    data = measure(bootstrap, workdir, quick, shared)
    result = env.Result("pending")
    for step in data["steps"]:
        n = f"{step['keys']:,}"
        result.row(f"replica RSS, {n} pending keys", step["rss_fresh_kib"] / 1024, None, "MiB",
                   "<= 1024 MiB at 10M")
        if not step["keys"]:
            continue
        result.row(f"state dir on disk, {n} pending keys", step["state_dir_bytes"] / 2**20,
                   None, "MiB")
    for tick in data["ticks"]:
        n = f"{tick['keys']:,}"
        m = f"{tick['replaced']:,}"
        for metric, value in (
                (f"timer turn, {n} keys in one partition's DB, none due", tick["idle_tick_us"]),
                (f"timer turn, {n} keys, none due, after {m} deferred (replaced)",
                 tick["idle_tick_after_replaced_us"]),
                (f"timer turn, {n} keys, none due, after {m} replaced + {m} fired (first "
                 "turn after a restart)", tick["idle_tick_after_fired_us"]),
                (f"same, from the running task's cursor, right after the writes "
                 f"({tick['l0_files_busy']} level-0 files): a new iterator",
                 tick["idle_tick_after_fired_from_cursor_busy_us"]),
                ("same: the iterator kept from the turn before (timers due turn after turn)",
                 tick["idle_tick_after_fired_from_cursor_busy_kept_us"]),
                ("same, at rest (no flush or compaction left): a new iterator",
                 tick["idle_tick_after_fired_from_cursor_us"]),
                ("same, at rest: the iterator kept",
                 tick["idle_tick_after_fired_from_cursor_kept_us"])):
            result.row(metric, value, None, "us", higher_is_better=False)
    result.details.update(data)
    result.details["empty_replica_rss_kib"] = next(
        (s["rss_fresh_kib"] for s in data["steps"] if not s["keys"]), None)
    last = data["steps"][-1]
    if last["keys"] and last["pending_gauge"] is not None and last["pending_gauge"] < last["keys"]:
        result.notes.append(f"the replica counted {last['pending_gauge']} pending keys of "
                            f"{last['keys']} written")
    return result


def run_recovery(bootstrap: str, workdir: Path, quick: bool, profile: bool,
                 shared: dict[str, Any]) -> env.Result:
    data = measure(bootstrap, workdir, quick, shared)
    result = env.Result("recovery")
    for step in data["steps"]:
        n = f"{step['keys']:,}"
        result.row(f"fresh replica -> /readyz, {n} keys", step["restore_fresh_s"],
                   step["raw_restore_s"], "s", "<= 1.5x raw", higher_is_better=False)
        result.row(f"restart on its state dir -> /readyz, {n} keys", step["resume_s"], None,
                   "s", higher_is_better=False)
    result.details["steps"] = data["steps"]
    result.notes.append("recovery baseline: one raw consumer reading the same changelog into a "
                        "RocksDB with the replica's options; the replica's time also includes "
                        "process start and joining the group (the 0-key row)")
    return result


if __name__ == "__main__":
    import json
    import sys

    sizes = [int(arg) for arg in sys.argv[1:]] or FULL_TICK_SIZES
    with tempfile.TemporaryDirectory(prefix="bench-ticks-") as tmp:
        for tick in tick_costs(Path(tmp), sizes):
            print(json.dumps(tick))
