"""Content repository decisions, as pure functions (C-S API "Content repository").

- Media IDs: "Matrix Content (mxc://) URIs" and "Security considerations" — only ``A-Za-z0-9``,
  ``_`` and ``-``; that allow-list is what keeps a media ID from ever naming a path.
- Serving: "Serving inline content" — which ``Content-Type`` may be served ``inline``; the
  ``Content-Disposition`` header with an RFC 6266 / RFC 5987 ``filename*``.
- Thumbnails: "Thumbnails" — the sizes for ``crop`` and ``scale``; never upscale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from bastion.core.urls import valid_http_url

#: C-S API "Matrix Content (mxc://) URIs": the media-id alphabet. 255 bounds the length.
MEDIA_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")

#: C-S API "Serving inline content": the only types a server should serve ``inline``.
INLINE_CONTENT_TYPES = frozenset(
    {
        "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
        "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
        "video/mp4", "video/webm", "video/ogg", "video/quicktime",
        "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave",
        "audio/wav", "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
    }
)  # fmt: skip

#: Types a browser executes or renders as a document (scripts, markup, SVG, XML with XSLT).
#: Even as an attachment they are served as ``application/octet-stream``: a security-first
#: reading of the ``Content-Type`` rules (the spec would allow the original type as an
#: attachment), so a misconfigured client or proxy that ignores ``Content-Disposition`` never
#: renders them on the media origin.
ACTIVE_CONTENT_TYPES = frozenset(
    {
        "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml",
        "text/javascript", "application/javascript", "application/ecmascript",
        "text/ecmascript", "application/x-javascript", "text/x-javascript", "text/jscript",
        "application/x-shockwave-flash", "text/xsl", "application/xslt+xml", "text/vtt",
        "application/wasm", "text/cache-manifest", "application/x-httpd-php", "multipart/x-mixed-replace",
        "application/mathml+xml", "application/rdf+xml", "application/vnd.wap.xhtml+xml",
    }
)  # fmt: skip

#: C-S API "Content repository": the recommended Content-Security-Policy, plus
#: ``media-src 'self'`` so inline audio and video still play in a sandboxed frame.
CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_CHARSET_RE = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9._:+-]{1,40})\"?", re.IGNORECASE)
MAX_CONTENT_TYPE_LENGTH = 255
MAX_FILENAME_LENGTH = 255


def is_valid_media_id(media_id: str) -> bool:
    return MEDIA_ID_RE.fullmatch(media_id) is not None


def normalise_upload_content_type(value: str | None) -> str:
    """The content type to record for an upload: the client's ``Content-Type`` if it is a
    well-formed ``type/subtype[; params]`` of sane length, else ``application/octet-stream``
    (content-repo.yaml: "Defaults to application/octet-stream if it is not set")."""
    if not value:
        return DEFAULT_CONTENT_TYPE
    value = value.strip()
    if len(value) > MAX_CONTENT_TYPE_LENGTH or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        return DEFAULT_CONTENT_TYPE
    main = value.split(";", 1)[0].strip()
    if not _MEDIA_TYPE_RE.fullmatch(main):
        return DEFAULT_CONTENT_TYPE
    return value


def base_type(content_type: str) -> str:
    """``type/subtype`` lower-cased, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def served_content_type(content_type: str | None) -> tuple[str, bool]:
    """(Content-Type to send, inline?) for a stored upload type ("Serving inline content").

    Allow-listed types are served inline with their own type (``text/*`` keeps a well-formed
    ``charset``); active content (HTML, SVG, scripts, XML …) and malformed types are served as
    ``application/octet-stream`` attachments; every other type is an attachment of its type.
    """
    if not content_type:
        return DEFAULT_CONTENT_TYPE, False
    main = base_type(content_type)
    if not _MEDIA_TYPE_RE.fullmatch(main):
        return DEFAULT_CONTENT_TYPE, False
    if main in INLINE_CONTENT_TYPES:
        if main.startswith("text/"):
            m = _CHARSET_RE.search(content_type.split(";", 1)[1] if ";" in content_type else "")
            if m:
                return f"{main}; charset={m.group(1).lower()}", True
        return main, True
    if (
        main in ACTIVE_CONTENT_TYPES
        or main.endswith(("+xml", "script"))
        or main.startswith("multipart/")
    ):
        return DEFAULT_CONTENT_TYPE, False
    return main, False


