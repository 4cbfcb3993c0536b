/**
 * `--set-state` end to end: the real connector (`main.ts` as a subprocess)
 * against the fake Citalid API and the fake OpenCTI platform.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, startConnector, tempDir } from "./helpers/connector.ts";

const CONNECTOR_ID = "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69";
const OLD_STATE = { last_loaded_bundle_id: "20250105-1", last_run: "2025-01-06T00:00:00Z" };

let citalid: FakeCitalid;
let opencti: FakeOpenCTI;
let stateDir: string;
let statePath: string;

beforeEach(async () => {
  citalid = await startFakeCitalid({ versions: fixtureCitalidVersions(), password: TEST_SECRETS.citalidPassword });
  opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
  stateDir = tempDir();
  statePath = join(stateDir, "state.json");
});

afterEach(async () => {
  await citalid.stop();
  await opencti.stop();
});

function env() {
  return connectorEnv(citalid, opencti, stateDir);
}

function setState(id: string) {
  return runConnectorOnce(env(), ["--set-state", id], { cwd: stateDir });
}

/** Stores OLD_STATE both in the file and on the platform, as a past run would have. */
function seedOldState(): string {
  const text = JSON.stringify(OLD_STATE) + "\n";
  writeFileSync(statePath, text, { mode: 0o600 });
  opencti.seedConnector({ id: CONNECTOR_ID, state: JSON.stringify(OLD_STATE) });
  return text;
}

function platformState(): Record<string, unknown> | null {
  const stored = opencti.connectors.get(CONNECTOR_ID)?.state ?? null;
  return stored === null ? null : JSON.parse(stored);
}

function fileState(): Record<string, unknown> {
  return JSON.parse(readFileSync(statePath, "utf8"));
}

function errorOf(run: { logs: () => { level: string; message: string }[] }): string {
  return run.logs().find((line) => line.level === "ERROR")?.message ?? "(no error logged)";
}

describe("--set-state", () => {
  test("sets the file and the platform", async () => {
    seedOldState();

    const run = await setState("20250105-2");

    expect(run.code).toBe(0);
    const expected = { ...OLD_STATE, last_loaded_bundle_id: "20250105-2" };
    expect(fileState()).toEqual(expected);
    expect(platformState()).toEqual(expected);
    expect(opencti.pings.map((ping) => JSON.parse(ping.state ?? "null"))).toEqual([expected]);
    expect(opencti.registrations.map((registration) => registration.input.id)).toEqual([CONNECTOR_ID]);
    expect(existsSync(`${statePath}.lock`)).toBe(false);
  });

  test("prints the previous and new states", async () => {
    seedOldState();

    const run = await setState("20250105-2");

    const lines = run.stdout().trimEnd().split("\n");
    expect(lines[0]).toBe(`Previous state on the platform (connector ${CONNECTOR_ID}): ${JSON.stringify(OLD_STATE)}`);
    expect(lines[1]).toBe(`Previous state in ${statePath}: ${JSON.stringify(OLD_STATE)}`);
    expect(lines[2]).toContain('"last_loaded_bundle_id":"20250105-2"');
    expect(lines[3]).toBe("The next run starts with the first Citalid version after 20250105-2.");
  });

  test("imports nothing", async () => {
    const run = await setState("20250105-2");

    expect(run.code).toBe(0);
    expect(opencti.pushes).toEqual([]);
    expect(opencti.works).toEqual([]);
    expect(citalid.counts.tokenRequests).toBe(0);
  });

  test("works without a previous state", async () => {
    const run = await setState("20250105-2");

    expect(run.code).toBe(0);
    expect(fileState()).toEqual({ last_loaded_bundle_id: "20250105-2" });
    expect(platformState()).toEqual({ last_loaded_bundle_id: "20250105-2" });
    expect(run.stdout()).toContain(`Previous state in ${statePath}: none`);
  });

  test("next run imports only later versions", async () => {
    seedOldState();
    await setState("20250105-2");

    const run = await runConnectorOnce(env(), ["--once"], { cwd: stateDir });

    expect(run.code).toBe(0);
    expect(Object.keys(citalid.counts.downloads).sort()).toEqual(["20250210", "20250301"]);
    expect(opencti.pushes.length).toBeGreaterThan(0);
    expect(new Set(opencti.pushes.map((push) => push.workId)).size).toBe(1);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250301");
    expect(fileState().last_loaded_bundle_id).toBe("20250301");
  });

  test("overrides a reset from the UI", async () => {
    seedOldState();
    opencti.resetState(CONNECTOR_ID);

    const run = await setState("20250105-2");

    expect(run.code).toBe(0);
    expect(opencti.pings.map((ping) => ping.stateIgnored)).toEqual([true, false]);
    expect(platformState()?.last_loaded_bundle_id).toBe("20250105-2");
  });
});

