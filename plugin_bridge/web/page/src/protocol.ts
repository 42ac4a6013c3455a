// The a2llm bridge wire protocol, version 1, in the browser (spec: plugin_bridge/PROTOCOL.md; reference decoder:
// plugin_bridge/protocol.py). One WebSocket binary message = one protocol message in its concatenated form:
// a 32-byte little-endian header followed by the payload.
//
//   header: 0 char[4] "A2LM" | 4 u16 version | 6 u16 kind | 8 u32 turn_id | 12 u32 payload_length
//           16 u64 seq | 24 u64 send_time_us
//
// Decoded messages use the spec's (snake_case) field names, the same as fixtures/index.json and the Python
// dataclasses. u64 fields become JS numbers (exact below 2^53). decode() throws only ProtocolError, whose `code`
// is the ErrorCode a server would answer with, checked in the same order as the Python decoder.

export const MAGIC = [0x41, 0x32, 0x4c, 0x4d]; // "A2LM"
export const VERSION = 1;
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
}

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

export type Message =
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

function parsePayload(kind: Kind, r: Reader, h: Header): Message {
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
}

/** Decode one message in its concatenated form (header + payload). Throws only ProtocolError. */
export function decode(data: ArrayBuffer | Uint8Array): Message {
  const buf = data instanceof Uint8Array ? data : new Uint8Array(data);
  check(buf.length >= HEADER_SIZE, ErrorCode.BAD_LENGTH, `message is ${buf.length} bytes, shorter than the header`);
  const v = new DataView(buf.buffer, buf.byteOffset, HEADER_SIZE);
  const magicOk = MAGIC.every((b, i) => buf[i] === b);
  check(magicOk, ErrorCode.BAD_MAGIC, "bad magic, expected A2LM");
  const version = v.getUint16(4, true);
  check(version === VERSION, ErrorCode.UNSUPPORTED_VERSION, `protocol version ${version} is not supported`);
  const kind = v.getUint16(6, true);
  check(kind in Kind && typeof Kind[kind] === "string", ErrorCode.UNKNOWN_KIND, `unknown message kind ${kind}`);
  const length = v.getUint32(12, true);
  check(length <= MAX_PAYLOAD, ErrorCode.PAYLOAD_TOO_LARGE, `payload_length ${length} > ${MAX_PAYLOAD}`);
  check(
    buf.length === HEADER_SIZE + length,
    ErrorCode.BAD_LENGTH,
    `payload is ${buf.length - HEADER_SIZE} bytes, header says ${length}`,
  );
  const h: Header = {
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
  i16s(a: Int16Array): this {
    const p = this.grow(a.length * 2);
    for (let i = 0; i < a.length; i++) this.view.setInt16(p + 2 * i, a[i], true);
    return this;
  }
  result(): Uint8Array {
    return this.bytes.slice(0, this.len);
  }
}

const DEFAULT_HEADER: Header = { turn_id: 0, seq: 0, send_time_us: 0 };

function withHeader(kind: Kind, payload: Uint8Array, h: Partial<Header>): Uint8Array {
  const hh = { ...DEFAULT_HEADER, ...h };
  check(payload.length <= MAX_PAYLOAD, ErrorCode.PAYLOAD_TOO_LARGE, `payload ${payload.length} > ${MAX_PAYLOAD}`);
  const w = new Writer()
    .raw(new Uint8Array(MAGIC))
    .u16(VERSION)
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
