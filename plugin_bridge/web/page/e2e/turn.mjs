// One conversational turn in a real browser: Debian's Chromium (headless) driven by playwright-core.
//
//   node e2e/turn.mjs --url http://127.0.0.1:8080/ [--url ...] --wav question.wav --out OUT/ [--screenshot page.png]
//                     [--long-wav over_limit.wav] [--timeout-ms N]
//
// Loads the page, (with --long-wav: first sends that over-long question and waits for it to fail; result.json gets
// its turn as `too_long` and what the page sent as `sent`), sends the wav through the file picker, follows the answer while it plays, then freezes the face
// at two answer instants whose mouth curves differ most and screenshots the mouth region at each. Writes
// OUT/result.json (turn summary, console errors, the two instants and their curve values, the mouth rectangle) and
// OUT/mouth_a.png, OUT/mouth_b.png, OUT/page.png; with several --url (one browser, one page each) these go into
// OUT/0/, OUT/1/, ... Prints a one-line summary. Exit code 0 unless the browser failed.
import { chromium } from "playwright-core";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { mkdtempSync } from "node:fs";

function args() {
  const a = process.argv.slice(2);
  const get = (k, d) => {
    const i = a.indexOf(k);
    return i >= 0 ? a[i + 1] : d;
  };
  const urls = a.flatMap((x, i) => (x === "--url" ? [a[i + 1]] : []));
  return {
    urls: urls.length ? urls : ["http://127.0.0.1:8080/"],
    wav: resolve(get("--wav", "")),
    out: resolve(get("--out", "e2e-out")),
    screenshot: get("--screenshot", null),
    chromium: get("--chromium", "/usr/bin/chromium"),
    timeout: Number(get("--timeout-ms", "30000")),
    longWav: get("--long-wav", null) && resolve(get("--long-wav", null)),
  };
}

const MOUTH = /^(jaw|mouth)/i;

