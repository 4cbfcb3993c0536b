import { describe, expect, test } from "bun:test";
import { DurationError, formatDuration, parseDuration } from "../lib/duration.ts";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

describe("parseDuration", () => {
  const valid: [string, number][] = [
    ["PT24H", 24 * HOUR],
    ["P1D", DAY],
    ["PT5M", 5 * MINUTE],
    ["P1DT2H", DAY + 2 * HOUR],
    ["PT1.5H", 90 * MINUTE],
    ["PT1H30M", 90 * MINUTE],
    ["PT0.5S", 500],
    ["P1W", 7 * DAY],
    ["P1M", 30 * DAY],
    ["P1Y", 365 * DAY],
    ["P1Y2M3W4DT5H6M7S", 365 * DAY + 60 * DAY + 21 * DAY + 4 * DAY + 5 * HOUR + 6 * MINUTE + 7 * SECOND],
    ["PT0S", 0],
    ["P0D", 0],
    ["0", 0],
    ["pt6h", 6 * HOUR],
    [" PT6H ", 6 * HOUR],
  ];
  for (const [text, expected] of valid) {
    test(`accepts ${JSON.stringify(text)}`, () => {
      expect(parseDuration(text)).toBe(expected);
    });
  }

  const invalid: [string, string][] = [
    ["", "empty"],
    ["   ", "empty"],
    ["abc", "ISO 8601"],
    ["-1", "negative"],
    ["-PT1H", "negative"],
    ["P", "ISO 8601"],
    ["PT", "ISO 8601"],
    ["P1DT", "ISO 8601"],
    ["P1D2H", "must follow a T"],
    ["1 day", "ISO 8601"],
    ["01:00:00", "ISO 8601"],
    ["PT1,5H", "ISO 8601"],
    ["PT1.5H30M", "only the last component"],
    ["PT0.0001S", "shorter than 1 millisecond"],
    ["P99999999999Y", "too long"],
  ];
  for (const [text, reason] of invalid) {
    test(`rejects ${JSON.stringify(text)}`, () => {
      expect(() => parseDuration(text)).toThrow(DurationError);
      expect(() => parseDuration(text)).toThrow(reason);
    });
  }

  test("rejects bare number with PT24H hint", () => {
    expect(() => parseDuration("24")).toThrow(DurationError);
    expect(() => parseDuration("24")).toThrow("PT24H");
  });

  test("rejects bare decimal with PT0.5H hint", () => {
    expect(() => parseDuration("0.5")).toThrow("PT0.5H");
  });

  test("error names value and examples", () => {
    let error: unknown;
    try {
      parseDuration("abc");
    } catch (caught) {
      error = caught;
    }

    expect(error).toBeInstanceOf(DurationError);
    const durationError = error as DurationError;
    expect(durationError.name).toBe("DurationError");
    expect(durationError.value).toBe("abc");
    expect(durationError.message).toStartWith('"abc" is not a valid duration: ');
    expect(durationError.message).toContain("PT24H");
    expect(durationError.message).toContain("P1D");
    expect(durationError.reason).not.toContain("abc");
  });

  // Inputs that broke interval parsing in other OpenCTI connectors.
  const fieldReport: [string, number | "error"][] = [
    ["24", "error"],
    ["0.5", "error"],
    ["0", 0],
    ["-1", "error"],
    ["", "error"],
    ["abc", "error"],
    ["PT1H", HOUR],
    ["P1D", DAY],
    ["PT0S", 0],
    ["P1Y", 365 * DAY],
  ];
  for (const [text, expected] of fieldReport) {
    test(`interval input ${JSON.stringify(text)} gives ${expected}`, () => {
      if (expected === "error") {
        expect(() => parseDuration(text)).toThrow(DurationError);
      } else {
        expect(parseDuration(text)).toBe(expected);
      }
    });
  }
});

describe("formatDuration", () => {
  const cases: [number, string][] = [
    [0, "PT0S"],
    [6 * HOUR, "PT6H"],
    [DAY, "P1D"],
    [DAY + 2 * HOUR, "P1DT2H"],
    [7 * DAY, "P7D"],
    [90 * MINUTE, "PT1H30M"],
    [1500, "PT1.5S"],
    [DAY + HOUR + MINUTE + SECOND + 1, "P1DT1H1M1.001S"],
  ];
  for (const [milliseconds, expected] of cases) {
    test(`formats ${milliseconds} ms as ${expected}`, () => {
      expect(formatDuration(milliseconds)).toBe(expected);
    });
  }

  test("round-trips through parseDuration", () => {
    for (const text of ["PT6H", "P1D", "P1DT2H", "PT1H30M", "PT1.5S", "P365D"]) {
      expect(formatDuration(parseDuration(text))).toBe(text);
    }
  });

  for (const milliseconds of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    test(`rejects ${milliseconds}`, () => {
      expect(() => formatDuration(milliseconds)).toThrow(RangeError);
    });
  }
});
