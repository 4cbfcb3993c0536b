import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseDocument } from "yaml";
import {
  ConfigError,
  loadConfig,
  type LoadConfigOptions,
  type LoadedConfig,
  type LogLevel,
} from "../lib/config.ts";
import { createLogger } from "../lib/log.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const TEST_PASSWORD = "Sup3r-S3cret-Passw0rd";
const TEST_TOKEN = "0b6c1f4e-token-value-7d2a";
const TEST_MQ_PASS = "rabbit-Secret-4242";
const CONNECTOR_ID = "5f0c3a4e-8b1d-4c2e-9a7f-3d6b2e1c0a9f";
const PYTHON_DEFAULT_ID = "bfbc4966-88dd-4d2a-9ded-4c97e4bf90b5";

const MIGRATING = "Deprecated setting 'citalid.interval' found. Migrating to 'connector.duration_period'.";
const USING_ONLY = "Deprecated setting 'citalid.interval' found. Using only 'connector.duration_period'.";

/** The required settings, all valid. */
const REQUIRED_ENV: Record<string, string> = {
  OPENCTI_URL: "http://localhost:8080",
  OPENCTI_TOKEN: TEST_TOKEN,
  CONNECTOR_ID,
  CITALID_CUSTOMER_SUB_DOMAIN_URL: "https://acme.citalid.com",
  CITALID_USER: "analyst@example.org",
  CITALID_PASSWORD: TEST_PASSWORD,
};

let directory: string;

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), "citalid-config-"));
});

afterEach(() => {
  rmSync(directory, { recursive: true, force: true });
});

/** Loads with the required settings plus `env`, where an undefined value removes a variable. */
function load(env: Record<string, string | undefined> = {}, options: LoadConfigOptions = {}): LoadedConfig {
  return loadConfig({ cwd: directory, ...options, env: { ...REQUIRED_ENV, ...env } });
}

/** Returns the ConfigError that loading throws, and fails when it does not throw. */
function loadError(env: Record<string, string | undefined> = {}, options: LoadConfigOptions = {}): ConfigError {
  try {
    load(env, options);
  } catch (error) {
    if (error instanceof ConfigError) {
      return error;
    }
    throw error;
  }
  throw new Error("expected loadConfig to throw a ConfigError");
}

