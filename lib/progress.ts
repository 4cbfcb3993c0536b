/**
 * Progress of long transfers: a download's bytes or a push's objects. Each
 * reporter logs an info line at most once per interval (10 s by default),
 * or draws a bar on a terminal instead, when one is configured.
 */
import type { LogAttributes, Logger } from "./log.ts";

/** Unit of a progress count. `bytes` prints as kB, MB and GB, and `objects` as a plain count. */
export type ProgressUnit = "bytes" | "objects";

/** Options of {@linkcode createProgress}. */
export interface ProgressOptions {
  /** Message of each progress log line, such as `Downloading Citalid version`. */
  message: string;
  /** Text before the bar on a terminal. @default message */
  title?: string;
  unit: ProgressUnit;
  /** Expected count, such as the Content-Length, or undefined when unknown. */
  total?: number;
  logger: Logger;
  /** Attributes of each progress log line, such as the version id. */
  attributes?: LogAttributes;
  /** Minimum time between two progress log lines, in milliseconds. @default configureProgress's value, else 10000 */
  intervalMs?: number;
  /** Terminal to draw a bar on instead of logging. @default configureProgress's terminal, else none */
  terminal?: ProgressTerminal;
  /** Returns a monotonic time in milliseconds. @default performance.now */
  now?: () => number;
}

/** A running progress report. */
export interface Progress {
  /** Adds `count` units done. A negative or non-finite count is ignored. */
  advance(count: number): void;
  /** Ends the report and removes the bar. Later calls of either method do nothing. */
  done(): void;
  /** Units done so far. */
  readonly count: number;
}

/** Default interval between two progress log lines, in milliseconds. */
export const DEFAULT_PROGRESS_INTERVAL_MS = 10_000;

// A bar redrawn more often than this only flickers.
const BAR_REDRAW_MS = 100;
// Short enough that a bar with typical counts fits 80 columns. formatBar cuts longer lines.
const BAR_WIDTH = 20;

const defaults: { intervalMs: number; terminal: ProgressTerminal | undefined } = {
  intervalMs: DEFAULT_PROGRESS_INTERVAL_MS,
  terminal: undefined,
};

/**
 * Sets the process-wide defaults of {@linkcode createProgress}: the log
 * interval in milliseconds and the terminal that gets a bar. Keys left out
 * keep their value, and `terminal: undefined` goes back to log lines.
 */
export function configureProgress(settings: { intervalMs?: number; terminal?: ProgressTerminal }): void {
  if (settings.intervalMs !== undefined) {
    defaults.intervalMs = settings.intervalMs;
  }
  if ("terminal" in settings) {
    defaults.terminal = settings.terminal;
  }
}

/**
 * Starts a progress report. Without a terminal it logs one info line with
 * the count, the total when known, the percentage, the average rate per
 * second and the estimated seconds left, at most once per `intervalMs`,
 * so a transfer shorter than that logs nothing. With a terminal it redraws
 * a bar instead, at most every 100 ms, and removes it on `done()`.
 */
export function createProgress(options: ProgressOptions): Progress {
  const now = options.now ?? (() => performance.now());
  const intervalMs = options.intervalMs ?? defaults.intervalMs;
  const terminal = options.terminal ?? defaults.terminal;
  const startedAt = now();
  let lastReportAt = startedAt;
  let count = 0;
  let finished = false;

  const snapshot = () => describeProgress(count, options.total, (now() - startedAt) / 1000);

  function report(): void {
    const at = now();
    if (terminal) {
      if (at - lastReportAt >= BAR_REDRAW_MS) {
        lastReportAt = at;
        terminal.draw(formatBar(options.title ?? options.message, options.unit, snapshot(), terminal.columns()));
      }
      return;
    }
    if (at - lastReportAt >= intervalMs) {
      lastReportAt = at;
      options.logger.info(options.message, { ...options.attributes, ...logAttributes(options.unit, snapshot()) });
    }
  }

  return {
    advance(step) {
      if (finished || !Number.isFinite(step) || step < 0) {
        return;
      }
      count += step;
      report();
    },
    done() {
      if (finished) {
        return;
      }
      finished = true;
      terminal?.clear();
    },
    get count() {
      return count;
    },
  };
}

