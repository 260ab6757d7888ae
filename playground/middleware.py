"""The /v1 middleware: one async-native layer for every API response.

Errors that never reached ninja (404 routes, 405, 413) come out in the contract's JSON shape;
every response gets the rate-limit headers, `Server-Timing` and `X-Request-Id`.
Under ASGI, /v1 runs through `ApiHandler`: this middleware alone, no thread hop of its own
(Django's MiddlewareMixin middleware each run in a thread in async mode).
"""

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import JsonResponse
from django.utils.module_loading import import_string

from . import timing
from .errors import error_body
from .sqlite.base import keep_connections_open

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
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        if not request.path.startswith("/v1/"):
            return self.get_response(request)
        record = self._start(request)
        response = self._bad_host(request) or self._too_large(request) or self.get_response(request)
        return self._finish(request, response, record)

    async def _acall(self, request):
        if not request.path.startswith("/v1/"):
            return await self.get_response(request)
        record = self._start(request)
        response = (
            self._bad_host(request) or self._too_large(request) or await self.get_response(request)
        )
        return self._finish(request, response, record)

    @staticmethod
    def _start(request) -> dict:
        request.request_id = "req_" + uuid.uuid4().hex
        return timing.start(request.request_id)

    @staticmethod
    def _bad_host(request):
        # Refused before any view runs: inside ninja it surfaced as a 500, after a submit had
        # already created (and charged) its job.
        try:
            request.get_host()
        except DisallowedHost:
            message = "The Host header is not one this server answers to."
            return JsonResponse(error_body(400, "invalid_host", message), status=400)
        return None

    def _too_large(self, request):
        length = request.headers.get("Content-Length", "")
        limit = settings.PLAYGROUND_MAX_BODY_BYTES
        if request.content_type.startswith("multipart/"):
            # Uploads have their own limit (plus room for the multipart envelope), refused
            # here before the body is read.
            limit = settings.PLAYGROUND_MAX_UPLOAD_BYTES + 64 * 1024
        if length.isdigit() and int(length) > limit:
            return self._error(413)
        return None

    def _finish(self, request, response, record):
        if response.status_code >= 400 and not _is_json(response):
            converted = self._error(response.status_code)
            if response.has_header("Allow"):
                converted["Allow"] = response["Allow"]
            response = converted
        for name, value in getattr(request, "rate_headers", {}).items():
            response.setdefault(name, value)
        response["X-Request-Id"] = record["request_id"]
        response["Server-Timing"] = timing.header(record)
        response.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @staticmethod
    def _error(status: int) -> JsonResponse:
        code = CODES.get(status, "error")
        message = MESSAGES.get(status, "The request failed.")
        return JsonResponse(error_body(status, code, message), status=status)


def _is_json(response) -> bool:
    if not response.get("Content-Type", "").startswith("application/json"):
        return False
    if response.status_code < 400 or response.streaming:
        return True
    try:
        return "error" in json.loads(response.content)
    except (ValueError, AttributeError):
        return False


class ApiHandler(ASGIHandler):
    """The Django app for /v1 under ASGI, with settings.API_MIDDLEWARE only (all async).

    Django's handler gives every request a new thread for its sync code, and with it a new
    database connection. Here a finished request's thread (one-thread executor) goes back to
    a stack for the next request; up to PLAYGROUND_API_THREADS are kept, more are made when
    more requests are in flight and shut down after.
    """

    def __init__(self):
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        if self._idle:
            executor = self._idle.pop()
        else:
            executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="api", initializer=keep_connections_open
            )
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self._idle) < settings.PLAYGROUND_API_THREADS:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(settings.API_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._middleware_chain = handler
