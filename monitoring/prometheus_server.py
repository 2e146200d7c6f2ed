"""Run a local Prometheus server (Debian's package) against the service.

`write_config` renders `prometheus/prometheus.yml.tmpl` with the scrape targets and
the project's alert rules; `server_command` builds the command line, listening on
127.0.0.1 only. `install_prometheus.sh` installs the binaries when missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from string import Template

from monitoring.errors import PrometheusNotInstalled

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "prometheus" / "prometheus.yml.tmpl"
RULES = HERE / "prometheus" / "rules.yml"
RULES_TEST = HERE / "prometheus" / "rules_test.yml"
INSTALL_SCRIPT = HERE / "install_prometheus.sh"


def find_binary(name: str) -> str:
    """Absolute path of `prometheus` or `promtool`, or `PrometheusNotInstalled`."""
    path = shutil.which(name)
    if path is None:
        raise PrometheusNotInstalled(name)
    return path


def render_config(
    targets: Sequence[str], *, scrape_interval_s: float = 5.0, rules: Path = RULES
) -> str:
    if not targets:
        raise ValueError("at least one scrape target (host:port) is needed")
    return Template(TEMPLATE.read_text()).substitute(
        scrape_interval=f"{scrape_interval_s:g}s",
        rules_file=f'"{Path(rules).resolve()}"',
        targets=", ".join(f'"{t}"' for t in targets),
    )


def write_config(
    data_dir: Path,
    targets: Sequence[str],
    *,
    scrape_interval_s: float = 5.0,
    rules: Path = RULES,
) -> Path:
    """Write `data_dir/prometheus.yml`; returns its path."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "prometheus.yml"
    path.write_text(
        render_config(targets, scrape_interval_s=scrape_interval_s, rules=rules)
    )
    return path


def server_command(
    config: Path, data_dir: Path, *, port: int, retention: str = "15d"
) -> list[str]:
    """The `prometheus` command line: loopback only, TSDB under `data_dir/tsdb`."""
    return [
        find_binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={Path(data_dir) / 'tsdb'}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
