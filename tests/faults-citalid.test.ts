/**
 * Faults on the Citalid side, end to end: the real connector against the
 * fake Citalid server with its fault switches, and a healthy fake OpenCTI.
 */
import { afterEach, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { CITALID_VERSIONS_PATH, type CitalidFault, type CitalidFaultTarget } from "./fakes/citalid.ts";
import { type ConnectorProcess, type LogLine, runConnectorOnce, startConnector, TEST_SECRETS } from "./helpers/connector.ts";
import { type Scenario, seedState, smallBundle, smallVersions, startScenario, waitFor } from "./helpers/scenario.ts";
import { secretForms } from "./helpers/secrets.ts";

const IDS = ["20250101", "20250105", "20250110"];
const DOWNLOAD_PATH = (id: string) => `${CITALID_VERSIONS_PATH}${encodeURIComponent(id)}/download/`;
// Short timeouts so that a server that never responds fails the run quickly.
const TIMEOUTS = { CONNECTOR_CITALID_TIMEOUT_MS: "300", CONNECTOR_CITALID_DOWNLOAD_TIMEOUT_MS: "300" };

setDefaultTimeout(60_000);

let scenario: Scenario;

beforeEach(async () => {
  scenario = await startScenario({ citalid: { versions: smallVersions(IDS) } });
});

afterEach(async () => {
  await scenario.stop();
});

function env(extra: Record<string, string> = {}) {
  return scenario.env({ ...TIMEOUTS, ...extra });
}

function errors(run: ConnectorProcess): LogLine[] {
  return run.logs().filter((line) => line.level === "ERROR");
}

function runFailure(run: ConnectorProcess): string {
  const line = run.logs().find((candidate) => candidate.message === "Run failed");
  return String(line?.attributes?.reason ?? "");
}

/**
 * Checks how many requests a route got. Bun's fetch sends a request once
 * more by itself when a reused connection is reset before the response, so
 * a reset fault gets at least `attempts` requests, not exactly that many.
 */
function expectRequests(fault: CitalidFault, requests: number | undefined, attempts: number): void {
  if (fault.kind === "reset") {
    expect(requests).toBeGreaterThanOrEqual(attempts);
  } else {
    expect(requests).toBe(attempts);
  }
}

function retries(run: ConnectorProcess): LogLine[] {
  return run.logs().filter((line) => /Citalid (request|download) failed, retrying/.test(line.message));
}

interface FailureCase {
  name: string;
  target: CitalidFaultTarget;
  fault: CitalidFault;
  /** Attempts the connector makes: 5 when retried, 1 when not. */
  attempts: number;
  /** Parts the error message must contain, besides the path. */
  mentions: string[];
}

const HTML_PAGE = "<!doctype html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1>" + "<p>upstream</p>".repeat(200) + "</body></html>";

describe("listing fault", () => {
  const cases: FailureCase[] = [
    { name: "connection reset", target: "list", fault: { kind: "reset" }, attempts: 5, mentions: [] },
    { name: "no answer", target: "list", fault: { kind: "hang" }, attempts: 5, mentions: ["timed out"] },
    { name: "body cut short", target: "list", fault: { kind: "truncate" }, attempts: 5, mentions: [] },
    { name: "body stalls", target: "list", fault: { kind: "stall" }, attempts: 5, mentions: ["timed out"] },
    { name: "HTTP 429 without Retry-After", target: "list", fault: { kind: "status", status: 429 }, attempts: 5, mentions: ["HTTP 429"] },
    { name: "HTTP 500", target: "list", fault: { kind: "status", status: 500 }, attempts: 5, mentions: ["HTTP 500"] },
    { name: "HTTP 502 HTML page", target: "list", fault: { kind: "status", status: 502, body: HTML_PAGE }, attempts: 5, mentions: ["HTTP 502"] },
    { name: "HTTP 503", target: "list", fault: { kind: "status", status: 503 }, attempts: 5, mentions: ["HTTP 503"] },
    { name: "HTTP 504", target: "list", fault: { kind: "status", status: 504 }, attempts: 5, mentions: ["HTTP 504"] },
    { name: "HTTP 404", target: "list", fault: { kind: "status", status: 404 }, attempts: 1, mentions: ["HTTP 404"] },
    { name: "HTML instead of JSON", target: "list", fault: { kind: "body", body: HTML_PAGE }, attempts: 1, mentions: ["not JSON", "HTTP 200"] },
    { name: "object instead of array", target: "list", fault: { kind: "body", body: { results: [{ id: "20250110" }] } }, attempts: 1, mentions: ["not a JSON array"] },
    { name: "record without id", target: "list", fault: { kind: "body", body: [{ id: "20250110" }, { name: "x" }] }, attempts: 1, mentions: ["index 1"] },
  ];

  test.each(cases)("$name stops before the work", async ({ target, fault, attempts, mentions }) => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101" });
    scenario.citalid.inject(target, fault);

    const run = await runConnectorOnce(env());

    expect(run.code).toBe(1);
    expectRequests(fault, scenario.citalid.counts.lists, attempts);
    expect(retries(run).length).toBe(attempts - 1);
    expect(scenario.opencti.works).toEqual([]);
    expect(scenario.citalid.counts.downloadsTotal).toBe(0);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe("20250101");
    const reason = runFailure(run);
    expect(reason).toContain(CITALID_VERSIONS_PATH);
    for (const part of mentions) {
      expect(reason).toContain(part);
    }
    expect(reason.length).toBeLessThan(400);
  });

  test("retry log counts the attempts", async () => {
    scenario.citalid.inject("list", { kind: "status", status: 503 });

    const run = await runConnectorOnce(env());

    const attempts = retries(run).map((line) => line.attributes?.attempt);
    expect(attempts).toEqual([2, 3, 4, 5]);
    expect(retries(run).every((line) => line.attributes?.max_attempts === 5)).toBe(true);
    expect(retries(run).every((line) => line.attributes?.path === CITALID_VERSIONS_PATH)).toBe(true);
  });

  test("refused connection stops before the work", async () => {
    const unreachable = scenario.env({ ...TIMEOUTS, CITALID_CUSTOMER_SUB_DOMAIN_URL: scenario.citalid.url });
    await scenario.citalid.stop();

    const run = await runConnectorOnce(unreachable);

    expect(run.code).toBe(1);
    expect(retries(run).length).toBe(4);
    expect(scenario.opencti.works).toEqual([]);
    expect(runFailure(run)).toContain("/auth/o/token/");
    expect(runFailure(run)).toMatch(/refused|ECONNREFUSED/i);
  });

  test("future-dated version does not block later ones", async () => {
    scenario.citalid.setVersions(smallVersions(["20250101", "99991231"]));

    const first = await runConnectorOnce(env());
    scenario.citalid.setVersions(smallVersions(["20250101", "99991231", "20250201"]));
    const second = await runConnectorOnce(env());

    expect(first.code).toBe(0);
    expect(second.code).toBe(0);
    expect(scenario.citalid.counts.downloads["99991231"]).toBeUndefined();
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250201");
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe("20250201");
    const skipped = second.logs().find((line) => line.message.startsWith("Skipping a Citalid version dated after tomorrow"));
    expect(skipped?.attributes?.version_id).toBe("99991231");
  });

  test("repeated ids warn and count once", async () => {
    const bundle = smallBundle("20250101", 3);
    const older = { ...bundle.objects[0]!, name: "older copy", modified: "2024-01-01T00:00:00.000Z" };
    scenario.citalid.setVersions([{ id: "20250101", body: { ...bundle, objects: [...bundle.objects, older] } }]);

    const run = await runConnectorOnce(env());

    expect(run.code).toBe(0);
    const warning = run.logs().find((line) => line.message.startsWith("Objects of the version repeat the id of an earlier object"));
    expect(warning?.attributes?.repeated_objects).toBe(1);
    expect(warning?.attributes?.first_repeated_id).toBe(bundle.objects[0]!.id);
    const sent = run.logs().find((line) => line.message === "Version sent and stored as the connector state");
    expect(sent?.attributes?.objects).toBe(4);
    const pushed = scenario.opencti.pushes.flatMap((push) => push.bundle.objects).filter((object) => object.id === bundle.objects[0]!.id);
    expect(pushed.map((object) => object.name)).toEqual(["older copy"]);
  });

  test("empty list creates no work", async () => {
    seedState(scenario.opencti, { last_loaded_bundle_id: "20250101" });
    scenario.citalid.setVersions([]);

    const run = await runConnectorOnce(env());

    expect(run.code).toBe(0);
    expect(scenario.opencti.works).toEqual([]);
    expect(scenario.opencti.pushes).toEqual([]);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
  });
});

