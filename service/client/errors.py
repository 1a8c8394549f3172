"""The client's errors: one hierarchy under `LatfarmClientError`, so a search job catches one class."""

from __future__ import annotations

from typing import Any

import httpx


class LatfarmClientError(Exception):
    """Base of every error the client raises."""


class LatfarmAPIError(LatfarmClientError):
    """The server answered with an error; `detail` and `errors` ([{loc, msg}]) are its problem details."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        body: Any = None,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" + (f" ({method} {url})" if method else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.body = body
        self.method = method
        self.url = url

    @classmethod
    def from_response(cls, response: httpx.Response) -> LatfarmAPIError:
        """Read a problem+json body (or whatever text came) into an error."""
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if isinstance(body, dict):
            title = str(body.get("title") or response.reason_phrase)
            detail = str(body.get("detail") or title)
            errors = body.get("errors") if isinstance(body.get("errors"), list) else None
        else:
            title, detail, errors = response.reason_phrase, (str(body)[:500] or response.reason_phrase), None
        request = response.request
        return cls(response.status_code, title, detail, errors, body, request.method, str(request.url))


class LatfarmConnectionError(LatfarmClientError):
    """The server could not be reached (after the retries)."""


class LatfarmTimeoutError(LatfarmClientError):
    """A `wait` ran past its deadline; the job or predictor is still going on the server."""
