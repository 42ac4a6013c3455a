// The viewer page: wires the bridge session, the answer player, the avatar and the curve panel together.
import "./style.css";
import { Avatar, curveKey } from "./avatar";
import { CurvePanel } from "./curves";
import { FaceTrack, FrameFlag } from "./facetrack";
import { Microphone } from "./mic";
import { AnswerPlayer } from "./player";
import * as P from "./protocol";
import { BridgeSession, type CharacterConfig } from "./session";
import { TurnEnds } from "./turns";
import { parseWav, resample } from "./wav";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

interface Turn {
  id: number;
  text: string;
  sentAt: number; // performance.now() when the utterance was sent
  firstAudioMs: number | null;
  tracks: Map<number, FaceTrack>; // layout id -> frames
  seqs: number[]; // header seq of every message of the turn, in arrival order
  audioSamples: number;
  end: P.TurnEnd | null;
  /** set when an Error ended the turn for good (AUDIO_TOO_LONG, TURN_FAILED): failed, never resent */
  failure: string | null;
  errors: string[];
}

const audioCtx = new AudioContext({ latencyHint: "interactive" });
const player = new AnswerPlayer(audioCtx);
const mic = new Microphone(audioCtx);
const avatar = new Avatar($<HTMLCanvasElement>("view"));
const curves = new CurvePanel($<HTMLCanvasElement>("curves"));
const turns = new Map<number, Turn>();
const ends = new TurnEnds();
let current: Turn | null = null;
let layoutKeys = new Map<number, string[]>(); // layout id -> curve keys (Welcome's names, normalised)
let layoutNames = new Map<number, string[]>();
let outputRate = 24000;
let fps = 25;
let lastValues: { keys: string[]; values: Float32Array } | null = null;
let heldFrames = 0;
const decodeErrors: string[] = [];
// version 2
const speechLog: { kind: string; turn: number; start?: number; end?: number; detected?: number; reason?: number }[] = [];
const acks: { kind: number; reset: boolean }[] = [];
let idle: { layout: number; values: Float32Array; count: number } | null = null; // the newest idle frame
let idleShown = 0;
let handsFree = false;
const faded = new Set<number>(); // turns cancelled here or by a barge-in: their late audio is not played

// --- log / status ----------------------------------------------------------------------------------------------
function log(text: string, error = false): void {
  const el = document.createElement("div");
  el.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (error) el.className = "err";
  const box = $("log");
  box.appendChild(el);
  while (box.childElementCount > 50) box.firstChild!.remove();
  box.scrollTop = box.scrollHeight;
}

const fmtS = (s: number | undefined) => (s === undefined || s < 0 ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);

function showTurn(t: Turn | null): void {
  $("m-ttft").textContent = fmtS(t?.end?.ttft_s);
  $("m-ttfa").textContent = fmtS(t?.end?.ttfa_s);
  $("m-rtf").textContent = t?.end && t.end.rtf >= 0 ? t.end.rtf.toFixed(2) : "–";
  const status = !t ? "–" : t.end ? P.TurnStatus[t.end.status].toLowerCase() : t.failure ? "failed" : "streaming…";
  $("s-status").textContent = status;
  $("s-first").textContent = t?.firstAudioMs != null ? `${Math.round(t.firstAudioMs)} ms` : "–";
  $("s-audio").textContent = t ? `${(t.audioSamples / outputRate).toFixed(2)} s` : "–";
  const tr = t ? preferredTrack(t) : null;
  $("s-frames").textContent = tr ? `${tr[1].count}${heldFrames ? ` (${heldFrames} held)` : ""}` : "–";
  $("s-layout").textContent = tr ? (P.LAYOUT_DIMS[tr[0]]?.name ?? String(tr[0])) : "–";
  const answer = $("answer");
  answer.textContent = t ? t.text || "…" : "Say something, or send a wav.";
  answer.classList.toggle("muted", !t);
  $("caption").textContent = t?.text ?? "";
}

// --- the bridge session ----------------------------------------------------------------------------------------
function preferredTrack(t: Turn): [number, FaceTrack] | null {
  for (const lid of [3, 2]) {
    const tr = t.tracks.get(lid);
    if (tr && tr.count) return [lid, tr];
  }
  return null;
}

