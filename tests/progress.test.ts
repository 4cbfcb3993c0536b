import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import {
  ProgressTerminal,
  type ProgressOptions,
  configureProgress,
  createProgress,
  formatCount,
  reportBodyProgress,
  trackDownloads,
} from "../lib/progress.ts";
import { startFakeCitalid } from "./fakes/citalid.ts";
import { startFakeOpenCTI } from "./fakes/opencti.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, tempDir } from "./helpers/connector.ts";

interface LogRecord {
  message: string;
  attributes: { [key: string]: unknown };
}

/** Creates a fake monotonic clock in milliseconds that only `tick` moves. */
function fakeClock(start = 1000) {
  let time = start;
  return {
    now: () => time,
    tick: (ms: number) => {
      time += ms;
    },
  };
}

function capture() {
  const records: LogRecord[] = [];
  const logger = createLogger({ journald: false, write: (line) => records.push(JSON.parse(line)) });
  return { logger, records };
}

function fakeTerminal(columns = 120) {
  const writes: string[] = [];
  const terminal = new ProgressTerminal({ write: (text) => writes.push(text), columns: () => columns });
  return { terminal, writes };
}

function start(options: Partial<ProgressOptions> = {}) {
  const clock = fakeClock();
  const { logger, records } = capture();
  const progress = createProgress({ message: "Downloading Citalid version", unit: "bytes", logger, now: clock.now, intervalMs: 10_000, ...options });
  return { clock, records, progress };
}

afterEach(() => {
  configureProgress({ intervalMs: 10_000, terminal: undefined });
});

describe("createProgress log lines", () => {
  test("logs nothing before the interval", () => {
    const { clock, records, progress } = start({ total: 100 });

    clock.tick(9_999);
    progress.advance(50);

    expect(records).toEqual([]);
  });

  test("logs once the interval passed", () => {
    const { clock, records, progress } = start({ total: 4_000_000, attributes: { version_id: "20250301" } });

    clock.tick(10_000);
    progress.advance(1_000_000);

    expect(records).toHaveLength(1);
    expect(records[0]!.message).toBe("Downloading Citalid version");
    expect(records[0]!.attributes).toEqual({
      version_id: "20250301",
      bytes: 1_000_000,
      total_bytes: 4_000_000,
      percent: 25,
      bytes_per_second: 100_000,
      eta_seconds: 30,
    });
  });

  test("logs at most once per interval", () => {
    const { clock, records, progress } = start({ total: 1000 });

    for (let step = 0; step < 100; step++) {
      clock.tick(1_000);
      progress.advance(1);
    }

    expect(records).toHaveLength(10);
  });

  test("unknown total logs nulls", () => {
    const { clock, records, progress } = start();

    clock.tick(20_000);
    progress.advance(500);

    expect(records[0]!.attributes.total_bytes).toBeNull();
    expect(records[0]!.attributes.percent).toBeNull();
    expect(records[0]!.attributes.eta_seconds).toBeNull();
    expect(records[0]!.attributes.bytes_per_second).toBe(25);
  });

  test("objects unit names the attributes", () => {
    const { clock, records, progress } = start({ unit: "objects", message: "Pushing Citalid version", total: 10 });

    clock.tick(10_000);
    progress.advance(5);

    expect(records[0]!.attributes.objects).toBe(5);
    expect(records[0]!.attributes.total_objects).toBe(10);
    expect(records[0]!.attributes.objects_per_second).toBe(1);
  });

  test("count sums the advances", () => {
    const { progress } = start();

    progress.advance(3);
    progress.advance(4);

    expect(progress.count).toBe(7);
  });

  test("ignores negative and non-finite steps", () => {
    const { progress } = start();

    progress.advance(-5);
    progress.advance(Number.NaN);
    progress.advance(Number.POSITIVE_INFINITY);

    expect(progress.count).toBe(0);
  });

  test("ignores advances after done", () => {
    const { clock, records, progress } = start();

    progress.done();
    clock.tick(60_000);
    progress.advance(10);

    expect(progress.count).toBe(0);
    expect(records).toEqual([]);
  });

  test("uses the configured interval", () => {
    configureProgress({ intervalMs: 50 });
    const clock = fakeClock();
    const { logger, records } = capture();
    const progress = createProgress({ message: "Pushing", unit: "objects", logger, now: clock.now });

    clock.tick(50);
    progress.advance(1);

    expect(records).toHaveLength(1);
  });
});

