/**
 * Crashes, signals and restarts, end to end: the real connector is killed or
 * stopped at chosen moments of a run, then started again against the same
 * fakes and state file.
 */
import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { FakeWork } from "./fakes/opencti.ts";
import { type ConnectorProcess, runConnectorOnce, startConnector, tempDir } from "./helpers/connector.ts";
import { CONNECTOR_ID, type Scenario, hasExited, seedState, smallBundle, startScenario, waitFor } from "./helpers/scenario.ts";

setDefaultTimeout(60_000);

const IDS = ["20250101", "20250105", "20250110", "20250115"];
// Each version is cut into several bundles under this limit.
const PUSH_MAX = { CONNECTOR_PUSH_MAX_MB: "0.005" };
// Names of the first and the last object of the second version: their
// bundles are the first and the last pushed for that version.
const FIRST_OF_SECOND = `Technique 0 of ${IDS[1]}`;
const LAST_OF_SECOND = `Technique 29 of ${IDS[1]}`;
const HOLD_MS = 20_000;

let scenario: Scenario;

beforeEach(async () => {
  scenario = await startScenario();
  scenario.citalid.setVersions(IDS.map((id) => ({ id, body: smallBundle(id, 30, 200) })));
});

afterEach(async () => {
  await scenario.stop();
});

function objectIds(id: string): string[] {
  return smallBundle(id, 30, 200).objects.map((object) => object.id);
}

function requested(text: string): boolean {
  return scenario.opencti.requests.some((request) => request.body.includes(text));
}

function operationCount(field: string): number {
  return scenario.opencti.operations.filter((operation) => operation.rootFields.includes(field)).length;
}

/** Version ids of the states that pings sent, without repeats. */
function pingedVersions(): string[] {
  const ids: string[] = [];
  for (const ping of scenario.opencti.pings) {
    const id = ping.state && ping.state !== "null" ? JSON.parse(ping.state).last_loaded_bundle_id : undefined;
    if (id !== undefined && id !== ids.at(-1)) {
      ids.push(id);
    }
  }
  return ids;
}

interface KillStep {
  name: string;
  /** Sets the faults that hold the connector at the step; runs before the start. */
  arm: () => void;
  /** Resolves once the connector is at the step. */
  reached: (connector: ConnectorProcess) => Promise<void>;
  /** Last loaded version at the kill, on the platform and in the state file. */
  atKill: { platform: string | undefined; file: string | undefined };
}

const STEPS: KillStep[] = [
  {
    name: "after the login",
    arm: () => scenario.citalid.inject("list", { kind: "slow", delayMs: HOLD_MS, times: 1 }),
    reached: () => waitFor(() => scenario.citalid.counts.lists === 1, "the listing request"),
    atKill: { platform: undefined, file: undefined },
  },
  {
    name: "after the listing",
    arm: () => scenario.opencti.inject("workAdd", { kind: "delay", delayMs: HOLD_MS, times: 1 }),
    reached: () => waitFor(() => operationCount("workAdd") === 1, "the workAdd request"),
    atKill: { platform: undefined, file: undefined },
  },
  {
    name: "during a download",
    arm: () => scenario.citalid.inject(IDS[1]!, { kind: "slow", delayMs: HOLD_MS, times: 1 }),
    reached: () => waitFor(() => scenario.citalid.counts.downloads[IDS[1]!] === 1, "the second download"),
    atKill: { platform: IDS[0], file: IDS[0] },
  },
  {
    name: "during a push",
    arm: () => scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: HOLD_MS, bodyIncludes: FIRST_OF_SECOND }),
    reached: () => waitFor(() => requested(FIRST_OF_SECOND), "the first push of the second version"),
    atKill: { platform: IDS[0], file: IDS[0] },
  },
  {
    name: "between two bundles of a version",
    arm: () => scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: HOLD_MS, bodyIncludes: LAST_OF_SECOND }),
    reached: () => waitFor(() => requested(LAST_OF_SECOND), "the last push of the second version"),
    atKill: { platform: IDS[0], file: IDS[0] },
  },
  {
    name: "after the state file write",
    // The last push of the second version is slowed, so that the pings can
    // be held before that version's state is sent.
    arm: () => scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 500, bodyIncludes: LAST_OF_SECOND }),
    reached: async () => {
      await waitFor(() => requested(LAST_OF_SECOND), "the last push of the second version");
      scenario.opencti.inject("pingConnector", { kind: "delay", delayMs: HOLD_MS });
      await waitFor(() => scenario.fileState()?.last_loaded_bundle_id === IDS[1], "the second version in the file");
    },
    atKill: { platform: IDS[0], file: IDS[1] },
  },
  {
    name: "during the final ping",
    arm: () => scenario.opencti.inject("workEdit", { kind: "delay", delayMs: 500, times: 1 }),
    reached: async () => {
      await waitFor(() => operationCount("workEdit") === 1, "the work closing");
      const pings = operationCount("pingConnector");
      scenario.opencti.inject("pingConnector", { kind: "delay", delayMs: HOLD_MS });
      await waitFor(() => operationCount("pingConnector") > pings, "the final ping");
    },
    atKill: { platform: IDS[3], file: IDS[3] },
  },
];

