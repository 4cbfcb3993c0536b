/**
 * End-to-end: the real connector (`main.ts` as a subprocess) against the
 * fake Citalid API and the fake OpenCTI platform.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createHash, randomUUID } from "node:crypto";
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { FIXTURE_VERSIONS, fixtureCitalidVersions, parseFixtureBundle } from "./fixtures/versions.ts";
import { type PushQueueConsumer, consumePushQueue } from "./helpers/broker.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, startConnector, tempDir } from "./helpers/connector.ts";

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

// Output of pycti's splitter on each release, without the author identity:
// bundles, and the first 16 hex digits of the SHA-256 of the sorted
// "<id>:<x_opencti_seq>" lines joined by newlines.
const SPLITTER_CONFORMANCE: Record<string, { bundles: number; digest: string }> = {
  "ics-attack-17.0.json.gz": { bundles: 1133, digest: "63980d90731b0d7a" },
  "ics-attack-17.1.json.gz": { bundles: 1099, digest: "e7f3c8344bd71e78" },
  "ics-attack-18.0.json.gz": { bundles: 861, digest: "7e7b777d5a4465e8" },
  "ics-attack-18.1.json.gz": { bundles: 861, digest: "7e7b777d5a4465e8" },
};

type Protocol = "api" | "amqp";

/** A bundle as the platform's workers would see it, whichever way it came. */
interface Received {
  workId: string;
  objects: { id: string; type: string; [key: string]: unknown }[];
  sequence?: number;
  /** `x_opencti_seq` of the bundle (amqp). */
  seq?: number;
}

let citalid: FakeCitalid;
let opencti: FakeOpenCTI;
let stateDir: string;
let CONNECTOR_ID: string;
let consumer: PushQueueConsumer | undefined;
let protocol: Protocol = "api";

async function setUp(selected: Protocol): Promise<void> {
  protocol = selected;
  CONNECTOR_ID = randomUUID();
  citalid = await startFakeCitalid({ versions: fixtureCitalidVersions(), password: TEST_SECRETS.citalidPassword });
  opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
  stateDir = tempDir();
  consumer = selected === "amqp" ? await consumePushQueue(CONNECTOR_ID, { graphqlUrl: opencti.graphqlUrl, token: opencti.token }) : undefined;
}

async function tearDown(): Promise<void> {
  await consumer?.settle();
  await consumer?.close();
  await citalid.stop();
  await opencti.stop();
  rmSync(stateDir, { recursive: true, force: true });
}

function env(extra: Record<string, string> = {}) {
  return connectorEnv(citalid, opencti, stateDir, {
    CONNECTOR_ID,
    CONNECTOR_QUEUE_PROTOCOL: protocol,
    ...extra,
  });
}

/** Runs the connector to its end, then waits for the messages it published. */
async function runOnce(environment: Record<string, string>, args: string[] = ["--once"]) {
  const run = await runConnectorOnce(environment, args);
  await received();
  return run;
}

/** Bundles received so far: pushes (api) or consumed messages (amqp). */
async function received(): Promise<Received[]> {
  if (consumer) {
    await consumer.settle();
    return consumer.messages.map((message) => ({
      workId: message.envelope.work_id ?? "",
      objects: message.bundle.objects,
      sequence: message.envelope.action_sequence,
      seq: message.bundle.x_opencti_seq,
    }));
  }
  return opencti.pushes.map((push) => ({ workId: push.workId, objects: push.bundle.objects }));
}

/** Received bundles grouped by version: one push each (api), or a run of action_sequence 1..n (amqp). */
async function receivedVersions(): Promise<Received[][]> {
  const bundles = await received();
  if (!consumer) {
    return bundles.map((bundle) => [bundle]);
  }
  const versions: Received[][] = [];
  for (const bundle of bundles) {
    if (bundle.sequence === 1) {
      versions.push([]);
    }
    versions.at(-1)!.push(bundle);
  }
  return versions;
}

/**
 * Returns, for an object id, the number of reference paths from it to the
 * author within `objects`: what the author adds to the splitter's
 * dependency count, which counts each path once.
 */
