// The page: microphone -> WebSocket -> Moshi -> speakers, transcript, lag, recording.
// No framework, no build step, nothing loaded from elsewhere. Protocol: moshi_mlx/web/protocol.py.
"use strict";

const BLOCK_SECONDS = 0.04;       // microphone samples per message (40 ms)
const MAX_BUFFER_SECONDS = 0.24;  // playback queue bound in the browser (older audio is dropped)
const TARGET_BUFFER_SECONDS = 0.08;  // what the queue settles back to after a hiccup
const $ = (id) => document.getElementById(id);

// Counters for people and for the browser test (tests/web/test_browser.py reads them).
const stats = window.moshiStats = {
  state: "idle", session: null, settings: null, busy: false, errors: [],
  blocksSent: 0, blocksReceived: 0, textEvents: 0, transcript: "",
  playedSamples: 0, nonSilentSamples: 0, peak: 0, underruns: 0, droppedSamples: 0,
  serverLagMs: null, browserLagMs: null, lagMs: null, skipped: 0, trimmed: 0, stepMs: null,
  peakLagMs: 0, lagScaleMs: null, sampleRate: null, recordedSeconds: 0,
};

let info = null;
let conn = null;   // the running conversation's resources

function setState(s, live) {
  stats.state = s;
  const el = $("state");
  el.textContent = s;
  el.className = "state" + (live ? " live" : "");
}

function notice(text, isError) {
  const el = $("notice");
  el.hidden = !text;
  el.textContent = text || "";
  el.className = "notice" + (isError ? " error" : "");
}

const FIELDS = [
  ["temp", "audio temperature", 0.05], ["top_k", "audio top-k", 1], ["top_p", "audio top-p", 0.05],
  ["seed", "seed", 1], ["temp_text", "text temperature", 0.05], ["top_k_text", "text top-k", 1],
  ["top_p_text", "text top-p", 0.05],
];

function buildSettings() {
  const form = $("settings");
  form.textContent = "";
  for (const [name, label, step] of FIELDS) {
    const l = document.createElement("label");
    l.textContent = label;
    const input = document.createElement("input");
    input.type = "number"; input.name = name; input.step = String(step);
    const [lo, hi] = info.ranges[name];
    input.min = String(lo); input.max = String(hi);
    input.value = String(info.defaults[name]);
    l.appendChild(input);
    form.appendChild(l);
  }
}

function readSettings() {
  const out = {};
  for (const [name] of FIELDS) {
    const v = $("settings").elements[name].value.trim();
    if (v !== "") out[name] = Number(v);
  }
  return out;
}

async function loadInfo() {
  const r = await fetch("/api/info");
  info = await r.json();
  $("model").textContent = info.model;
  $("demo").hidden = !info.demo;
  buildSettings();
  buildPersona();
}

// PersonaPlex models: a voice and a role, sent with "start" (info.voices is null for other models)
function buildPersona() {
  $("persona-box").hidden = !info.voices;
  if (!info.voices) return;
  const select = $("voice");
  select.textContent = "";
  for (const name of [""].concat(info.voices)) {
    const o = document.createElement("option");
    o.value = name; o.textContent = name || "(none)";
    select.appendChild(o);
  }
  select.value = info.voice || "";
  $("persona").value = info.persona || "";
}

// both always sent: "(none)" and an empty role mean none, not the server's --voice / --persona
function readPersona() {
  if (!info.voices) return {};
  return { voice: $("voice").value, persona: $("persona").value.trim() };
}

function fmtMs(x) { return x === null || x === undefined ? "–" : Math.round(x) + " ms"; }

