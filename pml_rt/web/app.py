"""The annotator's HTTP surface: a Starlette app over one :class:`~pml_rt.web.state.Annotator`.

Only the routes below exist; everything else is a 404. Input is checked here for shape
(JSON object, field types, body size) and by the annotator for meaning (frame and point
ranges, known object ids); every failure is a 4xx with ``{"error": message}``:

- 400 bad input (malformed JSON, missing or mistyped fields, frames or points out of range),
- 403 a cross-site write (``Origin`` of another site), 404 unknown route or file,
- 409 the wrong moment (still embedding, nothing to undo), 413 body too large,
- 415 wrong ``Content-Type`` (writes must say ``application/json`` or ``image/png``, which also
  makes browsers ask before a cross-site page may send them).

Requests whose ``Host`` header names another machine are refused (400), so a web page that
rebinds its DNS name to 127.0.0.1 cannot read the video through the user's browser.

    GET  /                       the page           GET  /static/{name}   its script and style
    GET  /api/state              status, objects    GET  /api/frame/{i}   frame i as JPEG
    GET  /api/mask/{i}           mask i as PNG      POST /api/mask/{i}    set mask i (PNG body)
    GET  /api/thumbs?n=10        cell-resolution masks of n frames spread over the video
    POST /api/click              {frame, points, labels} -> the frame's mask as PNG
    POST /api/scribble           {frame, path, label}    -> the frame's mask as PNG
    POST /api/objects            {name?}            PATCH/DELETE /api/objects/{id}
    POST /api/undo               POST /api/export {overlay, alpha}   GET /api/download/{name}
    POST /api/propagate          {frame}: the masks shown on frame and the annotated frames, carried through the video
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, MissingDependencyError, StateError
from .state import DOWNLOADS, Annotator, MaskResult

if TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("pml_rt.web")

#: Largest JSON body accepted (bytes): a 20000-point scribble is about 300 kB.
MAX_JSON_BYTES = 1 * 2**20
#: Largest mask PNG accepted (bytes).
MAX_PNG_BYTES = 16 * 2**20
#: Host names the server answers to when it listens on loopback.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

_INT = re.compile(r"^[0-9]{1,9}$")
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                "style-src 'self'; script-src 'self'; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
}


def require_web() -> None:
    """Raise MissingDependencyError naming the extra when Starlette or uvicorn is absent."""
    for name in ("starlette", "uvicorn"):
        try:
            __import__(name)
        except ImportError as exc:
            raise MissingDependencyError(
                f"the annotator needs {name}, which cannot be imported ({exc}). Install it with: "
                "pip install 'pml-rt[web]'  (Starlette and uvicorn)"
            ) from exc


class Reject(Exception):
    """A request refused with ``status`` (4xx) and ``message``, answered as ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def static_dir() -> Path:
    """The folder holding index.html, app.js and style.css (inside the installed package)."""
    return Path(str(resources.files("pml_rt.web") / "static"))


class _Guard:
    """Refuses other hosts' names and cross-site writes; adds security headers to replies."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts  # None: any (the user chose a public address)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.datastructures import Headers, MutableHeaders  # noqa: PLC0415
        from starlette.responses import JSONResponse  # noqa: PLC0415

        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        problem = None
        if self.allowed_hosts is not None and name.lower() not in self.allowed_hosts:
            problem = (400, f"Host {host!r} is not served here; open the page as http://127.0.0.1:<port>/")
        elif scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
                problem = (403, f"requests from {origin!r} are refused; use the annotator's own page")
        if problem is not None:
            await JSONResponse({"error": problem[1]}, status_code=problem[0])(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                for k, v in _SECURITY_HEADERS.items():
                    h.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse  # noqa: PLC0415

    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _reject(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Reject)
    return _error(exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (unknown route, wrong method), as JSON with a message."""
    status = getattr(exc, "status_code", 500)
    message = getattr(exc, "detail", "")
    if status == 404 and message == "Not Found":
        message = f"no such route: {request.method} {request.url.path}"
    elif status == 405 and message == "Method Not Allowed":
        message = f"{request.method} is not allowed on {request.url.path}"
    return _error(status, str(message), dict(getattr(exc, "headers", None) or {}))


async def _input_error(request: Request, exc: Exception) -> Response:
    return _error(400, str(exc))


