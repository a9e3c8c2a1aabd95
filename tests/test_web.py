"""HTTP-level tests of the browser annotator (pml_rt.web): routes, safety, malformed input.

Most tests drive the app through Starlette's test client with the real embedder and a
recording test double for the session (``RecordingFakeSession``), so they check what the web
layer does and passes on, fast. ``test_real_session_round_trip`` uses the real
pml_rt.session.Session; the browser end-to-end test is tests/test_web_browser.py.
"""

from __future__ import annotations

import io
import json
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the annotator needs the web extra: pip install 'pml-rt[web]'")
pytest.importorskip("uvicorn", reason="the annotator needs the web extra: pip install 'pml-rt[web]'")

from starlette.testclient import TestClient  # noqa: E402

from pml_rt.errors import InputError, StateError  # noqa: E402
from pml_rt.io import read_mask  # noqa: E402
from pml_rt.web import server as web_server  # noqa: E402
from pml_rt.web.app import MAX_JSON_BYTES, MAX_PNG_BYTES, create_app  # noqa: E402
from pml_rt.web.state import Annotator, encode_mask_png  # noqa: E402

T, H, W = 6, 48, 64
BASE = "http://127.0.0.1"


def make_clip(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """uint8 (t, h, w, 3): a red square moving right over a fixed textured background."""
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 120, size=(h, w, 3)).astype(np.uint8)
    frames = np.repeat(bg[None], t, axis=0)
    for i in range(t):
        x = 8 + 4 * i
        frames[i, h // 4: h // 4 + h // 2, x: x + w // 4] = (230, 30, 30)
    return frames


class RecordingFakeSession:
    """Test double for pml_rt.session.Session in web-layer tests: records every call.

    mask(frame) paints a 5x5 box of each clicked or scribbled label at its point, on every
    frame; it is no segmentation, only enough to see ids travel through the web layer.
    """

    def __init__(self, video: object) -> None:
        self.video = video
        self.calls: list[tuple] = []
        self.marks: list[tuple[int, int, int]] = []  # (x, y, label)
        self.saved: list[list[tuple[int, int, int]]] = []

    def _save(self) -> None:
        self.saved.append(list(self.marks))

    def add_clicks(self, frame, points, labels):
        self.calls.append(("add_clicks", frame, points, labels))
        self._save()
        self.marks += [(int(x), int(y), int(v)) for (x, y), v in zip(points, labels)]

    def add_scribble(self, frame, path, label):
        self.calls.append(("add_scribble", frame, path, label))
        self._save()
        self.marks += [(int(x), int(y), int(label)) for x, y in path]

    def add_mask(self, frame, mask):
        self.calls.append(("add_mask", frame, mask))
        self._save()
        ys, xs = np.nonzero(mask)
        self.marks += [(int(x), int(y), int(mask[y, x])) for y, x in zip(ys[:1], xs[:1])]

    def remove_object(self, obj_id):
        self.calls.append(("remove_object", obj_id))
        self._save()
        self.marks = [m for m in self.marks if m[2] != obj_id]

    def undo(self):
        self.calls.append(("undo",))
        if not self.saved:
            raise StateError("nothing to undo")
        self.marks = self.saved.pop()

    def mask(self, frame):
        if not self.marks:
            raise StateError("no annotations yet")
        out = np.zeros((H, W), np.uint8)
        for x, y, v in self.marks:
            out[max(0, y - 2): y + 3, max(0, x - 2): x + 3] = v
        return out

    def masks(self):
        return np.stack([self.mask(t) for t in range(T)])


@pytest.fixture()
def annotator(segmenter, tmp_path):
    a = Annotator(make_clip(), tmp_path / "out", segmenter=segmenter, session_factory=RecordingFakeSession)
    a.start()
    assert a.wait_ready(60), a.error
    yield a
    a.close()


@pytest.fixture()
def client(annotator):
    with TestClient(create_app(annotator), base_url=BASE, raise_server_exceptions=True) as c:
        yield c


def click(client, frame=0, points=((20, 20),), labels=(1,)):
    return client.post("/api/click", json={"frame": frame, "points": [list(p) for p in points],
                                           "labels": list(labels)})


def png_ids(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    assert im.mode == "P" and im.info.get("transparency") == 0  # background drawn transparent
    return np.asarray(im)


def assert_error(r, status: int, words: str = "") -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert words.lower() in body["error"].lower(), body["error"]


# --- the page and its files ---------------------------------------------------------------

def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", [
    "/static/../state.py", "/static/%2e%2e/state.py", "/static/..%2fstate.py", "/static/%2e%2e%2fapp.py",
    "/static/..%5capp.py", "/static/__init__.py", "/static/", "/static/.", "/static/%00app.js",
    "/api/download/..%2f..%2fstate.py", "/api/download/%2e%2e", "/api/download/masks", "/etc/passwd",
    "//etc/passwd", "/api/frame/0/../../state.py", "/web/state.py", "/pml_rt/web/app.py",
])
def test_paths_outside_the_served_files_are_refused(client, path):
    r = client.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code)
    assert "import" not in r.text and "def " not in r.text  # no Python source leaks


