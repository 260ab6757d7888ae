"""The contract's error shape, and the exception that carries it from any layer to the API."""

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An error with an HTTP status, a machine code, a message and the offending parameter."""

    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, headers=None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.code, self.message, self.param)


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    kind = TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def loc_to_param(loc) -> str | None:
    """A pydantic error location as the contract's dotted path (`messages.0.content`)."""
    loc = list(loc)
    if len(loc) > 1 and loc[0] in ("file", "form", "header", "cookie"):
        loc = loc[1:]  # ninja's source of a multipart or header parameter, not a field
    parts = [str(p) for p in loc if p not in ("body", "payload", "query", "path")]
    return ".".join(parts) or None


def from_validation_error(exc, prefix: str = "") -> ApiError:
    """The first pydantic error as a 400 naming its field."""
    first = exc.errors()[0]
    param = loc_to_param(first.get("loc", ()))
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = "unknown parameter"
    if param:
        param = prefix + param
        message = f"{param}: {message}"
    return ApiError(400, "invalid_parameter", message, param)
