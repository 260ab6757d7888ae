"""`/v1/files`: uploads for media inputs and datasets (CONTRACT §4); private to their owner."""

import json
import uuid
from typing import Literal

from django.conf import settings
from ninja import File, Form
from ninja.files import UploadedFile

from . import inputs, media
from .api import api, bearer
from .errors import ApiError
from .models import MediaFile

PURPOSES = (MediaFile.INPUT, MediaFile.FINE_TUNE)
# What an `input` upload may be, by its sniffed content.
INPUT_TYPES = {
    "image/png", "image/jpeg", "image/webp", "image/gif", "audio/wav", "audio/mpeg",
    "audio/flac", "audio/ogg", "video/mp4", "video/webm",
}  # fmt: skip


def file_document(media_file: MediaFile, request) -> dict:
    path = media.signed_path(media_file.ref, media_file.user_id)
    return {
        "id": str(media_file.public_id),
        "object": "file",
        "url": media.base_url(request) + path,
        "bytes": media_file.bytes,
        "purpose": media_file.purpose,
        "created": int(media_file.created.timestamp()),
        "filename": media_file.filename,
        "content_type": media_file.content_type,
    }


def _too_large() -> ApiError:
    limit = settings.PLAYGROUND_MAX_UPLOAD_BYTES
    return ApiError(413, "file_too_large", f"Files are limited to {limit} bytes.", "file")


def check_upload(data: bytes, purpose: str) -> str:
    """The content type of an acceptable upload, from its bytes; ApiError 400 otherwise."""
    if purpose == MediaFile.FINE_TUNE:
        try:
            lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
            if not lines or not all(isinstance(json.loads(line), dict) for line in lines):
                raise ValueError
        except ValueError:
            raise ApiError(
                400,
                "invalid_file",
                "A fine-tune file must be JSON Lines: one JSON object per line, UTF-8.",
                "file",
            ) from None
        return "application/jsonl"
    content_type = media.sniff(data)
    if content_type not in INPUT_TYPES:
        raise ApiError(
            400,
            "invalid_file",
            "An input file must be an image (PNG, JPEG, WebP, GIF), audio (WAV, MP3, FLAC, "
            "Ogg) or video (MP4, WebM); its content says otherwise.",
            "file",
        )
    if content_type.startswith("image/"):
        try:
            inputs.check_content(data, "image")
        except inputs.InputError as exc:
            raise ApiError(400, "invalid_file", f"file: {exc}", "file") from None
    return content_type


@api.post("/files", auth=bearer, tags=["files"], summary="Upload a file")
def upload_file(request, file: File[UploadedFile], purpose: Form[Literal["input", "fine-tune"]]):
    """Multipart `file` and `purpose` (`input` or `fine-tune`), up to
    PLAYGROUND_MAX_UPLOAD_BYTES. The type is read from the content, never the name."""
    if file.size is not None and file.size > settings.PLAYGROUND_MAX_UPLOAD_BYTES:
        raise _too_large()
    data = file.read(settings.PLAYGROUND_MAX_UPLOAD_BYTES + 1)
    if len(data) > settings.PLAYGROUND_MAX_UPLOAD_BYTES:
        raise _too_large()
    if not data:
        raise ApiError(400, "invalid_file", "The file is empty.", "file")
    stored = store_upload(request.api_key.user, data, file.name or "upload", purpose)
    return file_document(stored, request)


def store_upload(user, data: bytes, filename: str, purpose: str) -> MediaFile:
    """Checks and stores an upload (the API's and the web form's); ApiError 400 if refused.

    The file's id is then a valid media input of the user's (e.g. `image`)."""
    return media.save_file(user, data, filename, check_upload(data, purpose), purpose)


def _own_file(request, file_id: str) -> MediaFile:
    """The caller's upload, or 404 for an unknown id and for another user's file alike."""
    try:
        public_id = uuid.UUID(file_id)
    except ValueError:
        public_id = None
    media_file = MediaFile.objects.filter(
        public_id=public_id, user=request.api_key.user, purpose__in=PURPOSES
    ).first()
    if public_id is None or media_file is None:
        raise ApiError(404, "file_not_found", "No such file.", "file_id")
    return media_file


@api.get("/files", auth=bearer, tags=["files"], summary="List your files, newest first")
def list_files(request, purpose: str | None = None, limit: int = 100):
    if not 1 <= limit <= 100:
        raise ApiError(400, "invalid_parameter", "limit must be between 1 and 100.", "limit")
    files = MediaFile.objects.filter(user=request.api_key.user, purpose__in=PURPOSES)
    if purpose is not None:
        if purpose not in PURPOSES:
            raise ApiError(
                400, "invalid_parameter", "purpose must be `input` or `fine-tune`.", "purpose"
            )
        files = files.filter(purpose=purpose)
    page = list(files.order_by("-created", "-id")[: limit + 1])
    return {
        "object": "list",
        "data": [file_document(f, request) for f in page[:limit]],
        "has_more": len(page) > limit,
    }


@api.get("/files/{file_id}", auth=bearer, tags=["files"], summary="Get a file (a fresh link)")
def get_file(request, file_id: str):
    return file_document(_own_file(request, file_id), request)


@api.delete("/files/{file_id}", auth=bearer, tags=["files"], summary="Delete a file")
def delete_file(request, file_id: str):
    media_file = _own_file(request, file_id)
    public_id = str(media_file.public_id)
    media_file.delete()  # the stored bytes follow (post_delete)
    return {"id": public_id, "object": "file", "deleted": True}
