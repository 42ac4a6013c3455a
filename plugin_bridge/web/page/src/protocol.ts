// The a2llm bridge wire protocol, versions 1 and 2, in the browser (spec: plugin_bridge/PROTOCOL.md, version 2 in
// its section 10; reference decoder: plugin_bridge/protocol.py). One WebSocket binary message = one protocol message in its concatenated form:
// a 32-byte little-endian header followed by the payload.
//
//   header: 0 char[4] "A2LM" | 4 u16 version | 6 u16 kind | 8 u32 turn_id | 12 u32 payload_length
//           16 u64 seq | 24 u64 send_time_us
//
// Decoded messages use the spec's (snake_case) field names, the same as fixtures/index.json and the Python
// dataclasses; the header's version is `header_version` (Welcome has a payload field `version`). u64 fields become
// JS numbers (exact below 2^53). decode() throws only ProtocolError, whose `code`
// is the ErrorCode a server would answer with, checked in the same order as the Python decoder.

export const MAGIC = [0x41, 0x32, 0x4c, 0x4d]; // "A2LM"
export const VERSION = 1; // header version of the version 1 kinds (and of Hello, always)
export const VERSION_2 = 2; // game characters (PROTOCOL.md §10)
export const MAX_VERSION = VERSION_2;
export const HEADER_SIZE = 32;
export const MAX_PAYLOAD = 4 * 1024 * 1024;
export const MAX_ERROR_MESSAGE = 1024;
export const MIN_SAMPLE_RATE = 8000;
export const MAX_SAMPLE_RATE = 192000;

export enum Kind {
  HELLO = 1,
  WELCOME = 2,
  USER_AUDIO = 3,
  TEXT_DELTA = 4,
  AUDIO_CHUNK = 5,
  FACE_FRAMES = 6,
  TURN_END = 7,
  CANCEL = 8,
  HEARTBEAT = 9,
  ERROR = 10,
  BYE = 11,
  // version 2: only with header version >= 2
  CHARACTER = 12,
  SERVER_INFO = 13,
  CONFIG_ACK = 14,
  GAME_CONTEXT = 15,
  USER_TEXT = 16,
  SET_EMOTION = 17,
  MIC_AUDIO = 18,
  SPEECH_STARTED = 19,
  SPEECH_ENDED = 20,
  BARGE_IN = 21,
}

/** The lowest header version a kind exists in. */
export const minVersion = (k: Kind): number => (k >= Kind.CHARACTER ? VERSION_2 : VERSION);

export enum ErrorCode {
  BAD_MAGIC = 1,
  UNSUPPORTED_VERSION = 2,
  UNKNOWN_KIND = 3,
  BAD_LENGTH = 4,
  PAYLOAD_TOO_LARGE = 5,
  NON_FINITE = 6,
  BAD_VALUE = 7,
  BAD_UTF8 = 8,
  BAD_FRAMING = 9,
  NOT_WELCOMED = 20,
  SESSION_EXPIRED = 21,
  SERVER_BUSY = 22,
  TURN_IN_PROGRESS = 23,
  UNKNOWN_TURN = 24,
  CLIENT_TOO_SLOW = 25,
  TURN_FAILED = 26,
  SHUTTING_DOWN = 27,
  AUDIO_TOO_LONG = 28,
  INTERNAL = 39,
  // version 2
  UNKNOWN_VOICE = 40,
  UNKNOWN_EMOTION = 41,
  TEXT_TOO_LONG = 42,
  BAD_TEXT = 43,
  UNSUPPORTED_RATE = 44,
}

export enum AudioFormat {
  PCM16 = 1,
  F32 = 2,
}

export enum Capability {
  TEXT = 1,
  AUDIO = 2,
  FACE = 4,
  LIVELINK_UDP = 8,
  IDLE_FACE = 16, // version 2: idle face frames (FaceFrames with turn_id 0) between turns
}

export const EMOTION_MODE_PROMPT = 1; // the emotion is an instruction in the prompt (the A2-LLM way)
export const EMOTION_MODE_FACE = 2; // ... a bounded offset/gain on the ARKit output (the Audio2Face way)
export const CONFIG_ACK_CONVERSATION_RESET = 1;
export const MIC_FLAG_END_OF_STREAM = 1;
export const SERVER_TURN_BIT = 0x80000000; // turns the server starts itself (hands-free utterances)

export enum EmotionScope {
  SESSION = 0,
  NEXT_TURN = 1,
}

export enum SpeechEndReason {
  SILENCE = 0,
  MAX_LENGTH = 1,
  END_OF_STREAM = 2,
}

