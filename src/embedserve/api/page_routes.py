"""The web page at `/`: the playground and the server view, static files shipped in the package
(embedserve/web) and read once. The page talks to the public API only; serving it touches no
model. A strict Content-Security-Policy keeps it to this origin: no inline code, no CDN."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from fastapi import Request
from starlette.responses import HTMLResponse, Response

from embedserve.api.wire import OPENAI
from embedserve.errors import NotFound

PAGE_PATH = "/"
ASSETS = "/ui/"

# 'self' only: scripts, styles, fetches; nothing framed, no form posts, no <base> rewrites.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

router = OPENAI.router("Web page")


def is_page(method: str, path: str) -> bool:
    """Whether a request is for the page's own files, which carry no data and so need no key
    (the page asks for the key itself). POST / is TEI's embed route: not the page."""
    return method in ("GET", "HEAD") and (path == PAGE_PATH or path.startswith(ASSETS))


@router.get(
    PAGE_PATH,
    response_class=HTMLResponse,
    summary="The web page: the embeddings playground and the server view",
)
async def page(request: Request) -> Response:
    return _file_response("index.html", request)


@router.get(ASSETS + "{name}", include_in_schema=False)
async def asset(name: str, request: Request) -> Response:
    return _file_response(name, request)


def _file_response(name: str, request: Request) -> Response:
    found = _read(name)
    if found is None:
        raise NotFound(f"no such page file: {name!r}")
    body, etag = found
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",  # revalidated: an upgraded server serves its own page
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    suffix = name[name.rfind(".") :]
    return Response(body, media_type=_TYPES[suffix], headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match holds `etag`: a list, weak (W/) or not, or * (RFC 9110's weak comparison)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


@cache
def _files() -> dict[str, tuple[bytes, str]]:
    """The page's files by name, with their ETags: read once, a few tens of KB in all."""
    found = {}
    for file in resources.files("embedserve.web").iterdir():
        if file.is_file() and file.name[file.name.rfind(".") :] in _TYPES:
            body = file.read_bytes()
            found[file.name] = (body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return found


def _read(name: str) -> tuple[bytes, str] | None:
    return _files().get(name)
