"""A real pipeline (processor and worker processes), a real ``cfstream console`` process, and a
real headless Chromium driven by Playwright.

Playwright drives the Debian ``chromium`` binary (``executable_path``): its own browser download
is not needed. Without Chromium the tests error with one line saying how to get it.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cfstream as cf
from cfstream.kafka.topics import ensure_topics

PIPELINE = Path(__file__).parent.parent / "pipeline"
sys.path.insert(0, str(PIPELINE))

from console_harness import Pipeline, start_console  # noqa: E402
from harness import EventLog, Services  # noqa: E402

NO_CHROMIUM = ("Chromium not found: `apt-get update && apt-get install -y chromium` (Debian), "
               "or set CFSTREAM_CHROMIUM to a Chromium binary")
# A cold processor joins the group, creates its changelog and restores before it fires anything.
READY_TIMEOUT = 120


def chromium_path() -> str | None:
    chosen = os.environ.get("CFSTREAM_CHROMIUM")
    if chosen:
        return shutil.which(chosen)
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module: Playwright's sync API holds an event loop on this thread while it runs,
    and asyncio.run() in later tests must not find one."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        pytest.fail(NO_CHROMIUM, pytrace=False)
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # The clipboard permissions: the tests read back what a copy button copied.
    context = browser.new_context(viewport={"width": 1360, "height": 900},
                                  permissions=["clipboard-read", "clipboard-write"])
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A processor, a worker and a console on a topic prefix of their own."""
    import pipeline_tasks

    prefix = f"console-{uuid.uuid4().hex[:8]}"
    settings = cf.Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=4)
    ensure_topics(settings)
    services = Services(settings, tmp_path_factory.mktemp(prefix))
    client = cf.configure(settings)
    events = EventLog(settings)
    try:
        services.processor()
        services.worker()
        pipeline_tasks.slow.submit_to(client, 0).result(timeout=READY_TIMEOUT)
        yield Pipeline(settings, services, client, events, start_console(services))
    finally:
        events.close()
        services.close()
        cf.configure(None)