function onMessage(m: P.Message): void {
  const ending = ends.observe(m);
  if (m.kind === P.Kind.ERROR) {
    log(`server error ${P.ErrorCode[m.code] ?? m.code}: ${m.message}`, true);
    const t = turns.get(m.turn_id);
    if (t) t.errors.push(m.message);
    if (t && ending) {
      // final for this turn: show it failed, stop waiting for its answer; nothing is resent or cancelled
      t.failure = ending.reason;
      for (const tr of t.tracks.values()) tr.ended = true;
      if (t === current) player.end(t.id);
      log(`turn ${t.id} failed (${ending.reason}); it is not resent: record a shorter question`, true);
      ($("replay") as HTMLButtonElement).disabled = false;
      if (t === current) showTurn(t);
    }
    return;
  }
  if (onV2Message(m)) return;
  if (m.kind === P.Kind.WELCOME || m.kind === P.Kind.HEARTBEAT || m.turn_id === 0) return;
  const t = turns.get(m.turn_id);
  if (!t) return; // a stale turn
  t.seqs.push(m.seq);
  switch (m.kind) {
    case P.Kind.TEXT_DELTA:
      t.text += m.text;
      break;
    case P.Kind.AUDIO_CHUNK: {
      if (t.firstAudioMs === null) t.firstAudioMs = performance.now() - t.sentAt;
      const x = m.samples instanceof Float32Array ? m.samples : Float32Array.from(m.samples, (s) => s / 32768);
      t.audioSamples = Math.max(t.audioSamples, m.sample_offset + x.length);
      if (t === current && !faded.has(t.id)) player.add(t.id, m.sample_offset, x);
      break;
    }
    case P.Kind.FACE_FRAMES: {
      let tr = t.tracks.get(m.layout_id);
      if (!tr) {
        tr = new FaceTrack(m.dims, outputRate / m.fps);
        t.tracks.set(m.layout_id, tr);
      }
      tr.add(m.first_frame, m.values, m.n_frames);
      break;
    }
    case P.Kind.TURN_END:
      t.end = m;
      for (const tr of t.tracks.values()) tr.ended = true;
      if (t === current && !faded.has(t.id)) player.end(t.id);
      log(
        `turn ${t.id} ${P.TurnStatus[m.status].toLowerCase()}: TTFT ${fmtS(m.ttft_s)}, TTFA ${fmtS(m.ttfa_s)}, ` +
          `RTF ${m.rtf >= 0 ? m.rtf.toFixed(2) : "–"}, ${m.face_frames} frames`,
      );
      ($("replay") as HTMLButtonElement).disabled = false;
      break;
  }
  if (t === current) showTurn(t);
}

/** Version 2 messages of the session (character, hands-free, idle face); true when handled. */
function onV2Message(m: P.Message): boolean {
  switch (m.kind) {
    case P.Kind.CONFIG_ACK:
      acks.push({ kind: m.acked_kind, reset: (m.flags & P.CONFIG_ACK_CONVERSATION_RESET) !== 0 });
      log(`${P.Kind[m.acked_kind].toLowerCase().replace("_", " ")} applied${m.flags ? " (new conversation)" : ""}`);
      return true;
    case P.Kind.SPEECH_STARTED:
      speechLog.push({ kind: "start", turn: m.turn_id, start: m.start_sample, detected: m.detected_sample });
      setVad("speaking", "speaking…");
      return true;
    case P.Kind.SPEECH_ENDED:
      speechLog.push({ kind: "end", turn: m.turn_id, start: m.start_sample, end: m.end_sample, reason: m.reason });
      setVad("listening", "listening");
      beginTurn(m.turn_id, "hands-free utterance");
      return true;
    case P.Kind.BARGE_IN: {
      speechLog.push({ kind: "barge", turn: m.turn_id, start: m.speech_sample, detected: m.detected_sample });
      faded.add(m.turn_id);
      player.fadeOut(m.turn_id); // the server cancelled it: stop now, with a 15 ms fade
      const t = turns.get(m.turn_id);
      if (t) for (const tr of t.tracks.values()) tr.ended = true;
      log(`barge-in: turn ${m.turn_id} interrupted`);
      return true;
    }
    case P.Kind.FACE_FRAMES:
      if (m.turn_id !== 0) return false;
      if (m.layout_id === 3 || (m.layout_id === 2 && idle?.layout !== 3)) {
        const last = m.values.subarray((m.n_frames - 1) * m.dims, m.n_frames * m.dims);
        idle = { layout: m.layout_id, values: Float32Array.from(last), count: (idle?.count ?? 0) + m.n_frames };
      }
      return true;
    default:
      return false;
  }
}