async def _state_error(request: Request, exc: Exception) -> Response:
    return _error(409, str(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, str(exc))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal error ({type(exc).__name__}); see the server's log")


async def _read_body(request: Request, limit: int, content_type: str) -> bytes:
    """The request body, at most ``limit`` bytes, of media type ``content_type``."""
    got = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if got != content_type:
        raise Reject(415, f"expected Content-Type: {content_type}; got {got or 'none'}")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not re.fullmatch(r"[0-9]{1,18}", declared.strip()):
            raise Reject(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise Reject(413, f"body of {int(declared)} bytes is too large; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Reject(413, f"body is too large; the limit is {limit} bytes")
    return bytes(body)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


async def _json_object(request: Request) -> dict:
    body = await _read_body(request, MAX_JSON_BYTES, "application/json")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Reject(400, f"body is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise Reject(400, f"body must be a JSON object; got {type(data).__name__}")
    return data


_MISSING = object()


def _field(data: dict, key: str, default: Any = _MISSING) -> Any:
    if key not in data:
        if default is _MISSING:
            raise Reject(400, f"missing field {key!r}")
        return default
    return data[key]


def _path_int(request: Request, key: str) -> int:
    text = request.path_params[key]
    if not _INT.match(text):
        raise Reject(400, f"{key} {text!r} is not a non-negative integer")
    return int(text)


async def _annotate(func: Any, *args: Any) -> MaskResult:
    """Run an annotation verb in the thread pool; note how long the hop to it took."""
    from starlette.concurrency import run_in_threadpool  # noqa: PLC0415

    queued = time.perf_counter()

    def call() -> MaskResult:
        hop = time.perf_counter() - queued
        res = func(*args)
        res.timings = {"hop": hop, **res.timings}
        return res

    return await run_in_threadpool(call)


def _mask_response(res: MaskResult, started: float, after: Any = None) -> Response:
    """The mask PNG with its timings; ``after()`` runs once the reply is sent (in the thread
    pool): the rest of the video's update, which the clicked frame does not wait for."""
    from starlette.background import BackgroundTask  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415

    timings = dict(res.timings)
    timings["total"] = time.perf_counter() - started
    headers = {
        "Cache-Control": "no-store",
        "X-Mask-Version": str(res.version),
        "X-Frame": str(res.frame),
        "Server-Timing": ", ".join(f"{k};dur={1000 * v:.1f}" for k, v in timings.items()),
    }
    return Response(res.png, media_type="image/png", headers=headers,
                    background=BackgroundTask(after) if after is not None else None)


def create_app(annotator: Annotator, *, allowed_hosts: frozenset[str] | None = LOOPBACK_HOSTS) -> ASGIApp:
    """The ASGI app serving ``annotator``.

    allowed_hosts: host names accepted in the ``Host`` header (default: loopback names
    only); None accepts any, for a server the user chose to expose. Needs Starlette.
    """
    require_web()
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.concurrency import run_in_threadpool  # noqa: PLC0415
    from starlette.exceptions import HTTPException  # noqa: PLC0415
    from starlette.responses import FileResponse, JSONResponse, Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    run = secrets.token_hex(6)  # frame URLs carry it, so a browser never shows a stale cached frame
    folder = static_dir().resolve()
    static: dict[str, tuple[bytes, str]] = {}
    for path in sorted(folder.iterdir()):
        real = path.resolve()
        if real.parent == folder and real.is_file() and real.suffix in _STATIC_TYPES:
            static[path.name] = (real.read_bytes(), _STATIC_TYPES[real.suffix])

    def static_response(name: str) -> Response:
        if name not in static:
            raise Reject(404, f"no static file {name!r}")
        data, media = static[name]
        return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})

    async def index(request: Request) -> Response:
        return static_response("index.html")

    async def static_file(request: Request) -> Response:
        return static_response(request.path_params["name"])

    async def state(request: Request) -> Response:
        data = await run_in_threadpool(annotator.state)
        data["run"] = run
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    async def frame(request: Request) -> Response:
        i = _path_int(request, "index")
        data = await run_in_threadpool(annotator.frame_jpeg, i)
        cache = "private, max-age=86400" if request.query_params.get("run") == run else "no-cache"
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": cache})

    async def get_mask(request: Request) -> Response:
        started = time.perf_counter()
        i = _path_int(request, "index")
        return _mask_response(await run_in_threadpool(annotator.mask_png, i), started)

    async def thumbs(request: Request) -> Response:
        text = request.query_params.get("n", "10")
        if not _INT.match(text):
            raise Reject(400, f"n {text!r} is not a non-negative integer")
        frames, stride, version, png = await run_in_threadpool(annotator.thumbnails, int(text))
        headers = {"Cache-Control": "no-store", "X-Frames": ",".join(map(str, frames)),
                   "X-Cell-Size": str(stride), "X-Mask-Version": str(version)}
        return Response(png, media_type="image/png", headers=headers)

    async def put_mask(request: Request) -> Response:
        started = time.perf_counter()
        i = _path_int(request, "index")
        body = await _read_body(request, MAX_PNG_BYTES, "image/png")
        image = await run_in_threadpool(_open_png, body, annotator.frame_size)
        return _mask_response(await _annotate(annotator.add_mask, i, image), started, annotator.settle)

    async def click(request: Request) -> Response:
        started = time.perf_counter()
        data = await _json_object(request)
        args = (_field(data, "frame"), _field(data, "points"), _field(data, "labels"))
        return _mask_response(await _annotate(annotator.add_clicks, *args), started, annotator.settle)

    async def scribble(request: Request) -> Response:
        started = time.perf_counter()
        data = await _json_object(request)
        args = (_field(data, "frame"), _field(data, "path"), _field(data, "label"))
        return _mask_response(await _annotate(annotator.add_scribble, *args), started, annotator.settle)

    async def new_object(request: Request) -> Response:
        data = await _json_object(request)
        obj = await run_in_threadpool(annotator.add_object, _field(data, "name", None))
        return JSONResponse({"object": obj.to_json(), "state": await _state()}, status_code=201)

    async def change_object(request: Request) -> Response:
        obj_id = _path_int(request, "obj_id")
        if request.method == "DELETE":
            await run_in_threadpool(annotator.delete_object, obj_id)
            return JSONResponse({"state": await _state()})
        data = await _json_object(request)
        obj = await run_in_threadpool(annotator.rename_object, obj_id, _field(data, "name"))
        return JSONResponse({"object": obj.to_json(), "state": await _state()})

    async def undo(request: Request) -> Response:
        await run_in_threadpool(annotator.undo)
        return JSONResponse({"state": await _state()})

    async def propagate(request: Request) -> Response:
        data = await _json_object(request)
        result = await run_in_threadpool(annotator.propagate, _field(data, "frame"))
        return JSONResponse({**result, "state": await _state()})

    async def export(request: Request) -> Response:
        data = await _json_object(request)
        overlay = _field(data, "overlay", False)
        alpha = _field(data, "alpha", 0.5)
        result = await run_in_threadpool(annotator.export, overlay, alpha)
        result["downloads"] = {name: f"/api/download/{name}" for name in result["files"]}
        return JSONResponse(result)

    async def download(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in DOWNLOADS:
            raise Reject(404, f"no download {name!r}; exports are {', '.join(DOWNLOADS)}")
        path = await run_in_threadpool(annotator.download_path, name)
        return FileResponse(path, media_type=DOWNLOADS[name], filename=f"{annotator.name}-{name}",
                            headers={"Cache-Control": "no-store"})

    async def _state() -> dict:
        data = await run_in_threadpool(annotator.state)
        data["run"] = run
        return data

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", static_file, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/api/frame/{index}", frame, methods=["GET"]),
        Route("/api/mask/{index}", get_mask, methods=["GET"]),
        Route("/api/mask/{index}", put_mask, methods=["POST"]),
        Route("/api/thumbs", thumbs, methods=["GET"]),
        Route("/api/click", click, methods=["POST"]),
        Route("/api/scribble", scribble, methods=["POST"]),
        Route("/api/objects", new_object, methods=["POST"]),
        Route("/api/objects/{obj_id}", change_object, methods=["PATCH", "DELETE"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/propagate", propagate, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/download/{name}", download, methods=["GET"]),
    ]
    handlers = {
        Reject: _reject,
        HTTPException: _http_error,
        InputError: _input_error,
        StateError: _state_error,
        FileNotFoundError: _not_found,
        Exception: _internal_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]
    return _Guard(app, allowed_hosts)


def _open_png(body: bytes, frame_size: tuple[int, int]) -> Any:
    """A PIL image from PNG bytes, its size checked before its pixels are decoded."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    h, w = frame_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(body), formats=["PNG"])
    except Image.DecompressionBombError:
        raise InputError(f"the mask PNG has far more pixels than the frame size {w}x{h}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"the body is not a PNG image ({exc})") from None
    if im.size != (w, h):
        raise InputError(f"the mask PNG is {im.size[0]}x{im.size[1]}; expected the frame size {w}x{h}")
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken data
        raise InputError(f"the mask PNG cannot be decoded ({exc})") from None
    return im
