"""The console in a real Chromium, after a real pipeline ran: what a user sees and does."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pipeline_tasks
import pytest
from confluent_kafka import Producer
from console_harness import Pipeline
from playwright.sync_api import expect

pytestmark = pytest.mark.kafka

# Pending calls in these tests wait this long, so they are still pending when looked at.
LONG = 600
TIMEOUT_MS = 30_000
XSS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>"]


def row(page: Any, execution_id: str) -> Any:
    return page.locator(f'#pending tr[data-id="{execution_id}"]')


def burst_story(pipeline: Pipeline, page: Any, key: str, edits: int) -> list[Any]:
    """Edits of one document collapse into one run; the page shows the first edit's story."""
    burst = [pipeline_tasks.notify_update.submit_to(pipeline.client, key, 3, f"edit {i}")
             for i in range(edits)]
    assert burst[-1].result(timeout=60) == f"{key}:3:edit {edits - 1}"
    page.goto(pipeline.console_url)
    page.fill("#story-id", burst[0].id)
    page.click("#story-form button")
    expect(page.locator("#story-status")).to_have_text("status: succeeded", timeout=TIMEOUT_MS)
    expect(page.locator("#story .step")).to_have_count(edits)
    return burst


def test_pending_calls_show_their_arguments_as_text_and_are_searchable(
        pipeline: Pipeline, page: Any) -> None:
    waiting = pipeline_tasks.notify.with_delay(LONG)
    ids = [waiting.submit_to(pipeline.client, text, 7).id for text in XSS]
    page.goto(pipeline.console_url)
    for execution_id, text in zip(ids, XSS, strict=True):
        expect(row(page, execution_id).locator(".args")).to_have_text(
            json.dumps([text, 7], separators=(",", ":")), timeout=TIMEOUT_MS)
        countdown = re.compile(r"^5\d\d\.\d s$")
        expect(row(page, execution_id).locator(".due")).to_have_text(countdown)
    assert page.evaluate("window.__xss") is None
    expect(page.locator("#pending img, #pending script")).to_have_count(0)

    page.fill("#search-key", "script")  # the canonical defer key holds the arguments
    expect(page.locator("#pending tbody tr")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(row(page, ids[1])).to_have_count(1)
    page.fill("#search-key", "")
    page.fill("#search-task", "no-such-task")
    expect(page.locator("#pending tbody tr")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.locator("#pending-count")).to_have_text("0 of 2")


def test_a_new_call_appears_without_a_reload(pipeline: Pipeline, page: Any) -> None:
    page.goto(pipeline.console_url)
    expect(page.locator("#status")).to_have_text(re.compile("^live"), timeout=TIMEOUT_MS)
    page.evaluate("window.__same_page = true")
    waiting = pipeline_tasks.notify.with_delay(LONG)
    execution = waiting.submit_to(pipeline.client, "live", 1)
    expect(row(page, execution.id)).to_have_count(1, timeout=TIMEOUT_MS)
    task_row = page.locator(f'#tasks tr[data-task="{pipeline_tasks.notify.name}"]')
    expect(task_row).to_have_count(1)
    assert page.evaluate("window.__same_page") is True


def test_an_executions_story_follows_its_deferral_chain_to_the_result(
        pipeline: Pipeline, page: Any) -> None:
    burst = burst_story(pipeline, page, "u", 3)
    for i, execution in enumerate(burst):
        expect(page.locator("#story .step").nth(i)).to_have_attribute("data-id", execution.id)
    expect(page.locator("#story .step").nth(0)).to_contain_text("replaced")
    expect(page.locator("#story .result")).to_have_text('"u:3:edit 2"')

    failing = pipeline_tasks.explode.submit_to(pipeline.client, "t", 1)
    pipeline.events.one(failing.id, "failed", timeout=60)
    page.fill("#story-id", failing.id)
    page.click("#story-form button")
    expect(page.locator("#story-status")).to_have_text("status: failed", timeout=TIMEOUT_MS)
    expect(page.locator("#story .traceback")).to_contain_text("ValueError: boom t attempt 1")


def test_a_pending_call_is_cancelled_after_a_confirmation(pipeline: Pipeline, page: Any) -> None:
    waiting = pipeline_tasks.notify.with_delay(LONG)
    execution = waiting.submit_to(pipeline.client, "cancel me", 9)
    page.goto(pipeline.console_url)
    target = row(page, execution.id)
    target.locator("button.cancel").click(timeout=TIMEOUT_MS)
    expect(target.locator("button.confirm")).to_have_text("yes, cancel it")
    assert not pipeline.events.of(execution.id, "cancelled")  # nothing before confirming
    target.locator("button.confirm").click()
    cancelled = pipeline.events.one(execution.id, "cancelled", timeout=30)
    assert cancelled["reason"] == "cancelled from the console"
    expect(target).to_have_count(0, timeout=TIMEOUT_MS)
    target.page.fill("#story-id", execution.id)
    page.click("#story-form button")
    expect(page.locator("#story-status")).to_have_text("status: cancelled", timeout=TIMEOUT_MS)


def test_cancel_requests_not_from_the_page_are_refused(pipeline: Pipeline) -> None:
    def post(headers: dict[str, str]) -> int:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{pipeline.console_url}/api/cancel", data=b'{"id": "x"}', method="POST",
            headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback
                return 200
        except urllib.error.HTTPError as exc:
            return exc.code

    assert pipeline.console_url.startswith("http://127.0.0.1:")  # loopback by default
    with urllib.request.urlopen(pipeline.console_url, timeout=10) as response:  # noqa: S310
        token = re.search(r'name="csrf-token" content="(\w+)"', response.read().decode())
    assert token is not None
    assert post({}) == 403
    assert post({"X-CSRF-Token": "guess"}) == 403
    assert post({"X-CSRF-Token": token[1], "Origin": "http://evil.example"}) == 403
    assert post({"X-CSRF-Token": token[1], "Origin": pipeline.console_url}) == 404  # not pending


def test_dead_letters_are_counted(pipeline: Pipeline, page: Any) -> None:
    page.goto(pipeline.console_url)
    expect(page.locator("#dead-letters")).to_have_text("0", timeout=TIMEOUT_MS)
    producer = Producer({"bootstrap.servers": pipeline.settings.bootstrap_servers})
    producer.produce(pipeline.settings.calls_topic, key=b"k", value=b"not json")
    assert producer.flush(30) == 0
    expect(page.locator("#dead-letters")).to_have_text("1", timeout=TIMEOUT_MS)


def test_a_screenshot_of_a_burst_collapsing(pipeline: Pipeline, page: Any,
                                            tmp_path: Path) -> None:
    """docs/operations.md's picture: CFSTREAM_CONSOLE_SCREENSHOT=docs/console.png writes it."""
    later = pipeline_tasks.notify.with_delay(LONG).submit_to(pipeline.client, "ada", 42)
    burst_story(pipeline, page, "7", 5)
    expect(row(page, later.id)).to_have_count(1, timeout=TIMEOUT_MS)
    path = Path(os.environ.get("CFSTREAM_CONSOLE_SCREENSHOT") or tmp_path / "console.png")
    page.set_viewport_size({"width": 1360, "height": 1300})
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000


def test_the_console_stops_on_sigterm(pipeline: Pipeline) -> None:
    assert pipeline.services.started["console"].stop(timeout=30) == 0, (
        pipeline.services.log("console")[-3000:])
