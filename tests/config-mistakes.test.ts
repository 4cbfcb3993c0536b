/**
 * Configuration mistakes seen in OpenCTI connectors, run through the real
 * connector (`main.ts` as a subprocess) against the fakes. The loader's own
 * tables are in config.test.ts. These tests check what the process does: its
 * exit code, whether it sent any request, what it logged and how it
 * scheduled the next run.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { TEST_TLS } from "./fixtures/tls.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import {
  type ConnectorProcess,
  type LogLine,
  TEST_SECRETS,
  connectorEnv,
  runConnectorOnce,
  startConnector,
  tempDir,
} from "./helpers/connector.ts";

const CONNECTOR_ID = "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69";
const OTHER_CONNECTOR_ID = "6f1d2c3b-4a5e-4f60-8b7a-9c8d7e6f5a4b";
const PYTHON_DEFAULT_ID = "bfbc4966-88dd-4d2a-9ded-4c97e4bf90b5";
const TEST_CA_FILE = join(import.meta.dir, "fixtures", "tls", "localhost.crt");
const ONE_VERSION = fixtureCitalidVersions().slice(0, 1);
const LAST_ID = ONE_VERSION[0]!.id;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const REQUIRED = ["OPENCTI_URL", "OPENCTI_TOKEN", "CONNECTOR_ID", "CITALID_CUSTOMER_SUB_DOMAIN_URL", "CITALID_USER", "CITALID_PASSWORD"];
const ID_IN_USE = "Another process seems to be running with this CONNECTOR_ID";
const MIGRATING = "Deprecated setting 'citalid.interval' found. Migrating to 'connector.duration_period'.";
const USING_PERIOD = "Deprecated setting 'citalid.interval' found. Using only 'connector.duration_period'.";
// Each test starts at least one connector process; the default 5 s is too short under load.
const TIMEOUT_MS = 60_000;

let citalid: FakeCitalid;
let opencti: FakeOpenCTI;
let stateDir: string;

async function startFakes(options: { citalidBasePath?: string; openctiBasePath?: string; citalidTls?: boolean; openctiTls?: boolean } = {}) {
  await citalid?.stop();
  await opencti?.stop();
  citalid = await startFakeCitalid({
    versions: ONE_VERSION,
    password: TEST_SECRETS.citalidPassword,
    basePath: options.citalidBasePath,
    tls: options.citalidTls ? TEST_TLS : undefined,
  });
  opencti = await startFakeOpenCTI({
    token: TEST_SECRETS.openctiToken,
    basePath: options.openctiBasePath,
    tls: options.openctiTls ? TEST_TLS : undefined,
  });
}

beforeEach(async () => {
  await startFakes();
  stateDir = tempDir("citalid-config-mistakes-");
});

afterEach(async () => {
  await citalid.stop();
  await opencti.stop();
});

/** Returns the environment for a run, with the variables set to `undefined` removed. */
function env(changes: Record<string, string | undefined> = {}, dir = stateDir): Record<string, string> {
  const settings: Record<string, string | undefined> = { ...connectorEnv(citalid, opencti, dir), ...changes };
  for (const [name, value] of Object.entries(settings)) {
    if (value === undefined) {
      delete settings[name];
    }
  }
  return settings as Record<string, string>;
}

function findLog(logs: LogLine[], message: string): LogLine | undefined {
  return logs.find((line) => line.message.includes(message));
}

/** Returns the lines after `invalid configuration:` on stderr, one per problem. */
function problemLines(run: ConnectorProcess): string[] {
  const header = run.lines.findIndex((line) => line.endsWith("invalid configuration:"));
  return header === -1 ? [] : run.lines.slice(header + 1).filter((line) => line.trim() !== "");
}

