import { describe, expect, test } from "bun:test";

import { HELP, parseCommandLine, UsageError, type CommandLine } from "../lib/cli.ts";

const DEFAULTS: CommandLine = { configPath: undefined, once: false, check: false, version: false, help: false };

/** Runs `action` and returns the UsageError it raises. */
function usageErrorOf(action: () => unknown): UsageError {
  try {
    action();
  } catch (error) {
    if (error instanceof UsageError) {
      return error;
    }
    throw error;
  }
  throw new Error("expected a UsageError, but nothing was raised");
}

describe("parseCommandLine", () => {
  const cases: [string[], Partial<CommandLine>][] = [
    [[], {}],
    [["--config", "/etc/citalid/config.yml"], { configPath: "/etc/citalid/config.yml" }],
    [["--config=relative/config.yml"], { configPath: "relative/config.yml" }],
    [["--once"], { once: true }],
    [["--check"], { check: true }],
    [["--version"], { version: true }],
    [["--help"], { help: true }],
    [["-h"], { help: true }],
    [["--config", "c.yml", "--once", "--check"], { configPath: "c.yml", once: true, check: true }],
    [["--set-state", "20250105"], { setState: "20250105" }],
    [["--set-state=20250105-2", "--config", "c.yml"], { setState: "20250105-2", configPath: "c.yml" }],
  ];

  for (const [argv, expected] of cases) {
    test(`parses [${argv.join(" ")}]`, () => {
      expect(parseCommandLine(argv)).toEqual({ ...DEFAULTS, ...expected });
    });
  }

  const invalid: [string, string[], string][] = [
    ["an unknown option", ["--verbose"], "--verbose"],
    ["an unknown short option", ["-x"], "-x"],
    ["a positional argument", ["config.yml"], "config.yml"],
    ["--config without a value", ["--config"], "--config"],
    ["--config followed by an option", ["--config", "--once"], "--config"],
    ["a value for --once", ["--once=yes"], "--once"],
    ["--set-state without a value", ["--set-state"], "--set-state"],
  ];

  for (const [name, argv, named] of invalid) {
    test(`rejects ${name}`, () => {
      const error = usageErrorOf(() => parseCommandLine(argv));

      expect(error.message).toContain(named);
      expect(error.message).toContain("--help");
    });
  }
});

describe("parseCommandLine --set-state", () => {
  const badIds = ["none", "latest", "2025-01-05", "20251305", "20250230", "2025010"];

  for (const id of badIds) {
    test(`rejects id ${id}`, () => {
      const error = usageErrorOf(() => parseCommandLine(["--set-state", id]));

      expect(error.message).toContain(`--set-state is "${id}": expected a Citalid version id that starts with a real date YYYYMMDD`);
    });
  }

  test("rejects an id with a control character", () => {
    const error = usageErrorOf(() => parseCommandLine(["--set-state", "20250105\n"]));

    expect(error.message).toContain('--set-state is "20250105\\n": expected a Citalid version id that starts with a real date YYYYMMDD and has no control character');
  });

  for (const other of ["--once", "--check"]) {
    test(`rejects ${other} with it`, () => {
      const error = usageErrorOf(() => parseCommandLine(["--set-state", "20250105", other]));

      expect(error.message).toContain(`--set-state cannot be combined with ${other}`);
    });
  }
});

describe("HELP", () => {
  const options = ["--config PATH", "--once", "--check", "--version", "--help"];

  for (const option of options) {
    test(`lists ${option.split(" ")[0]}`, () => {
      expect(HELP).toContain(`  ${option} `);
    });
  }

  test("lists --set-state", () => {
    expect(HELP).toContain("  --set-state ID\n");
  });
});