describe("SIGKILL", () => {
  test.each(STEPS)("$name loses no version", async (step) => {
    step.arm();
    const connector = startConnector(scenario.env(PUSH_MAX));
    await step.reached(connector);
    connector.proc.kill("SIGKILL");
    await connector.exited;

    // The state file must parse after every kill: fileState throws otherwise.
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe(step.atKill.file);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe(step.atKill.platform);
    scenario.citalid.clearFaults();
    scenario.opencti.clearFaults();

    const restart = await runConnectorOnce(scenario.env(PUSH_MAX));

    expect(restart.code).toBe(0);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe(IDS.at(-1));
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe(IDS.at(-1));
    const pushed = scenario.pushedIds();
    for (const id of IDS) {
      expect(objectIds(id).filter((objectId) => !pushed.has(objectId))).toEqual([]);
    }
    const sent = pingedVersions();
    expect(sent).toEqual([...sent].sort());
    expect(existsSync(`${scenario.statePath}.lock`)).toBe(false);
    expect(scenario.opencti.openWorks()).toEqual([]);
  });

  test("restart after a kill imports from the platform's state", async () => {
    scenario.citalid.inject(IDS[2]!, { kind: "slow", delayMs: HOLD_MS, times: 1 });
    const connector = startConnector(scenario.env());
    await waitFor(() => scenario.citalid.counts.downloads[IDS[2]!] === 1, "the third download");
    connector.proc.kill("SIGKILL");
    await connector.exited;
    scenario.citalid.clearFaults();
    scenario.citalid.clearRecords();

    const restart = await runConnectorOnce(scenario.env());

    expect(restart.code).toBe(0);
    expect(Object.keys(scenario.citalid.counts.downloads)).toEqual([IDS[2]!, IDS[3]!]);
    expect(restart.logs().some((line) => line.message === "Removing a stale state file lock")).toBe(true);
    const killedRun = scenario.opencti.works[0]!;
    expect(killedRun.status).toBe("complete");
    expect(killedRun.errors[0]?.message).toContain("The connector process stopped during this run");
    expect(scenario.opencti.works[1]!.errors).toEqual([]);
  });
});

describe("works of a stopped process", () => {
  function openWork(name: string, processedTime: string | null): FakeWork {
    const now = new Date().toISOString();
    const work: FakeWork = {
      id: `work_${CONNECTOR_ID}_${name}`,
      connectorId: CONNECTOR_ID,
      name,
      status: "progress",
      timestamp: now,
      receivedTime: now,
      processedTime,
      completedTime: null,
      completedNumber: null,
      updatedAt: now,
      messages: [],
      errors: [],
      expected: processedTime === null ? 0 : 10,
      processed: 0,
      lastProcessed: null,
      toProcessedCalls: processedTime === null ? 0 : 1,
      draftContext: null,
      createdBy: "workAdd",
    };
    scenario.opencti.works.push(work);
    return work;
  }

  test("unprocessed work is closed in error", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: IDS[3] });
    // The process that left the works stopped pinging ten minutes ago.
    scenario.opencti.connectors.get(CONNECTOR_ID)!.updatedAt = new Date(Date.now() - 600_000).toISOString();
    const abandoned = openWork("abandoned", null);
    const ingesting = openWork("ingesting", new Date().toISOString());

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(abandoned.status).toBe("complete");
    expect(abandoned.errors[0]?.message).toContain("The connector process stopped during this run");
    expect(ingesting.status).toBe("progress");
    expect(ingesting.errors).toEqual([]);
    expect(run.logs().filter((line) => line.message === "Closed a work that a stopped connector process left open").length).toBe(1);
  });

  test("works stay open while another process runs", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: IDS[3] });
    const running = openWork("running", null);

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(running.status).toBe("progress");
  });
});