export enum TurnStatus {
  COMPLETED = 0,
  CANCELLED = 1,
  FAILED = 2,
}

/** Face layouts by wire id: name and number of curves (a2llm_rt/face/layouts.py). */
export const LAYOUT_DIMS: Record<number, { name: string; dims: number }> = {
  1: { name: "flame58", dims: 58 },
  2: { name: "arkit52", dims: 52 },
  3: { name: "livelink61", dims: 61 },
};

export const AUDIO_FLAG_END_OF_UTTERANCE = 1;

export class ProtocolError extends Error {
  constructor(
    public readonly code: ErrorCode,
    message: string,
  ) {
    super(`${ErrorCode[code]}: ${message}`);
    this.name = "ProtocolError";
  }
}

export interface Header {
  /** the header's protocol version (1, or 2 in a version 2 session) */
  header_version: number;
  turn_id: number;
  seq: number;
  send_time_us: number;
}

export interface Hello extends Header {
  kind: Kind.HELLO;
  min_version: number;
  max_version: number;
  capabilities: number;
  layouts: number[];
  client_name: string;
}

export interface LayoutInfo {
  layout_id: number;
  names: string[];
}

export interface Welcome extends Header {
  kind: Kind.WELCOME;
  version: number;
  session_id: number;
  capabilities: number;
  heartbeat_ms: number;
  session_timeout_ms: number;
  input_sample_rate: number;
  output_sample_rate: number;
  fps: number;
  max_payload: number;
  layouts: LayoutInfo[];
  server_name: string;
}

interface AudioBody extends Header {
  /** Int16Array for PCM16, Float32Array for F32; mono. */
  samples: Int16Array | Float32Array;
  format: AudioFormat;
  sample_rate: number;
  sample_offset: number;
}

export interface UserAudio extends AudioBody {
  kind: Kind.USER_AUDIO;
  end_of_utterance: boolean;
}

export interface AudioChunk extends AudioBody {
  kind: Kind.AUDIO_CHUNK;
}

export interface TextDelta extends Header {
  kind: Kind.TEXT_DELTA;
  byte_offset: number;
  text: string;
}

export interface FaceFrames extends Header {
  kind: Kind.FACE_FRAMES;
  first_frame: number;
  fps: number;
  layout_id: number;
  n_frames: number;
  dims: number;
  /** [n_frames * dims] row-major. */
  values: Float32Array;
}

export interface TurnEnd extends Header {
  kind: Kind.TURN_END;
  status: TurnStatus;
  ttft_s: number;
  ttfa_s: number;
  first_audio_s: number;
  rtf: number;
  total_s: number;
  text_bytes: number;
  text_deltas: number;
  audio_samples: number;
  audio_chunks: number;
  face_frames: number;
}

export interface Cancel extends Header {
  kind: Kind.CANCEL;
}

export interface Bye extends Header {
  kind: Kind.BYE;
}

export interface Heartbeat extends Header {
  kind: Kind.HEARTBEAT;
  time_us: number;
  echo_us: number;
}

export interface ErrorMsg extends Header {
  kind: Kind.ERROR;
  code: number;
  message: string;
}

// --- version 2 (PROTOCOL.md §10) ---
export interface Character extends Header {
  kind: Kind.CHARACTER;
  emotion_modes: number;
  intensity: number;
  voice: string;
  emotion: string;
  persona: string;
}

export interface ServerInfo extends Header {
  kind: Kind.SERVER_INFO;
  max_persona_chars: number;
  max_context_chars: number;
  max_text_chars: number;
  vad_min_speech_ms: number;
  vad_min_silence_ms: number;
  vad_barge_in_ms: number;
  mic_rates: number[];
  voices: string[];
  emotions: string[];
}

export interface ConfigAck extends Header {
  kind: Kind.CONFIG_ACK;
  acked_kind: number;
  flags: number;
}

export interface GameContext extends Header {
  kind: Kind.GAME_CONTEXT;
  text: string;
}

export interface UserText extends Header {
  kind: Kind.USER_TEXT;
  text: string;
}

export interface SetEmotion extends Header {
  kind: Kind.SET_EMOTION;
  scope: EmotionScope;
  intensity: number;
  name: string;
}

export interface MicAudio extends AudioBody {
  kind: Kind.MIC_AUDIO;
  end_of_stream: boolean;
}

export interface SpeechStarted extends Header {
  kind: Kind.SPEECH_STARTED;
  start_sample: number;
  detected_sample: number;
}

