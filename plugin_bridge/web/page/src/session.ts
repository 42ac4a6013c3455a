// The page's bridge session over the gateway's WebSocket: Hello/Welcome (protocol version 2, a version 1 server gets
// a version 1 session), heartbeats, sending an utterance, a typed turn or the continuous microphone (hands-free),
// the character (persona, voice, emotion, game context: kept and sent again after every reconnect), Cancel, Bye on
// leaving, and reconnecting when the socket drops. Messages are the bridge's own (protocol.ts).
import * as P from "./protocol";

export type SessionState = "connecting" | "open" | "closed";

export interface SessionEvents {
  onState(state: SessionState, detail: string): void;
  onWelcome(w: P.Welcome): void;
  onMessage(m: P.Message): void;
  onDecodeError(e: P.ProtocolError): void;
  onServerInfo?(info: P.ServerInfo): void;
}

export interface CharacterConfig {
  persona: string;
  voice: string;
  emotion: string;
  intensity: number;
  emotion_modes: number;
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
  /** version 2: typed turns sent, mic chunks sent */
  readonly textsSent: number[] = [];
  micChunksSent = 0;
  serverInfo: P.ServerInfo | null = null;
  /** the negotiated protocol version (0 before the Welcome) */
  version = 0;
  private character: CharacterConfig | null = null;
  private context: string | null = null;
  private micOffset = 0;
  private micRate = 0;
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
    ws.onopen = () => this.hello();
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
        this.version = m.version;
        this.serverInfo = null;
        this.micRate = 0; // a new session: the mic stream starts again at sample 0
        if (m.version >= P.VERSION_2) this.resendConfig();
        this.setState("open", `${m.server_name}, session ${m.session_id}`);
        window.clearInterval(this.hbTimer);
        this.hbTimer = window.setInterval(() => this.heartbeat(), Math.max(200, m.heartbeat_ms));
        this.events.onWelcome(m);
      } else if (m.kind === P.Kind.SERVER_INFO) {
        this.serverInfo = m;
        this.events.onServerInfo?.(m);
      } else if (m.kind === P.Kind.HEARTBEAT) {
        this.peerTimeUs = m.time_us;
      } else if (m.kind === P.Kind.ERROR && (m.code === P.ErrorCode.NOT_WELCOMED || m.code === P.ErrorCode.SESSION_EXPIRED)) {
        this.welcome = null;
        this.hello();
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

  private hello(): void {
    this.seq = 0;
    this.version = 0;
    const caps = P.Capability.TEXT | P.Capability.AUDIO | P.Capability.FACE | P.Capability.IDLE_FACE;
    this.send(
      P.encodeHello(
        { layouts: this.layouts, client_name: "a2llm-web/0.2", min_version: 1, max_version: P.MAX_VERSION, capabilities: caps },
        this.hdr(),
      ),
    );
  }

  private setState(s: SessionState, detail: string): void {
    this.state = s;
    this.events.onState(s, detail);
  }

  private hdr(turn_id = 0): Partial<P.Header> {
    return {
      header_version: Math.max(1, this.version),
      turn_id,
      seq: this.seq++,
      send_time_us: Math.round(performance.now() * 1000),
    };
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

  /** A version 2 session (characters, typed turns, hands-free)? */
  get v2(): boolean {
    return this.ready && this.version >= P.VERSION_2;
  }

  private needV2(what: string): void {
    if (!this.ready) throw new Error("not connected to the bridge");
    if (!this.v2) throw new Error(`${what} needs protocol version 2; this server speaks version ${this.version}`);
  }

  private resendConfig(): void {
    if (this.character) this.send(P.encodeCharacter(this.character, this.hdr()));
    if (this.context !== null) this.send(P.encodeGameContext(this.context, this.hdr()));
  }

  /** The character (kept: sent again after every reconnect). The server answers ConfigAck or Error. */
  setCharacter(c: CharacterConfig): void {
    const bytes = P.encodeCharacter(c, { header_version: 2 }); // validates before anything is stored
    void bytes;
    this.character = { ...c };
    if (this.v2) this.send(P.encodeCharacter(c, this.hdr()));
  }

  /** The game's situation for the next turns ("" clears it); no conversation reset. */
  setContext(text: string): void {
    this.context = text;
    if (this.v2) this.send(P.encodeGameContext(text, this.hdr()));
  }

  setEmotion(name: string, intensity: number, scope = P.EmotionScope.SESSION): void {
    this.needV2("an emotion");
    this.send(P.encodeSetEmotion({ name, intensity, scope }, this.hdr()));
  }

  /** A typed turn; returns its turn id. */
  sendText(text: string): number {
    this.needV2("a typed turn");
    if (!text.trim()) throw new Error("the text is empty");
    const turn = ++this.turnId;
    this.send(P.encodeUserText(text, this.hdr(turn)));
    this.textsSent.push(turn);
    return turn;
  }

  /** Hands-free: the next piece of the continuous microphone stream ([n] float32 in [-1, 1] at `rate`, one of
   * ServerInfo's mic rates); the first piece (and the first after endMic or a reconnect) starts a stream at 0. */
  sendMic(samples: Float32Array, rate: number): void {
    this.needV2("hands-free");
    if (rate !== this.micRate) {
      this.micRate = rate;
      this.micOffset = 0;
    }
    this.send(P.encodeMicAudio(P.floatToPcm16(samples), rate, this.micOffset, false, this.hdr(0)));
    this.micOffset += samples.length;
    this.micChunksSent++;
  }

  /** The rate of the mic stream being sent (0: none). */
  get micStreamRate(): number {
    return this.micRate;
  }

  /** Hands-free off: END_OF_STREAM (an utterance in progress ends). */
  endMic(): void {
    if (this.v2 && this.micRate) this.send(P.encodeMicAudio(new Int16Array(0), this.micRate, this.micOffset, true, this.hdr(0)));
    this.micRate = 0;
    this.micOffset = 0;
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
