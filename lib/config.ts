import { readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import * as v from "valibot";
import { TIMING_VARIABLES } from "./timings.ts";
import { DurationError, parseDuration } from "./duration.ts";
import type { Logger } from "./log.ts";
import { suggestNames } from "./typos.ts";

/**
 * The connector's validated configuration. Every field has already been
 * parsed, defaulted and checked; nothing downstream re-validates it.
 */
export interface Config {
  opencti: {
    /** Platform base URL without a trailing slash, for example `https://opencti.example.org`. */
    url: string;
    token: string;
    /** Verify the platform's TLS certificate. @default true */
    sslVerify: boolean;
    /** JSON log lines (true) or readable lines (false). @default true */
    jsonLogging: boolean;
  };
  connector: {
    /** UUID that identifies this connector on the platform. */
    id: string;
    type: "EXTERNAL_IMPORT";
    /** @default "Citalid" */
    name: string;
    /** @default ["citalid"] */
    scope: string[];
    /** @default false */
    runAndTerminate: boolean;
    /** @default "info" */
    logLevel: LogLevel;
    /** Time between two runs in milliseconds; 0 means one run, then exit. @default 86400000 */
    durationPeriodMs: number;
    /** Push queue size in MB above which a scheduled run is postponed. @default 500 */
    queueThresholdMb: number;
    /** @default "api" */
    queueProtocol: "api" | "amqp";
    /** Absolute path of the JSON state file. */
    stateFile: string;
    /** Absolute path of the folder of the spool files. @default the state file's folder */
    spoolDir: string;
    /** Largest bundle sent in one `stixBundlePush`, in MB. @default 10 */
    pushMaxMb: number;
    /** @default false */
    exposeMetrics: boolean;
    /** @default 9095 */
    metricsPort: number;
    /** @default "127.0.0.1" */
    metricsHost: string;
    /** @default "" */
    metricsNamespace: string;
    /** @default "" */
    metricsSubsystem: string;
  };
  citalid: {
    /** Customer base URL with scheme and without a trailing slash. */
    url: string;
    user: string;
    password: string;
    /** Value of the `Accept-Language` header. @default "en" */
    language: string;
  };
  /** RabbitMQ overrides (`MQ_*`) applied to what `registerConnector` returns. */
  mq: {
    host?: string;
    port?: number;
    vhost?: string;
    useSsl?: boolean;
    user?: string;
    pass?: string;
    /** Verify the broker's TLS certificate. @default true */
    rejectUnauthorized: boolean;
  };
  /** Extra CA certificates (PEM file) trusted for both services, or undefined. */
  caFile?: string;
}

export type LogLevel = "debug" | "info" | "warn" | "error";

/** Options of {@linkcode loadConfig}. */
export interface LoadConfigOptions {
  /** Path given with `--config`, relative to `cwd`. The file must exist. */
  argvConfigPath?: string;
  /** Environment variables. @default process.env */
  env?: Record<string, string | undefined>;
  /**
   * Directory searched first for `config.yml`, and against which relative
   * paths (`--config`, state file, CA file) are resolved.
   * @default process.cwd()
   */
  cwd?: string;
  /** Directory of the executable, searched for `config.yml` after `cwd`. */
  execDir?: string;
  /**
   * Logger that receives each warning (`warn`) and, once the configuration
   * is valid, the secrets to mask (`addSecrets`).
   */
  logger?: Logger;
}

/** Result of {@linkcode loadConfig}. */
export interface LoadedConfig {
  config: Config;
  /** Problems that do not stop the connector: deprecated, unknown or risky settings. */
  warnings: string[];
  /** Absolute path of the config.yml that was read, or undefined when none was found. */
  source: string | undefined;
}

/**
 * Error raised by {@linkcode loadConfig} when settings are missing or
 * invalid. The message contains one problem per line.
 */
export class ConfigError extends Error {
  /** One line per problem, naming the variable, the config.yml key and the fix. */
  readonly problems: string[];
  /** Warnings collected before the problems were found, which may explain them. */
  readonly warnings: string[];

  constructor(problems: string[], warnings: string[] = []) {
    super(problems.join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
    this.warnings = warnings;
  }
}

/**
 * Loads the connector's configuration from config.yml and the environment,
 * which wins, then validates every setting and applies the defaults.
 *
 * config.yml is read from `argvConfigPath` (which must exist), else from
 * `<cwd>/config.yml`, else from `<execDir>/config.yml`. No file at all is
 * fine. Each variable mirrors a key by splitting at the first underscore and
 * lower-casing: `CONNECTOR_DURATION_PERIOD` is `connector.duration_period`.
 * The deprecated `CITALID_INTERVAL` (hours) is migrated to the duration
 * period, as the Python connectors-sdk does.
 *
 * @throws {ConfigError} listing every problem found: a missing `--config`
 * file, a YAML syntax error (with line and column), a missing required
 * setting or an invalid value. Secrets are shown as `***`. The warnings
 * found so far are logged and attached to the error.
 *
 * @example
 * ```ts
 * const { config, warnings } = loadConfig({ argvConfigPath: "config.yml" });
 * ```
 */
export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const cwd = resolve(options.cwd ?? process.cwd());
  const warnings: string[] = [];
  const problems: string[] = [];

  const schema = buildSchema(cwd, defaultStateFile(env, cwd));
  const knownKeys = listKnownKeys(schema);

  const source = findConfigFile(options.argvConfigPath, cwd, options.execDir);
  const fileSettings =
    source === undefined
      ? emptySettings()
      : readConfigFile(source, knownKeys, warnings, problems);
  const envSettings = readEnvironment(env, knownKeys, warnings);

  const raw = emptySettings();
  for (const section of SECTIONS) {
    raw[section] = { ...fileSettings[section], ...envSettings[section] };
  }
  const labels = new Map<string, string>();

  migrateInterval(raw, warnings, problems);
  applyCaFileFallback(raw, env, labels);

  const result = v.safeParse(schema, raw);
  if (!result.success) {
    problems.push(...describeIssues(result.issues, raw, labels));
  }
  if (!result.success || problems.length > 0) {
    logWarnings(options.logger, warnings);
    throw new ConfigError(problems, warnings);
  }

  const config = toConfig(result.output);
  warnings.push(...checkRiskySettings(config, raw));

  options.logger?.addSecrets(config.opencti.token, config.citalid.password, config.mq.pass);
  logWarnings(options.logger, warnings);
  return { config, warnings, source };
}

function logWarnings(logger: Logger | undefined, warnings: string[]): void {
  for (const warning of warnings) {
    logger?.warn(warning);
  }
}

// ---------------------------------------------------------------------------
// Settings schema
// ---------------------------------------------------------------------------

const SECTIONS = ["opencti", "connector", "citalid", "mq"] as const;
type Section = (typeof SECTIONS)[number];

/** Raw values by section and key: strings from env, any YAML value from config.yml. */
type RawSettings = Record<Section, Record<string, unknown>>;

const SECRET_KEYS = new Set(["opencti.token", "citalid.password", "mq.pass"]);

/** Prefixes of variables that this connector shares with pycti, the platform and other connectors. */
const SHARED_PREFIXES = ["CONNECTOR_", "OPENCTI_", "MQ_"];

/** Keys accepted in config.yml and the environment that the schema does not validate. */
const DEPRECATED_KEYS = ["citalid.interval"];

// The Python connector's built-in `connector.id`. All deployments that kept
// it share one registration and one connector state on the platform.
const PYTHON_DEFAULT_CONNECTOR_ID = "bfbc4966-88dd-4d2a-9ded-4c97e4bf90b5";

// Any RFC 4122 variant UUID (17th hex digit 8 to b), versions 1 to 8.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$/i;

const BOOLEAN_WORDS = new Map([
  ["true", true],
  ["yes", true],
  ["1", true],
  ["false", false],
  ["no", false],
  ["0", false],
]);

const BOOLEAN_HINT = "use true, false, yes, no, 1 or 0";
const STRING_HINT =
  "use text, and in config.yml put the value in quotes so that YAML does not read it as a number or a boolean";
const PORT_HINT = "use a whole number from 1 to 65535";
const MEGABYTES_HINT = "use a number of megabytes greater than 0";
const DURATION_HINT = "use an ISO 8601 duration such as PT24H, P1D or PT30M, or PT0S to run once";
const HOST_HINT = "use a host name or an IP address without a scheme or port, such as 127.0.0.1";
const METRIC_NAME_HINT =
  "use letters, digits and underscores, not starting with a digit, or leave it empty";
const LOG_LEVEL_HINT = "use debug, info, warn, warning or error";
const CONNECTOR_TYPE_HINT = "use EXTERNAL_IMPORT, the only type of this connector";
const QUEUE_PROTOCOL_HINT = "use api (stixBundlePush) or amqp (RabbitMQ)";
const CONNECTOR_ID_HINT = "use a UUID of your own for this deployment, generated with uuidgen";
const SCOPE_HINT = "use a comma-separated list of names such as citalid";
const LANGUAGE_HINT = "use a language tag such as en or fr";
const INTERVAL_HINT =
  "use a whole number of hours (0 runs once), or set CONNECTOR_DURATION_PERIOD to an ISO 8601 duration such as PT24H instead";

/** A setting value that failed validation. Its message states what is allowed. */
class SettingError extends Error {}

/** Wraps a parse function that throws SettingError into a valibot transformation. */
function refine<TInput, TOutput>(parse: (input: TInput) => TOutput) {
  return v.rawTransform<TInput, TOutput>(({ dataset, addIssue, NEVER }) => {
    try {
      return parse(dataset.value);
    } catch (error) {
      if (error instanceof SettingError) {
        addIssue({ message: error.message });
        return NEVER;
      }
      throw error;
    }
  });
}

function isPlaceholder(value: string): boolean {
  return value.trim().toLowerCase() === "changeme";
}

/** Text that must not be the `ChangeMe` placeholder of config.yml.sample. */
function requiredText(placeholderHint: string) {
  return v.pipe(
    v.string(STRING_HINT),
    v.check((value) => !isPlaceholder(value), placeholderHint),
  );
}

function parseBoolean(value: boolean | string | number): boolean {
  if (typeof value === "boolean") {
    return value;
  }

  const parsed = BOOLEAN_WORDS.get(String(value).trim().toLowerCase());
  if (parsed === undefined) {
    throw new SettingError(BOOLEAN_HINT);
  }
  return parsed;
}

const booleanSchema = v.pipe(
  v.union([v.boolean(), v.string(), v.number()], BOOLEAN_HINT),
  refine(parseBoolean),
);

/** Returns a schema for a finite number from a YAML number or a decimal string, so `""`, `abc` and `1e` fail. */
function numberSchema(hint: string) {
  return v.pipe(
    v.union([v.number(), v.string()], hint),
    refine((value: number | string) => {
      let parsed = NaN;
      if (typeof value === "number") {
        parsed = value;
      } else if (DECIMAL.test(value.trim())) {
        parsed = Number(value);
      }

      if (!Number.isFinite(parsed)) {
        throw new SettingError(hint);
      }
      return parsed;
    }),
  );
}

const megabytesSchema = v.pipe(numberSchema(MEGABYTES_HINT), v.gtValue(0, MEGABYTES_HINT));

const portSchema = v.pipe(
  numberSchema(PORT_HINT),
  v.integer(PORT_HINT),
  v.minValue(1, PORT_HINT),
  v.maxValue(65535, PORT_HINT),
);

const hostSchema = v.pipe(
  v.string(HOST_HINT),
  v.trim(),
  v.regex(/^[A-Za-z0-9.:%_-]+$/, HOST_HINT),
);

const metricNameSchema = v.pipe(
  v.string(METRIC_NAME_HINT),
  v.trim(),
  v.regex(/^(?:[A-Za-z_][A-Za-z0-9_]*)?$/, METRIC_NAME_HINT),
);

const logLevelSchema = v.pipe(
  v.string(LOG_LEVEL_HINT),
  v.trim(),
  v.toLowerCase(),
  v.picklist(["debug", "info", "warn", "warning", "error"], LOG_LEVEL_HINT),
  v.transform((level): LogLevel => (level === "warning" ? "warn" : level)),
);

const connectorTypeSchema = v.pipe(
  v.string(CONNECTOR_TYPE_HINT),
  v.trim(),
  v.toUpperCase(),
  v.picklist(["EXTERNAL_IMPORT"], CONNECTOR_TYPE_HINT),
);

const queueProtocolSchema = v.pipe(
  v.string(QUEUE_PROTOCOL_HINT),
  v.trim(),
  v.toLowerCase(),
  v.picklist(["api", "amqp"], QUEUE_PROTOCOL_HINT),
);

// NOTE: whether the platform compares connector ids case-insensitively is
// unverified, so the id is kept as given: a changed id starts from an empty state.
const connectorIdSchema = v.pipe(
  v.string(CONNECTOR_ID_HINT),
  v.trim(),
  v.check(
    (value) => !isPlaceholder(value),
    `replace the ChangeMe placeholder, and ${CONNECTOR_ID_HINT}`,
  ),
  v.regex(UUID, CONNECTOR_ID_HINT),
);

const nameSchema = v.pipe(
  v.string(STRING_HINT),
  v.trim(),
  v.minLength(2, "use a name of at least 2 characters"),
);

const scopeSchema = v.pipe(
  v.union([v.string(), v.array(v.string())], SCOPE_HINT),
  v.transform((value) => (typeof value === "string" ? value.split(",") : value)),
  v.transform((items) => items.map((item) => item.trim()).filter((item) => item !== "")),
  v.minLength(1, SCOPE_HINT),
);

const languageSchema = v.pipe(
  v.string(LANGUAGE_HINT),
  v.trim(),
  v.regex(/^[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*$/, LANGUAGE_HINT),
);

const durationSchema = v.pipe(
  v.union([v.string(), v.number()], DURATION_HINT),
  refine((value: string | number) => {
    try {
      return parseDuration(String(value));
    } catch (error) {
      if (error instanceof DurationError) {
        throw new SettingError(error.reason);
      }
      throw error;
    }
  }),
);

/** Parses the hours of the deprecated `citalid.interval`, which Python converts with `int()`. */
function parseIntervalHours(value: string | number): number {
  const text = String(value).trim();

  if (text.startsWith("-")) {
    throw new SettingError(`negative intervals are not allowed, so ${INTERVAL_HINT}`);
  }
  if (DECIMAL.test(text) && !/^\+?\d+$/.test(text)) {
    throw new SettingError(
      `the interval takes whole hours, so for ${text} hours set CONNECTOR_DURATION_PERIOD=PT${text}H instead`,
    );
  }
  if (/^P/i.test(text)) {
    throw new SettingError(
      `citalid.interval takes hours, not an ISO 8601 duration, so set CONNECTOR_DURATION_PERIOD=${text} instead`,
    );
  }

  const hours = /^\+?\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(hours * 3_600_000)) {
    throw new SettingError(INTERVAL_HINT);
  }
  return hours;
}

const intervalSchema = v.pipe(
  v.union([v.string(), v.number()], INTERVAL_HINT),
  refine(parseIntervalHours),
);

/**
 * Builds the schema of the raw settings. Defaults are raw values too, so
 * they go through the same parsing as values from the sources.
 */
function buildSchema(cwd: string, defaultStateFilePath: string) {
  const pathSchema = v.pipe(
    v.string(STRING_HINT),
    v.trim(),
    v.minLength(1, "use a file path"),
    v.transform((path) => resolve(cwd, path)),
  );

  const openctiUrlSchema = v.pipe(
    v.string(STRING_HINT),
    refine((text: string) =>
      parseHttpUrl(text, { addHttps: false, example: "http://localhost:8080" }),
    ),
  );

  const citalidUrlSchema = v.pipe(
    v.string(STRING_HINT),
    v.check(
      (value) => !isPlaceholder(value),
      "replace the ChangeMe placeholder with your Citalid sub-domain",
    ),
    refine((text: string) =>
      parseHttpUrl(text, { addHttps: true, example: "https://<customer>.citalid.com" }),
    ),
  );

  return v.object({
    opencti: v.object({
      url: openctiUrlSchema,
      token: requiredText(
        "replace the ChangeMe placeholder with the API token of the OpenCTI user the connector runs as",
      ),
      ssl_verify: v.optional(booleanSchema, true),
      json_logging: v.optional(booleanSchema, true),
    }),
    connector: v.object({
      id: connectorIdSchema,
      type: v.optional(connectorTypeSchema, "EXTERNAL_IMPORT"),
      name: v.optional(nameSchema, "Citalid"),
      scope: v.optional(scopeSchema, "citalid"),
      run_and_terminate: v.optional(booleanSchema, false),
      log_level: v.optional(logLevelSchema, "info"),
      duration_period: v.optional(durationSchema, "PT24H"),
      queue_threshold: v.optional(megabytesSchema, 500),
      queue_protocol: v.optional(queueProtocolSchema, "api"),
      state_file: v.optional(pathSchema, defaultStateFilePath),
      spool_dir: v.optional(pathSchema),
      push_max_mb: v.optional(megabytesSchema, 10),
      expose_metrics: v.optional(booleanSchema, false),
      metrics_port: v.optional(portSchema, 9095),
      metrics_host: v.optional(hostSchema, "127.0.0.1"),
      metrics_namespace: v.optional(metricNameSchema, ""),
      metrics_subsystem: v.optional(metricNameSchema, ""),
      ca_file: v.optional(v.pipe(pathSchema, refine(checkPemFile))),
    }),
    citalid: v.object({
      customer_sub_domain_url: citalidUrlSchema,
      user: requiredText("replace the ChangeMe placeholder with your Citalid user name"),
      password: requiredText("replace the ChangeMe placeholder with your Citalid password"),
      language: v.optional(languageSchema, "en"),
    }),
    mq: v.object({
      host: v.optional(hostSchema),
      port: v.optional(portSchema),
      vhost: v.optional(v.string(STRING_HINT)),
      use_ssl: v.optional(booleanSchema),
      user: v.optional(v.string(STRING_HINT)),
      pass: v.optional(v.string(STRING_HINT)),
      use_ssl_reject_unauthorized: v.optional(booleanSchema, true),
    }),
  });
}

type SettingsSchema = ReturnType<typeof buildSchema>;

/** Lists the keys of each section that config.yml and the environment may set. */
function listKnownKeys(schema: SettingsSchema): Record<Section, Set<string>> {
  const known = {} as Record<Section, Set<string>>;
  for (const section of SECTIONS) {
    known[section] = new Set(Object.keys(schema.entries[section].entries));
  }

  for (const key of DEPRECATED_KEYS) {
    const [section, name] = splitKey(key);
    known[section].add(name);
  }
  return known;
}

function toConfig(settings: v.InferOutput<SettingsSchema>): Config {
  const { opencti, connector, citalid, mq } = settings;
  return {
    opencti: {
      url: opencti.url,
      token: opencti.token,
      sslVerify: opencti.ssl_verify,
      jsonLogging: opencti.json_logging,
    },
    connector: {
      id: connector.id,
      type: connector.type,
      name: connector.name,
      scope: connector.scope,
      runAndTerminate: connector.run_and_terminate,
      logLevel: connector.log_level,
      durationPeriodMs: connector.duration_period,
      queueThresholdMb: connector.queue_threshold,
      queueProtocol: connector.queue_protocol,
      stateFile: connector.state_file,
      spoolDir: connector.spool_dir ?? dirname(connector.state_file),
      pushMaxMb: connector.push_max_mb,
      exposeMetrics: connector.expose_metrics,
      metricsPort: connector.metrics_port,
      metricsHost: connector.metrics_host,
      metricsNamespace: connector.metrics_namespace,
      metricsSubsystem: connector.metrics_subsystem,
    },
    citalid: {
      url: citalid.customer_sub_domain_url,
      user: citalid.user,
      password: citalid.password,
      language: citalid.language,
    },
    mq: {
      host: mq.host,
      port: mq.port,
      vhost: mq.vhost,
      useSsl: mq.use_ssl,
      user: mq.user,
      pass: mq.pass,
      rejectUnauthorized: mq.use_ssl_reject_unauthorized,
    },
    caFile: connector.ca_file,
  };
}

// ---------------------------------------------------------------------------
// Value parsers
// ---------------------------------------------------------------------------

/**
 * Normalises an http(s) URL to `scheme://host[:port][/path]` without a
 * trailing slash, so that appending `/graphql` never gives `//graphql`.
 */
function parseHttpUrl(text: string, options: { addHttps: boolean; example: string }): string {
  let candidate = text.trim();
  if (/["']/.test(candidate)) {
    throw new SettingError("remove the quotes around the URL");
  }

  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(candidate)?.[1]?.toLowerCase();

  if (scheme === undefined && options.addHttps) {
    candidate = `https://${candidate}`;
  } else if (scheme === undefined) {
    throw new SettingError(
      `the URL has no scheme, so write https://${candidate}, or http:// for a platform without TLS`,
    );
  } else if (scheme !== "http" && scheme !== "https") {
    throw new SettingError(
      `${scheme}:// is not supported, so use an http:// or https:// URL such as ${options.example}`,
    );
  }

  let url: URL;
  try {
    url = new URL(candidate);
  } catch {
    throw new SettingError(
      `use an http:// or https:// URL with a host name, such as ${options.example}`,
    );
  }

  // WHATWG URL parsing accepts host names such as `a!b` that DNS cannot resolve.
  if (!/^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])$/.test(url.hostname)) {
    throw new SettingError(
      `use an http:// or https:// URL with a host name, such as ${options.example}`,
    );
  }
  if (url.username !== "" || url.password !== "") {
    throw new SettingError("remove the user name and password from the URL");
  }
  if (candidate.includes("?") || candidate.includes("#")) {
    throw new SettingError("remove the query (?…) and the fragment (#…) from the URL");
  }
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, "")}`;
}

/** Checks that the path is a readable file that contains a PEM certificate, and returns it. */
function checkPemFile(path: string): string {
  const stats = statSync(path, { throwIfNoEntry: false });
  if (stats === undefined) {
    throw new SettingError(`file not found at ${path}, so check the path of the PEM file`);
  }
  if (!stats.isFile()) {
    throw new SettingError(`${path} is not a regular file, so use the path of a PEM file`);
  }

  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new SettingError(
      `cannot read ${path} (${errorCode(error)}), so make it readable by the connector's user`,
    );
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new SettingError(
      `${path} contains no PEM certificate (-----BEGIN CERTIFICATE-----), so use a PEM file`,
    );
  }
  return path;
}

