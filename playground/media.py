"""Stored media: saving through Django's storage API, signed expiring links, safe decoding.

Files (job outputs and uploads) live in the `default` storage (local folder or S3-compatible,
see settings) under names nobody sees. They are reached only through links like

    https://host/media/<public_id>/<filename>?expires=<unix time>&sig=<signature>

where the signature (Django's signing, keyed by SECRET_KEY) covers the file's public id, its
owner's id and the expiry: a link works for that one file until it expires, needs no API key,
and cannot be turned into a link to another file or a longer-lived one. Job outputs name their
files as refs (`<public_id>/<filename>`); `render_output` turns those into signed absolute URLs
each time a status document is made, so a stored job never holds an expired link.
"""

import hmac
import io
import math
import re
import time
import uuid
import warnings
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.signing import Signer
from django.http import FileResponse, Http404, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.utils.text import get_valid_filename
from django.views.decorators.http import require_safe

from .models import MediaFile

SALT = "playground.media"
URL_RE = re.compile(r"^/media/(?P<id>[0-9a-f-]{36})/(?P<name>[^/?#]+)$")
# Inputs larger than this many pixels are refused before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 4096 * 4096


def storage():
    return storages["default"]


# ---- saving ------------------------------------------------------------------------------


def save_file(user, data: bytes, filename: str, content_type: str, purpose: str, job=None):
    """Store `data` and record it as the user's MediaFile."""
    public_id = uuid.uuid4()
    filename = get_valid_filename(filename)[:100] or "file"
    # Sharded by the id's first characters so no folder grows without bound.
    name = storage().save(f"{purpose}/{public_id.hex[:2]}/{public_id.hex}", ContentFile(data))
    return MediaFile.objects.create(
        public_id=public_id,
        user=user,
        job=job,
        purpose=purpose,
        name=name,
        filename=filename,
        content_type=content_type,
        bytes=len(data),
    )


def save_output(job, data: bytes, filename: str, content_type: str) -> MediaFile:
    return save_file(job.user, data, filename, content_type, MediaFile.OUTPUT, job=job)


def read_file(media_file: MediaFile) -> bytes:
    with storage().open(media_file.name, "rb") as handle:
        return handle.read()


def delete_stored(media_file: MediaFile) -> None:
    storage().delete(media_file.name)


def delete_after_row(sender, instance, **kwargs) -> None:
    from django.db import transaction

    # After commit: a rolled-back delete keeps its file.
    transaction.on_commit(lambda: delete_stored(instance))


def file_for_ref(ref: str) -> MediaFile | None:
    public_id = ref.split("/", 1)[0]
    try:
        return MediaFile.objects.filter(public_id=uuid.UUID(public_id)).first()
    except ValueError:
        return None


# ---- signed links ------------------------------------------------------------------------


def _signature(public_id, owner_id, expires: int) -> str:
    return Signer(salt=SALT).signature(f"{public_id}:{owner_id}:{expires}")


