"""Feedback: the prediction log, bad-result reports, regression cases and the gate.

Modules, one concept each:

    db              engines (SQLite / PostgreSQL), sessions, Alembic `migrate`
    models          SQLAlchemy rows
    schemas         pydantic models the HTTP layer accepts and returns
    store           functions over a session: reports, triage, cases, retention
    prediction_log  the log's writer: per-worker write-ahead segments (a record
                    per request), appended before each answer, compacted to Parquet
    log_segments    segment file names (time range, writer), the Arrow schema, rows
                    as Arrow record batches and as cheap rows records
    log_wal         the write-ahead record format, read incrementally
    log_reader      lookups by id, windows, rows/counts since, retention
    log_window      the drift window as a DataFrame
    regression      replay cases + test table through candidate and baseline
    gate            promotion decision from a regression report
    replay          turn a pack directory (+ policy) into a predictor
    cli             `python -m feedback.cli migrate | regress | purge`
"""
