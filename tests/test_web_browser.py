"""End-to-end tests of the browser annotator in headless Chromium (Playwright), real Session.

Debian's chromium is driven by Playwright for Python through ``executable_path`` (no browser
download): set PML_RT_CHROMIUM to use another binary. The page keeps its own Content
Security Policy in these tests (no ``bypass_csp``), so a CSP violation fails them too; that
is why waiting polls ``page.evaluate`` instead of ``wait_for_function`` (which needs eval).

The click-to-screen time is measured in the page: from the pointerup event to the first
paint after the new mask was drawn on the canvas (see pml_rt/web/static/app.js), and printed.
``test_click_to_screen_on_davis_480p`` measures it on a 100-frame 480p DAVIS clip.
Set PML_RT_UPDATE_SCREENSHOT=1 to rewrite docs/img/annotator.png from that run.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
T, H, W = 10, 120, 160
SQUARE = 40  # side of the moving square, px
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
OBJECT_1 = [128, 0, 0, 255]  # DAVIS palette colour of id 1, as drawn on the mask canvas


def _chromium() -> str | None:
    env = os.environ.get("PML_RT_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("starlette", reason="the annotator needs the web extra: pip install 'pml-rt[web]'")
    pytest.importorskip("uvicorn", reason="the annotator needs the web extra: pip install 'pml-rt[web]'")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright for Python is not installed (pip install playwright)")
    exe = _chromium()
    if exe is None:
        env = os.environ.get("PML_RT_CHROMIUM")
        pytest.skip(f"PML_RT_CHROMIUM={env} is not a file" if env
                    else "no Chromium found (apt-get install chromium, or set PML_RT_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def square_x(t: int) -> int:
    return 16 + 8 * t


def write_clip(folder: Path) -> Path:
    """T PNG frames (H, W): a red square moving 8 px a frame right over a blocky texture."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    bg = np.kron(rng.integers(60, 120, size=(H // 4, W // 4, 3)).astype(np.uint8), np.ones((4, 4, 1), np.uint8))
    for t in range(T):
        f = bg.copy()
        f[40:40 + SQUARE, square_x(t):square_x(t) + SQUARE] = (230, 30, 30)
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    return folder


def wait_js(page, expr: str, timeout: float = 30.0):
    """Poll ``expr`` in the page until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(f"() => ({expr})")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expr}; page errors: {page.evaluate('() => pml.errors')}")
        time.sleep(0.05)


def to_page(page, x: float, y: float, size: tuple[int, int]) -> tuple[float, float]:
    """Page coordinates of frame pixel (x, y)'s centre on the UI canvas."""
    box = page.locator("#ui-canvas").bounding_box()
    h, w = size
    return box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h


def open_page(browser, url: str, viewport=(1100, 680)):
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.goto(url)
    return context, page, problems


def parts(t: dict) -> str:
    """The page's breakdown of one click-to-screen time, in ms."""
    return " ".join(f"{k} {v:.1f}" for k, v in t["parts_ms"].items())


def annotate_and_time(page, x: float, y: float, size, n_before: int, **click) -> dict:
    page.mouse.click(*to_page(page, x, y, size), **click)
    return wait_js(page, f"pml.timings.length > {n_before} && pml.timings[{n_before}]")


