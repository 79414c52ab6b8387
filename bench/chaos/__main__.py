"""``python -m bench.chaos``: see :mod:`bench.chaos.harness`. Exits 1 on lost, duplicated or
superseded-but-ran executions, 2 if the run itself failed."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from bench.chaos.cluster import log
from bench.chaos.harness import Config, install_signal_handlers, report, run


def parse(argv: list[str]) -> Config:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--calls", type=int, default=defaults.calls, help="calls to submit")
    parser.add_argument("--keys", type=int, default=defaults.keys, help="defer keys")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="calls per second")
    parser.add_argument("--duration-limit", type=float, default=defaults.duration_limit,
                        help="seconds the whole run may take")
    parser.add_argument("--processor-kills", type=int, default=defaults.processor_kills)
    parser.add_argument("--worker-kills", type=int, default=defaults.worker_kills)
    parser.add_argument("--broker-restart", action=argparse.BooleanOptionalAction,
                        default=defaults.broker_restart)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep logs, state and records here (default: a temporary dir, "
                             "deleted after a clean run)")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--json-out", type=Path, default=None, help="write the summary here")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.keys < 2 or args.rate <= 0:
        parser.error("--calls >= 1, --keys >= 2 and --rate > 0")
    return Config(calls=args.calls, keys=args.keys, rate=args.rate,
                  duration_limit=args.duration_limit, processor_kills=args.processor_kills,
                  worker_kills=args.worker_kills, broker_restart=args.broker_restart,
                  seed=args.seed, workdir=args.workdir, keep_workdir=args.keep_workdir,
                  json_out=args.json_out)


def main(argv: list[str] | None = None) -> int:
    config = parse(sys.argv[1:] if argv is None else argv)
    install_signal_handlers()
    try:
        summary = run(config)
    except KeyboardInterrupt as exc:
        log(f"interrupted: {exc}")
        return 2
    except Exception as exc:  # noqa: BLE001 - the run could not complete: say why, exit 2
        log(f"the run failed: {exc!r}")
        traceback.print_exc()
        return 2
    print(report(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