/** Counts and rates of a progress at one moment. */
interface ProgressSnapshot {
  count: number;
  total: number | undefined;
  /** Percentage done with one decimal, or undefined without a total. */
  percent: number | undefined;
  /** Average units per second since the start. */
  rate: number;
  /** Estimated seconds left at the average rate, or undefined without a total or a rate. */
  etaSeconds: number | undefined;
}

function describeProgress(count: number, total: number | undefined, elapsedSeconds: number): ProgressSnapshot {
  const rate = elapsedSeconds > 0 ? count / elapsedSeconds : 0;
  const percent = total !== undefined && total > 0 ? Math.min(100, Math.round((count / total) * 1000) / 10) : undefined;
  const etaSeconds =
    total !== undefined && rate > 0 ? Math.max(0, Math.round((total - count) / rate)) : undefined;
  return { count, total, percent, rate, etaSeconds };
}

function logAttributes(unit: ProgressUnit, snapshot: ProgressSnapshot): LogAttributes {
  return {
    [unit]: snapshot.count,
    [`total_${unit}`]: snapshot.total ?? null,
    percent: snapshot.percent ?? null,
    [`${unit}_per_second`]: Math.round(snapshot.rate),
    eta_seconds: snapshot.etaSeconds ?? null,
  };
}

function formatBar(title: string, unit: ProgressUnit, snapshot: ProgressSnapshot, columns: number): string {
  let amount: string;
  let rate: string;
  if (unit === "objects") {
    amount = snapshot.total === undefined ? formatCount(unit, snapshot.count) : `${snapshot.count}/${formatCount(unit, snapshot.total)}`;
    rate = `${Math.round(snapshot.rate)}/s`;
  } else {
    amount = snapshot.total === undefined ? formatCount(unit, snapshot.count) : `${formatCount(unit, snapshot.count)} / ${formatCount(unit, snapshot.total)}`;
    rate = `${formatCount(unit, snapshot.rate)}/s`;
  }
  let bar = "";
  if (snapshot.percent !== undefined) {
    const filled = Math.round((snapshot.percent / 100) * BAR_WIDTH);
    bar = ` [${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}] ${snapshot.percent.toFixed(1)}%`;
  }
  const line = `${title}${bar}  ${amount}  ${rate}`;
  // A line wider than the terminal wraps, and "\r" then only returns to the wrapped part.
  return line.length < columns ? line : line.slice(0, columns - 1);
}

/** Formats a count: bytes in SI units (1 MB = 1,000,000 bytes), objects as a whole number. */
export function formatCount(unit: ProgressUnit, value: number): string {
  if (unit === "objects") {
    return `${Math.round(value)} objects`;
  }
  const units = ["B", "kB", "MB", "GB", "TB"];
  let scaled = value;
  let index = 0;
  while (scaled >= 1000 && index < units.length - 1) {
    scaled /= 1000;
    index++;
  }
  return index === 0 ? `${Math.round(scaled)} B` : `${scaled.toFixed(1)} ${units[index]}`;
}

/** Options of {@linkcode ProgressTerminal}. */
export interface ProgressTerminalOptions {
  /** Writes text to the terminal as is. */
  write: (text: string) => void;
  /** Returns the terminal's width in characters. @default 80 */
  columns?: () => number;
}

/**
 * A terminal line that shows one progress bar below the log lines. Log
 * lines must go through `writeLine`, which removes the bar, prints the
 * line and draws the bar again, so that the two never share a line.
 */
export class ProgressTerminal {
  readonly #write: (text: string) => void;
  readonly #columns: () => number;
  #bar: string | undefined;

  constructor(options: ProgressTerminalOptions) {
    this.#write = options.write;
    this.#columns = options.columns ?? (() => 80);
  }

  /** Returns the terminal's width in characters, or 80 when the terminal reports none. */
  columns(): number {
    const columns = this.#columns();
    // A pseudo-terminal without a window size, such as one that script(1) opens, reports 0.
    return Number.isInteger(columns) && columns > 0 ? columns : 80;
  }

  /** Replaces the bar with `text`, which must not contain a newline. */
  draw(text: string): void {
    this.#bar = text;
    this.#write(`\r\x1b[2K${text}`);
  }

