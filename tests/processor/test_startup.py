"""Where a replica's start-up time goes (cfstream.processor.startup)."""

from __future__ import annotations

import time

from cfstream.processor.startup import Startup, process_age


def test_the_phases_are_reported_once_in_order_and_add_up_to_the_process_age() -> None:
    startup = Startup()
    time.sleep(0.01)
    startup.mark("topics")
    startup.mark("group join")
    startup.mark("topics")  # marked once: a later assignment is not start-up
    phases = startup.first_records()
    assert phases is not None
    assert list(phases) == ["interpreter and imports", "topics", "group join", "first fetch"]
    assert phases["topics"] >= 0.01
    age = process_age()
    assert age is not None and abs(sum(phases.values()) - age) < 0.1
    assert startup.first_records() is None
    startup.mark("restore")
    assert "restore" not in phases and startup.done