/**
 * Returns `state.json` in the first directory of `$STATE_DIRECTORY`, which
 * systemd sets for `StateDirectory=` (a colon-separated list when several
 * are configured), or else in `cwd`.
 */
function defaultStateFile(env: Record<string, string | undefined>, cwd: string): string {
  const stateDirectory = env.STATE_DIRECTORY?.split(":").find((directory) => directory !== "");
  return resolve(cwd, stateDirectory ?? ".", "state.json");
}

// ---------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------

function emptySettings(): RawSettings {
  return { opencti: {}, connector: {}, citalid: {}, mq: {} };
}

function splitKey(key: string): [Section, string] {
  const [section, name] = key.split(".") as [Section, string];
  return [section, name];
}

/** Returns the variable that mirrors a key: `connector.log_level` gives `CONNECTOR_LOG_LEVEL`. */
function variableOf(key: string): string {
  return key.replace(".", "_").toUpperCase();
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? String(error);
}

/** Returns the absolute path of the config.yml to read, or undefined when there is none. */
function findConfigFile(
  argvConfigPath: string | undefined,
  cwd: string,
  execDir: string | undefined,
): string | undefined {
  if (argvConfigPath !== undefined) {
    const path = resolve(cwd, argvConfigPath);
    if (statSync(path, { throwIfNoEntry: false }) === undefined) {
      throw new ConfigError([
        `--config ${argvConfigPath}: file not found at ${path}, so check the path, ` +
          "or omit --config to read config.yml from the working directory",
      ]);
    }
    return path;
  }

  const candidates = [join(cwd, "config.yml")];
  if (execDir !== undefined) {
    candidates.push(resolve(cwd, execDir, "config.yml"));
  }
  return candidates.find((path) => statSync(path, { throwIfNoEntry: false }) !== undefined);
}