describe("createProgress bar", () => {
  test("draws instead of logging", () => {
    const { terminal, writes } = fakeTerminal();
    const { clock, records, progress } = start({ total: 2_000_000, terminal, title: "Downloading 20250301" });

    clock.tick(500);
    progress.advance(1_000_000);

    expect(records).toEqual([]);
    expect(writes).toEqual(["\r\x1b[2KDownloading 20250301 [##########----------] 50.0%  1.0 MB / 2.0 MB  2.0 MB/s"]);
  });

  test("draws objects with a short rate", () => {
    const { terminal, writes } = fakeTerminal();
    const { clock, progress } = start({ unit: "objects", total: 1700, terminal, title: "Pushing 20250105-1" });

    clock.tick(1000);
    progress.advance(297);

    expect(writes).toEqual(["\r\x1b[2KPushing 20250105-1 [####----------------] 17.5%  297/1700 objects  297/s"]);
  });

  test("redraws at most every 100 ms", () => {
    const { terminal, writes } = fakeTerminal();
    const { clock, progress } = start({ total: 1000, terminal });

    for (let step = 0; step < 10; step++) {
      clock.tick(10);
      progress.advance(1);
    }

    expect(writes).toHaveLength(1);
  });

  test("redraws after 100 ms", () => {
    const { terminal, writes } = fakeTerminal();
    const { clock, progress } = start({ total: 10, terminal });

    clock.tick(100);
    progress.advance(5);
    clock.tick(100);
    progress.advance(5);

    expect(writes).toHaveLength(2);
    expect(writes[1]).toContain("100.0%");
  });

  test("zero-width terminal uses 80 columns", () => {
    const { terminal, writes } = fakeTerminal(0);
    const { clock, progress } = start({ total: 10, terminal, title: "Pushing 20250301" });

    clock.tick(200);
    progress.advance(5);

    expect(writes[0]).toContain("Pushing 20250301");
  });

  test("done removes the bar", () => {
    const { terminal, writes } = fakeTerminal();
    const { clock, progress } = start({ total: 10, terminal });
    clock.tick(200);
    progress.advance(5);

    progress.done();

    expect(writes.at(-1)).toBe("\r\x1b[2K");
  });

  test("cuts the bar to the width", () => {
    const { terminal, writes } = fakeTerminal(30);
    const { clock, progress } = start({ total: 10, terminal });

    clock.tick(200);
    progress.advance(5);

    expect(writes[0]!.replace("\r\x1b[2K", "")).toHaveLength(29);
  });

  test("uses the configured terminal", () => {
    const { terminal, writes } = fakeTerminal();
    configureProgress({ terminal });
    const clock = fakeClock();
    const { logger } = capture();
    const progress = createProgress({ message: "Pushing", unit: "objects", logger, now: clock.now, total: 4 });

    clock.tick(200);
    progress.advance(1);

    expect(writes).toHaveLength(1);
  });
});

describe("ProgressTerminal", () => {
  test("writes lines as is without a bar", () => {
    const { terminal, writes } = fakeTerminal();

    terminal.writeLine("INFO started");

    expect(writes).toEqual(["INFO started\n"]);
  });

  test("prints lines above the bar", () => {
    const { terminal, writes } = fakeTerminal();
    terminal.draw("bar 50%");

    terminal.writeLine("INFO message");

    expect(writes.at(-1)).toBe("\r\x1b[2KINFO message\nbar 50%");
  });

  test("clear without a bar writes nothing", () => {
    const { terminal, writes } = fakeTerminal();

    terminal.clear();

    expect(writes).toEqual([]);
  });
});