function countAuthorPaths(objects: { id: string; [key: string]: unknown }[]): (id: string) => number {
  const byId = new Map(objects.map((object) => [object.id, object]));
  const memo = new Map<string, number>();
  const paths = (id: string): number => {
    if (id === AUTHOR_ID) {
      return 1;
    }
    const cached = memo.get(id);
    if (cached !== undefined) {
      return cached;
    }
    const object = byId.get(id);
    let total = 0;
    if (object) {
      for (const [key, value] of Object.entries(object)) {
        const refs = key.endsWith("_refs") && Array.isArray(value) ? value : key.endsWith("_ref") ? [value] : [];
        for (const ref of refs) {
          if (typeof ref === "string" && (ref === AUTHOR_ID || byId.has(ref))) {
            total += paths(ref);
          }
        }
      }
    }
    memo.set(id, total);
    return total;
  };
  return paths;
}

function digest(lines: string[]): string {
  return createHash("sha256").update(lines.sort().join("\n")).digest("hex").slice(0, 16);
}

function platformState(): Record<string, unknown> | null {
  const stored = opencti.connectors.get(CONNECTOR_ID)?.state ?? null;
  return stored === null ? null : JSON.parse(stored);
}

function fileState(): Record<string, unknown> | null {
  return JSON.parse(readFileSync(join(stateDir, "state.json"), "utf8"));
}