function writeConfig(text: string, name = "config.yml", mode = 0o600): string {
  const path = join(directory, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

describe("loadConfig defaults", () => {
  test("applies every default", () => {
    const { config, warnings, source } = load();

    expect(source).toBeUndefined();
    expect(warnings).toEqual([]);
    expect(config).toEqual({
      opencti: { url: "http://localhost:8080", token: TEST_TOKEN, sslVerify: true, jsonLogging: true },
      connector: {
        id: CONNECTOR_ID,
        type: "EXTERNAL_IMPORT",
        name: "Citalid",
        scope: ["citalid"],
        runAndTerminate: false,
        logLevel: "info",
        durationPeriodMs: DAY,
        queueThresholdMb: 500,
        queueProtocol: "api",
        stateFile: join(directory, "state.json"),
        spoolDir: directory,
        pushMaxMb: 10,
        exposeMetrics: false,
        metricsPort: 9095,
        metricsHost: "127.0.0.1",
        metricsNamespace: "",
        metricsSubsystem: "",
      },
      citalid: { url: "https://acme.citalid.com", user: "analyst@example.org", password: TEST_PASSWORD, language: "en" },
      mq: { rejectUnauthorized: true },
    });
  });

  test("reads every variable", () => {
    const caFile = join(directory, "ca.pem");
    writeFileSync(caFile, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");

    const { config } = load({
      OPENCTI_SSL_VERIFY: "false",
      OPENCTI_JSON_LOGGING: "no",
      CONNECTOR_TYPE: "EXTERNAL_IMPORT",
      CONNECTOR_NAME: "Citalid EU",
      CONNECTOR_SCOPE: "citalid, stix",
      CONNECTOR_RUN_AND_TERMINATE: "yes",
      CONNECTOR_LOG_LEVEL: "debug",
      CONNECTOR_DURATION_PERIOD: "PT6H",
      CONNECTOR_QUEUE_THRESHOLD: "250.5",
      CONNECTOR_QUEUE_PROTOCOL: "amqp",
      CONNECTOR_STATE_FILE: "data/state.json",
      CONNECTOR_SPOOL_DIR: "spool",
      CONNECTOR_PUSH_MAX_MB: "4",
      CONNECTOR_EXPOSE_METRICS: "1",
      CONNECTOR_METRICS_PORT: "9100",
      CONNECTOR_METRICS_HOST: "0.0.0.0",
      CONNECTOR_METRICS_NAMESPACE: "opencti",
      CONNECTOR_METRICS_SUBSYSTEM: "citalid",
      CONNECTOR_CA_FILE: "ca.pem",
      CITALID_LANGUAGE: "fr",
      MQ_HOST: "rabbitmq",
      MQ_PORT: "5671",
      MQ_VHOST: "/",
      MQ_USE_SSL: "true",
      MQ_USER: "opencti",
      MQ_PASS: TEST_MQ_PASS,
      MQ_USE_SSL_REJECT_UNAUTHORIZED: "false",
    });

    expect(config.opencti.sslVerify).toBe(false);
    expect(config.opencti.jsonLogging).toBe(false);
    expect(config.connector.name).toBe("Citalid EU");
    expect(config.connector.scope).toEqual(["citalid", "stix"]);
    expect(config.connector.runAndTerminate).toBe(true);
    expect(config.connector.logLevel).toBe("debug");
    expect(config.connector.durationPeriodMs).toBe(6 * HOUR);
    expect(config.connector.queueThresholdMb).toBe(250.5);
    expect(config.connector.queueProtocol).toBe("amqp");
    expect(config.connector.stateFile).toBe(join(directory, "data", "state.json"));
    expect(config.connector.spoolDir).toBe(join(directory, "spool"));
    expect(config.connector.pushMaxMb).toBe(4);
    expect(config.connector.exposeMetrics).toBe(true);
    expect(config.connector.metricsPort).toBe(9100);
    expect(config.connector.metricsHost).toBe("0.0.0.0");
    expect(config.connector.metricsNamespace).toBe("opencti");
    expect(config.connector.metricsSubsystem).toBe("citalid");
    expect(config.caFile).toBe(caFile);
    expect(config.citalid.language).toBe("fr");
    expect(config.mq).toEqual({
      host: "rabbitmq",
      port: 5671,
      vhost: "/",
      useSsl: true,
      user: "opencti",
      pass: TEST_MQ_PASS,
      rejectUnauthorized: false,
    });
  });
});

describe("loadConfig sources", () => {
  test("environment wins over config.yml", () => {
    writeConfig("connector:\n  name: FromFile\n  log_level: debug\n");

    const { config } = load({ CONNECTOR_NAME: "FromEnv" });

    expect(config.connector.name).toBe("FromEnv");
    expect(config.connector.logLevel).toBe("debug");
  });

  test("empty variable does not override config.yml", () => {
    writeConfig("connector:\n  name: FromFile\n");

    const { config } = load({ CONNECTOR_NAME: "" });

    expect(config.connector.name).toBe("FromFile");
  });

  test("empty variable means default", () => {
    const { config } = load({ CONNECTOR_NAME: "", CONNECTOR_QUEUE_THRESHOLD: "" });

    expect(config.connector.name).toBe("Citalid");
    expect(config.connector.queueThresholdMb).toBe(500);
  });

  test("config.yml alone supplies required settings", () => {
    writeConfig(
      [
        "opencti:",
        "  url: https://opencti.example.org/",
        `  token: ${TEST_TOKEN}`,
        "connector:",
        `  id: ${CONNECTOR_ID}`,
        "citalid:",
        "  customer_sub_domain_url: acme.citalid.com",
        "  user: analyst",
        `  password: ${TEST_PASSWORD}`,
        "",
      ].join("\n"),
    );

    const { config, source } = loadConfig({ cwd: directory, env: {} });

    expect(source).toBe(join(directory, "config.yml"));
    expect(config.opencti.url).toBe("https://opencti.example.org");
    expect(config.citalid.url).toBe("https://acme.citalid.com");
    expect(config.citalid.password).toBe(TEST_PASSWORD);
  });

  test("YAML native types are accepted", () => {
    writeConfig(
      [
        "opencti:",
        "  ssl_verify: false",
        "connector:",
        "  run_and_terminate: true",
        "  queue_threshold: 100",
        "  metrics_port: 9200",
        "  duration_period: 0",
        "  scope: [citalid, stix]",
        "",
      ].join("\n"),
    );

    const { config } = load();

    expect(config.opencti.sslVerify).toBe(false);
    expect(config.connector.runAndTerminate).toBe(true);
    expect(config.connector.queueThresholdMb).toBe(100);
    expect(config.connector.metricsPort).toBe(9200);
    expect(config.connector.durationPeriodMs).toBe(0);
    expect(config.connector.scope).toEqual(["citalid", "stix"]);
  });

  test("empty YAML value counts as unset", () => {
    writeConfig('connector:\n  name:\n  log_level: ""\n');

    const { config } = load();

    expect(config.connector.name).toBe("Citalid");
    expect(config.connector.logLevel).toBe("info");
  });

  test("YAML number for text is rejected", () => {
    writeConfig("citalid:\n  user: 12345\n");

    const error = loadError({ CITALID_USER: undefined });

    expect(error.problems).toEqual([
      "CITALID_USER (citalid.user) is 12345: use text, and in config.yml put the value in quotes so that YAML does not read it as a number or a boolean",
    ]);
  });

  test("--config reads the given file", () => {
    mkdirSync(join(directory, "etc"));
    writeConfig("connector:\n  name: FromArgv\n", join("etc", "citalid.yml"));
    writeConfig("connector:\n  name: FromCwd\n");

    const { config, source } = load({}, { argvConfigPath: "etc/citalid.yml" });

    expect(config.connector.name).toBe("FromArgv");
    expect(source).toBe(join(directory, "etc", "citalid.yml"));
  });

  test("--config with missing file fails", () => {
    const error = loadError({}, { argvConfigPath: "missing.yml" });

    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toStartWith("--config missing.yml: file not found at ");
    expect(error.problems[0]).toContain(join(directory, "missing.yml"));
  });

  test("config.yml in cwd wins over execDir", () => {
    const execDir = join(directory, "bin");
    mkdirSync(execDir);
    writeConfig("connector:\n  name: FromExecDir\n", join("bin", "config.yml"));
    writeConfig("connector:\n  name: FromCwd\n");

    const { config, source } = load({}, { execDir });

    expect(config.connector.name).toBe("FromCwd");
    expect(source).toBe(join(directory, "config.yml"));
  });

  test("config.yml beside executable is used", () => {
    const execDir = join(directory, "bin");
    mkdirSync(execDir);
    writeConfig("connector:\n  name: FromExecDir\n", join("bin", "config.yml"));

    const { config, source } = load({}, { execDir });

    expect(config.connector.name).toBe("FromExecDir");
    expect(source).toBe(join(execDir, "config.yml"));
  });

  test("empty config.yml is fine", () => {
    writeConfig("# nothing set here\n");

    const { config, warnings } = load();

    expect(config.connector.name).toBe("Citalid");
    expect(warnings).toEqual([]);
  });
});

describe("loadConfig config.yml errors", () => {
  test("syntax error names line and column", () => {
    const path = writeConfig("opencti:\n  url: http://localhost:8080\nconnector:\n  scope: [citalid\n");

    const error = loadError();

    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toMatch(new RegExp(`^${path}:\\d+:\\d+: invalid YAML: `));
    expect(error.problems[0]).not.toContain("\n");
  });

  test("syntax error reports exact position", () => {
    const path = writeConfig("citalid:\n  user: analyst\n  password: 'unterminated\n");

    const error = loadError();

    expect(error.problems).toEqual([`${path}:4:1: invalid YAML: Missing closing 'quote`]);
  });

  test("syntax error hides the password line", () => {
    writeConfig(`citalid:\n  password: '${TEST_PASSWORD}\n`);

    const error = loadError();

    expect(error.message).not.toContain(TEST_PASSWORD);
  });

  test("duplicate key is an error", () => {
    const path = writeConfig("connector:\n  name: One\n  name: Two\n");

    const error = loadError();

    expect(error.problems).toEqual([`${path}:3:3: invalid YAML: Map keys must be unique`]);
  });

  test("duplicate section is an error", () => {
    const path = writeConfig("connector:\n  name: One\nconnector:\n  name: Two\n");

    const error = loadError();

    expect(error.problems).toEqual([`${path}:3:1: invalid YAML: Map keys must be unique`]);
  });

  test("top-level list is an error", () => {
    const path = writeConfig("- opencti\n- connector\n");

    const error = loadError();

    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toStartWith(`${path}: the top level is a list, not a mapping`);
  });

  test("top-level scalar is an error", () => {
    const path = writeConfig("just some text\n");

    const error = loadError();

    expect(error.problems[0]).toStartWith(`${path}: the top level is a string ("just some text"), not a mapping`);
  });

  test("section that is no mapping fails", () => {
    const path = writeConfig("connector: Citalid\n");

    const error = loadError();

    expect(error.problems).toEqual([
      `${path}: section connector is a string ("Citalid"), so write it as a mapping of "key: value" lines`,
    ]);
  });

  test("unknown key gives a warning", () => {
    const path = writeConfig("connector:\n  nmae: Typo\n  log_level: debug\n");

    const { config, warnings } = load();

    expect(config.connector.logLevel).toBe("debug");
    expect(warnings).toEqual([
      `${path}: unknown key connector.nmae is ignored, so check its spelling against config.yml.sample`,
    ]);
  });

  test("unknown section gives a warning", () => {
    const path = writeConfig("rabbitmq:\n  host: broker\n");

    const { warnings } = load();

    expect(warnings).toEqual([
      `${path}: unknown section rabbitmq is ignored, so use opencti, connector, citalid or mq`,
    ]);
  });

  test("unreadable path fails", () => {
    mkdirSync(join(directory, "config.yml"));

    const error = loadError();

    expect(error.problems[0]).toContain("cannot read the file (EISDIR)");
  });
});

describe("loadConfig file permissions", () => {
  test("readable file with password warns", () => {
    const path = writeConfig(`citalid:\n  password: ${TEST_PASSWORD}\n`, "config.yml", 0o644);

    const { warnings } = load({ CITALID_PASSWORD: undefined });

    expect(warnings).toEqual([
      `${path} contains citalid.password and other users can access it (mode 0644), so run chmod 600 ${path}`,
    ]);
    expect(warnings.join("\n")).not.toContain(TEST_PASSWORD);
  });

  test("readable file with token warns", () => {
    const path = writeConfig(`opencti:\n  token: ${TEST_TOKEN}\n`, "config.yml", 0o640);

    const { warnings } = load();

    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("opencti.token");
    expect(warnings[0]).toContain(`chmod 600 ${path}`);
  });

  test("private file with password is silent", () => {
    writeConfig(`citalid:\n  password: ${TEST_PASSWORD}\n`, "config.yml", 0o600);

    const { warnings } = load();

    expect(warnings).toEqual([]);
  });

  test("readable file without secrets is silent", () => {
    writeConfig("connector:\n  name: Citalid\n", "config.yml", 0o644);

    const { warnings } = load();

    expect(warnings).toEqual([]);
  });
});

describe("loadConfig problems", () => {
  test("missing required settings are all listed", () => {
    const error = loadConfigError({});

    expect(error.name).toBe("ConfigError");
    expect(error.problems).toEqual([
      "OPENCTI_URL (opencti.url) is missing: set it in the environment or as opencti.url in config.yml",
      "OPENCTI_TOKEN (opencti.token) is missing: set it in the environment or as opencti.token in config.yml",
      "CONNECTOR_ID (connector.id) is missing: set it in the environment or as connector.id in config.yml",
      "CITALID_CUSTOMER_SUB_DOMAIN_URL (citalid.customer_sub_domain_url) is missing: set it in the environment or as citalid.customer_sub_domain_url in config.yml",
      "CITALID_USER (citalid.user) is missing: set it in the environment or as citalid.user in config.yml",
      "CITALID_PASSWORD (citalid.password) is missing: set it in the environment or as citalid.password in config.yml",
    ]);
    expect(error.message).toBe(error.problems.join("\n"));
  });

  test("invalid values are all listed", () => {
    const error = loadError({
      CONNECTOR_LOG_LEVEL: "trace",
      CONNECTOR_QUEUE_THRESHOLD: "abc",
      CONNECTOR_METRICS_PORT: "70000",
      MQ_USE_SSL: "maybe",
    });

    expect(error.problems).toEqual([
      'CONNECTOR_LOG_LEVEL (connector.log_level) is "trace": use debug, info, warn, warning or error',
      'CONNECTOR_QUEUE_THRESHOLD (connector.queue_threshold) is "abc": use a number of megabytes greater than 0',
      'CONNECTOR_METRICS_PORT (connector.metrics_port) is "70000": use a whole number from 1 to 65535',
      'MQ_USE_SSL (mq.use_ssl) is "maybe": use true, false, yes, no, 1 or 0',
    ]);
  });

  test("secrets never appear in problems", () => {
    writeConfig(`citalid:\n  password: 987654321\n`);

    const error = loadConfigError({
      OPENCTI_TOKEN: "ChangeMe",
      MQ_PASS: TEST_MQ_PASS,
      MQ_PORT: "abc",
      CONNECTOR_ID: "not-a-uuid",
      CITALID_USER: "analyst",
      OPENCTI_URL: TEST_PASSWORD,
    });

    expect(error.problems).toContain("OPENCTI_TOKEN (opencti.token) is ***: replace the ChangeMe placeholder with the API token of the OpenCTI user the connector runs as");
    expect(error.problems).toContain(
      "CITALID_PASSWORD (citalid.password) is ***: use text, and in config.yml put the value in quotes so that YAML does not read it as a number or a boolean",
    );
    expect(error.message).not.toContain("987654321");
    expect(error.message).not.toContain(TEST_MQ_PASS);
  });

  test("valid password is absent from problems", () => {
    const error = loadError({ CONNECTOR_LOG_LEVEL: "trace", MQ_PASS: TEST_MQ_PASS });

    expect(error.message).not.toContain(TEST_PASSWORD);
    expect(error.message).not.toContain(TEST_TOKEN);
    expect(error.message).not.toContain(TEST_MQ_PASS);
  });

  test("placeholder password is masked", () => {
    const error = loadError({ CITALID_PASSWORD: "ChangeMe" });

    expect(error.problems).toEqual([
      "CITALID_PASSWORD (citalid.password) is ***: replace the ChangeMe placeholder with your Citalid password",
    ]);
  });

  test("URL credentials are masked", () => {
    const error = loadError({ OPENCTI_URL: `https://admin:${TEST_PASSWORD}@opencti.example.org` });

    expect(error.problems).toEqual([
      'OPENCTI_URL (opencti.url) is "https://***@opencti.example.org": remove the user name and password from the URL',
    ]);
  });

  test("error carries earlier warnings", () => {
    const error = loadError({ CONNECTOR_LOG_LEVEL: '"trace"' });

    expect(error.problems).toEqual([
      'CONNECTOR_LOG_LEVEL (connector.log_level) is "trace": use debug, info, warn, warning or error',
    ]);
    expect(error.warnings).toHaveLength(1);
    expect(error.warnings[0]).toStartWith("CONNECTOR_LOG_LEVEL is wrapped in quotes");
  });
});

/** Loads with exactly `env` (no required settings added) and returns the ConfigError. */
function loadConfigError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig({ cwd: directory, env });
  } catch (error) {
    if (error instanceof ConfigError) {
      return error;
    }
    throw error;
  }
  throw new Error("expected loadConfig to throw a ConfigError");
}

describe("loadConfig interval migration", () => {
  // CITALID_INTERVAL × CONNECTOR_DURATION_PERIOD: the legacy value is used
  // only when the duration period is unset, always with a deprecation warning.
  const table: [string | undefined, string | undefined, number, string | undefined][] = [
    [undefined, undefined, DAY, undefined],
    [undefined, "PT6H", 6 * HOUR, undefined],
    [undefined, "PT0S", 0, undefined],
    ["24", undefined, DAY, MIGRATING],
    ["24", "PT6H", 6 * HOUR, USING_ONLY],
    ["24", "PT0S", 0, USING_ONLY],
  ];
  for (const [interval, period, expectedMs, expectedWarning] of table) {
    test(`interval ${interval ?? "unset"} with period ${period ?? "unset"}`, () => {
      const { config, warnings } = load({ CITALID_INTERVAL: interval, CONNECTOR_DURATION_PERIOD: period });

      expect(config.connector.durationPeriodMs).toBe(expectedMs);
      expect(warnings).toEqual(expectedWarning === undefined ? [] : [expectedWarning]);
    });
  }

  test("interval in config.yml migrates", () => {
    writeConfig("citalid:\n  interval: 12\n");

    const { config, warnings } = load();

    expect(config.connector.durationPeriodMs).toBe(12 * HOUR);
    expect(warnings).toEqual([MIGRATING]);
  });

  test("period in config.yml beats interval env", () => {
    writeConfig("connector:\n  duration_period: PT6H\n");

    const { config, warnings } = load({ CITALID_INTERVAL: "24" });

    expect(config.connector.durationPeriodMs).toBe(6 * HOUR);
    expect(warnings).toEqual([USING_ONLY]);
  });

  test("invalid interval is ignored when period is set", () => {
    const { config, warnings } = load({ CITALID_INTERVAL: "abc", CONNECTOR_DURATION_PERIOD: "PT1H" });

    expect(config.connector.durationPeriodMs).toBe(HOUR);
    expect(warnings).toEqual([USING_ONLY]);
  });
});

describe("loadConfig duration inputs", () => {
  // Inputs that broke interval parsing in other OpenCTI connectors, for
  // CONNECTOR_DURATION_PERIOD (ISO 8601) and CITALID_INTERVAL (hours).
  const periodTable: [string, number | string][] = [
    ["24", "a bare number has no unit. Write PT24H for 24 hours"],
    ["0.5", "Write PT0.5H for 0.5 hours"],
    ["0", 0],
    ["-1", "negative durations are not allowed"],
    ["", DAY],
    ["abc", "use an ISO 8601 duration"],
    ["PT1H", HOUR],
    ["P1D", DAY],
    ["PT0S", 0],
    ["P1Y", 365 * DAY],
  ];
  for (const [text, expected] of periodTable) {
    test(`period ${JSON.stringify(text)}`, () => {
      if (typeof expected === "number") {
        expect(load({ CONNECTOR_DURATION_PERIOD: text }).config.connector.durationPeriodMs).toBe(expected);
        return;
      }

      const error = loadError({ CONNECTOR_DURATION_PERIOD: text });
      expect(error.problems).toHaveLength(1);
      expect(error.problems[0]).toStartWith(
        `CONNECTOR_DURATION_PERIOD (connector.duration_period) is ${JSON.stringify(text)}: `,
      );
      expect(error.problems[0]).toContain(expected);
    });
  }

  test("period as YAML number 24 fails", () => {
    writeConfig("connector:\n  duration_period: 24\n");

    const error = loadError();

    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toStartWith("CONNECTOR_DURATION_PERIOD (connector.duration_period) is 24: ");
    expect(error.problems[0]).toContain("PT24H");
  });

  test("period in months warns", () => {
    const { config, warnings } = load({ CONNECTOR_DURATION_PERIOD: "P30M" });

    expect(config.connector.durationPeriodMs).toBe(900 * DAY);
    expect(warnings).toEqual([
      'CONNECTOR_DURATION_PERIOD (connector.duration_period) is "P30M", which counts months (M before T), so write PT30M for 30 minute(s)',
    ]);
  });

  test("period under a minute warns", () => {
    const { config, warnings } = load({ CONNECTOR_DURATION_PERIOD: "PT30S" });

    expect(config.connector.durationPeriodMs).toBe(30_000);
    expect(warnings).toEqual([
      'CONNECTOR_DURATION_PERIOD (connector.duration_period) is "PT30S", a run every 30 s, which logs in to Citalid at that rate: use PT1H or more unless this is a test',
    ]);
  });

  test.each(["PT1M", "PT0S"])("period %p does not warn", (period) => {
    expect(load({ CONNECTOR_DURATION_PERIOD: period }).warnings).toEqual([]);
  });

  const intervalTable: [string, number | string | undefined][] = [
    ["24", DAY],
    ["0.5", "CONNECTOR_DURATION_PERIOD=PT0.5H"],
    ["0", 0],
    ["-1", "negative intervals are not allowed"],
    ["", undefined],
    ["abc", "use a whole number of hours"],
    ["PT1H", "CONNECTOR_DURATION_PERIOD=PT1H"],
    ["P1D", "CONNECTOR_DURATION_PERIOD=P1D"],
    ["PT0S", "CONNECTOR_DURATION_PERIOD=PT0S"],
    ["P1Y", "CONNECTOR_DURATION_PERIOD=P1Y"],
  ];
  for (const [text, expected] of intervalTable) {
    test(`interval ${JSON.stringify(text)}`, () => {
      if (expected === undefined) {
        const { config, warnings } = load({ CITALID_INTERVAL: text });
        expect(config.connector.durationPeriodMs).toBe(DAY);
        expect(warnings).toEqual([]);
        return;
      }
      if (typeof expected === "number") {
        const { config, warnings } = load({ CITALID_INTERVAL: text });
        expect(config.connector.durationPeriodMs).toBe(expected);
        expect(warnings).toEqual([MIGRATING]);
        return;
      }

      const error = loadError({ CITALID_INTERVAL: text });
      expect(error.problems).toHaveLength(1);
      expect(error.problems[0]).toStartWith(`CITALID_INTERVAL (citalid.interval) is ${JSON.stringify(text)}: `);
      expect(error.problems[0]).toContain(expected);
    });
  }

  test("interval as YAML number 24 migrates", () => {
    writeConfig("citalid:\n  interval: 24\n");

    const { config, warnings } = load();

    expect(config.connector.durationPeriodMs).toBe(DAY);
    expect(warnings).toEqual([MIGRATING]);
  });

  test("interval as YAML number 0.5 fails", () => {
    writeConfig("citalid:\n  interval: 0.5\n");

    const error = loadError();

    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toStartWith("CITALID_INTERVAL (citalid.interval) is 0.5: ");
  });
});

describe("loadConfig log level", () => {
  const table: [string | undefined, LogLevel][] = [
    [undefined, "info"],
    ["info", "info"],
    ["INFO", "info"],
    ['"info"', "info"],
    ["warn", "warn"],
    ["warning", "warn"],
    ["WARNING", "warn"],
    ["", "info"],
    ["Debug", "debug"],
    ["error", "error"],
  ];
  for (const [text, expected] of table) {
    test(`level ${text === undefined ? "unset" : JSON.stringify(text)} is ${expected}`, () => {
      expect(load({ CONNECTOR_LOG_LEVEL: text }).config.connector.logLevel).toBe(expected);
    });
  }

  test("quoted level warns", () => {
    const { warnings } = load({ CONNECTOR_LOG_LEVEL: '"info"' });

    expect(warnings).toEqual([
      "CONNECTOR_LOG_LEVEL is wrapped in quotes, which were removed, so in a docker-compose list entry (- NAME=value) write the value without quotes",
    ]);
  });

  test("level trace fails", () => {
    const error = loadError({ CONNECTOR_LOG_LEVEL: "trace" });

    expect(error.problems).toEqual([
      'CONNECTOR_LOG_LEVEL (connector.log_level) is "trace": use debug, info, warn, warning or error',
    ]);
  });
});

describe("loadConfig connector id", () => {
  test("ChangeMe is rejected", () => {
    const error = loadError({ CONNECTOR_ID: "ChangeMe" });

    expect(error.problems).toEqual([
      'CONNECTOR_ID (connector.id) is "ChangeMe": replace the ChangeMe placeholder, and use a UUID of your own for this deployment, generated with uuidgen',
    ]);
  });

  const invalid = [
    "not-a-uuid",
    "5f0c3a4e8b1d4c2e9a7f3d6b2e1c0a9f",
    "00000000-0000-0000-0000-000000000000",
    "5f0c3a4e-8b1d-4c2e-ca7f-3d6b2e1c0a9f",
    "5f0c3a4e-8b1d-0c2e-9a7f-3d6b2e1c0a9f",
    "{5f0c3a4e-8b1d-4c2e-9a7f-3d6b2e1c0a9f}",
  ];
  for (const id of invalid) {
    test(`id ${id} is rejected`, () => {
      const error = loadError({ CONNECTOR_ID: id });

      expect(error.problems).toEqual([
        `CONNECTOR_ID (connector.id) is ${JSON.stringify(id)}: use a UUID of your own for this deployment, generated with uuidgen`,
      ]);
    });
  }

  test("Python default warns", () => {
    const { config, warnings } = load({ CONNECTOR_ID: PYTHON_DEFAULT_ID });

    expect(config.connector.id).toBe(PYTHON_DEFAULT_ID);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toStartWith(`CONNECTOR_ID (connector.id) is ${PYTHON_DEFAULT_ID}, the Python connector's built-in default`);
    expect(warnings[0]).toContain("uuidgen");
  });

  test("Python default in uppercase warns", () => {
    const { warnings } = load({ CONNECTOR_ID: PYTHON_DEFAULT_ID.toUpperCase() });

    expect(warnings).toHaveLength(1);
  });

  test("v4 id is accepted silently", () => {
    const { config, warnings } = load({ CONNECTOR_ID: CONNECTOR_ID });

    expect(config.connector.id).toBe(CONNECTOR_ID);
    expect(warnings).toEqual([]);
  });

  test("uppercase id is kept as given", () => {
    const { config, warnings } = load({ CONNECTOR_ID: CONNECTOR_ID.toUpperCase() });

    expect(config.connector.id).toBe(CONNECTOR_ID.toUpperCase());
    expect(warnings).toEqual([]);
  });

  test("v1 and v7 ids are accepted", () => {
    for (const id of ["6ba7b810-9dad-11d1-80b4-00c04fd430c8", "01890a5d-ac96-774b-bcce-b302099a8057"]) {
      expect(load({ CONNECTOR_ID: id }).config.connector.id).toBe(id);
    }
  });
});

describe("loadConfig OpenCTI URL", () => {
  const valid: [string, string][] = [
    ["http://localhost:8080", "http://localhost:8080"],
    ["http://localhost:8080/", "http://localhost:8080"],
    ["http://localhost:8080///", "http://localhost:8080"],
    ["https://opencti.example.org/opencti", "https://opencti.example.org/opencti"],
    ["https://opencti.example.org/opencti/", "https://opencti.example.org/opencti"],
    ["HTTPS://OpenCTI.Example.org:443/", "https://opencti.example.org"],
    ["http://opencti:4000", "http://opencti:4000"],
    [" http://localhost:8080 ", "http://localhost:8080"],
  ];
  for (const [text, expected] of valid) {
    test(`url ${JSON.stringify(text)} gives ${expected}`, () => {
      expect(load({ OPENCTI_URL: text }).config.opencti.url).toBe(expected);
    });
  }

  test("url without scheme suggests https", () => {
    const error = loadError({ OPENCTI_URL: "opencti.example.org" });

    expect(error.problems).toEqual([
      'OPENCTI_URL (opencti.url) is "opencti.example.org": the URL has no scheme, so write https://opencti.example.org, or http:// for a platform without TLS',
    ]);
  });

  test("url with port but no scheme fails", () => {
    const error = loadError({ OPENCTI_URL: "localhost:8080" });

    expect(error.problems[0]).toContain("write https://localhost:8080");
  });

  test("url with other scheme fails", () => {
    const error = loadError({ OPENCTI_URL: "ftp://opencti.example.org" });

    expect(error.problems).toEqual([
      'OPENCTI_URL (opencti.url) is "ftp://opencti.example.org": ftp:// is not supported, so use an http:// or https:// URL such as http://localhost:8080',
    ]);
  });

  test("url with query fails", () => {
    const error = loadError({ OPENCTI_URL: "https://opencti.example.org/?x=1" });

    expect(error.problems[0]).toContain("remove the query");
  });

  for (const text of ["http://open cti:8080", "http://open!cti:8080"]) {
    test(`url ${JSON.stringify(text)} fails`, () => {
      const error = loadError({ OPENCTI_URL: text });

      expect(error.problems[0]).toContain("with a host name");
    });
  }

  test("url with IPv6 host is kept", () => {
    expect(load({ OPENCTI_URL: "http://[::1]:8080/" }).config.opencti.url).toBe("http://[::1]:8080");
  });

  test("url without host fails", () => {
    const error = loadError({ OPENCTI_URL: "https://" });

    expect(error.problems[0]).toContain("with a host name");
  });

  for (const quoted of ['"http://localhost:8080/"', "'http://localhost:8080/'"]) {
    test(`url ${quoted} loses its quotes`, () => {
      const { config, warnings } = load({ OPENCTI_URL: quoted });

      expect(config.opencti.url).toBe("http://localhost:8080");
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toStartWith("OPENCTI_URL is wrapped in quotes");
    });
  }
});

describe("loadConfig Citalid URL", () => {
  const valid: [string, string][] = [
    ["acme.citalid.com", "https://acme.citalid.com"],
    ["acme.citalid.com/", "https://acme.citalid.com"],
    ["https://acme.citalid.com", "https://acme.citalid.com"],
    ["https://acme.citalid.com/", "https://acme.citalid.com"],
    ["https://acme.citalid.com/base/", "https://acme.citalid.com/base"],
    ["http://127.0.0.1:8443/", "http://127.0.0.1:8443"],
    ["acme.citalid.com:8443", "https://acme.citalid.com:8443"],
  ];
  for (const [text, expected] of valid) {
    test(`url ${JSON.stringify(text)} gives ${expected}`, () => {
      const { config, warnings } = load({ CITALID_CUSTOMER_SUB_DOMAIN_URL: text });

      expect(config.citalid.url).toBe(expected);
      expect(warnings).toEqual([]);
    });
  }

  test("http url is kept with a warning", () => {
    const { config, warnings } = load({ CITALID_CUSTOMER_SUB_DOMAIN_URL: "http://acme.citalid.com/" });

    expect(config.citalid.url).toBe("http://acme.citalid.com");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("so use https://");
  });

  test("url with other scheme fails", () => {
    const error = loadError({ CITALID_CUSTOMER_SUB_DOMAIN_URL: "ftp://acme.citalid.com" });

    expect(error.problems).toEqual([
      'CITALID_CUSTOMER_SUB_DOMAIN_URL (citalid.customer_sub_domain_url) is "ftp://acme.citalid.com": ftp:// is not supported, so use an http:// or https:// URL such as https://<customer>.citalid.com',
    ]);
  });

  test("ChangeMe url fails", () => {
    const error = loadError({ CITALID_CUSTOMER_SUB_DOMAIN_URL: "ChangeMe" });

    expect(error.problems[0]).toContain("replace the ChangeMe placeholder");
  });

  test("quoted url loses its quotes", () => {
    const { config, warnings } = load({ CITALID_CUSTOMER_SUB_DOMAIN_URL: "'https://acme.citalid.com/'" });

    expect(config.citalid.url).toBe("https://acme.citalid.com");
    expect(warnings).toEqual([
      "CITALID_CUSTOMER_SUB_DOMAIN_URL is wrapped in quotes, which were removed, so in a docker-compose list entry (- NAME=value) write the value without quotes",
    ]);
  });

  test("quotes in config.yml values are kept", () => {
    writeConfig(`citalid:\n  customer_sub_domain_url: "'acme.citalid.com'"\n`);

    const error = loadError({ CITALID_CUSTOMER_SUB_DOMAIN_URL: undefined });

    expect(error.problems).toEqual([
      `CITALID_CUSTOMER_SUB_DOMAIN_URL (citalid.customer_sub_domain_url) is "'acme.citalid.com'": remove the quotes around the URL`,
    ]);
  });
});

describe("loadConfig quotes", () => {
  const unchanged = ['"', "'", "\"analyst'", 'ana"lyst"', "analyst'"];
  for (const text of unchanged) {
    test(`value ${text} keeps its quotes`, () => {
      const { config, warnings } = load({ CITALID_USER: text });

      expect(warnings).toEqual([]);
      expect(config.citalid.user).toBe(text);
    });
  }

  test("only one pair is removed", () => {
    const { config } = load({ CONNECTOR_NAME: `"'Citalid'"` });

    expect(config.connector.name).toBe("'Citalid'");
  });

  test("quoted empty value counts as unset", () => {
    const { config } = load({ CONNECTOR_NAME: '""' });

    expect(config.connector.name).toBe("Citalid");
  });

  test("quoted secret is not shown", () => {
    const { config, warnings } = load({ CITALID_PASSWORD: `'${TEST_PASSWORD}'` });

    expect(config.citalid.password).toBe(TEST_PASSWORD);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).not.toContain(TEST_PASSWORD);
  });
});

