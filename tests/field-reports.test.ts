/**
 * Faults that users of connectors of this kind have met in the field,
 * replayed end to end against the fakes. They cover a vendor route gone,
 * incremental versions, state saved too late or never, odd platform states,
 * run-and-terminate, works left open, bundles over the size limit and
 * author references.
 */
import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { CITALID_VERSIONS_PATH } from "./fakes/citalid.ts";
import { type ConnectorProcess, runConnectorOnce, startConnector } from "./helpers/connector.ts";
import { AUTHOR_ID, type Scenario, type TestObject, seedState, smallBundle, smallVersions, startScenario, stixId, waitFor } from "./helpers/scenario.ts";

setDefaultTimeout(60_000);

let scenario: Scenario;

beforeEach(async () => {
  scenario = await startScenario();
});

afterEach(async () => {
  await scenario.stop();
});

function downloadOrder(): string[] {
  return scenario.citalid.requests.filter((request) => request.route === "download").map((request) => request.versionId!);
}

function pingedVersions(): (string | null)[] {
  const ids: (string | null)[] = [];
  for (const ping of scenario.opencti.pings) {
    const state = ping.state === null ? null : JSON.parse(ping.state);
    const id = state?.last_loaded_bundle_id ?? null;
    if (id !== ids.at(-1)) {
      ids.push(id);
    }
  }
  return ids;
}

function errorLines(run: ConnectorProcess) {
  return run.logs().filter((line) => line.level === "ERROR");
}

describe("version without objects", () => {
  test("is imported with a warning", async () => {
    scenario.citalid.setVersions([...smallVersions(["20250101"]), { id: "20250105", body: JSON.stringify({ type: "bundle", id: "bundle--00000000-0000-4000-8000-000000000005", objects: [] }) }]);

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    const warnings = run.logs().filter((line) => line.level === "WARNING" && line.message.startsWith("The version has no objects"));
    expect(warnings.map((line) => line.attributes?.version_id)).toEqual(["20250105"]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250105");
    const empty = scenario.opencti.pushes.filter((push) => push.bundle.objects.length === 1);
    expect(empty.map((push) => push.bundle.objects[0]!.id)).toEqual([AUTHOR_ID]);
  });
});

describe("versions route answers 404", () => {
  const HTML_404 = "<!doctype html><html><body><h1>Not Found</h1></body></html>";

  test.each([
    ["HTML body", HTML_404],
    ["JSON body", { detail: "Not found." }],
  ])("404 with %s logs one error", async (_name, body) => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101" });
    scenario.citalid.setVersions(smallVersions(["20250101", "20250105"]));
    scenario.citalid.inject("list", { kind: "status", status: 404, body });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(1);
    const errors = errorLines(run);
    expect(errors.length).toBe(1);
    expect(String(errors[0]!.attributes?.reason)).toContain("HTTP 404");
    expect(String(errors[0]!.attributes?.reason)).toContain(CITALID_VERSIONS_PATH);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
    expect(scenario.opencti.openWorks()).toEqual([]);
  });

  test("scheduled connector stays up and retries", async () => {
    scenario.citalid.setVersions(smallVersions(["20250101"]));
    scenario.citalid.inject("list", { kind: "status", status: 404 });
    const connector = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "PT1S" }), []);

    await waitFor(() => scenario.citalid.counts.lists >= 3, "three listing attempts");
    scenario.citalid.clearFaults();
    await waitFor(() => scenario.platformState()?.last_loaded_bundle_id === "20250101", "the import");
    connector.proc.kill("SIGTERM");

    expect(await connector.exited).toBe(0);
    expect(connector.logs().filter((line) => line.message === "Run failed").length).toBeGreaterThanOrEqual(3);
  });

  test("404 on one download keeps it unloaded", async () => {
    scenario.citalid.setVersions(smallVersions(["20250101", "20250105", "20250110"]));
    scenario.citalid.inject("20250105", { kind: "status", status: 404 });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(1);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
    expect(scenario.citalid.counts.downloads["20250110"]).toBeUndefined();
    expect(scenario.opencti.works[0]!.errors[0]!.message).toContain("20250105");
    expect(scenario.opencti.openWorks()).toEqual([]);
  });
});