export interface SpeechEnded extends Header {
  kind: Kind.SPEECH_ENDED;
  start_sample: number;
  end_sample: number;
  detected_sample: number;
  reason: SpeechEndReason;
}

export interface BargeIn extends Header {
  kind: Kind.BARGE_IN;
  speech_sample: number;
  detected_sample: number;
}

export type Message =
  | Character
  | ServerInfo
  | ConfigAck
  | GameContext
  | UserText
  | SetEmotion
  | MicAudio
  | SpeechStarted
  | SpeechEnded
  | BargeIn
  | Hello
  | Welcome
  | UserAudio
  | TextDelta
  | AudioChunk
  | FaceFrames
  | TurnEnd
  | Cancel
  | Heartbeat
  | ErrorMsg
  | Bye;

// --- reading ---------------------------------------------------------------------------------------------------
const utf8 = new TextDecoder("utf-8", { fatal: true });
const utf8enc = new TextEncoder();

class Reader {
  pos = 0;
  private readonly view: DataView;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(n: number): number {
    if (n < 0 || this.pos + n > this.bytes.length) {
      throw new ProtocolError(
        ErrorCode.BAD_LENGTH,
        `${this.what}: needs ${n} more bytes at offset ${this.pos}, payload has ${this.bytes.length}`,
      );
    }
    const p = this.pos;
    this.pos += n;
    return p;
  }
  u8(): number {
    return this.view.getUint8(this.need(1));
  }
  u16(): number {
    return this.view.getUint16(this.need(2), true);
  }
  u32(): number {
    return this.view.getUint32(this.need(4), true);
  }
  u64(): number {
    return Number(this.view.getBigUint64(this.need(8), true));
  }
  f32(): number {
    return this.view.getFloat32(this.need(4), true);
  }
  take(n: number): Uint8Array {
    const p = this.need(n);
    return this.bytes.subarray(p, p + n);
  }
  utf8(n: number, name: string): string {
    const raw = this.take(n);
    try {
      return utf8.decode(raw);
    } catch {
      throw new ProtocolError(ErrorCode.BAD_UTF8, `${this.what}: ${name} is not valid UTF-8`);
    }
  }
  /** A copy (aligned) of `count` little-endian elements. */
  f32array(count: number): Float32Array {
    if (count > this.bytes.length) throw new ProtocolError(ErrorCode.BAD_LENGTH, `${this.what}: count ${count}`);
    const p = this.need(count * 4);
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = this.view.getFloat32(p + 4 * i, true);
    return out;
  }
  i16array(count: number): Int16Array {
    if (count > this.bytes.length) throw new ProtocolError(ErrorCode.BAD_LENGTH, `${this.what}: count ${count}`);
    const p = this.need(count * 2);
    const out = new Int16Array(count);
    for (let i = 0; i < count; i++) out[i] = this.view.getInt16(p + 2 * i, true);
    return out;
  }
  finish(): void {
    if (this.pos !== this.bytes.length) {
      throw new ProtocolError(
        ErrorCode.BAD_LENGTH,
        `${this.what}: ${this.bytes.length - this.pos} trailing bytes after offset ${this.pos}`,
      );
    }
  }
}

function check(cond: boolean, code: ErrorCode, message: string): asserts cond {
  if (!cond) throw new ProtocolError(code, message);
}

function finite(v: number, name: string): number {
  check(Number.isFinite(v), ErrorCode.NON_FINITE, `${name}=${v} is not finite`);
  return v;
}

function finiteArray(a: Float32Array, name: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new ProtocolError(ErrorCode.NON_FINITE, `${name}: non-finite value at flat index ${i}`);
  }
}

function rate(v: number, name: string): number {
  check(v >= MIN_SAMPLE_RATE && v <= MAX_SAMPLE_RATE, ErrorCode.BAD_VALUE, `${name}=${v} out of range`);
  return v;
}

function readAudio(r: Reader): Omit<AudioBody, keyof Header> & { flags: number } {
  const format = r.u8();
  const flags = r.u8();
  const channels = r.u16();
  const sample_rate = r.u32();
  const sample_offset = r.u64();
  const n = r.u32();
  check(channels === 1, ErrorCode.BAD_VALUE, `channels=${channels}, only mono (1) is supported`);
  let samples: Int16Array | Float32Array;
  if (format === AudioFormat.PCM16) samples = r.i16array(n);
  else if (format === AudioFormat.F32) samples = r.f32array(n);
  else throw new ProtocolError(ErrorCode.BAD_VALUE, `unknown audio format ${format}`);
  r.finish();
  if (samples instanceof Float32Array) finiteArray(samples, "audio samples");
  rate(sample_rate, "sample_rate");
  return { samples, format, sample_rate, sample_offset, flags };
}