describe("loadConfig booleans", () => {
  const table: [string, boolean][] = [
    ["true", true],
    ["TRUE", true],
    ["Yes", true],
    ["1", true],
    ["false", false],
    ["False", false],
    ["NO", false],
    ["0", false],
  ];
  for (const [text, expected] of table) {
    test(`boolean ${JSON.stringify(text)} is ${expected}`, () => {
      expect(load({ CONNECTOR_RUN_AND_TERMINATE: text }).config.connector.runAndTerminate).toBe(expected);
    });
  }

  for (const text of ["on", "maybe", "2", "truee"]) {
    test(`boolean ${JSON.stringify(text)} is rejected`, () => {
      const error = loadError({ OPENCTI_SSL_VERIFY: text });

      expect(error.problems).toEqual([
        `OPENCTI_SSL_VERIFY (opencti.ssl_verify) is ${JSON.stringify(text)}: use true, false, yes, no, 1 or 0`,
      ]);
    });
  }

  test("YAML boolean and list are handled", () => {
    writeConfig("connector:\n  expose_metrics: yes\n  run_and_terminate: [true]\n");

    const error = loadError();

    expect(error.problems).toEqual([
      "CONNECTOR_RUN_AND_TERMINATE (connector.run_and_terminate) is [true]: use true, false, yes, no, 1 or 0",
    ]);
  });
});

