"""Every /v1 response that is an error comes out in the contract's JSON shape."""

import json

from django.conf import settings
from django.http import JsonResponse

from .errors import error_body

CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    500: "internal_error",
}
MESSAGES = {
    404: "Unknown endpoint.",
    405: "Method not allowed.",
    413: "The request body is too large.",
    500: "Something went wrong on our side.",
}


class ApiErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith("/v1/"):
            return self.get_response(request)
        length = request.headers.get("Content-Length", "")
        limit = settings.PLAYGROUND_MAX_BODY_BYTES
        if request.content_type.startswith("multipart/"):
            # Uploads have their own limit (plus room for the multipart envelope), refused
            # here before the body is read.
            limit = settings.PLAYGROUND_MAX_UPLOAD_BYTES + 64 * 1024
        if length.isdigit() and int(length) > limit:
            return self._error(413)
        response = self.get_response(request)
        if response.status_code >= 400 and not _is_json(response):
            converted = self._error(response.status_code)
            if response.has_header("Allow"):
                converted["Allow"] = response["Allow"]
            response = converted
        for name, value in getattr(request, "rate_headers", {}).items():
            response.setdefault(name, value)
        return response

    @staticmethod
    def _error(status: int) -> JsonResponse:
        code = CODES.get(status, "error")
        message = MESSAGES.get(status, "The request failed.")
        return JsonResponse(error_body(status, code, message), status=status)


def _is_json(response) -> bool:
    if not response.get("Content-Type", "").startswith("application/json"):
        return False
    try:
        return "error" in json.loads(response.content) or response.status_code < 400
    except (ValueError, AttributeError):
        return False
