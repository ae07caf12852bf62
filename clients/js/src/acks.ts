// What every helper's request shares: how long its ack may take, which refusals are worth another try, and an
// ack's error (a timed-out ack is UNAVAILABLE).
import type { ErrorBody, ErrorCode } from "./protocol.js";

export const ACK_TIMEOUT = 10_000;
export const RETRY_MS = 1_000;
export const TRANSIENT: readonly ErrorCode[] = ["RATE_LIMITED", "UNAVAILABLE", "INTERNAL"];

/** The error an ack answered, or null when it succeeded. */
export function ackError(event: string, err: Error | null, ack: { ok: true } | { ok: false; error: ErrorBody }): ErrorBody | null {
  if (err) return { code: "UNAVAILABLE", message: `${event}: ${err.message}` };
  return ack.ok ? null : ack.error;
}
