"""API key authentication, shared by the API and the websocket consumer."""

from ninja.security import HttpBearer

from accounts.keys import authenticate_key
from accounts.models import ApiKey

from . import ratelimit, timing
from .errors import ApiError


def bearer_token(header_value: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` value; '' when the header is malformed."""
    if header_value is None:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR")


def key_from_header(header_value: str | None, ip: str | None = None) -> ApiKey | None:
    """None when no key was sent; the key when valid; ApiError 401 when one was sent but is bad."""
    token = bearer_token(header_value)
    if token is None:
        return None
    key = authenticate_key(token, ip) if token else None
    if key is None:
        raise ApiError(401, "invalid_api_key", "The API key is invalid, revoked or expired.")
    # The spend cap is enforced where money is taken (`ledger.hold` at submit), not here: a key
    # whose open hold fills its cap must still poll, cancel and watch that very job.
    return key


def authenticate_request(request) -> ApiKey | None:
    """The request's key (None if none was sent), counted against its rate budget.

    The rate-limit headers are left on the request for ApiErrorMiddleware to add to the response.
    """
    with timing.span("auth"):
        key = key_from_header(request.headers.get("Authorization"), client_ip(request))
    if key is not None:
        request.api_key = key
        with timing.span("limits"):
            request.rate_headers = ratelimit.hit(key, ratelimit.request_kind(request))
    return key


class ApiKeyAuth(HttpBearer):
    """Bearer API keys; never logs what was sent."""

    def __call__(self, request):
        key = authenticate_request(request)
        if key is None:
            raise ApiError(401, "missing_api_key", "Send an API key: Authorization: Bearer <key>.")
        return key

    def authenticate(self, request, token):  # pragma: no cover - __call__ does the work
        return None
