"""The backend interface: what every model backend gets and returns."""

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Result:
    """A backend's output (merged into the status document) and its usage (used for billing)."""

    output: dict[str, Any]
    usage: dict[str, int] = field(default_factory=dict)


class Canceled(Exception):
    """Raised by a backend that saw `emit.canceled()` turn true and stopped."""


class BackendError(Exception):
    """A failure with a contract error code (e.g. upstream_error, upstream_timeout)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Emitter(Protocol):
    """How a backend reports live events; every method is cheap enough to call per token."""

    def progress(self, value: float) -> None: ...

    def delta(self, text: str) -> None: ...

    def log(self, message: str) -> None: ...

    def metrics(self, **numbers: float) -> None: ...

    def canceled(self) -> bool:
        """True once the job was canceled or ran past its soft time limit: raise Canceled."""
        ...

    def store(self, data: bytes, filename: str, content_type: str) -> str:
        """Saves an output file of the job; returns its ref for the output (`{"file": ref}`)."""
        ...


class Backend(Protocol):
    """Constructed with the catalogue entry's `config` dict; `run` gets validated parameters."""

    def run(self, params: dict[str, Any], emit: Emitter) -> Result: ...


def api_key_from_env(name: str | None) -> str | None:
    """An upstream's key, read from the named variable when calling and never kept, so rotating
    the variable needs no restart."""
    if not name:
        return None
    import os

    key = os.environ.get(name)
    if not key:
        raise BackendError("upstream_error", f"environment variable {name} is not set")
    return key