/**
 * Reads config.yml into raw settings. Unknown keys, and secrets in a file
 * that other users can read, add warnings. A file that cannot be read or
 * parsed, or whose top level is not a mapping, throws at once, because
 * every later check would mislead with part of the file missing.
 */
function readConfigFile(
  path: string,
  knownKeys: Record<Section, Set<string>>,
  warnings: string[],
  problems: string[],
): RawSettings {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError([
      `${path}: cannot read the file (${errorCode(error)}), so check that it is a readable file`,
    ]);
  }

  // Required here so that the yaml package loads only when there is a file
  // to read, because a loaded module stays resident in the idle process.
  const { parseDocument } = require("yaml") as typeof import("yaml");
  // The yaml package's messages quote source lines, which may contain a
  // password, so only the first line of each message is kept.
  const document = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (document.errors.length > 0) {
    throw new ConfigError(
      document.errors.map(
        (error) => `${formatYamlPosition(path, error)}: invalid YAML: ${yamlReason(error)}`,
      ),
    );
  }
  for (const warning of document.warnings) {
    warnings.push(`${formatYamlPosition(path, warning)}: ${yamlReason(warning)}`);
  }

  let contents: unknown;
  try {
    contents = document.toJS();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError([`${path}: invalid YAML: ${reason}`]);
  }
  if (contents === null || contents === undefined) {
    return emptySettings();
  }
  if (!isMapping(contents)) {
    throw new ConfigError([
      `${path}: the top level is ${describeYamlType(contents)}, not a mapping, ` +
        'so write sections such as "opencti:" and "connector:" at the top level',
    ]);
  }

  const settings = emptySettings();
  for (const [sectionName, sectionValue] of Object.entries(contents)) {
    if (!(SECTIONS as readonly string[]).includes(sectionName)) {
      warnings.push(
        `${path}: unknown section ${sectionName} is ignored, so use opencti, connector, citalid or mq`,
      );
      continue;
    }

    const section = sectionName as Section;
    if (sectionValue === null) {
      continue;
    }
    if (!isMapping(sectionValue)) {
      problems.push(
        `${path}: section ${section} is ${describeYamlType(sectionValue)}, ` +
          'so write it as a mapping of "key: value" lines',
      );
      continue;
    }

    for (const [key, value] of Object.entries(sectionValue)) {
      if (!knownKeys[section].has(key)) {
        warnings.push(
          `${path}: unknown key ${section}.${key} is ignored, so check its spelling against config.yml.sample`,
        );
        continue;
      }
      // As for the environment, null (`key:` with no value) and "" count as unset.
      if (value !== null && value !== "") {
        settings[section][key] = value;
      }
    }
  }

  const permissionWarning = checkFilePermissions(path, settings);
  if (permissionWarning !== undefined) {
    warnings.push(permissionWarning);
  }
  return settings;
}