function platformState(id = CONNECTOR_ID): Record<string, unknown> | null {
  const stored = opencti.connectors.get(id)?.state ?? null;
  return stored === null ? null : JSON.parse(stored);
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

/**
 * Runs the connector on its schedule until it has scheduled the next run and
 * pinged with it, then stops it. Returns the process and the connector info
 * of that ping.
 */
async function runScheduled(settings: Record<string, string>) {
  const connector = startConnector(settings, []);
  await connector.waitForLog("Schedule next run of connector");
  await waitFor(() => opencti.pings.some((ping) => ping.connectorInfo?.next_run_datetime));
  connector.proc.kill("SIGTERM");
  const code = await connector.exited;
  const info = opencti.pings.find((ping) => ping.connectorInfo?.next_run_datetime)!.connectorInfo!;
  return { connector, code, info };
}

/** Returns the scheduled period from a ping's connector info, next run minus last run. */
function scheduledPeriodMs(info: { next_run_datetime?: string | null; last_run_datetime?: string | null }): number {
  return Date.parse(info.next_run_datetime!) - Date.parse(info.last_run_datetime!);
}

describe("invalid settings", () => {
  // Each case: the variables to change, and the variables that the problem lines name.
  const table: [string, Record<string, string | undefined>, string[]][] = [
    ["missing OPENCTI_URL", { OPENCTI_URL: undefined }, ["OPENCTI_URL"]],
    ["every required setting missing", Object.fromEntries(REQUIRED.map((name) => [name, undefined])), REQUIRED],
    ["period bare number 24", { CONNECTOR_DURATION_PERIOD: "24" }, ["CONNECTOR_DURATION_PERIOD"]],
    ["period 0.5", { CONNECTOR_DURATION_PERIOD: "0.5" }, ["CONNECTOR_DURATION_PERIOD"]],
    ["period -1", { CONNECTOR_DURATION_PERIOD: "-1" }, ["CONNECTOR_DURATION_PERIOD"]],
    ["period abc", { CONNECTOR_DURATION_PERIOD: "abc" }, ["CONNECTOR_DURATION_PERIOD"]],
    ["interval -1", { CITALID_INTERVAL: "-1" }, ["CITALID_INTERVAL"]],
    ["interval 0.5", { CITALID_INTERVAL: "0.5" }, ["CITALID_INTERVAL"]],
    ["interval abc", { CITALID_INTERVAL: "abc" }, ["CITALID_INTERVAL"]],
    ["interval PT1H", { CITALID_INTERVAL: "PT1H" }, ["CITALID_INTERVAL"]],
    ["log level trace", { CONNECTOR_LOG_LEVEL: "trace" }, ["CONNECTOR_LOG_LEVEL"]],
    ["id ChangeMe", { CONNECTOR_ID: "ChangeMe" }, ["CONNECTOR_ID"]],
    ["id not a UUID", { CONNECTOR_ID: "citalid-connector" }, ["CONNECTOR_ID"]],
    ["id of version 0", { CONNECTOR_ID: "0b4f5a2c-7d1e-0c3b-9a8f-1e2d3c4b5a69" }, ["CONNECTOR_ID"]],
    ["OpenCTI URL without scheme", { OPENCTI_URL: "127.0.0.1:8080" }, ["OPENCTI_URL"]],
    ["OpenCTI URL with ftp", { OPENCTI_URL: "ftp://127.0.0.1" }, ["OPENCTI_URL"]],
    ["Citalid URL with ftp", { CITALID_CUSTOMER_SUB_DOMAIN_URL: "ftp://127.0.0.1" }, ["CITALID_CUSTOMER_SUB_DOMAIN_URL"]],
    [
      "three problems at once",
      { CONNECTOR_ID: "ChangeMe", CONNECTOR_LOG_LEVEL: "trace", CONNECTOR_DURATION_PERIOD: "24" },
      ["CONNECTOR_ID", "CONNECTOR_LOG_LEVEL", "CONNECTOR_DURATION_PERIOD"],
    ],
  ];
  for (const [name, changes, variables] of table) {
    test(
      `${name} exits 2 without requests`,
      async () => {
        const run = await runConnectorOnce(env(changes));

        expect(run.code).toBe(2);
        expect(opencti.requests).toHaveLength(0);
        expect(citalid.requests).toHaveLength(0);
        expect(existsSync(join(stateDir, "state.json"))).toBe(false);
        const problems = problemLines(run);
        expect(problems).toHaveLength(variables.length);
        for (const variable of variables) {
          expect({ variable, lines: problems.filter((line) => line.startsWith(`${variable} (`)).length }).toEqual({ variable, lines: 1 });
        }
      },
      TIMEOUT_MS,
    );
  }

  test(
    "log level trace lists the allowed values",
    async () => {
      const run = await runConnectorOnce(env({ CONNECTOR_LOG_LEVEL: "trace" }));

      expect(problemLines(run)[0]).toContain("use debug, info, warn, warning or error");
    },
    TIMEOUT_MS,
  );

  test(
    "period 24 suggests PT24H",
    async () => {
      const run = await runConnectorOnce(env({ CONNECTOR_DURATION_PERIOD: "24" }));

      expect(problemLines(run)[0]).toContain("PT24H");
    },
    TIMEOUT_MS,
  );
});

describe("interval and duration period", () => {
  // CITALID_INTERVAL × CONNECTOR_DURATION_PERIOD: the period scheduled (null
  // for one run, then exit) and the deprecation warning logged, if any.
  const table: [string | undefined, string | undefined, number | null, string | undefined][] = [
    [undefined, undefined, DAY_MS, undefined],
    [undefined, "PT6H", 6 * HOUR_MS, undefined],
    [undefined, "PT0S", null, undefined],
    ["24", undefined, DAY_MS, MIGRATING],
    ["24", "PT6H", 6 * HOUR_MS, USING_PERIOD],
    ["24", "PT0S", null, USING_PERIOD],
    ["6", undefined, 6 * HOUR_MS, MIGRATING],
    ["0", undefined, null, MIGRATING],
  ];
  for (const [interval, period, expectedMs, warning] of table) {
    test(
      `interval ${interval ?? "unset"} with period ${period ?? "unset"}`,
      async () => {
        const settings = env({ CITALID_INTERVAL: interval, CONNECTOR_DURATION_PERIOD: period });

        let logs: LogLine[];
        if (expectedMs === null) {
          const run = await runConnectorOnce(settings, []);
          expect(run.code).toBe(0);
          expect(opencti.pings.at(-1)?.connectorInfo?.run_and_terminate).toBe(true);
          logs = run.logs();
        } else {
          const { connector, code, info } = await runScheduled(settings);
          expect(code).toBe(0);
          expect(scheduledPeriodMs(info)).toBe(expectedMs);
          logs = connector.logs();
        }

        expect(citalid.counts.logins).toBe(1);
        const deprecations = logs.filter((line) => line.message.startsWith("Deprecated setting 'citalid.interval'"));
        expect(deprecations.map((line) => line.message)).toEqual(warning === undefined ? [] : [warning]);
        expect(deprecations.every((line) => line.level === "WARNING")).toBe(true);
      },
      TIMEOUT_MS,
    );
  }

  const periods: [string, number][] = [
    ["P1D", DAY_MS],
    ["PT1H", HOUR_MS],
    ["PT30M", 30 * 60_000],
    ["P1Y", 365 * DAY_MS],
    ["", DAY_MS],
  ];
  for (const [period, expectedMs] of periods) {
    test(
      `period ${JSON.stringify(period)} schedules ${expectedMs} ms`,
      async () => {
        const { code, info } = await runScheduled(env({ CONNECTOR_DURATION_PERIOD: period }));

        expect(code).toBe(0);
        expect(scheduledPeriodMs(info)).toBe(expectedMs);
      },
      TIMEOUT_MS,
    );
  }

  test(
    "period 0 runs once",
    async () => {
      const run = await runConnectorOnce(env({ CONNECTOR_DURATION_PERIOD: "0" }), []);

      expect(run.code).toBe(0);
      expect(opencti.works).toHaveLength(1);
      expect(opencti.pings.at(-1)?.connectorInfo?.run_and_terminate).toBe(true);
    },
    TIMEOUT_MS,
  );

  test(
    "last run in the future still runs now",
    async () => {
      opencti.seedConnector({ id: CONNECTOR_ID, state: JSON.stringify({ last_run: "2099-01-01T00:00:00Z" }) });

      const { code, info } = await runScheduled(env({ CONNECTOR_DURATION_PERIOD: "PT1H" }));

      expect(code).toBe(0);
      expect(citalid.counts.logins).toBe(1);
      expect(scheduledPeriodMs(info)).toBe(HOUR_MS);
      expect(Date.parse(info.next_run_datetime!)).toBeLessThan(Date.now() + 2 * HOUR_MS);
    },
    TIMEOUT_MS,
  );
});

describe("log levels", () => {
  const RANK: Record<string, number> = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };
  // A misspelled CITALID_ variable makes the run log one warning.
  const TYPO = { CITALID_USERNAME: "typo" };
  const table: [string | undefined, string][] = [
    [undefined, "INFO"],
    ["", "INFO"],
    ["debug", "DEBUG"],
    ["info", "INFO"],
    ["INFO", "INFO"],
    ['"info"', "INFO"],
    ["'info'", "INFO"],
    ["warn", "WARNING"],
    ["warning", "WARNING"],
    ["WARNING", "WARNING"],
    [" Warn ", "WARNING"],
    ["error", "ERROR"],
  ];
  for (const [value, minimum] of table) {
    test(
      `level ${value === undefined ? "unset" : JSON.stringify(value)} prints ${minimum} and up`,
      async () => {
        const run = await runConnectorOnce(env({ CONNECTOR_LOG_LEVEL: value, ...TYPO }));

        expect(run.code).toBe(0);
        const unparsed = run.lines.filter((line) => !line.startsWith("{"));
        expect(unparsed).toEqual([]);
        const levels = new Set(run.logs().map((line) => line.level));
        const below = [...levels].filter((level) => RANK[level]! < RANK[minimum]!);
        expect(below).toEqual([]);
        const typoWarning = findLog(run.logs(), "CITALID_USERNAME is not a known setting");
        expect(typoWarning !== undefined).toBe(RANK[minimum]! <= RANK.WARNING!);
        if (minimum === "DEBUG" || minimum === "INFO") {
          expect(levels.has(minimum)).toBe(true);
        }
      },
      TIMEOUT_MS,
    );
  }

  test(
    "quoted level warns about the quotes",
    async () => {
      const run = await runConnectorOnce(env({ CONNECTOR_LOG_LEVEL: '"INFO"' }));

      const warning = findLog(run.logs(), "CONNECTOR_LOG_LEVEL is wrapped in quotes");
      expect(warning?.level).toBe("WARNING");
    },
    TIMEOUT_MS,
  );
});