describe("download fault", () => {
  const cases: FailureCase[] = [
    { name: "connection reset", target: "20250105", fault: { kind: "reset" }, attempts: 5, mentions: ["20250105"] },
    { name: "no answer", target: "20250105", fault: { kind: "hang" }, attempts: 5, mentions: ["20250105", "timed out"] },
    { name: "body cut short", target: "20250105", fault: { kind: "truncate" }, attempts: 5, mentions: ["20250105"] },
    { name: "body stalls", target: "20250105", fault: { kind: "stall" }, attempts: 5, mentions: ["20250105"] },
    { name: "HTTP 429 without Retry-After", target: "20250105", fault: { kind: "status", status: 429 }, attempts: 5, mentions: ["20250105", "HTTP 429"] },
    { name: "HTTP 500", target: "20250105", fault: { kind: "status", status: 500 }, attempts: 5, mentions: ["20250105", "HTTP 500"] },
    { name: "HTTP 502 HTML page", target: "20250105", fault: { kind: "status", status: 502, body: HTML_PAGE }, attempts: 5, mentions: ["20250105", "HTTP 502"] },
    { name: "HTTP 503", target: "20250105", fault: { kind: "status", status: 503 }, attempts: 5, mentions: ["20250105", "HTTP 503"] },
    { name: "HTTP 504", target: "20250105", fault: { kind: "status", status: 504 }, attempts: 5, mentions: ["20250105", "HTTP 504"] },
    { name: "HTTP 404", target: "20250105", fault: { kind: "status", status: 404 }, attempts: 1, mentions: ["20250105", "HTTP 404"] },
    { name: "HTML instead of JSON", target: "20250105", fault: { kind: "body", body: HTML_PAGE }, attempts: 5, mentions: ["20250105", "not JSON"] },
    { name: "JSON that is not a bundle", target: "20250105", fault: { kind: "body", body: { type: "report", id: "x" } }, attempts: 1, mentions: ["20250105", "not a valid STIX 2.1 bundle"] },
  ];

  test.each(cases)("$name closes the work in error", async ({ target, fault, attempts, mentions }) => {
    scenario.citalid.inject(target, fault);

    const run = await runConnectorOnce(env());

    expect(run.code).toBe(1);
    expectRequests(fault, scenario.citalid.counts.downloads["20250105"], attempts);
    expect(retries(run).length).toBe(attempts - 1);
    expect(scenario.citalid.counts.downloads["20250110"]).toBeUndefined();
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
    expect(scenario.fileState()?.last_loaded_bundle_id).toBe("20250101");
    expect(scenario.opencti.works.length).toBe(1);
    const work = scenario.opencti.works[0]!;
    expect(work.status).toBe("complete");
    expect(work.errors.length).toBe(1);
    expect(scenario.opencti.openWorks()).toEqual([]);
    const reason = runFailure(run);
    for (const part of mentions) {
      expect(reason).toContain(part);
    }
    if (!reason.includes("not a valid STIX")) {
      expect(reason).toContain(DOWNLOAD_PATH("20250105"));
    }
    expect(work.errors[0]!.message).toContain("20250105");
  });
});

