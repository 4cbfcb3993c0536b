/**
 * The connector's timings: waits, intervals and timeouts in milliseconds,
 * their production values, and the environment variables that tests use to
 * shorten them.
 */

import { FatalError } from "./errors.ts";

/** Timing knobs, shortened by tests; the defaults are the production values. */
export interface Timings {
  /** First retry delay of both clients, in milliseconds. @default 1000 */
  retryDelayMs: number;
  /** Time between two pings, in milliseconds. @default 40000 */
  pingIntervalMs: number;
  /** Time between two queue checks while buffering, in milliseconds. @default 60000 */
  bufferingRecheckMs: number;
  /** Maximum wait between two attempts to reach the platform at start-up, in milliseconds. @default 60000 */
  startupMaxDelayMs: number;
  /** Time a shutdown may take before the process exits anyway, in milliseconds. @default 9000 */
  shutdownGraceMs: number;
  /** Time a one-shot run waits for the platform at start-up before it fails, in milliseconds. @default 900000 */
  onceStartupTimeoutMs: number;
  /**
   * Time allowed for the response headers of one Citalid request, for the
   * body of a response other than a download, and between two chunks of a
   * download's body, in milliseconds. @default 30000
   */
  citalidTimeoutMs: number;
  /** Time allowed for the body of one Citalid download, from its response headers, in milliseconds. @default 3600000 */
  citalidDownloadTimeoutMs: number;
  /** Time allowed for one OpenCTI request, in milliseconds. @default 300000 */
  openctiTimeoutMs: number;
  /** Minimum time between two progress lines of a download or a push, in milliseconds. @default 10000 */
  progressIntervalMs: number;
}

/** Production timings. */
export const DEFAULT_TIMINGS: Timings = {
  retryDelayMs: 1000,
  pingIntervalMs: 40_000,
  bufferingRecheckMs: 60_000,
  startupMaxDelayMs: 60_000,
  shutdownGraceMs: 9000,
  citalidTimeoutMs: 30_000,
  citalidDownloadTimeoutMs: 3_600_000,
  openctiTimeoutMs: 300_000,
  progressIntervalMs: 10_000,
  onceStartupTimeoutMs: 900_000,
};

/**
 * The environment variables that override {@linkcode Timings}, in
 * milliseconds, by the timing each one sets. Tests use them to shorten
 * waits; the README's test section lists them.
 */
export const TIMING_VARIABLES = {
  CONNECTOR_RETRY_DELAY_MS: "retryDelayMs",
  CONNECTOR_PING_INTERVAL_MS: "pingIntervalMs",
  CONNECTOR_BUFFERING_RECHECK_MS: "bufferingRecheckMs",
  CONNECTOR_SHUTDOWN_GRACE_MS: "shutdownGraceMs",
  CONNECTOR_ONCE_STARTUP_TIMEOUT_MS: "onceStartupTimeoutMs",
  CONNECTOR_CITALID_TIMEOUT_MS: "citalidTimeoutMs",
  CONNECTOR_CITALID_DOWNLOAD_TIMEOUT_MS: "citalidDownloadTimeoutMs",
  CONNECTOR_OPENCTI_TIMEOUT_MS: "openctiTimeoutMs",
  CONNECTOR_PROGRESS_INTERVAL_MS: "progressIntervalMs",
} as const satisfies Record<string, keyof Timings>;

// The maximum delay of setTimeout and of ky's timeout option, 2^31 - 1 ms.
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Reads the timing overrides of {@linkcode TIMING_VARIABLES}, in
 * milliseconds. An empty value counts as unset. Raises FatalError on a
 * value that is not a whole number from 1 to 2147483647.
 */
export function timingsFromEnv(env: Record<string, string | undefined>): Partial<Timings> {
  const timings: Partial<Timings> = {};
  for (const [name, key] of Object.entries(TIMING_VARIABLES)) {
    const raw = env[name];
    if (raw === undefined || raw === "") {
      continue;
    }
    const value = Number(raw);
    if (!Number.isInteger(value) || value <= 0) {
      throw new FatalError(`${name} is "${raw}": use a whole number of milliseconds above 0`);
    }
    if (value > MAX_TIMER_MS) {
      throw new FatalError(`${name} is "${raw}": use at most ${MAX_TIMER_MS} milliseconds (about 24.8 days), the longest timer`);
    }
    timings[key] = value;
  }
  if (timings.retryDelayMs !== undefined) {
    timings.startupMaxDelayMs = Math.max(timings.retryDelayMs * 8, 1);
  }
  return timings;
}
