import { existsSync, readFileSync } from "node:fs";
import { CitalidClient } from "./citalid.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import { createOpenCTIClient, platformAtLeast } from "./opencti.ts";
import { SpoolFolderError, checkSpoolFolder } from "./spool.ts";
import { StateFileError, checkStateFile, stateFileProblem } from "./state.ts";
import { compareVersionIds, hasControlCharacter, hasDatePrefix, isDatedInFuture } from "./versions.ts";
import { USER_AGENT } from "./version.ts";

/** One line of the check report. */
export interface CheckResult {
  name: string;
  /** `skip` is for a check that cannot run because an earlier one failed or does not apply. */
  status: "ok" | "warn" | "fail" | "skip";
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
 * registering a work: runs the start-up checks of the state file and of
 * the spool folder, logs in to Citalid and lists the versions, then
 * queries the platform's version with the token. Prints a short report on
 * stdout, one line per check, and resolves with 0 when every check passes,
 * 1 otherwise. Each request gets one retry and a timeout of 30 s per
 * attempt.
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
    stateFileResult(config.connector.stateFile),
    spoolFolderResult(config.connector.spoolDir),
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
  const warned = results.filter((result) => result.status === "warn").length;
  if (failed > 0) {
    write(`${failed} check(s) failed.`);
  } else {
    write(warned === 0 ? "All checks passed." : `All checks passed, with ${warned} warning(s).`);
  }
  return failed === 0 ? 0 : 1;
}

// Runs the state file checks of start-up (checkStateFile), without taking the lock.
function stateFileResult(stateFile: string): CheckResult {
  const name = "state file";
  try {
    checkStateFile(stateFile);
  } catch (error) {
    if (error instanceof StateFileError) {
      return { name, status: "fail", detail: error.message };
    }
    throw error;
  }

  let problem: string | undefined;
  try {
    problem = stateFileProblem(stateFile);
  } catch (error) {
    if (error instanceof StateFileError) {
      return { name, status: "fail", detail: error.message };
    }
    throw error;
  }
  if (problem !== undefined) {
    return {
      name,
      status: "warn",
      detail: `${stateFile} is not a valid state (${problem}): start-up moves it aside to ${stateFile}.corrupt-<time> and uses the platform's state, or imports every version when the platform has none. Fix the file to keep its state, or remove it`,
    };
  }
  return { name, status: "ok", detail: `${stateFile} (${existsSync(stateFile) ? "exists" : "not created yet"})` };
}

// Runs the spool folder check of start-up (checkSpoolFolder), without removing leftover files.
function spoolFolderResult(folder: string): CheckResult {
  const name = "spool folder";
  try {
    checkSpoolFolder(folder);
  } catch (error) {
    if (error instanceof SpoolFolderError) {
      return { name, status: "fail", detail: error.message };
    }
    throw error;
  }
  return { name, status: "ok", detail: `${folder} (writable)` };
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
  const clean = ids.filter((id) => !hasControlCharacter(id));
  const dated = clean.filter(hasDatePrefix);
  const importable = dated.filter((id) => !isDatedInFuture(id, today)).sort(compareVersionIds);
  const notes: string[] = [];
  if (ids.length > clean.length) {
    notes.push(`${ids.length - clean.length} skipped because the id has a control character`);
  }
  if (clean.length > dated.length) {
    notes.push(`${clean.length - dated.length} skipped because the id does not start with a YYYYMMDD date`);
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
  const opencti = createOpenCTIClient(config, logger, ca, {
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
