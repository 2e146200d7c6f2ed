"""The background job that fills the review queue from the prediction log.

It runs once per `review_interval_s` window across every replica on the store
(the `review-sampling` lease, `feedback.windowed_job`), in the one worker per
replica that schedules drift runs. A run reads the rows logged since the start
of the last completed run's window (at most `LOOKBACK_WINDOWS` windows back, so
the first run after an outage reads a bounded range) and queues abstained,
sampled low-margin and audit rows. Sampling is fixed by each prediction id and
the queue holds an id once, so the overlap between consecutive runs queues
nothing twice; a failed run leaves its window not done, and the next poll (here
or in another replica) reads the same rows again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from feedback import review
from feedback.db import SessionFactory
from feedback.log_reader import PredictionLogReader
from feedback.windowed_job import OncePerWindow, Window
from service.settings import FeedbackSettings

#: Lease name of the review sampling job.
REVIEW_JOB = "review-sampling"
#: How many windows back the first run (or one after an outage) reads.
LOOKBACK_WINDOWS = 2


def sampling_since(window: Window, interval_s: float) -> datetime:
    """Where a run for `window` starts reading the log."""
    interval = timedelta(seconds=interval_s)
    earliest = window.start - LOOKBACK_WINDOWS * interval
    if window.previous_end is None:
        return earliest
    return max(window.previous_end - interval, earliest)


class ReviewSampling:
    def __init__(
        self,
        settings: FeedbackSettings,
        sessions: SessionFactory,
        log_reader: PredictionLogReader,
        window: OncePerWindow,
    ):
        self.settings = settings
        self.sessions = sessions
        self.log_reader = log_reader
        self.window = window
        self.added = 0
        """Items this process added to the queue so far."""

    def run(self, window: Window) -> int:
        """One run: queue what was logged since `sampling_since(window)`."""
        s = self.settings
        with self.sessions() as session:
            added, _ = review.sample_review_items(
                session,
                log=self.log_reader,
                since=sampling_since(window, s.review_interval_s),
                margin=s.review_margin,
                sample_share=s.review_sample_share,
                audit_share=s.audit_share,
                limit_items=s.review_max_items,
            )
        self.added += added
        return added

    def start(self) -> ReviewSampling:
        # Nothing to stop mid-run: a run is one read and one insert.
        self.window.start_windowed(self.run, on_lost=lambda: None)
        return self

    def stop(self) -> None:
        self.window.stop()