describe("misspelt variables", () => {
  test(
    "misspelt period warns and keeps 24 h",
    async () => {
      const { connector, code, info } = await runScheduled(env({ CONNECTOR_DURATON_PERIOD: "PT1H" }));

      expect(code).toBe(0);
      const warning = findLog(connector.logs(), "CONNECTOR_DURATON_PERIOD");
      expect(warning?.level).toBe("WARNING");
      expect(warning?.message).toBe(
        "CONNECTOR_DURATON_PERIOD is not a known setting and is ignored: did you mean CONNECTOR_DURATION_PERIOD?",
      );
      expect(scheduledPeriodMs(info)).toBe(DAY_MS);
    },
    TIMEOUT_MS,
  );

  test(
    "misspelt password warns in --check",
    async () => {
      const run = await runConnectorOnce(env({ MQ_PASSWORD: TEST_SECRETS.mqPassword }), ["--check"], { cwd: stateDir });

      expect(run.code).toBe(0);
      const warning = findLog(run.logs(), "MQ_PASSWORD");
      expect(warning?.level).toBe("WARNING");
      expect(warning?.message).toContain("did you mean MQ_PASS?");
    },
    TIMEOUT_MS,
  );

  test(
    "platform and timing variables are silent",
    async () => {
      const run = await runConnectorOnce(
        env({ OPENCTI_ADMIN_EMAIL: "admin@example.org", OPENCTI_BASE_URL: opencti.url, CONNECTOR_PROGRESS_INTERVAL_MS: "500" }),
      );

      expect(run.code).toBe(0);
      expect(findLog(run.logs(), "is not a known setting")).toBeUndefined();
    },
    TIMEOUT_MS,
  );
});

