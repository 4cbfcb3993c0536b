import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { OpenCTIError } from "../lib/errors.ts";
import { createLogger } from "../lib/log.ts";
import { OpenCTIClient, platformAtLeast } from "../lib/opencti.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";

const CONNECTOR_ID = "5d7c3f1a-2b4e-4c6d-8e9f-0a1b2c3d4e5f";
const INFO = {
  run_and_terminate: false,
  buffering: false,
  queue_threshold: 500,
  queue_messages_size: 0,
  next_run_datetime: null,
  last_run_datetime: null,
};

let opencti: FakeOpenCTI;

beforeEach(async () => {
  opencti = await startFakeOpenCTI();
});

afterEach(async () => {
  await opencti.stop();
});

function client(overrides: Partial<ConstructorParameters<typeof OpenCTIClient>[0]> = {}): OpenCTIClient {
  return new OpenCTIClient({
    url: opencti.url,
    token: opencti.token,
    logger: createLogger({ write: () => {} }),
    userAgent: "citalid-connector/test",
    retryDelayMs: 5,
    retryLimit: 2,
    ...overrides,
  });
}

async function registered(): Promise<OpenCTIClient> {
  const api = client();
  await api.registerConnector({ id: CONNECTOR_ID, name: "Citalid", type: "EXTERNAL_IMPORT", scope: ["citalid"] });
  return api;
}

describe("OpenCTIClient", () => {
  test("endpoint has no double slash", () => {
    expect(client({ url: opencti.url + "/" }).endpoint).toBe(opencti.url + "/graphql");
  });

  test("reads the platform version", async () => {
    expect(await client().platformVersion()).toBe("6.9.22");
  });

  test("registration returns the push queue", async () => {
    const registration = await client().registerConnector({
      id: CONNECTOR_ID,
      name: "Citalid",
      type: "EXTERNAL_IMPORT",
      scope: ["citalid"],
    });

    expect(registration.id).toBe(CONNECTOR_ID);
    expect(registration.connectorState).toBeNull();
    expect(registration.connectorUserId).toBe(opencti.userId);
    expect(registration.config?.push_routing).toBe(`push_routing_${CONNECTOR_ID}`);
    expect(registration.config?.push_exchange).toBe("amqp.worker.exchange");
  });

  test("every operation validates against the schema", async () => {
    const api = await registered();
    const workId = await api.workAdd(CONNECTOR_ID, "Citalid run @ test");
    await api.pingConnector(CONNECTOR_ID, '{"last_loaded_bundle_id":"20250105"}', INFO);
    await api.workAddExpectations(workId, 2);
    await api.stixBundlePush(CONNECTOR_ID, JSON.stringify({ type: "bundle", id: "bundle--1", objects: [{ type: "identity", id: "identity--1" }] }), workId);
    await api.workToProcessed(workId, "done", false);
    await api.queueSize(CONNECTOR_ID);

    const failed = opencti.requests.filter((request) => request.body.includes("GRAPHQL_VALIDATION_FAILED"));
    expect(failed).toEqual([]);
    expect(opencti.pushes.length).toBe(1);
    expect(opencti.works[0]!.expected).toBe(2);
  });

  test("ping stores the state verbatim", async () => {
    const api = await registered();

    const returned = await api.pingConnector(CONNECTOR_ID, '{"last_loaded_bundle_id":"20250105"}', INFO);

    expect(returned).toBe('{"last_loaded_bundle_id":"20250105"}');
    expect(opencti.connectors.get(CONNECTOR_ID)!.state).toBe('{"last_loaded_bundle_id":"20250105"}');
  });

  test("ping after a reset returns no state", async () => {
    const api = await registered();
    await api.pingConnector(CONNECTOR_ID, '{"last_loaded_bundle_id":"20250105"}', INFO);
    opencti.resetState(CONNECTOR_ID);

    const returned = await api.pingConnector(CONNECTOR_ID, '{"last_loaded_bundle_id":"20250105"}', INFO);

    expect(returned).toBeNull();
  });

  test("queue size of an unknown connector", async () => {
    expect(await client().queueSize(CONNECTOR_ID)).toBeUndefined();
  });

  test("bad token raises AUTH_REQUIRED", async () => {
    const error = await client({ token: "wrong-token" }).platformVersion().catch((caught) => caught);

    expect(error).toBeInstanceOf(OpenCTIError);
    expect(error.code).toBe("AUTH_REQUIRED");
    expect(error.message).toContain("OPENCTI_TOKEN");
    expect(error.message.includes("wrong-token")).toBe(false);
  });

  test("HTML page means not GraphQL", async () => {
    opencti.inject("*", { kind: "html404" });

    const error = await client().platformVersion().catch((caught) => caught);

    expect(error).toBeInstanceOf(OpenCTIError);
    expect(error.code).toBe("NOT_GRAPHQL");
    expect(error.message).toContain("not an OpenCTI GraphQL endpoint");
  });

  test("HTTP 413 names CONNECTOR_PUSH_MAX_MB", async () => {
    const api = await registered();
    opencti.maxBodyBytes = 1000;

    const error = await api
      .stixBundlePush(CONNECTOR_ID, JSON.stringify({ type: "bundle", id: "bundle--1", objects: [{ type: "note", id: "note--1", content: "x".repeat(5000) }] }), "work")
      .catch((caught) => caught);

    expect(error).toBeInstanceOf(OpenCTIError);
    expect(error.code).toBe("HTTP_413");
    expect(error.message).toContain("CONNECTOR_PUSH_MAX_MB");
  });

  test("retries a 502 then succeeds", async () => {
    opencti.inject("about", { kind: "status", status: 502, times: 1 });

    expect(await client().platformVersion()).toBe("6.9.22");
  });

  test("invalid bundle raises UNSUPPORTED_ERROR", async () => {
    const api = await registered();

    const error = await api.stixBundlePush(CONNECTOR_ID, '{"type":"bundle","objects":[]}', "work").catch((caught) => caught);

    expect(error).toBeInstanceOf(OpenCTIError);
    expect(error.code).toBe("UNSUPPORTED_ERROR");
  });
});

describe("platformAtLeast", () => {
  test.each([
    ["6.3.0", true],
    ["6.2.18", false],
    ["6.9.22", true],
    ["7.260817.0", true],
    ["5.12.0", false],
    ["garbage", false],
  ])("%s is at least 6.3: %p", (version, expected) => {
    expect(platformAtLeast(version, 6, 3)).toBe(expected);
  });
});
