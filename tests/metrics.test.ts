/**
 * Prometheus metrics: the registry and server as units, then the real
 * connector (`main.ts` as a subprocess) scraped after a run against the fakes.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createLogger } from "../lib/log.ts";
import { ConnectorMetrics, MetricsPortError, type MetricsServer, serveMetrics } from "../lib/metrics.ts";
import type { RunOutcome } from "../lib/run.ts";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, startConnector, tempDir } from "./helpers/connector.ts";

/** Parses Prometheus text into a map from `name{labels}` to value, without comments. */
function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) {
      continue;
    }
    const split = line.lastIndexOf(" ");
    values.set(line.slice(0, split), Number(line.slice(split + 1)));
  }
  return values;
}

async function scrapeRegistry(metrics: ConnectorMetrics): Promise<Map<string, number>> {
  return parseMetrics(await metrics.registry.metrics());
}

/** Returns a TCP port that was free on 127.0.0.1 a moment ago. */
function freePort(): number {
  const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = probe.port!;
  probe.stop(true);
  return port;
}

const silent = createLogger({ journald: false, write: () => {} });

function outcome(status: RunOutcome["status"]): RunOutcome {
  return { status, versions: [], pending: [] };
}

describe("ConnectorMetrics names", () => {
  test("uses the pycti names without prefix", async () => {
    const values = await scrapeRegistry(new ConnectorMetrics());

    for (const name of ["bundles_sent_total", "records_sent_total", "runs_total", "errors_total", "ping_api_total", "ping_api_errors_total"]) {
      expect(values.get(name)).toBe(0);
    }
    expect(values.get('state{state="idle"}')).toBe(1);
  });

  test("adds this connector's metrics", async () => {
    const values = await scrapeRegistry(new ConnectorMetrics());

    expect(values.get("versions_imported_total")).toBe(0);
    expect(values.get("bytes_downloaded_total")).toBe(0);
    expect(values.get("last_successful_run_timestamp_seconds")).toBe(0);
  });

  test("joins namespace and subsystem", async () => {
    const values = await scrapeRegistry(new ConnectorMetrics({ namespace: "opencti", subsystem: "citalid" }));

    expect(values.get("opencti_citalid_runs_total")).toBe(0);
    expect(values.get('opencti_citalid_state{opencti_citalid_state="idle"}')).toBe(1);
  });

  test("skips an empty namespace", async () => {
    const values = await scrapeRegistry(new ConnectorMetrics({ namespace: "", subsystem: "citalid" }));

    expect(values.get("citalid_runs_total")).toBe(0);
  });

  test("types counters and gauges", async () => {
    const text = await new ConnectorMetrics().registry.metrics();

    expect(text).toContain("# TYPE bundles_sent_total counter");
    expect(text).toContain("# TYPE state gauge");
    expect(text).toContain("# TYPE last_successful_run_timestamp_seconds gauge");
  });
});

