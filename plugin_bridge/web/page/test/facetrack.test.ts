import { describe, expect, it } from "vitest";
import { FaceTrack, FrameFlag } from "../src/facetrack";

const track = () => {
  const t = new FaceTrack(2, 960);
  // frame k = [k, 10 k]
  t.add(0, Float32Array.from([0, 0, 1, 10, 2, 20]), 3);
  return t;
};

describe("FaceTrack (native core's A/V sync rule)", () => {
  const out = new Float32Array(2);
  it("starts at frame 0 on the first sample (PROTOCOL.md 4.5: frame s * fps / rate)", () => {
    expect(track().at(0, out)).toBe(FrameFlag.Interpolated);
    expect(Array.from(out)).toEqual([0, 0]);
    track().at(480, out);
    expect(Array.from(out)).toEqual([0.5, 5]);
  });
  it("hits frame k at sample k * 960 and interpolates between", () => {
    const t = track();
    t.at(1 * 960, out);
    expect(Array.from(out)).toEqual([1, 10]);
    t.at(0.75 * 960, out);
    expect(out[0]).toBeCloseTo(0.75);
    expect(out[1]).toBeCloseTo(7.5);
  });
  it("holds the last frame when the next one is late, and says so", () => {
    const t = track();
    expect(t.at(2.75 * 960, out)).toBe(FrameFlag.Held);
    expect(Array.from(out)).toEqual([2, 20]);
    expect(t.at(10 * 960, out)).toBe(FrameFlag.Held);
    t.ended = true;
    expect(t.at(2.75 * 960, out)).toBe(FrameFlag.Interpolated);
  });
  it("stores frames by index (out of order is fine) and records arrivals", () => {
    const t = new FaceTrack(1, 960);
    t.add(5, Float32Array.from([5, 6]), 2);
    t.add(0, Float32Array.from([0, 1, 2, 3, 4]), 5);
    expect(t.arrivals).toEqual([5, 0]);
    t.at(4.5 * 960, out);
    expect(out[0]).toBeCloseTo(4.5);
    expect(new FaceTrack(1, 960).at(0, out)).toBe(FrameFlag.Empty);
  });
});
