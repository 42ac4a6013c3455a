// Face frames of one turn, stored by frame index, and the A/V sync rule of the native core
// (plugin_bridge/native/src/playback.hpp): frame k covers answer samples [k*spf, (k+1)*spf) with spf = rate / fps
// (960 at 24 kHz, 25 fps); PROTOCOL.md §4.5: after s samples the face is frame s / spf, interpolated linearly between
// neighbours (frame k's values sit at sample k * spf, the start of the samples it covers); a frame that has not arrived is never invented:
// the last frame at or before the instant is held.

export const enum FrameFlag {
  Interpolated = 0,
  Held = 1,
  Empty = 2,
}

export class FaceTrack {
  /** frame index -> [dims] values */
  readonly frames = new Map<number, Float32Array>();
  /** first_frame of every FaceFrames message, in arrival order (the browser test checks the order). */
  readonly arrivals: number[] = [];
  ended = false;

  constructor(
    readonly dims: number,
    readonly samplesPerFrame: number,
  ) {}

  /** Add `n` frames starting at `first` from a row-major [n * dims] array. */
  add(first: number, values: Float32Array, n: number): void {
    this.arrivals.push(first);
    for (let i = 0; i < n; i++) this.frames.set(first + i, values.slice(i * this.dims, (i + 1) * this.dims));
  }

  get count(): number {
    return this.frames.size;
  }

  /** The face at answer sample `samples`, written into `out` ([dims]); returns how it was obtained. */
  at(samples: number, out: Float32Array): FrameFlag {
    const pos = samples / this.samplesPerFrame; // in frames (PROTOCOL.md §4.5)
    let k0 = 0;
    let a = 0;
    if (pos > 0) {
      k0 = Math.floor(pos);
      a = pos - k0;
    }
    const f0 = this.frames.get(k0);
    if (f0 !== undefined) {
      const f1 = this.frames.get(k0 + 1);
      if (a === 0 || f1 === undefined) {
        out.set(f0);
        const isLast = this.ended && !this.frames.has(k0 + 1);
        return a !== 0 && !isLast ? FrameFlag.Held : FrameFlag.Interpolated;
      }
      for (let i = 0; i < this.dims; i++) out[i] = f0[i] + a * (f1[i] - f0[i]);
      return FrameFlag.Interpolated;
    }
    let best = -1;
    for (const k of this.frames.keys()) if (k <= k0 && k > best) best = k;
    if (best < 0) return FrameFlag.Empty;
    out.set(this.frames.get(best)!);
    return FrameFlag.Held;
  }
}
