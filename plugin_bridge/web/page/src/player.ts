// Answer audio playback with WebAudio and the turn's playhead (the A/V sync clock).
//
// Chunks are scheduled on the AudioContext timeline at `start + sample_offset / rate`. A turn starts once
// `jitterSamples` are buffered (or it has ended). A chunk that arrives after its slot moves `start` later
// (the playhead holds: silence, and the face holds with it), so audio and face never drift apart. Out-of-order
// chunks wait until they are contiguous. When the AudioContext cannot run (no user gesture yet) the turn is
// timed by performance.now() instead, silently, so the face still plays.

export class AnswerPlayer {
  turnId = 0;
  /** answer samples scheduled so far (contiguous from 0) */
  scheduled = 0;
  ended = false;
  underruns = 0;
  /** fixed playhead (samples) for scrubbing and tests; null = follow the clock */
  frozen: number | null = null;
  jitterSamples: number;

  private start: number | null = null;
  private silent = false;
  private pending = new Map<number, Float32Array>();
  private chunks: Float32Array[] = [];
  private sources: AudioBufferSourceNode[] = [];
  private readonly gain: GainNode;

  constructor(
    readonly ctx: AudioContext,
    public rate = 24000,
    jitterMs = 100,
  ) {
    this.jitterSamples = Math.round((jitterMs / 1000) * rate);
    this.gain = ctx.createGain();
    this.gain.connect(ctx.destination);
  }

  private now(): number {
    return this.silent ? performance.now() / 1000 : this.ctx.currentTime;
  }

  /** Drop the current turn (a new one starts, or it was cancelled). */
  reset(turnId: number): void {
    for (const s of this.sources) {
      try {
        s.stop();
      } catch {
        /* not started */
      }
    }
    this.sources = [];
    this.pending.clear();
    this.chunks = [];
    this.turnId = turnId;
    this.scheduled = 0;
    this.ended = false;
    this.start = null;
    this.frozen = null;
    this.underruns = 0;
  }

  /** Barge-in / Cancel: the playing answer fades out over 15 ms from now (no click), then the turn is dropped. */
  fadeOut(turnId: number): void {
    if (turnId !== this.turnId) return;
    const t = this.ctx.currentTime;
    const g = this.gain.gain;
    g.cancelScheduledValues(t);
    g.setValueAtTime(g.value, t);
    g.linearRampToValueAtTime(0, t + 0.015);
    g.setValueAtTime(1, t + 0.02);
    for (const s of this.sources) {
      try {
        s.stop(t + 0.016);
      } catch {
        /* not started */
      }
    }
    this.sources = [];
    this.fadedAt = this.playhead();
    this.reset(0);
  }

  /** The playhead at the last fadeOut (for the page's hooks). */
  fadedAt: number | null = null;

  add(turnId: number, offset: number, samples: Float32Array): void {
    if (turnId !== this.turnId) this.reset(turnId);
    if (offset + samples.length <= this.scheduled) return; // duplicate
    this.pending.set(offset, samples);
    this.pump();
  }

  end(turnId: number): void {
    if (turnId !== this.turnId) return;
    this.ended = true;
    this.pump();
  }

  private buffered(): number {
    let n = this.scheduled;
    while (this.pending.has(n)) n += this.pending.get(n)!.length;
    return n - this.scheduled;
  }

  private pump(): void {
    if (this.start === null) {
      if (this.buffered() < this.jitterSamples && !this.ended) return;
      this.silent = this.ctx.state !== "running";
      this.start = this.now() + 0.03;
    }
    for (;;) {
      const x = this.pending.get(this.scheduled);
      if (x === undefined) break;
      this.pending.delete(this.scheduled);
      this.schedule(this.scheduled, x);
      this.scheduled += x.length;
    }
  }

  private schedule(offset: number, x: Float32Array): void {
    let when = this.start! + offset / this.rate;
    const now = this.now();
    if (when < now + 0.005) {
      // late: hold the playhead (shift the turn's timeline) instead of skipping audio
      const shift = now + 0.02 - when;
      this.start! += shift;
      when += shift;
      this.underruns += 1;
    }
    this.chunks.push(x);
    if (this.silent || x.length === 0) return;
    const buf = this.ctx.createBuffer(1, x.length, this.rate);
    buf.copyToChannel(x as Float32Array<ArrayBuffer>, 0);
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.gain);
    src.start(when);
    src.onended = () => {
      const i = this.sources.indexOf(src);
      if (i >= 0) this.sources.splice(i, 1);
    };
    this.sources.push(src);
  }

  /** True while the turn has audio to play (or may still receive some). */
  get active(): boolean {
    return this.turnId !== 0 && (!this.ended || this.playhead() < this.scheduled);
  }

  get started(): boolean {
    return this.start !== null;
  }

  /** Answer samples played so far (the face of this instant is shown); output latency is accounted for. */
  playhead(): number {
    if (this.frozen !== null) return this.frozen;
    if (this.start === null) return 0;
    const latency = this.silent ? 0 : (this.ctx.outputLatency || 0) + (this.ctx.baseLatency || 0);
    const t = (this.now() - latency - this.start) * this.rate;
    return Math.max(0, Math.min(this.scheduled, t));
  }

  /** The whole answer so far, [n] float32 (for replay). */
  audio(): Float32Array {
    const n = this.chunks.reduce((a, c) => a + c.length, 0);
    const out = new Float32Array(n);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }

  /** Play the last answer again from its start (the face follows the new playhead). */
  replay(): void {
    const all = this.audio();
    const id = this.turnId;
    this.reset(id);
    this.add(id, 0, all);
    this.end(id);
  }
}