/** protocol._intensity (the message's validation after the parse): finite, in [0, 1]. */
function intensity(v: number): number {
  check(finite(v, "intensity") >= 0 && v <= 1, ErrorCode.BAD_VALUE, `intensity=${v} must be in [0, 1]`);
  return v;
}

const name8 = (r: Reader, what: string) => r.utf8(r.u8(), what);
const text32 = (r: Reader, what: string) => r.utf8(r.u32(), what);
const utf8Length = (s: string) => utf8enc.encode(s).length;

function parseV2(kind: Kind, r: Reader, h: Header): Message {
  switch (kind) {
    case Kind.CHARACTER: {
      const emotion_modes = r.u8();
      const r1 = r.u8();
      const r2 = r.u16();
      const inten = r.f32();
      check(r1 === 0 && r2 === 0, ErrorCode.BAD_VALUE, "Character: reserved fields are not 0");
      check((emotion_modes & ~3) === 0, ErrorCode.BAD_VALUE, `Character: unknown emotion_modes bits ${emotion_modes}`);
      check(Number.isFinite(inten), ErrorCode.NON_FINITE, "Character: intensity is not finite");
      const voice = name8(r, "voice");
      const emotion = name8(r, "emotion");
      const persona = text32(r, "persona");
      r.finish();
      intensity(inten);
      check(utf8Length(persona) <= MAX_PAYLOAD - 16 - 2 * 255, ErrorCode.BAD_VALUE, "persona is too long");
      return { kind, ...h, emotion_modes, intensity: inten, voice, emotion, persona };
    }
    case Kind.SERVER_INFO: {
      const max_persona_chars = r.u32();
      const max_context_chars = r.u32();
      const max_text_chars = r.u32();
      const vad_min_speech_ms = r.u32();
      const vad_min_silence_ms = r.u32();
      const vad_barge_in_ms = r.u32();
      const nRates = r.u8();
      const raw = r.take(4 * nRates);
      const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      const mic_rates = Array.from({ length: nRates }, (_, i) => dv.getUint32(4 * i, true));
      const lists: string[][] = [];
      for (const what of ["voice", "emotion"]) {
        const n = r.u8();
        const names: string[] = [];
        for (let i = 0; i < n; i++) names.push(name8(r, what));
        lists.push(names);
      }
      r.finish();
      for (const rt of mic_rates) rate(rt, "mic rate");
      for (const [i, what] of ["voices", "emotions"].entries())
        for (const n of lists[i]) check(n.length > 0, ErrorCode.BAD_VALUE, `an empty name in ${what}`);
      return {
        kind, ...h, max_persona_chars, max_context_chars, max_text_chars, vad_min_speech_ms, vad_min_silence_ms,
        vad_barge_in_ms, mic_rates, voices: lists[0], emotions: lists[1],
      }; // prettier-ignore
    }
    case Kind.CONFIG_ACK: {
      const acked_kind = r.u16();
      const flags = r.u16();
      r.finish();
      check(
        [Kind.CHARACTER, Kind.GAME_CONTEXT, Kind.SET_EMOTION].includes(acked_kind),
        ErrorCode.BAD_VALUE,
        `ConfigAck for kind ${acked_kind}`,
      );
      check((flags & ~CONFIG_ACK_CONVERSATION_RESET) === 0, ErrorCode.BAD_VALUE, `unknown ConfigAck flags ${flags}`);
      return { kind, ...h, acked_kind, flags };
    }
    case Kind.GAME_CONTEXT:
    case Kind.USER_TEXT: {
      const text = text32(r, "text");
      r.finish();
      return { kind, ...h, text };
    }
    case Kind.SET_EMOTION: {
      const scope = r.u8();
      const r1 = r.u8();
      const r2 = r.u16();
      const inten = r.f32();
      check(r1 === 0 && r2 === 0, ErrorCode.BAD_VALUE, "SetEmotion: reserved fields are not 0");
      check(scope in EmotionScope, ErrorCode.BAD_VALUE, `SetEmotion: unknown scope ${scope}`);
      check(Number.isFinite(inten), ErrorCode.NON_FINITE, "SetEmotion: intensity is not finite");
      const name = name8(r, "emotion name");
      r.finish();
      intensity(inten);
      check(name.length > 0, ErrorCode.BAD_VALUE, "empty emotion name");
      return { kind, ...h, scope, intensity: inten, name };
    }
    case Kind.MIC_AUDIO: {
      const { flags, ...a } = readAudio(r);
      check((flags & ~MIC_FLAG_END_OF_STREAM) === 0, ErrorCode.BAD_VALUE, `unknown MicAudio flags ${flags}`);
      return { kind, ...h, ...a, end_of_stream: (flags & MIC_FLAG_END_OF_STREAM) !== 0 };
    }
    case Kind.SPEECH_STARTED: {
      const start_sample = r.u64();
      const detected_sample = r.u64();
      r.finish();
      return { kind, ...h, start_sample, detected_sample };
    }
    case Kind.SPEECH_ENDED: {
      const start_sample = r.u64();
      const end_sample = r.u64();
      const detected_sample = r.u64();
      const reason = r.u8();
      const rs = [r.u8(), r.u8(), r.u8()];
      check(rs.every((x) => x === 0), ErrorCode.BAD_VALUE, "SpeechEnded: reserved bytes are not 0");
      check(reason in SpeechEndReason, ErrorCode.BAD_VALUE, `SpeechEnded: unknown reason ${reason}`);
      r.finish();
      return { kind, ...h, start_sample, end_sample, detected_sample, reason };
    }
    case Kind.BARGE_IN: {
      const speech_sample = r.u64();
      const detected_sample = r.u64();
      r.finish();
      return { kind, ...h, speech_sample, detected_sample };
    }
    default:
      throw new ProtocolError(ErrorCode.UNKNOWN_KIND, `unknown message kind ${kind}`);
  }
}