function showLag() {
  const parts = [];
  if (stats.serverLagMs !== null) parts.push("server " + fmtMs(stats.serverLagMs));
  if (stats.browserLagMs !== null) parts.push("browser " + fmtMs(stats.browserLagMs));
  stats.lagMs = stats.serverLagMs === null ? null : stats.serverLagMs + (stats.browserLagMs || 0);
  $("lag").textContent = fmtMs(stats.lagMs);
  $("lagparts").textContent = parts.join(" + ") + (stats.skipped || stats.trimmed
    ? ` · ${stats.skipped} frames skipped, ${stats.trimmed} dropped` : "");
  const scale = lagScaleMs(stats.lagMs);
  $("lagbar").style.width = Math.min(100, 100 * (stats.lagMs || 0) / scale) + "%";
  $("lagbar").parentElement.title = "full bar: " + fmtMs(scale) + (info && info.max_lag_ms
    ? " (the server's --max-lag-ms + the browser's queue bound)" : " (lag control off: the largest lag seen)");
}

// The lag bar's full width. With the server's lag control on (/api/info's max_lag_ms) the lag
// is bounded: its bound plus the browser's queue bound. Off (max_lag_ms null) nothing bounds
// it: the bar scales to the largest lag of this conversation, from 1 s, doubling past it.
function lagScaleMs(lagMs) {
  if (info && info.max_lag_ms) return stats.lagScaleMs = info.max_lag_ms + 1000 * MAX_BUFFER_SECONDS;
  stats.peakLagMs = Math.max(stats.peakLagMs || 0, lagMs || 0);
  let scale = 1000;
  while (scale < stats.peakLagMs) scale *= 2;
  return stats.lagScaleMs = scale;
}

function showCounts(level) {
  $("levelbar").style.width = Math.min(100, 100 * Math.sqrt(level || 0)) + "%";
  const sr = stats.sampleRate || 1;
  $("counts").textContent = `${(stats.playedSamples / sr).toFixed(1)} s played, ` +
    `${stats.textEvents} text pieces, ${stats.underruns} underruns`;
}

function addText(piece) {
  stats.textEvents++;
  stats.transcript += piece;
  const el = $("transcript");
  el.textContent = stats.transcript.replace(/^\s+/, "");
  el.scrollTop = el.scrollHeight;
}

function onServerMessage(msg) {
  switch (msg.type) {
    case "ready":
      stats.session = msg.session; stats.settings = msg.settings;
      conn.ready = true;
      setState("live: speak", true);
      notice("");
      break;
    case "text": addText(msg.text); break;
    case "stats":
      stats.serverLagMs = msg.lag_ms; stats.skipped = msg.skipped; stats.trimmed = msg.trimmed;
      stats.stepMs = msg.step_ms;
      showLag();
      break;
    case "busy":
      stats.busy = true;
      notice(msg.message, true);
      stop("busy");
      break;
    case "error":
      stats.errors.push(msg.message);
      notice("Server: " + msg.message, true);
      if (msg.fatal) stop("error");
      break;
  }
}

function onWorkletMessage(data) {
  if (data.stats) {
    const s = data.stats;
    for (const k of ["playedSamples", "nonSilentSamples", "peak", "underruns", "droppedSamples"]) stats[k] = s[k];
    const ctx = conn && conn.ctx;
    if (ctx) {
      const device = (ctx.baseLatency || 0) + (ctx.outputLatency || 0);
      stats.browserLagMs = 1000 * (s.queued / ctx.sampleRate + BLOCK_SECONDS + device);
    }
    showLag();
    showCounts(s.level);
    return;
  }
  if (!conn || !conn.ready || conn.ws.readyState !== WebSocket.OPEN) return;
  conn.ws.send(data.mic);
  stats.blocksSent++;
  conn.recMic.push(new Int16Array(data.mic));
  conn.recMoshi.push(new Int16Array(data.played));
  stats.recordedSeconds += data.mic.byteLength / 2 / conn.ctx.sampleRate;
}

