import { fstatSync } from "node:fs";
import type { LogLevel } from "./config.ts";

/** Key-value pairs attached to a log line: ids, counts, durations. */
export type LogAttributes = Record<string, unknown>;

/** Structured logger with the Python helper's levels. */
export interface Logger {
  debug(message: string, attributes?: LogAttributes): void;
  info(message: string, attributes?: LogAttributes): void;
  warn(message: string, attributes?: LogAttributes): void;
  error(message: string, attributes?: LogAttributes): void;
  /** Adds strings that must never be printed; each is replaced by `***`. */
  addSecrets(...secrets: (string | undefined)[]): void;
  /** Changes the minimum level printed. */
  setLevel(level: LogLevel): void;
  /** Returns the text with every registered secret replaced by `***`, for output that bypasses the logger. */
  mask(text: string): string;
}

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Logger name printed in each line, as the Python helper does. @default "Citalid" */
  name?: string;
  /** @default "info" */
  level?: LogLevel;
  /** JSON lines (true) or readable lines (false). @default true */
  json?: boolean;
  /** Function that writes one line. @default a write to process.stderr */
  write?: (line: string) => void;
  /**
   * Prefix each line with the sd-daemon severity (`<3>` for errors) so that
   * `journalctl -p` filters work. @default true when `JOURNAL_STREAM` names
   * the file that stderr is open on
   */
  journald?: boolean;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

// Python's logging prints WARNING, and tools built for pycti logs match on it.
const LEVEL_NAME: Record<LogLevel, string> = {
  debug: "DEBUG",
  info: "INFO",
  warn: "WARNING",
  error: "ERROR",
};

// sd-daemon(3) priorities: 7 debug, 6 info, 4 warning, 3 error.
const SYSLOG_PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };

/**
 * Creates a logger that writes one line per call to stderr: the Python
 * helper's JSON shape (`timestamp`, `level`, `name`, `message`, `attributes`)
 * or, with `json: false`, `LEVEL name: message {attributes}`. Registered
 * secrets are masked in the message and in every attribute value.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const name = options.name ?? "Citalid";
  const json = options.json ?? true;
  const journald = options.journald ?? isJournalStream(process.env.JOURNAL_STREAM);
  const write = options.write ?? ((line: string) => process.stderr.write(line + "\n"));
  const secrets: string[] = [];
  let minimum = RANK[options.level ?? "info"];

  function maskValue(value: unknown): unknown {
    return typeof value === "string" ? mask(value) : value;
  }

  function mask(text: string): string {
    let masked = text;
    for (const secret of secrets) {
      masked = masked.split(secret).join("***");
    }
    return masked;
  }

  function emit(level: LogLevel, message: string, attributes?: LogAttributes): void {
    if (RANK[level] < minimum) {
      return;
    }

    const timestamp = new Date().toISOString();
    let line: string;
    if (json) {
      const record: Record<string, unknown> = {
        timestamp,
        level: LEVEL_NAME[level],
        name,
        message,
      };
      if (attributes && Object.keys(attributes).length > 0) {
        record.attributes = attributes;
      }
      // Masking before serialising catches a secret that a server echoed in
      // escaped form, which JSON escaping would otherwise change again.
      line = JSON.stringify(record, (key, value) => maskValue(replaceErrors(key, value)));
    } else {
      const suffix =
        attributes && Object.keys(attributes).length > 0
          ? " " + JSON.stringify(attributes, (key, value) => maskValue(replaceErrors(key, value)))
          : "";
      line = `${timestamp} ${LEVEL_NAME[level]} ${name}: ${message}${suffix}`;
    }

    line = mask(line);
    if (journald) {
      line = `<${SYSLOG_PRIORITY[level]}>${line}`;
    }
    write(line);
  }

  return {
    debug: (message, attributes) => emit("debug", message, attributes),
    info: (message, attributes) => emit("info", message, attributes),
    warn: (message, attributes) => emit("warn", message, attributes),
    error: (message, attributes) => emit("error", message, attributes),
    mask,
    addSecrets(...values) {
      for (const value of values) {
        // Very short values would mask ordinary words in every line.
        if (value && value.length >= 4 && !secrets.includes(value)) {
          secrets.push(value);
          // JSON escaping changes how some characters appear in a line.
          const escaped = JSON.stringify(value).slice(1, -1);
          if (escaped !== value) {
            secrets.push(escaped);
          }
          const encoded = encodeURIComponent(value);
          if (encoded !== value) {
            secrets.push(encoded);
          }
        }
      }
      secrets.sort((a, b) => b.length - a.length);
    },
    setLevel(level) {
      minimum = RANK[level];
    },
  };
}

/**
 * Returns true when `journalStream`, the `$JOURNAL_STREAM` that systemd sets
 * ("device:inode" in decimal), names the file open as `fd`. systemd.exec(5)
 * advises this check because a process started by a service inherits the
 * variable even when its stderr goes elsewhere, such as to a terminal.
 */
export function isJournalStream(journalStream: string | undefined, fd = 2): boolean {
  const match = /^(\d+):(\d+)$/.exec(journalStream ?? "");
  if (match === null) {
    return false;
  }
  try {
    const stats = fstatSync(fd, { bigint: true });
    return stats.dev === BigInt(match[1]!) && stats.ino === BigInt(match[2]!);
  } catch {
    return false;
  }
}

function replaceErrors(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    return value.message;
  }
  return value;
}

/** Logger that prints nothing, for unit tests of modules that log. */
export const silentLogger: Logger = createLogger({ write: () => {} });
