"""Render one benchmark run as Markdown, check it against the benchmark's targets,
and write it into the results file between markers (the analysis around them
stays)."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtests.httpruns import CellResult, MixedResult
from loadtests.loadgen import LoadResult
from loadtests.servers import ALL, VARIANTS

SERVED_CODE = ("service", "guardrails", "feedback", "monitoring", "packs", "common")
BEGIN = "<!-- BEGIN GENERATED: python -m loadtests.benchmark -->"
END = "<!-- END GENERATED -->"
SERVER_ORDER = [
    "bare-defaults",
    "bare-tuned",
    "mounted-asgi",
    "raw-uvicorn",
    "full",
    *VARIANTS,
]


def machine() -> dict[str, str]:
    cpu = "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    versions = []
    for package in ("bentoml", "onnxruntime-gpu", "onnxruntime", "fastapi", "uvicorn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": ", ".join(versions),
    }


def code_version() -> str:
    """The commit measured, and whether the served code had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *SERVED_CODE],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"{head}" + (" with uncommitted changes" if dirty else "")


def _f(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


Cells = dict[tuple[str, str, int], CellResult]
"""Results by (body, server, connections)."""


def _cells(http: list[CellResult]) -> Cells:
    return {(r.cell.body, r.cell.server, r.cell.connections): r for r in http}


def _ratio(a: CellResult | None, b: CellResult | None, rows: bool = False) -> str:
    if a is None or b is None:
        return "–"
    x = (a.rows_per_s / b.rows_per_s) if rows else (a.rps / b.rps)
    return f"{x:.2f}×"


def _http_table(http: list[CellResult], bodies: tuple[str, ...], rows: bool) -> str:
    head = (
        "| server | body | conns | rows/s | req/s (median) | min–max | p50 ms "
        "| p95 ms | p99 ms | errors | server cores | other cores |"
        if rows
        else "| server | conns | req/s (median) | min–max | p50 ms | p95 ms | p99 ms "
        "| errors | server cores | other cores |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = {s: i for i, s in enumerate(SERVER_ORDER)}
    chosen = [r for r in http if r.cell.body in bodies]
    chosen.sort(
        key=lambda r: (
            order.get(r.cell.server, 99),
            bodies.index(r.cell.body),
            r.cell.connections,
        )
    )
    for r in chosen:
        c = r.cell
        common = (
            f"{_f(r.rps)} | {_f(r.rps_min)}–{_f(r.rps_max)} | {_ms(r.p50_ms)} "
            f"| {_ms(r.p95_ms)} | {_ms(r.p99_ms)} | {r.errors} "
            f"| {r.server_cores:.2f} | {r.background_cores:.2f} |"
        )
        if rows:
            lines.append(
                f"| {c.server} | {c.body} | {c.connections} | {_f(r.rows_per_s)} "
                f"| {common}"
            )
        else:
            label = c.server if c.body == "single" else f"{c.server} ({c.body})"
            lines.append(f"| {label} | {c.connections} | {common}")
    return "\n".join(lines)


Target = tuple[str, str, bool | None, str]
"""(target, measured, met, note); met is None where it could not be measured."""

_CONNS = (1, 16, 64)
_BARE = ("bare-defaults", "bare-tuned", "mounted-asgi", "raw-uvicorn")


def targets(data: dict[str, Any]) -> list[Target]:
    """(target, measured, met, note) for each of the benchmark's targets."""
    cells = _cells(data["http"])
    return [
        *_ratio_targets(cells),
        *_latency_targets(cells),
        *_reports_target(data),
        *_batch_targets(data["http"]),
        *_log_targets(data),
        *_drift_targets(data["drift"]),
    ]


def _ratio_targets(cells: Cells) -> list[Target]:
    """The full service's single-row req/s against the bare servers at 16 conns."""
    full16 = cells.get(("single", "full", 16))
    out: list[Target] = []
    for name, other, need in (
        ("single-row full ≥ 1.5× bare at defaults (16 conns)", "bare-defaults", 1.5),
        ("single-row full ≥ 0.9× tuned bare (16 conns)", "bare-tuned", 0.9),
        ("stretch: full ≥ 1.0× mounted raw ASGI (16 conns)", "mounted-asgi", 1.0),
    ):
        b = cells.get(("single", other, 16))
        if full16 is None or b is None:
            out.append((name, "not measured", None, ""))
            continue
        x = full16.rps / b.rps
        gap = "" if x >= need else f"short by {(need - x) / need:.0%}"
        out.append(
            (
                name,
                f"{x:.2f}× ({_f(full16.rps)} vs {_f(b.rps)} req/s)",
                x >= need,
                gap,
            )
        )
    return out


def _latency_targets(cells: Cells) -> list[Target]:
    """The full service's added median latency and its p99 on single rows."""
    out: list[Target] = []
    for c in (1, 16):
        f, t = cells.get(("single", "full", c)), cells.get(("single", "bare-tuned", c))
        if f and t:
            added = f.p50_ms - t.p50_ms
            out.append(
                (
                    f"added p50 ≤ 1 ms over tuned bare ({c} conns)",
                    f"{added:+.2f} ms ({_ms(f.p50_ms)} vs {_ms(t.p50_ms)})",
                    added <= 1.0,
                    "" if added <= 1.0 else f"over by {added - 1:.2f} ms",
                )
            )
    full16 = cells.get(("single", "full", 16))
    if full16:
        out.append(
            (
                "p99 < 50 ms at 16 clients (full, single rows)",
                f"{_ms(full16.p99_ms)} ms",
                full16.p99_ms < 50,
                "",
            )
        )
    return out


def _reports_target(data: dict[str, Any]) -> list[Target]:
    """No failed request while reports are filed, nor in any other full run."""
    mixed = data.get("mixed")
    full_errors = sum(r.errors for r in data["http"] if r.cell.server == "full")
    if mixed is None:
        return []
    bad = mixed.predictions.errors + len(mixed.report_failures) + full_errors
    return [
        (
            "zero failed requests under load while reports are written",
            f"{mixed.predictions.errors} failed predictions of "
            f"{mixed.predictions.requests:,}, {len(mixed.report_failures)} failed "
            f"reports of {mixed.reports_sent}; {full_errors} errors in all "
            "other full-service runs",
            bad == 0,
            "",
        )
    ]


def _batch_targets(http: list[CellResult]) -> list[Target]:
    """Rows/s of the full service's named and columnar 1,000-row batches."""
    out: list[Target] = []
    best_full = _best(http, "batch1000", "full")
    best_bare = _best(http, "batch1000", "bare-defaults")
    if best_full and best_bare:
        x = best_full.rows_per_s / best_bare.rows_per_s
        out.append(
            (
                "1,000-row named batches ≥ 1.0× bare rows/s (best conns each)",
                f"{x:.2f}× ({_f(best_full.rows_per_s)} vs "
                f"{_f(best_bare.rows_per_s)} rows/s)",
                x >= 1.0,
                "" if x >= 1 else f"short by {1 - x:.0%}",
            )
        )
    best_cols = _best(http, "columns1000", "full")
    if best_cols:
        out.append(
            (
                "columnar batches ≥ 1 M rows/s (full)",
                f"{_f(best_cols.rows_per_s)} rows/s",
                best_cols.rows_per_s >= 1e6,
                ""
                if best_cols.rows_per_s >= 1e6
                else f"short by {1 - best_cols.rows_per_s / 1e6:.0%}",
            )
        )
    return out


def _log_targets(data: dict[str, Any]) -> list[Target]:
    """The prediction log keeps up with the service's peak rates, dropping nothing."""
    out: list[Target] = []
    lograte = _log_rate(data["in_process"])
    peak = _peak_full_rows(data["http"], ("single", "single_context"))
    if peak:
        x = lograte / peak
        out.append(
            (
                "prediction log ≥ 10× peak single-row request rate",
                f"{x:.1f}× ({_f(lograte)} rows/s vs {_f(peak)} req/s)",
                x >= 10,
                "" if x >= 10 else f"short by {1 - x / 10:.0%}",
            )
        )
    peak_rows = _peak_full_rows(data["http"], ("batch1000", "columns1000"))
    dropped = data.get("log_counters", {}).get("dropped")
    written = data.get("log_counters", {}).get("written", 0)
    if peak_rows:
        out.append(
            (
                "… and without drops (log vs peak batch rows/s; rows dropped in run)",
                f"{lograte / peak_rows:.2f}× ({_f(lograte)} vs {_f(peak_rows)} rows/s);"
                f" dropped {_f(dropped or 0)} of "
                f"{_f(written + (dropped or 0))}",
                not dropped,
                "",
            )
        )
    return out


def _drift_targets(drift: list[dict[str, Any]]) -> list[Target]:
    """Time (and, up to 100k rows, peak memory) of the drift job per window size."""
    out: list[Target] = []
    for d in drift:
        if "error" in d:
            out.append((f"drift job on {d['rows']:,} rows", d["error"], None, ""))
            continue
        limit_s, limit_mib = (5, 600) if d["rows"] <= 100_000 else (30, None)
        ok = d["seconds"] < limit_s and (limit_mib is None or d["peak_mib"] < limit_mib)
        out.append(
            (
                f"drift job on {d['rows']:,} rows < {limit_s} s"
                + (f" and < {limit_mib} MiB" if limit_mib else ""),
                f"{d['seconds']:.2f} s (reading the window "
                f"{d.get('read_seconds', float('nan')):.2f} s; "
                f"+{d['import_seconds']:.1f} s import), "
                f"{d['peak_mib']:.0f} MiB peak",
                ok,
                "",
            )
        )
    return out


def _best(http: list[CellResult], body: str, server: str) -> CellResult | None:
    chosen = [r for r in http if r.cell.body == body and r.cell.server == server]
    return max(chosen, key=lambda r: r.rows_per_s, default=None)


def _log_rate(in_process: dict[str, Any]) -> float:
    """The log's sustained rows/s: the slower of plain rows and rows with a trace."""
    rates = [
        in_process[k]["rows_per_s"] for k in ("log", "log_context") if k in in_process
    ]
    return min(rates)


def _peak_full_rows(http: list[CellResult], bodies: tuple[str, ...]) -> float:
    chosen = [
        r.rows_per_s for r in http if r.cell.server == "full" and r.cell.body in bodies
    ]
    return max(chosen, default=0.0)


def render(data: dict[str, Any], *, command: str) -> str:
    http: list[CellResult] = data["http"]
    cells = _cells(http)
    ip = data["in_process"]
    lines = [
        *_header(data, command),
        *_targets_section(data),
        *_ratios_section(cells, ip),
        *_variants_section(http, cells),
        *_http_sections(http),
        *_in_process_section(ip),
        *_prediction_log_section(ip, data.get("log_counters") or {}),
        *_reports_section(data.get("mixed")),
        *_crosscheck_section(data["crosscheck"], cells),
        *_generator_cpu(http),
        *_drift_section(data["drift"]),
    ]
    return "\n".join(lines) + "\n"


def _header(data: dict[str, Any], command: str) -> list[str]:
    """When, on what machine and code, and how the load was generated."""
    m = machine()
    http: list[CellResult] = data["http"]
    bg = sorted(r.background_cores for r in http)
    lines = [
        f"Run {data['started']:%Y-%m-%d %H:%M} UTC, {data['seconds'] / 60:.1f} min: "
        f"`{command}`",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux "
        f"{m['kernel']}, Python {m['python']}; {m['versions']}.",
        f"- Code: commit {data.get('code', 'unknown')}. Model: `{data['pack']}` on "
        f"onnxruntime {data['in_process']['provider']}; one worker per server.",
        f"- Load generator: wrk (1 thread, keep-alive, closed loop), "
        f"{data['repeats']} × {data['duration_s']:g} s per cell, interleaved across "
        "servers; median shown, min–max across repeats. "
        + (
            "Servers pinned to CPU 0 and wrk to CPU 1 (taskset)."
            if data["pinned"]
            else "No CPU pinning."
        ),
        f"- Other load on the machine during HTTP runs (cores busy outside the "
        f"server and wrk): median {bg[len(bg) // 2]:.2f}, max {bg[-1]:.2f}."
        if bg
        else "",
    ]
    if data["rejected_rows"]:
        lines.append(
            f"- {len(data['rejected_rows'])} of 342 real penguins are outside the "
            "served policy's input bounds (422); payloads are drawn from the rest."
        )
    return lines


def _targets_section(data: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, measured, ok, note in targets(data):
        mark = "–" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {name} | {measured} | {mark}{' — ' + note if note else ''} |")
    return lines


def _ratios_section(cells: Cells, ip: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### Ratios",
        "",
        "| | " + " | ".join(f"{c} conns" for c in _CONNS) + " |",
        "|---|---|---|---|",
    ]
    for other in _BARE:
        label = f"single rows: full / {other}"
        lines.append(_ratio_row(label, cells, "single", "single", other))
    for other in _BARE:
        label = f"1000-row batches: full / {other}"
        lines.append(
            _ratio_row(label, cells, "batch1000", "batch1000", other, rows=True)
        )
    label = "columnar full / named bare-defaults"
    lines.append(
        _ratio_row(label, cells, "columns1000", "batch1000", "bare-defaults", rows=True)
    )
    return lines + _onnxruntime_ratios(cells, ip)


def _ratio_row(
    label: str,
    cells: Cells,
    full_body: str,
    other_body: str,
    other: str,
    *,
    rows: bool = False,
) -> str:
    row = [
        _ratio(
            cells.get((full_body, "full", c)),
            cells.get((other_body, other, c)),
            rows=rows,
        )
        for c in _CONNS
    ]
    return f"| {label} | " + " | ".join(row) + " |"


def _onnxruntime_ratios(cells: Cells, ip: dict[str, Any]) -> list[str]:
    """The service's rate as a fraction of bare `session.run` calls in process."""
    ort = {
        t["batch"]: t for t in ip["timings"] if t["what"] == "onnxruntime session.run"
    }
    lines = []
    if 1 in ort and ("single", "full", 1) in cells:
        svc = [
            cells[("single", "full", c)].rps / ort[1]["rows_per_s"]
            for c in _CONNS
            if ("single", "full", c) in cells
        ]
        lines.append(
            "| service / raw onnxruntime, single rows (req/s vs calls/s) | "
            + " | ".join(f"{x:.3f}×" for x in svc)
            + " |"
        )
    if 1000 in ort:
        row = []
        for c in _CONNS:
            r = cells.get(("batch1000", "full", c))
            row.append(f"{r.rows_per_s / ort[1000]['rows_per_s']:.3f}×" if r else "–")
        lines.append(
            "| service / raw onnxruntime, 1000-row batches (rows/s) | "
            + " | ".join(row)
            + " |"
        )
    return lines


def _variants_section(http: list[CellResult], cells: Cells) -> list[str]:
    variants = [v for v in VARIANTS if any(r.cell.server == v for r in http)]
    if not variants:
        return []
    lines = [
        "",
        "### Variants: the full app with one thing changed (loadtests/variants.py)",
        "",
        "| variant | what changed | single rows req/s, 16 conns (× full) "
        "| 1000-row batches rows/s, 1 conn (× full) |",
        "|---|---|---|---|",
    ]
    base_s = cells.get(("single", "full", 16))
    base_b = cells.get(("batch1000", "full", 1))
    for v in ["full", *variants]:
        s16 = cells.get(("single", v, 16))
        b1 = cells.get(("batch1000", v, 1))
        stxt = f"{_f(s16.rps)} ({_ratio(s16, base_s)})" if s16 else "–"
        btxt = f"{_f(b1.rows_per_s)} ({_ratio(b1, base_b, rows=True)})" if b1 else "–"
        lines.append(f"| {v} | {ALL[v][0]} | {stxt} | {btxt} |")
    return lines


def _http_sections(http: list[CellResult]) -> list[str]:
    return [
        "",
        "### Single-row requests",
        "",
        _http_table(http, ("single", "single_context"), rows=False),
        "",
        "`single_context` rows (full only) carry an island context.",
        "",
        "### 1,000-row batches",
        "",
        _http_table(http, ("batch1000", "columns1000"), rows=True),
    ]


def _in_process_section(ip: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### In-process (no HTTP)",
        "",
        "| what | batch | µs per call | µs per row | rows/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in ip["timings"]:
        lines.append(
            f"| {t['what']} | {t['batch']} | {t['us_per_call']:,.1f} "
            f"| {t['us_per_row']:,.3f} | {_f(t['rows_per_s'])} |"
        )
    lines += [
        "",
        "Our service code per request without an HTTP server (`PredictRequest."
        "model_validate_json` → `DataPlane.predict` with real metrics and prediction "
        "log → `orjson.dumps`):",
        "",
        "| body | part | µs per request | rows/s |",
        "|---|---|---:|---:|",
    ]
    for s in ip["service_code"]:
        lines.append(
            f"| {s['body']} | {s['part']} | {s['us_per_request']:,.1f} "
            f"| {_f(s['rows_per_s'])} |"
        )
    return lines


def _prediction_log_section(
    ip: dict[str, Any], counters: dict[str, float]
) -> list[str]:
    lines = ["", "### Prediction log", ""]
    for key in ("log", "log_context"):
        lg = ip.get(key)
        if lg is None:
            continue
        what = (
            f"context {lg['context']} (a trace stored on {_f(lg['traced_rows'])} rows)"
            if lg.get("context")
            else f"no context ({_f(lg.get('traced_rows', 0))} rows with a trace)"
        )
        lines.append(
            f"- `PredictionLog` into a fresh SQLite file (WAL), fed the service's "
            f"1,000-row `LogBatch`es, {what}: {_f(lg['rows'])} rows in "
            f"{lg['seconds']:.2f} s = **{_f(lg['rows_per_s'])} rows/s** sustained, "
            f"{lg['dropped']} dropped; `submit_batch` costs "
            f"{lg['submit_us_per_row']:.4f} µs per row on the request path."
        )
    if counters:
        lines.append(
            f"- The full service during this benchmark: "
            f"{_f(counters.get('written', 0))} rows written, "
            f"{_f(counters.get('dropped', 0))} dropped (queue bound 100,000 rows)."
        )
    return lines


def _reports_section(mixed: MixedResult | None) -> list[str]:
    if mixed is None:
        return []
    return [
        "",
        "### Reports under load",
        "",
        f"Full service, single rows at 16 connections while one client files "
        f"reports (Idempotency-Key; every fifth a retry): "
        f"{_f(mixed.predictions.rps)} req/s, "
        f"p99 {_ms(mixed.predictions.p99_ms)} ms, "
        f"{mixed.predictions.errors} failed predictions; {mixed.reports_sent} "
        f"reports: {mixed.reports_created} created, {mixed.reports_replayed} "
        f"replayed, {len(mixed.report_failures)} failed"
        + (f" (first: `{mixed.report_failures[0]}`)" if mixed.report_failures else "")
        + ".",
    ]


def _crosscheck_section(
    crosscheck: list[tuple[str, int, LoadResult]],
    cells: Cells,
) -> list[str]:
    if not crosscheck:
        return []
    lines = [
        "",
        "### Latency cross-check: hey vs wrk (single rows)",
        "",
        "hey measures with its own clock at 0.1 ms resolution and costs ~5× "
        "wrk's CPU per request, so its req/s is lower.",
        "",
        "| server | conns | hey req/s | hey p50 / p95 / p99 ms "
        "| wrk p50 / p95 / p99 ms | hey CPU s per 1000 req |",
        "|---|---:|---:|---|---|---:|",
    ]
    for name, c, h in crosscheck:
        w = cells.get(("single", name, c))
        wtxt = f"{_ms(w.p50_ms)} / {_ms(w.p95_ms)} / {_ms(w.p99_ms)}" if w else "–"
        per = h.generator_cpu_s / h.requests * 1000 if h.requests else float("nan")
        lines.append(
            f"| {name} | {c} | {_f(h.rps)} | {_ms(h.p50_ms)} / {_ms(h.p95_ms)} / "
            f"{_ms(h.p99_ms)} | {wtxt} | {per:.3f} |"
        )
    return lines


def _generator_cpu(http: list[CellResult]) -> list[str]:
    wrk_cpu = sum(r.generator_cpu_s_per_1000 * r.requests for r in http) / max(
        sum(r.requests for r in http), 1
    )
    return ["", f"wrk's own CPU in this run: {wrk_cpu:.3f} s per 1,000 requests."]


def _drift_section(drift: list[dict[str, Any]]) -> list[str]:
    lines = ["", "### Drift job", ""]
    for d in drift:
        if "error" in d:
            lines.append(f"- {d['rows']:,} rows: {d['error']}")
        else:
            lines.append(
                f"- {d['rows']:,} logged rows read from a SQLite store vs the pack's "
                f"{d.get('reference_rows', '?'):,} reference rows, end to end (read "
                f"{d.get('read_seconds', float('nan')):.2f} s, Evidently, HTML, "
                f"snapshot, gauges): {d['seconds']:.2f} s "
                f"(+ {d['import_seconds']:.1f} s Evidently import, once per process), "
                f"peak RSS {d['peak_mib']:.0f} MiB (`monitoring.bench_drift`)."
            )
    return lines


def write(path: Path, generated: str) -> None:
    """Replace the generated block of `path` (or create the file around it)."""
    block = f"{BEGIN}\n{generated}{END}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        text = path.read_text()
        if BEGIN in text and END in text:
            pattern = re.escape(BEGIN) + r".*?" + re.escape(END)
            path.write_text(re.sub(pattern, lambda _m: block, text, flags=re.S))
            return
    path.write_text(f"# Benchmark results\n\n{block}\n")
