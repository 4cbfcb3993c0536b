import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { CitalidClient } from "../lib/citalid.ts";
import { createLogger } from "../lib/log.ts";
import { OpenCTIClient } from "../lib/opencti.ts";
import { runImport } from "../lib/run.ts";
import { type BundleSender, createApiSender } from "../lib/sender.ts";
import { StateFile } from "../lib/state.ts";
import { StateSync } from "../lib/state-sync.ts";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { tempDir } from "./helpers/connector.ts";

const CONNECTOR_ID = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f";

function version(id: string) {
  return { id, body: { type: "bundle", id: `bundle--${id}`, objects: [{ type: "note", id: `note--${id}`, content: id }] } };
}

let citalid: FakeCitalid;
let opencti: FakeOpenCTI;
let file: StateFile;
let sync: StateSync;
let openctiClient: OpenCTIClient;
let citalidClient: CitalidClient;
let apiSender: BundleSender;
const logger = createLogger({ write: () => {} });

beforeEach(async () => {
  citalid = await startFakeCitalid({ versions: [version("20250101"), version("20250102"), version("20250103")] });
  opencti = await startFakeOpenCTI();
  openctiClient = new OpenCTIClient({ url: opencti.url, token: opencti.token, logger, userAgent: "test", retryDelayMs: 5, retryLimit: 1 });
  await openctiClient.registerConnector({ id: CONNECTOR_ID, name: "Citalid", type: "EXTERNAL_IMPORT", scope: [] });
  citalidClient = new CitalidClient({ url: citalid.url, user: citalid.user, password: citalid.password, logger, userAgent: "test", retryDelayMs: 5, retryLimit: 1 });
  apiSender = createApiSender({ opencti: openctiClient, connectorId: CONNECTOR_ID, maxBundleBytes: 1_000_000, logger });
  file = new StateFile(join(tempDir(), "state.json"), logger);
  file.open();
  sync = new StateSync(file, logger, undefined);
});

afterEach(async () => {
  file.close();
  await citalid.stop();
  await opencti.stop();
});

function run(overrides: { sender?: BundleSender; stopping?: () => boolean; spoolDir?: string } = {}) {
  return runImport({
    citalid: citalidClient,
    opencti: openctiClient,
    sender: overrides.sender ?? apiSender,
    state: sync,
    logger,
    connectorId: CONNECTOR_ID,
    spoolDir: overrides.spoolDir ?? tempDir(),
    stopping: overrides.stopping ?? (() => false),
  });
}

describe("runImport", () => {
  test("imports new versions in order", async () => {
    const outcome = await run();

    expect(outcome.status).toBe("completed");
    expect(outcome.versions.map((report) => report.id)).toEqual(["20250101", "20250102", "20250103"]);
    expect(sync.state?.last_loaded_bundle_id).toBe("20250103");
  });

  test("spool file outlives the state save", async () => {
    const spoolDir = tempDir();
    const spoolFilesAtSave: string[][] = [];
    const save = sync.save.bind(sync);
    sync.save = async (state) => {
      spoolFilesAtSave.push(spoolFiles(spoolDir));
      await save(state);
    };

    const outcome = await run({ spoolDir });

    expect(outcome.status).toBe("completed");
    expect(spoolFilesAtSave.map((names) => names.length)).toEqual([1, 1, 1]);
    expect(spoolFilesAtSave[0]![0]).toContain("citalid-20250101-");
    expect(spoolFiles(spoolDir)).toEqual([]);
  });

  test("failed version leaves no spool file", async () => {
    const spoolDir = tempDir();
    citalid.inject("20250102", { kind: "body", body: { type: "not-a-bundle" } });

    const outcome = await run({ spoolDir });

    expect(outcome.status).toBe("failed");
    expect(sync.state?.last_loaded_bundle_id).toBe("20250101");
    expect(spoolFiles(spoolDir)).toEqual([]);
  });

  test("up to date creates no work", async () => {
    await sync.save({ last_loaded_bundle_id: "20250103" });

    const outcome = await run();

    expect(outcome.status).toBe("up-to-date");
    expect(opencti.works).toEqual([]);
    expect(sync.state?.last_run).toMatch(/Z$/);
  });

  test("failed login creates no work", async () => {
    citalid.inject("token", { kind: "status", status: 400, body: { error: "invalid_grant" } });

    const outcome = await run();

    expect(outcome.status).toBe("failed");
    expect(outcome.error?.message).toContain("Citalid rejected the credentials");
    expect(opencti.works).toEqual([]);
  });

  test("failure closes the work in error", async () => {
    citalid.inject("20250102", { kind: "body", body: { type: "not-a-bundle" } });

    const outcome = await run();

    expect(outcome.status).toBe("failed");
    expect(sync.state?.last_loaded_bundle_id).toBe("20250101");
    expect(opencti.works[0]!.errors.length).toBe(1);
    expect(opencti.works[0]!.errors[0]!.message).toContain("20250102");
    expect(opencti.works[0]!.status).toBe("complete");
    expect(citalid.counts.downloads["20250103"] ?? 0).toBe(0);
  });

  test("shutdown stops after the current version", async () => {
    let sends = 0;
    const sender: BundleSender = {
      send: (objects, context) => apiSender.send(objects, context),
      sendSpooled: async (version, context) => {
        sends++;
        return apiSender.sendSpooled(version, context);
      },
      close: async () => {},
    };

    const outcome = await run({ sender, stopping: () => sends >= 1 });

    expect(outcome.status).toBe("interrupted");
    expect(sends).toBe(1);
    expect(sync.state?.last_loaded_bundle_id).toBe("20250101");
    expect(opencti.works[0]!.messages.at(-1)?.message).toContain("interrupted");
    expect(opencti.works[0]!.errors).toEqual([]);
  });

  test("reset during a push stores no cursor", async () => {
    const sender: BundleSender = {
      send: (objects, context) => apiSender.send(objects, context),
      sendSpooled: async (version, context) => {
        const result = await apiSender.sendSpooled(version, context);
        if (context.versionId === "20250102") {
          sync.adoptRemote(null);
        }
        return result;
      },
      close: async () => {},
    };

    const outcome = await run({ sender });

    expect(outcome.status).toBe("reset");
    expect(sync.state).toBeUndefined();
    expect(citalid.counts.downloads["20250103"] ?? 0).toBe(0);
    expect(opencti.works[0]!.messages.at(-1)?.message).toContain("reset");
  });
});

function spoolFiles(folder: string): string[] {
  return readdirSync(folder).filter((name) => name.endsWith(".spool"));
}
