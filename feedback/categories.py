"""The managed list of report categories: what triage tags and the metric counts.

Error analysis finds new categories as it goes, so triage can add one at any
time; names are normalised the way report categories are (trimmed, lower-case).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedback.db import begin_write
from feedback.errors import BadCategory, store_function
from feedback.models import Category

MAX_NAME_CHARS = 64


def normalise(name: str) -> str:
    """A category name as stored: trimmed, lower-case, 1-64 characters."""
    clean = " ".join(name.split()).lower()
    if not clean or len(clean) > MAX_NAME_CHARS:
        raise BadCategory(name, MAX_NAME_CHARS)
    return clean


@store_function
def list_categories(session: Session) -> list[Category]:
    """Every managed category, by name."""
    return list(session.scalars(select(Category).order_by(Category.name)))


def category_names(session: Session) -> list[str]:
    return [c.name for c in list_categories(session)]


@store_function
def add_category(
    session: Session, *, name: str, description: str | None = None
) -> tuple[Category, bool]:
    """Add a category (committed); returns (category, created). Idempotent by name."""
    clean = normalise(name)
    begin_write(session)
    existing = session.scalars(select(Category).where(Category.name == clean)).first()
    if existing is not None:
        return existing, False
    row = Category(name=clean, description=description or None)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        # Another triager added the same name first.
        session.rollback()
        return session.scalars(
            select(Category).where(Category.name == clean)
        ).one(), False
    return row, True
