"""A lean keep-alive HTTP/1.1 client for load rounds: the client shares the 2 cores with the
server, so it must cost far less per request than httpx does."""

import asyncio
import json
import time


class Connection:
    """One keep-alive connection; `request` returns (status, headers, body)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self) -> "Connection":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, method: str, path: str, headers=None, body=None):
        if self.writer is None:
            await self.open()
        data = (
            b""
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        response_headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                response_headers[name.strip().lower()] = value.strip()
        if "content-length" in response_headers:
            payload = await self.reader.readexactly(int(response_headers["content-length"]))
        elif response_headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            payload = b"".join(parts)
        else:
            payload = await self.reader.read()
            await self.close()
        if response_headers.get("connection") == "close":
            await self.close()
        return status, response_headers, payload

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def load_round(host, port, connections, seconds, make_request, on_response=None):
    """`connections` loops each sending `make_request()` -> (method, path, headers, body) for
    `seconds`; returns (ok, errors by status, latencies in ms, elapsed s)."""
    ok, errors, latencies = 0, {}, []
    start = time.perf_counter()
    deadline = start + seconds

    async def loop():
        nonlocal ok
        conn = Connection(host, port)
        try:
            while time.perf_counter() < deadline:
                method, path, headers, body = make_request()
                t = time.perf_counter()
                try:
                    status, response_headers, payload = await conn.request(
                        method, path, headers, body
                    )
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    await conn.close()
                    continue
                latencies.append((time.perf_counter() - t) * 1000)
                if status == 200:
                    ok += 1
                    if on_response is not None:
                        on_response(response_headers, payload)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            await conn.close()

    await asyncio.gather(*(loop() for _ in range(connections)))
    return ok, errors, latencies, time.perf_counter() - start


def median(values):
    s = sorted(values)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