function setVad(cls: string, text: string): void {
  const el = $("vad");
  el.className = `pill ${cls}`;
  el.textContent = text;
}

const wsUrl = (path: string) => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
let session: BridgeSession;

function startTurn(audio16k: Float32Array, what: string): void {
  if (!session.ready) {
    log("not connected to the bridge yet", true);
    return;
  }
  interruptCurrent();
  const id = session.sendUtterance(audio16k, 16000);
  beginTurn(id, `${what} (${(audio16k.length / 16000).toFixed(2)} s)`);
}

/** Barge-in from this page (a new question while the answer plays): cancel it, fade it out. */
function interruptCurrent(): void {
  if (current && ends.needsCancel(current.id)) {
    session.cancel(current.id);
    faded.add(current.id);
    player.fadeOut(current.id);
  }
}

/** A turn starts (sent audio or text, or a hands-free utterance the server cut): follow and play its answer. */
function beginTurn(id: number, what: string): void {
  void audioCtx.resume();
  current = {
    id,
    text: "",
    sentAt: performance.now(),
    firstAudioMs: null,
    tracks: new Map(),
    seqs: [],
    audioSamples: 0,
    end: null,
    failure: null,
    errors: [],
  };
  turns.set(id, current);
  for (const old of turns.keys()) if (turns.size > 6 && old !== id) turns.delete(old);
  player.reset(id);
  curves.clear();
  heldFrames = 0;
  ($("replay") as HTMLButtonElement).disabled = true;
  log(`turn ${id >= P.SERVER_TURN_BIT ? `h${id - P.SERVER_TURN_BIT}` : id}: ${what}`);
  showTurn(current);
}

function sendText(text: string): number | null {
  try {
    if (!session.ready) throw new Error("not connected to the bridge yet");
    interruptCurrent();
    const id = session.sendText(text);
    beginTurn(id, `typed: ${text.length > 40 ? `${text.slice(0, 40)}…` : text}`);
    return id;
  } catch (e) {
    log(`cannot send the text: ${(e as Error).message}`, true);
    return null;
  }
}

function characterFromForm(): CharacterConfig {
  const modes =
    (($("mode-prompt") as HTMLInputElement).checked ? P.EMOTION_MODE_PROMPT : 0) |
    (($("mode-face") as HTMLInputElement).checked ? P.EMOTION_MODE_FACE : 0);
  return {
    persona: ($("persona") as HTMLTextAreaElement).value,
    voice: ($("voice") as HTMLSelectElement).value,
    emotion: ($("emotion") as HTMLSelectElement).value,
    intensity: Number(($("intensity") as HTMLInputElement).value),
    emotion_modes: modes,
  };
}

function applyCharacter(c: CharacterConfig): boolean {
  try {
    const info = session.serverInfo;
    if (info && [...c.persona].length > info.max_persona_chars)
      throw new Error(`the persona has ${[...c.persona].length} characters, the server takes ${info.max_persona_chars}`);
    session.setCharacter(c);
    return true;
  } catch (e) {
    log(`character not applied: ${(e as Error).message}`, true);
    return false;
  }
}

async function setHandsFree(on: boolean): Promise<void> {
  const btn = $("hands-free");
  if (on === handsFree) return;
  if (on) {
    if (!session.v2) {
      log("hands-free needs protocol version 2 (this server speaks version 1)", true);
      return;
    }
    const rates = session.serverInfo?.mic_rates ?? [16000];
    try {
      await mic.startStreaming((x, rate) => {
        if (!session.v2) return;
        if (rates.includes(rate)) session.sendMic(x, rate);
        else session.sendMic(resample(x, rate, 16000), 16000);
      });
    } catch (e) {
      log(`microphone: ${(e as Error).message}`, true);
      return;
    }
    handsFree = true;
    setVad("listening", "listening");
    log("hands-free on: talk; speaking over the answer interrupts it (use a headset or echo cancellation)");
  } else {
    handsFree = false;
    mic.stop();
    session.endMic();
    setVad("", "–");
    log("hands-free off");
  }
  btn.setAttribute("aria-pressed", String(handsFree));
  btn.textContent = `Hands-free: ${handsFree ? "on" : "off"}`;
}

