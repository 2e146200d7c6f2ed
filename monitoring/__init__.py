"""Monitoring: Prometheus metrics, the Evidently drift job, and the retraining trigger.

- `metrics.ServiceMetrics`: every metric the service exposes, created on a registry
  passed in, correct with several BentoML workers (Prometheus multiprocess mode).
- `drift.run_drift` / `drift_job.DriftJob`: compare the latest logged window with the
  pack's reference data, save an HTML report and an Evidently workspace snapshot.
- `retraining.RetrainTrigger`: turn drift results and report rates into retraining
  requests (a store row, a metric and a hook).
- `cli`: `python -m monitoring.cli drift|ui|prometheus|up` for cron and local use.

Nothing here imports Evidently at module import time: it costs ~4 s and ~280 MiB, so
it is loaded lazily inside the drift job, never on worker start-up.
"""