describe("connector id", () => {
  test(
    "Python default id warns loudly",
    async () => {
      const run = await runConnectorOnce(env({ CONNECTOR_ID: PYTHON_DEFAULT_ID }));

      expect(run.code).toBe(0);
      const warning = findLog(run.logs(), "the Python connector's built-in default");
      expect(warning?.level).toBe("WARNING");
      expect(warning?.message).toContain("uuidgen");
    },
    TIMEOUT_MS,
  );

  test(
    "changed id starts from scratch",
    async () => {
      await runConnectorOnce(env());
      citalid.clearRecords();

      const run = await runConnectorOnce(env({ CONNECTOR_ID: OTHER_CONNECTOR_ID }));

      expect(run.code).toBe(0);
      const fresh = findLog(run.logs(), "The platform has no state for this connector: the import starts from the first version");
      expect(fresh?.attributes?.connector_id).toBe(OTHER_CONNECTOR_ID);
      expect(fresh?.attributes?.ignored_state_file_version).toBe(LAST_ID);
      expect(citalid.counts.downloads[LAST_ID]).toBe(1);
      expect(platformState(OTHER_CONNECTOR_ID)?.last_loaded_bundle_id).toBe(LAST_ID);
      expect(platformState(CONNECTOR_ID)?.last_loaded_bundle_id).toBe(LAST_ID);
      expect(findLog(run.logs(), ID_IN_USE)).toBeUndefined();
    },
    TIMEOUT_MS,
  );

  test(
    "second instance with the same id warns",
    async () => {
      const first = startConnector(env({ CONNECTOR_DURATION_PERIOD: "PT1H" }), []);
      await first.waitForLog("Schedule next run of connector");
      const secondDir = tempDir("citalid-config-mistakes-second-");

      const second = await runConnectorOnce(env({}, secondDir));
      first.proc.kill("SIGTERM");
      await first.exited;

      const warning = findLog(second.logs(), ID_IN_USE);
      expect(warning?.level).toBe("WARNING");
      expect(warning?.message).toContain("give each deployment its own CONNECTOR_ID");
      expect(warning?.message).toContain(`last saw this id at ${warning?.attributes?.platform_last_seen}`);
      expect(warning?.message).toContain("this connector's previous run");
      expect(warning?.attributes?.connector_id).toBe(CONNECTOR_ID);
      expect(warning?.attributes?.state_file).toBe(join(secondDir, "state.json"));
      expect(warning?.attributes?.state_file_last_used).toBeNull();
      expect(findLog(first.logs(), ID_IN_USE)).toBeUndefined();
    },
    TIMEOUT_MS,
  );

  test(
    "restart of one instance is silent",
    async () => {
      const first = await runConnectorOnce(env());
      const second = await runConnectorOnce(env());

      expect(second.code).toBe(0);
      expect(findLog(first.logs(), ID_IN_USE)).toBeUndefined();
      expect(findLog(second.logs(), ID_IN_USE)).toBeUndefined();
    },
    TIMEOUT_MS,
  );

  test(
    "stop marks the state file after the last ping",
    async () => {
      await runConnectorOnce(env());

      const lastPing = Date.parse(opencti.connectors.get(CONNECTOR_ID)!.updatedAt);
      expect(statSync(join(stateDir, "state.json")).mtimeMs).toBeGreaterThanOrEqual(lastPing);
    },
    TIMEOUT_MS,
  );

  // The platform saw the id a moment ago, and the state file was last used an
  // hour before: a stale lock shows that this host's process crashed then.
  const staleCases: [string, boolean, boolean][] = [
    ["with a stale lock is silent", true, false],
    ["without a lock warns", false, true],
  ];
  for (const [name, staleLock, warns] of staleCases) {
    test(
      `old state file ${name}`,
      async () => {
        await runConnectorOnce(env());
        opencti.connectors.get(CONNECTOR_ID)!.updatedAt = new Date().toISOString();
        const statePath = join(stateDir, "state.json");
        const hourAgo = new Date(Date.now() - HOUR_MS);
        utimesSync(statePath, hourAgo, hourAgo);
        if (staleLock) {
          writeFileSync(`${statePath}.lock`, String(await deadPid()));
        }

        const run = await runConnectorOnce(env());

        expect(run.code).toBe(0);
        expect(findLog(run.logs(), "Removing a stale state file lock") !== undefined).toBe(staleLock);
        expect(findLog(run.logs(), ID_IN_USE) !== undefined).toBe(warns);
      },
      TIMEOUT_MS,
    );
  }
});