describe("formatCount", () => {
  test.each([
    [0, "0 B"],
    [999, "999 B"],
    [1000, "1.0 kB"],
    [1_500_000, "1.5 MB"],
    [2_000_000_000, "2.0 GB"],
  ])("formats %d bytes as %s", (value, expected) => {
    expect(formatCount("bytes", value)).toBe(expected);
  });

  test("formats objects as a count", () => {
    expect(formatCount("objects", 12.4)).toBe("12 objects");
  });
});

describe("reportBodyProgress", () => {
  function chunked(chunks: string[], headers: Record<string, string> = {}): Response {
    const encoder = new TextEncoder();
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunks) {
          controller.enqueue(encoder.encode(chunk));
        }
        controller.close();
      },
    });
    return new Response(stream, { status: 200, headers });
  }

  test("reports start, chunks and end", async () => {
    const calls: [number, number | undefined][] = [];
    const response = reportBodyProgress(chunked(["abc", "de"], { "content-length": "5" }), (bytes, total) => calls.push([bytes, total]));

    const text = await response.text();

    expect(text).toBe("abcde");
    expect(calls).toEqual([
      [0, 5],
      [3, 5],
      [5, 5],
    ]);
  });

  test("ends with bytes as total without length", async () => {
    const calls: [number, number | undefined][] = [];
    const response = reportBodyProgress(chunked(["abc", "de"]), (bytes, total) => calls.push([bytes, total]));

    await response.text();

    expect(calls.at(0)).toEqual([0, undefined]);
    expect(calls.at(-1)).toEqual([5, 5]);
  });

  test("ignores the length of a compressed body", async () => {
    const calls: [number, number | undefined][] = [];
    const response = reportBodyProgress(chunked(["abc"], { "content-length": "2", "content-encoding": "gzip" }), (bytes, total) =>
      calls.push([bytes, total]),
    );

    await response.text();

    expect(calls[0]).toEqual([0, undefined]);
  });

  test("keeps status and headers", () => {
    const original = new Response("x", { status: 203, headers: { "content-type": "application/json" } });

    const wrapped = reportBodyProgress(original, () => {});

    expect(wrapped.status).toBe(203);
    expect(wrapped.headers.get("content-type")).toBe("application/json");
  });

  test("passes a body error to the reader", async () => {
    const failure = new Error("socket closed");
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array([1, 2]));
        controller.error(failure);
      },
    });
    const response = reportBodyProgress(new Response(stream), () => {});

    await expect(response.text()).rejects.toBe(failure);
  });
});

describe("trackDownloads", () => {
  function tracker() {
    const clock = fakeClock();
    const { logger, records } = capture();
    const counted: number[] = [];
    const downloads = trackDownloads({ logger, now: clock.now, intervalMs: 10_000, onBytes: (bytes) => counted.push(bytes) });
    return { clock, records, counted, downloads };
  }

  test("counts each new byte once", () => {
    const { counted, downloads } = tracker();

    downloads.onProgress("20250301", 0, 100);
    downloads.onProgress("20250301", 40, 100);
    downloads.onProgress("20250301", 100, 100);

    expect(counted).toEqual([40, 60]);
  });

  test("restarts on a new attempt", () => {
    const { counted, downloads } = tracker();

    downloads.onProgress("20250301", 0, 100);
    downloads.onProgress("20250301", 70, 100);
    downloads.onProgress("20250301", 0, 100);
    downloads.onProgress("20250301", 30, 100);

    expect(counted).toEqual([70, 30]);
  });

  test("logs the version being downloaded", () => {
    const { clock, records, downloads } = tracker();

    downloads.onProgress("20250210", 0, 1000);
    clock.tick(10_000);
    downloads.onProgress("20250210", 500, 1000);

    expect(records[0]!.message).toBe("Downloading Citalid version");
    expect(records[0]!.attributes.version_id).toBe("20250210");
    expect(records[0]!.attributes.percent).toBe(50);
  });

  test("finish removes a bar left open", () => {
    const { terminal, writes } = fakeTerminal();
    const clock = fakeClock();
    const { logger } = capture();
    const downloads = trackDownloads({ logger, now: clock.now, terminal });
    downloads.onProgress("20250301", 0, 100);
    clock.tick(200);
    downloads.onProgress("20250301", 10, 100);

    downloads.finish();

    expect(writes.at(-1)).toBe("\r\x1b[2K");
  });
});