describe("corrupt state file", () => {
  test.each([
    ["text that is not JSON", "{not json"],
    ["an array", "[]"],
    ["a numeric version id", '{"last_loaded_bundle_id": 123}'],
    ["a JSON string", '"20250105"'],
    ["half a write", '{"last_loaded_bundle_id":"2025'],
  ])("%s is moved aside", async (_name, content) => {
    seedState(scenario.opencti, { last_loaded_bundle_id: IDS[1] });
    writeFileSync(scenario.statePath, content);

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    const aside = readdirSync(scenario.stateDir).filter((name) => name.startsWith("state.json.corrupt-"));
    expect(aside.length).toBe(1);
    expect(readFileSync(join(scenario.stateDir, aside[0]!), "utf8")).toBe(content);
    const warning = run.logs().find((line) => line.message.includes("State file is corrupt"));
    expect(warning?.attributes?.moved_to).toBe(join(scenario.stateDir, aside[0]!));
    expect(Object.keys(scenario.citalid.counts.downloads).sort()).toEqual([IDS[2]!, IDS[3]!]);
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe(IDS[3]);
  });
});

describe("state file folder", () => {
  test.each([
    ["missing", () => join(tempDir(), "missing", "state.json"), "does not exist"],
    // Tests run as root, which writes to a folder whatever its mode, so a
    // path under a regular file replaces a folder that cannot be used.
    [
      "a regular file",
      () => {
        const file = join(tempDir(), "not-a-folder");
        writeFileSync(file, "");
        return join(file, "state.json");
      },
      "is not a folder",
    ],
  ])("%s stops before any request", async (_name, makePath, problem) => {
    const path = makePath();

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_STATE_FILE: path }));

    expect(run.code).toBe(2);
    const error = run.logs().find((line) => line.level === "ERROR")?.message ?? "";
    expect(error).toContain(problem);
    expect(error).toContain("CONNECTOR_STATE_FILE");
    expect(scenario.citalid.requests).toEqual([]);
    expect(scenario.opencti.requests).toEqual([]);
  });
});

describe("state file lock", () => {
  test("second process on one file exits 2", async () => {
    const first = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "PT1H" }), []);
    await first.waitForLog("Schedule next run of connector");
    const citalidRequests = scenario.citalid.requests.length;

    const second = await runConnectorOnce(scenario.env());

    expect(second.code).toBe(2);
    const error = second.logs().find((line) => line.level === "ERROR")?.message ?? "";
    expect(error).toContain(scenario.statePath);
    expect(error).toContain("in use by another connector process");
    expect(scenario.citalid.requests.length).toBe(citalidRequests);
    expect(hasExited(first.proc)).toBe(false);
    expect(existsSync(`${scenario.statePath}.lock`)).toBe(true);

    first.proc.kill("SIGTERM");
    expect(await first.exited).toBe(0);
  });
});

