"""Errors as RFC 9457 problem details: one exception hierarchy for the domain, one set of handlers.

Domain functions raise `LatfarmError` subclasses (they carry a status but no HTTP types); `install_handlers`
turns those, validation errors, unknown routes and crashes into `application/problem+json` responses.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("latfarm.errors")


class LatfarmError(Exception):
    """Base of every error the service reports to a client; `status` is the HTTP status it maps to."""

    status: int = 400
    title: str = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class NotFoundError(LatfarmError):
    status, title = 404, "Not found"


class ConflictError(LatfarmError):
    status, title = 409, "Conflict"


class InvalidInputError(LatfarmError):
    """A request that parsed but breaks a domain rule; `errors` names the fields as `[{loc, msg}]`."""

    status, title = 422, "Unprocessable content"

    @classmethod
    def at(cls, loc: list[str | int], msg: str) -> InvalidInputError:
        """One error at field `loc` (e.g. `["body", "configs", 3, "widths"]`)."""
        return cls(f"{'.'.join(str(p) for p in loc)}: {msg}", errors=[{"loc": loc, "msg": msg}])


class PayloadTooLargeError(LatfarmError):
    status, title = 413, "Payload too large"


class UnauthorizedError(LatfarmError):
    status, title = 401, "Unauthorized"


class ForbiddenError(LatfarmError):
    status, title = 403, "Forbidden"


class UnavailableError(LatfarmError):
    status, title = 503, "Service unavailable"


class FieldError(BaseModel):
    """One invalid field: where it is (`["body", "configs", 3, "widths"]`) and what is wrong with it."""

    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error the service answers has this `application/problem+json` body."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="about:blank: the title says what kind of error it is")
    title: str
    status: int
    detail: str = Field(description="what went wrong and what to do next")
    errors: list[FieldError] | None = Field(None, description="the invalid fields (validation errors)")


_ERROR_MEANING = {
    401: "no token, or an unknown or revoked one (`Authorization: Bearer <token>`)",
    403: "the token lacks the scope this needs, or a cookie-authenticated request from another origin",
    404: "no such resource",
    409: "the resource's state does not allow this (the detail says why and what to do)",
    413: "the request body (or the work it asks for) is larger than the service accepts",
    422: "an invalid field; `errors[].loc` names it",
    503: "the database does not answer",
}


def problem_responses(
    *statuses: int, described: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting these error statuses as problem+json (for a router or a route);
    `described` words a status for one route."""
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    meaning = {**_ERROR_MEANING, **(described or {})}
    return {status: {"description": meaning[status], "content": content} for status in statuses}


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the `Problem` schema the documented error responses refer to to an OpenAPI document."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    return openapi


def problem_response(
    status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None, **extra: Any
) -> JSONResponse:
    """A problem+json response; `type` is about:blank as the title says it all."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "invalid")} for err in exc.errors()]


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that make every error a problem+json body."""

    @app.exception_handler(LatfarmError)
    async def _domain(_: Request, exc: LatfarmError) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        fields = ", ".join(".".join(str(p) for p in e["loc"]) + f" ({e['msg']})" for e in errors[:5])
        return problem_response(422, "Unprocessable content", f"invalid request: {fields}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        response = problem_response(exc.status_code, title, detail)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled error on %s %s", request.method, request.url.path)
        response = problem_response(
            500, "Internal server error", "the server failed on this request; the error is in its log"
        )
        # Starlette re-raises the error once this answer is sent, and the server then drops the connection:
        # saying so lets a keep-alive client open a new one instead of failing its next request on it.
        response.headers["Connection"] = "close"
        return response


class BodySizeLimit:
    """ASGI middleware: bodies over `max_bytes` answer 413 before the route ever sees them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # The app may catch errors raised here, so answer 413 ourselves and hang up on it.
                    rejected = True
                    await self._reject(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, "Payload too large", f"request bodies are limited to {self.max_bytes} bytes"
        )
        await response(scope, receive, send)