function onServerInfo(info: P.ServerInfo): void {
  const fill = (id: string, names: string[], first: string) => {
    const sel = $<HTMLSelectElement>(id);
    const keep = sel.value;
    sel.replaceChildren(new Option(first, ""), ...names.map((n) => new Option(n, n)));
    if (names.includes(keep)) sel.value = keep;
  };
  fill("voice", info.voices, info.voices.length ? `default (${info.voices[0]})` : "default");
  fill("emotion", info.emotions.filter((e) => e !== "neutral"), "neutral");
  $<HTMLInputElement>("text").maxLength = info.max_text_chars;
  $<HTMLTextAreaElement>("persona").maxLength = info.max_persona_chars;
  $<HTMLInputElement>("context").maxLength = info.max_context_chars;
  $("v2-note").textContent = "";
  log(`server: ${info.voices.length} voices, ${info.emotions.length} emotions, mic ${info.mic_rates.join("/")} Hz`);
}

// --- controls --------------------------------------------------------------------------------------------------
async function sendWavFile(file: File): Promise<void> {
  try {
    const pcm = parseWav(await file.arrayBuffer());
    startTurn(resample(pcm.samples, pcm.rate, 16000), file.name);
  } catch (e) {
    log(`cannot read ${file.name}: ${(e as Error).message}`, true);
  }
}

function wireControls(): void {
  const wav = $<HTMLInputElement>("wav");
  wav.addEventListener("change", () => {
    const f = wav.files?.[0];
    if (f) void sendWavFile(f);
    wav.value = "";
  });
  const glb = $<HTMLInputElement>("glb");
  glb.addEventListener("change", async () => {
    const f = glb.files?.[0];
    if (!f) return;
    try {
      await avatar.load(await f.arrayBuffer());
      onAvatarLoaded(f.name);
    } catch (e) {
      log(`cannot load ${f.name}: ${(e as Error).message}`, true);
    }
    glb.value = "";
  });
  const ptt = $<HTMLButtonElement>("ptt");
  const down = async () => {
    if (mic.recording) return;
    try {
      ptt.classList.add("rec");
      $("ptt-label").textContent = "Recording… release to send";
      await mic.start();
    } catch (e) {
      log(`microphone: ${(e as Error).message}`, true);
      up();
    }
  };
  const up = () => {
    ptt.classList.remove("rec");
    $("ptt-label").textContent = "Hold to talk";
    if (!mic.recording) return;
    const audio = mic.stop();
    if (audio.length < 1600) log("too short: hold the button while you speak");
    else startTurn(audio, "microphone");
  };
  ptt.addEventListener("pointerdown", () => void down());
  ptt.addEventListener("pointerup", up);
  ptt.addEventListener("pointerleave", up);
  window.addEventListener("keydown", (e) => {
    const tag = document.activeElement?.tagName;
    if (e.code === "Space" && !e.repeat && tag !== "SELECT" && tag !== "INPUT" && tag !== "TEXTAREA" && !handsFree) {
      e.preventDefault();
      void down();
    }
  });
  window.addEventListener("keyup", (e) => {
    const tag = document.activeElement?.tagName;
    if (e.code === "Space" && tag !== "INPUT" && tag !== "TEXTAREA") up();
  });
  $("stop").addEventListener("click", () => {
    if (current && ends.needsCancel(current.id)) session.cancel(current.id);
    if (current) player.fadeOut(current.id);
    player.reset(0);
  });
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const box = $<HTMLInputElement>("text");
    if (box.value.trim() && sendText(box.value) !== null) box.value = "";
  });
  $("hands-free").addEventListener("click", () => void setHandsFree(!handsFree));
  $("apply-character").addEventListener("click", () => applyCharacter(characterFromForm()));
  $("context-form").addEventListener("submit", (e) => {
    e.preventDefault();
    session.setContext($<HTMLInputElement>("context").value);
  });
  const intensity = $<HTMLInputElement>("intensity");
  const emotionLive = () => {
    $("intensity-out").textContent = Number(intensity.value).toFixed(2);
    const name = $<HTMLSelectElement>("emotion").value || "neutral";
    if (session.v2) session.setEmotion(name, Number(intensity.value)); // live: blended on the face over 300 ms
  };
  intensity.addEventListener("input", () => ($("intensity-out").textContent = Number(intensity.value).toFixed(2)));
  intensity.addEventListener("change", emotionLive);
  $("emotion").addEventListener("change", emotionLive);
  $("replay").addEventListener("click", () => {
    if (!current) return;
    void audioCtx.resume();
    curves.clear();
    player.replay();
  });
  const add = $<HTMLSelectElement>("add-curve");
  add.addEventListener("change", () => {
    if (add.value && !curves.chosen.includes(add.value)) curves.setChosen([...curves.chosen, add.value]);
    add.value = "";
    drawLegend();
  });
  const unlock = () => {
    void audioCtx.resume();
  };
  window.addEventListener("pointerdown", unlock);
  window.addEventListener("keydown", unlock);
  audioCtx.addEventListener("statechange", () => $("sound-hint").classList.toggle("hidden", audioCtx.state === "running"));
  window.addEventListener("resize", () => avatar.resize());
  window.addEventListener("pagehide", () => session.close());
}