def sanitise_filename(name: str | None) -> str | None:
    """A file name fit for a header: no control characters, bounded length; None when nothing
    printable is left. Other characters are kept (the header encodes them)."""
    if not name:
        return None
    name = "".join(c for c in name if c.isprintable()).strip()
    if len(name) > MAX_FILENAME_LENGTH:
        name = name[:MAX_FILENAME_LENGTH]
    return name or None


_ASCII_SAFE = set(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~ ()[]{}@,=:'"
)


def content_disposition(inline: bool, filename: str | None) -> str:
    """``inline`` or ``attachment``, with the file name: a plain quoted ``filename`` when it is
    safe ASCII, otherwise ``filename*=utf-8''<percent-encoded>`` (RFC 6266 §4.3, RFC 5987)."""
    disposition = "inline" if inline else "attachment"
    filename = sanitise_filename(filename)
    if filename is None:
        return disposition
    if all(c in _ASCII_SAFE for c in filename):
        return f'{disposition}; filename="{filename}"'
    return f"{disposition}; filename*=utf-8''{quote(filename, safe='')}"


# -- thumbnails ---------------------------------------------------------------------------------

THUMBNAIL_METHODS = ("crop", "scale")


@dataclass(frozen=True, slots=True)
class ThumbnailPlan:
    """How to make a thumbnail: optionally crop the source to ``crop_box`` (left, top, right,
    bottom), then resize to ``width`` x ``height``. ``original`` means the source is no larger
    than asked and should be served as it is (C-S API "Thumbnails")."""

    width: int
    height: int
    crop_box: tuple[int, int, int, int] | None
    original: bool