describe("loadConfig numbers", () => {
  const thresholds: [string, number | undefined][] = [
    ["250", 250],
    ["0.5", 0.5],
    [" 42 ", 42],
    ["1e3", 1000],
    ["0", undefined],
    ["-5", undefined],
    ["abc", undefined],
    ["1e", undefined],
    ["NaN", undefined],
    ["Infinity", undefined],
    ["12MB", undefined],
  ];
  for (const [text, expected] of thresholds) {
    test(`threshold ${JSON.stringify(text)}`, () => {
      if (expected !== undefined) {
        expect(load({ CONNECTOR_QUEUE_THRESHOLD: text }).config.connector.queueThresholdMb).toBe(expected);
        return;
      }

      const error = loadError({ CONNECTOR_QUEUE_THRESHOLD: text });
      expect(error.problems).toEqual([
        `CONNECTOR_QUEUE_THRESHOLD (connector.queue_threshold) is ${JSON.stringify(text)}: use a number of megabytes greater than 0`,
      ]);
    });
  }

  for (const text of ["0", "65536", "80.5", "abc", "-1"]) {
    test(`port ${JSON.stringify(text)} is rejected`, () => {
      const error = loadError({ CONNECTOR_METRICS_PORT: text, MQ_PORT: text });

      expect(error.problems).toEqual([
        `CONNECTOR_METRICS_PORT (connector.metrics_port) is ${JSON.stringify(text)}: use a whole number from 1 to 65535`,
        `MQ_PORT (mq.port) is ${JSON.stringify(text)}: use a whole number from 1 to 65535`,
      ]);
    });
  }

  test("push max 0 is rejected", () => {
    const error = loadError({ CONNECTOR_PUSH_MAX_MB: "0" });

    expect(error.problems[0]).toStartWith('CONNECTOR_PUSH_MAX_MB (connector.push_max_mb) is "0": ');
  });

  test("YAML infinity is rejected", () => {
    writeConfig("connector:\n  push_max_mb: .inf\n");

    const error = loadError();

    expect(error.problems).toEqual([
      "CONNECTOR_PUSH_MAX_MB (connector.push_max_mb) is Infinity: use a number of megabytes greater than 0",
    ]);
  });
});

