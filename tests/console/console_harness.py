"""The console tests' pipeline record and a console process started on a free port."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import harness
from harness import Services


@dataclass
class Pipeline(harness.Pipeline):
    """The pipeline tests' record, plus where the console serves."""

    console_url: str


def start_console(services: Services, name: str = "console", *args: str,
                  timeout: float = 60) -> str:
    """Start ``cfstream console --port 0`` and return its URL, read from its log."""
    console = services.start(name, ["console", "--port", "0", *args])
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"console on (http://\S+)", services.log(name))
        if found:
            return found.group(1)
        assert console.running, services.log(name)[-3000:]
        assert time.monotonic() < deadline, f"console did not start: {services.log(name)}"
        time.sleep(0.1)