def test_unknown_route_and_method(client):
    assert_error(client.get("/api/nothing"), 404, "no such route")
    assert_error(client.get("/api/click"), 405, "not allowed")
    assert_error(client.put("/api/state"), 405)


# --- frames and masks ---------------------------------------------------------------------

def test_frames_are_served_by_index(client, annotator):
    st = client.get("/api/state").json()
    assert st["status"] == "ready" and st["video"]["num_frames"] == T
    r = client.get(f"/api/frame/{T - 1}?run={st['run']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"]
    assert Image.open(io.BytesIO(r.content)).size == (W, H)
    assert "max-age" not in client.get("/api/frame/0").headers["cache-control"]  # no run token


@pytest.mark.parametrize("index", ["-1", str(T), "1e3", "0x1", "+1", "1.0", "%20", "99999999999", "abc"])
def test_bad_frame_indices_are_400(client, index):
    assert_error(client.get(f"/api/frame/{index}"), 400)
    assert_error(client.get(f"/api/mask/{index}"), 400)


def test_masks_before_any_annotation_are_empty(client):
    r = client.get("/api/mask/3")
    assert r.status_code == 200 and not png_ids(r.content).any()


# --- clicks and scribbles -----------------------------------------------------------------

def test_click_returns_the_frame_mask_and_reaches_the_session(client, annotator):
    r = click(client, frame=2, points=[(20, 21), (40, 30.7)], labels=[1, 0])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-mask-version"] == "1" and r.headers["x-frame"] == "2"
    assert "total;dur=" in r.headers["server-timing"]
    ids = png_ids(r.content)
    assert ids.shape == (H, W) and ids[21, 20] == 1
    name, frame, points, labels = annotator.session.calls[-1]
    assert name == "add_clicks" and frame == 2
    assert points.dtype.kind == "i" and points.tolist() == [[20, 21], [40, 30]]  # pixel (x, y)
    assert labels.tolist() == [1, 0]
    # other frames follow lazily
    assert png_ids(client.get("/api/mask/5").content)[21, 20] == 1
    st = client.get("/api/state").json()
    assert st["version"] == 1 and st["can_undo"] and st["annotations"][0]["points"] == [[20, 21], [40, 30]]


