// Game characters in a real browser (protocol version 2): Debian's Chromium (headless) driven by playwright-core.
//
//   node e2e/handsfree.mjs --url http://127.0.0.1:8080/ --mic-wav conversation.wav --out OUT/ [--timeout-ms N]
//
// Chromium's fake microphone plays --mic-wav once (--use-file-for-fake-audio-capture=FILE%noloop). The script loads the
// page, sets a character and a game context (waits for both ConfigAcks), sends a typed turn and waits for its answer,
// checks the idle face streams between turns, then switches hands-free on: the page streams the microphone, the
// server's VAD cuts the file's utterances, the second one is spoken while the first answer plays (barge-in), and the
// script waits for the second answer to complete. Writes OUT/result.json (the page's turns, speech events, ConfigAcks,
// what it sent, idle counts, console and decode errors). Exit code 0 unless the browser failed; the Python test judges.
// No wall-clock assertion anywhere: every wait has the same generous timeout (only a hang reaches it).
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";

function args() {
  const a = process.argv.slice(2);
  const get = (k, d) => {
    const i = a.indexOf(k);
    return i >= 0 ? a[i + 1] : d;
  };
  return {
    url: get("--url", "http://127.0.0.1:8080/"),
    micWav: resolve(get("--mic-wav", "")),
    out: resolve(get("--out", "e2e-out")),
    chromium: get("--chromium", "/usr/bin/chromium"),
    timeout: Number(get("--timeout-ms", "30000")),
  };
}

async function main() {
  const o = args();
  mkdirSync(o.out, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "a2llm-chromium-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: o.chromium,
    viewport: { width: 1280, height: 760 },
    headless: true,
    timeout: o.timeout,
    permissions: ["microphone"],
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      "--use-angle=swiftshader",
      "--enable-unsafe-swiftshader",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${o.micWav}%noloop`,
    ],
  });
  const t0 = Date.now();
  const log = (m) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(2)} s] ${m}\n`);
  const consoleErrors = [];
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(o.timeout);
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
    const wait = (fn, arg) => page.waitForFunction(fn, arg, { timeout: o.timeout, polling: 50 });
    await page.goto(o.url);
    await wait(() => window.a2llm?.ready() && window.a2llm.serverInfo() !== null);
    log(`page ready, protocol version ${await page.evaluate(() => window.a2llm.version())}`);

    // the character and the game context: one ConfigAck each
    const emotion = await page.evaluate(() => window.a2llm.serverInfo().emotions.find((e) => e !== "neutral"));
    await page.evaluate(
      (em) =>
        window.a2llm.setCharacter({
          persona: "You are Mira, a grumpy blacksmith. Ünïcödé persona.",
          voice: "",
          emotion: em,
          intensity: 0.6,
          emotion_modes: 3,
        }),
      emotion,
    );
    await page.evaluate(() => window.a2llm.setContext("The player just lost the battle."));
    await wait(() => window.a2llm.acks().length >= 2);
    log("character and context applied");

    // a typed turn, answered with speech and face
    const textTurn = await page.evaluate(() => window.a2llm.sendText("Hello, who are you?"));
    await wait((id) => window.a2llm.turns().find((t) => t.id === id)?.status != null, textTurn);
    await wait(() => !window.a2llm.playing());
    log("typed turn answered");

    // between turns the idle face streams and is shown
    const idle0 = await page.evaluate(() => window.a2llm.idle());
    await wait((n) => window.a2llm.idle().received > n + 10 && window.a2llm.idle().shown > 0, idle0.received);
    log("idle face streaming");

    // hands-free: the fake microphone plays the conversation once
    await page.evaluate(() => window.a2llm.handsFree(true));
    log("hands-free on");
    await wait(() => window.a2llm.speech().filter((e) => e.kind === "end").length >= 2);
    log("second utterance ended");
    const micRate = await page.evaluate(() => window.a2llm.micRate());
    await wait(() => {
      const ends = window.a2llm.speech().filter((e) => e.kind === "end");
      const t = window.a2llm.turns().find((x) => x.id === ends[1].turn);
      return t?.status != null;
    });
    await wait(() => !window.a2llm.playing());
    log("second answer done");
    await page.evaluate(() => window.a2llm.handsFree(false));
    const result = {
      text_turn: textTurn,
      turns: await page.evaluate(() => window.a2llm.turns()),
      speech: await page.evaluate(() => window.a2llm.speech()),
      acks: await page.evaluate(() => window.a2llm.acks()),
      sent: await page.evaluate(() => ({ ...window.a2llm.sent(), ...window.a2llm.sentV2() })),
      idle: await page.evaluate(() => window.a2llm.idle()),
      mic_rate: micRate,
      faded_at: await page.evaluate(() => window.a2llm.fadedAt()),
      server_info: await page.evaluate(() => window.a2llm.serverInfo()),
      console_errors: consoleErrors,
      decode_errors: await page.evaluate(() => window.a2llm.decodeErrors()),
      seconds: (Date.now() - t0) / 1000,
    };
    writeFileSync(join(o.out, "result.json"), JSON.stringify(result, null, 1));
    await page.screenshot({ path: join(o.out, "page.png") });
    process.stdout.write(JSON.stringify({ ok: true, seconds: result.seconds }) + "\n");
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`e2e failed: ${e.stack || e}\n`);
  process.exit(1);
});
