// Which messages end a turn, for good. A TurnEnd always does. So does an Error that the server sends only when the
// turn cannot go on: AUDIO_TOO_LONG (the utterance went past the server's limit and was dropped) and TURN_FAILED (the
// engine failed). Such a turn is FAILED and final: the page does not resend its audio, does not Cancel it, and waits
// for nothing more from it. The server follows either Error with one TurnEnd(FAILED) (and drops the turn's remaining
// audio chunks silently); an older server sent no TurnEnd after AUDIO_TOO_LONG, so the Error alone ends the turn here.
import * as P from "./protocol";

/** Error codes after which the turn named by the Error's turn_id is over (PROTOCOL.md §7). */
export const FINAL_ERRORS: ReadonlySet<number> = new Set([P.ErrorCode.AUDIO_TOO_LONG, P.ErrorCode.TURN_FAILED]);

export interface TurnEnding {
  turn_id: number;
  status: P.TurnStatus;
  /** the Error's code when an Error ended the turn, else null (a TurnEnd) */
  code: P.ErrorCode | null;
  /** what to show: the Error's message, or the TurnEnd status */
  reason: string;
}

/** How `m` ends a turn, or null when it does not (other messages, turn 0, errors a client may recover from). */
export function turnEnding(m: P.Message): TurnEnding | null {
  if (m.turn_id === 0) return null;
  if (m.kind === P.Kind.TURN_END) {
    return { turn_id: m.turn_id, status: m.status, code: null, reason: P.TurnStatus[m.status].toLowerCase() };
  }
  if (m.kind === P.Kind.ERROR && FINAL_ERRORS.has(m.code)) {
    const name = P.ErrorCode[m.code] ?? String(m.code);
    return { turn_id: m.turn_id, status: P.TurnStatus.FAILED, code: m.code, reason: `${name}: ${m.message}` };
  }
  return null;
}

/** The turns that are over. Feed it every message; ask it before cancelling or waiting on a turn. */
export class TurnEnds {
  private ended = new Map<number, TurnEnding>();

  /** The ending `m` brings, only the first time a turn ends (a TurnEnd(FAILED) after AUDIO_TOO_LONG returns null). */
  observe(m: P.Message): TurnEnding | null {
    const e = turnEnding(m);
    if (!e || this.ended.has(e.turn_id)) return null;
    this.ended.set(e.turn_id, e);
    for (const id of this.ended.keys()) if (id < e.turn_id - 16) this.ended.delete(id); // keep the last few
    return e;
  }

  isOver(turn: number): boolean {
    return this.ended.has(turn);
  }

  ending(turn: number): TurnEnding | undefined {
    return this.ended.get(turn);
  }

  /** A turn the page started may still run on the server: Cancel it before the next one. Never for an ended turn. */
  needsCancel(turn: number): boolean {
    return turn > 0 && !this.ended.has(turn);
  }
}