describe("ConnectorMetrics updates", () => {
  test("state follows the run", async () => {
    const metrics = new ConnectorMetrics();

    metrics.runStarted();
    const running = await scrapeRegistry(metrics);
    metrics.runFinished(outcome("completed"));
    const idle = await scrapeRegistry(metrics);
    metrics.setState("stopped");
    const stopped = await scrapeRegistry(metrics);

    expect(running.get('state{state="running"}')).toBe(1);
    expect(running.get('state{state="idle"}')).toBe(0);
    expect(idle.get('state{state="idle"}')).toBe(1);
    expect(idle.get('state{state="running"}')).toBe(0);
    expect(stopped.get('state{state="stopped"}')).toBe(1);
    expect(stopped.get('state{state="idle"}')).toBe(0);
  });

  test("failed run counts an error", async () => {
    const metrics = new ConnectorMetrics();

    metrics.runFinished(outcome("failed"));
    const values = await scrapeRegistry(metrics);

    expect(values.get("runs_total")).toBe(1);
    expect(values.get("errors_total")).toBe(1);
    expect(values.get("last_successful_run_timestamp_seconds")).toBe(0);
  });

  test.each(["completed", "up-to-date"] as const)("%s run sets the success time", async (status) => {
    const metrics = new ConnectorMetrics();

    metrics.runFinished(outcome(status), new Date("2025-03-01T09:00:00Z"));
    const values = await scrapeRegistry(metrics);

    expect(values.get("last_successful_run_timestamp_seconds")).toBe(Date.parse("2025-03-01T09:00:00Z") / 1000);
    expect(values.get("errors_total")).toBe(0);
  });

  test("interrupted run is not a success", async () => {
    const metrics = new ConnectorMetrics();

    metrics.runFinished(outcome("interrupted"));
    const values = await scrapeRegistry(metrics);

    expect(values.get("last_successful_run_timestamp_seconds")).toBe(0);
    expect(values.get("errors_total")).toBe(0);
  });

  test("version counts bundles and records", async () => {
    const metrics = new ConnectorMetrics();

    metrics.versionImported({ id: "20250301", objects: 120, bytes: 5000, bundles: 3, dropped: 0, ms: 10 });
    metrics.versionImported({ id: "20250302", objects: 10, bytes: 500, bundles: 1, dropped: 0, ms: 10 });
    const values = await scrapeRegistry(metrics);

    expect(values.get("versions_imported_total")).toBe(2);
    expect(values.get("bundles_sent_total")).toBe(4);
    expect(values.get("records_sent_total")).toBe(130);
  });

  test("adds downloaded bytes", async () => {
    const metrics = new ConnectorMetrics();

    metrics.bytesDownloaded(1000);
    metrics.bytesDownloaded(24);
    const values = await scrapeRegistry(metrics);

    expect(values.get("bytes_downloaded_total")).toBe(1024);
  });

  test("reads ping counts at scrape", async () => {
    const metrics = new ConnectorMetrics();
    const pinger = { sent: 0, failed: 0 };
    metrics.trackPings(pinger);

    pinger.sent = 7;
    pinger.failed = 2;
    const values = await scrapeRegistry(metrics);

    expect(values.get("ping_api_total")).toBe(7);
    expect(values.get("ping_api_errors_total")).toBe(2);
  });
});

describe("serveMetrics", () => {
  let server: MetricsServer | undefined;

  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  test("serves the text format on /metrics", async () => {
    const metrics = new ConnectorMetrics();
    server = serveMetrics({ metrics, host: "127.0.0.1", port: freePort(), logger: silent });

    const response = await fetch(`http://127.0.0.1:${server.port}/metrics`);

    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(parseMetrics(await response.text()).get("runs_total")).toBe(0);
  });

  test("serves the root path too", async () => {
    server = serveMetrics({ metrics: new ConnectorMetrics(), host: "127.0.0.1", port: freePort(), logger: silent });

    const response = await fetch(`http://127.0.0.1:${server.port}/`);

    expect(response.status).toBe(200);
  });

  test("answers 404 on other paths", async () => {
    server = serveMetrics({ metrics: new ConnectorMetrics(), host: "127.0.0.1", port: freePort(), logger: silent });

    const response = await fetch(`http://127.0.0.1:${server.port}/other`);

    expect(response.status).toBe(404);
  });

  test("rejects POST with 405", async () => {
    server = serveMetrics({ metrics: new ConnectorMetrics(), host: "127.0.0.1", port: freePort(), logger: silent });

    const response = await fetch(`http://127.0.0.1:${server.port}/metrics`, { method: "POST" });

    expect(response.status).toBe(405);
  });

  test("logs the port", () => {
    const lines: string[] = [];
    const logger = createLogger({ journald: false, write: (line) => lines.push(line) });
    const port = freePort();

    server = serveMetrics({ metrics: new ConnectorMetrics(), host: "127.0.0.1", port, logger });

    const record = JSON.parse(lines[0]!);
    expect(record.message).toBe("Exposing metrics on port");
    expect(record.attributes.port).toBe(port);
  });

  test("port in use names the variable", () => {
    const taken = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
    try {
      const start = () => serveMetrics({ metrics: new ConnectorMetrics(), host: "127.0.0.1", port: taken.port!, logger: silent });

      expect(start).toThrow(MetricsPortError);
      expect(start).toThrow(`CONNECTOR_METRICS_PORT (connector.metrics_port) is ${taken.port}: 127.0.0.1:${taken.port} is already in use`);
    } finally {
      taken.stop(true);
    }
  });
});

