import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { OpenCTIClient } from "../lib/opencti.ts";
import { Pinger } from "../lib/ping.ts";
import { StateFile } from "../lib/state.ts";
import { StateSync } from "../lib/state-sync.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { tempDir } from "./helpers/connector.ts";

const CONNECTOR_ID = "7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b";
const INFO = {
  run_and_terminate: false,
  buffering: false,
  queue_threshold: 500,
  queue_messages_size: 0,
  next_run_datetime: null,
  last_run_datetime: null,
};

let opencti: FakeOpenCTI;
let lines: string[];
let file: StateFile;
let sync: StateSync;
let pinger: Pinger;

beforeEach(async () => {
  opencti = await startFakeOpenCTI();
  lines = [];
  const logger = createLogger({ level: "debug", write: (line) => lines.push(line) });
  const client = new OpenCTIClient({ url: opencti.url, token: opencti.token, logger, userAgent: "test", retryDelayMs: 5, retryLimit: 0 });
  await client.registerConnector({ id: CONNECTOR_ID, name: "Citalid", type: "EXTERNAL_IMPORT", scope: [] });

  file = new StateFile(join(tempDir(), "state.json"), logger);
  file.open();
  sync = new StateSync(file, logger, undefined);
  pinger = new Pinger({
    opencti: client,
    connectorId: CONNECTOR_ID,
    logger,
    state: () => sync.serialized(),
    info: () => INFO,
    sameState: (a, b) => sync.sameState(a, b),
    onRemoteState: (remote) => sync.adoptRemote(remote),
    intervalMs: 60_000,
  });
  sync.attach(pinger);
});

afterEach(async () => {
  pinger.stop();
  file.close();
  await opencti.stop();
});

describe("StateSync.save", () => {
  test("writes the file and pings", async () => {
    await sync.save({ last_loaded_bundle_id: "20250105-1", last_run: "2026-01-01T00:00:00Z" });

    expect(JSON.parse(readFileSync(file.path, "utf8")).last_loaded_bundle_id).toBe("20250105-1");
    expect(JSON.parse(opencti.connectors.get(CONNECTOR_ID)!.state!).last_loaded_bundle_id).toBe("20250105-1");
    expect(opencti.pings.length).toBe(1);
  });

  test("keeps the file when the ping fails", async () => {
    opencti.inject("pingConnector", { kind: "status", status: 500 });

    await sync.save({ last_loaded_bundle_id: "20250105-1" });

    expect(JSON.parse(readFileSync(file.path, "utf8")).last_loaded_bundle_id).toBe("20250105-1");
    expect(pinger.failed).toBe(1);
    expect(lines.some((line) => line.includes("Error pinging the API"))).toBe(true);
  });
});

describe("Pinger", () => {
  test("sends no state as null", async () => {
    await pinger.ping();

    expect(opencti.pings[0]!.state).toBe("null");
    expect(opencti.pings[0]!.connectorInfo?.queue_threshold).toBe(500);
  });

  test("adopts a remote reset", async () => {
    await sync.save({ last_loaded_bundle_id: "20250210" });
    let resets = 0;
    sync.onReset(() => resets++);
    opencti.resetState(CONNECTOR_ID);

    await pinger.ping();

    expect(resets).toBe(1);
    expect(sync.state).toBeUndefined();
    expect(sync.generation).toBe(1);
    expect(readFileSync(file.path, "utf8").trim()).toBe("null");
  });

  test("same state is not a reset", async () => {
    await sync.save({ last_loaded_bundle_id: "20250210" });

    await pinger.ping();

    expect(sync.generation).toBe(0);
  });

  test("sends pings one at a time", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const counting = new Pinger({
      opencti: {
        pingConnector: async () => {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await Bun.sleep(20);
          inFlight--;
          return null;
        },
      } as unknown as OpenCTIClient,
      connectorId: CONNECTOR_ID,
      logger: createLogger({ write: () => {} }),
      state: () => "null",
      info: () => INFO,
      sameState: () => true,
      onRemoteState: () => {},
    });

    await Promise.all([counting.ping(), counting.ping(), counting.ping()]);

    expect(counting.sent).toBe(3);
    expect(maxInFlight).toBe(1);
  });

  test("logs when pings recover", async () => {
    opencti.inject("pingConnector", { kind: "status", status: 500, times: 1 });

    await pinger.ping().catch(() => {});
    await pinger.ping();

    expect(pinger.sent).toBe(1);
    expect(lines.some((line) => line.includes("API ping back to normal"))).toBe(true);
  });
});
