import { readFileSync } from "node:fs";
import { CitalidClient } from "./citalid.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import { OpenCTIClient, platformAtLeast } from "./opencti.ts";
import { compareVersionIds, hasDatePrefix } from "./versions.ts";
import { USER_AGENT } from "./version.ts";

/** One line of the check report. */
export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

/**
 * Checks the settings against both services without importing anything or
 * registering a work: logs in to Citalid and lists the versions, then asks
 * the platform for its version with the token. Prints a short report on
 * stdout and returns 0 when every check passes, 1 otherwise.
 */
export async function runCheck(config: Config, logger: Logger, write = (line: string) => process.stdout.write(line + "\n")): Promise<number> {
  const ca = config.caFile ? readFileSync(config.caFile, "utf8") : undefined;
  const results: CheckResult[] = [{ name: "configuration", ok: true, detail: "valid" }];

  const citalid = new CitalidClient({
    url: config.citalid.url,
    user: config.citalid.user,
    password: config.citalid.password,
    language: config.citalid.language,
    logger,
    userAgent: USER_AGENT,
    ca,
    retryLimit: 1,
  });
  try {
    await citalid.login();
    results.push({ name: "Citalid login", ok: true, detail: `user ${config.citalid.user} on ${config.citalid.url}` });
    const ids = (await citalid.listVersions()).filter(hasDatePrefix).sort(compareVersionIds);
    results.push({
      name: "Citalid versions",
      ok: true,
      detail: `${ids.length} version(s), newest ${ids.at(-1) ?? "none"}`,
    });
  } catch (error) {
    results.push({ name: "Citalid", ok: false, detail: (error as Error).message });
  }

  const opencti = new OpenCTIClient({
    url: config.opencti.url,
    token: config.opencti.token,
    logger,
    userAgent: USER_AGENT,
    sslVerify: config.opencti.sslVerify,
    ca,
    retryLimit: 1,
  });
  try {
    const version = await opencti.platformVersion();
    const supported = platformAtLeast(version, 6, 3);
    results.push({
      name: "OpenCTI",
      ok: supported,
      detail: supported
        ? `${opencti.endpoint} answers, token accepted, platform ${version}`
        : `platform ${version} is older than 6.3, which this connector needs`,
    });
  } catch (error) {
    results.push({ name: "OpenCTI", ok: false, detail: (error as Error).message });
  }

  for (const result of results) {
    write(`${result.ok ? "ok  " : "FAIL"}  ${result.name}: ${result.detail}`);
  }
  const failed = results.filter((result) => !result.ok).length;
  write(failed === 0 ? "All checks passed." : `${failed} check(s) failed.`);
  return failed === 0 ? 0 : 1;
}