describe("loadConfig other settings", () => {
  test("scope list drops empty items", () => {
    expect(load({ CONNECTOR_SCOPE: " citalid , ,stix,, " }).config.connector.scope).toEqual(["citalid", "stix"]);
  });

  test("scope of only commas fails", () => {
    const error = loadError({ CONNECTOR_SCOPE: " , ," });

    expect(error.problems[0]).toContain("use a comma-separated list of names");
  });

  test("queue protocol amqp is valid", () => {
    expect(load({ CONNECTOR_QUEUE_PROTOCOL: "AMQP" }).config.connector.queueProtocol).toBe("amqp");
  });

  test("queue protocol kafka fails", () => {
    const error = loadError({ CONNECTOR_QUEUE_PROTOCOL: "kafka" });

    expect(error.problems).toEqual([
      'CONNECTOR_QUEUE_PROTOCOL (connector.queue_protocol) is "kafka": use api (stixBundlePush) or amqp (RabbitMQ)',
    ]);
  });

  test("connector type other than external import fails", () => {
    const error = loadError({ CONNECTOR_TYPE: "INTERNAL_ENRICHMENT" });

    expect(error.problems[0]).toContain("use EXTERNAL_IMPORT");
  });

  test("name of one character fails", () => {
    const error = loadError({ CONNECTOR_NAME: "C" });

    expect(error.problems).toEqual(['CONNECTOR_NAME (connector.name) is "C": use a name of at least 2 characters']);
  });

  test("metrics namespace must be a name", () => {
    const error = loadError({ CONNECTOR_METRICS_NAMESPACE: "open-cti" });

    expect(error.problems[0]).toContain("use letters, digits and underscores");
  });

  test("metrics host with scheme fails", () => {
    const error = loadError({ CONNECTOR_METRICS_HOST: "http://0.0.0.0" });

    expect(error.problems[0]).toContain("use a host name or an IP address");
  });

  test("language must be a tag", () => {
    const error = loadError({ CITALID_LANGUAGE: "en\r\nX-Injected: 1" });

    expect(error.problems[0]).toContain("use a language tag such as en or fr");
  });

});

