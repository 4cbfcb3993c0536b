import { constants as fsConstants, accessSync, existsSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { CitalidClient } from "./citalid.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import { OpenCTIClient, platformAtLeast } from "./opencti.ts";
import { compareVersionIds, hasDatePrefix, isDatedInFuture } from "./versions.ts";
import { USER_AGENT } from "./version.ts";

/** One line of the check report. */
export interface CheckResult {
  name: string;
  /** `skip` is for a check that cannot run because an earlier one failed or does not apply. */
  status: "ok" | "fail" | "skip";
  detail: string;
}

/** Options of {@linkcode runCheck}. */
export interface CheckOptions {
  /** Absolute path of the config.yml that was read, or undefined when none was found. */
  source?: string;
  /** Writes one line of the report. @default a line on stdout */
  write?: (line: string) => void;
}

// One retry and short timeouts: an operator waits for the report.
const CHECK_RETRY_LIMIT = 1;
const CHECK_TIMEOUT_MS = 30_000;

/**
 * Checks the settings against both services without importing anything or
 * registering a work: validates the state file's folder, logs in to
 * Citalid and lists the versions, then queries the platform's version with
 * the token. Prints a short report on stdout, one line per check, and
 * resolves with 0 when every check passes, 1 otherwise. Each request gets
 * one retry and a timeout of 30 s per attempt.
 */
export async function runCheck(config: Config, logger: Logger, options: CheckOptions = {}): Promise<number> {
  const write = options.write ?? ((line: string) => process.stdout.write(line + "\n"));
  const ca = config.caFile ? readFileSync(config.caFile, "utf8") : undefined;
  const results: CheckResult[] = [
    {
      name: "configuration",
      status: "ok",
      detail: options.source ? `valid, read from ${options.source} and the environment` : "valid, read from the environment (no config.yml found)",
    },
    checkStateFolder(config.connector.stateFile),
    ...(await checkCitalid(config, logger, ca)),
    await checkOpenCTI(config, logger, ca),
  ];
  if (config.connector.queueProtocol === "amqp") {
    results.push({
      name: "RabbitMQ",
      status: "skip",
      detail: "not checked: the broker's address comes from registerConnector, which --check does not call",
    });
  }

  const width = Math.max(...results.map((result) => result.name.length));
  for (const result of results) {
    write(`${result.status.toUpperCase().padEnd(4)}  ${result.name.padEnd(width)}  ${logger.mask(result.detail)}`);
  }
  const failed = results.filter((result) => result.status === "fail").length;
  write(failed === 0 ? "All checks passed." : `${failed} check(s) failed.`);
  return failed === 0 ? 0 : 1;
}

/** Checks what StateFile.open checks at start-up, without taking the lock. */
function checkStateFolder(stateFile: string): CheckResult {
  const name = "state file";
  const folder = dirname(stateFile);
  if (!existsSync(folder)) {
    return {
      name,
      status: "fail",
      detail: `folder ${folder} does not exist: create it or set CONNECTOR_STATE_FILE to a path in an existing folder`,
    };
  }
  try {
    accessSync(folder, fsConstants.W_OK);
  } catch {
    return {
      name,
      status: "fail",
      detail: `folder ${folder} is not writable by this user: fix its permissions or set CONNECTOR_STATE_FILE elsewhere`,
    };
  }
  return { name, status: "ok", detail: `${stateFile} (${existsSync(stateFile) ? "exists" : "not created yet"})` };
}

async function checkCitalid(config: Config, logger: Logger, ca: string | undefined): Promise<CheckResult[]> {
  const citalid = new CitalidClient({
    url: config.citalid.url,
    user: config.citalid.user,
    password: config.citalid.password,
    language: config.citalid.language,
    logger,
    userAgent: USER_AGENT,
    ca,
    retryLimit: CHECK_RETRY_LIMIT,
    timeoutMs: CHECK_TIMEOUT_MS,
  });

  try {
    await citalid.login();
  } catch (error) {
    return [
      { name: "Citalid login", status: "fail", detail: (error as Error).message },
      { name: "Citalid versions", status: "skip", detail: "not listed because the login failed" },
    ];
  }
  const login: CheckResult = { name: "Citalid login", status: "ok", detail: `user ${config.citalid.user} on ${config.citalid.url}` };

  let ids: string[];
  try {
    ids = await citalid.listVersions();
  } catch (error) {
    return [login, { name: "Citalid versions", status: "fail", detail: (error as Error).message }];
  }
  const today = new Date();
  const dated = ids.filter(hasDatePrefix);
  const importable = dated.filter((id) => !isDatedInFuture(id, today)).sort(compareVersionIds);
  const notes: string[] = [];
  if (ids.length > dated.length) {
    notes.push(`${ids.length - dated.length} skipped because the id does not start with a YYYYMMDD date`);
  }
  if (dated.length > importable.length) {
    notes.push(`${dated.length - importable.length} skipped because dated after tomorrow`);
  }
  const newest = importable.at(-1) ?? "none";
  return [
    login,
    {
      name: "Citalid versions",
      status: "ok",
      detail: `${importable.length} version(s), newest ${newest}${notes.map((note) => `; ${note}`).join("")}`,
    },
  ];
}

async function checkOpenCTI(config: Config, logger: Logger, ca: string | undefined): Promise<CheckResult> {
  const opencti = new OpenCTIClient({
    url: config.opencti.url,
    token: config.opencti.token,
    logger,
    userAgent: USER_AGENT,
    sslVerify: config.opencti.sslVerify,
    ca,
    retryLimit: CHECK_RETRY_LIMIT,
    timeoutMs: CHECK_TIMEOUT_MS,
  });

  // OpenCTI returns `about` only to a request with a valid token, so this also checks the token.
  let version: string;
  try {
    version = await opencti.platformVersion();
  } catch (error) {
    return { name: "OpenCTI", status: "fail", detail: (error as Error).message };
  }
  if (!platformAtLeast(version, 6, 3)) {
    return {
      name: "OpenCTI",
      status: "fail",
      detail: `${opencti.endpoint} runs OpenCTI ${version}, but this connector needs 6.3 or later (stixBundlePush): upgrade the platform`,
    };
  }
  return { name: "OpenCTI", status: "ok", detail: `${opencti.endpoint} responds, token accepted, platform ${version}` };
}