describe("transient fault", () => {
  const cases: { name: string; target: CitalidFaultTarget; fault: CitalidFault }[] = [
    { name: "token reset", target: "token", fault: { kind: "reset", times: 2 } },
    { name: "token HTTP 503", target: "token", fault: { kind: "status", status: 503, times: 2 } },
    { name: "token body cut short", target: "token", fault: { kind: "truncate", times: 2 } },
    { name: "token body stalls", target: "token", fault: { kind: "stall", times: 1 } },
    { name: "listing reset", target: "list", fault: { kind: "reset", times: 3 } },
    { name: "listing no answer", target: "list", fault: { kind: "hang", times: 1 } },
    { name: "listing body cut short", target: "list", fault: { kind: "truncate", times: 2 } },
    { name: "listing HTTP 502", target: "list", fault: { kind: "status", status: 502, times: 2 } },
    { name: "listing 429 with Retry-After", target: "list", fault: { kind: "status", status: 429, headers: { "Retry-After": "1" }, times: 1 } },
    { name: "listing 429 without Retry-After", target: "list", fault: { kind: "status", status: 429, times: 2 } },
    { name: "download reset", target: "20250105", fault: { kind: "reset", times: 3 } },
    { name: "download no answer", target: "20250105", fault: { kind: "hang", times: 1 } },
    { name: "download body cut short", target: "20250105", fault: { kind: "truncate", times: 2 } },
    { name: "download body stalls", target: "20250105", fault: { kind: "stall", times: 1 } },
    { name: "download HTTP 500", target: "20250105", fault: { kind: "status", status: 500, times: 2 } },
    { name: "download HTTP 504", target: "20250105", fault: { kind: "status", status: 504, times: 2 } },
    { name: "download 503 with Retry-After", target: "20250105", fault: { kind: "status", status: 503, headers: { "Retry-After": "1" }, times: 1 } },
    { name: "download HTML instead of JSON", target: "20250105", fault: { kind: "body", body: HTML_PAGE, times: 1 } },
  ];

  test.each(cases)("$name is retried and the run completes", async ({ target, fault }) => {
    scenario.citalid.inject(target, fault);

    const run = await runConnectorOnce(env());

    expect(run.code).toBe(0);
    if (fault.kind === "reset") {
      // Bun's fetch may absorb a reset by resending the request itself.
      expect(retries(run).length).toBeGreaterThan(0);
    } else {
      expect(retries(run).length).toBe(fault.times!);
    }
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
    expect(scenario.opencti.works.length).toBe(1);
    expect(scenario.opencti.works[0]!.errors).toEqual([]);
    expect(scenario.opencti.pushes.length).toBe(3);
  });
});

