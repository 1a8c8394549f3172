"""CSRF protection of the dashboard's forms: a per-session token derived from the login cookie.

The token is HMAC-SHA256 keyed by the token secret held in the HttpOnly login cookie. A page embeds it in
a hidden field; a POST is accepted only when the field matches the HMAC of the cookie it arrives with. A
forging site can make the browser send the cookie (SameSite=Strict already stops that in current
browsers) but can neither read the cookie nor the page, so it cannot produce the field. The HMAC is one-way,
so a leaked CSRF token does not leak the secret, and no server-side key or storage is needed: every
process of a scaled-out service derives the same token.

SameSite does not separate two sites on one host (another port is the same site), so every request the
cookie authenticates — a dashboard form or a `/v1` call — must also come from this origin when the browser
says where it comes from (`Origin`), and a `/v1` request that changes anything must carry the token in
the `X-CSRF-Token` header.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

FIELD = "csrf_token"
#: The header a cookie-authenticated `/v1` request that changes state carries the token in.
HEADER = "X-CSRF-Token"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PURPOSE = b"latfarm-dashboard-csrf:v1"


def csrf_token(secret: str | None) -> str:
    """The CSRF token of a login session (empty without one: anonymous readers post nothing)."""
    if not secret:
        return ""
    return hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).hexdigest()


def csrf_valid(secret: str | None, submitted: str | None) -> bool:
    """True when `submitted` is the CSRF token of the session whose secret is `secret`."""
    if not secret or not submitted:
        return False
    return hmac.compare_digest(csrf_token(secret), submitted)


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    return (scheme, (parts.hostname or "").lower(), port)


def foreign_origin(headers: Mapping[str, str], scheme: str) -> bool:
    """True when the browser's `Origin` names another origin than this request's (scheme, host, port);
    an absent `Origin` (a navigation, a non-browser client) is not foreign, `null` or garbage is.

    Behind a reverse proxy the request's own origin is the one the proxy forwards (`X-Forwarded-Host`,
    `X-Forwarded-Proto`): a page of another site cannot add those headers to a request (a browser would
    ask the service's permission first, which it never grants), so they cannot be forged from there.
    """
    origin = headers.get("origin")
    if origin is None:
        return False
    parts = urlsplit(origin)
    theirs = _origin_key(parts.scheme, parts.netloc) if parts.scheme and parts.netloc else None
    host = headers.get("x-forwarded-host") or headers.get("host")
    ours = (
        _origin_key(headers.get("x-forwarded-proto") or scheme, host.split(",")[0].strip()) if host else None
    )
    return theirs is None or theirs != ours