function checkFilePermissions(path: string, settings: RawSettings): string | undefined {
  const secretKeys = [...SECRET_KEYS].filter((key) => {
    const [section, name] = splitKey(key);
    return settings[section][name] !== undefined;
  });
  const mode = statSync(path).mode;
  if (secretKeys.length === 0 || (mode & 0o077) === 0) {
    return undefined;
  }

  const octal = (mode & 0o777).toString(8).padStart(4, "0");
  return (
    `${path} contains ${secretKeys.join(", ")} and other users can access it (mode ${octal}), ` +
    `so run chmod 600 ${path}`
  );
}

/** Error or warning of the yaml package, with its position when known. */
interface YamlProblem {
  message: string;
  linePos?: { line: number; col: number }[];
}

function formatYamlPosition(path: string, problem: YamlProblem): string {
  const position = problem.linePos?.[0];
  return position ? `${path}:${position.line}:${position.col}` : path;
}

function yamlReason(problem: YamlProblem): string {
  return problem.message.replace(/ at line \d+, column \d+:[\s\S]*$/, "").split("\n")[0]!;
}

function describeYamlType(value: unknown): string {
  if (Array.isArray(value)) {
    return "a list";
  }
  return `a ${typeof value} (${JSON.stringify(value)})`;
}

/**
 * Reads the known variables from the environment, and adds a warning for each
 * variable that looks misspelt. An empty variable counts as unset, so it
 * overrides neither config.yml nor the default. pycti instead lets an empty
 * variable replace the config.yml value, but an empty `OPENCTI_TOKEN=` line
 * in a compose file is more often a leftover than an intent.
 */
