"""Error bodies: `{"error": code, "detail": message}`, never holding what was sent.

FastAPI's own validation errors echo the offending input (`input`, `ctx`); here they
keep only where the problem is and what kind it is. Store errors map to statuses: a
missing row is 404, a destroyed key 410, an unreachable database 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from daemon.logs import EMAIL, PHONE
from daemon.store import KeyDestroyed, NotFound, StoreUnavailable

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "too_large",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An expected refusal: status, a short code and a message without personal data."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def refuse_personal_data(text: str, what: str) -> None:
    """422 when free text that will be stored (a reason, a note) holds an e-mail address
    or a phone number: such text ends up on certificates and in the ledger."""
    if EMAIL.search(text) or PHONE.search(text):
        raise ApiError(
            422, "personal_data", f"{what} must not hold e-mail addresses or phone numbers"
        )


def problem(status: int, detail: Any, *, code: str | None = None) -> JSONResponse:
    """The error response every part of the API uses."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        {"error": code or _CODES.get(status, "error"), "detail": detail},
        status_code=status,
        headers=headers,
    )


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    detail = []
    for error in exc.errors()[:20]:
        loc = [part if isinstance(part, int) else str(part)[:64] for part in error.get("loc", ())]
        detail.append({"loc": loc, "type": str(error.get("type", "")), "msg": error.get("msg", "")})
    return detail


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.detail, code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own messages ("Not Found", ...) only: never a caller's input.
        return problem(exc.status_code, _CODES.get(exc.status_code, "error").replace("_", " "))

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, _exc: NotFound) -> JSONResponse:
        return problem(404, "no such item")

    @app.exception_handler(KeyDestroyed)
    async def _destroyed(_request: Request, _exc: KeyDestroyed) -> JSONResponse:
        return problem(410, "the customer was erased: its data can no longer be read")

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(_request: Request, _exc: StoreUnavailable) -> JSONResponse:
        return problem(503, "the store is unavailable; try again later")
