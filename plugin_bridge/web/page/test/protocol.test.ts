// Decode every golden fixture (plugin_bridge/fixtures/*.bin) against fixtures/index.json, and re-encode the
// client messages the page sends byte for byte.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  decode,
  encodeBye,
  encodeCancel,
  encodeCharacter,
  encodeGameContext,
  encodeHeartbeat,
  encodeHello,
  encodeMicAudio,
  encodeSetEmotion,
  encodeUserAudio,
  encodeUserText,
  ErrorCode,
  floatToPcm16,
  Kind,
  ProtocolError,
  type Message,
} from "../src/protocol";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "fixtures");
const index = JSON.parse(readFileSync(join(FIXTURES, "index.json"), "utf8"));
const bin = (f: string) => new Uint8Array(readFileSync(join(FIXTURES, f)));

/** The decoded message as index.json writes its `fields` (arrays as nested lists, no header fields). */
function fieldsOf(m: Message): Record<string, unknown> {
  const { kind, header_version, turn_id, seq, send_time_us, ...rest } = m as unknown as Record<string, unknown>;
  void kind, header_version, turn_id, seq, send_time_us;
  const out: Record<string, unknown> = { ...rest };
  if ("samples" in out) {
    out.samples = Array.from(out.samples as ArrayLike<number>);
    delete out.format;
  }
  if (m.kind === Kind.FACE_FRAMES) {
    const rows: number[][] = [];
    for (let i = 0; i < m.n_frames; i++) rows.push(Array.from(m.values.subarray(i * m.dims, (i + 1) * m.dims)));
    out.values = rows;
    delete out.n_frames;
    delete out.dims;
  }
  return out;
}

describe("golden fixtures", () => {
  it("index lists every kind", () => {
    const kinds = new Set(index.messages.map((m: { kind: number }) => m.kind));
    for (let k = 1; k <= 21; k++) expect(kinds.has(k)).toBe(true);
  });

  for (const entry of index.messages) {
    it(`decodes ${entry.file}`, () => {
      const data = bin(entry.file);
      expect(data.length).toBe(entry.size);
      const m = decode(data);
      expect(m.kind).toBe(entry.kind);
      expect(Kind[m.kind]).toBe(entry.kind_name);
      expect(m.turn_id).toBe(entry.turn_id);
      expect(m.seq).toBe(entry.seq);
      expect(m.send_time_us).toBe(entry.send_time_us);
      expect(m.header_version).toBe(entry.version);
      expect(fieldsOf(m)).toEqual(entry.fields);
    });
  }

  for (const entry of index.malformed) {
    it(`rejects ${entry.file} with ${entry.error_name}`, () => {
      let err: unknown = null;
      try {
        decode(bin(entry.file));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as ProtocolError).code).toBe(entry.error_code);
      expect(ErrorCode[(err as ProtocolError).code]).toBe(entry.error_name);
    });
  }
});