function readEnvironment(
  env: Record<string, string | undefined>,
  knownKeys: Record<Section, Set<string>>,
  warnings: string[],
): RawSettings {
  const settings = emptySettings();
  // The test timings are read by the connector, so they are known names too.
  const knownVariables = new Set<string>(Object.keys(TIMING_VARIABLES));

  for (const section of SECTIONS) {
    for (const key of knownKeys[section]) {
      const variable = variableOf(`${section}.${key}`);
      knownVariables.add(variable);

      const value = stripQuotes(variable, env[variable], warnings);
      if (value !== undefined && value !== "") {
        settings[section][key] = value;
      }
    }
  }

  for (const variable of Object.keys(env)) {
    const warning = checkVariableName(variable, knownVariables);
    if (warning !== undefined) {
      warnings.push(warning);
    }
  }
  return settings;
}

/**
 * Returns a warning for a variable that looks meant for this connector but
 * is not one it reads, or undefined. An unknown `CITALID_` name always
 * warns. An unknown `CONNECTOR_`, `OPENCTI_` or `MQ_` name warns only when
 * it is close to a known one, because the platform's own container, other
 * connectors and shared env files set other variables with these prefixes.
 */
function checkVariableName(variable: string, knownVariables: Set<string>): string | undefined {
  if (knownVariables.has(variable)) {
    return undefined;
  }
  const isOwnPrefix = variable.startsWith("CITALID_");
  if (!isOwnPrefix && !SHARED_PREFIXES.some((prefix) => variable.startsWith(prefix))) {
    return undefined;
  }

  const suggestions = suggestNames(variable, knownVariables);
  if (suggestions.length > 0) {
    return `${variable} is not a known setting and is ignored: did you mean ${suggestions.join(" or ")}?`;
  }
  if (isOwnPrefix) {
    return `${variable} is not a known setting and is ignored, so check its spelling against config.yml.sample`;
  }
  return undefined;
}