describe("URLs", () => {
  // Each case: base paths the fakes serve under, and what is appended to
  // their URLs in the connector's settings.
  const table: { name: string; openctiBasePath?: string; openctiSuffix?: string; citalidBasePath?: string; citalidSuffix?: string }[] = [
    { name: "OpenCTI URL with a trailing slash", openctiSuffix: "/" },
    { name: "OpenCTI URL with a sub-path", openctiBasePath: "/opencti" },
    { name: "OpenCTI sub-path with a trailing slash", openctiBasePath: "/opencti", openctiSuffix: "/" },
    { name: "OpenCTI sub-path with two slashes", openctiBasePath: "/opencti", openctiSuffix: "//" },
    { name: "Citalid URL with a trailing slash", citalidSuffix: "/" },
    { name: "Citalid URL with a sub-path", citalidBasePath: "/tenant" },
    { name: "Citalid sub-path with a trailing slash", citalidBasePath: "/tenant", citalidSuffix: "/" },
    { name: "both sub-paths with trailing slashes", openctiBasePath: "/a/b", openctiSuffix: "/", citalidBasePath: "/c/d", citalidSuffix: "/" },
  ];
  for (const { name, openctiBasePath = "", openctiSuffix = "", citalidBasePath = "", citalidSuffix = "" } of table) {
    test(
      `${name} joins paths cleanly`,
      async () => {
        await startFakes({ openctiBasePath, citalidBasePath });

        const run = await runConnectorOnce(
          env({ OPENCTI_URL: opencti.url + openctiSuffix, CITALID_CUSTOMER_SUB_DOMAIN_URL: citalid.url + citalidSuffix }),
        );

        expect(run.code).toBe(0);
        expect(platformState()?.last_loaded_bundle_id).toBe(LAST_ID);
        const openctiPaths = new Set(opencti.requests.map((request) => request.path));
        expect([...openctiPaths]).toEqual([`${openctiBasePath}/graphql`]);
        const citalidPaths = citalid.requests.map((request) => request.path);
        expect(citalidPaths.filter((path) => path.includes("//"))).toEqual([]);
        expect(citalidPaths.filter((path) => !path.startsWith(`${citalidBasePath}/`))).toEqual([]);
        expect(citalid.requests.every((request) => request.route !== "unknown")).toBe(true);
      },
      TIMEOUT_MS,
    );
  }

  test(
    "OpenCTI URL missing its sub-path exits 2",
    async () => {
      await startFakes({ openctiBasePath: "/opencti" });

      const run = await runConnectorOnce(env({ OPENCTI_URL: new URL(opencti.url).origin }));

      expect(run.code).toBe(2);
      const error = run.logs().find((line) => line.level === "ERROR")?.message ?? "";
      expect(error).toContain("is not an OpenCTI GraphQL endpoint");
      expect(error).toContain("check OPENCTI_URL");
      expect(citalid.requests).toHaveLength(0);
    },
    TIMEOUT_MS,
  );
});

