/**
 * `--check` end to end: the real connector (`main.ts` as a subprocess)
 * against the fake Citalid API and the fake OpenCTI platform.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, tempDir } from "./helpers/connector.ts";
import { OTHER_UID, asOtherUser, otherUserDir, otherUserUnavailable, warnIfOtherUserUnavailable } from "./helpers/other-user.ts";

warnIfOtherUserUnavailable("check.test.ts");

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

/**
 * Runs `--check` and returns the exit code and the report lines printed on
 * stdout. `command` starts the connector some other way, such as another user.
 */
async function check(extra: Record<string, string> = {}, args: string[] = [], command?: string[]) {
  const run = await runConnectorOnce(env(extra), ["--check", ...args], { cwd: stateDir, command });
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

  test("counts ids with control characters apart", async () => {
    citalid.setVersions([...fixtureCitalidVersions(), { id: "20250302\n", body: "{}" }]);

    const { code, lines } = await check();

    expect(code).toBe(0);
    expect(line(lines, "Citalid versions")).toContain("4 version(s), newest 20250301; 1 skipped because the id has a control character");
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
    expect(line(lines, "state file")).toMatch(/^FAIL\s+state file\s+State file folder .*missing does not exist/);
  });

  test("state file under a file fails", async () => {
    const plain = join(stateDir, "plain");
    writeFileSync(plain, "");

    const { code, lines } = await check({ CONNECTOR_STATE_FILE: join(plain, "state.json"), CONNECTOR_SPOOL_DIR: stateDir });

    expect(code).toBe(1);
    expect(line(lines, "state file")).toMatch(/^FAIL\s+state file\s+State file folder .*plain is not a folder: set CONNECTOR_STATE_FILE/);
    expect(line(lines, "spool folder")).toMatch(/^OK\s/);
  });

  test("state file that is a folder fails", async () => {
    mkdirSync(join(stateDir, "state.json"));

    const { code, lines } = await check();

    expect(code).toBe(1);
    expect(line(lines, "state file")).toContain(`State file ${join(stateDir, "state.json")} is a folder: set CONNECTOR_STATE_FILE`);
  });

  test("corrupt state file warns", async () => {
    writeFileSync(join(stateDir, "state.json"), "not json at all");

    const { code, lines } = await check();

    expect(code).toBe(0);
    expect(line(lines, "state file")).toMatch(/^WARN\s+state file\s+.*state\.json is not a valid state \(it is not JSON\): start-up moves it aside/);
    expect(lines.at(-1)).toBe("All checks passed, with 1 warning(s).");
  });

  test("state with a bad version id warns", async () => {
    writeFileSync(join(stateDir, "state.json"), JSON.stringify({ last_loaded_bundle_id: "latest" }));

    const { code, lines } = await check();

    expect(code).toBe(0);
    expect(line(lines, "state file")).toContain('last_loaded_bundle_id is "latest", expected a version id starting with YYYYMMDD');
  });

  test("null state file passes", async () => {
    writeFileSync(join(stateDir, "state.json"), "null\n");

    const { code, lines } = await check();

    expect(code).toBe(0);
    expect(line(lines, "state file")).toMatch(/^OK\s/);
    expect(lines.at(-1)).toBe("All checks passed.");
  });

  test("missing spool folder fails", async () => {
    const { code, lines } = await check({ CONNECTOR_SPOOL_DIR: join(stateDir, "missing") });

    expect(code).toBe(1);
    expect(line(lines, "spool folder")).toMatch(/^FAIL\s+spool folder\s+Spool folder .*missing does not exist: .*CONNECTOR_SPOOL_DIR/);
    expect(line(lines, "state file")).toMatch(/^OK\s/);
    expect(lines.at(-1)).toBe("1 check(s) failed.");
  });

  test("spool folder that is a file fails", async () => {
    const plain = join(stateDir, "plain");
    writeFileSync(plain, "");

    const { code, lines } = await check({ CONNECTOR_SPOOL_DIR: plain });

    expect(code).toBe(1);
    expect(line(lines, "spool folder")).toContain(`Spool folder ${plain} is not a folder: set CONNECTOR_SPOOL_DIR`);
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

describe("--check timings", () => {
  // Start-up treats a bad timing variable as invalid settings, so --check does too.
  test("bad value exits 2 before checking", async () => {
    const { code, run } = await check({ CONNECTOR_CITALID_TIMEOUT_MS: "abc" });

    expect(code).toBe(2);
    const error = run.logs().find((logLine) => logLine.level === "ERROR")?.message;
    expect(error).toBe('CONNECTOR_CITALID_TIMEOUT_MS is "abc": use a whole number of milliseconds above 0');
    expect(run.stdout()).toBe("");
    expect(citalid.counts.tokenRequests).toBe(0);
    expect(opencti.requests).toEqual([]);
  });
});

// Root passes every permission check, so these cases run the connector as
// another user, with files of root in a folder of that user.
describe.skipIf(otherUserUnavailable !== undefined)("--check as another user", () => {
  beforeEach(() => {
    stateDir = otherUserDir();
  });

  test("passes with its own files", async () => {
    const { code, lines } = await check({}, [], asOtherUser());

    expect(code).toBe(0);
    expect(lines.at(-1)).toBe("All checks passed.");
  });

  test("state file of root fails", async () => {
    const path = join(stateDir, "state.json");
    writeFileSync(path, '{"last_loaded_bundle_id":"20250105"}\n', { mode: 0o600 });

    const { code, lines } = await check({}, [], asOtherUser());

    expect(code).toBe(1);
    expect(line(lines, "state file")).toContain(
      `State file ${path} belongs to uid 0 with mode 0600, so this user (uid ${OTHER_UID}) cannot read and write it: run "chown ${OTHER_UID} ${path}"`,
    );
    expect(line(lines, "state file")).toContain("CONNECTOR_STATE_FILE");
  });

  test("lock file of root fails", async () => {
    const lock = join(stateDir, "state.json.lock");
    writeFileSync(lock, "999999999", { mode: 0o600 });

    const { code, lines } = await check({}, [], asOtherUser());

    expect(code).toBe(1);
    expect(line(lines, "state file")).toContain(`State file lock ${lock} belongs to uid 0 with mode 0600`);
  });

  test("unwritable spool folder fails", async () => {
    const spool = join(stateDir, "spool");
    mkdirSync(spool);
    chmodSync(spool, 0o755);

    const { code, lines } = await check({ CONNECTOR_SPOOL_DIR: spool }, [], asOtherUser());

    expect(code).toBe(1);
    expect(line(lines, "spool folder")).toContain(`Spool folder ${spool} is not writable by this user: fix its permissions or set CONNECTOR_SPOOL_DIR`);
  });
});

describe("--check with amqp", () => {
  test("skips the broker", async () => {
    const { code, lines } = await check({ CONNECTOR_QUEUE_PROTOCOL: "amqp" });

    expect(code).toBe(0);
    expect(line(lines, "RabbitMQ")).toMatch(/^SKIP\s+RabbitMQ\s+not checked/);
  });
});
