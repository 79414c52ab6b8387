"""Whether a redelivered execution runs (cfstream.worker.dedupe.verdict): from the most advanced
event of its id, and the attempt redelivered."""

from __future__ import annotations

from typing import Any

import pytest

from cfstream.worker.dedupe import Verdict, verdict


@pytest.mark.parametrize(("known", "attempt", "expected"), [
    (None, 1, Verdict.RUN),
    ({"type": "scheduled"}, 1, Verdict.RUN),
    ({"type": "started"}, 1, Verdict.LOST),
    ({"type": "succeeded"}, 1, Verdict.ENDED),
    ({"type": "failed"}, 1, Verdict.ENDED),
    ({"type": "deferred"}, 1, Verdict.ENDED),
    ({"type": "cancelled"}, 1, Verdict.ENDED),
    ({"type": "retrying"}, 1, Verdict.RETRYING),
    # Events of an earlier attempt say nothing of this one.
    ({"type": "started"}, 2, Verdict.RUN),
    ({"type": "retrying", "attempt": 2}, 3, Verdict.RUN),
    ({"type": "started", "attempt": 2}, 2, Verdict.LOST),
    # A later attempt began or ended: this one is over.
    ({"type": "started", "attempt": 3}, 2, Verdict.ENDED),
    ({"type": "retrying", "attempt": 3}, 2, Verdict.RETRYING),
])
def test_verdict(known: dict[str, Any] | None, attempt: int, expected: Verdict) -> None:
    assert verdict(known, attempt) is expected
