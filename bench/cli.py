"""Runs the benchmarks, prints the markdown table, writes ``<out>/<run>.json`` and ``.md``."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    after,
    e2e,
    env,
    failover,
    mixed,
    rolling,
    scale,
    scaling,
    standby,
    submit,
    throughput,
    timers,
    waiting,
    worker,
)

Bench = Callable[[str, Path, bool, bool, dict[str, Any]], env.Result]

# Run order matters: recovery reuses the states pending built (in memory: each benchmark's
# topics are deleted once it is done).
BENCHMARKS: dict[str, Bench] = {
    "submit": submit.run,
    "throughput": throughput.run,
    "timers": timers.run,
    "mixed": mixed.run,
    "pending": scale.run_pending,
    "recovery": scale.run_recovery,
    "e2e": e2e.run,
    "failover": failover.run,
    "scaling": scaling.run,
    "rolling": rolling.run,
    "waiting": waiting.run,
    "after": after.run,
    "standby": standby.run,
    "worker": worker.run,
}
# What each benchmark measures, said as it starts.
ABOUT = {
    "submit": "task.submit() calls/s beside raw produce",
    "throughput": "calls/s one processor replica consumes from a filled calls topic",
    "timers": "how late calls fire when many come due each second",
    "mixed": "how late calls fire while a submitter makes calls and a worker runs them",
    "pending": "replica memory and disk by number of pending keys",
    "recovery": "a replica's restore from the changelog, and its restart on its own state",
    "e2e": "submit() to the worker's started event, no delay",
    "failover": "one of two processor replicas killed while calls come due",
    "scaling": "calls/s of 1 and of 2 processor replicas on this machine, and where its CPU goes",
    "rolling": "rolling restarts (leave and stay) and scaling of three replicas under load",
    "waiting": "result() under unrelated event traffic, and many concurrent awaits",
    "after": "result(), status() and awaits on executions that finished before the first wait",
    "standby": "what a standby copy costs: a cold copy, and two replicas under load, K=0 vs 1",
    "worker": "executions/s and CPU per execution of one worker, no-op, sleeping and async tasks",
}
DEFAULT_OUT = Path(__file__).parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="cfstream beside raw Kafka: every figure is a ratio against a raw "
                    "confluent-kafka baseline measured in the same run.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (CI smoke run, about 5 minutes)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only these (repeat or comma-separate): {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where to write the JSON and markdown (default: bench/results)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="py-spy the processor during the throughput run (default: on for "
                             "the full run, off for --quick)")
    parser.add_argument("--group-protocol", choices=["classic", "consumer"], default="classic",
                        help="failover: the processors' group protocol (consumer: KIP-848)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir (service logs, state dirs) for a look afterwards")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only or [] for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.names = [n for n in BENCHMARKS if n in names] if names else list(BENCHMARKS)
    if args.profile is None:
        args.profile = not args.quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    mode = "quick" if args.quick else "full"
    run_name = mode if args.names == list(BENCHMARKS) else f"{mode}-{'-'.join(args.names)}"
    started = time.monotonic()
    results: list[env.Result] = []
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    shared: dict[str, Any] = {"group_protocol": args.group_protocol}
    workdir = Path(tempfile.mkdtemp(prefix="cfstream-bench-"))
    try:
        with env.kafka() as bootstrap:
            for number, name in enumerate(args.names, 1):
                env.log(f"{name} ({number}/{len(args.names)}): {ABOUT[name]}")
                t = time.monotonic()
                try:
                    bench_dir = workdir / name
                    bench_dir.mkdir(exist_ok=True)
                    results.append(BENCHMARKS[name](bootstrap, bench_dir, args.quick,
                                                    args.profile, shared))
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    env.log(f"{name}: FAILED\n{traceback.format_exc()}")
                    log_failed_services(bench_dir)
                try:
                    env.delete_created_topics()
                except Exception as exc:  # the next benchmark shares the broker with them
                    env.log(f"{name}: its topics were not deleted: {exc}")
                seconds[name] = round(time.monotonic() - t, 1)
                env.log(f"{name}: {seconds[name]}s")
        profile_file = workdir / "throughput" / "processor.pyspy.txt"
        args.out.mkdir(parents=True, exist_ok=True)
        if profile_file.exists():
            shutil.copy(profile_file, args.out / f"{run_name}-processor.pyspy.txt")
    finally:
        if args.keep:
            env.log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {"run": run_name, "mode": mode, "machine": machine(),
              "seconds_total": round(time.monotonic() - started, 1), "seconds": seconds,
              "results": [r.__dict__ for r in results], "errors": errors}
    text = markdown(report)
    print(text)
    (args.out / f"{run_name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / f"{run_name}.md").write_text(text)
    env.log(f"wrote {args.out / run_name}.json and .md in {report['seconds_total']}s")
    return 1 if errors else 0


def log_failed_services(bench_dir: Path) -> None:
    """The last lines of each service log under ``bench_dir`` that shows a traceback or an
    error: the workdir is gone after the run, and a failed benchmark is often a service that
    died."""
    for path in sorted(bench_dir.rglob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if "Traceback" in text or "error:" in text:
            tail = "\n".join(text.splitlines()[-25:])
            env.log(f"{path.relative_to(bench_dir)}, last lines:\n{tail}")


def machine() -> dict[str, Any]:
    import confluent_kafka
    import orjson
    import rocksdict

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True,  # noqa: S607
                                  text=True, cwd=env.REPO, timeout=10).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--", "cfstream"):
        commit += " + uncommitted changes in cfstream/"
    return {"when": time.strftime("%Y-%m-%d %H:%M:%S %z"), "commit": commit,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "confluent_kafka": confluent_kafka.__version__,
            "librdkafka": confluent_kafka.libversion()[0],
            "rocksdict": _version(rocksdict), "orjson": orjson.__version__,
            "load_avg_at_end": os.getloadavg(),
            "kafka": os.environ.get("CFSTREAM_BOOTSTRAP_SERVERS") or "LocalBroker (own)"}


def _version(module: Any) -> str:
    from importlib.metadata import version

    return version(module.__name__)


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit in ("calls/s",):
        return f"{value:,.0f}/s"
    if unit == "us":
        return f"{value:,.1f} µs"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "%":
        return f"{value:,.1f} %"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    return f"{value:,.2f} {unit}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"## cfstream beside raw Kafka ({report['mode']} run, {m['when']})", "",
             f"commit {m['commit']}, {m['cpus']} CPUs, Python {m['python']}, confluent-kafka "
             f"{m['confluent_kafka']} (librdkafka {m['librdkafka']}), rocksdict {m['rocksdict']}, "
             f"broker: {m['kafka']}; {report['seconds_total']:.0f} s in all.", "",
             "| benchmark | metric | cfstream | raw Kafka | cfstream / raw | target |",
             "|---|---|---:|---:|---:|---|"]
    for result in report["results"]:
        for row in result["rows"]:
            ratio = row["ratio"]
            ratio = f"{ratio:.2f}x" if ratio is not None and not math.isnan(ratio) else ""
            lines.append(f"| {result['name']} | {row['metric']} | "
                         f"{fmt(row['cfstream'], row['unit'])} | {fmt(row['raw'], row['unit'])} | "
                         f"{ratio} | {row['target']} |")
    notes = [n for r in report["results"] for n in r["notes"]]
    notes += [f"**{name} failed**: {error}" for name, error in report["errors"].items()]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    for result in report["results"]:
        profile = result["details"].get("profile")
        if not profile:
            continue
        lines += ["", "### Processor profile (py-spy, during the throughput run)", ""]
        if "error" in profile:
            lines.append(f"not available: {profile['error']}")
            continue
        lines += [f"{profile['samples']} samples. Top frames by total time (on the stack), "
                  "then by self time:", "", "| % total | frame | | % self | frame |",
                  "|---:|---|---|---:|---|"]
        for (tf, tp), (sf, sp) in zip(profile["total_pct"], profile["self_pct"], strict=False):
            lines.append(f"| {tp} | `{tf}` | | {sp} | `{sf}` |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