describe("SIGTERM", () => {
  test.each([
    ["run and terminate", ["--once"], {}],
    ["scheduled mode", [], { CONNECTOR_DURATION_PERIOD: "PT1H" }],
  ])("during a push in %s finishes it", async (_name, args, extra) => {
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 1500, skip: 1, times: 1 });
    const connector = startConnector(scenario.env({ CONNECTOR_SHUTDOWN_GRACE_MS: "30000", ...extra }), args);
    await waitFor(() => operationCount("stixBundlePush") === 2, "the second push");

    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(0);
    expect(scenario.opencti.pushes.length).toBe(2);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe(IDS[1]);
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe(IDS[1]);
    expect(scenario.citalid.counts.downloads[IDS[2]!]).toBeUndefined();
    const work = scenario.opencti.works[0]!;
    expect(work.status).toBe("complete");
    expect(work.errors).toEqual([]);
    expect(work.messages.at(-1)?.message).toContain("interrupted by a shutdown");
    expect(connector.logs().some((line) => line.message.startsWith("Shutdown took too long"))).toBe(false);
  });

  test.each([
    ["slow reply", { kind: "slow", delayMs: HOLD_MS, times: 1 }, "SIGTERM"],
    ["stalled body", { kind: "stall", times: 1 }, "SIGINT"],
  ] as const)("during a download with a %s aborts it", async (_name, fault, signal) => {
    const graceMs = 5000;
    scenario.citalid.inject(IDS[1]!, fault);
    const connector = startConnector(scenario.env({ CONNECTOR_SHUTDOWN_GRACE_MS: String(graceMs) }));
    await waitFor(() => scenario.citalid.counts.downloads[IDS[1]!] === 1, "the second download");
    await Bun.sleep(200);

    const signalled = Date.now();
    connector.proc.kill(signal);
    const code = await connector.exited;

    // An upper bound with a wide margin: without the abort, the exit comes after the grace time.
    expect(Date.now() - signalled).toBeLessThan(graceMs);
    expect(code).toBe(0);
    expect(connector.logs().some((line) => line.message.startsWith("Shutdown took too long"))).toBe(false);
    const work = scenario.opencti.works[0]!;
    expect(work.status).toBe("complete");
    expect(work.errors).toEqual([]);
    expect(work.messages.at(-1)?.message).toContain(`during the download of version ${IDS[1]}`);
    expect(work.messages.at(-1)?.message).toContain(`the next run resumes after ${IDS[0]}`);
    expect(readdirSync(scenario.stateDir).filter((name) => name.endsWith(".spool"))).toEqual([]);
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe(IDS[0]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe(IDS[0]);
    expect(scenario.citalid.counts.downloads[IDS[2]!]).toBeUndefined();
    expect(existsSync(`${scenario.statePath}.lock`)).toBe(false);
  });

  test("during the sleep exits 0", async () => {
    const connector = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "PT24H" }), []);
    await connector.waitForLog("Schedule next run of connector");

    connector.proc.kill("SIGTERM");

    expect(await connector.exited).toBe(0);
    expect(connector.logs().at(-1)?.message).toBe("Connector stopped");
    expect(scenario.opencti.openWorks()).toEqual([]);
  });

  test("SIGINT during the sleep exits 0", async () => {
    const connector = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "PT24H" }), []);
    await connector.waitForLog("Schedule next run of connector");

    connector.proc.kill("SIGINT");

    expect(await connector.exited).toBe(0);
  });

  test("second signal exits at once", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: HOLD_MS, skip: 1, times: 1 });
    const connector = startConnector(scenario.env({ CONNECTOR_SHUTDOWN_GRACE_MS: "60000" }));
    await waitFor(() => operationCount("stixBundlePush") === 2, "the second push");
    connector.proc.kill("SIGTERM");
    await connector.waitForLog("Preparing connector for clean shutdown");

    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(1);
    expect(connector.logs().some((line) => line.message === "Second signal received, exiting at once")).toBe(true);
    expect(scenario.opencti.pushes.length).toBe(1);
  });

  test("grace time ends a stuck push", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: HOLD_MS, skip: 1, times: 1 });
    const connector = startConnector(scenario.env({ CONNECTOR_SHUTDOWN_GRACE_MS: "300" }));
    await waitFor(() => operationCount("stixBundlePush") === 2, "the second push");

    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(0);
    expect(connector.logs().some((line) => line.message.startsWith("Shutdown took too long"))).toBe(true);
    expect(scenario.opencti.pushes.length).toBe(1);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe(IDS[0]);
  });
});
