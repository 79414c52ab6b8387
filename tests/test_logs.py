"""configure_logging: JSON lines or plain text on the given stream."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from cfstream.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_emits_one_object_per_line() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    log = logging.getLogger("cfstream.test")
    log.info("fired %d calls", 3, extra={"partition": 4})
    try:
        raise ValueError("bad payload")
    except ValueError:
        log.exception("task failed")
    log.debug("not shown at INFO")

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO"
    assert first["logger"] == "cfstream.test"
    assert first["message"] == "fired 3 calls"
    assert first["exc"] is None
    assert first["partition"] == 4
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR"
    assert "ValueError: bad payload" in second["exc"]
    assert "Traceback" in second["exc"]


def test_json_survives_values_json_cannot_encode() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logging.getLogger("x").warning("odd", extra={"obj": object()})
    assert json.loads(out.getvalue())["obj"].startswith("<object object")


def test_text_is_plain_and_honours_the_level() -> None:
    out = io.StringIO()
    configure_logging("warning", "text", stream=out)
    logging.getLogger("cfstream.w").info("hidden")
    logging.getLogger("cfstream.w").warning("visible %s", "here")
    text = out.getvalue()
    assert "hidden" not in text
    assert "WARNING" in text and "cfstream.w: visible here" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "text", stream=first)
    configure_logging("INFO", "json", stream=second)
    logging.getLogger("r").info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "once"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="CFSTREAM_LOG_FORMAT"):
        configure_logging("INFO", "xml")