/**
 * Removes one pair of matching quotes around a value. In docker-compose list
 * syntax (`- NAME="value"`) the quotes are part of the value, and Python's
 * logging module rejects such a level with `Unknown level: '"INFO"'`.
 */
function stripQuotes(variable: string, value: string | undefined, warnings: string[]) {
  if (value === undefined || value.length < 2 || !/^(["'])[\s\S]*\1$/.test(value)) {
    return value;
  }

  warnings.push(
    `${variable} is wrapped in quotes, which were removed, so in a docker-compose list entry ` +
      "(- NAME=value) write the value without quotes",
  );
  return value.slice(1, -1);
}

/**
 * Moves the deprecated `citalid.interval` (hours) to `connector.duration_period`
 * unless that is set, with the warning texts of the Python connectors-sdk.
 */
function migrateInterval(raw: RawSettings, warnings: string[], problems: string[]): void {
  const interval = raw.citalid.interval;
  if (interval === undefined) {
    return;
  }
  delete raw.citalid.interval;

  if (raw.connector.duration_period !== undefined) {
    warnings.push(
      "Deprecated setting 'citalid.interval' found. Using only 'connector.duration_period'.",
    );
    return;
  }

  const result = v.safeParse(intervalSchema, interval);
  if (!result.success) {
    problems.push(describeProblem("citalid.interval", interval, result.issues[0].message));
    return;
  }

  warnings.push(
    "Deprecated setting 'citalid.interval' found. Migrating to 'connector.duration_period'.",
  );
  raw.connector.duration_period = `PT${result.output}H`;
}

/** Uses `NODE_EXTRA_CA_CERTS`, Node's variable for extra CA certificates, when `connector.ca_file` is unset. */
function applyCaFileFallback(
  raw: RawSettings,
  env: Record<string, string | undefined>,
  labels: Map<string, string>,
): void {
  const extraCaCerts = env.NODE_EXTRA_CA_CERTS;
  if (raw.connector.ca_file === undefined && extraCaCerts !== undefined && extraCaCerts !== "") {
    raw.connector.ca_file = extraCaCerts;
    labels.set("connector.ca_file", "NODE_EXTRA_CA_CERTS (used as connector.ca_file)");
  }
}

// ---------------------------------------------------------------------------
// Problems and warnings
// ---------------------------------------------------------------------------

function describeIssues(
  issues: readonly v.BaseIssue<unknown>[],
  raw: RawSettings,
  labels: Map<string, string>,
): string[] {
  const problems = new Map<string, string>();
  for (const issue of issues) {
    const [section, name] = (issue.path ?? []).map((item) => String(item.key)) as [
      Section,
      string,
    ];
    const key = `${section}.${name}`;

    // Only the first problem of each key is reported, because later ones repeat it.
    if (!problems.has(key)) {
      const value = raw[section]?.[name];
      problems.set(key, describeProblem(key, value, issue.message, labels.get(key)));
    }
  }
  return [...problems.values()];
}

function describeProblem(key: string, value: unknown, hint: string, label?: string): string {
  const name = label ?? `${variableOf(key)} (${key})`;
  if (value === undefined) {
    return `${name} is missing: set it in the environment or as ${key} in config.yml`;
  }
  return `${name} is ${displayValue(key, value)}: ${hint}`;
}

/** Shows a raw value in a message, with secrets as `***` and URL credentials masked. */
function displayValue(key: string, value: unknown): string {
  if (SECRET_KEYS.has(key)) {
    return "***";
  }
  if (typeof value === "string") {
    const masked = key.endsWith("url") ? value.replace(/\/\/[^/@\s]*@/, "//***@") : value;
    return JSON.stringify(masked);
  }
  if (typeof value === "number" || typeof value === "boolean") {
    return String(value);
  }
  return JSON.stringify(value);
}

/** Lists warnings about valid settings that are likely mistakes. */
function checkRiskySettings(config: Config, raw: RawSettings): string[] {
  const warnings: string[] = [];

  if (config.connector.id.toLowerCase() === PYTHON_DEFAULT_CONNECTOR_ID) {
    warnings.push(
      `CONNECTOR_ID (connector.id) is ${PYTHON_DEFAULT_CONNECTOR_ID}, the Python connector's ` +
        "built-in default. Two deployments with the same id share one registration and one " +
        "connector state, so set a UUID of your own (uuidgen). A new id starts from an empty " +
        "state and imports every version again.",
    );
  }

  // In ISO 8601, M before T is months: P30M is 900 days, PT30M is 30 minutes.
  const period = raw.connector.duration_period;
  if (typeof period === "string" && /^\s*P[^T]*\dM/i.test(period)) {
    const months = /^\s*P(\d+(?:\.\d+)?)M\s*$/i.exec(period)?.[1] ?? "30";
    warnings.push(
      `CONNECTOR_DURATION_PERIOD (connector.duration_period) is ${JSON.stringify(period)}, ` +
        `which counts months (M before T), so write PT${months}M for ${months} minute(s)`,
    );
  }

  // A period of seconds is most often a typo for hours (PT1S for PT1H), and
  // it logs in to Citalid at that rate.
  const periodMs = config.connector.durationPeriodMs;
  if (periodMs > 0 && periodMs < 60_000) {
    warnings.push(
      `CONNECTOR_DURATION_PERIOD (connector.duration_period) is ${JSON.stringify(period ?? "")}, ` +
        `a run every ${periodMs / 1000} s, which logs in to Citalid at that rate: use PT1H or more unless this is a test`,
    );
  }

  const citalidUrl = new URL(config.citalid.url);
  const isLoopback = ["localhost", "127.0.0.1", "[::1]"].includes(citalidUrl.hostname);
  if (citalidUrl.protocol === "http:" && !isLoopback) {
    warnings.push(
      `CITALID_CUSTOMER_SUB_DOMAIN_URL (citalid.customer_sub_domain_url) is ` +
        `${JSON.stringify(config.citalid.url)}: with http:// the Citalid password and data ` +
        "travel unencrypted, so use https://",
    );
  }
  return warnings;
}