describe("--set-state rejected", () => {
  test("invalid id exits 2", async () => {
    const text = seedOldState();

    const run = await setState("latest");

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain('--set-state is "latest": expected a Citalid version id that starts with a real date YYYYMMDD');
    expect(readFileSync(statePath, "utf8")).toBe(text);
    expect(opencti.requests).toEqual([]);
  });

  test("impossible date exits 2", async () => {
    const run = await setState("20250230");

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain('"20250230"');
    expect(existsSync(statePath)).toBe(false);
  });

  test("with --once exits 2", async () => {
    const run = await runConnectorOnce(env(), ["--set-state", "20250105-2", "--once"], { cwd: stateDir });

    expect(run.code).toBe(2);
    expect(run.lines.join("\n")).toContain("--set-state cannot be combined with --once");
    expect(opencti.requests).toEqual([]);
  });

  test("future date exits 2", async () => {
    const text = seedOldState();

    const run = await setState("99991231");

    expect(run.code).toBe(2);
    expect(errorOf(run)).toContain("--set-state 99991231 is dated after tomorrow");
    expect(readFileSync(statePath, "utf8")).toBe(text);
    expect(opencti.requests).toEqual([]);
  });

  test("running connector holds the lock", async () => {
    // At the newest version, the running connector imports nothing and keeps its state.
    opencti.seedConnector({ id: CONNECTOR_ID, state: JSON.stringify({ last_loaded_bundle_id: "20250301" }) });
    const running = startConnector(env(), [], { cwd: stateDir });
    try {
      await running.waitForLog("Schedule next run");
      const before = readFileSync(statePath, "utf8");
      const platformBefore = opencti.connectors.get(CONNECTOR_ID)?.state ?? null;

      const run = await setState("20250105-2");

      expect(run.code).toBe(2);
      expect(errorOf(run)).toContain(`State file ${statePath} is in use by another connector process (pid ${running.proc.pid})`);
      expect(readFileSync(statePath, "utf8")).toBe(before);
      expect(opencti.connectors.get(CONNECTOR_ID)?.state ?? null).toBe(platformBefore);
    } finally {
      running.proc.kill("SIGTERM");
      await running.exited;
    }
  });

  test("unreachable platform exits 1", async () => {
    const text = seedOldState();
    await opencti.stop();

    const run = await setState("20250105-2");

    expect(run.code).toBe(1);
    expect(errorOf(run)).toContain(`OpenCTI at ${opencti.url} cannot be reached`);
    expect(readFileSync(statePath, "utf8")).toBe(text);
    expect(existsSync(`${statePath}.lock`)).toBe(false);
  });

  test("wrong token exits 2", async () => {
    const text = seedOldState();

    const run = await runConnectorOnce({ ...env(), OPENCTI_TOKEN: "wrong-token-0000" }, ["--set-state", "20250105-2"], { cwd: stateDir });

    expect(run.code).toBe(2);
    expect(errorOf(run)).toContain("OPENCTI_TOKEN");
    expect(readFileSync(statePath, "utf8")).toBe(text);
    expect(platformState()).toEqual(OLD_STATE);
  });
});
