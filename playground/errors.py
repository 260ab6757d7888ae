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


# Names pydantic puts in an error location for the member of a union that failed (`str`,
# `list[str]`, `function-after[…]`): not fields the client sent.
_SCALAR_TAGS = {"str", "int", "float", "bool", "bytes", "none", "decimal", "date", "datetime"}


def _is_type_tag(part) -> bool:
    return isinstance(part, str) and ("[" in part or part in _SCALAR_TAGS)


def loc_to_param(loc) -> str | None:
    """A pydantic error location as the contract's dotted path (`messages.0.content`)."""
    loc = list(loc)
    if len(loc) > 1 and loc[0] in ("file", "form", "header", "cookie"):
        loc = loc[1:]  # ninja's source of a multipart or header parameter, not a field
    parts = [
        str(p) for p in loc if p not in ("body", "payload", "query", "path") and not _is_type_tag(p)
    ]
    return ".".join(parts) or None


def first_error(errors: list[dict]) -> dict:
    """The error to report: the first, or, when it is one member of a union that failed, the
    member's error that reaches deepest (`input.1` for ["a", 5], rather than "not a string")."""
    if not errors:
        return {}
    first = errors[0]
    loc = list(first.get("loc", ()))
    tag = next((i for i, part in enumerate(loc) if _is_type_tag(part)), None)
    if tag is None:
        return first
    branches = [e for e in errors if list(e.get("loc", ()))[:tag] == loc[:tag]]
    return max(branches, key=lambda e: len((loc_to_param(e.get("loc", ())) or "").split(".")))


def from_validation_error(exc, prefix: str = "") -> ApiError:
    """The first pydantic error as a 400 naming its field."""
    first = first_error(exc.errors())
    param = loc_to_param(first.get("loc", ()))
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = "unknown parameter"
    if param:
        param = prefix + param
        message = f"{param}: {message}"
    return ApiError(400, "invalid_parameter", message, param)
