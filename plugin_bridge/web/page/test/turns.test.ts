// What ends a turn on the page: TurnEnd, and the Errors after which the server gives up on the turn (AUDIO_TOO_LONG,
// TURN_FAILED). Such a turn is final: never cancelled afterwards, never waited on, its audio never resent.
import { describe, expect, it } from "vitest";
import { ErrorCode, Kind, type Message, TurnStatus } from "../src/protocol";
import { FINAL_ERRORS, TurnEnds, turnEnding } from "../src/turns";

const hdr = (turn_id: number, seq = 0) => ({ version: 1, flags: 0, turn_id, seq, send_time_us: 0 });

function error(code: ErrorCode, turn_id: number): Message {
  return { ...hdr(turn_id), kind: Kind.ERROR, code, message: `code ${code}` } as unknown as Message;
}

function turnEnd(status: TurnStatus, turn_id: number): Message {
  const counts = { ttft_s: -1, ttfa_s: -1, first_audio_s: -1, rtf: -1, total_s: 0, text_bytes: 0, text_deltas: 0 };
  return { ...hdr(turn_id), kind: Kind.TURN_END, status, ...counts, audio_samples: 0, audio_chunks: 0, face_frames: 0 } as unknown as Message;
}

describe("turn endings", () => {
  it("AUDIO_TOO_LONG ends the turn as FAILED at once; the TurnEnd(FAILED) that follows is not a second ending", () => {
    const ends = new TurnEnds();
    expect(ends.needsCancel(3)).toBe(true);
    const e = ends.observe(error(ErrorCode.AUDIO_TOO_LONG, 3));
    expect(e).toMatchObject({ turn_id: 3, status: TurnStatus.FAILED, code: ErrorCode.AUDIO_TOO_LONG });
    expect(e!.reason).toContain("AUDIO_TOO_LONG");
    expect(ends.isOver(3)).toBe(true);
    expect(ends.needsCancel(3)).toBe(false); // no Cancel for it before the next turn
    expect(ends.observe(turnEnd(TurnStatus.FAILED, 3))).toBeNull();
    expect(ends.observe(error(ErrorCode.AUDIO_TOO_LONG, 3))).toBeNull(); // repeated errors: still one ending
    expect(ends.ending(3)?.code).toBe(ErrorCode.AUDIO_TOO_LONG);
    expect(ends.needsCancel(4)).toBe(true); // the next turn is a new one
  });

  it("TURN_FAILED is final too", () => {
    const ends = new TurnEnds();
    expect(ends.observe(error(ErrorCode.TURN_FAILED, 7))).toMatchObject({ turn_id: 7, status: TurnStatus.FAILED });
    expect(ends.needsCancel(7)).toBe(false);
    expect([...FINAL_ERRORS].sort()).toEqual([ErrorCode.TURN_FAILED, ErrorCode.AUDIO_TOO_LONG].sort());
  });

  it("errors a client can recover from do not end the turn", () => {
    const ends = new TurnEnds();
    const codes = [ErrorCode.BAD_VALUE, ErrorCode.NON_FINITE, ErrorCode.TURN_IN_PROGRESS, ErrorCode.UNKNOWN_TURN,
      ErrorCode.NOT_WELCOMED, ErrorCode.SESSION_EXPIRED, ErrorCode.SERVER_BUSY, ErrorCode.CLIENT_TOO_SLOW];
    for (const code of codes) expect(ends.observe(error(code, 5))).toBeNull();
    expect(ends.isOver(5)).toBe(false);
    expect(ends.needsCancel(5)).toBe(true);
  });

  it("TurnEnd ends the turn with its status; turn 0 messages never end a turn", () => {
    const ends = new TurnEnds();
    expect(ends.observe(turnEnd(TurnStatus.COMPLETED, 2))).toMatchObject({ turn_id: 2, status: TurnStatus.COMPLETED, code: null });
    expect(ends.observe(turnEnd(TurnStatus.CANCELLED, 9))?.reason).toBe("cancelled");
    expect(turnEnding(error(ErrorCode.AUDIO_TOO_LONG, 0))).toBeNull();
    expect(ends.needsCancel(0)).toBe(false);
    expect(ends.isOver(2) && ends.isOver(9)).toBe(true);
  });
});
