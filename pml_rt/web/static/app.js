// pml-rt annotate: the page. Plain JavaScript, no build step.
//
// Three stacked canvases: the frame (JPEG from /api/frame/i), the mask (palette PNG with a
// transparent background from /api/mask/i or from a click's reply) and the UI layer (click
// markers, the scribble being drawn; it takes the pointer). A click's reply is the clicked
// frame's new mask, drawn at once; other frames are fetched when shown, and frames near the
// current one are fetched in the background once the user pauses. A filmstrip of frames
// spread over the video shows every change at once, from the session's per-cell labels
// (/api/thumbs: one small PNG), redrawn after each annotation.
//
// For tests and benchmarks, window.pml exposes the state: pml.ready, pml.timings (one entry
// per annotation: click-to-screen milliseconds), pml.drawn ({frame, version} of the mask on
// screen), pml.maskPixel(x, y) (RGBA of the mask canvas) and pml.thumbs ({frames, version}
// of the filmstrip).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PREFETCH_RADIUS = 30;  // masks fetched ahead around the current frame
  const PREFETCH_IDLE_MS = 400;  // ... once the user has paused this long
  const FRAME_CACHE = 240;  // frame images kept
  const DRAG_PX = 4;  // a press that moves farther is a scribble, not a click
  const THUMBS = 8;  // frames in the filmstrip

  const S = {
    state: null,  // last /api/state
    stageReady: false,
    frame: 0,
    version: 0,  // masks on the server; cached masks of older versions are stale
    current: 1,  // selected object id
    frames: new Map(),  // frame -> Promise<HTMLImageElement>
    masks: new Map(),  // frame -> {version, blob}
    showSeq: 0,
    maskBusy: false,
    maskAgain: false,
    drag: null,
    playing: null,
    prefetchTimer: null,
    prefetchVersion: -1,
    lastInteraction: 0,
    busy: 0,  // annotation requests in flight
    objectsKey: null,  // what the object list shows, to redraw it only when it changes
    strip: null,  // {frames, version, cell, bitmap} of the filmstrip
    stripBusy: false,
    stripAgain: false,
  };

  const pml = {
    ready: false,
    timings: [],
    drawn: { frame: -1, version: -1 },
    frameDrawn: -1,
    thumbs: { frames: [], version: -1 },
    errors: [],
    maskPixel(x, y) {
      const d = maskCtx.getImageData(x, y, 1, 1).data;
      return [d[0], d[1], d[2], d[3]];
    },
  };
  window.pml = pml;

  const frameCanvas = $("frame-canvas");
  const maskCanvas = $("mask-canvas");
  const uiCanvas = $("ui-canvas");
  const frameCtx = frameCanvas.getContext("2d");
  const maskCtx = maskCanvas.getContext("2d", { willReadFrequently: true });
  const uiCtx = uiCanvas.getContext("2d");

  // -- talking to the server ------------------------------------------------------------
  async function api(method, url, body, contentType) {
    const opts = { method, headers: {} };
    if (body !== undefined) {
      opts.headers["Content-Type"] = contentType || "application/json";
      opts.body = contentType ? body : JSON.stringify(body);
    }
    const r = await fetch(url, opts);
    if (!r.ok) {
      let msg = `${r.status} ${r.statusText}`;
      try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return r;
  }

  function say(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", Boolean(isError));
    if (isError) pml.errors.push(text);
  }

  function fail(err) {
    say(String(err && err.message ? err.message : err), true);
  }

  // -- start: wait for the embeddings ---------------------------------------------------
  async function poll() {
    let st;
    try {
      st = await (await api("GET", "/api/state")).json();
    } catch (e) {
      say(`cannot reach the server: ${e.message}`, true);
      setTimeout(poll, 1000);
      return;
    }
    S.state = st;
    $("video-name").textContent = `${st.video.name} · ${st.video.num_frames} frames · ${st.video.width}×${st.video.height}`;
    if (st.status === "error") {
      $("loading-text").textContent = `The video could not be prepared: ${st.error}`;
      say("error", true);
      return;
    }
    if (!S.stageReady) setupStage(st);
    if (st.status !== "ready") {
      applyState(st);  // objects can be named while the embeddings are computed
      const { done, total, matched } = st.progress;
      const what = { loading: ["Loading the model…", "loading the model"],
                     matching: matched  // a session that reports its matching (the default one)
                       ? [`Matching each frame to its neighbours: frame ${matched} of ${total}`, `matching ${matched}/${total}`]
                       : ["Matching each frame to its neighbours…", "matching frames"] }[st.status]
        || [`Computing embeddings: frame ${done} of ${total}`, `embedding ${done}/${total}`];
      $("loading-text").textContent = what[0];
      const shown = st.status === "matching" ? matched : done;
      $("progress").value = total ? shown / total : 0;
      say(what[1]);
      setTimeout(poll, 250);
      return;
    }
    $("loading").hidden = true;
    S.version = st.version;
    applyState(st);
    pml.ready = true;
    say(`ready: click an object (embedded in ${st.embed_seconds ? st.embed_seconds.toFixed(1) : "?"} s)`);
    show(S.frame);
    refreshStrip();
  }

  function setupStage(st) {
    const { width, height, num_frames: n } = st.video;
    for (const c of [frameCanvas, maskCanvas, uiCanvas]) {
      c.width = width;
      c.height = height;
    }
    S.stageReady = true;
    const stage = $("stage");
    stage.style.aspectRatio = `${width} / ${height}`;
    // the frame, the transport row and the filmstrip (an eighth of the frame's height) fit the window
    $("player").style.maxWidth = `calc((100vh - 160px) * ${(width / height) / (1 + 1 / THUMBS)})`;
    stage.hidden = false;
    $("scrubber").max = String(n - 1);
    $("timeline").width = Math.max(200, Math.min(2000, n * 4));
    show(0);  // frames can be shown while embedding runs
  }

  function applyState(st) {
    S.state = st;
    if (st.version > S.version) S.version = st.version;
    if (!st.objects.some((o) => o.id === S.current)) {
      S.current = st.objects.length ? st.objects[0].id : 0;
    }
    renderObjects();
    renderTimeline();
    drawMarkers();
    $("undo").disabled = !st.can_undo;
    $("propagate").disabled = !!st.propagating || st.status !== "ready";
    const from = st.propagated_from;
    $("propagate-note").textContent = st.propagating ? "propagating…" : (!from ? "" :
      `showing the masks propagated from frame${from.length > 1 ? "s" : ""} ${from.map((f) => f + 1).join(", ")}; ` +
      "the next change returns to the clicks' own masks");
  }

  async function refreshState() {
    applyState(await (await api("GET", "/api/state")).json());
  }

  // -- frames and masks -----------------------------------------------------------------
  function loadFrame(i) {
    let p = S.frames.get(i);
    if (p) {
      S.frames.delete(i);  // re-insert: most recently used last
      S.frames.set(i, p);
      return p;
    }
    const img = new Image();
    img.decoding = "async";
    img.src = `/api/frame/${i}?run=${S.state.run}`;
    p = img.decode().then(() => img);
    p.catch(() => S.frames.delete(i));
    S.frames.set(i, p);
    while (S.frames.size > FRAME_CACHE) S.frames.delete(S.frames.keys().next().value);
    return p;
  }

  function objectColour(id) {
    const o = S.state && S.state.objects.find((x) => x.id === id);
    return o ? o.colour : "#ffffff";
  }

  function show(i) {
    const n = S.state ? S.state.video.num_frames : 1;
    i = Math.max(0, Math.min(n - 1, i | 0));
    S.frame = i;
    $("scrubber").value = String(i);
    $("frame-label").textContent = `${i + 1} / ${n}`;
    const seq = ++S.showSeq;
    loadFrame(i).then((img) => {
      if (seq !== S.showSeq) return;
      frameCtx.drawImage(img, 0, 0);
      pml.frameDrawn = i;
    }).catch(() => {});
    for (let d = 1; d <= 8; d++) {  // smooth stepping: neighbours load while the user looks
      if (i + d < n) loadFrame(i + d);
      if (d <= 3 && i - d >= 0) loadFrame(i - d);
    }
    drawMarkers();
    renderTimeline();
    markStrip();
    if (pml.ready) {
      const c = S.masks.get(i);
      if (c && c.version === S.version) {
        drawMaskBlob(i, c).catch(fail);
      } else {
        if (pml.drawn.frame !== i) clearMask();
        refreshMask();
      }
      schedulePrefetch();
    }
  }

  function clearMask() {
    maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
    pml.drawn = { frame: -1, version: -1 };
  }

  async function drawMaskBlob(i, c) {
    const bitmap = await createImageBitmap(c.blob);
    if (i !== S.frame) { bitmap.close(); return false; }
    maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
    maskCtx.drawImage(bitmap, 0, 0);
    bitmap.close();
    pml.drawn = { frame: i, version: c.version };
    return true;
  }

  async function fetchMask(i) {
    const r = await api("GET", `/api/mask/${i}?v=${S.version}`);
    const c = { version: Number(r.headers.get("X-Mask-Version")), blob: await r.blob() };
    if (c.version > S.version) S.version = c.version;
    const old = S.masks.get(i);
    if (!old || old.version <= c.version) S.masks.set(i, c);
    return c;
  }

  // One mask request at a time for the frame on screen: scrubbing fast asks only for the
  // frame the user stopped on, not for every frame passed.
  async function refreshMask() {
    if (S.maskBusy) { S.maskAgain = true; return; }
    S.maskBusy = true;
    try {
      for (let tries = 0; tries < 100; tries++) {
        S.maskAgain = false;
        const i = S.frame;
        let c = S.masks.get(i);
        if (!c || c.version !== S.version) c = await fetchMask(i);
        if (i === S.frame && c.version === S.version) await drawMaskBlob(i, c);
        if (!S.maskAgain && pml.drawn.frame === S.frame && pml.drawn.version === S.version) break;
      }
    } catch (e) {
      fail(e);
    } finally {
      S.maskBusy = false;
    }
  }

  // Once the user pauses, masks of frames around the current one are fetched one by one,
  // nearest first, so stepping and playing show them without waiting.
  function schedulePrefetch() {
    clearTimeout(S.prefetchTimer);
    S.prefetchTimer = setTimeout(prefetch, PREFETCH_IDLE_MS);
  }

  async function prefetch() {
    if (!pml.ready || S.busy || S.drag || S.playing) return;
    if (performance.now() - S.lastInteraction < PREFETCH_IDLE_MS) { schedulePrefetch(); return; }
    const n = S.state.video.num_frames;
    const version = S.version;
    const centre = S.frame;
    for (let d = 1; d <= PREFETCH_RADIUS; d++) {
      for (const i of [centre + d, centre - d]) {
        if (i < 0 || i >= n) continue;
        const c = S.masks.get(i);
        if (c && c.version === version) continue;
        if (S.busy || S.drag || S.version !== version || S.frame !== centre) return;
        try { await fetchMask(i); } catch (e) { return; }
      }
    }
  }

  // -- the filmstrip: every change at once ----------------------------------------------
  async function refreshStrip() {
    if (S.stripBusy) { S.stripAgain = true; return; }
    S.stripBusy = true;
    try {
      do {
        S.stripAgain = false;
        const r = await api("GET", `/api/thumbs?n=${THUMBS}`);
        const frames = r.headers.get("X-Frames").split(",").map(Number);
        const version = Number(r.headers.get("X-Mask-Version"));
        const bitmap = await createImageBitmap(await r.blob());
        if (S.strip) S.strip.bitmap.close();
        S.strip = { frames, version, cell: Number(r.headers.get("X-Cell-Size")), bitmap };
        drawStrip();
        pml.thumbs = { frames, version };
      } while (S.stripAgain);
    } catch (e) {
      fail(e);
    } finally {
      S.stripBusy = false;
    }
  }

  function drawStrip() {
    const box = $("filmstrip");
    const st = S.strip;
    if (!st || !S.state) return;
    const { width, height } = S.state.video;
    while (box.children.length > st.frames.length) box.lastChild.remove();
    st.frames.forEach((f, k) => {
      let c = box.children[k];
      if (!c) {
        c = document.createElement("canvas");
        c.addEventListener("click", () => { stopPlaying(); show(Number(c.dataset.frame)); });
        box.append(c);
      }
      c.dataset.frame = String(f);
      c.title = `frame ${f + 1}`;
      c.width = 160;
      c.height = Math.max(1, Math.round((160 * height) / width));
      loadFrame(f).then((img) => {
        if (S.strip !== st) return;
        const ctx = c.getContext("2d");
        ctx.drawImage(img, 0, 0, c.width, c.height);
        const cellsW = st.bitmap.width / st.frames.length;
        const cellsH = st.bitmap.height;
        ctx.imageSmoothingEnabled = false;
        ctx.globalAlpha = Number($("opacity").value);
        // a cell covers `cell` pixels; the last row and column may run past the frame's edge
        ctx.drawImage(st.bitmap, k * cellsW, 0, cellsW, cellsH, 0, 0,
          (c.width * cellsW * st.cell) / width, (c.height * cellsH * st.cell) / height);
        ctx.globalAlpha = 1;
      }).catch(() => {});
    });
    markStrip();
  }

  function markStrip() {
    for (const c of $("filmstrip").children) c.classList.toggle("current", Number(c.dataset.frame) === S.frame);
  }

  // -- drawing markers and the timeline ---------------------------------------------------
  function uiScale() {
    const rect = uiCanvas.getBoundingClientRect();
    return rect.width ? uiCanvas.width / rect.width : 1;
  }

  function drawMarkers() {
    if (!S.state) return;
    uiCtx.clearRect(0, 0, uiCanvas.width, uiCanvas.height);
    const k = uiScale();
    for (const a of S.state.annotations) {
      if (a.frame !== S.frame) continue;
      if (a.kind === "scribble") {
        strokePath(a.points, a.labels[0], k);
      } else if (a.kind === "click") {
        a.points.forEach((p, j) => dot(p[0] + 0.5, p[1] + 0.5, a.labels[j], k));
      }
    }
    if (S.drag && S.drag.moved) strokePath(S.drag.points, S.drag.label, k);
  }

  function dot(x, y, label, k) {
    uiCtx.beginPath();
    uiCtx.arc(x, y, 5 * k, 0, 2 * Math.PI);
    uiCtx.fillStyle = label ? objectColour(label) : "#ffffff";
    uiCtx.fill();
    uiCtx.lineWidth = 1.5 * k;
    uiCtx.strokeStyle = label ? "#ffffff" : "#000000";
    uiCtx.stroke();
  }

  function strokePath(points, label, k) {
    if (!points.length) return;
    uiCtx.lineJoin = "round";
    uiCtx.lineCap = "round";
    for (const [width, colour] of [[5 * k, "rgba(0,0,0,0.6)"], [3 * k, label ? objectColour(label) : "#ffffff"]]) {
      uiCtx.beginPath();
      uiCtx.moveTo(points[0][0] + 0.5, points[0][1] + 0.5);
      for (const p of points.slice(1)) uiCtx.lineTo(p[0] + 0.5, p[1] + 0.5);
      uiCtx.lineWidth = width;
      uiCtx.strokeStyle = colour;
      uiCtx.stroke();
    }
  }

  function renderTimeline() {
    const c = $("timeline");
    if (!S.state) return;
    const ctx = c.getContext("2d");
    const n = S.state.video.num_frames;
    const w = c.width / n;
    ctx.clearRect(0, 0, c.width, c.height);
    for (const a of S.state.annotations) {
      const label = a.labels.find((v) => v) || 0;
      ctx.fillStyle = label ? objectColour(label) : "#888888";
      ctx.fillRect(Math.floor(a.frame * w), 0, Math.max(2, Math.ceil(w)), c.height - 3);
    }
    ctx.fillStyle = "#4da3ff";
    ctx.fillRect(Math.floor(S.frame * w), c.height - 3, Math.max(2, Math.ceil(w)), 3);
  }

  // -- objects --------------------------------------------------------------------------
  function renderObjects() {
    const key = JSON.stringify([S.state.objects, S.current]);
    if (key === S.objectsKey) return;  // unchanged: keep what the user may be typing
    S.objectsKey = key;
    const ul = $("objects");
    const focused = document.activeElement && document.activeElement.classList.contains("name")
      ? document.activeElement.dataset.id : null;
    ul.replaceChildren();
    S.state.objects.forEach((o, k) => {
      const li = document.createElement("li");
      li.dataset.id = String(o.id);
      li.classList.toggle("selected", o.id === S.current);
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = k < 9 ? String(k + 1) : "";
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = o.colour;
      const name = document.createElement("input");
      name.className = "name";
      name.value = o.name;
      name.maxLength = 64;
      name.dataset.id = String(o.id);
      name.setAttribute("aria-label", `name of object ${o.id}`);
      name.addEventListener("change", () => renameObject(o.id, name.value));
      name.addEventListener("keydown", (e) => { if (e.key === "Enter") name.blur(); e.stopPropagation(); });
      const del = document.createElement("button");
      del.className = "delete";
      del.type = "button";
      del.title = `Delete ${o.name}`;
      del.textContent = "×";
      del.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(o.id); });
      li.addEventListener("click", () => selectObject(o.id));
      li.append(key, sw, name, del);
      ul.append(li);
      if (focused === String(o.id)) name.focus();
    });
  }

  function selectObject(id) {
    S.current = id;
    renderObjects();
  }

  async function addObject() {
    try {
      const j = await (await api("POST", "/api/objects", {})).json();
      S.current = j.object.id;
      applyState(j.state);
    } catch (e) { fail(e); }
  }

  async function renameObject(id, name) {
    try {
      applyState((await (await api("PATCH", `/api/objects/${id}`, { name })).json()).state);
    } catch (e) { fail(e); S.objectsKey = null; renderObjects(); }
  }

  async function deleteObject(id) {
    try {
      applyState((await (await api("DELETE", `/api/objects/${id}`)).json()).state);
      afterChange();
    } catch (e) { fail(e); }
  }

  async function undo() {
    try {
      applyState((await (await api("POST", "/api/undo")).json()).state);
      afterChange();
      say("undone");
    } catch (e) { fail(e); }
  }

  async function propagate() {
    const frame = S.frame;
    $("propagate").disabled = true;
    say(`propagating frame ${frame + 1} through the video…`);
    try {
      const j = await (await api("POST", "/api/propagate", { frame })).json();
      applyState(j.state);
      afterChange();
      say(`propagated from frame${j.frames.length > 1 ? "s" : ""} ${j.frames.map((f) => f + 1).join(", ")} in ${j.seconds.toFixed(1)} s`);
    } catch (e) {
      fail(e);
      refreshState().catch(() => {});
    }
  }

  function afterChange() {  // the masks may have changed: redraw the frame on screen
    if (pml.drawn.version !== S.version) refreshMask();
    refreshStrip();
    schedulePrefetch();
  }

  // -- annotating -----------------------------------------------------------------------
  function toFrame(e) {
    const rect = uiCanvas.getBoundingClientRect();
    const x = ((e.clientX - rect.left) / rect.width) * uiCanvas.width;
    const y = ((e.clientY - rect.top) / rect.height) * uiCanvas.height;
    return [Math.min(uiCanvas.width - 1, Math.max(0, Math.floor(x))),
      Math.min(uiCanvas.height - 1, Math.max(0, Math.floor(y)))];
  }

  function onPointerDown(e) {
    if (!pml.ready || (e.button !== 0 && e.button !== 2)) return;
    e.preventDefault();
    uiCanvas.focus();
    uiCanvas.setPointerCapture(e.pointerId);
    stopPlaying();
    const background = e.button === 2 || e.shiftKey;
    S.drag = { points: [toFrame(e)], x: e.clientX, y: e.clientY, moved: false, label: background ? 0 : S.current };
    S.lastInteraction = performance.now();
  }

  function onPointerMove(e) {
    if (!S.drag) return;
    const p = toFrame(e);
    const last = S.drag.points[S.drag.points.length - 1];
    if (p[0] !== last[0] || p[1] !== last[1]) S.drag.points.push(p);
    if (!S.drag.moved && Math.hypot(e.clientX - S.drag.x, e.clientY - S.drag.y) > DRAG_PX) S.drag.moved = true;
    if (S.drag.moved) drawMarkers();
  }

  function onPointerUp(e) {
    const d = S.drag;
    if (!d) return;
    S.drag = null;
    const start = e.timeStamp || performance.now();  // same clock as performance.now()
    const frame = S.frame;
    let kind, body, marker;
    if (d.moved && d.points.length > 1) {
      kind = "scribble";
      body = { frame, path: d.points, label: d.label };
      marker = { frame, kind, points: d.points, labels: [d.label] };
    } else {
      kind = "click";
      body = { frame, points: [d.points[0]], labels: [d.label] };
      marker = { frame, kind, points: [d.points[0]], labels: [d.label] };
    }
    if (d.label !== 0 && !S.state.objects.some((o) => o.id === d.label)) {
      fail("select or add an object first");
      return;
    }
    S.state.annotations.push(marker);  // shown at once; the server's list replaces it later
    drawMarkers();
    annotate(kind, body, start);
  }

  async function annotate(kind, body, start) {
    S.busy++;
    clearTimeout(S.prefetchTimer);
    try {
      const sent = performance.now();
      const r = await api("POST", `/api/${kind}`, body);
      const answered = performance.now();
      const version = Number(r.headers.get("X-Mask-Version"));
      const serverTiming = r.headers.get("Server-Timing") || "";
      const c = { version, blob: await r.blob() };
      const received = performance.now();
      if (version > S.version) S.version = version;
      S.masks.set(body.frame, c);
      const drawnNow = await drawMaskBlob(body.frame, c);
      const drawn = performance.now();
      // The canvas reaches the screen at the next paint: wait for it (a task queued from
      // requestAnimationFrame runs after that frame is painted).
      requestAnimationFrame(() => setTimeout(() => {
        const painted = performance.now();
        const server = serverTotal(serverTiming);
        const t = { kind, frame: body.frame, version, drawn_ms: drawn - start, screen_ms: painted - start,
          server_ms: server, shown: drawnNow, server_timing: serverTiming,
          // where the time went: before the request left, until the reply's headers, its body,
          // decoding and drawing, and waiting for the paint
          parts_ms: { send: sent - start, reply: answered - sent, body: received - answered,
            draw: drawn - received, paint: painted - drawn } };
        pml.timings.push(t);
        $("timing").textContent = `${kind} → screen ${t.screen_ms.toFixed(0)} ms (server ${server.toFixed(0)} ms)`;
        say(`${kind} on frame ${body.frame + 1}`);
        // markers, undo button, filmstrip: after the mask is on screen. The state waits for the
        // server's update of the other frames, so it also says how long that took.
        refreshState().then(() => {
          const rest = S.state && S.state.settle_seconds;
          if (typeof rest === "number" && S.version === version) {
            $("timing").textContent += `; other frames +${(1000 * rest).toFixed(0)} ms`;
          }
        }).catch(fail);
        refreshStrip();
      }, 0));
    } catch (e) {
      fail(e);
      refreshState().catch(() => {});
    } finally {
      S.busy--;
      S.lastInteraction = performance.now();
      schedulePrefetch();
    }
  }

  function serverTotal(header) {
    const m = /total;dur=([0-9.]+)/.exec(header);
    return m ? Number(m[1]) : NaN;
  }

  async function importMask(file) {
    if (!file) return;
    const frame = S.frame;
    S.busy++;
    try {
      const r = await api("POST", `/api/mask/${frame}`, file, "image/png");
      const c = { version: Number(r.headers.get("X-Mask-Version")), blob: await r.blob() };
      if (c.version > S.version) S.version = c.version;
      S.masks.set(frame, c);
      await drawMaskBlob(frame, c);
      await refreshState();
      refreshStrip();
      say(`mask set on frame ${frame + 1}`);
    } catch (e) {
      fail(e);
    } finally {
      S.busy--;
      $("import-mask").value = "";
      schedulePrefetch();
    }
  }

  // -- export ---------------------------------------------------------------------------
  async function exportMasks() {
    const btn = $("export");
    const out = $("export-result");
    btn.disabled = true;
    out.replaceChildren();
    say("exporting…");
    try {
      const body = { overlay: $("export-overlay").checked, alpha: Number($("opacity").value) };
      const j = await (await api("POST", "/api/export", body)).json();
      for (const [name, url] of Object.entries(j.downloads)) {
        const a = document.createElement("a");
        a.href = url;
        a.download = "";
        a.textContent = `download ${name}`;
        a.dataset.name = name;
        out.append(a);
      }
      const note = document.createElement("small");
      note.textContent = `${j.num_frames} masks written to ${j.folder}`;
      out.append(note);
      say(`exported ${j.num_frames} masks in ${j.seconds.toFixed(1)} s`);
    } catch (e) {
      fail(e);
    } finally {
      btn.disabled = false;
    }
  }

  // -- playback and keys ----------------------------------------------------------------
  function togglePlay() {
    if (S.playing) { stopPlaying(); return; }
    const n = S.state.video.num_frames;
    if (S.frame >= n - 1) show(0);
    const fps = Math.min(30, S.state.video.fps || 25);
    S.playing = setInterval(() => {
      if (S.frame >= n - 1) { stopPlaying(); return; }
      show(S.frame + 1);
    }, 1000 / fps);
    $("play").textContent = "❚❚";
  }

  function stopPlaying() {
    if (!S.playing) return;
    clearInterval(S.playing);
    S.playing = null;
    $("play").textContent = "▶";
    schedulePrefetch();
  }

  function onKey(e) {
    const t = e.target;
    if (t && (t.tagName === "INPUT" && t.type !== "range" && t.type !== "checkbox")) return;
    if (!S.state || !S.state.video) return;
    const n = S.state.video.num_frames;
    const step = e.shiftKey ? 10 : 1;
    let handled = true;
    if (e.key === "ArrowRight" || e.key === ".") show(S.frame + step);
    else if (e.key === "ArrowLeft" || e.key === ",") show(S.frame - step);
    else if (e.key === "Home") show(0);
    else if (e.key === "End") show(n - 1);
    else if (e.key === " ") togglePlay();
    else if ((e.key === "z" || e.key === "Z") && !e.altKey) undo();
    else if (e.key === "n" && !e.ctrlKey && !e.metaKey) addObject();
    else if (e.key === "p" && !e.ctrlKey && !e.metaKey) propagate();
    else if (/^[1-9]$/.test(e.key) && S.state.objects[Number(e.key) - 1]) selectObject(S.state.objects[Number(e.key) - 1].id);
    else handled = false;
    if (handled) {
      e.preventDefault();
      S.lastInteraction = performance.now();
    }
  }

  // -- wiring ---------------------------------------------------------------------------
  uiCanvas.addEventListener("pointerdown", onPointerDown);
  uiCanvas.addEventListener("pointermove", onPointerMove);
  uiCanvas.addEventListener("pointerup", onPointerUp);
  uiCanvas.addEventListener("pointercancel", () => { S.drag = null; drawMarkers(); });
  uiCanvas.addEventListener("contextmenu", (e) => e.preventDefault());
  document.addEventListener("keydown", onKey);
  document.addEventListener("keydown", (e) => { if (e.key === "Shift") uiCanvas.classList.add("shift"); });
  document.addEventListener("keyup", (e) => { if (e.key === "Shift") uiCanvas.classList.remove("shift"); });
  window.addEventListener("resize", drawMarkers);
  $("scrubber").addEventListener("input", (e) => { stopPlaying(); S.lastInteraction = performance.now(); show(Number(e.target.value)); });
  $("prev").addEventListener("click", () => show(S.frame - 1));
  $("next").addEventListener("click", () => show(S.frame + 1));
  $("play").addEventListener("click", togglePlay);
  $("add-object").addEventListener("click", addObject);
  $("undo").addEventListener("click", undo);
  $("propagate").addEventListener("click", propagate);
  $("export").addEventListener("click", exportMasks);
  $("import-mask").addEventListener("change", (e) => importMask(e.target.files[0]));
  $("opacity").addEventListener("input", (e) => { maskCanvas.style.opacity = e.target.value; drawStrip(); });
  maskCanvas.style.opacity = $("opacity").value;
  poll();
})();
