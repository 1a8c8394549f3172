"""Who may see a dashboard page and who may press its buttons.

Pages accept the login cookie (or a bearer header) with the `read` scope, or anyone when
`LATFARM_PUBLIC_READ=true`; a visitor without either is sent to the login form. Form actions accept only
the login cookie, from the dashboard's own origin, with the scope the action needs and the session's CSRF
token in the form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, HTTPException, Request

from service.auth.models import Scope
from service.auth.service import authenticate
from service.dashboard.csrf import FIELD, csrf_valid, foreign_origin
from service.deps import ANONYMOUS, TOKEN_COOKIE, Principal, SessionDep, SettingsDep, current_principal
from service.problems import ForbiddenError, UnauthorizedError

LOGIN_PATH = "/dashboard/login"


def safe_next(target: str | None) -> str:
    """Where to go after login: only a dashboard path of this site (never an open redirect)."""
    if target and target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard/farm"


def _to_login(request: Request) -> HTTPException:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(status_code=303, headers={"Location": f"{LOGIN_PATH}?next={quote(here, safe='')}"})


def page_principal(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    """The reader of a page; without a usable login (and no public read) the browser goes to the login."""
    try:
        principal = current_principal(request, session)
    except UnauthorizedError:
        raise _to_login(request) from None
    if principal is ANONYMOUS:
        if settings.public_read:
            return principal
        raise _to_login(request)
    if not principal.has(Scope.read):
        raise ForbiddenError(f"token {principal.name!r} lacks the 'read' scope the dashboard needs")
    return principal


PageReader = Annotated[Principal, Depends(page_principal)]


def form_action(scope: Scope | None) -> Callable[..., Principal]:
    """A dependency admitting a dashboard form post by a logged-in holder of `scope` (any scope when None)
    with a valid CSRF token."""

    def check(
        request: Request, session: SessionDep, csrf_token: Annotated[str, Form(alias=FIELD)] = ""
    ) -> Principal:
        secret = request.cookies.get(TOKEN_COOKIE)
        token = authenticate(session, secret) if secret else None
        if token is None:
            raise UnauthorizedError(
                "log in to the dashboard first (the session cookie is missing or revoked)"
            )
        if foreign_origin(request.headers, request.url.scheme):
            raise ForbiddenError("a dashboard form can only be posted from the dashboard's own pages")
        if not csrf_valid(secret, csrf_token):
            raise ForbiddenError(
                f"the form's {FIELD} is missing or does not match your session; reload the page and retry"
            )
        principal = Principal(name=token.name, scopes=frozenset(Scope(s) for s in token.scopes))
        if scope is not None and not principal.has(scope):
            raise ForbiddenError(
                f"token {principal.name!r} lacks the {scope.value!r} scope this action needs"
            )
        return principal

    return check


AdminForm = Annotated[Principal, Depends(form_action(Scope.admin))]
ProfileForm = Annotated[Principal, Depends(form_action(Scope.profile))]
SessionForm = Annotated[Principal, Depends(form_action(None))]
