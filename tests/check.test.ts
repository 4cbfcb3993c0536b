/**
 * `--check` end to end: the real connector (`main.ts` as a subprocess)
 * against the fake Citalid API and the fake OpenCTI platform.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, tempDir } from "./helpers/connector.ts";

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
  return connectorEnv(citalid, opencti, stateDir, { CONNECTOR_RETRY_DELAY_MS: "20", ...extra });
}

/** Runs `--check` and returns the exit code and the report lines printed on stdout. */
async function check(extra: Record<string, string> = {}, args: string[] = []) {
  const run = await runConnectorOnce(env(extra), ["--check", ...args], { cwd: stateDir });
  return { code: run.code, lines: run.stdout().trimEnd().split("\n"), run };
}

function line(lines: string[], name: string): string {
  return lines.find((candidate) => new RegExp(`^\\S+\\s+${name}\\s`).test(candidate)) ?? `(no ${name} line)`;
}

describe("--check passing", () => {
  test("exits 0 with every check passed", async () => {
    const { code, lines } = await check();

    expect(code).toBe(0);
    expect(lines.at(-1)).toBe("All checks passed.");
  });

  test("reports the versions count and newest", async () => {
    const { lines } = await check();

    expect(line(lines, "Citalid versions")).toMatch(/^OK\s+Citalid versions\s+4 version\(s\), newest 20250301$/);
  });

  test("reports the platform version", async () => {
    const { lines } = await check();

    expect(line(lines, "OpenCTI")).toContain(`${opencti.url}/graphql responds, token accepted, platform 6.9.22`);
  });

  test("reports the login user", async () => {
    const { lines } = await check();

    expect(line(lines, "Citalid login")).toMatch(/^OK\s+Citalid login\s+user /);
  });

  test("reports the config.yml read", async () => {
    const configPath = join(stateDir, "settings.yml");
    writeFileSync(configPath, "connector:\n  name: Citalid\n", { mode: 0o600 });

    const { code, lines } = await check({}, ["--config", configPath]);

    expect(code).toBe(0);
    expect(line(lines, "configuration")).toContain(`read from ${configPath}`);
  });

  test("imports nothing and registers nothing", async () => {
    const { code } = await check();

    expect(code).toBe(0);
    const fields = opencti.operations.flatMap((operation) => operation.rootFields);
    expect(fields).toEqual(["about"]);
    expect(opencti.registrations).toEqual([]);
    expect(opencti.works).toEqual([]);
    expect(opencti.pushes).toEqual([]);
    expect(opencti.pings).toEqual([]);
    expect(citalid.counts.downloadsTotal).toBe(0);
    expect(citalid.counts.lists).toBe(1);
  });

  test("writes no state file", async () => {
    await check();

    expect(await Bun.file(join(stateDir, "state.json")).exists()).toBe(false);
    expect(await Bun.file(join(stateDir, "state.json.lock")).exists()).toBe(false);
  });

  test("counts versions without a date apart", async () => {
    citalid.setVersions([...fixtureCitalidVersions(), { id: "latest", body: "{}" }]);

    const { code, lines } = await check();

    expect(code).toBe(0);
    expect(line(lines, "Citalid versions")).toContain("4 version(s), newest 20250301; 1 skipped");
  });

  test("counts future-dated versions apart", async () => {
    citalid.setVersions([...fixtureCitalidVersions(), { id: "99991231", body: "{}" }]);

    const { code, lines } = await check();

    expect(code).toBe(0);
    expect(line(lines, "Citalid versions")).toContain("4 version(s), newest 20250301; 1 skipped because dated after tomorrow");
  });
});

describe("--check failing", () => {
  test("wrong Citalid password fails the login", async () => {
    const { code, lines } = await check({ CITALID_PASSWORD: "not-the-password" });

    expect(code).toBe(1);
    expect(line(lines, "Citalid login")).toMatch(/^FAIL\s+Citalid login\s+Citalid rejected the credentials/);
    expect(line(lines, "Citalid versions")).toMatch(/^SKIP\s/);
    expect(line(lines, "OpenCTI")).toMatch(/^OK\s/);
    expect(lines.at(-1)).toBe("1 check(s) failed.");
  });

  test("version list error fails the versions", async () => {
    citalid.inject("list", { kind: "status", status: 500 });

    const { code, lines } = await check();

    expect(code).toBe(1);
    expect(line(lines, "Citalid login")).toMatch(/^OK\s/);
    expect(line(lines, "Citalid versions")).toMatch(/^FAIL\s+Citalid versions\s+.*HTTP 500/);
  });

  test("wrong OpenCTI token fails OpenCTI", async () => {
    const { code, lines } = await check({ OPENCTI_TOKEN: "wrong-token-0000" });

    expect(code).toBe(1);
    expect(line(lines, "OpenCTI")).toMatch(/^FAIL\s+OpenCTI\s+.*AUTH_REQUIRED.*OPENCTI_TOKEN/);
    expect(line(lines, "Citalid versions")).toMatch(/^OK\s/);
  });

  test("old platform fails OpenCTI", async () => {
    opencti.version = "6.2.9";

    const { code, lines } = await check();

    expect(code).toBe(1);
    expect(line(lines, "OpenCTI")).toContain("runs OpenCTI 6.2.9, but this connector needs 6.3 or later");
  });

  test("unreachable platform fails OpenCTI", async () => {
    await opencti.stop();

    const { code, lines } = await check();

    expect(code).toBe(1);
    expect(line(lines, "OpenCTI")).toMatch(/^FAIL\s+OpenCTI\s/);
  });

  test("missing state folder fails the state file", async () => {
    const { code, lines } = await check({ CONNECTOR_STATE_FILE: join(stateDir, "missing", "state.json") });

    expect(code).toBe(1);
    expect(line(lines, "state file")).toMatch(/^FAIL\s+state file\s+folder .*missing does not exist/);
  });

  test("failed run still creates nothing", async () => {
    await check({ OPENCTI_TOKEN: "wrong-token-0000", CITALID_PASSWORD: "not-the-password" });

    expect(opencti.registrations).toEqual([]);
    expect(opencti.works).toEqual([]);
    expect(citalid.counts.downloadsTotal).toBe(0);
  });

  test("invalid settings exit 2 before checking", async () => {
    const { code, run } = await check({ CONNECTOR_QUEUE_PROTOCOL: "carrier-pigeon" });

    expect(code).toBe(2);
    expect(run.lines.join("\n")).toContain("CONNECTOR_QUEUE_PROTOCOL");
    expect(citalid.counts.tokenRequests).toBe(0);
    expect(opencti.requests).toEqual([]);
  });
});

describe("--check with amqp", () => {
  test("skips the broker", async () => {
    const { code, lines } = await check({ CONNECTOR_QUEUE_PROTOCOL: "amqp" });

    expect(code).toBe(0);
    expect(line(lines, "RabbitMQ")).toMatch(/^SKIP\s+RabbitMQ\s+not checked/);
  });
});
