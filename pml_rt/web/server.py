"""``pml-rt annotate VIDEO``: open the video, embed it in the background, serve the page.

Listens on 127.0.0.1 unless ``--host`` says otherwise (then a warning is printed: anyone
who can reach that address can see the video and change its masks). :func:`start_in_thread`
runs the same server in a thread, for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import open_video
from .app import LOOPBACK_HOSTS, create_app, require_web
from .state import Annotator

log = logging.getLogger("pml_rt.web")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(host: str) -> frozenset[str] | None:
    """Host header names to accept when listening on ``host`` (None: any)."""
    if is_loopback(host):
        return LOOPBACK_HOSTS
    if host in ("", "0.0.0.0", "::"):  # every interface: the user wants to be reached by any name
        return None
    name = host.lower()
    return LOOPBACK_HOSTS | {name, f"[{name}]" if ":" in name else name}


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); InputError when it cannot be."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"port must be an integer in 0..65535; got {port!r}")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve host {host!r} ({exc}); use an address such as 127.0.0.1") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)  # from now on connections wait in the backlog, even before uvicorn runs
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                         "choose another --port or stop the program using it") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _uvicorn_server(app: Any, log_level: str = "warning") -> Any:
    import uvicorn  # noqa: PLC0415

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                            limit_concurrency=64, timeout_keep_alive=30, server_header=False)
    return uvicorn.Server(config)


@dataclass
class RunningServer:
    """A server running in a daemon thread (see :func:`start_in_thread`)."""

    url: str  # http://127.0.0.1:PORT/
    annotator: Any  # the pml_rt.web.state.Annotator it serves
    server: Any  # uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.annotator.close()


def start_in_thread(annotator: Any, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``annotator`` from a daemon thread; return once it accepts connections.

    Starts the annotator's embedding too. Port 0 picks a free port (see ``.url``).
    """
    require_web()
    annotator.start()
    sock = bind_socket(host, port)
    server = _uvicorn_server(create_app(annotator, allowed_hosts=allowed_hosts_for(host)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="pml-rt-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the annotator's server did not start; see the log above")
        time.sleep(0.02)
    return RunningServer(_url(sock), annotator, server, thread)


def default_out_dir(video: str | Path) -> Path:
    """``./pml-rt-annotations/<video name>``: where exports go unless ``--out`` is given."""
    return Path("pml-rt-annotations") / (Path(str(video)).stem or "video")


def cli_main(args: argparse.Namespace) -> int:
    """Run ``pml-rt annotate`` (args: video, port, host, out; model, input_scale, debug and quiet where present)."""
    require_web()

    host = str(args.host)
    print(f"pml-rt annotate: opening {args.video}", flush=True)
    source = open_video(args.video)  # a bad path or file fails here, before anything listens
    out = Path(args.out) if args.out else default_out_dir(args.video)
    scale = float(getattr(args, "input_scale", 1.0) or 1.0)
    model = getattr(args, "model", None)
    segmenter = None  # the Annotator makes the default one while it embeds
    if scale != 1 or model:
        from ..registry import DEFAULT_MODEL  # noqa: PLC0415
        from ..segmenter import Segmenter  # noqa: PLC0415

        segmenter = Segmenter(model or DEFAULT_MODEL, input_scale=scale)  # an unknown name fails here, listing the valid ones
    annotator = Annotator(source, out, segmenter=segmenter)
    sock = bind_socket(host, int(args.port))
    if not is_loopback(host):
        print(f"pml-rt annotate: warning: listening on {host}, not on loopback: anyone who can reach this "
              "address can see the video and change and export its masks", file=sys.stderr)
    annotator.start()
    debug = bool(getattr(args, "debug", False))
    server = _uvicorn_server(create_app(annotator, allowed_hosts=allowed_hosts_for(host)),
                             log_level="info" if debug else "warning")
    h, w = annotator.frame_size
    print(f"pml-rt annotate: {annotator.num_frames} frames {w}x{h} from {args.video}")
    print(f"pml-rt annotate: open {_url(sock)} in a browser; exports go to {out} (Ctrl+C stops)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        annotator.close()
        sock.close()
    return 0
