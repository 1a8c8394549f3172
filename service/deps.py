"""FastAPI dependencies shared by every router: the DB session, the settings and scoped access.

Route signatures read like sentences: `def get_device(device_id: int, session: SessionDep, _: ReadAccess)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.auth.models import Scope
from service.auth.service import authenticate
from service.dashboard.csrf import HEADER as CSRF_HEADER
from service.dashboard.csrf import csrf_valid, foreign_origin
from service.devices.runner import DeviceRunner, default_runner
from service.problems import ForbiddenError, UnauthorizedError
from service.settings import Settings

#: The cookie the dashboard's login form sets (HttpOnly); it carries the same token secret as the header.
TOKEN_COOKIE = "latfarm_token"
#: Methods that change nothing: a cookie may authenticate them without a CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    """The app's settings (one object, made at start-up)."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for one request; domain functions commit what they write, the rest is rolled back."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


def get_runner(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[DeviceRunner]:
    """The device runner a request probes phones with, closed (every connection) when the request ends.

    Tests and the API fuzzer override this dependency so that no request reaches a network address.
    """
    runner = default_runner(settings)
    try:
        yield runner
    finally:
        runner.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RunnerDep = Annotated[DeviceRunner, Depends(get_runner)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and scopes, or the anonymous public reader."""

    name: str
    scopes: frozenset[Scope]

    def has(self, scope: Scope) -> bool:
        """`admin` holds every scope."""
        return scope in self.scopes or Scope.admin in self.scopes


ANONYMOUS = Principal(name="anonymous", scopes=frozenset())


def _secret_from(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            raise UnauthorizedError("the Authorization header must be `Bearer <token>`")
        return secret.strip()
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie is not None:
        check_cookie_request(request, cookie)
    return cookie


def check_cookie_request(request: Request, secret: str) -> None:
    """Refuse (403) a request the login cookie would authenticate when another site may have sent it.

    A browser attaches the cookie to requests other sites make it send; a bearer header it never adds by
    itself. So a cookie counts only from this origin, and a request that changes state must also carry
    the session's CSRF token in the `X-CSRF-Token` header (see `service.dashboard.csrf`).
    """
    if foreign_origin(request.headers, request.url.scheme):
        raise ForbiddenError(
            f"a request from {request.headers.get('origin')!r} may not use the dashboard's login cookie; "
            "call the API with an `Authorization: Bearer` token"
        )
    if request.method not in SAFE_METHODS and not csrf_valid(secret, request.headers.get(CSRF_HEADER)):
        raise ForbiddenError(
            f"a {request.method} authenticated by the login cookie needs the session's CSRF token in the "
            f"{CSRF_HEADER} header (or use an `Authorization: Bearer` token)"
        )


def current_principal(request: Request, session: SessionDep) -> Principal:
    """The caller, authenticated by bearer token (or the dashboard cookie); anonymous when none is given."""
    secret = _secret_from(request)
    if secret is None:
        return ANONYMOUS
    token = authenticate(session, secret)
    if token is None:
        raise UnauthorizedError("the token is unknown or revoked")
    return Principal(name=token.name, scopes=frozenset(Scope(s) for s in token.scopes))


def require_scope(scope: Scope) -> Callable[..., Principal]:
    """A dependency that admits callers holding `scope` (or anonymous readers when public read is on)."""

    def check(
        principal: Annotated[Principal, Depends(current_principal)], settings: SettingsDep
    ) -> Principal:
        if principal is ANONYMOUS:
            if scope is Scope.read and settings.public_read:
                return principal
            raise UnauthorizedError(f"this needs a token with the {scope.value!r} scope")
        if not principal.has(scope):
            raise ForbiddenError(
                f"token {principal.name!r} lacks the {scope.value!r} scope "
                f"(it has: {', '.join(sorted(s.value for s in principal.scopes)) or 'none'})"
            )
        return principal

    return check


def read_all_or_own(scope: Scope) -> Callable[..., str | None]:
    """A dependency for what `read` sees whole and a holder of `scope` sees of its own making: None (every
    row) for readers, else the token's name (only the rows it created)."""
    read = require_scope(Scope.read)

    def check(
        principal: Annotated[Principal, Depends(current_principal)], settings: SettingsDep
    ) -> str | None:
        if principal is not ANONYMOUS and not principal.has(Scope.read) and principal.has(scope):
            return principal.name
        read(principal, settings)  # 401/403 as for any read
        return None

    return check


def document_bearer_auth(openapi: dict[str, Any]) -> dict[str, Any]:
    """Declare the bearer token in an OpenAPI document: every `/v1` operation takes one (docs and clients
    can then send it); the scope each needs is in its 403 answer and the README."""
    schemes = openapi.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": "a latfarm token (lf_…)"}
    for path, operations in openapi.get("paths", {}).items():
        if path.startswith("/v1"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
    return openapi


ReadAccess = Annotated[Principal, Depends(require_scope(Scope.read))]
#: Readers see every job; a `profile` token without `read` sees the jobs it submitted.
JobReader = Annotated[str | None, Depends(read_all_or_own(Scope.profile))]
AdminAccess = Annotated[Principal, Depends(require_scope(Scope.admin))]
ProfileAccess = Annotated[Principal, Depends(require_scope(Scope.profile))]
