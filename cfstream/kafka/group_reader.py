"""The child process that describes consumer groups for :mod:`cfstream.kafka.groups`.

Run as a script (``python -P .../group_reader.py``), not as a module of the package: it imports
only the standard library and confluent-kafka, so it starts in about a tenth of a second, where
importing cfstream first took a quarter. A replica's warm-up waits for its first answer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from confluent_kafka import KafkaError, KafkaException

PARENT_CHECK_INTERVAL = 1.0


def _describe(admin: Any, group: str, timeout: float) -> dict[str, Any]:
    try:
        description = admin.describe_consumer_groups([group],
                                                     request_timeout=timeout)[group].result()
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        return {"error": str(exc), "code": error.code() if error is not None else None}
    return {"state": description.state.name, "members": [
        {"member_id": m.member_id, "instance_id": m.group_instance_id,
         "partitions": [[tp.topic, tp.partition] for tp in
                        (m.assignment.topic_partitions if m.assignment else [])]}
        for m in description.members]}


def main(stdin: IO[str], stdout: IO[str], make_admin: Callable[[dict[str, Any]], Any]) -> None:
    """Answer each request line, until one fails: then return, so the process exits and the
    parent's next request starts a new one.

    A long-lived admin client can time out on every describe after a broker restart and a
    rebalance, while a new client is answered at once (seen in the chaos run: three replicas'
    readers and the harness's timed out for minutes). A new process, not a new client in this
    one: destroying the old client can block while the cluster is unreachable."""
    first = stdin.readline()
    if not first:
        return
    admin = make_admin(json.loads(first))
    for line in stdin:
        request = json.loads(line)
        answer = _describe(admin, request["group"], request["timeout"])
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()
        if "error" in answer:
            return


def _exit_with(parent: int) -> None:
    """Exit once ``parent`` is gone (killed with -9, it closes no pipe in time for a request
    that waits on the cluster)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_INTERVAL)
    os._exit(0)


if __name__ == "__main__":
    from confluent_kafka.admin import AdminClient

    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    main(sys.stdin, sys.stdout, AdminClient)
    os._exit(0)  # not waiting on librdkafka's teardown while the cluster is unreachable