describe("connector metrics end to end", () => {
  let citalid: FakeCitalid;
  let opencti: FakeOpenCTI;
  let stateDir: string;
  let port: number;

  beforeEach(async () => {
    citalid = await startFakeCitalid({ versions: fixtureCitalidVersions(), password: TEST_SECRETS.citalidPassword });
    opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
    stateDir = tempDir();
    port = freePort();
  });

  afterEach(async () => {
    await citalid.stop();
    await opencti.stop();
  });

  function env(extra: Record<string, string> = {}) {
    return connectorEnv(citalid, opencti, stateDir, {
      CONNECTOR_EXPOSE_METRICS: "true",
      CONNECTOR_METRICS_PORT: String(port),
      CONNECTOR_DURATION_PERIOD: "PT1H",
      ...extra,
    });
  }

  async function scrape(): Promise<Map<string, number>> {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    return parseMetrics(await response.text());
  }

  /** Starts the connector in scheduled mode, waits for the first run to end and scrapes once. */
  async function scrapeAfterFirstRun(extra: Record<string, string> = {}) {
    const connector = startConnector(env(extra), []);
    try {
      await connector.waitForLog("Schedule next run of connector");
      return { values: await scrape(), connector };
    } finally {
      connector.proc.kill("SIGTERM");
      await connector.exited;
    }
  }

  test("counts one run of four versions", async () => {
    const { values } = await scrapeAfterFirstRun();

    expect(values.get("runs_total")).toBe(1);
    expect(values.get("versions_imported_total")).toBe(4);
    expect(values.get("bundles_sent_total")).toBe(opencti.pushes.length);
    expect(values.get("errors_total")).toBe(0);
  });

  test("counts the records pushed", async () => {
    const { values } = await scrapeAfterFirstRun();

    // Each fixture version fits one bundle, so the author is in the count once per version.
    const pushed = opencti.pushes.reduce((total, push) => total + push.bundle.objects.length, 0);
    expect(opencti.pushes).toHaveLength(4);
    expect(values.get("records_sent_total")).toBe(pushed);
  });

  test("counts the bytes downloaded", async () => {
    const { values } = await scrapeAfterFirstRun();

    const served = fixtureCitalidVersions().reduce((total, version) => total + version.body.byteLength, 0);
    expect(values.get("bytes_downloaded_total")).toBe(served);
  });

  test("is idle after the run", async () => {
    const { values } = await scrapeAfterFirstRun();

    expect(values.get('state{state="idle"}')).toBe(1);
    expect(values.get('state{state="running"}')).toBe(0);
    expect(values.get('state{state="stopped"}')).toBe(0);
  });

  test("records the success time", async () => {
    const before = Date.now() / 1000;

    const { values } = await scrapeAfterFirstRun();

    const time = values.get("last_successful_run_timestamp_seconds")!;
    expect(time).toBeGreaterThanOrEqual(Math.floor(before));
    expect(time).toBeLessThanOrEqual(Date.now() / 1000);
  });

  test("counts the pings", async () => {
    const { values } = await scrapeAfterFirstRun();

    expect(values.get("ping_api_total")).toBeGreaterThanOrEqual(1);
    expect(values.get("ping_api_errors_total")).toBe(0);
  });

  test("logs the metrics port", async () => {
    const { connector } = await scrapeAfterFirstRun();

    const line = connector.logs().find((record) => record.message === "Exposing metrics on port");
    expect(line?.attributes?.port).toBe(port);
  });

  test("failed run counts an error", async () => {
    citalid.inject("20250210", { kind: "status", status: 500 });

    const { values } = await scrapeAfterFirstRun();

    expect(values.get("runs_total")).toBe(1);
    expect(values.get("errors_total")).toBe(1);
    expect(values.get("versions_imported_total")).toBe(2);
    expect(values.get("last_successful_run_timestamp_seconds")).toBe(0);
  });

  test("prefixes names from the settings", async () => {
    const { values } = await scrapeAfterFirstRun({ CONNECTOR_METRICS_NAMESPACE: "opencti", CONNECTOR_METRICS_SUBSYSTEM: "citalid" });

    expect(values.get("opencti_citalid_runs_total")).toBe(1);
    expect(values.has("runs_total")).toBe(false);
  });

  test("port in use exits 2", async () => {
    const taken = Bun.serve({ hostname: "127.0.0.1", port, fetch: () => new Response() });
    try {
      const run = await runConnectorOnce(env(), ["--once"]);

      expect(run.code).toBe(2);
      expect(run.lines.join("\n")).toContain(`CONNECTOR_METRICS_PORT (connector.metrics_port) is ${port}: 127.0.0.1:${port} is already in use`);
      expect(opencti.registrations).toEqual([]);
    } finally {
      taken.stop(true);
    }
  });

  test("metrics off opens no port", async () => {
    const run = await runConnectorOnce(env({ CONNECTOR_EXPOSE_METRICS: "false" }), ["--once"]);

    expect(run.code).toBe(0);
    expect(run.logs().some((record) => record.message === "Exposing metrics on port")).toBe(false);
  });
});