describe("loadConfig variable names", () => {
  // Each case: a misspelt variable, and the names that its warning suggests.
  const typos: [string, string[]][] = [
    ["CONNECTOR_DURATON_PERIOD", ["CONNECTOR_DURATION_PERIOD"]],
    ["CONNECTOR_LOGLEVEL", ["CONNECTOR_LOG_LEVEL"]],
    ["OPENCTI_SSL_VERIFI", ["OPENCTI_SSL_VERIFY"]],
    ["MQ_PASSWORD", ["MQ_PASS"]],
    ["CONNECTOR_SPOOL_DIRECTORY", ["CONNECTOR_SPOOL_DIR"]],
    ["MQ_USERNAME", ["MQ_USER"]],
    ["CONNECTOR_STATE_PATH", ["CONNECTOR_STATE_FILE"]],
    ["OPENCTI_TOKN", ["OPENCTI_TOKEN"]],
    ["CONNECTOR_DURATION_PERIOD_MS", ["CONNECTOR_DURATION_PERIOD"]],
    ["CONNECTOR_PING_INTERVAL", ["CONNECTOR_PING_INTERVAL_MS"]],
    ["CONNECTOR_METRICS_POST", ["CONNECTOR_METRICS_PORT", "CONNECTOR_METRICS_HOST"]],
    ["CITALID_INTERVALL", ["CITALID_INTERVAL"]],
  ];
  for (const [variable, suggestions] of typos) {
    test(`${variable} suggests ${suggestions.join(" or ")}`, () => {
      const { warnings } = load({ [variable]: "PT1H" });

      expect(warnings).toEqual([
        `${variable} is not a known setting and is ignored: did you mean ${suggestions.join(" or ")}?`,
      ]);
    });
  }

  // Known names, a test timing, and variables of the platform's container
  // and of pycti that share a prefix with this connector's variables.
  const silent = [
    "CONNECTOR_DURATION_PERIOD",
    "CONNECTOR_RETRY_DELAY_MS",
    "CONNECTOR_PROGRESS_INTERVAL_MS",
    "OPENCTI_ADMIN_EMAIL",
    "OPENCTI_BASE_URL",
    "OPENCTI_ADMIN_TOKEN",
    "OPENCTI_PORT",
    "CONNECTOR_CONFIDENCE_LEVEL",
    "CONNECTOR_AUTO",
    "MQ_USE_SSL_CA",
  ];
  for (const variable of silent) {
    test(`${variable} is silent`, () => {
      const { warnings } = load({ [variable]: "PT1H" });

      expect(warnings).toEqual([]);
    });
  }

  test("misspelt period keeps the default", () => {
    const { config } = load({ CONNECTOR_DURATON_PERIOD: "PT1H" });

    expect(config.connector.durationPeriodMs).toBe(DAY);
  });

  test("unknown CITALID variable warns", () => {
    const { warnings } = load({ CITALID_PROXY: "http://proxy:3128" });

    expect(warnings).toEqual([
      "CITALID_PROXY is not a known setting and is ignored, so check its spelling against config.yml.sample",
    ]);
  });

  test("misspelt secret hides its value", () => {
    const { warnings } = load({ MQ_PASSWORD: TEST_MQ_PASS });

    expect(warnings).toHaveLength(1);
    expect(warnings[0]).not.toContain(TEST_MQ_PASS);
  });

  test("misspelt required variable explains the error", () => {
    const error = loadError({ OPENCTI_TOKEN: undefined, OPENCTI_TOKN: TEST_TOKEN });

    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toStartWith("OPENCTI_TOKEN (opencti.token) is missing");
    expect(error.warnings).toEqual([
      "OPENCTI_TOKN is not a known setting and is ignored: did you mean OPENCTI_TOKEN?",
    ]);
  });
});

