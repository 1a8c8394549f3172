"""Keyset pagination: a page of items and the cursor (the last id) to ask for the next one.

Every list endpoint pages by primary key, so a page never shifts when rows arrive while a client pages.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

ItemT = TypeVar("ItemT")
RowT = TypeVar("RowT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list; `next_cursor` is None on the last page (pass it back as `?cursor=`)."""

    items: list[ItemT]
    next_cursor: int | None = None


def keyset_page(
    session: Session,
    query: Select[RowT],
    id_column: InstrumentedAttribute[Any],
    *,
    cursor: int | None,
    limit: int,
    newest_first: bool = False,
) -> tuple[list[RowT], int | None]:
    """One page of `query` ordered by `id_column` after `cursor`, and the cursor of the next page."""
    query = query.order_by(id_column.desc() if newest_first else id_column)
    if cursor is not None:
        query = query.where(id_column < cursor if newest_first else id_column > cursor)
    return cut_page(list(session.scalars(query.limit(limit + 1))), limit)


def cut_page(rows: list[RowT], limit: int) -> tuple[list[RowT], int | None]:
    """The first `limit` of `rows` (fetched `limit + 1` deep) and the next cursor, None when none is left."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if has_more and rows else None)  # type: ignore[attr-defined]