describe("encoders reproduce the fixtures", () => {
  const entry = (f: string) => index.messages.find((m: { file: string }) => m.file === f);
  const hdr = (e: { turn_id: number; seq: number; send_time_us: number; version: number }) => ({
    header_version: e.version,
    turn_id: e.turn_id,
    seq: e.seq,
    send_time_us: e.send_time_us,
  });

  it("Hello", () => {
    const e = entry("hello.bin");
    expect(encodeHello(e.fields, hdr(e))).toEqual(bin("hello.bin"));
  });
  it("UserAudio PCM16", () => {
    const e = entry("user_audio_pcm16.bin");
    const f = e.fields;
    const out = encodeUserAudio(Int16Array.from(f.samples), f.sample_rate, f.sample_offset, f.end_of_utterance, hdr(e));
    expect(out).toEqual(bin("user_audio_pcm16.bin"));
  });
  it("Heartbeat, Cancel, Bye", () => {
    const hb = entry("heartbeat.bin");
    expect(encodeHeartbeat(hb.fields.time_us, hb.fields.echo_us, hdr(hb))).toEqual(bin("heartbeat.bin"));
    expect(encodeCancel(hdr(entry("cancel.bin")))).toEqual(bin("cancel.bin"));
    expect(encodeBye(hdr(entry("bye.bin")))).toEqual(bin("bye.bin"));
  });
  it("version 2 Hello (header version 1, versions 1..2, IDLE_FACE)", () => {
    const e = entry("v2_hello.bin");
    expect(e.version).toBe(1);
    expect(encodeHello(e.fields, hdr(e))).toEqual(bin("v2_hello.bin"));
  });
  it("Character (with and without strings)", () => {
    for (const f of ["v2_character.bin", "v2_character_defaults.bin"]) {
      const e = entry(f);
      expect(encodeCharacter(e.fields, hdr(e))).toEqual(bin(f));
    }
  });
  it("GameContext, UserText, SetEmotion", () => {
    for (const f of ["v2_game_context.bin", "v2_game_context_clear.bin"]) {
      const e = entry(f);
      expect(encodeGameContext(e.fields.text, hdr(e))).toEqual(bin(f));
    }
    const t = entry("v2_user_text.bin");
    expect(encodeUserText(t.fields.text, hdr(t))).toEqual(bin("v2_user_text.bin"));
    const s = entry("v2_set_emotion.bin");
    expect(encodeSetEmotion(s.fields, hdr(s))).toEqual(bin("v2_set_emotion.bin"));
  });
  it("MicAudio PCM16 and float32", () => {
    const p = entry("v2_mic_audio_pcm16.bin");
    const pf = p.fields;
    expect(encodeMicAudio(Int16Array.from(pf.samples), pf.sample_rate, pf.sample_offset, pf.end_of_stream, hdr(p))).toEqual(
      bin("v2_mic_audio_pcm16.bin"),
    );
    const f = entry("v2_mic_audio_f32_end.bin");
    const ff = f.fields;
    expect(ff.end_of_stream).toBe(true);
    expect(encodeMicAudio(Float32Array.from(ff.samples), ff.sample_rate, ff.sample_offset, true, hdr(f))).toEqual(
      bin("v2_mic_audio_f32_end.bin"),
    );
  });
  it("version 2 encoders refuse bad values", () => {
    expect(() => encodeSetEmotion({ name: "happy", intensity: 1.5 })).toThrow(/BAD_VALUE/);
    expect(() => encodeSetEmotion({ name: "", intensity: 0.5 })).toThrow(/BAD_VALUE/);
    expect(() => encodeCharacter({ intensity: Number.NaN })).toThrow(/NON_FINITE/);
    expect(() => encodeCharacter({ voice: "v".repeat(256) })).toThrow(/BAD_VALUE/);
    expect(() => encodeMicAudio(new Float32Array([Number.POSITIVE_INFINITY]), 16000, 0, false)).toThrow(/NON_FINITE/);
    // a version 2 kind is written with header version 2 even when asked for 1
    expect(encodeUserText("hi", { header_version: 1, turn_id: 1 })[4]).toBe(2);
    expect(encodeHeartbeat(1, 0, { header_version: 2 })[4]).toBe(2);
  });
  it("round trip of a large UserAudio", () => {
    const pcm = floatToPcm16(Float32Array.from({ length: 1600 }, (_, i) => Math.sin(i / 10) * 1.5));
    expect(Math.max(...pcm)).toBe(32767);
    const m = decode(encodeUserAudio(pcm, 16000, 3200, true, { turn_id: 7, seq: 3 }));
    expect(m.kind).toBe(Kind.USER_AUDIO);
    if (m.kind !== Kind.USER_AUDIO) return;
    expect(m.end_of_utterance).toBe(true);
    expect(m.sample_offset).toBe(3200);
    expect(Array.from(m.samples)).toEqual(Array.from(pcm));
  });
  it("rejects a sample rate out of range and a short buffer", () => {
    expect(() => encodeUserAudio(new Int16Array(1), 100, 0, false, {})).toThrow(ProtocolError);
    expect(() => decode(new Uint8Array(5))).toThrow(/BAD_LENGTH/);
  });
});