  /** Removes the bar, if one is shown. */
  clear(): void {
    if (this.#bar !== undefined) {
      this.#bar = undefined;
      this.#write("\r\x1b[2K");
    }
  }

  /** Prints one log line above the bar. */
  writeLine(line: string): void {
    if (this.#bar === undefined) {
      this.#write(line + "\n");
      return;
    }
    this.#write(`\r\x1b[2K${line}\n${this.#bar}`);
  }
}

/**
 * Returns a terminal on stderr for progress bars when stderr is a terminal
 * and `jsonLogging` is false, else undefined, because JSON lines are read
 * by programs that a bar would confuse.
 */
export function stderrProgressTerminal(jsonLogging: boolean): ProgressTerminal | undefined {
  if (jsonLogging || process.stderr.isTTY !== true) {
    return undefined;
  }
  return new ProgressTerminal({
    write: (text) => process.stderr.write(text),
    columns: () => process.stderr.columns ?? 80,
  });
}

/**
 * Wraps a response so that `onProgress(bytes, total)` is called as its body
 * is read: once with 0 before the first chunk, after each chunk with the
 * bytes received so far, and, when the body ends, with `bytes` equal to
 * `total`. `total` is the Content-Length, or undefined until the end when
 * the server sent none or compressed the body (fetch then counts the
 * decompressed bytes). Errors of the body stream reach the reader unchanged.
 */
export function reportBodyProgress(response: Response, onProgress: (bytes: number, total: number | undefined) => void): Response {
  if (response.body === null) {
    return response;
  }
  const encoding = response.headers.get("content-encoding");
  const length = Number(response.headers.get("content-length") ?? Number.NaN);
  const total = (encoding === null || encoding === "identity") && Number.isInteger(length) && length >= 0 ? length : undefined;

  let received = 0;
  onProgress(0, total);
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      received += chunk.byteLength;
      controller.enqueue(chunk);
      onProgress(received, total);
    },
    flush() {
      if (received !== total) {
        onProgress(received, received);
      }
    },
  });
  return new Response(response.body.pipeThrough(counter), {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

/** Options of {@linkcode trackDownloads}. */
export interface DownloadTrackerOptions {
  logger: Logger;
  /** Called with each chunk's size in bytes, for the bytes-downloaded metric. */
  onBytes?: (bytes: number) => void;
  /** Passed to {@linkcode createProgress}. */
  intervalMs?: number;
  /** Passed to {@linkcode createProgress}. */
  terminal?: ProgressTerminal;
  /** Passed to {@linkcode createProgress}. */
  now?: () => number;
}

/** Progress of the Citalid downloads, fed by the client's `onProgress` callback. */
export interface DownloadTracker {
  /** The client's `onProgress`: a call with 0 bytes starts a new report, and `bytes === total` ends it. */
  onProgress(versionId: string, bytes: number, total: number | undefined): void;
  /** Ends the report under way, such as one whose download failed. */
  finish(): void;
}

/**
 * Creates the progress of Citalid downloads: one report per download
 * attempt, logged as `Downloading Citalid version` with `version_id`.
 */
export function trackDownloads(options: DownloadTrackerOptions): DownloadTracker {
  let current: { versionId: string; progress: Progress; bytes: number } | undefined;

  const finish = () => {
    current?.progress.done();
    current = undefined;
  };

  return {
    onProgress(versionId, bytes, total) {
      if (bytes === 0 || current === undefined || current.versionId !== versionId || bytes < current.bytes) {
        finish();
        current = {
          versionId,
          bytes: 0,
          progress: createProgress({
            message: "Downloading Citalid version",
            title: `Downloading ${versionId}`,
            unit: "bytes",
            total,
            logger: options.logger,
            attributes: { version_id: versionId },
            intervalMs: options.intervalMs,
            terminal: options.terminal,
            now: options.now,
          }),
        };
      }
      const step = bytes - current.bytes;
      current.bytes = bytes;
      if (step > 0) {
        current.progress.advance(step);
        options.onBytes?.(step);
      }
      if (total !== undefined && bytes >= total) {
        finish();
      }
    },
    finish,
  };
}
