// Decoder parity with protocol.py: A2LLM_PARITY_FILE (written by tests/plugin_bridge/test_browser.py from mutated
// golden fixtures, versions 1 and 2) holds u32 count, then per case u32 length, u16 protocol.py's ErrorCode (0 =
// accepted) and the bytes. protocol.ts must give every case the same code. Skipped when the file is not given.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { decode, ProtocolError } from "../src/protocol";

const path = process.env.A2LLM_PARITY_FILE;

describe.skipIf(!path)("decoder parity with protocol.py", () => {
  it("every mutated message gets protocol.py's verdict", () => {
    const blob = new Uint8Array(readFileSync(path!));
    const v = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const count = v.getUint32(0, true);
    let pos = 4;
    const differ: string[] = [];
    let accepted = 0;
    for (let i = 0; i < count; i++) {
      const len = v.getUint32(pos, true);
      const want = v.getUint16(pos + 4, true);
      const msg = blob.slice(pos + 6, pos + 6 + len);
      pos += 6 + len;
      let got = 0;
      try {
        decode(msg);
        accepted++;
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        got = e.code;
      }
      if (got !== want && differ.length < 5) differ.push(`case ${i}: protocol.ts ${got}, protocol.py ${want}`);
    }
    expect(differ).toEqual([]);
    expect(accepted).toBeGreaterThan(0);
    console.log(`parity: ${count} cases, ${accepted} accepted`);
  });
});
