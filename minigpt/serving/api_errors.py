"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, for every failure the
server reports (validation, unknown model, queue full, unknown route), so an OpenAI client raises its own
typed exception (``BadRequestError``, ``NotFoundError``, ...) with our message."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """A request the server refuses; turned into a JSON error response with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _is_type_tag(part: str) -> bool:
    return "[" in part or part in {"str", "int", "float", "bool", "list", "dict"}


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None, str]:
    """One readable line for pydantic's errors, the dotted path of the first bad field, and a code."""
    parts, first_param, first_code = [], None, "invalid_value"
    for err in errors:
        # FastAPI prefixes the location with "body", and pydantic names the member of a union that failed
        # ("content.str", "content.list[TextPart]"); OpenAI names the field itself ("messages.0.content").
        loc = [str(p) for p in err.get("loc", ()) if p != "body" and not _is_type_tag(str(p))]
        param = ".".join(loc) or None
        if first_param is None:
            first_param = param
            first_code = {"missing": "missing_required_parameter", "json_invalid": "invalid_json"}.get(
                err.get("type", ""), "invalid_value"
            )
        parts.append(f"{param}: {err.get('msg')}" if param else str(err.get("msg")))
    return "; ".join(parts) or "invalid request", first_param, first_code


def install_error_handlers(app: Any) -> None:
    """Route validation errors (400, not FastAPI's 422), HTTP errors and :class:`APIError` through
    :func:`error_body`."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def on_api_error(request: Any, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def on_validation(request: Any, exc: RequestValidationError) -> JSONResponse:
        message, param, code = _validation_message(list(exc.errors()))
        return JSONResponse(error_body(message, "invalid_request_error", param, code), status_code=400)

    async def on_http(request: Any, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(
            error_body(message, kind, None, str(exc.status_code)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