function parsePayload(kind: Kind, r: Reader, h: Header): Message {
  if (kind >= Kind.CHARACTER) return parseV2(kind, r, h);
  switch (kind) {
    case Kind.HELLO: {
      const min_version = r.u16();
      const max_version = r.u16();
      const capabilities = r.u32();
      const layouts = Array.from(r.take(r.u8()));
      const client_name = r.utf8(r.u8(), "client_name");
      r.finish();
      check(min_version <= max_version, ErrorCode.BAD_VALUE, "min_version > max_version");
      return { kind, ...h, min_version, max_version, capabilities, layouts, client_name };
    }
    case Kind.WELCOME: {
      const version = r.u16();
      const reserved = r.u16();
      const session_id = r.u32();
      const capabilities = r.u32();
      const heartbeat_ms = r.u32();
      const session_timeout_ms = r.u32();
      const input_sample_rate = r.u32();
      const output_sample_rate = r.u32();
      const fps = r.f32();
      const max_payload = r.u32();
      const n = r.u8();
      check(reserved === 0, ErrorCode.BAD_VALUE, "Welcome: reserved field is not 0");
      const layouts: LayoutInfo[] = [];
      for (let i = 0; i < n; i++) {
        const layout_id = r.u8();
        const count = r.u16();
        const names: string[] = [];
        for (let j = 0; j < count; j++) names.push(r.utf8(r.u8(), "curve name"));
        layouts.push({ layout_id, names });
      }
      const server_name = r.utf8(r.u8(), "server_name");
      r.finish();
      rate(input_sample_rate, "input_sample_rate");
      rate(output_sample_rate, "output_sample_rate");
      check(finite(fps, "fps") > 0, ErrorCode.BAD_VALUE, `fps=${fps} must be > 0`);
      return {
        kind, ...h, version, session_id, capabilities, heartbeat_ms, session_timeout_ms, input_sample_rate,
        output_sample_rate, fps, max_payload, layouts, server_name,
      }; // prettier-ignore
    }
    case Kind.USER_AUDIO: {
      const { flags, ...a } = readAudio(r);
      check((flags & ~AUDIO_FLAG_END_OF_UTTERANCE) === 0, ErrorCode.BAD_VALUE, `unknown UserAudio flags ${flags}`);
      return { kind, ...h, ...a, end_of_utterance: (flags & AUDIO_FLAG_END_OF_UTTERANCE) !== 0 };
    }
    case Kind.AUDIO_CHUNK: {
      const { flags, ...a } = readAudio(r);
      check(flags === 0, ErrorCode.BAD_VALUE, `AudioChunk flags must be 0, got ${flags}`);
      return { kind, ...h, ...a };
    }
    case Kind.TEXT_DELTA: {
      const byte_offset = r.u32();
      const text = r.utf8(r.u32(), "text");
      r.finish();
      return { kind, ...h, byte_offset, text };
    }
    case Kind.FACE_FRAMES: {
      const first_frame = r.u64();
      const fps = r.f32();
      const layout_id = r.u8();
      const reserved = r.u8();
      const dims = r.u16();
      const n_frames = r.u32();
      check(reserved === 0, ErrorCode.BAD_VALUE, "FaceFrames: reserved byte is not 0");
      check(Number.isFinite(fps), ErrorCode.NON_FINITE, "FaceFrames: fps is not finite");
      const lay = LAYOUT_DIMS[layout_id];
      check(lay !== undefined, ErrorCode.BAD_VALUE, `FaceFrames: unknown layout_id ${layout_id}`);
      check(dims === lay.dims, ErrorCode.BAD_VALUE, `FaceFrames: ${lay.name} has ${lay.dims} dims, message says ${dims}`);
      check(n_frames >= 1, ErrorCode.BAD_VALUE, "FaceFrames: n_frames is 0");
      const values = r.f32array(n_frames * dims);
      r.finish();
      check(fps > 0, ErrorCode.BAD_VALUE, `fps=${fps} must be > 0`);
      finiteArray(values, "face values");
      return { kind, ...h, first_frame, fps, layout_id, n_frames, dims, values };
    }
    case Kind.TURN_END: {
      const status = r.u8();
      const r1 = r.u8();
      const r2 = r.u16();
      const ttft_s = r.f32();
      const ttfa_s = r.f32();
      const first_audio_s = r.f32();
      const rtf = r.f32();
      const total_s = r.f32();
      const text_bytes = r.u32();
      const text_deltas = r.u32();
      const audio_samples = r.u64();
      const audio_chunks = r.u32();
      const face_frames = r.u32();
      check(r1 === 0 && r2 === 0, ErrorCode.BAD_VALUE, "TurnEnd: reserved fields are not 0");
      r.finish();
      check(status in TurnStatus, ErrorCode.BAD_VALUE, `unknown turn status ${status}`);
      for (const [k, v] of Object.entries({ ttft_s, ttfa_s, first_audio_s, rtf, total_s })) finite(v, k);
      return {
        kind, ...h, status, ttft_s, ttfa_s, first_audio_s, rtf, total_s, text_bytes, text_deltas, audio_samples,
        audio_chunks, face_frames,
      }; // prettier-ignore
    }
    case Kind.CANCEL:
    case Kind.BYE:
      r.finish();
      return { kind, ...h };
    case Kind.HEARTBEAT: {
      const time_us = r.u64();
      const echo_us = r.u64();
      r.finish();
      return { kind, ...h, time_us, echo_us };
    }
    case Kind.ERROR: {
      const code = r.u16();
      const n = r.u16();
      check(n <= MAX_ERROR_MESSAGE, ErrorCode.BAD_VALUE, `Error message of ${n} bytes > ${MAX_ERROR_MESSAGE}`);
      const message = r.utf8(n, "message");
      r.finish();
      return { kind, ...h, code, message };
    }
  }
  throw new ProtocolError(ErrorCode.UNKNOWN_KIND, `unknown message kind ${kind}`);
}

