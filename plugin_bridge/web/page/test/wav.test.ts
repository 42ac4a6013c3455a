import { describe, expect, it } from "vitest";
import { parseWav, resample, WavError } from "../src/wav";

function wav16(samples: number[][], rate: number): ArrayBuffer {
  const ch = samples[0].length;
  const n = samples.length;
  const buf = new ArrayBuffer(44 + n * ch * 2);
  const v = new DataView(buf);
  const w = (o: number, s: string) => [...s].forEach((c, i) => v.setUint8(o + i, c.charCodeAt(0)));
  w(0, "RIFF");
  v.setUint32(4, 36 + n * ch * 2, true);
  w(8, "WAVE");
  w(12, "fmt ");
  v.setUint32(16, 16, true);
  v.setUint16(20, 1, true);
  v.setUint16(22, ch, true);
  v.setUint32(24, rate, true);
  v.setUint32(28, rate * ch * 2, true);
  v.setUint16(32, ch * 2, true);
  v.setUint16(34, 16, true);
  w(36, "data");
  v.setUint32(40, n * ch * 2, true);
  samples.forEach((fr, i) => fr.forEach((s, c) => v.setInt16(44 + (i * ch + c) * 2, s, true)));
  return buf;
}

describe("wav", () => {
  it("reads 16-bit stereo as mono", () => {
    const p = parseWav(wav16([[16384, 0], [-32768, -32768], [100, 300]], 22050));
    expect(p.rate).toBe(22050);
    expect(Array.from(p.samples)).toEqual([0.25, -1, 200 / 32768]);
  });
  it("rejects what it cannot read", () => {
    expect(() => parseWav(new ArrayBuffer(8))).toThrow(WavError);
    expect(() => parseWav(wav16([[0]], 16000).slice(0, 36))).toThrow(/data/);
  });
  it("resamples a tone without changing its frequency or level, and removes content above Nyquist", () => {
    const from = 48000;
    const x = Float32Array.from({ length: from }, (_, i) => 0.5 * Math.sin((2 * Math.PI * 440 * i) / from));
    const y = resample(x, from, 16000);
    expect(y.length).toBe(16000);
    let err = 0;
    for (let i = 1000; i < 15000; i++) err = Math.max(err, Math.abs(y[i] - 0.5 * Math.sin((2 * Math.PI * 440 * i) / 16000)));
    expect(err).toBeLessThan(0.01);
    const hi = Float32Array.from({ length: from }, (_, i) => Math.sin((2 * Math.PI * 12000 * i) / from));
    const z = resample(hi, from, 16000);
    let peak = 0;
    for (let i = 1000; i < 15000; i++) peak = Math.max(peak, Math.abs(z[i]));
    expect(peak).toBeLessThan(0.02);
  });
});
