/**
 * Runs the real connector (`main.ts`) as a subprocess against the fakes and
 * collects what it prints. Every line printed is checked for the test
 * secrets, so a leak fails the test that caused it.
 */
import { appendFileSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "bun:test";
import type { FakeCitalid } from "../fakes/citalid.ts";
import type { FakeOpenCTI } from "../fakes/opencti.ts";

const REPO = join(import.meta.dir, "..", "..");

/** Secrets used by the tests; none may appear in anything the connector prints. */
export const TEST_SECRETS = {
  openctiToken: "test-opencti-token-5f0c9a1e",
  citalidPassword: "p&ss=w%rd +é-citalid",
  mqPassword: "guest",
};

/** File that collects the output of every connector process of the suite. */
export const OUTPUT_LOG = join(tmpdir(), "citalid-connector-tests", "connector-output.log");

/** A parsed JSON log line. */
export interface LogLine {
  timestamp: string;
  level: string;
  name: string;
  message: string;
  attributes?: Record<string, unknown>;
}

/** A finished or running connector process. */
export interface ConnectorProcess {
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  /** Lines printed so far on stderr. */
  lines: string[];
  /** Text printed so far on stdout. */
  stdout: () => string;
  /** JSON log lines parsed from stderr. */
  logs: () => LogLine[];
  /** Resolves when a log line with this message (substring) appears; rejects after `timeoutMs`. */
  waitForLog: (message: string | RegExp, timeoutMs?: number) => Promise<LogLine>;
  /** Resolves with the exit code. */
  exited: Promise<number>;
}

/** Returns a fresh temporary folder for a state file. */
export function tempDir(prefix = "citalid-connector-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Builds the environment for a connector run against the two fakes. */
export function connectorEnv(citalid: FakeCitalid, opencti: FakeOpenCTI, stateDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/root",
    OPENCTI_URL: opencti.url,
    OPENCTI_TOKEN: TEST_SECRETS.openctiToken,
    CONNECTOR_ID: "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69",
    CONNECTOR_LOG_LEVEL: "debug",
    CONNECTOR_STATE_FILE: join(stateDir, "state.json"),
    CONNECTOR_RETRY_DELAY_MS: "20",
    CONNECTOR_PING_INTERVAL_MS: "1000",
    CONNECTOR_BUFFERING_RECHECK_MS: "200",
    CITALID_CUSTOMER_SUB_DOMAIN_URL: citalid.url,
    CITALID_USER: citalid.user,
    CITALID_PASSWORD: citalid.password,
    ...extra,
  };
}

/** Starts `main.ts` with the given environment and arguments. */
export function startConnector(env: Record<string, string>, args: string[] = ["--once"], options: { cwd?: string; command?: string[] } = {}): ConnectorProcess {
  const command = options.command ?? [process.execPath, join(REPO, "main.ts")];
  const proc = Bun.spawn([...command, ...args], {
    cwd: options.cwd ?? REPO,
    env,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });

  const lines: string[] = [];
  let stdoutText = "";
  const waiters: { match: string | RegExp; resolve: (line: LogLine) => void }[] = [];
  mkdirSync(join(tmpdir(), "citalid-connector-tests"), { recursive: true });

  const pump = async (stream: ReadableStream<Uint8Array>, onText: (text: string) => void) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      onText(decoder.decode(chunk, { stream: true }));
    }
  };

  let partial = "";
  const stderrDone = pump(proc.stderr, (text) => {
    partial += text;
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) {
      lines.push(line);
      appendFileSync(OUTPUT_LOG, line + "\n");
      const parsed = parseLine(line);
      if (parsed) {
        for (const waiter of [...waiters]) {
          if (matches(parsed, waiter.match)) {
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve(parsed);
          }
        }
      }
    }
  });
  const stdoutDone = pump(proc.stdout, (text) => {
    stdoutText += text;
    appendFileSync(OUTPUT_LOG, text);
  });

  const exited = (async () => {
    const code = await proc.exited;
    await Promise.all([stderrDone, stdoutDone]);
    if (partial) {
      lines.push(partial);
    }
    assertNoSecrets(lines.join("\n") + stdoutText);
    return code;
  })();

  const logs = () => lines.map(parseLine).filter((line): line is LogLine => line !== undefined);
  return {
    proc,
    lines,
    stdout: () => stdoutText,
    logs,
    exited,
    waitForLog(match, timeoutMs = 30_000) {
      const existing = logs().find((line) => matches(line, match));
      if (existing) {
        return Promise.resolve(existing);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`No log line matching ${match} within ${timeoutMs} ms; last lines:\n${lines.slice(-15).join("\n")}`)), timeoutMs);
        waiters.push({
          match,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
      });
    },
  };
}

/** Runs the connector to its end and returns the process with its exit code. */
export async function runConnectorOnce(env: Record<string, string>, args: string[] = ["--once"], options: { cwd?: string; command?: string[] } = {}): Promise<ConnectorProcess & { code: number }> {
  const started = startConnector(env, args, options);
  const code = await started.exited;
  return { ...started, code };
}

/** Fails the test when a test secret appears in the text. */
export function assertNoSecrets(text: string): void {
  for (const secret of [TEST_SECRETS.openctiToken, TEST_SECRETS.citalidPassword, encodeURIComponent(TEST_SECRETS.citalidPassword)]) {
    expect(text.includes(secret)).toBe(false);
  }
}

function parseLine(line: string): LogLine | undefined {
  const start = line.indexOf("{");
  if (start < 0) {
    return undefined;
  }
  try {
    return JSON.parse(line.slice(start)) as LogLine;
  } catch {
    return undefined;
  }
}

function matches(line: LogLine, match: string | RegExp): boolean {
  return typeof match === "string" ? line.message.includes(match) : match.test(line.message);
}