describe.each(["api", "amqp"] as const)("%s protocol", (selected) => {
beforeEach(() => setUp(selected));
afterEach(tearDown);

describe("first import", () => {
  test("imports every version oldest first", async () => {
    const run = await runOnce(env());

    expect(run.code).toBe(0);
    const processed = run.logs().filter((line) => line.message === "Processing version").map((line) => line.attributes?.version_id);
    expect(processed).toEqual(IDS);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
    expect(fileState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test.skipIf(selected !== "api")("sends every object as served plus the author", async () => {
    const run = await runOnce(env());
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

  test.skipIf(selected !== "amqp")("publishes the splitter's bundles per version", async () => {
    const run = await runOnce(env());
    expect(run.code).toBe(0);

    const versions = await receivedVersions();
    expect(versions.length).toBe(FIXTURE_VERSIONS.length);
    for (const [index, version] of FIXTURE_VERSIONS.entries()) {
      const bundles = versions[index]!.filter((bundle) => bundle.objects[0]!.id !== AUTHOR_ID);
      const expected = SPLITTER_CONFORMANCE[version.file]!;
      const objects = bundles.map((bundle) => bundle.objects[0]!);
      const sequences = new Map(bundles.map((bundle) => [bundle.objects[0]!.id, bundle.seq]));
      const authorPaths = countAuthorPaths(objects);
      // The author this connector adds raises the dependency count of the
      // objects that had no author; take it out to compare with pycti.
      const lines = objects.map((object) => `${object.id}:${sequences.get(object.id)! - authorPaths(object.id)}`);
      expect(bundles.length).toBe(expected.bundles);
      expect(digest(lines)).toBe(expected.digest);
      expect(versions[index]!.map((bundle) => bundle.sequence)).toEqual(versions[index]!.map((_bundle, position) => position + 1));
      expect(versions[index]!.some((bundle) => bundle.objects[0]!.id === AUTHOR_ID)).toBe(true);
    }
  });

  test.skipIf(selected !== "amqp")("sends messages in the pycti envelope", async () => {
    await runOnce(env());
    await consumer!.settle();

    const work = opencti.works[0]!;
    expect(consumer!.messages.length).toBeGreaterThan(0);
    for (const message of consumer!.messages) {
      expect(message.envelope.bundle_type).toBe("QUEUE_BUNDLE");
      expect(message.envelope.applicant_id).toBe(opencti.userId);
      expect(message.envelope.entities_types).toEqual([]);
      expect(message.envelope.update).toBe(false);
      expect(message.envelope.draft_id).toBeNull();
      expect(message.envelope.work_id).toBe(work.id);
      expect(message.properties.deliveryMode).toBe(2);
      expect(message.properties.contentEncoding).toBe("utf-8");
      expect(message.bundle.objects.length).toBe(1);
    }
    expect(work.expected).toBe(consumer!.messages.length);
  });

  test("uses one work closed with a summary", async () => {
    await runOnce(env());
    await received();

    expect(opencti.works.length).toBe(1);
    const work = opencti.works[0]!;
    expect(work.name).toMatch(/^Citalid run @ \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(work.status).toBe("complete");
    expect(work.errors).toEqual([]);
    expect(work.messages.at(-1)?.message).toContain("Imported 4 Citalid version(s)");
    expect((await received()).every((bundle) => bundle.workId === work.id)).toBe(true);
    expect(opencti.openWorks()).toEqual([]);
  });

  test("registers, pings and never unregisters", async () => {
    await runOnce(env());

    const registration = opencti.registrations[0]!.input;
    expect(registration.id).toBe(CONNECTOR_ID);
    expect(registration.type).toBe("EXTERNAL_IMPORT");
    expect(registration.name).toBe("Citalid");
    expect(registration.scope).toEqual(["citalid"]);
    expect(opencti.connectorDeletes).toEqual([]);
    const lastPing = opencti.pings.at(-1)!;
    expect(JSON.parse(lastPing.state!).last_loaded_bundle_id).toBe("20250301");
    expect(lastPing.connectorInfo?.run_and_terminate).toBe(true);
    // The test plays the worker in amqp mode; its own reports are not the connector's.
    const connectorRequests = opencti.requests.filter((request) => !request.body.includes("WorkerReport"));
    expect(connectorRequests.every((request) => request.path === "/graphql")).toBe(true);
    expect(connectorRequests.every((request) => request.userAgent?.startsWith("citalid-connector/"))).toBe(true);
  });

  test("sends the state after each version", async () => {
    await runOnce(env());

    const sentIds = opencti.pings
      .map((ping) => (ping.state && ping.state !== "null" ? JSON.parse(ping.state).last_loaded_bundle_id : null))
      .filter((id, index, all) => id !== null && id !== all[index - 1]);
    expect(sentIds).toEqual(IDS);
  });

  test("writes the state file with mode 0600", async () => {
    await runOnce(env());

    const mode = statSync(join(stateDir, "state.json")).mode & 0o777;
    expect(mode).toBe(0o600);
    const state = fileState()!;
    expect(state.last_run).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(existsSync(join(stateDir, "state.json.lock"))).toBe(false);
  });
});

describe("later runs", () => {
  test("nothing new creates no work", async () => {
    await runOnce(env());
    const bundles = (await received()).length;

    const second = await runOnce(env());

    expect(second.code).toBe(0);
    expect(second.logs().some((line) => line.message.includes("already loaded"))).toBe(true);
    expect(opencti.works.length).toBe(1);
    expect((await received()).length).toBe(bundles);
    expect(citalid.counts.downloadsTotal).toBe(FIXTURE_VERSIONS.length);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test("imports only a new version", async () => {
    await runOnce(env());
    citalid.addVersion({ id: "20250301-2", body: readFixtureText("ics-attack-18.1.json.gz") });
    citalid.clearRecords();

    const second = await runOnce(env());

    expect(second.code).toBe(0);
    expect(Object.keys(citalid.counts.downloads)).toEqual(["20250301-2"]);
    expect(opencti.works.length).toBe(2);
    expect(opencti.works[1]!.status).toBe("complete");
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301-2");
  });

  test("state survives a restart", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 2));
    await runOnce(env());
    citalid.setVersions(fixtureCitalidVersions());
    citalid.clearRecords();

    await runOnce(env());

    expect(Object.keys(citalid.counts.downloads).sort()).toEqual(["20250210", "20250301"]);
    expect(fileState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test("failed version is retried next run", async () => {
    citalid.inject("20250210", { kind: "status", status: 500 });

    const first = await runOnce(env());

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
    const second = await runOnce(env());

    expect(second.code).toBe(0);
    expect(Object.keys(citalid.counts.downloads)).toEqual(["20250210", "20250301"]);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
  });

  test("platform state wins over the file", async () => {
    await runOnce(env());
    opencti.seedConnector({ id: CONNECTOR_ID, state: JSON.stringify({ last_loaded_bundle_id: "20250105-2" }) });
    citalid.clearRecords();

    await runOnce(env());

    expect(Object.keys(citalid.counts.downloads).sort()).toEqual(["20250210", "20250301"]);
  });

  test.each([
    ["not JSON", "{last_loaded_bundle_id: 20250105-2"],
    ["a bad version id", JSON.stringify({ last_loaded_bundle_id: 20250105 })],
  ])("platform state that is %s gives way to the file", async (_name, state) => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 2));
    await runOnce(env());
    opencti.seedConnector({ id: CONNECTOR_ID, state });
    citalid.setVersions(fixtureCitalidVersions());
    citalid.clearRecords();

    const run = await runOnce(env());

    expect(run.code).toBe(0);
    expect(Object.keys(citalid.counts.downloads).sort()).toEqual(["20250210", "20250301"]);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
    expect(fileState()?.last_loaded_bundle_id).toBe("20250301");
    const warning = run.logs().find((line) => line.message.startsWith("The connector state on the platform is unusable"));
    expect(warning?.attributes?.last_loaded_bundle_id).toBe("20250105-2");
  });

  test("empty platform state still starts afresh", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 2));
    await runOnce(env());
    opencti.seedConnector({ id: CONNECTOR_ID, state: null });
    citalid.clearRecords();

    await runOnce(env());

    expect(Object.keys(citalid.counts.downloads).sort()).toEqual(["20250105-1", "20250105-2"]);
  });

  test("keeps unknown state keys", async () => {
    opencti.seedConnector({ id: CONNECTOR_ID, state: JSON.stringify({ last_loaded_bundle_id: "20250210", custom: 7 }) });

    await runOnce(env());

    expect(platformState()).toMatchObject({ last_loaded_bundle_id: "20250301", custom: 7 });
  });
});

describe("run-and-terminate", () => {
  test.each([
    ["CONNECTOR_RUN_AND_TERMINATE", { CONNECTOR_RUN_AND_TERMINATE: "true" }],
    ["zero duration PT0S", { CONNECTOR_DURATION_PERIOD: "PT0S" }],
    ["zero duration 0", { CONNECTOR_DURATION_PERIOD: "0" }],
  ])("%s runs once and exits", async (_name, extra) => {
    const run = await runOnce(env(extra), []);

    expect(run.code).toBe(0);
    expect(opencti.works.length).toBe(1);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
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
    await received();

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
    const firstRun = (await received()).length;

    opencti.resetState(CONNECTOR_ID);
    await connector.waitForLog("remotely reset");
    await waitFor(() => opencti.works.length === 2 && opencti.works[1]!.toProcessedCalls === 1);
    await waitFor(() => platformState()?.last_loaded_bundle_id === "20250301");
    connector.proc.kill("SIGTERM");
    const code = await connector.exited;

    expect(code).toBe(0);
    expect(opencti.works.length).toBe(2);
    const secondRun = (await received()).slice(firstRun);
    expect(secondRun.length).toBe(firstRun);
    expect(secondRun.every((bundle) => bundle.workId === opencti.works[1]!.id)).toBe(true);
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
});

describe("push size limit", () => {
  beforeEach(() => setUp("api"));
  afterEach(tearDown);

  test("cuts versions into bundles under the limit", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 1));

    const run = await runOnce(env({ CONNECTOR_PUSH_MAX_MB: "0.4" }));

    expect(run.code).toBe(0);
    expect(opencti.pushes.length).toBeGreaterThan(5);
    for (const push of opencti.pushes) {
      expect(push.bytes).toBeLessThanOrEqual(400_000 * 1.5);
      expect(push.bundle.objects.some((object) => object.id === AUTHOR_ID)).toBe(true);
    }
    const served = parseFixtureBundle(FIXTURE_VERSIONS[0]!.file).objects;
    const received = new Set(opencti.pushes.flatMap((push) => push.bundle.objects).map((object) => object.id));
    expect(served.filter((object) => !received.has(object.id))).toEqual([]);
  });

  test("bundle JSON stays under the limit", async () => {
    citalid.setVersions(fixtureCitalidVersions().slice(0, 1));
    const sizes: number[] = [];

    await runOnce(env({ CONNECTOR_PUSH_MAX_MB: "0.4" }));

    for (const push of opencti.pushes) {
      sizes.push(Buffer.byteLength(JSON.stringify(push.bundle)));
    }
    expect(Math.max(...sizes)).toBeLessThanOrEqual(400_000);
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
