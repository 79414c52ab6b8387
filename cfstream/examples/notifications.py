"""The seed page's examples: a reminder after a delay, and debounced notifications."""

from __future__ import annotations

import datetime as dt
import logging

import cfstream as cf

logger = logging.getLogger(__name__)


@cf.task(delay=dt.timedelta(seconds=3))
def send_reminder(reminder_id: int) -> str:
    logger.info("reminder %s sent", reminder_id)
    return f"reminder {reminder_id} sent"


@cf.task(delay=2, defer=True)
def send_notification(user_id: int, document_id: int) -> str:
    logger.info("notified user %s about document %s", user_id, document_id)
    return f"user {user_id} notified about document {document_id}"


@cf.task(delay=2, defer=lambda u, d, _: f"#{u}:#{d}")
def send_notification2(user_id: int, document_id: int, update: str) -> str:
    logger.info("notified user %s about %s on document %s", user_id, update, document_id)
    return f"user {user_id} notified about {update} on document {document_id}"
