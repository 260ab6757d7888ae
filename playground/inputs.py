"""Media inputs (CONTRACT §4), resolved in one place at submit: a `data:` URI, a signed link
to one of the caller's own files here, the id of one of them, or an https URL on the operator's
allowlist (PLAYGROUND_INPUT_URL_ALLOWLIST). Anything else is 400 naming the field.

A URL is fetched only after every address its host resolves to is checked to be public (no
loopback, private, link-local, multicast or reserved address: SSRF), and the connection goes
to that checked address (so DNS cannot answer differently the second time). Redirects are
followed by hand, each one checked the same way. Size and time are capped.

The bytes are sniffed (never trusted by name or header), images are decoded under Pillow's
limits, and the result is stored as the caller's file; the job's parameters then hold that
file's ref, so the engine never fetches anything and a re-run needs no link that expires.
"""

import base64
import binascii
import ipaddress
import socket
import time
import uuid
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings

from . import media
from .errors import ApiError
from .models import MediaFile

SCHEMES = ("https",)
MAX_REDIRECTS = 3
KINDS = {"image": ("image/png", "image/jpeg", "image/webp", "image/gif")}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class InputError(ValueError):
    """Why an input was refused, for the 400 message."""


def media_fields(params_class) -> dict[str, str]:
    """{field name: kind} of a parameter class's media inputs (marked `x-media` in the schema)."""
    found = {}
    for name, field in params_class.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("x-media"):
            found[name] = extra["x-media"]
    return found


def resolve(params_class, params: dict, user, sent: dict | None = None) -> dict:
    """`params` with each media input replaced by the ref of the user's stored file.

    Errors name the field as the client sent it (`sent`: the raw body), alias included."""
    fields = media_fields(params_class)
    if not fields:
        return params
    resolved = dict(params)
    for name, kind in fields.items():
        value = params.get(name)
        if value is None:
            continue
        alias = params_class.model_fields[name].validation_alias
        names = getattr(alias, "choices", [name])
        param = next((n for n in names if n in (sent or {})), name)
        try:
            resolved[name] = resolve_one(value, user, kind, name).ref
        except InputError as exc:
            raise ApiError(400, "invalid_parameter", f"{param}: {exc}", param) from None
    return resolved


def resolve_one(value: str, user, kind: str, name: str = "input") -> MediaFile:
    if value.startswith("data:"):
        return store_checked(user, decode_data_uri(value), kind, name)
    try:
        own = media.parse_own_url(value, user)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if own is None:
        own = _own_file_by_id(value, user)
    if own is not None:
        if own.content_type not in KINDS[kind]:
            raise InputError(f"that file is {own.content_type}, not an {kind}")
        return own
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        return store_checked(user, fetch(value), kind, name)
    raise InputError(
        "give a data: URI, a link to one of your files here (POST /v1/files), "
        "or an https URL on this server's allowlist"
    )


def _own_file_by_id(value: str, user) -> MediaFile | None:
    try:
        public_id = uuid.UUID(value.split("/", 1)[0])
    except ValueError:
        return None
    media_file = MediaFile.objects.filter(public_id=public_id, user=user).first()
    if media_file is None:
        raise InputError("no such file of yours")
    return media_file


