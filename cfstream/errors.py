"""Every error cfstream raises on purpose derives from CfStreamError.

    CfStreamError
    ├── ConfigurationError      bad settings or task options
    ├── SubmitError             a call could not be encoded or published
    │   └── DeferKeyError       the task's defer key function failed
    ├── ExecutionFailed         the task raised on a worker
    ├── ExecutionCancelled      the call was cancelled before it ran
    ├── KafkaUnavailable        the broker could not be reached or started
    └── ReplicaFenced           a processor replica lost its CFSTREAM_INSTANCE_ID's membership
"""

from __future__ import annotations


class CfStreamError(Exception):
    """Root of cfstream's errors."""


class ConfigurationError(CfStreamError, ValueError):
    """A setting or a task option is invalid."""


class SubmitError(CfStreamError):
    """A call could not be encoded or published."""


class DeferKeyError(SubmitError):
    """The task's defer key function raised or returned something other than a string."""


class KafkaUnavailable(CfStreamError):
    """The Kafka broker could not be reached, started or stopped."""


class ReplicaFenced(CfStreamError):
    """The group gave this replica's CFSTREAM_INSTANCE_ID to a newer member twice within
    :data:`~cfstream.processor.membership.REJOIN_WINDOW`: another process runs under the same
    id. (Once is the replica's own rejoin after its session timed out: it joins again.)"""


class ExecutionCancelled(CfStreamError):
    """The execution was cancelled before it ran."""

    def __init__(self, execution_id: str, reason: str = "") -> None:
        self.execution_id = execution_id
        self.reason = reason
        super().__init__(
            f"execution {execution_id} was cancelled" + (f": {reason}" if reason else "")
        )


class ExecutionFailed(CfStreamError):
    """The task raised on the worker; carries the remote error's type, message and traceback."""

    def __init__(
        self, execution_id: str, error_type: str, message: str, traceback: str = ""
    ) -> None:
        self.execution_id = execution_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"execution {execution_id} failed: {error_type}: {message}")
