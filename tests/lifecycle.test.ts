/**
 * End-to-end: how the process starts, waits and ends when the platform
 * misbehaves around a run.
 */
import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, utimesSync } from "node:fs";
import { runConnectorOnce, startConnector } from "./helpers/connector.ts";
import { type Scenario, smallVersions, startScenario, waitFor } from "./helpers/scenario.ts";

setDefaultTimeout(60_000);

let scenario: Scenario;

beforeEach(async () => {
  scenario = await startScenario({ citalid: { versions: smallVersions(["20250101", "20250102"]) } });
});

afterEach(async () => {
  await scenario.stop();
});

describe("platform answering 5xx pages", () => {
  test.each([502, 503, 504])("HTML %d at start-up is waited out", async (status) => {
    scenario.opencti.inject("about", { kind: "status", status, times: 10 });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(run.logs().some((line) => line.message.includes("not reachable yet"))).toBe(true);
    expect(run.logs().some((line) => line.message.includes("not an OpenCTI GraphQL endpoint"))).toBe(false);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250102");
  });

  test("HTML 404 still stops with exit 2", async () => {
    scenario.opencti.inject("*", { kind: "html404" });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain("not an OpenCTI GraphQL endpoint");
  });

  test("URL ending in /graphql gets a hint", async () => {
    const run = await runConnectorOnce(scenario.env({ OPENCTI_URL: scenario.opencti.url + "/graphql" }));

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain("without /graphql");
  });
});

describe("one-shot run", () => {
  test("gives up waiting for the platform", async () => {
    await scenario.opencti.goDown();

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_ONCE_STARTUP_TIMEOUT_MS: "300" }));

    expect(run.code).toBe(1);
    expect(run.lines.join("\n")).toContain("this one-shot run gives up");
    expect(existsSync(`${scenario.statePath}.lock`)).toBe(false);
  });

  test("last wait ends at the deadline", async () => {
    await scenario.opencti.goDown();

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_ONCE_STARTUP_TIMEOUT_MS: "900", CONNECTOR_RETRY_DELAY_MS: "400" }));

    expect(run.code).toBe(1);
    const waits = run.logs().filter((line) => line.message.startsWith("OpenCTI is not reachable yet"));
    const delays = waits.map((line) => Number(line.attributes?.delay_ms));
    expect(delays.length).toBeGreaterThanOrEqual(2);
    expect(delays[0]).toBe(400);
    expect(delays.reduce((sum, delay) => sum + delay, 0)).toBeLessThanOrEqual(900);
    const failure = run.logs().find((line) => line.message.includes("this one-shot run gives up"));
    expect(failure?.level).toBe("ERROR");
    expect(failure?.message).toContain("within 0.9 s of start-up");
    expect(failure?.message).toContain("Run it again once the platform at OPENCTI_URL responds");
    expect(run.lines.join("\n")).not.toContain("unexpected error");
  });

  test("gives up on a platform that never responds", async () => {
    // The first response would come after the deadline, and the run would go on if it waited for it.
    scenario.opencti.inject("about", { kind: "delay", delayMs: 5000, times: 1 });

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_ONCE_STARTUP_TIMEOUT_MS: "800" }));

    expect(run.code).toBe(1);
    const failure = run.logs().find((line) => line.level === "ERROR");
    expect(failure?.message).toContain("gives up after 1 attempt(s)");
    expect(scenario.opencti.works).toEqual([]);
  });

  test("keeps pinging during a slow push", async () => {
    // Pings run every second in tests, so a push held for 3 s spans two or more.
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 3000, times: 1 });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    const heldPush = scenario.opencti.requests.find((request) => request.body.includes("stixBundlePush"))!;
    const during = scenario.opencti.pings.filter((ping) => ping.time > heldPush.time && ping.time < heldPush.time + 3000);
    expect(during.length).toBeGreaterThanOrEqual(2);
    expect(during.every((ping) => ping.connectorInfo?.run_and_terminate === true)).toBe(true);
  });

  test("fails when the final state is not sent", async () => {
    // A business error is not retried inside the request, which keeps the test short.
    scenario.opencti.inject("pingConnector", { kind: "error", code: "FUNCTIONAL_ERROR", skip: 1 });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(1);
    expect(run.lines.join("\n")).toContain("final connector state did not reach the platform");
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe("20250102");
  });
});

describe("shutdown past the grace time", () => {
  test("closes the work and releases the lock", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 20_000 });
    const connector = startConnector(scenario.env({ CONNECTOR_SHUTDOWN_GRACE_MS: "500" }), []);
    await waitFor(() => scenario.opencti.works.length === 1, "a work");
    await Bun.sleep(200);

    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(0);
    const work = scenario.opencti.works[0]!;
    expect(work.toProcessedCalls).toBe(1);
    expect(work.messages.at(-1)?.message).toContain("interrupted");
    expect(existsSync(`${scenario.statePath}.lock`)).toBe(false);
    expect(scenario.fileState()?.last_loaded_bundle_id ?? null).toBeNull();
  });

  test("second signal releases the lock", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 20_000 });
    const connector = startConnector(scenario.env({ CONNECTOR_SHUTDOWN_GRACE_MS: "20000" }), []);
    await waitFor(() => scenario.opencti.works.length === 1, "a work");
    await Bun.sleep(200);

    connector.proc.kill("SIGTERM");
    await connector.waitForLog("Preparing connector for clean shutdown");
    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(1);
    expect(existsSync(`${scenario.statePath}.lock`)).toBe(false);
  });

  test.each([
    ["the grace time", "500", 1, 0],
    ["a second signal", "20000", 2, 1],
  ])("restart after %s does not warn of another process", async (_name, graceMs, signals, exitCode) => {
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 20_000 });
    const connector = startConnector(scenario.env({ CONNECTOR_SHUTDOWN_GRACE_MS: graceMs }), []);
    await waitFor(() => scenario.opencti.works.length === 1, "a work");
    // As in a long push: the pings go on well after the last state file write.
    const minuteAgo = new Date(Date.now() - 60_000);
    utimesSync(scenario.statePath, minuteAgo, minuteAgo);
    const pings = scenario.opencti.pings.length;
    await waitFor(() => scenario.opencti.pings.length > pings, "a ping after the state file write");

    for (let sent = 0; sent < signals; sent++) {
      connector.proc.kill("SIGTERM");
      await connector.waitForLog("Preparing connector for clean shutdown");
    }
    expect(await connector.exited).toBe(exitCode);
    scenario.opencti.clearFaults();
    const restart = await runConnectorOnce(scenario.env());

    expect(restart.code).toBe(0);
    expect(restart.logs().some((line) => line.message.startsWith("Another process seems to be running"))).toBe(false);
  });
});