/** Decode one message in its concatenated form (header + payload). Throws only ProtocolError. */
export function decode(data: ArrayBuffer | Uint8Array): Message {
  const buf = data instanceof Uint8Array ? data : new Uint8Array(data);
  check(buf.length >= HEADER_SIZE, ErrorCode.BAD_LENGTH, `message is ${buf.length} bytes, shorter than the header`);
  const v = new DataView(buf.buffer, buf.byteOffset, HEADER_SIZE);
  const magicOk = MAGIC.every((b, i) => buf[i] === b);
  check(magicOk, ErrorCode.BAD_MAGIC, "bad magic, expected A2LM");
  const version = v.getUint16(4, true);
  check(
    version >= VERSION && version <= MAX_VERSION,
    ErrorCode.UNSUPPORTED_VERSION,
    `protocol version ${version} is not supported`,
  );
  const kind = v.getUint16(6, true);
  check(kind in Kind && typeof Kind[kind] === "string", ErrorCode.UNKNOWN_KIND, `unknown message kind ${kind}`);
  check(
    version >= minVersion(kind),
    ErrorCode.UNKNOWN_KIND,
    `message kind ${kind} does not exist in protocol version ${version}`,
  );
  const length = v.getUint32(12, true);
  check(length <= MAX_PAYLOAD, ErrorCode.PAYLOAD_TOO_LARGE, `payload_length ${length} > ${MAX_PAYLOAD}`);
  check(
    buf.length === HEADER_SIZE + length,
    ErrorCode.BAD_LENGTH,
    `payload is ${buf.length - HEADER_SIZE} bytes, header says ${length}`,
  );
  const h: Header = {
    header_version: version,
    turn_id: v.getUint32(8, true),
    seq: Number(v.getBigUint64(16, true)),
    send_time_us: Number(v.getBigUint64(24, true)),
  };
  return parsePayload(kind as Kind, new Reader(buf.subarray(HEADER_SIZE), Kind[kind]), h);
}

