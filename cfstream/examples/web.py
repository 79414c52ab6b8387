"""An asyncio web service that submits calls and awaits them (FastAPI):

    cfstream worker cfstream.examples.web          # runs the tasks below
    uvicorn cfstream.examples.web:app              # serves the endpoints

Nothing here blocks the event loop: ``submit`` only queues a record, and awaiting an execution
waits on the process's one events reader.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException

import cfstream as cf

app = FastAPI(title="documents")


@cf.task(delay=1, defer=True)
async def render_preview(document_id: int) -> str:
    """Debounced: a burst of edits renders the preview once, a second after the last edit."""
    return f"preview of document {document_id}"


@cf.task
def word_count(text: str) -> int:
    if not text:
        raise ValueError("nothing to count")
    return len(text.split())


@app.post("/documents/{document_id}/edits", status_code=202)
async def edited(document_id: int) -> dict[str, str]:
    """Schedule a preview; answers at once with the execution to ask about."""
    execution = render_preview.submit(document_id)
    return {"execution_id": execution.id}


@app.post("/word-count")
async def count_words(text: str) -> dict[str, int]:
    """Run a task and answer with its result."""
    try:
        return {"words": await word_count.submit(text)}
    except cf.ExecutionFailed as exc:
        raise HTTPException(422, f"{exc.error_type}: {exc.message}") from exc


@app.get("/executions/{execution_id}")
async def execution(execution_id: str, wait: float = 0.0) -> dict[str, Any]:
    """An execution's state; with ``wait``, its result once it has one (up to that long)."""
    handle = cf.Execution(execution_id)
    if wait <= 0:
        return {"status": await handle.status_async()}
    try:
        return {"status": "succeeded", "result": await handle.result_async(timeout=wait)}
    except TimeoutError:
        return {"status": await handle.status_async()}
    except cf.ExecutionFailed as exc:
        return {"status": "failed", "error": f"{exc.error_type}: {exc.message}"}
    except cf.ExecutionCancelled as exc:
        return {"status": "cancelled", "reason": exc.reason}
