// WAV reading (PCM 8/16/24/32-bit, IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE; channels averaged) and resampling
// to the 16 kHz the bridge expects.

export interface Pcm {
  rate: number;
  /** [n] mono float32 in [-1, 1] */
  samples: Float32Array;
}

export class WavError extends Error {}

export function parseWav(data: ArrayBuffer): Pcm {
  const v = new DataView(data);
  const tag = (o: number) => String.fromCharCode(v.getUint8(o), v.getUint8(o + 1), v.getUint8(o + 2), v.getUint8(o + 3));
  if (data.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new WavError("not a RIFF/WAVE file");
  let pos = 12;
  let fmt: { format: number; channels: number; rate: number; bits: number } | null = null;
  while (pos + 8 <= data.byteLength) {
    const id = tag(pos);
    const size = v.getUint32(pos + 4, true);
    const body = pos + 8;
    if (id === "fmt ") {
      let format = v.getUint16(body, true);
      const channels = v.getUint16(body + 2, true);
      const rate = v.getUint32(body + 4, true);
      const bits = v.getUint16(body + 14, true);
      if (format === 0xfffe && size >= 26) format = v.getUint16(body + 24, true); // extensible: sub-format GUID
      fmt = { format, channels, rate, bits };
    } else if (id === "data") {
      if (!fmt) throw new WavError("data chunk before fmt chunk");
      const n = Math.min(size, data.byteLength - body);
      return { rate: fmt.rate, samples: decodeSamples(v, body, n, fmt) };
    }
    pos = body + size + (size & 1);
  }
  throw new WavError("no data chunk");
}

function decodeSamples(
  v: DataView,
  start: number,
  bytes: number,
  f: { format: number; channels: number; bits: number },
): Float32Array {
  const width = f.bits / 8;
  if (f.channels < 1 || ![1, 2, 3, 4, 8].includes(width)) throw new WavError(`unsupported wav: ${f.bits} bits`);
  if (f.format !== 1 && f.format !== 3) throw new WavError(`unsupported wav format ${f.format} (PCM or float only)`);
  if (f.format === 3 && width !== 4 && width !== 8) throw new WavError("float wav must be 32 or 64 bit");
  const frames = Math.floor(bytes / (width * f.channels));
  if (frames === 0) throw new WavError("the wav file holds no audio");
  const out = new Float32Array(frames);
  const read = (o: number): number => {
    if (f.format === 3) return width === 4 ? v.getFloat32(o, true) : v.getFloat64(o, true);
    switch (width) {
      case 1:
        return (v.getUint8(o) - 128) / 128;
      case 2:
        return v.getInt16(o, true) / 32768;
      case 3:
        return ((v.getUint8(o) | (v.getUint8(o + 1) << 8) | (v.getInt8(o + 2) << 16)) as number) / 8388608;
      default:
        return v.getInt32(o, true) / 2147483648;
    }
  };
  for (let i = 0; i < frames; i++) {
    let s = 0;
    for (let c = 0; c < f.channels; c++) s += read(start + (i * f.channels + c) * width);
    out[i] = s / f.channels;
  }
  return out;
}

/**
 * Resample `x` from `from` Hz to `to` Hz: windowed-sinc (Hann, 16 zero crossings) with the cut-off at the lower
 * Nyquist frequency, so downsampling does not alias. [n] -> [round(n * to / from)].
 */
export function resample(x: Float32Array, from: number, to: number): Float32Array {
  if (from === to) return x.slice();
  const n = Math.round((x.length * to) / from);
  const out = new Float32Array(n);
  const ratio = from / to;
  const cutoff = Math.min(1, to / from); // relative to the input Nyquist
  const half = 16 / cutoff; // taps on each side, in input samples
  for (let i = 0; i < n; i++) {
    const c = i * ratio;
    const lo = Math.max(0, Math.ceil(c - half));
    const hi = Math.min(x.length - 1, Math.floor(c + half));
    let acc = 0;
    for (let j = lo; j <= hi; j++) {
      const t = j - c;
      const s = t === 0 ? 1 : Math.sin(Math.PI * t * cutoff) / (Math.PI * t * cutoff);
      const w = 0.5 + 0.5 * Math.cos((Math.PI * t) / half);
      acc += x[j] * s * w * cutoff;
    }
    out[i] = acc;
  }
  return out;
}
