import { describe, expect, test } from "bun:test";

import { createLogger } from "../lib/log.ts";
import { compareVersionIds, hasDatePrefix, selectNewVersions } from "../lib/versions.ts";

/** Creates a logger that keeps each JSON line it writes, parsed. */
function capturingLogger() {
  const records: { level: string; message: string; attributes?: Record<string, unknown> }[] = [];
  const logger = createLogger({ level: "debug", journald: false, write: (line) => records.push(JSON.parse(line)) });
  return { logger, records };
}

describe("hasDatePrefix", () => {
  const cases: [string, boolean][] = [
    ["20250105", true],
    ["20250105-2", true],
    ["20250105abc", true],
    ["20240229", true],
    ["20250229", false],
    ["20251301", false],
    ["20250100", false],
    ["20250431", false],
    ["20251231", true],
    ["2025010", false],
    ["", false],
    ["abcd0105", false],
    ["2025ab05", false],
    ["v20250105", false],
    ["2025-01-05", false],
  ];

  for (const [id, expected] of cases) {
    test(`returns ${expected} for "${id}"`, () => {
      expect(hasDatePrefix(id)).toBe(expected);
    });
  }
});

describe("compareVersionIds", () => {
  // Each pair is [earlier, later].
  const ordered: [string, string][] = [
    ["20250104", "20250105"],
    ["20250104-99", "20250105-1"],
    ["20241231z", "20250101"],
    ["20250105-2", "20250105-10"],
    ["20250105", "20250105a"],
    ["20250105a", "20250105b"],
    ["20250105-9", "20250105-10a"],
    // The collator ranks these equal, and the code-unit order decides.
    ["20250105-02", "20250105-2"],
  ];

  for (const [earlier, later] of ordered) {
    test(`sorts ${earlier} before ${later}`, () => {
      expect(compareVersionIds(earlier, later)).toBeLessThan(0);
      expect(compareVersionIds(later, earlier)).toBeGreaterThan(0);
    });
  }

  test("returns 0 for equal ids", () => {
    expect(compareVersionIds("20250105-2", "20250105-2")).toBe(0);
  });
});

describe("selectNewVersions", () => {
  test("returns all oldest first without state", () => {
    const { logger } = capturingLogger();

    const selected = selectNewVersions(["20250210", "20250105-1", "20250301"], undefined, logger);

    expect(selected).toEqual(["20250105-1", "20250210", "20250301"]);
  });

  test("returns only versions after stored one", () => {
    const { logger } = capturingLogger();

    const selected = selectNewVersions(["20250105", "20250210", "20250301"], "20250210", logger);

    expect(selected).toEqual(["20250301"]);
  });

  test("never re-imports the stored version", () => {
    const { logger } = capturingLogger();

    const selected = selectNewVersions(["20250210"], "20250210", logger);

    expect(selected).toEqual([]);
  });

  test("keeps two versions of one day", () => {
    const { logger } = capturingLogger();

    const selected = selectNewVersions(["20250105-2", "20250105-1"], undefined, logger);

    expect(selected).toEqual(["20250105-1", "20250105-2"]);
  });

  test("loads later version of stored day", () => {
    const { logger } = capturingLogger();

    const selected = selectNewVersions(["20250105-1", "20250105-2", "20250105-10"], "20250105-2", logger);

    expect(selected).toEqual(["20250105-10"]);
  });

  test("accepts stored id missing from list", () => {
    const { logger } = capturingLogger();

    const selected = selectNewVersions(["20250101", "20250301"], "20250210", logger);

    expect(selected).toEqual(["20250301"]);
  });

  test("skips ids dated after tomorrow", () => {
    const { logger, records } = capturingLogger();
    const today = new Date("2026-12-04T23:30:00Z");

    const selected = selectNewVersions(["20261204", "20261205-1", "20261206", "99991231"], undefined, logger, today);

    expect(selected).toEqual(["20261204", "20261205-1"]);
    const skipped = records.filter((record) => record.message.startsWith("Skipping a Citalid version dated after tomorrow"));
    expect(skipped.map((record) => record.attributes?.version_id)).toEqual(["20261206", "99991231"]);
    expect(skipped.every((record) => record.level === "WARNING" && record.attributes?.today === "20261204")).toBe(true);
  });

  test("warns about a state dated after tomorrow", () => {
    const { logger, records } = capturingLogger();
    const today = new Date("2026-12-04T08:00:00Z");

    const selected = selectNewVersions(["20261201", "20261203"], "99991231", logger, today);

    expect(selected).toEqual([]);
    const warning = records.find((record) => record.message.startsWith("The connector state is a version dated after tomorrow"));
    expect(warning?.attributes).toEqual({ last_loaded_bundle_id: "99991231", today: "20261204" });
    expect(warning?.message).toContain("reset the connector state");
  });

  test("state of tomorrow does not warn", () => {
    const { logger, records } = capturingLogger();

    selectNewVersions(["20261205"], "20261205", logger, new Date("2026-12-04T08:00:00Z"));

    expect(records).toEqual([]);
  });

  test("sorts input in random order", () => {
    const { logger } = capturingLogger();
    const expected = [
      "20241230",
      "20250105",
      "20250105-1",
      "20250105-2",
      "20250105-10",
      "20250105a",
      "20250105b",
      "20250210",
      "20260101",
    ];

    // A fixed-seed shuffle keeps a failure reproducible.
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let round = 0; round < 20; round++) {
      const shuffled = [...expected];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      expect(selectNewVersions(shuffled, undefined, logger)).toEqual(expected);
    }
  });

  test("skips invalid ids with warning", () => {
    const { logger, records } = capturingLogger();

    const selected = selectNewVersions(["20250229", "latest", "20250105", "2025010"], undefined, logger);

    expect(selected).toEqual(["20250105"]);
    const warnings = records.filter((record) => record.level === "WARNING");
    expect(warnings.map((record) => record.attributes?.version_id)).toEqual(["20250229", "latest", "2025010"]);
  });

  test("skips ids with control characters", () => {
    const { logger, records } = capturingLogger();

    const selected = selectNewVersions(["20250307\n", "20250308\u0000x", "20250309\u007f", "20250302/../x", "20250303?x=1"], undefined, logger);

    expect(selected).toEqual(["20250302/../x", "20250303?x=1"]);
    const warnings = records.filter((record) => record.level === "WARNING");
    expect(warnings.map((record) => record.message)).toEqual(Array(3).fill("Skipping a Citalid version whose id has a control character"));
    expect(warnings.map((record) => record.attributes?.version_id)).toEqual(["20250307\n", "20250308\u0000x", "20250309\u007f"]);
  });

  test("null state returns all", () => {
    const { logger } = capturingLogger();

    expect(selectNewVersions(["20250210", "20250105"], null, logger)).toEqual(["20250105", "20250210"]);
  });

  test("logs nothing for valid ids", () => {
    const { logger, records } = capturingLogger();

    selectNewVersions(["20250105", "20250210"], undefined, logger);

    expect(records).toEqual([]);
  });

  test("removes duplicate ids", () => {
    const { logger } = capturingLogger();

    const selected = selectNewVersions(["20250210", "20250105", "20250210", "20250105"], undefined, logger);

    expect(selected).toEqual(["20250105", "20250210"]);
  });

  test("returns empty list for no ids", () => {
    const { logger } = capturingLogger();

    expect(selectNewVersions([], "20250105", logger)).toEqual([]);
  });
});
