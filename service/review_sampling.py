"""The background job that fills the review queue from the prediction log.

One worker runs it (the one that schedules drift runs). It reads the rows logged
since its last pass through `feedback.review.logged_rows` and queues abstained,
sampled low-margin and audit rows; a failed pass is logged and retried at the
next interval from the same point.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from feedback import review
from feedback.db import SessionFactory
from feedback.log_reader import PredictionLogReader
from feedback.models import utcnow
from service.settings import FeedbackSettings

log = logging.getLogger(__name__)


class ReviewSampling:
    def __init__(
        self,
        settings: FeedbackSettings,
        sessions: SessionFactory,
        log_reader: PredictionLogReader,
    ):
        self.settings = settings
        self.sessions = sessions
        self.log_reader = log_reader
        # A restart looks back one interval: rows logged while no worker ran the
        # job are not queued, which a sample can afford.
        self.since: datetime | None = utcnow() - timedelta(
            seconds=settings.review_interval_s
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="review", daemon=True)

    def run_once(self) -> int:
        s = self.settings
        with self.sessions() as session:
            added, self.since = review.sample_review_items(
                session,
                log=self.log_reader,
                since=self.since,
                margin=s.review_margin,
                sample_share=s.review_sample_share,
                audit_share=s.audit_share,
            )
        return added

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.review_interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("review sampling failed")

    def start(self) -> ReviewSampling:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
