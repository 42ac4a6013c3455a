// The page's bridge session (session.ts) over a fake WebSocket: protocol version 2 negotiation, the character and
// game context kept and sent again after a reconnect, typed turns, the hands-free mic stream's offsets, and a
// version 1 server (no version 2 message ever goes out). Server messages are the golden fixtures' bytes.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeEach, describe, expect, it } from "vitest";
import * as P from "../src/protocol";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "fixtures");
const fixture = (f: string) => new Uint8Array(readFileSync(join(FIXTURES, f)));

class FakeSocket {
  static OPEN = 1;
  static last: FakeSocket | null = null;
  readyState = 0;
  binaryType = "";
  sent: P.Message[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: ArrayBuffer }) => void) | null = null;
  onclose: ((e: { code: number; reason: string }) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.last = this;
  }
  open(): void {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.();
  }
  send(b: Uint8Array): void {
    this.sent.push(P.decode(b));
  }
  deliver(b: Uint8Array): void {
    this.onmessage?.({ data: b.slice().buffer });
  }
  close(): void {
    this.readyState = 3;
  }
  kinds(): P.Kind[] {
    return this.sent.filter((m) => m.kind !== P.Kind.HEARTBEAT).map((m) => m.kind);
  }
}

/** Error(NOT_WELCOMED), as a restarted server answers. */
function notWelcomed(): Uint8Array {
  const text = new TextEncoder().encode("no session");
  const b = new Uint8Array(32 + 4 + text.length);
  const v = new DataView(b.buffer);
  b.set([0x41, 0x32, 0x4c, 0x4d]);
  v.setUint16(4, 1, true);
  v.setUint16(6, P.Kind.ERROR, true);
  v.setUint32(12, 4 + text.length, true);
  v.setUint16(32, P.ErrorCode.NOT_WELCOMED, true);
  v.setUint16(34, text.length, true);
  b.set(text, 36);
  return b;
}

let session: import("../src/session").BridgeSession;
const events = { welcomes: 0, infos: 0 };

beforeEach(async () => {
  const g = globalThis as unknown as Record<string, unknown>;
  g.window = globalThis;
  g.WebSocket = FakeSocket;
  const { BridgeSession } = await import("../src/session");
  events.welcomes = events.infos = 0;
  session = new BridgeSession("ws://test/ws", {
    onState: () => {},
    onWelcome: () => events.welcomes++,
    onMessage: () => {},
    onDecodeError: (e) => {
      throw e;
    },
    onServerInfo: () => events.infos++,
  });
  session.connect();
  FakeSocket.last!.open();
});

describe("the page's session, protocol version 2", () => {
  it("offers versions 1..2 and the idle face in a version 1 Hello header", () => {
    const hello = FakeSocket.last!.sent[0];
    expect(hello.kind).toBe(P.Kind.HELLO);
    if (hello.kind !== P.Kind.HELLO) return;
    expect(hello.header_version).toBe(1);
    expect([hello.min_version, hello.max_version]).toEqual([1, 2]);
    expect(hello.capabilities & P.Capability.IDLE_FACE).toBe(P.Capability.IDLE_FACE);
  });

  it("keeps the character and context, sends them after every Welcome, in version 2 headers", () => {
    const ws = FakeSocket.last!;
    const character = { persona: "You are Mira, a grumpy blacksmith.", voice: "", emotion: "angry", intensity: 0.5, emotion_modes: 3 };
    session.setCharacter(character); // before the Welcome: kept
    session.setContext("The player just lost the battle.");
    expect(ws.kinds()).toEqual([P.Kind.HELLO]);
    ws.deliver(fixture("v2_welcome.bin"));
    ws.deliver(fixture("v2_server_info.bin"));
    expect(session.version).toBe(2);
    expect(events.infos).toBe(1);
    expect(session.serverInfo?.emotions).toContain("neutral");
    expect(ws.kinds()).toEqual([P.Kind.HELLO, P.Kind.CHARACTER, P.Kind.GAME_CONTEXT]);
    const sentChar = ws.sent[1];
    expect(sentChar.header_version).toBe(2);
    if (sentChar.kind === P.Kind.CHARACTER) expect(sentChar.persona).toBe(character.persona);

    // a typed turn and the mic stream
    expect(session.sendText("Who are you?")).toBe(1);
    session.sendMic(new Float32Array(320), 16000);
    session.sendMic(new Float32Array(320), 16000);
    const mic = ws.sent.filter((m) => m.kind === P.Kind.MIC_AUDIO) as P.MicAudio[];
    expect(mic.map((m) => [m.sample_offset, m.samples.length, m.turn_id, m.header_version])).toEqual([
      [0, 320, 0, 2],
      [320, 320, 0, 2],
    ]);
    session.endMic();
    const end = ws.sent[ws.sent.length - 1];
    expect(end.kind === P.Kind.MIC_AUDIO && end.end_of_stream && end.sample_offset === 640).toBe(true);

    // the server restarts: NOT_WELCOMED -> Hello again -> Welcome -> the character and context go out again
    ws.deliver(notWelcomed());
    expect(ws.sent[ws.sent.length - 1].kind).toBe(P.Kind.HELLO);
    ws.deliver(fixture("v2_welcome.bin"));
    const after = ws.kinds().slice(-2);
    expect(after).toEqual([P.Kind.CHARACTER, P.Kind.GAME_CONTEXT]);
    session.sendMic(new Float32Array(160), 16000); // a new session: the mic stream starts again at 0
    const last = ws.sent[ws.sent.length - 1];
    expect(last.kind === P.Kind.MIC_AUDIO && last.sample_offset === 0).toBe(true);
  });

  it("refuses bad values before anything is stored or sent", () => {
    const ws = FakeSocket.last!;
    ws.deliver(fixture("v2_welcome.bin"));
    const n = ws.sent.length;
    expect(() => session.setCharacter({ persona: "", voice: "", emotion: "", intensity: 2, emotion_modes: 3 })).toThrow(
      /BAD_VALUE/,
    );
    expect(() => session.sendText("   ")).toThrow(/empty/);
    expect(ws.sent.length).toBe(n);
  });

  it("a version 1 server gets version 1 messages only", () => {
    const ws = FakeSocket.last!;
    session.setCharacter({ persona: "kept, never sent", voice: "", emotion: "", intensity: 0, emotion_modes: 3 });
    ws.deliver(fixture("welcome.bin"));
    expect(session.version).toBe(1);
    expect(() => session.sendText("hi")).toThrow(/version 2/);
    expect(() => session.sendMic(new Float32Array(10), 16000)).toThrow(/version 2/);
    session.setContext("not sent either");
    session.sendUtterance(new Float32Array(1600), 16000);
    expect(ws.sent.every((m) => m.header_version === 1 && m.kind < P.Kind.CHARACTER)).toBe(true);
  });
});
