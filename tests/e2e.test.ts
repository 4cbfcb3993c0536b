/**
 * End-to-end: the real connector (`main.ts` as a subprocess) against the
 * fake Citalid API and the fake OpenCTI platform.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { FIXTURE_VERSIONS, fixtureCitalidVersions, parseFixtureBundle } from "./fixtures/versions.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, startConnector, tempDir } from "./helpers/connector.ts";

const CONNECTOR_ID = "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69";
const IDS = FIXTURE_VERSIONS.map((version) => version.id);

// The author's id, computed here as OpenCTI does: uuid5 in OpenCTI's
// namespace over the canonical JSON of the lower-cased name and class.
const AUTHOR_ID = (() => {
  const namespace = Buffer.from("00abedb4aa42466c9c01fed23315a9b7", "hex");
  const hash = createHash("sha1").update(namespace).update('{"identity_class":"organization","name":"citalid"}').digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString("hex");
  return `identity--${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
})();

let citalid: FakeCitalid;
let opencti: FakeOpenCTI;
let stateDir: string;

beforeEach(async () => {
  citalid = await startFakeCitalid({ versions: fixtureCitalidVersions(), password: TEST_SECRETS.citalidPassword });
  opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
  stateDir = tempDir();
});

afterEach(async () => {
  await citalid.stop();
  await opencti.stop();
});

function env(extra: Record<string, string> = {}) {
  return connectorEnv(citalid, opencti, stateDir, extra);
}

function platformState(): Record<string, unknown> | null {
  const stored = opencti.connectors.get(CONNECTOR_ID)?.state ?? null;
  return stored === null ? null : JSON.parse(stored);
}

function fileState(): Record<string, unknown> | null {
  return JSON.parse(readFileSync(join(stateDir, "state.json"), "utf8"));
}

function pushedObjects(workId?: string) {
  return opencti.pushes.filter((push) => workId === undefined || push.workId === workId).flatMap((push) => push.bundle.objects);
}

describe("first import", () => {
  test("imports every version oldest first", async () => {
    const run = await runConnectorOnce(env());

    expect(run.code).toBe(0);
    const processed = run.logs().filter((line) => line.message === "Processing version").map((line) => line.attributes?.version_id);
    expect(processed).toEqual(IDS);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
    expect(fileState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test("sends every object as served plus the author", async () => {
    const run = await runConnectorOnce(env());
    expect(run.code).toBe(0);

    expect(opencti.pushes.length).toBe(FIXTURE_VERSIONS.length);
    for (const [index, version] of FIXTURE_VERSIONS.entries()) {
      const served = parseFixtureBundle(version.file).objects;
      const received = opencti.pushes[index]!.bundle.objects;
      const byId = new Map(received.map((object) => [object.id, object]));

      expect(received.length).toBe(served.length + 1);
      expect(byId.get(AUTHOR_ID)?.name).toBe("Citalid");
      expect(byId.get(AUTHOR_ID)?.identity_class).toBe("organization");
      for (const object of served) {
        const expected = { ...object };
        const getsAuthor = object.type !== "identity" && object.type !== "marking-definition";
        if (getsAuthor && object.created_by_ref === undefined) {
          expected.created_by_ref = AUTHOR_ID;
        }
        expect(byId.get(object.id)).toEqual(expected);
      }
    }
  });

  test("uses one work closed with a summary", async () => {
    await runConnectorOnce(env());

    expect(opencti.works.length).toBe(1);
    const work = opencti.works[0]!;
    expect(work.name).toMatch(/^Citalid run @ \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(work.status).toBe("complete");
    expect(work.errors).toEqual([]);
    expect(work.messages.at(-1)?.message).toContain("Imported 4 Citalid version(s)");
    expect(opencti.pushes.every((push) => push.workId === work.id)).toBe(true);
    expect(opencti.openWorks()).toEqual([]);
  });

  test("registers, pings and never unregisters", async () => {
    await runConnectorOnce(env());

    const registration = opencti.registrations[0]!.input;
    expect(registration.id).toBe(CONNECTOR_ID);
    expect(registration.type).toBe("EXTERNAL_IMPORT");
    expect(registration.name).toBe("Citalid");
    expect(registration.scope).toEqual(["citalid"]);
    expect(opencti.connectorDeletes).toEqual([]);
    const lastPing = opencti.pings.at(-1)!;
    expect(JSON.parse(lastPing.state!).last_loaded_bundle_id).toBe("20250301");
    expect(lastPing.connectorInfo?.run_and_terminate).toBe(true);
    expect(opencti.requests.every((request) => request.path === "/graphql")).toBe(true);
    expect(opencti.requests.every((request) => request.userAgent?.startsWith("citalid-connector/"))).toBe(true);
  });

  test("sends the state after each version", async () => {
    await runConnectorOnce(env());

    const sentIds = opencti.pings
      .map((ping) => (ping.state && ping.state !== "null" ? JSON.parse(ping.state).last_loaded_bundle_id : null))
      .filter((id, index, all) => id !== null && id !== all[index - 1]);
    expect(sentIds).toEqual(IDS);
  });

  test("writes the state file with mode 0600", async () => {
    await runConnectorOnce(env());

    const mode = statSync(join(stateDir, "state.json")).mode & 0o777;
    expect(mode).toBe(0o600);
    const state = fileState()!;
    expect(state.last_run).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(existsSync(join(stateDir, "state.json.lock"))).toBe(false);
  });
});

describe("later runs", () => {
  test("nothing new creates no work", async () => {
    await runConnectorOnce(env());
    const pushes = opencti.pushes.length;

    const second = await runConnectorOnce(env());

    expect(second.code).toBe(0);
    expect(second.logs().some((line) => line.message.includes("already loaded"))).toBe(true);
    expect(opencti.works.length).toBe(1);
    expect(opencti.pushes.length).toBe(pushes);
    expect(citalid.counts.downloadsTotal).toBe(FIXTURE_VERSIONS.length);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test("imports only a new version", async () => {
    await runConnectorOnce(env());
    citalid.addVersion({ id: "20250301-2", body: readFixtureText("ics-attack-18.1.json.gz") });
    citalid.clearRecords();

    const second = await runConnectorOnce(env());

    expect(second.code).toBe(0);
    expect(Object.keys(citalid.counts.downloads)).toEqual(["20250301-2"]);
    expect(opencti.works.length).toBe(2);
    expect(opencti.works[1]!.status).toBe("complete");
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301-2");
  });

  test("state survives a restart", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 2));
    await runConnectorOnce(env());
    citalid.setVersions(fixtureCitalidVersions());
    citalid.clearRecords();

    await runConnectorOnce(env());

    expect(Object.keys(citalid.counts.downloads).sort()).toEqual(["20250210", "20250301"]);
    expect(fileState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test("failed version is retried next run", async () => {
    citalid.inject("20250210", { kind: "status", status: 500 });

    const first = await runConnectorOnce(env());

    expect(first.code).toBe(1);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250105-2");
    expect(fileState()?.last_loaded_bundle_id).toBe("20250105-2");
    expect(citalid.counts.downloads["20250301"] ?? 0).toBe(0);
    const failedWork = opencti.works[0]!;
    expect(failedWork.errors.length).toBe(1);
    expect(failedWork.errors[0]!.message).toContain("20250210");
    expect(opencti.openWorks()).toEqual([]);

    citalid.clearFaults();
    citalid.clearRecords();
    const second = await runConnectorOnce(env());

    expect(second.code).toBe(0);
    expect(Object.keys(citalid.counts.downloads)).toEqual(["20250210", "20250301"]);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test("platform state wins over the file", async () => {
    await runConnectorOnce(env());
    opencti.seedConnector({ id: CONNECTOR_ID, state: JSON.stringify({ last_loaded_bundle_id: "20250105-2" }) });
    citalid.clearRecords();

    await runConnectorOnce(env());

    expect(Object.keys(citalid.counts.downloads).sort()).toEqual(["20250210", "20250301"]);
  });

  test("keeps unknown state keys", async () => {
    opencti.seedConnector({ id: CONNECTOR_ID, state: JSON.stringify({ last_loaded_bundle_id: "20250210", custom: 7 }) });

    await runConnectorOnce(env());

    expect(platformState()).toMatchObject({ last_loaded_bundle_id: "20250301", custom: 7 });
  });
});

describe("run-and-terminate", () => {
  test.each([
    ["CONNECTOR_RUN_AND_TERMINATE", { CONNECTOR_RUN_AND_TERMINATE: "true" }],
    ["zero duration PT0S", { CONNECTOR_DURATION_PERIOD: "PT0S" }],
    ["zero duration 0", { CONNECTOR_DURATION_PERIOD: "0" }],
  ])("%s runs once and exits", async (_name, extra) => {
    const run = await runConnectorOnce(env(extra), []);

    expect(run.code).toBe(0);
    expect(opencti.works.length).toBe(1);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
  });
});

describe("push size limit", () => {
  test("cuts versions into bundles under the limit", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 1));

    const run = await runConnectorOnce(env({ CONNECTOR_PUSH_MAX_MB: "0.4" }));

    expect(run.code).toBe(0);
    expect(opencti.pushes.length).toBeGreaterThan(5);
    for (const push of opencti.pushes) {
      expect(push.bytes).toBeLessThanOrEqual(400_000 * 1.5);
      expect(push.bundle.objects.some((object) => object.id === AUTHOR_ID)).toBe(true);
    }
    const served = parseFixtureBundle(FIXTURE_VERSIONS[0]!.file).objects;
    const received = new Set(pushedObjects().map((object) => object.id));
    expect(served.filter((object) => !received.has(object.id))).toEqual([]);
  });

  test("bundle JSON stays under the limit", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 1));
    const sizes: number[] = [];

    await runConnectorOnce(env({ CONNECTOR_PUSH_MAX_MB: "0.4" }));

    for (const push of opencti.pushes) {
      sizes.push(Buffer.byteLength(JSON.stringify(push.bundle)));
    }
    expect(Math.max(...sizes)).toBeLessThanOrEqual(400_000);
  });
});

describe("scheduled mode", () => {
  test("runs again after the duration period", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 1));
    const connector = startConnector(env({ CONNECTOR_DURATION_PERIOD: "PT1S" }), []);

    await connector.waitForLog("Schedule next run of connector");
    citalid.addVersion({ id: "20250105-2", body: readFixtureText("ics-attack-17.1.json.gz") });
    await waitFor(() => platformState()?.last_loaded_bundle_id === "20250105-2");
    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(0);
    expect(opencti.works.length).toBe(2);
    expect(opencti.works.every((work) => work.status === "complete")).toBe(true);
    expect(citalid.counts.logins).toBeGreaterThanOrEqual(2);
    const info = opencti.pings.at(-1)!.connectorInfo!;
    expect(info.run_and_terminate).toBe(false);
    expect(info.queue_threshold).toBe(500);
  });

  test("remote reset starts a fresh import", async () => {
    const connector = startConnector(env({ CONNECTOR_DURATION_PERIOD: "PT1H" }), []);
    await connector.waitForLog("Schedule next run of connector");
    expect(opencti.pushes.length).toBe(4);

    opencti.resetState(CONNECTOR_ID);
    await connector.waitForLog("remotely reset");
    await waitFor(() => opencti.pushes.length === 8);
    await waitFor(() => platformState()?.last_loaded_bundle_id === "20250301");
    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(0);
    expect(opencti.works.length).toBe(2);
    expect(opencti.pushes.slice(4).map((push) => push.workId).every((id) => id === opencti.works[1]!.id)).toBe(true);
    expect(fileState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test("SIGTERM while idle exits at once", async () => {
    const connector = startConnector(env({ CONNECTOR_DURATION_PERIOD: "PT24H" }), []);
    await connector.waitForLog("Schedule next run of connector");
    const pingsBefore = opencti.pings.length;

    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(0);
    expect(opencti.pings.length).toBeGreaterThan(pingsBefore);
    expect(connector.logs().some((line) => line.message === "Connector stopped")).toBe(true);
  });

  test("queue over the threshold postpones the run", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 1));
    const connector = startConnector(env({ CONNECTOR_DURATION_PERIOD: "PT1S", CONNECTOR_QUEUE_THRESHOLD: "1" }), []);
    await connector.waitForLog("Schedule next run of connector");
    opencti.queueDetails = { messages_number: 10, messages_size: 5_000_000 };

    await connector.waitForLog("will not run until the queue");
    await waitFor(() => opencti.pings.some((ping) => ping.connectorInfo?.buffering === true));
    const loginsWhileBuffering = citalid.counts.logins;
    opencti.queueDetails = { messages_number: 0, messages_size: 0 };
    await waitFor(() => citalid.counts.logins > loginsWhileBuffering);
    connector.proc.kill("SIGTERM");

    expect(await connector.exited).toBe(0);
    expect(loginsWhileBuffering).toBe(1);
  });
});

function readFixtureText(file: string): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(parseFixtureBundle(file)));
}

async function waitFor(condition: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Condition not met within ${timeoutMs} ms`);
    }
    await Bun.sleep(20);
  }
}