def plan_thumbnail(src_w: int, src_h: int, want_w: int, want_h: int, method: str) -> ThumbnailPlan:
    """C-S API "Thumbnails": ``scale`` keeps the aspect ratio and fits the requested box (one
    side equal to the request); ``crop`` returns the requested aspect ratio, covering the box.
    Never upscale; when the source is no larger than the request, serve the source."""
    if src_w <= 0 or src_h <= 0 or want_w <= 0 or want_h <= 0:
        raise ValueError("dimensions must be positive")
    if src_w <= want_w and src_h <= want_h:
        return ThumbnailPlan(src_w, src_h, None, True)
    if method == "scale":
        # Fit inside the box: the side that limits reaches the requested size.
        if want_w * src_h <= want_h * src_w:
            w, h = want_w, max(1, (want_w * src_h + src_w // 2) // src_w)
        else:
            w, h = max(1, (want_h * src_w + src_h // 2) // src_h), want_h
        return ThumbnailPlan(min(w, src_w), min(h, src_h), None, False)
    if method != "crop":
        raise ValueError(f"unknown thumbnail method {method!r}")
    # Crop: the largest centred box of the requested aspect ratio, then shrink it to the
    # request (or keep it when the source is smaller than the request in one dimension).
    if want_w * src_h >= want_h * src_w:
        cw, ch = src_w, max(1, (src_w * want_h) // want_w)
    else:
        cw, ch = max(1, (src_h * want_w) // want_h), src_h
    left, top = (src_w - cw) // 2, (src_h - ch) // 2
    box = (left, top, left + cw, top + ch)
    if cw <= want_w or ch <= want_h:
        return ThumbnailPlan(cw, ch, box, False)
    return ThumbnailPlan(want_w, want_h, box, False)


# -- the fixed set of thumbnail sizes -----------------------------------------------------------

#: Largest width or height a configured thumbnail size may have.
MAX_CONFIGURED_THUMBNAIL_DIMENSION = 4096
#: Most sizes a configuration may list (each is generated at most once per media).
MAX_CONFIGURED_THUMBNAIL_SIZES = 16


@dataclass(frozen=True, slots=True)
class ThumbnailSize:
    """One configured thumbnail size: the only sizes this server generates."""

    width: int
    height: int
    method: str

    @property
    def key(self) -> str:
        """A file-name-safe name of the size, e.g. ``96x96-crop``."""
        return f"{self.width}x{self.height}-{self.method}"


#: The sizes generated when the configuration names none (the same set as Synapse's default
#: ``thumbnail_sizes``).
DEFAULT_THUMBNAIL_SIZES: tuple[ThumbnailSize, ...] = (
    ThumbnailSize(32, 32, "crop"),
    ThumbnailSize(96, 96, "crop"),
    ThumbnailSize(320, 240, "scale"),
    ThumbnailSize(640, 480, "scale"),
    ThumbnailSize(800, 600, "scale"),
)


def parse_thumbnail_sizes(value: object) -> tuple[ThumbnailSize, ...]:
    """The configured ``thumbnail_sizes``: a non-empty list of ``{width, height, method}``
    tables. Raises ValueError naming the problem."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("thumbnail_sizes must be a non-empty list of {width, height, method}")
    if len(value) > MAX_CONFIGURED_THUMBNAIL_SIZES:
        raise ValueError(f"thumbnail_sizes may list at most {MAX_CONFIGURED_THUMBNAIL_SIZES}")
    sizes: list[ThumbnailSize] = []
    for entry in value:
        if isinstance(entry, ThumbnailSize):
            entry = {"width": entry.width, "height": entry.height, "method": entry.method}
        if not isinstance(entry, dict) or set(entry) - {"width", "height", "method"}:
            raise ValueError("each thumbnail size is a table of width, height and method")
        width, height, method = entry.get("width"), entry.get("height"), entry.get("method")
        for name, n in (("width", width), ("height", height)):
            if (
                not isinstance(n, int)
                or isinstance(n, bool)
                or not 0 < n <= MAX_CONFIGURED_THUMBNAIL_DIMENSION
            ):
                raise ValueError(
                    f"thumbnail {name} must be an integer from 1 to "
                    f"{MAX_CONFIGURED_THUMBNAIL_DIMENSION}"
                )
        if method not in THUMBNAIL_METHODS:
            raise ValueError("thumbnail method must be crop or scale")
        size = ThumbnailSize(width, height, method)  # type: ignore[arg-type]
        if size not in sizes:
            sizes.append(size)
    return tuple(sizes)


def select_thumbnail_size(
    sizes: tuple[ThumbnailSize, ...], want_w: int, want_h: int, method: str
) -> ThumbnailSize:
    """The configured size that best serves a request (C-S API "Thumbnails": the server "SHOULD
    return a thumbnail at least as large as requested", may return a different size, and
    "crop"/"scale" are hints). The rule follows Synapse's thumbnail selection: among the sizes
    of the requested method (every size when none has it), prefer those at least as large as
    the request in one dimension; for ``crop`` rank by closeness of aspect ratio, then by
    covering the request in both dimensions, then by closeness of size; for ``scale`` by
    closeness of size. Ties go to the size listed first."""
    if not sizes:
        raise ValueError("no thumbnail sizes configured")
    if want_w <= 0 or want_h <= 0:
        raise ValueError("dimensions must be positive")
    candidates = [s for s in sizes if s.method == method] or list(sizes)

    def rank(s: ThumbnailSize) -> tuple[int, ...]:
        size_quality = abs((want_w - s.width) * (want_h - s.height))
        if method == "crop":
            aspect_quality = abs(want_w * s.height - want_h * s.width)
            min_quality = 0 if want_w <= s.width and want_h <= s.height else 1
            return (aspect_quality, min_quality, size_quality)
        return (size_quality,)

    larger = [s for s in candidates if s.width >= want_w or s.height >= want_h]
    pool = larger or candidates
    return min(pool, key=rank)  # min keeps the first of equals


# -- federation (S-S API "Content Repository") -------------------------------------------------

#: ``multipart/mixed`` boundaries we send: RFC 2046 allows 1-70 characters from a small set.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,./:=?-]{1,70}")


def multipart_media_head(boundary: str, content_type: str, disposition: str) -> bytes:
    """The start of a federation media response (S-S API "Content Repository"): the metadata
    part (``application/json``, an empty object: the spec defines no field in it yet) and the
    headers of the content part; the content follows, then :func:`multipart_media_tail`."""
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise ValueError("invalid multipart boundary")
    return (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        f"Content-Disposition: {disposition}\r\n\r\n"
    ).encode()


def multipart_media_tail(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


def remote_upload_name(name: str | None) -> str | None:
    """The file name to keep for a file fetched from another server (its content part's
    ``Content-Disposition``), held to the rule of an upload's ``?filename=``: at most
    :data:`MAX_FILENAME_LENGTH` printable characters; anything else is dropped."""
    if not name or len(name) > MAX_FILENAME_LENGTH or not name.isprintable():
        return None
    return name


def redirect_target_allowed(url: str) -> bool:
    """Whether a ``Location`` part of a federation media answer names something we may follow:
    an absolute ``http``/``https`` URL with a host, a valid port and no user information (a
    query is allowed; the address it resolves to is judged by the egress filter at connect
    time)."""
    return len(url) <= 4096 and valid_http_url(url, query=True)
