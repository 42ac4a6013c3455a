// The microphone. Push-to-talk: record while the button is held, then hand back 16 kHz mono float samples.
// Hands-free (startStreaming()): hand every ~40 ms of audio to a callback as it comes, at the context's rate.
// Both ask the browser for its acoustic echo canceller (echoCancellation): hands-free needs it (or a headset), or the
// character's own voice from the speakers reaches the microphone and interrupts the answer (barge-in).
import { resample } from "./wav";

const WORKLET = `
class Tap extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) this.port.postMessage(ch.slice(0));
    return true;
  }
}
registerProcessor("a2llm-tap", Tap);
`;

export class Microphone {
  private stream: MediaStream | null = null;
  private node: AudioWorkletNode | null = null;
  private source: MediaStreamAudioSourceNode | null = null;
  private parts: Float32Array[] = [];
  private onChunk: ((x: Float32Array, rate: number) => void) | null = null;
  private pendingN = 0;
  private static loaded = new WeakSet<AudioContext>();

  constructor(readonly ctx: AudioContext) {}

  get recording(): boolean {
    return this.stream !== null;
  }

  /** Hands-free: stream the microphone to `onChunk` ([n] float32 at the context's rate, ~40 ms each) until stop(). */
  async startStreaming(onChunk: (x: Float32Array, rate: number) => void): Promise<void> {
    await this.start();
    this.onChunk = onChunk;
  }

  async start(): Promise<void> {
    if (this.stream) return;
    if (!navigator.mediaDevices?.getUserMedia) throw new Error("this browser gives no microphone access (http on a remote host?)");
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    if (!Microphone.loaded.has(this.ctx)) {
      const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
      await this.ctx.audioWorklet.addModule(url);
      URL.revokeObjectURL(url);
      Microphone.loaded.add(this.ctx);
    }
    await this.ctx.resume();
    this.parts = [];
    this.stream = stream;
    this.source = this.ctx.createMediaStreamSource(stream);
    this.node = new AudioWorkletNode(this.ctx, "a2llm-tap");
    this.node.port.onmessage = (e: MessageEvent<Float32Array>) => {
      this.parts.push(e.data);
      this.pendingN += e.data.length;
      if (this.onChunk && this.pendingN >= this.ctx.sampleRate / 25) this.flush();
    };
    this.source.connect(this.node);
  }

  private take(): Float32Array {
    const all = new Float32Array(this.pendingN);
    let o = 0;
    for (const p of this.parts) {
      all.set(p, o);
      o += p.length;
    }
    this.parts = [];
    this.pendingN = 0;
    return all;
  }

  private flush(): void {
    const x = this.take();
    if (x.length && this.onChunk) this.onChunk(x, this.ctx.sampleRate);
  }

  /** Stop and return what was said as [n] float32 at `rate` (16 kHz); a stream hands over its last piece. */
  stop(rate = 16000): Float32Array {
    if (this.onChunk) {
      this.flush();
      this.onChunk = null;
    }
    this.source?.disconnect();
    this.node?.disconnect();
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    return resample(this.take(), this.ctx.sampleRate, rate);
  }
}