def expiry(now: float | None = None) -> int:
    """When a link made now expires: at least PLAYGROUND_MEDIA_URL_SECONDS from now.

    Rounded up to a step of 1/24 of the lifetime, so documents made moments apart carry the
    same links (equal documents, and browser caches that work).
    """
    lifetime = settings.PLAYGROUND_MEDIA_URL_SECONDS
    step = max(1, lifetime // 24)
    return math.ceil(((now if now is not None else time.time()) + lifetime) / step) * step


def signed_path(ref: str, owner_id, expires: int | None = None) -> str:
    public_id, _, filename = ref.partition("/")
    expires = expiry() if expires is None else expires
    sig = _signature(public_id, owner_id, expires)
    return f"/media/{public_id}/{quote(filename)}?expires={expires}&sig={sig}"


def check_signature(media_file: MediaFile, expires: str, sig: str) -> str | None:
    """None if the link is good; else why not ("invalid" or "expired")."""
    # ASCII digits only, and few: str.isdigit() lets "²" through to int(), and int() refuses
    # strings over 4300 digits; either was a 500.
    if not re.fullmatch(r"[0-9]{1,12}", expires) or not sig:
        return "invalid"
    expected = _signature(media_file.public_id, media_file.user_id, int(expires))
    if not hmac.compare_digest(expected, sig):
        return "invalid"
    if int(expires) < time.time():
        return "expired"
    return None


def base_url(request) -> str:
    """scheme://host[:port] of a request, as the client reached us."""
    return request.build_absolute_uri("/").rstrip("/")


def base_url_from_scope(scope) -> str:
    """The same for a websocket: its Host header, if allowed; else PLAYGROUND_PUBLIC_URL."""
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return settings.PLAYGROUND_PUBLIC_URL
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return f"{scheme}://{host}"


def render_output(output: dict, owner_id, base: str | None = None) -> dict:
    """A job's stored output with its file refs as signed absolute URLs (CONTRACT §4).

    `images: [{file}]` → `images: [{url}]`, `video: {file}` → `video: {url}`, and any top-level
    `<name>_file` → `<name>_url` (e.g. `audio_file` → `audio_url`).
    """
    if not output:
        return {}
    base = base or settings.PLAYGROUND_PUBLIC_URL
    expires = expiry()

    def url(ref: str) -> str:
        return base + signed_path(ref, owner_id, expires)

    def item(value):
        if isinstance(value, dict) and isinstance(value.get("file"), str):
            rest = {k: v for k, v in value.items() if k != "file"}
            return {"url": url(value["file"]), **rest}
        return value

    rendered = {}
    for key, value in output.items():
        if key == "images" and isinstance(value, list):
            rendered[key] = [item(v) for v in value]
        elif key == "video":
            rendered[key] = item(value)
        elif key.endswith("_file") and isinstance(value, str):
            rendered[key.removesuffix("_file") + "_url"] = url(value)
        else:
            rendered[key] = value
    return rendered


def parse_own_url(url: str, user) -> MediaFile | None:
    """The user's file behind a signed link of this site; None if `url` is not one.

    Raises ValueError (with a reason) for a link of this site that is not valid for the user.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    public = urlsplit(settings.PLAYGROUND_PUBLIC_URL)
    ours = parts.netloc == public.netloc or validate_host(parts.hostname, settings.ALLOWED_HOSTS)
    match = URL_RE.match(parts.path)
    if not ours or match is None:
        return None
    query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
    media_file = MediaFile.objects.filter(public_id=match["id"]).first()
    problem = "invalid"
    if media_file is not None:
        problem = check_signature(media_file, query.get("expires", ""), query.get("sig", ""))
    if problem == "expired":
        raise ValueError("the link has expired; fetch a fresh one")
    # Someone else's file reads as no file at all, as everywhere else.
    if problem or media_file.user_id != user.pk:
        raise ValueError("not a valid link to one of your files")
    return media_file


# ---- serving -----------------------------------------------------------------------------

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@require_safe
def serve(request, public_id, filename):
    """A file behind a signed link; unknown or tampered 404, expired 403. No key needed."""
    media_file = MediaFile.objects.filter(public_id=public_id).first()
    if media_file is None:
        raise Http404("No such file")
    problem = check_signature(
        media_file, request.GET.get("expires", ""), request.GET.get("sig", "")
    )
    if problem == "invalid":
        raise Http404("No such file")
    if problem == "expired":
        return HttpResponse(
            "This link has expired.", status=403, content_type="text/plain; charset=utf-8"
        )
    try:
        handle = storage().open(media_file.name, "rb")
    except FileNotFoundError:
        raise Http404("No such file") from None
    size = media_file.bytes
    match = RANGE_RE.match(request.headers.get("Range", ""))
    if match and (match[1] or match[2]):
        # A single byte range, so browsers can seek in videos and audio.
        if match[1]:
            start, end = int(match[1]), int(match[2]) if match[2] else size - 1
        else:
            start, end = max(0, size - int(match[2])), size - 1
        end = min(end, size - 1)
        if start > end:
            handle.close()
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        handle.seek(start)
        response = HttpResponse(handle.read(end - start + 1), status=206)
        handle.close()
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Type"] = media_file.content_type
    else:
        response = FileResponse(handle, content_type=media_file.content_type)
        response["Content-Length"] = str(size)
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = f'inline; filename="{media_file.filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    max_age = max(0, int(request.GET["expires"]) - int(time.time()))
    response["Cache-Control"] = f"private, max-age={max_age}"
    return response


# ---- content checks ----------------------------------------------------------------------

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def sniff(data: bytes) -> str | None:
    """The media type of `data` from its first bytes, whatever the file was called."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def open_image(data: bytes):
    """A fully decoded Pillow image of PNG/JPEG/WebP/GIF bytes; ValueError if unsafe or broken.

    The pixel count is checked from the header before anything is decompressed.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(IMAGE_TYPES))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"the image is {width}x{height}; at most {MAX_IMAGE_PIXELS} pixels"
                )
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError("not a PNG, JPEG, WebP or GIF image (or too large to decode)") from None
    except (OSError, SyntaxError, EOFError):
        raise ValueError("the image is damaged and cannot be decoded") from None
    return image