describe("loadConfig state file", () => {
  test("defaults to cwd", () => {
    expect(load().config.connector.stateFile).toBe(join(directory, "state.json"));
  });

  test("defaults to STATE_DIRECTORY", () => {
    const { config } = load({ STATE_DIRECTORY: "/var/lib/citalid-connector" });

    expect(config.connector.stateFile).toBe("/var/lib/citalid-connector/state.json");
  });

  test("uses first STATE_DIRECTORY entry", () => {
    const { config } = load({ STATE_DIRECTORY: "/var/lib/citalid-connector:/var/lib/other" });

    expect(config.connector.stateFile).toBe("/var/lib/citalid-connector/state.json");
  });

  test("explicit file beats STATE_DIRECTORY", () => {
    const { config } = load({ STATE_DIRECTORY: "/var/lib/citalid-connector", CONNECTOR_STATE_FILE: "/srv/state.json" });

    expect(config.connector.stateFile).toBe("/srv/state.json");
  });

  test("relative file resolves against cwd", () => {
    const { config } = load({ CONNECTOR_STATE_FILE: "./data/state.json" });

    expect(config.connector.stateFile).toBe(join(directory, "data", "state.json"));
  });
});

describe("loadConfig spool folder", () => {
  test("defaults to the state file's folder", () => {
    const { config } = load({ CONNECTOR_STATE_FILE: "/srv/citalid/state.json" });

    expect(config.connector.spoolDir).toBe("/srv/citalid");
  });

  test("follows STATE_DIRECTORY", () => {
    const { config } = load({ STATE_DIRECTORY: "/var/lib/citalid-connector" });

    expect(config.connector.spoolDir).toBe("/var/lib/citalid-connector");
  });

  test("CONNECTOR_SPOOL_DIR overrides the default", () => {
    const { config } = load({ CONNECTOR_STATE_FILE: "/srv/state.json", CONNECTOR_SPOOL_DIR: "/mnt/spool" });

    expect(config.connector.spoolDir).toBe("/mnt/spool");
  });

  test("relative folder resolves against cwd", () => {
    const { config } = load({ CONNECTOR_SPOOL_DIR: "./spool" });

    expect(config.connector.spoolDir).toBe(join(directory, "spool"));
  });

  test("reads connector.spool_dir from config.yml", () => {
    writeConfig("connector:\n  spool_dir: /mnt/spool\n");

    expect(load().config.connector.spoolDir).toBe("/mnt/spool");
  });
});