describe("http and https", () => {
  test(
    "https OpenCTI URL on plain HTTP exits 2",
    async () => {
      const run = await runConnectorOnce(env({ OPENCTI_URL: opencti.url.replace("http://", "https://") }));

      expect(run.code).toBe(2);
      const error = run.logs().find((line) => line.level === "ERROR")?.message ?? "";
      expect(error).toContain("OpenCTI TLS handshake");
      expect(error).toContain("set OPENCTI_URL to an http:// URL");
      expect(citalid.requests).toHaveLength(0);
    },
    TIMEOUT_MS,
  );

  const citalidOnPlainHttp: [string, (url: string) => string][] = [
    ["https Citalid URL", (url) => url.replace("http://", "https://")],
    ["Citalid URL without scheme", (url) => url.replace("http://", "")],
  ];
  for (const [name, rewrite] of citalidOnPlainHttp) {
    test(
      `${name} on plain HTTP fails the run`,
      async () => {
        const run = await runConnectorOnce(env({ CITALID_CUSTOMER_SUB_DOMAIN_URL: rewrite(citalid.url) }));

        expect(run.code).toBe(1);
        const reason = String(findLog(run.logs(), "Run failed")?.attributes?.reason ?? "");
        expect(reason).toContain("Citalid TLS handshake");
        expect(reason).toContain("set CITALID_CUSTOMER_SUB_DOMAIN_URL to an http:// URL");
        expect(findLog(run.logs(), "Citalid request failed, retrying")).toBeUndefined();
      },
      TIMEOUT_MS,
    );
  }

  test(
    "Citalid URL without scheme uses https",
    async () => {
      await startFakes({ citalidTls: true });

      const run = await runConnectorOnce(
        env({ CITALID_CUSTOMER_SUB_DOMAIN_URL: citalid.url.replace("https://", ""), CONNECTOR_CA_FILE: TEST_CA_FILE }),
      );

      expect(run.code).toBe(0);
      expect(citalid.counts.logins).toBe(1);
    },
    TIMEOUT_MS,
  );

  test(
    "http OpenCTI URL on HTTPS names OPENCTI_URL",
    async () => {
      await startFakes({ openctiTls: true });

      const connector = startConnector(env({ OPENCTI_URL: opencti.url.replace("https://", "http://"), CONNECTOR_CA_FILE: TEST_CA_FILE }));
      const waiting = await connector.waitForLog("OpenCTI is not reachable yet");
      connector.proc.kill("SIGTERM");

      expect(await connector.exited).toBe(0);
      expect(String(waiting.attributes?.reason)).toContain("OPENCTI_URL");
      expect(opencti.registrations).toHaveLength(0);
    },
    TIMEOUT_MS,
  );
});

