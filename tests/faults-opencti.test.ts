/**
 * Faults on the OpenCTI side, end to end: the real connector against the
 * fake OpenCTI platform with its fault switches, and a healthy fake Citalid.
 */
import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type ConnectorProcess, type LogLine, runConnectorOnce, startConnector } from "./helpers/connector.ts";
import { type Scenario, smallBundle, startScenario, waitFor } from "./helpers/scenario.ts";

setDefaultTimeout(60_000);

const IDS = ["20250101", "20250105", "20250110"];
// The first version fits in one 5 KB bundle, and the others need several.
const OBJECTS: Record<string, number> = { "20250101": 3, "20250105": 40, "20250110": 40 };

let scenario: Scenario;

beforeEach(async () => {
  scenario = await startScenario();
  scenario.citalid.setVersions(IDS.map((id) => ({ id, body: smallBundle(id, OBJECTS[id], 200) })));
});

afterEach(async () => {
  await scenario.stop();
});

function logsMatching(run: ConnectorProcess, pattern: RegExp): LogLine[] {
  return run.logs().filter((line) => pattern.test(line.message));
}

function lastError(run: ConnectorProcess): string {
  return run.logs().filter((line) => line.level === "ERROR").at(-1)?.message ?? "";
}

function versionIds(id: string): string[] {
  return smallBundle(id, OBJECTS[id], 200).objects.map((object) => object.id);
}

function expectEveryVersionPushed(): void {
  const pushed = scenario.pushedIds();
  for (const id of IDS) {
    expect(versionIds(id).filter((objectId) => !pushed.has(objectId))).toEqual([]);
  }
}

describe("platform down at start-up", () => {
  test("connector waits and then imports", async () => {
    await scenario.opencti.goDown(3000);

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    // Each start-up attempt is one request, so the wait loop does all the retrying.
    expect(logsMatching(run, /OpenCTI request failed, retrying/)).toEqual([]);
    const waits = logsMatching(run, /OpenCTI is not reachable yet/);
    expect(waits.length).toBeGreaterThanOrEqual(2);
    expect(waits.map((line) => line.attributes?.wait_attempt)).toEqual(waits.map((_line, index) => index + 1));
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
    expectEveryVersionPushed();
  });

  test("SIGTERM while waiting exits 0", async () => {
    await scenario.opencti.goDown();
    const connector = startConnector(scenario.env(), []);

    await connector.waitForLog("OpenCTI is not reachable yet");
    connector.proc.kill("SIGTERM");

    expect(await connector.exited).toBe(0);
    expect(scenario.citalid.requests).toEqual([]);
  });
});

describe("platform restart during a run", () => {
  test("short outage is retried within the run", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 300, skip: 1, times: 1 });
    const connector = startConnector(scenario.env());

    await waitFor(() => scenario.opencti.operations.filter((operation) => operation.rootFields.includes("stixBundlePush")).length === 2, "the second push");
    await scenario.opencti.goDown(400);
    const code = await connector.exited;

    expect(code).toBe(0);
    expect(logsMatching(connector, /OpenCTI request failed, retrying/).length).toBeGreaterThan(0);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
    expect(scenario.opencti.works.length).toBe(1);
    expect(scenario.opencti.openWorks()).toEqual([]);
    expectEveryVersionPushed();
  });

  test("long outage fails the run, the next run resumes", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 300, skip: 1, times: 1 });
    const connector = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "PT1S" }), []);

    await waitFor(() => scenario.opencti.operations.filter((operation) => operation.rootFields.includes("stixBundlePush")).length === 2, "the second push");
    // Longer than the retries of the push and of the work closing together.
    await scenario.opencti.goDown(4000);
    await connector.waitForLog("Run failed");
    await waitFor(() => scenario.platformState()?.last_loaded_bundle_id === "20250110", "the import after the outage");
    await waitFor(() => scenario.opencti.openWorks().length === 0, "every work closed");
    connector.proc.kill("SIGTERM");

    expect(await connector.exited).toBe(0);
    expect(scenario.opencti.works.length).toBe(2);
    expect(scenario.opencti.works[0]!.errors.length).toBe(1);
    expect(logsMatching(connector, /^Closed a work that an earlier run could not close$/).length).toBe(1);
    expectEveryVersionPushed();
  });
});