def test_thumbnails_show_every_change_at_cell_resolution(client):
    r = client.get("/api/thumbs?n=4")
    assert r.status_code == 200 and r.headers["x-frames"] == "0,2,3,5" and r.headers["x-cell-size"] == "8"
    assert png_ids(r.content).shape == (H // 8, 4 * W // 8) and not png_ids(r.content).any()
    click(client, points=[(20, 21)], labels=[1])
    r = client.get("/api/thumbs?n=4")
    cells = png_ids(r.content).reshape(H // 8, 4, W // 8)
    assert r.headers["x-mask-version"] == "1" and (cells[21 // 8, :, 20 // 8] == 1).all()
    for bad in ("0", "33", "-1", "x", "1.5"):
        assert_error(client.get(f"/api/thumbs?n={bad}"), 400)


def test_scribble(client, annotator):
    r = client.post("/api/scribble", json={"frame": 1, "path": [[5, 5], [10, 6], [15, 8]], "label": 1})
    assert r.status_code == 200
    name, frame, path, label = annotator.session.calls[-1]
    assert (name, frame, label) == ("add_scribble", 1, 1) and path.shape == (3, 2)
    assert png_ids(r.content)[8, 15] == 1


def test_first_object_click_marks_the_corners_as_background(client, annotator):
    r = click(client, frame=1, points=[(20, 21)], labels=[1])
    assert r.status_code == 200
    name, frame, points, labels = annotator.session.calls[-1]
    # one call (one undo step); the user's point comes last, so it wins a shared cell
    assert points.tolist() == [[0, 0], [W - 1, 0], [0, H - 1], [W - 1, H - 1], [20, 21]]
    assert labels.tolist() == [0, 0, 0, 0, 1]
    st = client.get("/api/state").json()
    assert st["has_background"] and st["annotations"][0]["labels"] == [0, 0, 0, 0, 1]
    click(client, frame=2, points=[(30, 30)], labels=[1])  # background known now: no more corners
    assert annotator.session.calls[-1][2].tolist() == [[30, 30]]
    client.post("/api/undo")
    client.post("/api/undo")
    assert not client.get("/api/state").json()["has_background"]
    r = client.post("/api/scribble", json={"frame": 0, "path": [[5, 5], [9, 9]], "label": 1})
    assert r.status_code == 200  # a scribble has one label: corners go first, as a click
    assert [c[0] for c in annotator.session.calls[-2:]] == ["add_clicks", "add_scribble"]
    n = len(annotator.session.calls)
    client.post("/api/undo")  # one undo step takes both back
    assert annotator.session.calls[n:] == [("undo",), ("undo",)]
    assert not annotator.session.marks


def test_auto_background_can_be_turned_off(segmenter, tmp_path):
    a = Annotator(make_clip(), tmp_path / "out", segmenter=segmenter, session_factory=RecordingFakeSession,
                  auto_background=False).start()
    assert a.wait_ready(60)
    a.add_clicks(0, [[3, 4]], [1])
    assert a.session.calls[-1][2].tolist() == [[3, 4]]


_GOOD = {"frame": 0, "points": [[1, 1]], "labels": [1]}


@pytest.mark.parametrize("body, words", [
    ("{", "not valid JSON"),
    ("", "not valid JSON"),
    ("\xff", "not valid JSON"),
    ("[]", "JSON object"),
    ("null", "JSON object"),
    ('{"frame": NaN, "points": [[1, 1]], "labels": [1]}', "not valid JSON"),
    ('{"frame": 0, "points": [[Infinity, 1]], "labels": [1]}', "not valid JSON"),
    ("[" * 100000 + "]" * 100000, "not valid JSON"),
    (json.dumps({"points": [[1, 1]], "labels": [1]}), "missing field 'frame'"),
    (json.dumps({"frame": 0, "labels": [1]}), "missing field 'points'"),
    (json.dumps({"frame": 0, "points": [[1, 1]]}), "missing field 'labels'"),
    (json.dumps({**_GOOD, "frame": "0"}), "integer"),
    (json.dumps({**_GOOD, "frame": True}), "integer"),
    (json.dumps({**_GOOD, "frame": 0.5}), "integer"),
    (json.dumps({**_GOOD, "frame": T}), "out of range"),
    (json.dumps({**_GOOD, "frame": -1}), "out of range"),
    (json.dumps({**_GOOD, "frame": 10 ** 30}), "out of range"),
    (json.dumps({**_GOOD, "points": [[W, 1]]}), "outside the frame"),
    (json.dumps({**_GOOD, "points": [[1, -0.5]]}), "outside the frame"),
    (json.dumps({**_GOOD, "points": [[1, 10 ** 400]]}), "[x, y]"),
    (json.dumps({**_GOOD, "points": [[1, 2, 3]]}), "[x, y]"),
    (json.dumps({**_GOOD, "points": [[1, [2]]]}), "[x, y]"),
    (json.dumps({**_GOOD, "points": "12"}), "[x, y]"),
    (json.dumps({**_GOOD, "points": {"x": 1}}), "[x, y]"),
    (json.dumps({**_GOOD, "points": []}), "[x, y]"),
    (json.dumps({**_GOOD, "points": [[1, 1]] * 1001, "labels": [1] * 1001}), "1 to 1000"),
    (json.dumps({**_GOOD, "labels": [1, 1]}), "one per point"),
    (json.dumps({**_GOOD, "labels": "1"}), "one per point"),
    (json.dumps({**_GOOD, "labels": [7]}), "not an object"),
    (json.dumps({**_GOOD, "labels": [256]}), "not an object"),
    (json.dumps({**_GOOD, "labels": [-1]}), "not an object"),
    (json.dumps({**_GOOD, "labels": [1.5]}), "integer"),
    (json.dumps({**_GOOD, "labels": [None]}), "integer"),
])
def test_malformed_clicks_are_400_with_a_message(client, annotator, body, words):
    r = client.post("/api/click", content=body.encode("utf-8", "surrogateescape") if isinstance(body, str)
                    else body, headers={"content-type": "application/json"})
    assert_error(r, 400, words)
    assert not any(c[0] == "add_clicks" for c in annotator.session.calls)


@pytest.mark.parametrize("body, words", [
    ({"frame": 0, "path": [[1, 1]] * 20001, "label": 1}, "1 to 20000"),
    ({"frame": 0, "path": [[1, 1]], "label": "1"}, "integer"),
    ({"frame": 0, "path": [[1, 1]]}, "missing field 'label'"),
    ({"frame": 0, "path": [[1, H]], "label": 1}, "outside the frame"),
])
def test_malformed_scribbles_are_400(client, body, words):
    assert_error(client.post("/api/scribble", json=body), 400, words)


def test_writes_need_a_json_content_type(client):
    r = client.post("/api/click", content=json.dumps(_GOOD), headers={"content-type": "text/plain"})
    assert_error(r, 415, "application/json")
    assert_error(client.post("/api/click", content=json.dumps(_GOOD)), 415)


def test_json_bodies_are_bounded(client):
    big = b'{"frame": 0, "points": [' + b"[1, 1], " * (MAX_JSON_BYTES // 8) + b'[1, 1]], "labels": []}'
    assert_error(client.post("/api/click", content=big, headers={"content-type": "application/json"}), 413)

    def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"frame": 0, "points": ['
        for _ in range(MAX_JSON_BYTES // 8 // 1000 + 1):
            yield b"[1, 1], " * 1000

    r = client.post("/api/click", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413)
    r = client.post("/api/click", content=b"{}", headers={"content-type": "application/json",
                                                          "content-length": "abc"})
    assert 400 <= r.status_code < 500


def test_mask_png_bodies_are_bounded(client):
    r = client.post("/api/mask/0", content=b"\0" * (MAX_PNG_BYTES + 1), headers={"content-type": "image/png"})
    assert_error(r, 413)


def test_requests_before_embedding_ends_are_409(segmenter, tmp_path):
    a = Annotator(make_clip(), tmp_path / "out", segmenter=segmenter, session_factory=RecordingFakeSession)
    with TestClient(create_app(a), base_url=BASE) as c:  # not started: still "loading"
        assert c.get("/api/state").json()["status"] == "loading"
        assert c.get("/api/frame/0").status_code == 200  # frames show while embedding
        assert_error(click(c), 409, "still being embedded")
        assert_error(c.get("/api/mask/0"), 409)
        assert_error(c.get("/api/thumbs"), 409)
        assert_error(c.post("/api/export", json={}), 409)


def test_embedding_failure_is_reported_not_raised(tmp_path):
    class Broken:
        def embed(self, source, progress=False):
            raise InputError("no model here")

    a = Annotator(make_clip(), tmp_path / "out", segmenter=Broken()).start()
    assert not a.wait_ready(30)
    with TestClient(create_app(a), base_url=BASE) as c:
        st = c.get("/api/state").json()
        assert st["status"] == "error" and "no model here" in st["error"]
        assert_error(click(c), 409, "could not be prepared")


def test_close_stops_embedding_at_the_next_frame(segmenter, tmp_path):
    a = Annotator(make_clip(t=200), tmp_path / "out", segmenter=segmenter).start()
    a.close()
    assert not a._thread.is_alive()
    assert a.status in ("error", "ready") and (a.status == "ready" or a.error == "stopped")


# --- objects and undo ---------------------------------------------------------------------

def test_objects_add_rename_delete_and_undo(client, annotator):
    r = client.post("/api/objects", json={"name": "  dog\n"})
    assert r.status_code == 201
    obj = r.json()["object"]
    assert obj == {"id": 2, "name": "dog", "colour": "#008000"}  # DAVIS palette colour of id 2
    assert client.patch("/api/objects/2", json={"name": "cat"}).json()["object"]["name"] == "cat"
    assert click(client, points=[(30, 30)], labels=[2]).status_code == 200
    v = client.get("/api/state").json()["version"]

    st = client.delete("/api/objects/2").json()["state"]
    assert [o["id"] for o in st["objects"]] == [1] and st["version"] == v + 1
    assert annotator.session.calls[-1] == ("remove_object", 2)
    assert not png_ids(client.get("/api/mask/0").content).any()

    st = client.post("/api/undo").json()["state"]  # the object and its mask come back
    assert [o["name"] for o in st["objects"]] == ["object 1", "cat"]
    assert annotator.session.calls[-1] == ("undo",)
    assert png_ids(client.get("/api/mask/0").content)[30, 30] == 2

    n_calls = len(annotator.session.calls)
    client.post("/api/undo")  # the click: a session step
    client.post("/api/undo")  # the rename: not a session step
    assert annotator.session.calls[n_calls:] == [("undo",)]
    assert client.get("/api/state").json()["objects"][1]["name"] == "dog"
    client.post("/api/undo")  # the new object
    assert_error(client.post("/api/undo"), 409, "nothing to undo")


def test_deleting_an_object_never_annotated_leaves_the_session_alone(client, annotator):
    client.post("/api/objects", json={})
    assert client.delete("/api/objects/2").status_code == 200
    assert not any(c[0] == "remove_object" for c in annotator.session.calls)


@pytest.mark.parametrize("method, path, body, status, words", [
    ("PATCH", "/api/objects/1", {"name": ""}, 400, "empty"),
    ("PATCH", "/api/objects/1", {"name": "\x00\x01"}, 400, "empty"),
    ("PATCH", "/api/objects/1", {"name": "x" * 65}, 400, "at most 64"),
    ("PATCH", "/api/objects/1", {"name": 5}, 400, "string"),
    ("PATCH", "/api/objects/1", {}, 400, "missing field 'name'"),
    ("PATCH", "/api/objects/9", {"name": "a"}, 400, "no object 9"),
    ("PATCH", "/api/objects/abc", {"name": "a"}, 400, "integer"),
    ("DELETE", "/api/objects/9", None, 400, "no object 9"),
    ("DELETE", "/api/objects/-1", None, 400, "integer"),
    ("POST", "/api/objects", {"name": ["a"]}, 400, "string"),
])
def test_bad_object_requests(client, method, path, body, status, words):
    r = client.request(method, path, json=body) if body is not None else client.request(method, path)
    assert_error(r, status, words)


def test_object_ids_run_out_at_255(client, annotator):
    for _ in range(253):
        annotator.add_object()
    assert client.post("/api/objects", json={}).json()["object"]["id"] == 255
    assert_error(client.post("/api/objects", json={}), 400, "255")


# --- mask upload --------------------------------------------------------------------------

def _png(arr: np.ndarray) -> bytes:
    return encode_mask_png(arr.astype(np.uint8))


def test_mask_upload_adds_objects(client, annotator):
    m = np.zeros((H, W), np.uint8)
    m[10:20, 10:20] = 3
    r = client.post("/api/mask/4", content=_png(m), headers={"content-type": "image/png"})
    assert r.status_code == 200
    name, frame, mask = annotator.session.calls[-1]
    assert name == "add_mask" and frame == 4 and np.array_equal(mask, m)
    assert [o["id"] for o in client.get("/api/state").json()["objects"]] == [1, 3]


@pytest.mark.parametrize("body, ctype, status, words", [
    (b"not a png", "image/png", 400, "not a PNG"),
    (_png(np.ones((H + 1, W))), "image/png", 400, "frame size"),
    (_png(np.zeros((H, W))), "image/png", 400, "no object pixels"),
    (_png(np.ones((H, W)))[:60], "image/png", 400, ""),
    (_png(np.ones((H, W))), "application/octet-stream", 415, "image/png"),
])
def test_bad_mask_uploads(client, body, ctype, status, words):
    assert_error(client.post("/api/mask/0", content=body, headers={"content-type": ctype}), status, words)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims w x h 8-bit pixels (its data would decode to w*h bytes), 100 bytes long."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10000, 20000])  # 100 M pixels (Pillow warns), 400 M (Pillow refuses)
def test_png_bomb_is_refused_before_decoding(client, side):
    r = client.post("/api/mask/0", content=_png_header_only(side, side), headers={"content-type": "image/png"})
    assert_error(r, 400, "frame size")


# --- export -------------------------------------------------------------------------------

def test_export_before_any_annotation_is_409(client):
    assert_error(client.post("/api/export", json={}), 409, "nothing to export")
    assert_error(client.get("/api/download/masks.zip"), 404, "export")


@pytest.mark.parametrize("body, words", [
    ({"overlay": "yes"}, "true or false"),
    ({"alpha": 2}, "0..1"),
    ({"alpha": "0.5"}, "0..1"),
])
def test_bad_export_options(client, body, words):
    click(client)
    assert_error(client.post("/api/export", json=body), 400, words)


def test_export_writes_palette_pngs_a_zip_and_an_overlay(client, annotator, tmp_path):
    click(client, points=[(20, 20)], labels=[1])
    r = client.post("/api/export", json={"overlay": True, "alpha": 0.4})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["files"] == ["masks.zip", "overlay.mp4"] and j["num_frames"] == T
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(T)]
    assert read_mask(out / "masks" / "00003.png")[20, 20] == 1
    z = client.get(j["downloads"]["masks.zip"])
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        names = zf.namelist()
        assert names == [f"video/{i:05d}.png" for i in range(T)]
        ids = read_mask(Image.open(io.BytesIO(zf.read(names[5]))))
        assert ids[20, 20] == 1 and set(np.unique(ids)) == {0, 1}
    v = client.get(j["downloads"]["overlay.mp4"])
    assert v.status_code == 200 and v.headers["content-type"] == "video/mp4" and len(v.content) > 100


# --- who may talk to the server -----------------------------------------------------------

def test_other_host_names_are_refused(client):
    assert_error(client.get("/api/state", headers={"host": "evil.example:8765"}), 400, "not served")
    assert_error(client.get("/", headers={"host": "127.0.0.1.evil.example"}), 400)
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
        assert client.get("/api/state", headers={"host": host}).status_code == 200, host


def test_cross_site_writes_are_refused(client, annotator):
    r = client.post("/api/click", json=_GOOD, headers={"origin": "http://evil.example"})
    assert_error(r, 403, "refused")
    assert not annotator.session.calls
    assert click(client).status_code == 200  # no Origin (tools) is fine
    r = client.post("/api/click", json=_GOOD, headers={"origin": "http://127.0.0.1"})  # same origin
    assert r.status_code == 200


def test_any_host_name_when_exposed_on_purpose(annotator):
    with TestClient(create_app(annotator, allowed_hosts=None), base_url="http://annotator.lan") as c:
        assert c.get("/api/state").status_code == 200


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.4", False), ("example.com", False),
])
def test_is_loopback(host, loopback):
    assert web_server.is_loopback(host) is loopback
    assert (web_server.allowed_hosts_for(host) is None) is (host in ("0.0.0.0", "::"))


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(InputError, match="choose another --port"):
            web_server.bind_socket("127.0.0.1", port)
    with pytest.raises(InputError, match="port"):
        web_server.bind_socket("127.0.0.1", 70000)


def test_cli_warns_when_not_on_loopback(monkeypatch, capsys, tmp_path):
    import argparse

    frames_dir = tmp_path / "clip"
    frames_dir.mkdir()
    for i, f in enumerate(make_clip(2)):
        Image.fromarray(f).save(frames_dir / f"{i:05d}.png")

    class NoServer:
        def run(self, sockets):
            pass

    monkeypatch.setattr(web_server, "_uvicorn_server", lambda app, log_level="warning": NoServer())
    monkeypatch.setattr(web_server, "bind_socket", lambda host, port: socket.socket())
    monkeypatch.setattr(Annotator, "start", lambda self: self)
    args = argparse.Namespace(video=str(frames_dir), host="192.0.2.1", port=8765, out=str(tmp_path / "o"))
    assert web_server.cli_main(args) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "not on loopback" in err
    args.video = str(tmp_path / "missing")
    with pytest.raises(InputError):
        web_server.cli_main(args)


# --- a real server over a real socket -------------------------------------------------------

def test_real_server_survives_garbage(annotator):
    running = web_server.start_in_thread(annotator)
    try:
        host, port = running.url.split("//")[1].strip("/").split(":")

        def raw(data: bytes) -> bytes:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(data)
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
                return out

        assert raw(b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw(b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")[:10] in (
            b"HTTP/1.1 4", b"")
        assert raw(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 10000 + b"\r\n")[:12] in (
            b"HTTP/1.1 400", b"HTTP/1.1 431", b"")
        head = raw(b"GET /../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert head.split(b"\r\n")[0] in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request")
        ok = raw(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200") and b'"status":"ready"' in ok
    finally:
        running.stop()


# --- property: whatever JSON arrives, the answer is 2xx or 4xx ------------------------------

def test_random_json_never_gives_a_server_error(client):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    scalars = (st.none() | st.booleans() | st.integers(-10 ** 6, 10 ** 6)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5))
    values = st.recursive(
        scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
        max_leaves=12)
    keys = st.sampled_from(["frame", "points", "labels", "path", "label", "name", "overlay", "alpha"])
    bodies = st.dictionaries(keys, values, max_size=5) | values
    routes = st.sampled_from([("POST", "/api/click"), ("POST", "/api/scribble"), ("POST", "/api/objects"),
                              ("PATCH", "/api/objects/1"), ("POST", "/api/export")])

    @hypothesis.settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @hypothesis.given(route=routes, body=bodies)
    def check(route, body):
        r = client.request(route[0], route[1], json=body)
        assert r.status_code < 500, (route, body, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]

    check()


# --- the real session -----------------------------------------------------------------------

def test_real_session_round_trip(segmenter, tmp_path):
    pytest.importorskip("pml_rt.session", reason="pml_rt.session (the interactive Session) is not in this tree yet")
    a = Annotator(make_clip(), tmp_path / "out", segmenter=segmenter).start()
    assert a.wait_ready(60), a.error
    with TestClient(create_app(a), base_url=BASE) as c:
        x0, y0 = 8 + W // 8, H // 2  # the square's centre on frame 0
        r = click(c, frame=0, points=[(x0, y0), (W - 4, 4)], labels=[1, 0])
        assert r.status_code == 200, r.text
        assert png_ids(r.content)[y0, x0] == 1
        # the default session (temporal spreading) searches TEMPORAL_DEFER_FRAMES frames on
        # either side of a deferred click at once: this short clip whole, nothing left to settle
        assert not a.session.pending and c.get("/api/state").json()["settle_seconds"] is None
        later = png_ids(c.get(f"/api/mask/{T - 1}").content)
        assert later[y0, x0 + 4 * (T - 1)] == 1  # the square moved 4 px a frame
        assert later[4, W - 4] == 0
        t0 = time.perf_counter()
        assert c.post("/api/undo").status_code == 200
        assert time.perf_counter() - t0 < 5
    a.close()


def test_an_annotation_updates_its_frame_first_and_the_rest_on_settle(segmenter, tmp_path):
    # Frame first, the rest later: for sessions without temporal spreading, where a frame's
    # labels do not depend on the other frames' search.
    a = Annotator(make_clip(), tmp_path / "out", segmenter=segmenter,
                  session_factory=lambda video: video.session(temporal=None)).start()
    assert a.wait_ready(60), a.error
    x0, y0 = 8 + W // 8, H // 2
    res = a.add_clicks(0, [(x0, y0), (W - 4, 4)], [1, 0])
    assert png_ids(res.png)[y0, x0] == 1
    assert a.session.pending  # frames 1.. are not searched yet
    assert a.settle() >= 0 and not a.session.pending and a.settle() is None
    a.add_clicks(1, [(x0 + 4, y0)], [1])
    later = png_ids(a.mask_png(T - 1).png)  # reading another frame settles first
    assert not a.session.pending and later[y0, x0 + 4 * (T - 1)] == 1
    a.close()


def test_module_imports_without_starting_anything():
    import importlib

    for name in ("pml_rt.web", "pml_rt.web.state", "pml_rt.web.app", "pml_rt.web.server"):
        importlib.import_module(name)
    assert Path(web_server.__file__).with_name("static").joinpath("index.html").is_file()


def test_cli_model_option_reaches_the_annotator(monkeypatch, tmp_path):
    import argparse

    frames_dir = tmp_path / "clip"
    frames_dir.mkdir()
    for i, f in enumerate(make_clip(2)):
        Image.fromarray(f).save(frames_dir / f"{i:05d}.png")
    seen = {}

    class NoServer:
        def run(self, sockets):
            pass

    def start(self):
        seen["model"] = self._segmenter.config.name if self._segmenter is not None else None
        return self

    monkeypatch.setattr(web_server, "_uvicorn_server", lambda app, log_level="warning": NoServer())
    monkeypatch.setattr(web_server, "bind_socket", lambda host, port: socket.socket())
    monkeypatch.setattr(Annotator, "start", start)
    args = argparse.Namespace(video=str(frames_dir), host="127.0.0.1", port=8765, out=str(tmp_path / "o"),
                              model="mnv2-os16-d64")
    assert web_server.cli_main(args) == 0
    assert seen["model"] == "mnv2-os16-d64"
    args.model = "no-such-model"
    with pytest.raises(InputError, match="valid models"):
        web_server.cli_main(args)


# --- propagate: the frame on screen carried through the video --------------------------------

def test_propagate_shows_and_exports_the_propagated_masks_until_the_next_change(client, annotator, monkeypatch):
    assert_error(client.post("/api/propagate", json={"frame": 0}), 409, "click on an object first")
    assert click(client, frame=1, points=((20, 20),), labels=(1,)).status_code == 200
    assert click(client, frame=4, points=((30, 12),), labels=(0,)).status_code == 200
    shown = {t: annotator._session_mask(t).copy() for t in (1, 3, 4)}
    calls = []
    fake = np.zeros((T, H, W), np.uint8)
    fake[:, 30:40, 40:50] = 1  # distinguishable from the fake session's 5x5 boxes

    def propagate_keyframes(masks, **kw):
        calls.append({f: m.copy() for f, m in masks.items()})
        return fake

    monkeypatch.setattr(annotator.video, "propagate_keyframes", propagate_keyframes)
    version = client.get("/api/state").json()["version"]
    r = client.post("/api/propagate", json={"frame": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    # from the frame on screen and every annotated frame, as each is shown
    assert body["frames"] == [1, 3, 4] and body["state"]["propagated_from"] == [1, 3, 4]
    assert body["version"] > version
    assert sorted(calls[0]) == [1, 3, 4]
    for t in (1, 3, 4):
        np.testing.assert_array_equal(calls[0][t], shown[t])
    for t in (0, 3, 5):  # every frame now shows the propagated masks
        np.testing.assert_array_equal(png_ids(client.get(f"/api/mask/{t}").content), fake[t])
    exp = client.post("/api/export", json={}).json()
    written = read_mask(Path(exp["folder"]) / "masks" / f"{annotator.source.frame_names[4]}.png")
    np.testing.assert_array_equal(written, fake[4])
    # a click ends the propagated view; undo brings it back; undo again takes it away
    assert click(client, frame=2, points=((10, 10),), labels=(0,)).status_code == 200
    assert client.get("/api/state").json()["propagated_from"] is None
    assert not np.array_equal(png_ids(client.get("/api/mask/4").content), fake[4])
    assert client.post("/api/undo").json()["state"]["propagated_from"] == [1, 3, 4]
    np.testing.assert_array_equal(png_ids(client.get("/api/mask/4").content), fake[4])
    assert client.post("/api/undo").json()["state"]["propagated_from"] is None
    np.testing.assert_array_equal(png_ids(client.get("/api/mask/1").content), shown[1])


def test_propagate_checks_its_frame_and_what_the_frame_shows(client, annotator, monkeypatch):
    assert click(client, frame=0, points=((20, 20),), labels=(0,)).status_code == 200  # background only
    assert_error(client.post("/api/propagate", json={"frame": 0}), 409, "click on an object first")
    assert click(client, frame=0, points=((30, 30),), labels=(1,)).status_code == 200
    monkeypatch.setattr(annotator.session, "mask", lambda frame: np.zeros((H, W), np.uint8))
    assert_error(client.post("/api/propagate", json={"frame": 2}), 409, "frame 3 shows no object")
    assert_error(client.post("/api/propagate", json={"frame": T}), 400, "frame")
    assert_error(client.post("/api/propagate", json={}), 400, "frame")


def test_an_annotation_made_while_propagating_wins(client, annotator, monkeypatch):
    assert click(client, frame=0, points=((20, 20),), labels=(1,)).status_code == 200

    def propagate_keyframes(masks, **kw):
        annotator.add_clicks(3, [[5, 5]], [0])  # the user clicks while the propagation runs
        return np.ones((T, H, W), np.uint8)

    monkeypatch.setattr(annotator.video, "propagate_keyframes", propagate_keyframes)
    assert_error(client.post("/api/propagate", json={"frame": 0}), 409, "press Propagate again")
    st = client.get("/api/state").json()
    assert st["propagated_from"] is None and st["propagating"] is False


def test_propagate_with_the_real_session_and_propagation(segmenter, tmp_path):
    a = Annotator(make_clip(), tmp_path / "out", segmenter=segmenter)
    a.start()
    assert a.wait_ready(60), a.error
    try:
        a.add_clicks(0, [[16, 20]], [1])
        res = a.propagate(0)
        assert res["frames"] == [0] and a.propagated_from == [0]
        expected = a.video.propagate(a.session.mask(0), frame=0)  # one frame: plain propagation
        for t in range(T):
            np.testing.assert_array_equal(a._session_mask(t), expected[t])
    finally:
        a.close()


def test_status_says_matching_while_the_session_is_made(segmenter, tmp_path):
    seen = []

    def factory(video):
        seen.append(holder[0].status)  # what the page polls while the session starts
        return video.session()

    holder = [Annotator(make_clip(), tmp_path / "out", segmenter=segmenter, session_factory=factory)]
    a = holder[0].start()
    assert a.wait_ready(60), a.error
    assert seen == ["matching"] and a.status == "ready"
    a.close()


def test_matching_progress_counts_the_frames_of_the_default_session(segmenter, tmp_path):
    a = Annotator(make_clip(), tmp_path / "out", segmenter=segmenter).start()
    assert a.wait_ready(60), a.error
    progress = a.state()["progress"]
    assert progress["matched"] == progress["total"] == a.num_frames
    a.close()