describe("incremental versions", () => {
  const IDS = ["20241231", "20250101", "20250105", "20250110"];

  test("only versions after the state load", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101" });
    scenario.citalid.setVersions(smallVersions(IDS));

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(downloadOrder()).toEqual(["20250105", "20250110"]);
    const work = scenario.opencti.works[0]!;
    expect(scenario.opencti.works.length).toBe(1);
    expect(scenario.opencti.pushes.map((push) => push.workId)).toEqual([work.id, work.id]);
    expect(pingedVersions()).toEqual(["20250101", "20250105", "20250110"]);
  });

  test("empty state loads all oldest first", async () => {
    scenario.citalid.setVersions(smallVersions(IDS));

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(downloadOrder()).toEqual(IDS);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
  });
});

describe("state saved per version", () => {
  const IDS = ["20250101", "20250102", "20250103", "20250104", "20250105"];

  test("failure keeps the versions before it", async () => {
    scenario.citalid.setVersions(smallVersions(IDS));
    scenario.citalid.inject("20250104", { kind: "status", status: 500 });

    const first = await runConnectorOnce(scenario.env());

    expect(first.code).toBe(1);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250103");
    scenario.citalid.clearFaults();
    scenario.citalid.clearRecords();

    const second = await runConnectorOnce(scenario.env());

    expect(second.code).toBe(0);
    expect(downloadOrder()).toEqual(["20250104", "20250105"]);
  });

  test("SIGKILL after a version keeps it", async () => {
    scenario.citalid.setVersions(smallVersions(IDS));
    scenario.citalid.inject("20250103", { kind: "slow", delayMs: 20_000 });
    const connector = startConnector(scenario.env());
    await waitFor(() => scenario.citalid.counts.downloads["20250103"] === 1, "the third download");
    connector.proc.kill("SIGKILL");
    await connector.exited;
    scenario.citalid.clearFaults();
    scenario.citalid.clearRecords();

    const restart = await runConnectorOnce(scenario.env());

    expect(restart.code).toBe(0);
    expect(restart.logs().find((line) => line.message === "Loaded the connector state from the platform")?.attributes?.last_loaded_bundle_id).toBe("20250102");
    expect(downloadOrder()).toEqual(["20250103", "20250104", "20250105"]);
  });
});

describe("nothing new from the vendor", () => {
  test("empty list keeps the state", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101", last_run: "2025-01-01T00:00:00Z" });
    scenario.citalid.setVersions([]);

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(scenario.opencti.pushes).toEqual([]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
    expect(scenario.platformState()?.last_run).not.toBe("2025-01-01T00:00:00Z");
  });

  test("500 with an empty body keeps the state", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101" });
    scenario.citalid.setVersions(smallVersions(["20250101"]));
    scenario.citalid.inject("list", { kind: "status", status: 500, body: "" });

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(1);
    expect(scenario.opencti.pushes).toEqual([]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
  });

  test("connector never sends a null state", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101" });
    scenario.citalid.setVersions(smallVersions(["20250101"]));
    scenario.citalid.inject("list", { kind: "status", status: 500, times: 5 });

    await runConnectorOnce(scenario.env());
    scenario.citalid.clearFaults();
    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(scenario.citalid.counts.downloadsTotal).toBe(0);
    expect(scenario.opencti.pings.length).toBeGreaterThan(0);
    expect(scenario.opencti.pings.filter((ping) => ping.state === null || ping.state === "null")).toEqual([]);
  });
});

describe("first run without a start point", () => {
  test("imports every listed version", async () => {
    scenario.citalid.setVersions(smallVersions(["20230101", "20240101", "20250101"]));

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(downloadOrder()).toEqual(["20230101", "20240101", "20250101"]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
  });

  test("no versions saves last_run", async () => {
    const connector = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "PT1S" }), []);
    await connector.waitForLog("Last version of Citalid dataset already loaded");
    await waitFor(() => typeof scenario.platformState()?.last_run === "string", "last_run on the platform");

    expect(scenario.platformState()?.last_loaded_bundle_id).toBeUndefined();
    scenario.citalid.addVersion({ id: "20250101", body: smallBundle("20250101") });
    await waitFor(() => scenario.platformState()?.last_loaded_bundle_id === "20250101", "the new version");
    connector.proc.kill("SIGTERM");

    expect(await connector.exited).toBe(0);
    expect(scenario.citalid.counts.downloads["20250101"]).toBe(1);
  });
});

