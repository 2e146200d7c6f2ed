"""Feedback: the prediction log, bad-result reports, regression cases and the gate.

Modules, one concept each:

    db              engines (SQLite / PostgreSQL), sessions, Alembic `migrate`
    models          SQLAlchemy rows
    schemas         pydantic models the HTTP layer accepts and returns
    store           functions over a session: reports, triage, cases, retention
    prediction_log  bounded write-behind queue of predictions (batched inserts)
    regression      replay cases + test table through candidate and baseline
    gate            promotion decision from a regression report
    replay          turn a pack directory (+ policy) into a predictor
    cli             `python -m feedback.cli migrate | regress | purge`
"""
