"""CSRF protection of the dashboard's forms: a per-session token derived from the login cookie.

The token is HMAC-SHA256 keyed by the token secret held in the HttpOnly login cookie. A page embeds it in
a hidden field; a POST is accepted only when the field matches the HMAC of the cookie it arrives with. A
forging site can make the browser send the cookie (SameSite=Strict already stops that in current
browsers) but can neither read the cookie nor the page, so it cannot produce the field. The HMAC is one-way,
so a leaked CSRF token does not leak the secret, and no server-side key or storage is needed: every
process of a scaled-out service derives the same token.
"""

from __future__ import annotations

import hashlib
import hmac

FIELD = "csrf_token"
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