describe("cursor comparison", () => {
  test("latest version loaded means no download", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250103" });
    scenario.citalid.setVersions(smallVersions(["20250101", "20250102", "20250103"]));

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(scenario.citalid.counts.downloadsTotal).toBe(0);
    expect(scenario.opencti.pushes).toEqual([]);
    expect(scenario.opencti.works).toEqual([]);
    expect(run.logs().some((line) => line.message === "Last version of Citalid dataset already loaded")).toBe(true);
  });

  test("second version of a day loads", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250105a" });
    scenario.citalid.setVersions(smallVersions(["20250104", "20250105a", "20250105b"]));

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(downloadOrder()).toEqual(["20250105b"]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250105b");
  });
});

describe("odd platform state", () => {
  test.each([
    ["null", null, false],
    ["an empty string", "", false],
    ["an empty object", "{}", true],
    ["text that is not JSON", "not json", true],
    ["an array", "[]", true],
    ["a numeric version id", '{"last_loaded_bundle_id":123}', true],
    ["a JSON string", '"20250101"', true],
    ["the Python connector's state before its first version", '{"last_loaded_bundle_id":null,"last_run":"2025-01-05 10:23:45.123456"}', false],
  ])("%s means no state", async (_name, state, warns) => {
    seedState(scenario.opencti, state);
    scenario.citalid.setVersions(smallVersions(["20250101", "20250105"]));

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(downloadOrder()).toEqual(["20250101", "20250105"]);
    expect(run.logs().some((line) => line.level === "WARNING" && line.message.includes("connector state stored on the platform"))).toBe(warns);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250105");
  });
});

describe("run-and-terminate", () => {
  const RECENT = new Date(Date.now() - 5 * 60_000).toISOString().replace(/\.\d{3}Z$/, "Z");

  test("runs once despite a recent last_run", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101", last_run: RECENT });
    scenario.citalid.setVersions(smallVersions(["20250101", "20250105"]));

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_RUN_AND_TERMINATE: "true", CONNECTOR_DURATION_PERIOD: "P1D" }), []);

    expect(run.code).toBe(0);
    expect(scenario.citalid.counts.lists).toBe(1);
    expect(downloadOrder()).toEqual(["20250105"]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250105");
    expect(scenario.opencti.works.length).toBe(1);
    expect(scenario.opencti.works[0]!.status).toBe("complete");
  });

  test("without it the process keeps running", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101", last_run: RECENT });
    scenario.citalid.setVersions(smallVersions(["20250101", "20250105"]));
    const connector = startConnector(scenario.env({ CONNECTOR_DURATION_PERIOD: "P1D" }), []);

    await connector.waitForLog("Schedule next run of connector");
    const pings = scenario.opencti.pings.length;
    await waitFor(() => scenario.opencti.pings.length > pings, "a ping after the run");

    expect(connector.proc.exitCode).toBeNull();
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250105");
    connector.proc.kill("SIGTERM");
    expect(await connector.exited).toBe(0);
  });
});

describe("works", () => {
  test.each([
    ["token endpoint 401", () => scenario.citalid.inject("token", { kind: "status", status: 401, body: { error: "invalid_client" } }), 0],
    ["no new versions", () => seedState(scenario.opencti, { last_loaded_bundle_id: "20250105" }), 0],
    ["a normal run", () => {}, 1],
  ])("%s leaves no open work", async (_name, setUp, works) => {
    scenario.citalid.setVersions(smallVersions(["20250101", "20250105"]));
    setUp();

    await runConnectorOnce(scenario.env());

    expect(scenario.opencti.works.length).toBe(works);
    expect(scenario.opencti.openWorks()).toEqual([]);
  });
});

