"""What one page shows, read from its query string: the section, its filters, its page, and
the chart range. The snapshot for a page holds only what its section shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cfstream.console.paging import PAGE_SIZE, Cursor, page_size, parse_cursor

SECTIONS = ("overview", "task", "pending", "executions", "events", "dead-letters", "story")
# Chart ranges offered, in seconds: 15 minutes (the default) and an hour.
SPANS = (900, 3600)


@dataclass(frozen=True)
class View:
    section: str = "overview"
    scope: str = ""  # the task of the per-task view, exact
    task: str = ""  # lists: task names containing this
    key: str = ""  # pending: defer keys containing this
    text: str = ""  # events: ids or defer keys containing this
    type: str = ""  # events: this type only
    status: str = ""  # executions: this status only
    after: Cursor | None = None
    limit: int = PAGE_SIZE
    span_s: int = SPANS[0]
    story: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> View:
        section = query.get("section", "overview")
        span = query.get("span", "")
        return cls(
            section=section if section in SECTIONS else "overview",
            scope=query.get("scope", ""), task=query.get("task", ""),
            key=query.get("key", ""), text=query.get("text", ""),
            type=query.get("type", ""), status=query.get("status", ""),
            after=parse_cursor(query.get("after", "")),
            limit=page_size(query.get("limit", "")),
            span_s=int(span) if span.isdigit() and int(span) in SPANS else SPANS[0],
            story=query.get("story", "").strip())
