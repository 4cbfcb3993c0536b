/**
 * End to end on generated multi-MB versions: the real connector streams
 * each version into a spool file and sends it from there, on both
 * protocols. Speed and memory are measured by bench/, not here.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateVersion } from "../bench/generate.ts";
import { AUTHOR_ID, prepareVersion } from "../lib/bundle.ts";
import { splitBundle } from "../lib/splitter.ts";
import type { StixObject } from "../lib/stix.ts";
import { consumePushQueue } from "./helpers/broker.ts";
import { runConnectorOnce, startConnector } from "./helpers/connector.ts";
import { deadPid } from "./helpers/processes.ts";
import { type Scenario, startScenario, waitFor } from "./helpers/scenario.ts";

const VERSION_ID = "20250301";

let dataDir: string;
let largePath: string;
let smallPath: string;
let scenario: Scenario;

beforeAll(() => {
  dataDir = mkdtempSync(join(tmpdir(), "citalid-large-version-"));
  largePath = join(dataDir, "large.json");
  smallPath = join(dataDir, "small.json");
  generateVersion({ path: largePath, targetBytes: 12_000_000 });
  generateVersion({ path: smallPath, targetBytes: 4_000_000, withoutAuthor: true });
});

afterAll(() => {
  rmSync(dataDir, { recursive: true, force: true });
});

beforeEach(async () => {
  scenario = await startScenario({ citalid: { versions: [{ id: VERSION_ID, bodyFile: largePath }] } });
});

afterEach(async () => {
  await scenario.stop();
});

function servedObjects(path: string): StixObject[] {
  return (JSON.parse(readFileSync(path, "utf8")) as { objects: StixObject[] }).objects;
}

function spoolFiles(folder: string): string[] {
  return readdirSync(folder).filter((name) => name.endsWith(".spool"));
}

describe("large version through the API", () => {
  test("every object arrives", async () => {
    const run = await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1" }));

    expect(run.code).toBe(0);
    const served = servedObjects(largePath);
    const received = scenario.pushedIds();
    expect(served.filter((object) => !received.has(object.id))).toEqual([]);
    expect(received.size).toBe(served.length + 1);
    expect(received.has(AUTHOR_ID)).toBe(true);
  });

  test("request bodies stay under the limit", async () => {
    await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1" }));

    const pushes = scenario.opencti.requests.filter((request) => request.body.includes("stixBundlePush"));
    expect(pushes.length).toBeGreaterThan(12);
    expect(Math.max(...pushes.map((request) => request.bodyBytes))).toBeLessThanOrEqual(1_000_000);
    expect(scenario.opencti.pushes.every((push) => push.bundle.objects.some((object) => object.id === AUTHOR_ID))).toBe(true);
  });

  test("objects arrive with the author", async () => {
    await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1" }));

    const received = new Map(scenario.opencti.pushes.flatMap((push) => push.bundle.objects).map((object) => [object.id, object]));
    const expected = prepareVersion(JSON.parse(readFileSync(largePath, "utf8")), VERSION_ID).objects;
    for (const object of expected) {
      expect(received.get(object.id)).toEqual(object);
    }
  });

  test("author is added where missing", async () => {
    scenario.citalid.setVersions([{ id: VERSION_ID, bodyFile: smallPath }]);

    await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1" }));

    const received = new Map(scenario.opencti.pushes.flatMap((push) => push.bundle.objects).map((object) => [object.id, object]));
    const served = servedObjects(smallPath).filter((object) => object.type !== "identity" && object.type !== "marking-definition");
    expect(served.length).toBeGreaterThan(1000);
    for (const object of served) {
      expect(received.get(object.id)).toEqual({ ...object, created_by_ref: AUTHOR_ID });
    }
  });

  test("cut body is downloaded again", async () => {
    scenario.citalid.inject(VERSION_ID, { kind: "truncate", times: 1 });

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1" }));

    expect(run.code).toBe(0);
    expect(scenario.citalid.counts.downloads[VERSION_ID]).toBe(2);
    const retries = run.logs().filter((line) => line.message === "Citalid download failed, retrying");
    expect(retries.length).toBe(1);
    expect(retries[0]!.attributes?.attempt).toBe(2);
    expect(scenario.pushedIds().size).toBe(servedObjects(largePath).length + 1);
  });
});

describe("large version through RabbitMQ", () => {
  test("messages equal the whole-object split", async () => {
    const connectorId = randomUUID();
    scenario.citalid.setVersions([{ id: VERSION_ID, bodyFile: smallPath }]);
    const consumer = await consumePushQueue(connectorId, { graphqlUrl: scenario.opencti.graphqlUrl, token: scenario.opencti.token });
    try {
      const run = await runConnectorOnce(scenario.env({ CONNECTOR_ID: connectorId, CONNECTOR_QUEUE_PROTOCOL: "amqp" }));
      await consumer.settle();

      const expected = splitBundle({ id: "bundle--x", objects: prepareVersion(JSON.parse(readFileSync(smallPath, "utf8")), VERSION_ID).objects });
      expect(run.code).toBe(0);
      expect(consumer.messages.length).toBe(expected.bundles.length);
      const received = consumer.messages.map((message) => ({ seq: message.bundle.x_opencti_seq, object: message.bundle.objects[0] }));
      const sent = expected.bundles.map(({ bundle }) => ({ seq: bundle.x_opencti_seq, object: JSON.parse(JSON.stringify(bundle.objects[0])) }));
      expect(received).toEqual(sent);
    } finally {
      await consumer.close();
    }
  });
});

describe("spool files", () => {
  test("are 0600 in CONNECTOR_SPOOL_DIR", async () => {
    const spoolDir = join(scenario.stateDir, "spool");
    mkdirSync(spoolDir);
    scenario.opencti.inject("stixBundlePush", { kind: "delay", delayMs: 1000, times: 1 });

    const connector = startConnector(scenario.env({ CONNECTOR_SPOOL_DIR: spoolDir }));
    await waitFor(() => spoolFiles(spoolDir).length > 0 || connector.proc.exitCode !== null, "a spool file");
    const [name] = spoolFiles(spoolDir);
    const mode = name === undefined ? undefined : statSync(join(spoolDir, name)).mode & 0o777;
    const code = await connector.exited;

    expect(code).toBe(0);
    expect(name).toMatch(new RegExp(`^citalid-${VERSION_ID}-\\d+-[0-9a-f]{8}\\.spool$`));
    expect(mode).toBe(0o600);
    expect(spoolFiles(spoolDir)).toEqual([]);
    expect(spoolFiles(scenario.stateDir)).toEqual([]);
  });

  test("removed after the version", async () => {
    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(spoolFiles(scenario.stateDir)).toEqual([]);
  });

  test("removed after a failed push", async () => {
    scenario.opencti.inject("stixBundlePush", { kind: "error", code: "FUNCTIONAL_ERROR", times: 1 });

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1" }));

    expect(run.code).toBe(1);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBeUndefined();
    expect(spoolFiles(scenario.stateDir)).toEqual([]);
  });

  test("removed after a body that is not JSON", async () => {
    scenario.citalid.inject(VERSION_ID, { kind: "body", body: "<!doctype html><html></html>" });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(1);
    expect(run.logs().some((line) => String(line.attributes?.reason ?? "").includes("is not JSON after 5 attempts"))).toBe(true);
    expect(spoolFiles(scenario.stateDir)).toEqual([]);
  });

  test("leftovers are removed at start-up", async () => {
    const leftover = join(scenario.stateDir, `citalid-${VERSION_ID}-${deadPid()}-0123abcd.spool`);
    const live = join(scenario.stateDir, `citalid-${VERSION_ID}-${process.pid}-0123abcd.spool`);
    writeFileSync(leftover, '{"type":"bundle","objects":[');
    writeFileSync(live, "");

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(existsSync(leftover)).toBe(false);
    expect(existsSync(live)).toBe(true);
    expect(run.logs().some((line) => line.message === "Removed spool files left by an earlier connector process")).toBe(true);
  });

  test("missing CONNECTOR_SPOOL_DIR exits 2", async () => {
    const missing = join(scenario.stateDir, "missing");

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_SPOOL_DIR: missing }));

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain(`Spool folder ${missing} does not exist`);
    expect(scenario.opencti.requests).toEqual([]);
  });
});
