// Curve panel: a live canvas-2D plot of chosen ARKit curves against the answer's audio time.

const COLORS = ["#ff6b6b", "#ffd166", "#06d6a0", "#4cc9f0", "#b388ff", "#f78c6b", "#9ae66e", "#ff8fab"];
export const DEFAULT_CURVES = ["jawOpen", "mouthSmileLeft", "mouthFunnel", "eyeBlinkLeft", "browInnerUp"];

interface Sample {
  t: number; // seconds of answer audio
  v: Float32Array; // [chosen.length]
}

export class CurvePanel {
  chosen: string[] = [...DEFAULT_CURVES];
  windowS = 4;
  private history: Sample[] = [];
  private readonly ctx: CanvasRenderingContext2D;

  constructor(readonly canvas: HTMLCanvasElement) {
    this.ctx = canvas.getContext("2d")!;
  }

  setChosen(names: string[]): void {
    this.chosen = names;
    this.history = [];
  }

  clear(): void {
    this.history = [];
  }

  /** Record the curves at answer time `t` (s): `lookup(name)` gives a curve's current value (or undefined). */
  push(t: number, lookup: (name: string) => number | undefined): void {
    const last = this.history[this.history.length - 1];
    if (last && t < last.t) this.history = []; // a new turn or a replay
    if (last && t === last.t) return;
    this.history.push({ t, v: Float32Array.from(this.chosen, (n) => lookup(n) ?? NaN) });
    const from = t - this.windowS - 0.5;
    while (this.history.length && this.history[0].t < from) this.history.shift();
  }

  draw(): void {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth,
      h = c.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = this.ctx;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const padL = 28,
      padR = 8,
      padT = 8,
      padB = 18;
    const pw = w - padL - padR,
      ph = h - padT - padB;
    const tEnd = this.history.length ? Math.max(this.windowS, this.history[this.history.length - 1].t) : this.windowS;
    const tStart = tEnd - this.windowS;
    const X = (t: number) => padL + ((t - tStart) / this.windowS) * pw;
    const Y = (v: number) => padT + (1 - v) * ph;
    g.font = "10px system-ui, sans-serif";
    g.fillStyle = "#8b93a7";
    g.strokeStyle = "rgba(255,255,255,0.08)";
    g.lineWidth = 1;
    for (const v of [0, 0.5, 1]) {
      g.beginPath();
      g.moveTo(padL, Y(v));
      g.lineTo(padL + pw, Y(v));
      g.stroke();
      g.fillText(v.toFixed(1), 4, Y(v) + 3);
    }
    for (let s = Math.ceil(tStart); s <= tEnd; s++) {
      g.beginPath();
      g.moveTo(X(s), padT);
      g.lineTo(X(s), padT + ph);
      g.stroke();
      g.fillText(`${s}s`, X(s) - 6, h - 4);
    }
    this.chosen.forEach((_, j) => {
      g.strokeStyle = COLORS[j % COLORS.length];
      g.lineWidth = 1.6;
      g.beginPath();
      let pen = false;
      for (const s of this.history) {
        const v = s.v[j];
        if (!Number.isFinite(v) || s.t < tStart) {
          pen = false;
          continue;
        }
        const y = Y(Math.max(0, Math.min(1, v)));
        if (pen) g.lineTo(X(s.t), y);
        else g.moveTo(X(s.t), y);
        pen = true;
      }
      g.stroke();
    });
  }

  color(i: number): string {
    return COLORS[i % COLORS.length];
  }
}