// --- writing (the client messages the page sends) --------------------------------------------------------------
class Writer {
  private bytes = new Uint8Array(64);
  private view = new DataView(this.bytes.buffer);
  len = 0;
  private grow(n: number): number {
    if (this.len + n > this.bytes.length) {
      const b = new Uint8Array(Math.max(this.bytes.length * 2, this.len + n));
      b.set(this.bytes);
      this.bytes = b;
      this.view = new DataView(b.buffer);
    }
    const p = this.len;
    this.len += n;
    return p;
  }
  u8(x: number): this {
    this.view.setUint8(this.grow(1), x);
    return this;
  }
  u16(x: number): this {
    this.view.setUint16(this.grow(2), x, true);
    return this;
  }
  u32(x: number): this {
    this.view.setUint32(this.grow(4), x, true);
    return this;
  }
  u64(x: number): this {
    this.view.setBigUint64(this.grow(8), BigInt(Math.floor(x)), true);
    return this;
  }
  raw(b: Uint8Array): this {
    const p = this.grow(b.length); // grow first: it may replace this.bytes
    this.bytes.set(b, p);
    return this;
  }
  f32(x: number): this {
    this.view.setFloat32(this.grow(4), x, true);
    return this;
  }
  f32s(a: Float32Array): this {
    const p = this.grow(a.length * 4);
    for (let i = 0; i < a.length; i++) this.view.setFloat32(p + 4 * i, a[i], true);
    return this;
  }
  i16s(a: Int16Array): this {
    const p = this.grow(a.length * 2);
    for (let i = 0; i < a.length; i++) this.view.setInt16(p + 2 * i, a[i], true);
    return this;
  }
  result(): Uint8Array {
    return this.bytes.slice(0, this.len);
  }
}

const DEFAULT_HEADER: Header = { header_version: VERSION, turn_id: 0, seq: 0, send_time_us: 0 };

function withHeader(kind: Kind, payload: Uint8Array, h: Partial<Header>): Uint8Array {
  const hh = { ...DEFAULT_HEADER, ...h };
  check(payload.length <= MAX_PAYLOAD, ErrorCode.PAYLOAD_TOO_LARGE, `payload ${payload.length} > ${MAX_PAYLOAD}`);
  const w = new Writer()
    .raw(new Uint8Array(MAGIC))
    .u16(Math.max(hh.header_version, minVersion(kind)))
    .u16(kind)
    .u32(hh.turn_id)
    .u32(payload.length)
    .u64(hh.seq)
    .u64(hh.send_time_us);
  return w.raw(payload).result();
}

function nameBytes(s: string, what: string): Uint8Array {
  const b = utf8enc.encode(s);
  check(b.length <= 255, ErrorCode.BAD_VALUE, `${what} is longer than 255 bytes of UTF-8`);
  return b;
}

export function encodeHello(
  o: { layouts: number[]; capabilities?: number; client_name?: string; min_version?: number; max_version?: number },
  h: Partial<Header> = {},
): Uint8Array {
  const name = nameBytes(o.client_name ?? "", "client_name");
  const w = new Writer()
    .u16(o.min_version ?? VERSION)
    .u16(o.max_version ?? VERSION)
    .u32(o.capabilities ?? Capability.TEXT | Capability.AUDIO | Capability.FACE)
    .u8(o.layouts.length)
    .raw(Uint8Array.from(o.layouts))
    .u8(name.length)
    .raw(name);
  return withHeader(Kind.HELLO, w.result(), h);
}

/** UserAudio with PCM16 samples (the page always sends PCM16). */
export function encodeUserAudio(
  samples: Int16Array,
  sample_rate: number,
  sample_offset: number,
  end_of_utterance: boolean,
  h: Partial<Header>,
): Uint8Array {
  rate(sample_rate, "sample_rate");
  const w = new Writer()
    .u8(AudioFormat.PCM16)
    .u8(end_of_utterance ? AUDIO_FLAG_END_OF_UTTERANCE : 0)
    .u16(1)
    .u32(sample_rate)
    .u64(sample_offset)
    .u32(samples.length)
    .i16s(samples);
  return withHeader(Kind.USER_AUDIO, w.result(), h);
}