describe("download idle timeout", () => {
  // The idle limit is CONNECTOR_CITALID_TIMEOUT_MS, and the total limit is a minute.
  const IDLE = { CONNECTOR_CITALID_TIMEOUT_MS: "300", CONNECTOR_CITALID_DOWNLOAD_TIMEOUT_MS: "60000" };

  test("stall after half the body is retried", async () => {
    const half = Math.floor(Buffer.byteLength(JSON.stringify(smallBundle("20250105"))) / 2);
    scenario.citalid.inject("20250105", { kind: "stall", times: 1 });

    const run = await runConnectorOnce(env(IDLE));

    expect(run.code).toBe(0);
    expect(retries(run).length).toBe(1);
    expect(retries(run)[0]!.message).toBe("Citalid download failed, retrying");
    expect(retries(run)[0]!.attributes?.reason).toBe(`no data for 300 ms after byte ${half}`);
    expect(scenario.citalid.counts.downloads["20250105"]).toBe(2);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
    expect(scenario.opencti.works[0]!.errors).toEqual([]);
  });

  test("steady trickle is not cut", async () => {
    const size = Buffer.byteLength(JSON.stringify(smallBundle("20250105")));
    // Ten pieces 100 ms apart: the body takes over three idle limits in all.
    scenario.citalid.inject("20250105", { kind: "trickle", chunkBytes: Math.ceil(size / 10), intervalMs: 100, times: 1 });

    const run = await runConnectorOnce(env(IDLE));

    expect(run.code).toBe(0);
    expect(retries(run)).toEqual([]);
    expect(scenario.citalid.counts.downloads["20250105"]).toBe(1);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250110");
  });
});

describe("scheduled mode", () => {
  test("failed run is tried again next run", async () => {
    scenario.citalid.inject("list", { kind: "status", status: 500 });
    const connector = startConnector(env({ CONNECTOR_DURATION_PERIOD: "PT1S" }), []);

    await waitFor(() => connector.logs().filter((line) => line.message === "Run failed").length >= 2, "two failed runs");
    scenario.citalid.clearFaults();
    await waitFor(() => scenario.platformState()?.last_loaded_bundle_id === "20250110", "the import after the fault");
    connector.proc.kill("SIGTERM");

    expect(await connector.exited).toBe(0);
    expect(scenario.opencti.works.length).toBe(1);
    expect(scenario.opencti.openWorks()).toEqual([]);
  });
});

