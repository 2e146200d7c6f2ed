"""Errors raised by the monitoring package.

    common.errors.ServiceError (500)
    └── MonitoringError (500)          monitoring failed; never a user's fault
        ├── DriftInputInvalid          the log window or reference lacks columns
        └── PrometheusNotInstalled     `prometheus` / `promtool` binary missing

Monitoring runs off the request path, so these reach operators (logs, CLI exit
codes), not API clients.
"""

from __future__ import annotations

from common.errors import ServiceError


class MonitoringError(ServiceError):
    code = "monitoring_error"


class DriftInputInvalid(MonitoringError):
    def __init__(self, table: str, missing: list[str], present: list[str]):
        super().__init__(
            f"{table} lacks columns {missing}; it has {present}",
            table=table,
            missing=missing,
        )


class PrometheusNotInstalled(MonitoringError):
    def __init__(self, binary: str):
        super().__init__(
            f"`{binary}` not found on PATH; run monitoring/install_prometheus.sh "
            "(Debian package `prometheus`)",
            binary=binary,
        )
