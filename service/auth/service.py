"""API tokens: created with a random secret shown once, stored as its sha256, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import bindparam, select
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


#: Built once, with the digest bound per call: this check runs on every authenticated request, and a
#: cached column select costs about half of building and loading an ORM query each time.
_LIVE_TOKEN = select(ApiToken.secret_sha256, ApiToken.name, ApiToken.scopes).where(
    ApiToken.secret_sha256 == bindparam("digest"), ApiToken.revoked_at.is_(None)
)


def authenticate(session: Session, secret: str) -> AuthenticatedToken | None:
    """The live (unrevoked) token whose secret this is, or None; read on every call, so a revocation
    holds from the next request on."""
    digest = hash_secret(secret)
    # On the session's connection, past the ORM's execution layer: a column select needs none of it, and
    # this runs on every request (a third less time than `session.execute`).
    row = session.connection().execute(_LIVE_TOKEN, {"digest": digest}).first()
    # The lookup is by digest; the constant-time compare keeps the final check free of timing leaks.
    if row is None or not hmac.compare_digest(row.secret_sha256, digest):
        return None
    return AuthenticatedToken(row.name, list(row.scopes))


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