async function start() {
  if (conn) return;
  $("start").disabled = true;
  $("download").hidden = true;
  notice("");
  Object.assign(stats, { busy: false, errors: [], blocksSent: 0, blocksReceived: 0, textEvents: 0, transcript: "",
    serverLagMs: null, browserLagMs: null, lagMs: null, peakLagMs: 0, session: null, recordedSeconds: 0,
    playedSamples: 0, nonSilentSamples: 0, peak: 0, underruns: 0, droppedSamples: 0, skipped: 0, trimmed: 0 });
  $("transcript").textContent = "";
  setState("asking for the microphone…");
  conn = { ready: false, recMic: [], recMoshi: [] };
  try {
    conn.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    conn.ctx = new AudioContext({ latencyHint: "interactive" });
    await conn.ctx.audioWorklet.addModule("/static/worklet.js");
    const rate = conn.ctx.sampleRate;
    stats.sampleRate = rate;
    conn.node = new AudioWorkletNode(conn.ctx, "moshi-io", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { block: Math.round(rate * BLOCK_SECONDS), maxQueue: Math.round(rate * MAX_BUFFER_SECONDS),
        target: Math.round(rate * TARGET_BUFFER_SECONDS) },
    });
    conn.node.port.onmessage = (e) => onWorkletMessage(e.data);
    conn.source = conn.ctx.createMediaStreamSource(conn.stream);
    conn.source.connect(conn.node);
    conn.node.connect(conn.ctx.destination);
    await conn.ctx.resume();
    setState("connecting…");
    const ws = conn.ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify({ type: "start", sample_rate: rate, settings: readSettings(), ...readPersona() }));
    ws.onmessage = (e) => {
      if (typeof e.data === "string") { onServerMessage(JSON.parse(e.data)); return; }
      stats.blocksReceived++;
      if (conn && conn.node) conn.node.port.postMessage(e.data, [e.data]);
    };
    ws.onclose = (e) => {
      if (conn && conn.ws === ws) {
        if (!stats.busy && stats.state !== "error") {
          notice(conn.ready ? "" : `The server closed the connection (${e.code}${e.reason ? ": " + e.reason : ""}).`, !conn.ready);
        }
        stop(stats.busy ? "busy" : "ended");
      }
    };
    $("stop").disabled = false;
  } catch (err) {
    stats.errors.push(String(err));
    notice("Could not start: " + (err && err.message ? err.message : err), true);
    stop("error");
  }
}

function stop(finalState) {
  const c = conn;
  conn = null;
  if (c) {
    if (c.ws && c.ws.readyState <= WebSocket.OPEN) c.ws.close(1000);
    if (c.node) c.node.port.postMessage("stop");
    if (c.stream) c.stream.getTracks().forEach((t) => t.stop());
    if (c.ctx) c.ctx.close();
    if (c.recMic.length && c.ctx) offerRecording(c.recMic, c.recMoshi, c.ctx.sampleRate);
  }
  setState(typeof finalState === "string" ? finalState : "stopped");
  $("start").disabled = false;
  $("stop").disabled = true;
}

function offerRecording(left, right, rate) {
  const n = left.reduce((a, x) => a + x.length, 0);
  const buf = new ArrayBuffer(44 + n * 4);
  const v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + n * 4, true); str(8, "WAVE");
  str(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 2, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * 4, true); v.setUint16(32, 4, true); v.setUint16(34, 16, true);
  str(36, "data"); v.setUint32(40, n * 4, true);
  const pcm = new Int16Array(buf, 44);
  let o = 0;
  for (let k = 0; k < left.length; k++) {
    const a = left[k], b = right[k];
    for (let i = 0; i < a.length; i++) { pcm[o++] = a[i]; pcm[o++] = b[i]; }
  }
  const link = $("recording");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([buf], { type: "audio/wav" }));
  link.textContent = `Download the recording (${(n / rate).toFixed(1)} s)`;
  $("download").hidden = false;
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => stop("stopped"));
loadInfo().catch((e) => notice("Could not reach the server: " + e, true));