describe("loadConfig CA file", () => {
  const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

  test("unset gives undefined", () => {
    expect(load().config.caFile).toBeUndefined();
  });

  test("missing file fails", () => {
    const error = loadError({ CONNECTOR_CA_FILE: "missing.pem" });

    expect(error.problems).toEqual([
      `CONNECTOR_CA_FILE (connector.ca_file) is "missing.pem": file not found at ${join(directory, "missing.pem")}, so check the path of the PEM file`,
    ]);
  });

  test("file without certificate fails", () => {
    writeFileSync(join(directory, "ca.pem"), "not a certificate\n");

    const error = loadError({ CONNECTOR_CA_FILE: "ca.pem" });

    expect(error.problems[0]).toContain("contains no PEM certificate");
  });

  test("falls back to NODE_EXTRA_CA_CERTS", () => {
    const path = join(directory, "extra.pem");
    writeFileSync(path, pem);

    expect(load({ NODE_EXTRA_CA_CERTS: path }).config.caFile).toBe(path);
  });

  test("CONNECTOR_CA_FILE beats NODE_EXTRA_CA_CERTS", () => {
    const path = join(directory, "ca.pem");
    writeFileSync(path, pem);

    expect(load({ CONNECTOR_CA_FILE: path, NODE_EXTRA_CA_CERTS: "/missing.pem" }).config.caFile).toBe(path);
  });

  test("missing NODE_EXTRA_CA_CERTS is named", () => {
    const error = loadError({ NODE_EXTRA_CA_CERTS: "/missing/extra.pem" });

    expect(error.problems).toEqual([
      'NODE_EXTRA_CA_CERTS (used as connector.ca_file) is "/missing/extra.pem": file not found at /missing/extra.pem, so check the path of the PEM file',
    ]);
  });
});

describe("loadConfig logger", () => {
  test("logs warnings and masks secrets", () => {
    const lines: string[] = [];
    const logger = createLogger({ json: false, journald: false, write: (line) => lines.push(line) });

    load({ CONNECTOR_ID: PYTHON_DEFAULT_ID }, { logger });
    logger.info(`password is ${TEST_PASSWORD} and token is ${TEST_TOKEN}`);

    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain("WARNING");
    expect(lines[0]).toContain("the Python connector's built-in default");
    expect(lines[1]).toContain("password is *** and token is ***");
  });

  test("logs warnings before throwing", () => {
    const lines: string[] = [];
    const logger = createLogger({ json: false, journald: false, write: (line) => lines.push(line) });

    expect(() => load({ CONNECTOR_LOG_LEVEL: "'trace'" }, { logger })).toThrow(ConfigError);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("CONNECTOR_LOG_LEVEL is wrapped in quotes");
  });
});

describe("config.yml.sample", () => {
  const samplePath = join(import.meta.dir, "..", "config.yml.sample");
  const sample = readFileSync(samplePath, "utf8");

  // Every variable of the connector, so that a new setting cannot be left out of the sample.
  const variables = [
    "OPENCTI_URL",
    "OPENCTI_TOKEN",
    "OPENCTI_SSL_VERIFY",
    "OPENCTI_JSON_LOGGING",
    "CONNECTOR_ID",
    "CONNECTOR_TYPE",
    "CONNECTOR_NAME",
    "CONNECTOR_SCOPE",
    "CONNECTOR_RUN_AND_TERMINATE",
    "CONNECTOR_LOG_LEVEL",
    "CONNECTOR_DURATION_PERIOD",
    "CONNECTOR_QUEUE_THRESHOLD",
    "CONNECTOR_QUEUE_PROTOCOL",
    "CONNECTOR_STATE_FILE",
    "CONNECTOR_SPOOL_DIR",
    "CONNECTOR_PUSH_MAX_MB",
    "CONNECTOR_EXPOSE_METRICS",
    "CONNECTOR_METRICS_PORT",
    "CONNECTOR_METRICS_HOST",
    "CONNECTOR_METRICS_NAMESPACE",
    "CONNECTOR_METRICS_SUBSYSTEM",
    "CONNECTOR_CA_FILE",
    "CITALID_CUSTOMER_SUB_DOMAIN_URL",
    "CITALID_USER",
    "CITALID_PASSWORD",
    "CITALID_LANGUAGE",
    "CITALID_INTERVAL",
    "MQ_HOST",
    "MQ_PORT",
    "MQ_VHOST",
    "MQ_USE_SSL",
    "MQ_USER",
    "MQ_PASS",
    "MQ_USE_SSL_REJECT_UNAUTHORIZED",
  ];

  // The commented-out keys become real keys, so that the tests check them too.
  const uncommented = sample.replace(/^(\s+)# (\w+: )/gm, "$1$2");

  test("names every variable", () => {
    const document = parseDocument(uncommented).toJS() as Record<string, Record<string, unknown>>;
    const keys = Object.entries(document).flatMap(([section, values]) =>
      Object.keys(values).map((key) => `${section}_${key}`.toUpperCase()),
    );

    expect(keys.sort()).toEqual([...variables].sort());
    for (const variable of variables) {
      expect(sample).toContain(`(${variable})`);
    }
  });

  test("uncommented keys are all known", () => {
    writeConfig(uncommented);
    writeFileSync(join(directory, "ca.pem"), "-----BEGIN CERTIFICATE-----\n");

    const { warnings } = load({ CONNECTOR_CA_FILE: "ca.pem", MQ_PASS: TEST_MQ_PASS, CITALID_INTERVAL: undefined });

    expect(warnings).toEqual([USING_ONLY]);
  });

  test("values equal the defaults", () => {
    writeConfig(sample);

    const fromSample = load().config;
    rmSync(join(directory, "config.yml"));
    const fromDefaults = load().config;

    expect(fromSample).toEqual(fromDefaults);
  });

  test("placeholders are rejected", () => {
    writeConfig(sample);

    const error = loadConfigError({});

    expect(error.problems).toHaveLength(5);
    for (const problem of error.problems) {
      expect(problem).toContain("replace the ChangeMe placeholder");
    }
  });
});
