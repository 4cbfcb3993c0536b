/**
 * Unit: the timing overrides that tests use, and the README's list of them.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { FatalError } from "../lib/errors.ts";
import { DEFAULT_TIMINGS, TIMING_VARIABLES, timingsFromEnv } from "../lib/timings.ts";

const README = readFileSync(join(import.meta.dir, "..", "README.md"), "utf8");

// The README's list items: `- \`NAME\`: text (default)`, joined over their lines.
function readmeTimings(): Map<string, string> {
  const items = new Map<string, string>();
  const list = README.slice(README.indexOf("Tests shorten the connector's waits"));
  for (const item of list.split(/\n(?=- )/).slice(1)) {
    const match = /^- `(CONNECTOR_[A-Z_]+_MS)`: ([^]*)$/.exec(item.split("\n\n")[0]!);
    if (match === null) {
      break;
    }
    items.set(match[1]!, match[2]!.replace(/\s+/g, " "));
  }
  return items;
}

describe("timingsFromEnv", () => {
  test("reads each variable into its timing", () => {
    const env = Object.fromEntries(Object.keys(TIMING_VARIABLES).map((name, index) => [name, String(index + 1)]));

    const timings = timingsFromEnv(env);

    Object.values(TIMING_VARIABLES).forEach((key, index) => expect(timings[key]).toBe(index + 1));
  });

  test("empty value counts as unset", () => {
    expect(timingsFromEnv({ CONNECTOR_PING_INTERVAL_MS: "" })).toEqual({});
  });

  test.each(["0", "-5", "1.5", "1s", "abc"])("value %p is rejected with its name", (raw) => {
    expect(() => timingsFromEnv({ CONNECTOR_PING_INTERVAL_MS: raw })).toThrow(FatalError);
    expect(() => timingsFromEnv({ CONNECTOR_PING_INTERVAL_MS: raw })).toThrow(
      `CONNECTOR_PING_INTERVAL_MS is "${raw}": use a whole number of milliseconds above 0`,
    );
  });

  test("value over the longest timer is rejected", () => {
    expect(timingsFromEnv({ CONNECTOR_CITALID_TIMEOUT_MS: "2147483647" })).toEqual({ citalidTimeoutMs: 2_147_483_647 });
    expect(() => timingsFromEnv({ CONNECTOR_CITALID_TIMEOUT_MS: "1e12" })).toThrow(
      'CONNECTOR_CITALID_TIMEOUT_MS is "1e12": use at most 2147483647 milliseconds (about 24.8 days), the longest timer',
    );
  });

  test("retry delay also shortens the start-up wait", () => {
    expect(timingsFromEnv({ CONNECTOR_RETRY_DELAY_MS: "20" })).toEqual({ retryDelayMs: 20, startupMaxDelayMs: 160 });
  });
});

describe("README test section", () => {
  test("lists every timing variable, and only those", () => {
    expect([...readmeTimings().keys()].sort()).toEqual(Object.keys(TIMING_VARIABLES).sort());
  });

  test.each(Object.entries(TIMING_VARIABLES))("%s shows its default", (name, key) => {
    expect(readmeTimings().get(name)).toEndWith(`(${DEFAULT_TIMINGS[key]})`);
  });
});
