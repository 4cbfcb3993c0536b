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
  ];

  for (const [name, argv, named] of invalid) {
    test(`rejects ${name}`, () => {
      const error = usageErrorOf(() => parseCommandLine(argv));

      expect(error.message).toContain(named);
      expect(error.message).toContain("--help");
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
});
