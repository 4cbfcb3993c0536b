import { describe, expect, test } from "bun:test";

import type { LogLevel } from "../lib/config.ts";
import { createLogger, type LoggerOptions } from "../lib/log.ts";

/** Creates a logger that keeps each line it writes. */
function capture(options: LoggerOptions = {}) {
  const lines: string[] = [];
  const logger = createLogger({ journald: false, ...options, write: (line) => lines.push(line) });
  return { logger, lines };
}

const LEVELS: [LogLevel, string][] = [
  ["debug", "DEBUG"],
  ["info", "INFO"],
  ["warn", "WARNING"],
  ["error", "ERROR"],
];

describe("createLogger JSON lines", () => {
  test("writes the Python helper's shape", () => {
    const { logger, lines } = capture();

    logger.info("Importing version", { version_id: "20250105-2", objects: 12 });

    const record = JSON.parse(lines[0]!);
    expect(lines).toHaveLength(1);
    expect(Object.keys(record)).toEqual(["timestamp", "level", "name", "message", "attributes"]);
    expect(new Date(record.timestamp).toISOString()).toBe(record.timestamp);
    expect(record.level).toBe("INFO");
    expect(record.name).toBe("Citalid");
    expect(record.message).toBe("Importing version");
    expect(record.attributes).toEqual({ version_id: "20250105-2", objects: 12 });
  });

  test("omits empty attributes", () => {
    const { logger, lines } = capture();

    logger.info("No attributes");
    logger.info("Empty attributes", {});

    expect(JSON.parse(lines[0]!)).not.toHaveProperty("attributes");
    expect(JSON.parse(lines[1]!)).not.toHaveProperty("attributes");
  });

  test("uses the given name", () => {
    const { logger, lines } = capture({ name: "Citalid EU" });

    logger.info("Started");

    expect(JSON.parse(lines[0]!).name).toBe("Citalid EU");
  });

  for (const [level, name] of LEVELS) {
    test(`names ${level} level ${name}`, () => {
      const { logger, lines } = capture({ level: "debug" });

      logger[level]("Message");

      expect(JSON.parse(lines[0]!).level).toBe(name);
    });
  }

  test("writes an error's message", () => {
    const { logger, lines } = capture();

    logger.error("Run failed", { error: new Error("connection refused") });

    expect(JSON.parse(lines[0]!).attributes).toEqual({ error: "connection refused" });
  });

  test("writes each call on one line", () => {
    const { logger, lines } = capture();

    logger.info("First\nsecond", { text: "a\nb" });

    expect(lines[0]).not.toContain("\n");
  });
});

describe("createLogger level filtering", () => {
  const cases: [LogLevel, string[]][] = [
    ["debug", ["DEBUG", "INFO", "WARNING", "ERROR"]],
    ["info", ["INFO", "WARNING", "ERROR"]],
    ["warn", ["WARNING", "ERROR"]],
    ["error", ["ERROR"]],
  ];

  for (const [minimum, expected] of cases) {
    test(`prints from ${minimum} up`, () => {
      const { logger, lines } = capture({ level: minimum });

      for (const [level] of LEVELS) {
        logger[level]("Message");
      }

      expect(lines.map((line) => JSON.parse(line).level)).toEqual(expected);
    });
  }

  test("defaults to info", () => {
    const { logger, lines } = capture();

    logger.debug("Hidden");
    logger.info("Shown");

    expect(lines.map((line) => JSON.parse(line).message)).toEqual(["Shown"]);
  });

  test("setLevel changes the minimum", () => {
    const { logger, lines } = capture({ level: "error" });

    logger.info("Hidden");
    logger.setLevel("debug");
    logger.debug("Shown");

    expect(lines.map((line) => JSON.parse(line).message)).toEqual(["Shown"]);
  });
});

describe("createLogger readable lines", () => {
  test("writes level, name and message", () => {
    const { logger, lines } = capture({ json: false });

    logger.warn("Queue is full", { queue_mb: 600 });

    expect(lines[0]).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z WARNING Citalid: Queue is full \{"queue_mb":600\}$/);
  });

  test("omits empty attributes", () => {
    const { logger, lines } = capture({ json: false });

    logger.info("Started");

    expect(lines[0]).toEndWith(" INFO Citalid: Started");
  });
});

describe("createLogger secrets", () => {
  const cases: [string, string][] = [
    ["a plain secret", "s3cr3t-t0ken"],
    ["a JSON-escaped secret", 'pa"ss\\word'],
    ["a URL-encoded secret", "p@ss word/1&x"],
  ];

  for (const [name, secret] of cases) {
    for (const json of [true, false]) {
      test(`masks ${name} ${json ? "in JSON" : "in text"}`, () => {
        const { logger, lines } = capture({ json });
        logger.addSecrets(secret);

        logger.info(`Login with ${secret}`, {
          password: secret,
          url: `https://citalid.example/login?password=${encodeURIComponent(secret)}`,
          nested: { list: [secret] },
        });

        const line = lines[0]!;
        expect(line).not.toContain(secret);
        expect(line).not.toContain(JSON.stringify(secret).slice(1, -1));
        expect(line).not.toContain(encodeURIComponent(secret));
        expect(line).toContain("Login with ***");
        expect(line).toContain("password=***");
      });
    }
  }

  test("keeps JSON lines valid", () => {
    const { logger, lines } = capture();
    logger.addSecrets('pa"ss\\word');

    logger.info('Value pa"ss\\word', { password: 'pa"ss\\word' });

    const record = JSON.parse(lines[0]!);
    expect(record.message).toBe("Value ***");
    expect(record.attributes).toEqual({ password: "***" });
  });

  test("masks the longer secret first", () => {
    const { logger, lines } = capture();
    logger.addSecrets("token", "token-extended");

    logger.info("token-extended");

    expect(JSON.parse(lines[0]!).message).toBe("***");
  });

  test("ignores undefined and short secrets", () => {
    const { logger, lines } = capture();
    logger.addSecrets(undefined, "", "abc");

    logger.info("abc stays readable");

    expect(JSON.parse(lines[0]!).message).toBe("abc stays readable");
  });
});

describe("createLogger journald prefix", () => {
  const priorities: [LogLevel, string][] = [
    ["debug", "<7>"],
    ["info", "<6>"],
    ["warn", "<4>"],
    ["error", "<3>"],
  ];

  for (const [level, prefix] of priorities) {
    test(`prefixes ${level} with ${prefix}`, () => {
      const { logger, lines } = capture({ level: "debug", journald: true });

      logger[level]("Message");

      expect(lines[0]!.startsWith(prefix + "{")).toBe(true);
    });
  }

  test("prefixes readable lines too", () => {
    const { logger, lines } = capture({ json: false, journald: true });

    logger.error("Run failed");

    expect(lines[0]).toStartWith("<3>");
  });

  test("adds no prefix when disabled", () => {
    const { logger, lines } = capture({ journald: false });

    logger.error("Run failed");

    expect(lines[0]).toStartWith("{");
  });
});

describe("createLogger masking", () => {
  test("masks a secret echoed in escaped form", () => {
    const lines: string[] = [];
    const logger = createLogger({ write: (line) => lines.push(line) });
    logger.addSecrets('pa"ss\\word');

    logger.error('server said {"password":"pa\\"ss\\\\word"}');

    expect(JSON.parse(lines[0]!).message).toBe('server said {"password":"***"}');
  });

  test("mask replaces secrets in plain text", () => {
    const logger = createLogger({ write: () => {} });
    logger.addSecrets("s3cret-value");

    expect(logger.mask("token s3cret-value here")).toBe("token *** here");
  });
});
