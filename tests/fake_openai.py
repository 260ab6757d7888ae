"""A small OpenAI-compatible server on 127.0.0.1 for tests, with switchable failure modes."""

import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# ok: normal answers; cut: the stream closes after `cut_after` chunks without [DONE];
# stall: sends `cut_after` chunks, then nothing until shutdown; hang: reads the request, then
# sends nothing until shutdown; error500 / error401 (echoes the key, like OpenAI does);
# error429-then-ok: the first `fail_count` requests get 429; no-usage: no usage chunk even
# when asked; garbage: the stream's first event is not JSON.
MODES = (
    "ok",
    "cut",
    "stall",
    "hang",
    "error500",
    "error401",
    "error429-then-ok",
    "no-usage",
    "garbage",
)


@dataclass
class Request:
    """One request as the server saw it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    client: tuple = ()  # the client's (address, port): one per connection


class FakeOpenAI:
    """Serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/images/generations
    and /v1/models."""

    def __init__(self):
        self.mode = "ok"
        self.chunks = ["Hello", ",", " world", "!"]  # streamed content pieces
        self.cut_after = 2  # chunks sent before "cut" and "stall" stop
        self.chunk_delay = 0.0  # seconds between chunks
        self.chunked = True  # False: body ended by closing the connection, as HTTP/1.0 does
        self.fail_count = 1  # requests that "error429-then-ok" refuses
        self.retry_after: str | None = "0"  # Retry-After sent with a 429
        self.usage = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
        # /v1/images/generations answers with "b64_json", or with "url" links served by
        # GET /v1/generated/<n>.png (as some servers do whatever response_format says)
        self.image_response = "b64_json"
        self.generated: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.disconnected = threading.Event()  # a client hung up while we were streaming
        self.in_flight = 0  # POSTs being answered now, and the most there were at once
        self.most_in_flight = 0
        # Each POST waits (up to 10 s) until this many are in flight before answering: a test
        # of how many run at once then does not depend on how fast the machine starts them.
        self.answer_when_in_flight = 0
        self._count_lock = threading.Condition()
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> "FakeOpenAI":
        """Starts serving in a daemon thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving; releases handlers parked in "hang" or "stall"."""
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=2)

    def park(self) -> None:
        """Blocks a handler for a long time, but returns as soon as the server shuts down."""
        self._stopping.wait(30)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients hanging up (cancel, timeout, closing before the end) are expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # idle keep-alive connections give up rather than linger
    fake: FakeOpenAI

    def log_message(self, format, *args):
        pass  # keep test output quiet

    def do_GET(self):
        self._record(None)
        if self.path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        elif self.path in self.fake.generated:
            data = self.fake.generated[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        fake = self.fake
        with fake._count_lock:
            fake.in_flight += 1
            fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
            fake._count_lock.notify_all()
            fake._count_lock.wait_for(
                lambda: fake.most_in_flight >= fake.answer_when_in_flight, timeout=10
            )
        try:
            self._post()
        finally:
            with fake._count_lock:
                fake.in_flight -= 1

    def _post(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        number = self._record(body)
        fake, mode = self.fake, self.fake.mode

        if mode == "error500":
            return self._send_json(500, {"error": {"message": "boom", "type": "server_error"}})
        if mode == "error401":
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return self._send_json(401, {"error": {"message": f"Incorrect API key: {key}"}})
        if mode == "error429-then-ok" and number <= fake.fail_count:
            headers = {"Retry-After": fake.retry_after} if fake.retry_after is not None else {}
            return self._send_json(429, {"error": {"message": "slow down"}}, headers)
        if mode == "hang":
            fake.park()
            self.close_connection = True
            return

        if self.path == "/v1/embeddings":
            return self._send_json(200, _embeddings(body))
        if self.path == "/v1/images/generations":
            return self._send_json(200, self._images(body))
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self._send_json(404, {"error": {"message": "not found"}})
        chat = self.path == "/v1/chat/completions"
        if body.get("stream"):
            return self._stream(chat, body)
        text = "".join(fake.chunks)
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        choice.update(index=0, finish_reason="stop")
        self._send_json(200, {"model": body.get("model"), "choices": [choice], "usage": fake.usage})

    def _images(self, body: dict[str, Any]) -> dict[str, Any]:
        """n PNGs of the asked size, each a flat colour (index-dependent)."""
        import base64
        import io

        from PIL import Image

        width, height = (int(v) for v in body.get("size", "256x256").split("x"))
        data = []
        for i in range(int(body.get("n", 1))):
            buffer = io.BytesIO()
            Image.new("RGB", (width, height), (40 * i, 120, 200)).save(buffer, "PNG")
            if self.fake.image_response == "url":
                path = f"/v1/generated/{len(self.fake.generated)}.png"
                self.fake.generated[path] = buffer.getvalue()
                host, port = self.server.server_address[:2]
                data.append({"url": f"http://{host}:{port}{path}"})
            else:
                data.append({"b64_json": base64.b64encode(buffer.getvalue()).decode()})
        return {"created": int(time.time()), "data": data}

    def _stream(self, chat: bool, body: dict[str, Any]) -> None:
        fake, mode = self.fake, self.fake.mode
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if fake.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        pieces = fake.chunks
        if mode in ("cut", "stall"):
            pieces = pieces[: fake.cut_after]
        elif mode == "garbage":
            pieces = []
        try:
            for i, piece in enumerate(pieces):
                if i and fake.chunk_delay:
                    time.sleep(fake.chunk_delay)
                self._event(_chunk(chat, body, piece, None))
            if mode == "garbage":
                self._write("data: {not json\n\n")
            if mode in ("cut", "garbage"):
                self.close_connection = True  # and no terminating chunk: a cut mid-body
                return
            if mode == "stall":
                fake.park()
                self.close_connection = True
                return
            self._event(_chunk(chat, body, "", "stop"))
            if mode != "no-usage" and (body.get("stream_options") or {}).get("include_usage"):
                self._event({"model": body.get("model"), "choices": [], "usage": fake.usage})
            self._write("data: [DONE]\n\n")
            if fake.chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            fake.disconnected.set()
            self.close_connection = True

    def _event(self, payload: dict[str, Any]) -> None:
        self._write(f"data: {json.dumps(payload)}\n\n")

    def _write(self, text: str) -> None:
        data = text.encode()
        if self.fake.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.wfile.write(data)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: Any) -> int:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.fake.requests.append(
            Request(self.command, self.path, headers, body, tuple(self.client_address))
        )
        return len(self.fake.requests)


def _chunk(chat: bool, body: dict[str, Any], text: str, finish: str | None) -> dict[str, Any]:
    if chat:
        choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish}
        kind = "text_completion"
    return {"object": kind, "model": body.get("model"), "choices": [choice], "usage": None}


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    words = sum(len(text.split()) for text in inputs)
    data = [
        {"object": "embedding", "index": i, "embedding": [float(len(text)), float(i), 0.5]}
        for i, text in enumerate(inputs)
    ]
    return {
        "object": "list",
        "model": body.get("model"),
        "data": data,
        "usage": {"prompt_tokens": words, "total_tokens": words},
    }


@pytest.fixture
def fake_openai():
    """A running FakeOpenAI in mode "ok", shut down after the test."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.close()
