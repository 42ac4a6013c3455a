// The page's bridge session over the gateway's WebSocket: Hello/Welcome, heartbeats, sending an utterance,
// Cancel, Bye on leaving, and reconnecting when the socket drops. Messages are the bridge's own (protocol.ts).
import * as P from "./protocol";

export type SessionState = "connecting" | "open" | "closed";

export interface SessionEvents {
  onState(state: SessionState, detail: string): void;
  onWelcome(w: P.Welcome): void;
  onMessage(m: P.Message): void;
  onDecodeError(e: P.ProtocolError): void;
}

export class BridgeSession {
  welcome: P.Welcome | null = null;
  state: SessionState = "closed";
  turnId = 0;
  /** layouts asked for, in preference order: Live Link 61 (ARKit + head), then ARKit 52 */
  layouts = [3, 2];
  /** UserAudio messages sent per turn id, and Cancels sent: each utterance goes out once (the e2e test checks it) */
  readonly sentChunks = new Map<number, number>();
  cancelsSent = 0;
  private ws: WebSocket | null = null;
  private seq = 0;
  private hbTimer: number | undefined;
  private retry: number | undefined;
  private peerTimeUs = 0;
  private stopped = false;

  constructor(
    readonly url: string,
    readonly events: SessionEvents,
  ) {}

  connect(): void {
    this.stopped = false;
    this.setState("connecting", this.url);
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.seq = 0;
      this.send(P.encodeHello({ layouts: this.layouts, client_name: "a2llm-web/0.1" }, this.hdr()));
    };
    ws.onmessage = (e: MessageEvent) => {
      let m: P.Message;
      try {
        m = P.decode(e.data as ArrayBuffer);
      } catch (err) {
        if (err instanceof P.ProtocolError) return this.events.onDecodeError(err);
        throw err;
      }
      if (m.kind === P.Kind.WELCOME) {
        this.welcome = m;
        this.setState("open", `${m.server_name}, session ${m.session_id}`);
        window.clearInterval(this.hbTimer);
        this.hbTimer = window.setInterval(() => this.heartbeat(), Math.max(200, m.heartbeat_ms));
        this.events.onWelcome(m);
      } else if (m.kind === P.Kind.HEARTBEAT) {
        this.peerTimeUs = m.time_us;
      } else if (m.kind === P.Kind.ERROR && (m.code === P.ErrorCode.NOT_WELCOMED || m.code === P.ErrorCode.SESSION_EXPIRED)) {
        this.welcome = null;
        this.send(P.encodeHello({ layouts: this.layouts, client_name: "a2llm-web/0.1" }, this.hdr()));
      }
      this.events.onMessage(m);
    };
    ws.onclose = (e: CloseEvent) => {
      window.clearInterval(this.hbTimer);
      this.welcome = null;
      this.ws = null;
      this.setState("closed", e.reason || `code ${e.code}`);
      if (!this.stopped) this.retry = window.setTimeout(() => this.connect(), 1500);
    };
  }

  private setState(s: SessionState, detail: string): void {
    this.state = s;
    this.events.onState(s, detail);
  }

  private hdr(turn_id = 0): Partial<P.Header> {
    return { turn_id, seq: this.seq++, send_time_us: Math.round(performance.now() * 1000) };
  }

  private send(bytes: Uint8Array): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  private heartbeat(): void {
    this.send(P.encodeHeartbeat(Math.round(performance.now() * 1000), this.peerTimeUs, this.hdr()));
  }

  get ready(): boolean {
    return this.welcome !== null && this.ws?.readyState === WebSocket.OPEN;
  }

  /** Send one utterance ([n] float32 at `rate`, 16 kHz) as PCM16 UserAudio chunks of 100 ms; returns its turn id.
   * Sent once: a reconnect or an Error never resends it (AUDIO_TOO_LONG and TURN_FAILED end the turn: turns.ts). */
  sendUtterance(audio: Float32Array, rate = 16000): number {
    if (!this.ready) throw new Error("not connected to the bridge");
    const turn = ++this.turnId;
    const pcm = P.floatToPcm16(audio);
    const step = Math.max(1, Math.round(rate / 10));
    for (let start = 0; start < Math.max(1, pcm.length); start += step) {
      const last = start + step >= pcm.length;
      this.send(P.encodeUserAudio(pcm.subarray(start, start + step), rate, start, last, this.hdr(turn)));
      this.sentChunks.set(turn, (this.sentChunks.get(turn) ?? 0) + 1);
    }
    return turn;
  }

  cancel(turn = 0): void {
    this.cancelsSent++;
    this.send(P.encodeCancel(this.hdr(turn)));
  }

  /** Leave: Bye (the server frees the session now) and close; no reconnect. */
  close(): void {
    this.stopped = true;
    window.clearTimeout(this.retry);
    window.clearInterval(this.hbTimer);
    this.send(P.encodeBye(this.hdr()));
    this.ws?.close(1000, "bye");
  }
}