describe("progress end to end", () => {
  test("logs download and push progress", async () => {
    const citalid = await startFakeCitalid({ versions: fixtureCitalidVersions().slice(0, 1), password: TEST_SECRETS.citalidPassword });
    const opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
    try {
      const env = connectorEnv(citalid, opencti, tempDir(), { CONNECTOR_PROGRESS_INTERVAL_MS: "1", CONNECTOR_PUSH_MAX_MB: "0.4" });

      const run = await runConnectorOnce(env);

      expect(run.code).toBe(0);
      const download = run.logs().filter((line) => line.message === "Downloading Citalid version");
      const push = run.logs().filter((line) => line.message === "Pushing Citalid version");
      const size = fixtureCitalidVersions()[0]!.body.byteLength;
      expect(download.length).toBeGreaterThan(0);
      expect(download.at(-1)?.attributes?.version_id).toBe("20250105-1");
      expect(download.at(-1)?.attributes?.total_bytes).toBe(size);
      expect(push.length).toBeGreaterThan(0);
      expect(push.at(-1)?.attributes?.version_id).toBe("20250105-1");
      expect(push.at(-1)?.attributes?.objects).toBeGreaterThan(0);
      expect(push.at(-1)?.attributes?.total_objects).toBeGreaterThanOrEqual(push.at(-1)?.attributes?.objects as number);
    } finally {
      await citalid.stop();
      await opencti.stop();
    }
  });
});

describe("progress bar on a terminal", () => {
  const noScript = Bun.which("script") ? undefined : "script (util-linux) is not installed";
  if (noScript) {
    console.warn(`progress.test.ts: skipping the terminal tests: ${noScript}`);
  }

  /** Runs main.ts --once under script(1), which gives it a pseudo-terminal, and returns what the terminal received. */
  async function runOnTerminal(extra: Record<string, string>): Promise<string> {
    const citalid = await startFakeCitalid({ versions: fixtureCitalidVersions().slice(0, 1), password: TEST_SECRETS.citalidPassword });
    const opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
    // Slow pushes make the push last longer than the bar's 100 ms redraw interval.
    opencti.inject("stixBundlePush", { kind: "delay", delayMs: 60 });
    try {
      const env = { ...connectorEnv(citalid, opencti, tempDir(), { CONNECTOR_LOG_LEVEL: "info", CONNECTOR_PUSH_MAX_MB: "0.3", ...extra }), TERM: "xterm" };
      const main = join(import.meta.dir, "..", "main.ts");
      const proc = Bun.spawn(["script", "-qec", `${process.execPath} ${main} --once`, "/dev/null"], { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      const [output] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
      return output;
    } finally {
      await citalid.stop();
      await opencti.stop();
    }
  }

  test.skipIf(noScript !== undefined)("readable logs get a bar", async () => {
    const output = await runOnTerminal({ OPENCTI_JSON_LOGGING: "false" });

    expect(output).toContain("\r\x1b[2KPushing 20250105-1 [");
    expect(output).toContain("INFO Citalid: Version sent and stored as the connector state");
    expect(output).not.toContain('"message":"Pushing Citalid version"');
  });

  test.skipIf(noScript !== undefined)("JSON logs get no bar", async () => {
    const output = await runOnTerminal({ OPENCTI_JSON_LOGGING: "true", CONNECTOR_PROGRESS_INTERVAL_MS: "1" });

    expect(output).not.toContain("\x1b[2K");
    expect(output).toContain('"message":"Pushing Citalid version"');
  });
});