def test_click_follow_export_in_chromium(browser, segmenter, tmp_path):
    from pml_rt.io import read_mask
    from pml_rt.web.server import start_in_thread
    from pml_rt.web.state import Annotator

    clip = write_clip(tmp_path / "clip")
    annotator = Annotator(clip, tmp_path / "out", segmenter=segmenter)  # the real pml_rt.session.Session
    server = start_in_thread(annotator)
    context, page, problems = open_page(browser, server.url)
    try:
        assert page.locator("#progress").count() == 1  # the embedding progress bar
        wait_js(page, "pml.ready", timeout=120)
        assert page.locator("#loading").is_hidden()
        wait_js(page, "pml.frameDrawn === 0")

        # left click on the square on frame 0: its mask is on screen at once
        cx, cy = square_x(0) + SQUARE // 2, 40 + SQUARE // 2
        t1 = annotate_and_time(page, cx, cy, (H, W), 0)
        assert t1["shown"] and t1["frame"] == 0
        print(f"\nclick -> updated frame on screen: {t1['screen_ms']:.1f} ms "
              f"(drawn {t1['drawn_ms']:.1f} ms; server: {t1['server_timing']}) for {T} frames {W}x{H}")
        assert page.evaluate(f"() => pml.maskPixel({cx}, {cy})") == OBJECT_1
        # the filmstrip shows the change on frames across the video at once
        wait_js(page, f"pml.thumbs.version === {t1['version']}")
        assert page.locator("#filmstrip canvas").count() == 8
        frames = page.evaluate("() => pml.thumbs.frames")
        assert frames[0] == 0 and frames[-1] == T - 1
        # the first object click also marked the corners as background: shown as markers
        st = page.evaluate("() => fetch('/api/state').then(r => r.json())")
        assert st["has_background"] and st["annotations"][0]["labels"][-1] == 1
        # the default session (temporal spreading) searches TEMPORAL_DEFER_FRAMES frames on
        # either side of a deferred click at once: this short clip whole, nothing left to settle
        assert st["settle_seconds"] is None

        # right click on the background
        assert annotate_and_time(page, 150, 10, (H, W), 1, button="right")["shown"]
        assert page.evaluate("() => pml.maskPixel(150, 10)")[3] == 0

        # the mask follows the square to later frames (End, then arrow keys step back)
        page.locator("#ui-canvas").focus()
        page.keyboard.press("End")
        wait_js(page, f"pml.drawn.frame === {T - 1}")
        last = square_x(T - 1) + SQUARE // 2
        assert page.evaluate(f"() => pml.maskPixel({last}, {cy})") == OBJECT_1
        assert page.evaluate("() => pml.maskPixel(2, 2)")[3] == 0
        page.keyboard.press("ArrowLeft")
        wait_js(page, f"pml.drawn.frame === {T - 2}")
        assert page.evaluate(f"() => pml.maskPixel({square_x(T - 2) + SQUARE // 2}, {cy})") == OBJECT_1
        assert page.locator("#frame-label").inner_text() == f"{T - 1} / {T}"

        # a second object: add, rename, scribble by dragging, undo, delete
        page.locator("#add-object").click()
        wait_js(page, "document.querySelectorAll('#objects li').length === 2")
        name = page.locator("#objects li[data-id='2'] input.name")
        name.fill("texture")
        name.press("Enter")
        wait_js(page, "document.querySelector(\"#objects li[data-id='2'] input.name\").value === 'texture'")
        assert page.locator("#objects li.selected").get_attribute("data-id") == "2"
        page.mouse.move(*to_page(page, 10, 100, (H, W)))
        page.mouse.down()
        for x in range(14, 60, 6):
            page.mouse.move(*to_page(page, x, 104, (H, W)))
        page.mouse.up()
        t3 = wait_js(page, "pml.timings.length > 2 && pml.timings[2]")
        assert t3["kind"] == "scribble"
        st = page.evaluate("() => fetch('/api/state').then(r => r.json())")
        assert st["objects"][1]["name"] == "texture" and st["annotations"][-1]["kind"] == "scribble"
        page.locator("#undo").click()  # takes the scribble back
        wait_js(page, "fetch('/api/state').then(r => r.json()).then(s => s.annotations.length === 2)")
        st = page.evaluate("() => fetch('/api/state').then(r => r.json())")
        assert [a["kind"] for a in st["annotations"]] == ["click", "click"]
        page.locator("#objects li[data-id='2'] button.delete").click()
        wait_js(page, "document.querySelectorAll('#objects li').length === 1")

        # Propagate: the frame on screen carried through the video; the page says so; undo ends it
        page.locator("#propagate").click()
        wait_js(page, "document.getElementById('propagate-note').textContent.includes('propagated')", timeout=120)
        st = page.evaluate("() => fetch('/api/state').then(r => r.json())")
        assert st["propagated_from"] == [0, T - 2] and not st["propagating"]  # the clicked frame and this one
        assert page.locator("#propagate").is_enabled()
        wait_js(page, f"pml.drawn.version === {st['version']}")
        assert page.evaluate(f"() => pml.maskPixel({square_x(T - 2) + SQUARE // 2}, {cy})") == OBJECT_1
        page.locator("#undo").click()
        wait_js(page, "document.getElementById('propagate-note').textContent === ''")

        # overlay opacity
        page.locator("#opacity").fill("0.3")
        assert page.evaluate("() => getComputedStyle(document.querySelector('#mask-canvas')).opacity") == "0.3"

        # export: masks zip (and the overlay video), downloaded like a user would
        page.locator("#export-overlay").check()
        page.locator("#export").click()
        link = page.locator("#export-result a[data-name='masks.zip']")
        link.wait_for(timeout=60000)
        with page.expect_download() as dl:
            link.click()
        zpath = tmp_path / "masks.zip"
        dl.value.save_as(zpath)
        with zipfile.ZipFile(zpath) as zf:
            names = zf.namelist()
            assert names == [f"clip/{t:05d}.png" for t in range(T)]
            for t in range(T):
                with Image.open(io.BytesIO(zf.read(names[t]))) as im:
                    assert im.mode == "P"  # DAVIS palette PNG
                    ids = read_mask(im, allow_empty=True)
                assert ids.shape == (H, W) and set(np.unique(ids)) <= {0, 1}
                assert ids[cy, square_x(t) + SQUARE // 2] == 1, t
                assert ids[2, 2] == 0 and ids[H - 3, W - 3] == 0, t
        assert page.locator("#export-result a[data-name='overlay.mp4']").count() == 1
        assert (tmp_path / "out" / "overlay.mp4").stat().st_size > 0

        for t in page.evaluate("() => pml.timings"):
            print(f"  {t['kind']:8s} -> screen {t['screen_ms']:6.1f} ms  {parts(t)}  server: {t['server_timing']}")
        page.screenshot(path=str(tmp_path / "annotator.png"))
        assert not problems, problems
    finally:
        context.close()
        server.stop()


def test_loading_bar_follows_the_frame_matching(browser, segmenter, tmp_path):
    import threading

    from pml_rt.web.server import start_in_thread
    from pml_rt.web.state import Annotator

    release = threading.Event()

    def factory(video):  # reports two frames matched, then holds the page in "matching"
        holder[0]._on_matched(2)
        release.wait(60)
        return video.session(temporal=None)

    holder = [Annotator(write_clip(tmp_path / "clip"), tmp_path / "out", segmenter=segmenter, session_factory=factory)]
    server = start_in_thread(holder[0])
    context, page, problems = open_page(browser, server.url)
    try:
        text = wait_js(page, "(t => t.startsWith('Matching') && t)(document.getElementById('loading-text').textContent)",
                       timeout=120)
        assert text == f"Matching each frame to its neighbours: frame 2 of {holder[0].num_frames}"
        assert wait_js(page, "document.getElementById('progress').value") == pytest.approx(2 / holder[0].num_frames)
        release.set()
        wait_js(page, "pml.ready", timeout=60)
        assert not problems, problems
    finally:
        release.set()
        context.close()
        server.stop()


def test_bad_video_path_never_reaches_the_browser(tmp_path):
    from pml_rt.errors import InputError
    from pml_rt.web.state import Annotator

    with pytest.raises(InputError):
        Annotator(tmp_path / "missing", tmp_path / "out")


def launch_cli(video: Path, out: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``pml-rt annotate VIDEO --port 0`` in a child process, as a user runs it; return it and its URL."""
    cmd = [sys.executable, "-u", "-m", "pml_rt.cli", "annotate", str(video), "--port", "0", "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"open (http://\S+) in a browser", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("pml-rt annotate did not start:\n" + "".join(lines) + (proc.stdout.read() or ""))


def stop_cli(proc: subprocess.Popen) -> str:
    """Ctrl+C, as a user stops it; return what it printed after the URL."""
    proc.send_signal(signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
        raise AssertionError("pml-rt annotate did not stop on Ctrl+C:\n" + rest) from None
    assert proc.returncode in (0, 130), rest  # 130: the CLI's exit status for Ctrl+C
    assert "Traceback" not in rest, rest
    return rest


def test_cli_serves_the_page_and_stops_on_ctrl_c(browser, tmp_path):
    clip = write_clip(tmp_path / "clip")
    proc, url = launch_cli(clip, tmp_path / "out")
    try:
        assert url.startswith("http://127.0.0.1:")
        context, page, problems = open_page(browser, url)
        wait_js(page, "pml.ready", timeout=120)
        assert page.locator("#video-name").inner_text().startswith(f"clip · {T} frames · {W}×{H}")
        context.close()
        assert not problems, problems
    finally:
        stop_cli(proc)


@pytest.mark.slow
@pytest.mark.data
def test_click_to_screen_on_davis_480p(browser, data_root, tmp_path):
    """Click-to-screen on a 480p DAVIS clip (parkour, 100 frames; PML_RT_ANNOTATE_SEQ to change;
    PML_RT_ANNOTATE_SCALE=0.5 for ``--input-scale 0.5``), served by ``pml-rt annotate`` in its own
    process as a user runs it."""
    from pml_rt.io import read_mask

    seq = os.environ.get("PML_RT_ANNOTATE_SEQ", "parkour")
    frames = data_root / "davis2016-dev" / "JPEGImages" / "480p" / seq
    if not frames.is_dir():
        pytest.skip(f"{frames} not found")
    gt = read_mask(data_root / "davis2016-dev" / "Annotations" / "480p" / seq / "00000.png")
    t0 = time.perf_counter()
    scale = os.environ.get("PML_RT_ANNOTATE_SCALE", "1.0")
    proc, url = launch_cli(frames, tmp_path / "out", "--input-scale", scale)
    try:
        context, page, problems = open_page(browser, url, viewport=(1280, 720))
        wait_js(page, "pml.ready", timeout=900)
        embed_s = time.perf_counter() - t0
        wait_js(page, "pml.frameDrawn === 0")
        st = page.evaluate("() => fetch('/api/state').then(r => r.json())")
        size = (st["video"]["height"], st["video"]["width"])
        n_frames = st["video"]["num_frames"]
        # clicks a user would make: the object's interior, then background around it
        ys, xs = np.nonzero(gt)
        rng = np.random.default_rng(0)
        bys, bxs = np.nonzero(gt == 0)
        plan = [(int(np.median(xs)), int(np.median(ys)), "left")]
        for k in rng.choice(len(bys), 4, replace=False):
            plan.append((int(bxs[k]), int(bys[k]), "right"))
        for k in rng.choice(len(ys), 3, replace=False):
            plan.append((int(xs[k]), int(ys[k]), "left"))
        times, settles = [], []
        for n, (x, y, button) in enumerate(plan):
            t = annotate_and_time(page, x, y, size, n, button=button)
            times.append(t)
            time.sleep(0.6)  # a user's pause; background prefetch runs meanwhile, as in real use
            # the other frames' update, run by the server right after the clicked frame's reply
            settles.append(page.evaluate("() => fetch('/api/state').then(r => r.json())")["settle_seconds"])
        screen = [t["screen_ms"] for t in times]
        print(f"\n{seq}: {n_frames} frames {size[1]}x{size[0]}, input scale {scale}, page ready after {embed_s:.0f} s")
        for t in times:
            print(f"  {t['kind']:8s} screen {t['screen_ms']:6.1f} ms  {parts(t)}  server: {t['server_timing']}")
        print(f"click -> updated frame on screen: median {statistics.median(screen):.1f} ms, "
              f"max {max(screen):.1f} ms over {len(screen)} clicks (the first also marks the corners)")
        done = [1000 * v for v in settles if v is not None]
        if done:
            print(f"the rest of the video, updated after each reply: median {statistics.median(done):.1f} ms, "
                  f"max {max(done):.1f} ms")
        page.keyboard.press("Home")
        for _ in range(int(os.environ.get("PML_RT_SCREENSHOT_FRAME", "30")) // 10):
            page.keyboard.press("Shift+ArrowRight")
        wait_js(page, "pml.drawn.frame === pml.frameDrawn && pml.drawn.frame > 0", timeout=60)
        page.screenshot(path=str(tmp_path / "annotator.png"))
        if os.environ.get("PML_RT_UPDATE_SCREENSHOT"):
            out = REPO / "docs" / "img" / "annotator.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(tmp_path / "annotator.png") as im:  # keep the repository small: a palette PNG
                im.convert("RGB").quantize(colors=96).save(out, optimize=True)
        assert all(t["shown"] for t in times)
        assert not problems, problems
        context.close()
    finally:
        stop_cli(proc)


@pytest.mark.slow
def test_web_layer_alone_click_to_screen_480p(browser, tmp_path):
    """The web layer's share of click-to-screen at 854x480, 100 frames: a session stand-in
    that answers at once (ZeroCostSession) leaves HTTP, PNG, decoding, drawing and paint."""
    from pml_rt.registry import get_model_config
    from pml_rt.segmenter import EmbeddedVideo
    from pml_rt.web.server import start_in_thread
    from pml_rt.web.state import Annotator

    n, h, w = 100, 480, 854
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for t in range(n):
        frames[t] = np.stack([(xx + 3 * t) % 256, (yy * 255) // h, np.full_like(xx, 90)], -1)
        masks[t][((xx - 300 - 2 * t) ** 2 + (yy - 240) ** 2) < 90 ** 2] = 1  # a moving disc
        masks[t][(np.abs(xx - 600) < 60) & (np.abs(yy - 150 - t) < 40)] = 2

    class FreeSegmenter:  # embeddings are not needed by the stand-in
        def embed(self, source, progress=False):
            for _ in source:
                pass
            return EmbeddedVideo(source, np.zeros((n, 60, 107, 1), np.float16), get_model_config())

    class ZeroCostSession:  # test double: the masks are known, each call costs nothing
        def __init__(self, video):
            pass

        def add_clicks(self, frame, points, labels):
            pass

        def mask(self, frame):
            return masks[frame]

        def cell_labels(self):
            return masks[:, 4::8, 4::8]

    annotator = Annotator(frames, tmp_path / "out", segmenter=FreeSegmenter(), session_factory=ZeroCostSession)
    server = start_in_thread(annotator)
    context, page, problems = open_page(browser, server.url, viewport=(1280, 720))
    try:
        wait_js(page, "pml.ready", timeout=120)
        wait_js(page, "pml.frameDrawn === 0")
        times = []
        for k in range(12):
            times.append(annotate_and_time(page, 300 + 5 * k, 240, (h, w), k, button="left" if k % 2 else "right"))
            time.sleep(0.5)
        screen = [t["screen_ms"] for t in times]
        print(f"\nweb layer alone, {n} frames {w}x{h}: click -> screen median {statistics.median(screen):.1f} ms "
              f"(drawn {statistics.median(t['drawn_ms'] for t in times):.1f} ms), max {max(screen):.1f} ms")
        for t in times[:4]:
            print(f"  screen {t['screen_ms']:6.1f} ms  {parts(t)}  server: {t['server_timing']}")
        assert page.evaluate("() => pml.maskPixel(300, 240)") == OBJECT_1
        assert not problems, problems
    finally:
        context.close()
        server.stop()
