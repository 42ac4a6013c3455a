// Push-to-talk: record the microphone while the button is held, then hand back 16 kHz mono float samples.
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
  private static loaded = new WeakSet<AudioContext>();

  constructor(readonly ctx: AudioContext) {}

  get recording(): boolean {
    return this.stream !== null;
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
    this.node.port.onmessage = (e: MessageEvent<Float32Array>) => this.parts.push(e.data);
    this.source.connect(this.node);
  }

  /** Stop and return what was said as [n] float32 at `rate` (16 kHz). */
  stop(rate = 16000): Float32Array {
    this.source?.disconnect();
    this.node?.disconnect();
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    const n = this.parts.reduce((a, p) => a + p.length, 0);
    const all = new Float32Array(n);
    let o = 0;
    for (const p of this.parts) {
      all.set(p, o);
      o += p.length;
    }
    this.parts = [];
    return resample(all, this.ctx.sampleRate, rate);
  }
}
