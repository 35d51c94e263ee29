"""The browser demo (``/``, ``/index.html``, ``/client.js``), served by the gateway's HTTP side.

Read once at start (the package's ``static/`` folder); answered from memory.
"""

from __future__ import annotations

from importlib import resources

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

# URL path -> (file in delivery/static, content type)
_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/client.js": ("client.js", "text/javascript; charset=utf-8")}

# URL path -> (content type, body)
StaticFiles = dict[str, tuple[str, str]]


def load_static() -> StaticFiles:
    out: StaticFiles = {}
    base = resources.files("delivery") / "static"
    for path, (name, ctype) in _FILES.items():
        try:
            out[path] = (ctype, (base / name).read_text(encoding="utf-8"))
        except (FileNotFoundError, OSError):
            continue
    return out


def static_response(connection: ServerConnection, files: StaticFiles, path: str) -> Response:
    """The file at ``path``, not cached by the browser (it changes with the gateway), or 404."""
    static = files.get(path)
    if static is None:
        return connection.respond(404, "not found\n")
    content_type, body = static
    resp = connection.respond(200, body)
    headers = Headers(
        (k, v) for k, v in resp.headers.raw_items() if k.lower() != "content-type"
    )
    headers["Content-Type"] = content_type
    headers["Cache-Control"] = "no-cache"
    return Response(resp.status_code, resp.reason_phrase, headers, resp.body)
