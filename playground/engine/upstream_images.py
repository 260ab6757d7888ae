"""Images from an OpenAI-compatible upstream's /images/generations, kept in our own storage.

The upstream answers with base64 (`b64_json`, asked for) or with links (some servers ignore
`response_format`); links on the upstream's own host are fetched as the operator configured it,
links elsewhere only from public addresses (playground/inputs.py). Every image is sniffed and
decoded under Pillow's limits before it is stored; billed per image.
"""

import base64
import binascii
import io
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from .. import inputs, media
from .base import BackendError, Canceled, Emitter, Result

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp"}


class UpstreamImages:
    def __init__(self, backend):
        self.backend = backend

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        if emit.canceled():
            raise Canceled()
        body = {
            "prompt": params["prompt"],
            "n": params["num_images"],
            "size": f"{params['width']}x{params['height']}",
            "response_format": "b64_json",
        }
        if params.get("seed") is not None:
            body["seed"] = params["seed"]
        emit.progress(0.1)
        payload = self._generate(body, emit)
        items = payload["data"][: params["num_images"]]
        if not items:
            raise BackendError("upstream_error", "upstream sent no images")
        images = []
        for index, item in enumerate(items):
            if emit.canceled():
                raise Canceled()
            data = self._image_bytes(item)
            picture, content_type, data = _checked(data, params["output_format"])
            ext = params["output_format"]
            ref = emit.store(data, f"image-{index + 1}.{ext}", content_type)
            images.append(
                {
                    "file": ref,
                    "width": picture.width,
                    "height": picture.height,
                    "content_type": content_type,
                }
            )
            emit.progress(0.1 + 0.9 * (index + 1) / len(items))
        output = {"images": images}
        if params.get("seed") is not None:
            output["seed"] = params["seed"]
        return Result(output=output, usage={"images": len(images)})

    def _generate(self, body: dict[str, Any], emit: Emitter) -> dict:
        """The upstream call, in a helper thread, so a cancel ends the job at once even while
        the upstream is still thinking (image APIs answer only when the image is done).

        The abandoned call ends by itself within the upstream timeout; its answer is dropped.
        """
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["payload"] = self.backend.generate_images(body)
            except BaseException as exc:  # handed to the job's thread below
                box["error"] = exc

        thread = threading.Thread(target=call, daemon=True, name="upstream-images")
        thread.start()
        while thread.is_alive():
            thread.join(0.05)
            if emit.canceled():
                raise Canceled()
        if "error" in box:
            raise box["error"]
        return box["payload"]

    def _image_bytes(self, item: Any) -> bytes:
        if not isinstance(item, dict):
            raise BackendError("upstream_error", "upstream sent a malformed image")
        if isinstance(item.get("b64_json"), str):
            try:
                return base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError):
                raise BackendError("upstream_error", "upstream sent invalid base64") from None
        if isinstance(item.get("url"), str):
            return self._download(item["url"])
        raise BackendError("upstream_error", "upstream sent an image without data or url")

    def _download(self, url: str) -> bytes:
        limit = settings.PLAYGROUND_MAX_UPLOAD_BYTES
        parts, upstream = urlsplit(url), urlsplit(self.backend.base_url)
        if parts.scheme not in ("http", "https"):
            raise BackendError("upstream_error", "upstream sent an image link that is not http(s)")
        if parts.netloc != upstream.netloc:
            try:
                return inputs.fetch(url, allowlisted=False)
            except inputs.InputError as exc:
                raise BackendError("upstream_error", f"upstream image link: {exc}") from None
        try:
            with httpx.Client(timeout=self.backend.timeout, follow_redirects=False) as client:
                with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise BackendError(
                            "upstream_error",
                            f"upstream image link answered HTTP {response.status_code}",
                        )
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > limit:
                            raise BackendError("upstream_error", "upstream image is too large")
                    return bytes(body)
        except httpx.HTTPError as exc:
            raise BackendError(
                "upstream_error", f"could not fetch the upstream image: {exc}"
            ) from None


def _checked(data: bytes, output_format: str):
    """(picture, content type, bytes) in the asked format; upstream bytes are never trusted."""
    if media.sniff(data) not in inputs.KINDS["image"]:
        raise BackendError("upstream_error", "upstream sent something that is not an image")
    try:
        picture = media.open_image(data)
    except ValueError as exc:
        raise BackendError("upstream_error", f"upstream image: {exc}") from None
    wanted = CONTENT_TYPES[output_format]
    if media.sniff(data) != wanted:
        buffer = io.BytesIO()
        picture.convert("RGBA" if picture.mode in ("RGBA", "LA", "P") else "RGB").save(
            buffer, output_format.upper()
        )
        data = buffer.getvalue()
    return picture, wanted, data