describe("bundle over the platform's body limit", () => {
  const LIMIT = 1_000_000;

  /** A version of 10,000 objects, about 5 MB: relationships first, each pointing at two attack patterns. */
  function largeVersion(id: string): { type: "bundle"; id: string; objects: TestObject[] } {
    const patterns = smallBundle(id, 6_000, 300).objects;
    const relationships: TestObject[] = [];
    for (let index = 0; index < 4_000; index++) {
      relationships.push({
        type: "relationship",
        spec_version: "2.1",
        id: stixId("relationship", `${id}/r${index}`),
        created: "2025-01-01T00:00:00.000Z",
        modified: "2025-01-01T00:00:00.000Z",
        relationship_type: "related-to",
        source_ref: patterns[index]!.id,
        target_ref: patterns[5_999 - index]!.id,
      });
    }
    return { type: "bundle", id: stixId("bundle", id), objects: [...relationships, ...patterns] };
  }

  test("version is cut under the limit", async () => {
    const version = largeVersion("20250101");
    scenario.opencti.maxBodyBytes = LIMIT;
    scenario.citalid.setVersions([{ id: "20250101", body: version }]);

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1" }));

    expect(run.code).toBe(0);
    expect(scenario.opencti.requests.filter((request) => request.status === 413)).toEqual([]);
    expect(scenario.opencti.pushes.length).toBeGreaterThan(5);
    const sent = new Set<string>();
    const unresolved: string[] = [];
    for (const push of scenario.opencti.pushes) {
      const inBundle = new Set(push.bundle.objects.map((object) => object.id));
      for (const object of push.bundle.objects) {
        for (const ref of [object.source_ref, object.target_ref, object.created_by_ref]) {
          if (typeof ref === "string" && !inBundle.has(ref) && !sent.has(ref)) {
            unresolved.push(`${object.id} -> ${ref}`);
          }
        }
      }
      for (const id of inBundle) {
        sent.add(id);
      }
    }
    expect(unresolved).toEqual([]);
    expect(version.objects.filter((object) => !sent.has(object.id)).map((object) => object.id)).toEqual([]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
  });

  test("limit above the platform's fails once", async () => {
    scenario.opencti.maxBodyBytes = LIMIT;
    scenario.citalid.setVersions([{ id: "20250101", body: largeVersion("20250101") }]);

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "2" }));

    expect(run.code).toBe(1);
    expect(scenario.opencti.requests.filter((request) => request.status === 413).length).toBe(1);
    expect(errorLines(run).at(-1)?.attributes?.reason).toContain("CONNECTOR_PUSH_MAX_MB");
    expect(scenario.platformState()?.last_loaded_bundle_id).toBeUndefined();
    expect(scenario.opencti.openWorks()).toEqual([]);
  });

  test("single object over the limit fails clearly", async () => {
    const version = smallBundle("20250105", 3);
    version.objects[1]!.description = "x".repeat(1_500_000);
    scenario.opencti.maxBodyBytes = LIMIT;
    scenario.citalid.setVersions([...smallVersions(["20250101"]), { id: "20250105", body: version }]);

    const run = await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1" }));

    expect(run.code).toBe(1);
    const reason = String(errorLines(run).at(-1)?.attributes?.reason);
    expect(reason).toContain(version.objects[1]!.id);
    expect(reason).toContain("CONNECTOR_PUSH_MAX_MB");
    expect(scenario.citalid.counts.downloads["20250105"]).toBe(1);
    expect(scenario.opencti.pushes.length).toBe(1);
    expect(scenario.opencti.requests.filter((request) => request.status === 413)).toEqual([]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
  });

  test("oversized version waits for the next run", async () => {
    const version = smallBundle("20250101", 3);
    version.objects[0]!.description = "x".repeat(1_500_000);
    scenario.citalid.setVersions([{ id: "20250101", body: version }]);
    const connector = startConnector(scenario.env({ CONNECTOR_PUSH_MAX_MB: "1", CONNECTOR_DURATION_PERIOD: "PT1S" }), []);

    await waitFor(() => connector.logs().filter((line) => line.message === "Run failed").length >= 2, "two failed runs");
    connector.proc.kill("SIGTERM");
    await connector.exited;

    const runs = connector.logs().filter((line) => line.message === "Listed Citalid versions").length;
    expect(scenario.citalid.counts.downloads["20250101"]).toBe(runs);
    expect(scenario.opencti.pushes).toEqual([]);
  });
});