describe("quoted values", () => {
  // Values copied from a docker-compose list entry (- NAME="value") keep their quotes.
  const variables = [
    "OPENCTI_URL",
    "OPENCTI_TOKEN",
    "CONNECTOR_ID",
    "CONNECTOR_LOG_LEVEL",
    "CONNECTOR_DURATION_PERIOD",
    "CITALID_CUSTOMER_SUB_DOMAIN_URL",
    "CITALID_USER",
    "CITALID_PASSWORD",
  ];
  const quotes: [string, string][] = [
    ["double", '"'],
    ["single", "'"],
  ];
  for (const [quoteName, quote] of quotes) {
    test(
      `${quoteName} quotes on every value are removed`,
      async () => {
        const base = env({ CONNECTOR_DURATION_PERIOD: "PT0S" });
        const quoted = Object.fromEntries(variables.map((name) => [name, `${quote}${base[name]}${quote}`]));

        const run = await runConnectorOnce({ ...base, ...quoted }, []);

        expect(run.code).toBe(0);
        expect(platformState()?.last_loaded_bundle_id).toBe(LAST_ID);
        const warned = run.logs().filter((line) => line.message.includes("is wrapped in quotes")).map((line) => line.message.split(" ")[0]);
        expect(warned.sort()).toEqual([...variables].sort());
      },
      TIMEOUT_MS,
    );
  }
});

/** Returns the pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const proc = Bun.spawn(["true"]);
  await proc.exited;
  return proc.pid;
}