describe("Citalid token", () => {
  test("expiry mid-run logs in again once", async () => {
    scenario.citalid.setVersions(smallVersions(["20250101", "20250105", "20250110", "20250115"]));
    scenario.citalid.rejectTokensAfterDownloads(2);

    const run = await runConnectorOnce(env());

    expect(run.code).toBe(0);
    expect(scenario.citalid.counts.logins).toBe(2);
    expect(scenario.citalid.counts.unauthorized).toBe(1);
    expect(scenario.citalid.counts.downloads["20250110"]).toBe(2);
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250115");
    expect(run.logs().some((line) => line.message.includes("logging in again"))).toBe(true);
  });

  test("401 after a fresh login stops the run", async () => {
    scenario.citalid.inject("20250105", { kind: "status", status: 401, times: 2 });

    const run = await runConnectorOnce(env());

    expect(run.code).toBe(1);
    expect(scenario.citalid.counts.logins).toBe(2);
    expect(scenario.citalid.counts.downloads["20250105"]).toBe(2);
    expect(runFailure(run)).toContain("Citalid rejected the credentials");
    expect(scenario.platformState()?.last_loaded_bundle_id).toBe("20250101");
    expect(scenario.opencti.works[0]!.errors[0]!.message).toContain("Citalid rejected the credentials");
    expect(scenario.opencti.openWorks()).toEqual([]);
  });

  test("wrong password creates no work", async () => {
    const run = await runConnectorOnce(env({ CITALID_PASSWORD: "wrong-password-123" }));

    expect(run.code).toBe(1);
    expect(runFailure(run)).toContain("Citalid rejected the credentials");
    expect(runFailure(run)).toContain("CITALID_PASSWORD");
    expect(scenario.citalid.counts.tokenRequests).toBe(1);
    expect(scenario.opencti.works).toEqual([]);
  });

  test("each scheduled run logs in afresh", async () => {
    const connector = startConnector(env({ CONNECTOR_DURATION_PERIOD: "PT1S" }), []);

    await waitFor(() => connector.logs().filter((line) => line.message === "Listed Citalid versions").length >= 3, "three runs");
    connector.proc.kill("SIGTERM");
    await connector.exited;

    const runs = connector.logs().filter((line) => line.message === "Listed Citalid versions").length;
    expect(scenario.citalid.counts.logins).toBe(runs);
  });
});

describe("Citalid error body", () => {
  const FAKE_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjb25uZWN0b3IifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg";
  const LEAKY_BODY = JSON.stringify({
    detail: "Internal error",
    request: { access_token: FAKE_TOKEN, password: TEST_SECRETS.citalidPassword },
    trace: `Authorization: Bearer ${FAKE_TOKEN} ` + "frame ".repeat(2000),
  });
  const LEAKY_TEXT = `Upstream failed for token ${FAKE_TOKEN} and password=${encodeURIComponent(TEST_SECRETS.citalidPassword)} ` + "frame ".repeat(2000);

  test.each([
    ["JSON body on the listing", "list", LEAKY_BODY],
    ["text body on the listing", "list", LEAKY_TEXT],
    ["JSON body on a download", "20250105", LEAKY_BODY],
    ["text body on a download", "20250105", LEAKY_TEXT],
  ])("%s is masked and cut short", async (_name, target, body) => {
    scenario.citalid.inject(target, { kind: "status", status: 500, body, headers: { "Content-Type": body.startsWith("{") ? "application/json" : "text/plain" } });

    const run = await runConnectorOnce(env());

    const output = run.lines.join("\n");
    expect(run.code).toBe(1);
    expect(output.includes(FAKE_TOKEN)).toBe(false);
    expect(output.includes(FAKE_TOKEN.slice(0, 30))).toBe(false);
    expect(output.includes("frame ".repeat(50))).toBe(false);
    expect(runFailure(run)).toContain("HTTP 500");
    expect(runFailure(run).length).toBeLessThan(400);
    for (const work of scenario.opencti.works) {
      for (const message of [...work.errors, ...work.messages]) {
        expect(message.message?.includes(FAKE_TOKEN.slice(0, 30))).toBe(false);
        expect(message.message?.includes(TEST_SECRETS.citalidPassword)).toBe(false);
      }
    }
    expect(errors(run).length).toBeGreaterThan(0);
  });

  // The padding puts the excerpt's 120-character cut inside the token.
  const ECHOED_SECRETS = `${"x".repeat(60)} forbidden for user with password ${TEST_SECRETS.citalidPassword} token ${TEST_SECRETS.openctiToken}`;

  test.each([
    ["Citalid reply", () => scenario.citalid.inject("20250105", { kind: "status", status: 403, body: ECHOED_SECRETS, headers: { "Content-Type": "text/plain" } })],
    ["platform error", () => scenario.opencti.inject("stixBundlePush", { kind: "error", code: "FUNCTIONAL_ERROR", message: ECHOED_SECRETS })],
  ])("secrets echoed in a %s stay masked", async (_name, inject) => {
    inject();

    const run = await runConnectorOnce(env());

    expect(run.code).toBe(1);
    const platformTexts = scenario.opencti.works.flatMap((work) => [...work.errors, ...work.messages].map((message) => message.message ?? ""));
    expect(platformTexts.join("\n")).toContain("***");
    for (const text of [run.lines.join("\n"), ...platformTexts]) {
      for (const form of secretForms(TEST_SECRETS.citalidPassword)) {
        expect(text.includes(form)).toBe(false);
      }
      expect(text.includes(TEST_SECRETS.openctiToken.slice(0, 12))).toBe(false);
    }
  });
});
