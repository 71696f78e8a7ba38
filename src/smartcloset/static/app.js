// Plain mirror page (the React page replaces it): camera -> JPEG -> WebSocket -> canvas.
// Wire format: see docs/protocol.md. At most MAX_IN_FLIGHT frames are unanswered at once and
// nothing is sent while the socket buffers, so the page never queues frames.
"use strict";
const MAX_IN_FLIGHT = 2, TARGET_FPS = 30, JPEG_QUALITY = 0.8;
const view = document.getElementById("view"), ctx = view.getContext("2d");
const msg = (t) => (document.getElementById("message").textContent = t);
let ws = null, video = null, frameId = 0, inFlight = 0, lastSend = 0, sendTimes = [], recvTimes = [], rtts = [];
const grab = document.createElement("canvas");

function connect() {
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { msg(""); inFlight = 0; selectGarment(); };
  ws.onclose = () => { msg("Server unreachable - reconnecting…"); setTimeout(connect, 1000); };
  ws.onmessage = (ev) => (typeof ev.data === "string" ? onText(JSON.parse(ev.data)) : onFrame(ev.data));
}

function onText(m) {
  if (m.type === "error") msg(`Server: ${m.message}`);
  if (m.type === "stats") {
    set("server-lat", m.latency_ms_p50 == null ? "–" : `${m.latency_ms_p50.toFixed(1)} ms`);
    set("pose-fps", m.pose_fps.toFixed(1));
    set("batch", m.mean_batch_size == null ? "–" : m.mean_batch_size.toFixed(2));
    set("dropped", String(m.dropped));
  }
}

async function onFrame(buf) {
  inFlight = Math.max(0, inFlight - 1);
  const dv = new DataView(buf), now = performance.now();
  const capture = dv.getFloat64(8, true);
  rtts.push(now - capture); if (rtts.length > 60) rtts.shift();
  recvTimes.push(now);
  const bmp = await createImageBitmap(new Blob([new Uint8Array(buf, 44)], { type: "image/jpeg" }));
  if (view.width !== bmp.width) { view.width = bmp.width; view.height = bmp.height; }
  ctx.setTransform(-1, 0, 0, 1, view.width, 0); // mirrored, like a mirror
  ctx.drawImage(bmp, 0, 0);
  bmp.close();
}

const set = (id, t) => (document.getElementById(id).textContent = t);
const rate = (arr) => { const now = performance.now(); while (arr.length && arr[0] < now - 2000) arr.shift(); return arr.length / 2; };
setInterval(() => {
  set("send-fps", rate(sendTimes).toFixed(1));
  set("recv-fps", rate(recvTimes).toFixed(1));
  const s = [...rtts].sort((a, b) => a - b);
  set("rtt", s.length ? `${s[s.length >> 1].toFixed(0)} ms` : "–");
}, 500);

async function tick() {
  requestAnimationFrame(tick);
  if (!video || !ws || ws.readyState !== 1) return;
  const now = performance.now();
  if (now - lastSend < 1000 / TARGET_FPS || inFlight >= MAX_IN_FLIGHT || ws.bufferedAmount > 1 << 20) return;
  lastSend = now; inFlight++;
  grab.width = video.videoWidth; grab.height = video.videoHeight;
  grab.getContext("2d").drawImage(video, 0, 0);
  const id = frameId++;
  grab.toBlob(async (blob) => {
    const jpeg = await blob.arrayBuffer(), out = new Uint8Array(16 + jpeg.byteLength), dv = new DataView(out.buffer);
    out[0] = 83; out[1] = 67; out[2] = 1; out[3] = 1; dv.setUint32(4, id, true); dv.setFloat64(8, now, true);
    out.set(new Uint8Array(jpeg), 16);
    if (ws.readyState === 1) { ws.send(out.buffer); sendTimes.push(performance.now()); } else inFlight--;
  }, "image/jpeg", JPEG_QUALITY);
}

async function selectGarment() {
  const g = document.getElementById("garment").value;
  if (ws && ws.readyState === 1 && g) ws.send(JSON.stringify({ type: "select", garments: [g] }));
}

document.getElementById("start").onclick = async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: false });
    video = document.createElement("video"); video.srcObject = stream; video.muted = true; await video.play();
    msg("");
  } catch (e) {
    msg(e.name === "NotAllowedError" ? "Camera permission denied." : e.name === "NotFoundError" ? "No camera found." : `Camera error: ${e.message}`);
  }
};
document.getElementById("garment").onchange = selectGarment;
document.getElementById("skeleton").onchange = (e) => ws && ws.readyState === 1 && ws.send(JSON.stringify({ type: "settings", draw_skeleton: e.target.checked }));

fetch("/api/garments").then((r) => r.json()).then(({ garments, default: def }) => {
  const sel = document.getElementById("garment");
  for (const g of garments) sel.add(new Option(g.name, g.id, false, def.includes(g.id)));
});
connect();
requestAnimationFrame(tick);