function drawLegend(): void {
  const box = $("legend");
  box.replaceChildren(
    ...curves.chosen.map((n, i) => {
      const s = document.createElement("span");
      s.title = "click to remove";
      const sw = document.createElement("i");
      sw.style.background = curves.color(i);
      s.append(sw, n);
      s.addEventListener("click", () => {
        curves.setChosen(curves.chosen.filter((c) => c !== n));
        drawLegend();
      });
      return s;
    }),
  );
}

function onWelcome(w: P.Welcome): void {
  // version 1 server: no characters, typed turns or hands-free (push-to-talk and wav still work)
  $("v2-note").textContent = w.version >= P.VERSION_2 ? "" : "(needs a protocol version 2 server)";
  for (const id of ["apply-character", "send-text", "hands-free"]) ($(id) as HTMLButtonElement).disabled = w.version < P.VERSION_2;
  outputRate = w.output_sample_rate;
  fps = w.fps;
  player.rate = outputRate;
  layoutKeys = new Map(w.layouts.map((l) => [l.layout_id, l.names.map(curveKey)]));
  layoutNames = new Map(w.layouts.map((l) => [l.layout_id, l.names]));
  // ARKit camelCase for the 52 expression curves (Live Link sends PascalCase), head/eye rotations as they come
  const names = (layoutNames.get(3) ?? layoutNames.get(2) ?? []).map((n, i) => (i < 52 ? n[0].toLowerCase() + n.slice(1) : n));
  const add = $<HTMLSelectElement>("add-curve");
  add.replaceChildren(new Option("add a curve…", ""), ...names.map((n) => new Option(n, n)));
  log(`connected: ${w.server_name}, session ${w.session_id}, layouts ${w.layouts.map((l) => P.LAYOUT_DIMS[l.layout_id]?.name).join(", ")}, ${fps} fps`);
}

function onAvatarLoaded(what: string): void {
  $("no-avatar").classList.add("hidden");
  const driven = [...(layoutKeys.get(3) ?? layoutKeys.get(2) ?? [])].filter((k) => avatar.morphs.has(k)).length;
  log(`avatar ${what}: ${avatar.morphNames.length} morph targets${driven ? `, ${driven} driven by the stream` : ""}`);
}

// --- the frame loop: face at the audio playhead ----------------------------------------------------------------
const scratch = new Float32Array(256);

function faceAt(t: Turn, samples: number): { keys: string[]; values: Float32Array; flag: FrameFlag } | null {
  const tr = preferredTrack(t);
  if (!tr) return null;
  const keys = layoutKeys.get(tr[0]);
  if (!keys) return null;
  const out = scratch.subarray(0, tr[1].dims);
  const flag = tr[1].at(samples, out);
  if (flag === FrameFlag.Empty) return null;
  return { keys, values: Float32Array.from(out), flag };
}

function frame(): void {
  if (current && player.turnId === current.id && player.started) {
    const ph = player.playhead();
    const f = faceAt(current, ph);
    if (f) {
      if (f.flag === FrameFlag.Held && player.active && player.frozen === null) heldFrames++;
      lastValues = f;
      avatar.setCurves(f.keys, f.values);
      if (player.frozen === null) {
        const idx = new Map(f.keys.map((k, i) => [k, i]));
        curves.push(ph / outputRate, (n) => {
          const i = idx.get(curveKey(n));
          return i === undefined ? undefined : f.values[i];
        });
      }
    }
  }
  if (idle && !(current && player.turnId === current.id && player.started && player.active)) {
    const keys = layoutKeys.get(idle.layout);
    if (keys) {
      avatar.setCurves(keys, idle.values); // between turns: the server's idle face (blinks, breathing, listening)
      lastValues = { keys, values: idle.values };
      idleShown++;
    }
  }
  if (avatar.loaded) avatar.render();
  curves.draw();
  requestAnimationFrame(frame);
}

