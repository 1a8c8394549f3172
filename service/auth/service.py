"""API tokens: created with a random secret shown once, stored as its sha256, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Dialect, Engine, bindparam, select
from sqlalchemy.orm import Session

from service.auth.models import ApiToken, Scope
from service.db import begin_write, utcnow
from service.problems import ConflictError, InvalidInputError, NotFoundError

TOKEN_PREFIX = "lf_"


def hash_secret(secret: str) -> str:
    """The sha256 hex digest under which a secret is stored (the secret itself never is)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(scopes: Iterable[str]) -> list[Scope]:
    """Validated, de-duplicated scopes; an unknown one is an `InvalidInputError` naming it."""
    parsed: list[Scope] = []
    for raw in scopes:
        name = raw.strip()
        if not name:
            continue
        try:
            scope = Scope(name)
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise InvalidInputError.at(["scopes"], f"unknown scope {name!r} (known: {known})") from None
        if scope not in parsed:
            parsed.append(scope)
    if not parsed:
        raise InvalidInputError.at(["scopes"], "at least one scope is needed")
    return parsed


def create_token(session: Session, name: str, scopes: Iterable[str]) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the secret, which is never stored and cannot be shown again."""
    parsed = parse_scopes(scopes)
    begin_write(session)
    if session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise ConflictError(f"a token named {name!r} exists already")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, secret_sha256=hash_secret(secret), scopes=[s.value for s in parsed])
    session.add(token)
    session.commit()
    return token, secret


class AuthenticatedToken(NamedTuple):
    """What a request needs of its live token: who it is and what it may do."""

    name: str
    scopes: list[str]


#: Built once, with the digest bound per call: this check runs on every authenticated request.
_LIVE_TOKEN = select(ApiToken.secret_sha256, ApiToken.name, ApiToken.scopes).where(
    ApiToken.secret_sha256 == bindparam("digest"), ApiToken.revoked_at.is_(None)
)


@dataclass(frozen=True)
class _RawTokenQuery:
    """`_LIVE_TOKEN` compiled for one dialect: its SQL text, its parameter style and the scopes column's
    result processor (JSON text on SQLite, already decoded by the PostgreSQL driver)."""

    sql: str
    positional: bool
    scopes: Callable[[Any], Any] | None

    @classmethod
    def of(cls, dialect: Dialect) -> _RawTokenQuery:
        compiled = _LIVE_TOKEN.compile(dialect=dialect)
        scopes_type = ApiToken.__table__.c.scopes.type.dialect_impl(dialect)
        return cls(str(compiled), compiled.positional, scopes_type.result_processor(dialect, None))


_RAW_QUERIES: dict[str, _RawTokenQuery] = {}


def authenticate(session: Session, secret: str) -> AuthenticatedToken | None:
    """The live (unrevoked) token whose secret this is, or None; read on every call, so a revocation
    holds from the next request on."""
    digest = hash_secret(secret)
    engine = session.get_bind()
    if not isinstance(engine, Engine):  # a session bound to one connection reads on it
        return _token_of(session.connection().execute(_LIVE_TOKEN, {"digest": digest}).first(), digest)
    query = _RAW_QUERIES.get(engine.dialect.name)
    if query is None:
        query = _RAW_QUERIES.setdefault(engine.dialect.name, _RawTokenQuery.of(engine.dialect))
    # One select on a pooled DBAPI connection of its own, outside any transaction of the request's session:
    # through the session it also cost a BEGIN, the execution layers and two rollbacks — 25 µs vs 230 µs
    # a check (SQLite, same process), a fifth of answering a one-config predict.
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(query.sql, (digest,) if query.positional else {"digest": digest})
        row = cursor.fetchone()
        cursor.close()
    finally:
        connection.close()
    if row is not None and query.scopes is not None:
        row = (row[0], row[1], query.scopes(row[2]))
    return _token_of(row, digest)


def _token_of(row: Sequence[Any] | None, digest: str) -> AuthenticatedToken | None:
    """The token of a `_LIVE_TOKEN` row (digest, name, scopes), or None."""
    # The lookup is by digest; the constant-time compare keeps the final check free of timing leaks.
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    return AuthenticatedToken(row[1], list(row[2]))


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, oldest first (secrets are not there to list)."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, name: str) -> ApiToken:
    """Revoke a token by name; later requests with its secret get 401."""
    begin_write(session)
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise NotFoundError(f"no token named {name!r}")
    token.revoked_at = token.revoked_at or utcnow()
    session.commit()
    return token
