"""cfstream: delayed and deferred (debounced) task execution on Apache Kafka.

    import cfstream as cf

    @cf.task(delay=60, defer=True)
    def send_notification(user_id, document_id): ...

    send_notification.submit(1, 2)   # an Execution, at once
    send_notification(1, 2)          # submit and wait for the result
"""

from cfstream.arguments import Defer
from cfstream.calls import submit
from cfstream.client import Client, configure
from cfstream.errors import (
    CfStreamError,
    ConfigurationError,
    DeferKeyError,
    ExecutionCancelled,
    ExecutionFailed,
    KafkaUnavailable,
    SubmitError,
)
from cfstream.execution import Execution, current_execution
from cfstream.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    DoneAndNotDone,
    as_completed,
    wait,
)
from cfstream.retries import Retries
from cfstream.settings import Settings
from cfstream.task import Task, task
from cfstream.wire import Collect

__all__ = [
    "ALL_COMPLETED",
    "CfStreamError",
    "Client",
    "Collect",
    "ConfigurationError",
    "Defer",
    "DeferKeyError",
    "DoneAndNotDone",
    "Execution",
    "ExecutionCancelled",
    "ExecutionFailed",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "KafkaUnavailable",
    "Retries",
    "Settings",
    "SubmitError",
    "Task",
    "as_completed",
    "configure",
    "current_execution",
    "submit",
    "task",
    "wait",
]