// --- version 2 client messages (PROTOCOL.md §10) -----------------------------------------------------------------
function checkIntensity(v: number): void {
  check(Number.isFinite(v), ErrorCode.NON_FINITE, `intensity=${v} is not finite`);
  check(v >= 0 && v <= 1, ErrorCode.BAD_VALUE, `intensity=${v} must be in [0, 1]`);
}

const textBytes = (s: string) => utf8enc.encode(s);

/** Character (§10.4): the session's whole character configuration; empty strings = the server's defaults. */
export function encodeCharacter(
  o: { persona?: string; voice?: string; emotion?: string; intensity?: number; emotion_modes?: number },
  h: Partial<Header> = {},
): Uint8Array {
  const modes = o.emotion_modes ?? EMOTION_MODE_PROMPT | EMOTION_MODE_FACE;
  check((modes & ~3) === 0 && modes >= 0, ErrorCode.BAD_VALUE, `unknown emotion_modes bits ${modes}`);
  const inten = o.intensity ?? 0;
  checkIntensity(inten);
  const voice = nameBytes(o.voice ?? "", "voice");
  const emotion = nameBytes(o.emotion ?? "", "emotion");
  const persona = textBytes(o.persona ?? "");
  const w = new Writer().u8(modes).u8(0).u16(0).f32(inten);
  w.u8(voice.length).raw(voice).u8(emotion.length).raw(emotion).u32(persona.length).raw(persona);
  return withHeader(Kind.CHARACTER, w.result(), h);
}

/** GameContext (§10.6): the game's situation for the next turns; "" clears it. */
export function encodeGameContext(text: string, h: Partial<Header> = {}): Uint8Array {
  const b = textBytes(text);
  return withHeader(Kind.GAME_CONTEXT, new Writer().u32(b.length).raw(b).result(), h);
}

/** UserText (§10.7): a typed turn; header turn_id > 0. */
export function encodeUserText(text: string, h: Partial<Header> = {}): Uint8Array {
  const b = textBytes(text);
  return withHeader(Kind.USER_TEXT, new Writer().u32(b.length).raw(b).result(), h);
}

/** SetEmotion (§10.4): for the session (the new default) or only the next turn. */
export function encodeSetEmotion(
  o: { name: string; intensity: number; scope?: EmotionScope },
  h: Partial<Header> = {},
): Uint8Array {
  checkIntensity(o.intensity);
  const scope = o.scope ?? EmotionScope.SESSION;
  check(scope in EmotionScope, ErrorCode.BAD_VALUE, `unknown emotion scope ${scope}`);
  const name = nameBytes(o.name, "emotion name");
  check(name.length > 0, ErrorCode.BAD_VALUE, "empty emotion name");
  const w = new Writer().u8(scope).u8(0).u16(0).f32(o.intensity).u8(name.length).raw(name);
  return withHeader(Kind.SET_EMOTION, w.result(), h);
}

/** MicAudio (§10.8): a piece of the continuous microphone stream (PCM16 or float32 in [-1, 1]);
 * sample_offset 0 starts a new stream. */
export function encodeMicAudio(
  samples: Int16Array | Float32Array,
  sample_rate: number,
  sample_offset: number,
  end_of_stream: boolean,
  h: Partial<Header> = {},
): Uint8Array {
  rate(sample_rate, "sample_rate");
  const pcm = samples instanceof Int16Array;
  if (!pcm) finiteArray(samples, "audio samples");
  const w = new Writer()
    .u8(pcm ? AudioFormat.PCM16 : AudioFormat.F32)
    .u8(end_of_stream ? MIC_FLAG_END_OF_STREAM : 0)
    .u16(1)
    .u32(sample_rate)
    .u64(sample_offset)
    .u32(samples.length);
  if (pcm) w.i16s(samples);
  else w.f32s(samples);
  return withHeader(Kind.MIC_AUDIO, w.result(), { turn_id: 0, ...h });
}

export function encodeHeartbeat(time_us: number, echo_us: number, h: Partial<Header> = {}): Uint8Array {
  return withHeader(Kind.HEARTBEAT, new Writer().u64(time_us).u64(echo_us).result(), h);
}

export function encodeCancel(h: Partial<Header> = {}): Uint8Array {
  return withHeader(Kind.CANCEL, new Uint8Array(0), h);
}

export function encodeBye(h: Partial<Header> = {}): Uint8Array {
  return withHeader(Kind.BYE, new Uint8Array(0), h);
}

/** Float samples in [-1, 1] -> PCM16 (clipped, rounded; the Python client's rule: x * 32767). */
export function floatToPcm16(x: Float32Array): Int16Array {
  const out = new Int16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = Math.round(Math.max(-1, Math.min(1, x[i])) * 32767);
  return out;
}