async function main() {
  const o = args();
  mkdirSync(o.out, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "a2llm-chromium-"));
  // a fresh profile each run (Playwright takes --user-data-dir as this argument)
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: o.chromium,
    viewport: { width: 1280, height: 760 },
    deviceScaleFactor: 1,
    headless: true,
    timeout: o.timeout,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      "--use-angle=swiftshader",
      "--enable-unsafe-swiftshader",
    ],
  });
  const t0 = Date.now();
  const log = (m) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(2)} s] ${m}\n`);
  log("browser started");
  try {
    for (const [i, url] of o.urls.entries()) {
      const out = o.urls.length > 1 ? join(o.out, String(i)) : o.out;
      mkdirSync(out, { recursive: true });
      await runTurn(browser, { ...o, url, out }, log, t0);
    }
    process.stdout.write(JSON.stringify({ ok: true, seconds: (Date.now() - t0) / 1000 }) + "\n");
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

async function runTurn(browser, o, log, t0) {
  const consoleErrors = [];
  const tPage = Date.now();
  {
    const page = await browser.newPage();
    page.setDefaultTimeout(o.timeout); // every wait (navigation, screenshots, ...) as generous as the turn's
    page.setDefaultNavigationTimeout(o.timeout);
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
    await page.goto(o.url);
    await page.waitForFunction(() => window.a2llm?.ready(), null, { timeout: o.timeout });
    log("page ready (connected, avatar loaded)");
    // optional first question longer than the server accepts: it must fail once and never be resent or cancelled
    let tooLong = null;
    if (o.longWav) {
      await page.setInputFiles("#wav", o.longWav);
      await page.waitForFunction(() => window.a2llm.turns().pop()?.status != null, null, { timeout: o.timeout });
      tooLong = (await page.evaluate(() => window.a2llm.turns())).pop();
      log(`over-long question ended: status ${tooLong.status} (${tooLong.failure})`);
    }
    await page.setInputFiles("#wav", o.wav);
    log("wav sent");
    // follow the answer while it plays: sample the playhead and the shown jawOpen
    const live = [];
    let shot = false;
    for (;;) {
      const s = await page.evaluate(() => ({
        turns: window.a2llm.turns(),
        playhead: window.a2llm.playhead(),
        playing: window.a2llm.playing(),
        jaw: window.a2llm.shown("jawOpen"),
        audio: window.a2llm.audioState(),
      }));
      const t = s.turns.filter((x) => !tooLong || x.id > tooLong.id).pop(); // the question just sent
      if (t) live.push({ ms: Date.now() - t0, playhead: s.playhead, jaw: s.jaw, audio: s.audio });
      const audioSamples = t ? t.audio_samples : 0;
      if (!shot && t && s.playhead > 0.55 * Math.max(audioSamples, 1) && t.status !== null) {
        await page.screenshot({ path: join(o.out, "page.png") });
        shot = true;
        log(`page screenshot at playhead ${s.playhead}`);
      }
      if (t && t.status !== null && !s.playing) break;
      if (Date.now() - tPage > o.timeout) throw new Error("timed out waiting for the turn to finish playing");
      await page.waitForTimeout(40);
    }
    log("turn complete and played");
    const turn = (await page.evaluate(() => window.a2llm.turns())).pop();
    // the two instants (frame centres) whose mouth curves differ most
    const pick = await page.evaluate((pattern) => {
      const re = new RegExp(pattern, "i");
      const t = window.a2llm.turns().pop();
      const lid = t.layouts[3] ? 3 : 2;
      const n = t.layouts[lid].count;
      const names = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
        "mouthStretchLeft", "mouthStretchRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
        "mouthUpperUpRight", "mouthRollLower", "mouthRollUpper"].filter((x) => re.test(x));
      const frames = [];
      for (let k = 0; k < n; k++) frames.push(names.map((c) => window.a2llm.curveAt(c, k * 960) ?? 0));
      let best = [0, 0, -1];
      // the answer's first 6 frames are crossfaded from the idle face (PROTOCOL.md 10.9): compare the frames after it
      const from = Math.min(6, n - 2);
      for (let i = from; i < n; i++)
        for (let j = i + 1; j < n; j++) {
          const d = Math.abs(frames[i][0] - frames[j][0]) * 2 + frames[i].reduce((a, v, c) => a + Math.abs(v - frames[j][c]), 0);
          if (d > best[2]) best = [i, j, d];
        }
      return { names, a: best[0], b: best[1], valuesA: frames[best[0]], valuesB: frames[best[1]], frames: n };
    }, MOUTH.source);
    const rect = await page.evaluate(() => window.a2llm.mouthRect());
    const pad = Math.max(12, 0.25 * Math.max(rect.width, rect.height));
    const clip = { x: rect.x - pad, y: rect.y - pad, width: rect.width + 2 * pad, height: rect.height + 2 * pad };
    for (const [name, k] of [["mouth_a.png", pick.a], ["mouth_b.png", pick.b]]) {
      await page.evaluate((s) => window.a2llm.seek(s), k * 960);
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      await page.screenshot({ path: join(o.out, name), clip });
    }
    // a good-looking still for the README: mouth open, curves and text on screen
    const open = pick.valuesA[0] >= pick.valuesB[0] ? pick.a : pick.b;
    await page.evaluate((s) => window.a2llm.seek(s), open * 960);
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    if (!shot) await page.screenshot({ path: join(o.out, "page.png") });
    if (o.screenshot) await page.screenshot({ path: o.screenshot });
    const result = {
      turn,
      console_errors: consoleErrors,
      decode_errors: await page.evaluate(() => window.a2llm.decodeErrors()),
      too_long: tooLong,
      sent: await page.evaluate(() => window.a2llm.sent()),
      pick,
      mouth_rect: rect,
      clip,
      live,
      seconds: (Date.now() - tPage) / 1000,
    };
    writeFileSync(join(o.out, "result.json"), JSON.stringify(result, null, 1));
    await page.close();
  }
}

main().catch((e) => {
  process.stderr.write(`e2e failed: ${e.stack || e}\n`);
  process.exit(1);
});