// --- hooks for tests and the console (window.a2llm) ------------------------------------------------------------
const hooks = {
  /** Is the page connected, with an avatar? */
  ready: () => session?.ready === true && avatar.loaded,
  /** A JSON summary of every turn. */
  turns: () =>
    [...turns.values()].map((t) => ({
      id: t.id,
      text: t.text,
      status: t.end ? t.end.status : t.failure ? P.TurnStatus.FAILED : null,
      failure: t.failure,
      ttft_s: t.end?.ttft_s ?? null,
      ttfa_s: t.end?.ttfa_s ?? null,
      rtf: t.end?.rtf ?? null,
      face_frames_reported: t.end?.face_frames ?? null,
      seqs: t.seqs,
      audio_samples: t.audioSamples,
      first_audio_ms: t.firstAudioMs,
      errors: t.errors,
      layouts: Object.fromEntries([...t.tracks].map(([lid, tr]) => [lid, { arrivals: tr.arrivals, count: tr.count }])),
    })),
  /** Answer samples played of the current turn. */
  playhead: () => player.playhead(),
  playing: () => player.active,
  /** Freeze the face at an answer sample (null: follow the audio again). */
  seek: (samples: number | null) => {
    player.frozen = samples;
  },
  /** A curve's value (by ARKit or Live Link name) in the current turn at an answer sample. */
  curveAt: (name: string, samples: number) => {
    if (!current) return null;
    const f = faceAt(current, samples);
    const i = f ? f.keys.indexOf(curveKey(name)) : -1;
    return f && i >= 0 ? f.values[i] : null;
  },
  /** The shown value of a curve now. */
  shown: (name: string) => {
    const i = lastValues ? lastValues.keys.indexOf(curveKey(name)) : -1;
    return lastValues && i >= 0 ? lastValues.values[i] : null;
  },
  mouthRect: () => avatar.mouthRect(),
  decodeErrors: () => decodeErrors,
  /** What the page sent: UserAudio messages per turn id, Cancels. */
  sent: () => ({ chunks: Object.fromEntries(session.sentChunks), cancels: session.cancelsSent }),
  audioState: () => audioCtx.state,
  // version 2
  version: () => session?.version ?? 0,
  serverInfo: () => session?.serverInfo ?? null,
  speech: () => speechLog,
  acks: () => acks,
  idle: () => ({ received: idle?.count ?? 0, shown: idleShown }),
  handsFree: (on: boolean) => setHandsFree(on),
  sendText: (text: string) => sendText(text),
  setCharacter: (c: CharacterConfig) => applyCharacter(c),
  setContext: (text: string) => session.setContext(text),
  sentV2: () => ({ texts: session.textsSent, mic: session.micChunksSent }),
  fadedAt: () => player.fadedAt,
  micRate: () => session?.micStreamRate ?? 0,
};
(window as unknown as { a2llm: typeof hooks }).a2llm = hooks;

// --- start -----------------------------------------------------------------------------------------------------
async function main(): Promise<void> {
  wireControls();
  drawLegend();
  $("sound-hint").classList.toggle("hidden", audioCtx.state === "running");
  let cfg: { ws: string; head: string | null } = { ws: "/ws", head: null };
  try {
    const r = await fetch("./config.json");
    if (r.ok) cfg = await r.json();
  } catch {
    /* served without the gateway: defaults */
  }
  session = new BridgeSession(wsUrl(cfg.ws), {
    onState: (s, detail) => {
      const pill = $("status");
      pill.textContent = s === "open" ? `connected · ${detail}` : s === "connecting" ? "connecting…" : `disconnected (${detail}), retrying`;
      pill.className = `pill ${s}`;
    },
    onWelcome,
    onMessage,
    onServerInfo,
    onDecodeError: (e) => {
      decodeErrors.push(e.message);
      log(`undecodable message: ${e.message}`, true);
    },
  });
  session.connect();
  if (cfg.head) {
    try {
      await avatar.load(cfg.head);
      onAvatarLoaded(cfg.head);
    } catch (e) {
      log(`cannot load the avatar ${cfg.head}: ${(e as Error).message}`, true);
      $("no-avatar").classList.remove("hidden");
    }
  } else {
    $("no-avatar").classList.remove("hidden");
  }
  requestAnimationFrame(frame);
}

void main();