describe("failed push", () => {
  test("state stays at the last full version", async () => {
    // The second version is cut into several bundles, and its second one fails.
    scenario.opencti.inject("stixBundlePush", { kind: "status", status: 502, skip: 2 });

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "0.005" }));

    expect(run.code).toBe(1);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe("20250101");
    expect(logsMatching(run, /OpenCTI request failed, retrying/).length).toBe(6);
    const work = scenario.opencti.works[0]!;
    expect(work.errors.length).toBe(1);
    expect(work.errors[0]!.message).toContain("HTTP 502");
    expect(scenario.opencti.openWorks()).toEqual([]);
  });

  test("next run sends the failed version again", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "status", status: 502, skip: 2 });
    await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "0.005" }));
    scenario.opencti.clearFaults();
    scenario.opencti.clearRecords();

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "0.005" }));

    expect(run.code).toBe(0);
    const pushed = scenario.pushedIds();
    expect(versionIds("20250105").filter((id) => !pushed.has(id))).toEqual([]);
    expect(versionIds("20250110").filter((id) => !pushed.has(id))).toEqual([]);
    expect(versionIds("20250101").some((id) => pushed.has(id))).toBe(false);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
  });

  test.each(["LOCK_ERROR", "DATABASE_ERROR"])("%s is retried within the run", async (code) => {
    scenario.opencti.inject("stixBundlePush", { kind: "error", code, skip: 1, times: 2 });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(logsMatching(run, /OpenCTI request failed, retrying/).map((line) => line.attributes?.reason)).toEqual([code, code]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
  });

  test("push without response is retried", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "hang", skip: 1, times: 1 });

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_OPENCTI_TIMEOUT_MS: "300" }));

    expect(run.code).toBe(0);
    expect(logsMatching(run, /OpenCTI request failed, retrying/).map((line) => line.attributes?.reason)).toEqual(["timed out"]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
  });

  test("push response stalling midway is retried", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "stall", skip: 1, times: 1 });

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_OPENCTI_TIMEOUT_MS: "300" }));

    expect(run.code).toBe(0);
    expect(logsMatching(run, /OpenCTI request failed, retrying/).map((line) => line.attributes?.reason)).toEqual(["RESPONSE_CUT_OFF"]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
  });

  test("push that never responds times out", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "hang", skip: 1 });

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_OPENCTI_TIMEOUT_MS: "300" }));

    expect(run.code).toBe(1);
    expect(logsMatching(run, /OpenCTI request failed, retrying/).length).toBe(6);
    expect(scenario.opencti.works[0]!.errors[0]!.message).toContain("timed out");
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
  });

  test("business error is not retried", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "error", code: "UNSUPPORTED_ERROR", skip: 1 });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(1);
    expect(logsMatching(run, /OpenCTI request failed, retrying/)).toEqual([]);
    expect(scenario.opencti.operations.filter((operation) => operation.rootFields.includes("stixBundlePush")).length).toBe(2);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
    const message = scenario.opencti.works[0]!.errors[0]!.message ?? "";
    expect(message).toContain("OpenCTI stixBundlePush failed with UNSUPPORTED_ERROR");
    expect(message).toMatch(/, for bundle 1 \(bundle--[0-9a-f-]+, \d+ objects\) of version 20250105/);
  });
});

describe("queue size query", () => {
  test("FORBIDDEN_ACCESS warns once and runs on", async () => {
    scenario.opencti.inject("connector", { kind: "error", code: "FORBIDDEN_ACCESS" });
    const connector = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "PT1S" }), []);

    await waitFor(() => logsMatching(connector, /^Listed Citalid versions$/).length >= 3, "three runs");
    connector.proc.kill("SIGTERM");

    expect(await connector.exited).toBe(0);
    expect(logsMatching(connector, /cannot read the push queue size/).length).toBe(1);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
  });

  test("AUTH_REQUIRED stops the connector", async () => {
    const connector = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "PT1S" }), []);
    await connector.waitForLog("Schedule next run of connector");
    scenario.opencti.inject("connector", { kind: "error", code: "AUTH_REQUIRED" });

    expect(await connector.exited).toBe(2);
    expect(lastError(connector)).toContain("OPENCTI_TOKEN");
  });
});

describe("OpenCTI token", () => {
  test("wrong token exits 2 before Citalid", async () => {
    const run = await runConnectorOnce(scenario.env({ OPENCTI_TOKEN: "not-the-platform-token" }));

    expect(run.code).toBe(2);
    expect(lastError(run)).toContain("AUTH_REQUIRED");
    expect(lastError(run)).toContain("OPENCTI_TOKEN");
    expect(scenario.citalid.requests).toEqual([]);
  });

  test.each([
    ["run and terminate", {}, ["--once"]],
    ["scheduled mode", { CONNECTOR_DURATION_PERIOD: "PT1H" }, []],
  ])("token revoked mid-run exits 2 in %s", async (_name, extra, args) => {
    scenario.opencti.inject("stixBundlePush", { kind: "error", code: "AUTH_REQUIRED", skip: 1 });

    const run = await runConnectorOnce(scenario.env(extra), args);

    expect(run.code).toBe(2);
    expect(lastError(run)).toContain("OPENCTI_TOKEN");
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
  });
});

describe("OpenCTI endpoint", () => {
  test("HTML 404 is not a GraphQL endpoint", async () => {
    scenario.opencti.inject("*", { kind: "html404" });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(2);
    expect(lastError(run)).toContain("is not an OpenCTI GraphQL endpoint");
    expect(lastError(run)).toContain("OPENCTI_URL");
    expect(scenario.opencti.requests.length).toBe(1);
    expect(scenario.citalid.requests).toEqual([]);
  });

  test("wrong path is not a GraphQL endpoint", async () => {
    const run = await runConnectorOnce(scenario.env({ OPENCTI_URL: `${scenario.opencti.url}/platform` }));

    expect(run.code).toBe(2);
    expect(lastError(run)).toContain("/platform/graphql is not an OpenCTI GraphQL endpoint");
  });

  test("HTML page with 200 is not a GraphQL endpoint", async () => {
    scenario.opencti.inject("*", { kind: "status", status: 200, body: "<html><body>Sign in</body></html>" });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(2);
    expect(lastError(run)).toContain("is not an OpenCTI GraphQL endpoint");
  });

  test.each([
    ["6.2.18", 2],
    ["5.12.33", 2],
    ["6.3.0", 0],
    ["7.260817.0", 0],
  ])("platform %s gives exit code %d", async (version, code) => {
    scenario.opencti.version = version;

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(code);
    if (code === 2) {
      expect(lastError(run)).toContain(`OpenCTI ${version} is not supported`);
      expect(scenario.citalid.requests).toEqual([]);
    }
  });
});