def decode_data_uri(value: str) -> bytes:
    header, comma, payload = value.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InputError("a data: URI must be base64 (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > settings.PLAYGROUND_MAX_UPLOAD_BYTES:
        raise InputError("the data is too large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("the data: URI is not valid base64") from None


def check_content(data: bytes, kind: str) -> str:
    """The sniffed media type of `data` if it is a sound `kind`; raises InputError if not."""
    if len(data) > settings.PLAYGROUND_MAX_UPLOAD_BYTES:
        raise InputError("the file is too large")
    content_type = media.sniff(data)
    if content_type not in KINDS[kind]:
        raise InputError(f"not an {kind} (PNG, JPEG, WebP or GIF)")
    try:
        media.open_image(data)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return content_type


def store_checked(user, data: bytes, kind: str, name: str) -> MediaFile:
    content_type = check_content(data, kind)
    filename = f"{name}.{EXTENSIONS[content_type]}"
    return media.save_file(user, data, filename, content_type, MediaFile.INPUT)


# ---- fetching allowlisted URLs -----------------------------------------------------------


def host_allowed(host: str) -> bool:
    host = host.lower().rstrip(".")
    for entry in settings.PLAYGROUND_INPUT_URL_ALLOWLIST:
        if entry.startswith(".") and (host == entry[1:] or host.endswith(entry)):
            return True
        if host == entry:
            return True
    return False


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the low 32 bits are IPv4
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use: IPv4 anywhere in it
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def is_public_address(address: str) -> bool:
    """Whether `address` is public, counting the IPv4 address an IPv6 one carries (mapped,
    IPv4-compatible, 6to4, Teredo, NAT64): Python's is_global passes 64:ff9b::7f00:1, which a
    NAT64 gateway sends to 127.0.0.1. Used by media input fetches and webhook deliveries."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL:
            return False
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in NAT64 or ip in IPV4_COMPATIBLE:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and not _public_ip(v4) for v4 in embedded):
            return False
        if ip.ipv4_mapped is not None:
            return True  # judged by its IPv4 address alone
    return _public_ip(ip)


def _public_ip(ip) -> bool:
    return ip.is_global and not ip.is_multicast


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InputError(f"cannot resolve {host}") from None
    return sorted({info[4][0] for info in infos})


def _checked_target(url: str, allowlisted: bool = True) -> tuple[str, str, int, str]:
    """(scheme, host, port, address to connect to) for a URL that may be fetched."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InputError("only https URLs can be fetched")
    if not parts.hostname or parts.username or parts.password:
        raise InputError("not a valid URL")
    host = parts.hostname
    if allowlisted and not host_allowed(host):
        raise InputError(f"{host} is not on this server's input URL allowlist")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError("not a valid URL") from None
    addresses = resolve_host(host, port)
    # Every address must be public: a name with one private record among public ones is a trap.
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise InputError(f"{host} resolves to a private or local address")
    return parts.scheme, host, port, addresses[0]


def pinned_request(client: httpx.Client, method: str, url: str, address: str, **kwargs):
    """A request for `url` that connects to `address` (the one checked), so DNS cannot answer
    differently the second time; the Host header and TLS (SNI, certificate) use the name.

    Send it with a client of its own (not a shared pool): pooled connections are keyed by the
    address, and one made for another name would carry that name's TLS session."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = f"[{address}]" if ":" in address else address
    pinned = f"{parts.scheme}://{literal}:{port}{parts.path or '/'}"
    if parts.query:
        pinned += f"?{parts.query}"
    headers = {"Host": parts.netloc.rpartition("@")[2], **kwargs.pop("headers", {})}
    extensions = {"sni_hostname": parts.hostname}
    return client.build_request(method, pinned, headers=headers, extensions=extensions, **kwargs)


def fetch(url: str, allowlisted: bool = True) -> bytes:
    """The body at `url`, within PLAYGROUND_MAX_UPLOAD_BYTES and PLAYGROUND_INPUT_FETCH_TIMEOUT.

    `allowlisted=False` skips the allowlist (for links an upstream model answered with); the
    address checks stay."""
    limit = settings.PLAYGROUND_MAX_UPLOAD_BYTES
    timeout = settings.PLAYGROUND_INPUT_FETCH_TIMEOUT
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            _, host, _, address = _checked_target(url, allowlisted)
            request = pinned_request(client, "GET", url, address, headers={"Accept": "image/*"})
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError:
                raise InputError(f"could not fetch the URL from {host}") from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise InputError(f"{host} answered HTTP {response.status_code}")
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > limit:
                    raise InputError("the file at the URL is too large")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise InputError("the file at the URL is too large")
                    if time.monotonic() > deadline:
                        raise InputError("fetching the URL took too long")
                return bytes(body)
            except httpx.HTTPError:
                raise InputError(f"could not fetch the URL from {host}") from None
            finally:
                response.close()
    raise InputError("too many redirects")