describe("author references", () => {
  const VENDOR = stixId("identity", "vendor");
  const ABSENT = stixId("identity", "absent");
  const REPORT = stixId("report", "report");

  function authorVersion(id: string): { type: "bundle"; id: string; objects: TestObject[] } {
    const base = { spec_version: "2.1", created: "2025-01-01T00:00:00.000Z", modified: "2025-01-01T00:00:00.000Z" };
    const patterns = smallBundle(id, 20, 300).objects;
    patterns[0]!.created_by_ref = VENDOR;
    patterns[1]!.created_by_ref = ABSENT;
    return {
      type: "bundle",
      id: stixId("bundle", id),
      objects: [
        { ...base, type: "identity", id: VENDOR, name: "Vendor", identity_class: "organization" },
        ...patterns,
        { ...base, type: "report", id: REPORT, name: "Report", published: base.created, object_refs: [patterns[2]!.id, patterns[3]!.id] },
        { type: "ipv4-addr", spec_version: "2.1", id: stixId("ipv4-addr", id), value: "192.0.2.1" },
      ],
    };
  }

  function pushedById(): Map<string, TestObject> {
    return new Map(scenario.opencti.pushes.flatMap((push) => push.bundle.objects).map((object) => [object.id, object]));
  }

  test("every SDO and SRO gets a sent author", async () => {
    scenario.citalid.setVersions([{ id: "20250101", body: authorVersion("20250101") }]);

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    const objects = [...pushedById().values()];
    const identities = new Set(objects.filter((object) => object.type === "identity").map((object) => object.id));
    const takesAuthor = (object: TestObject) => !["identity", "ipv4-addr", "marking-definition"].includes(object.type);
    const unresolved = objects.filter((object) => takesAuthor(object) && !identities.has(String(object.created_by_ref)));
    expect(unresolved.map((object) => object.id)).toEqual([]);
    expect(objects.find((object) => object.type === "ipv4-addr")?.created_by_ref).toBeUndefined();
  });

  test("absent identity is replaced by the author", async () => {
    const version = authorVersion("20250101");
    scenario.citalid.setVersions([{ id: "20250101", body: version }]);

    const run = await runConnectorOnce(scenario.env());

    const pushed = pushedById();
    expect(pushed.get(version.objects[2]!.id)?.created_by_ref).toBe(AUTHOR_ID);
    expect(pushed.get(version.objects[1]!.id)?.created_by_ref).toBe(VENDOR);
    const warning = run.logs().find((line) => line.message.startsWith("Replaced author references"));
    expect(warning?.attributes?.identities).toEqual([ABSENT]);
    expect(warning?.attributes?.objects).toBe(1);
  });

  test("failed lookup keeps the references", async () => {
    const version = authorVersion("20250101");
    scenario.opencti.inject("identity", { kind: "error", code: "FORBIDDEN_ACCESS" });
    scenario.citalid.setVersions([{ id: "20250101", body: version }]);

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(pushedById().get(version.objects[2]!.id)?.created_by_ref).toBe(ABSENT);
    expect(run.logs().filter((line) => line.message.startsWith("Cannot look up author identities")).length).toBe(1);
  });

  test("identity from an earlier version is kept", async () => {
    const first = authorVersion("20250101");
    const later = smallBundle("20250105", 3);
    later.objects[0]!.created_by_ref = VENDOR;
    scenario.citalid.setVersions([{ id: "20250101", body: first }]);
    await runConnectorOnce(scenario.env());
    scenario.citalid.setVersions([{ id: "20250101", body: first }, { id: "20250105", body: later }]);

    const run = await runConnectorOnce(scenario.env());

    expect(run.code).toBe(0);
    expect(pushedById().get(later.objects[0]!.id)?.created_by_ref).toBe(VENDOR);
  });

  test("author is in every bundle", async () => {
    scenario.citalid.setVersions([{ id: "20250101", body: authorVersion("20250101") }]);

    await runConnectorOnce(scenario.env({ CONNECTOR_PUSH_MAX_MB: "0.005" }));

    expect(scenario.opencti.pushes.length).toBeGreaterThan(1);
    for (const push of scenario.opencti.pushes) {
      const author = push.bundle.objects.find((object) => object.id === AUTHOR_ID);
      expect(author?.name).toBe("Citalid");
      expect(author?.identity_class).toBe("organization");
    }
  });

  test("report object_refs stay as served", async () => {
    const version = authorVersion("20250101");
    scenario.citalid.setVersions([{ id: "20250101", body: version }]);

    await runConnectorOnce(scenario.env());

    const report = pushedById().get(REPORT);
    expect(report?.object_refs).toEqual(version.objects.find((object) => object.id === REPORT)?.object_refs);
    expect(report?.created_by_ref).toBe(AUTHOR_ID);
  });
});
