import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { createLogger, silentLogger } from "../lib/log.ts";
import { parseState, serializeState, StateFile, StateFileError, type ConnectorState } from "../lib/state.ts";

interface LogRecord {
  level: string;
  message: string;
  attributes?: { [key: string]: unknown };
}

/** Creates a logger that keeps each JSON line it writes, parsed. */
function capturingLogger() {
  const records: LogRecord[] = [];
  const logger = createLogger({ level: "debug", journald: false, write: (line) => records.push(JSON.parse(line)) });
  return { logger, records };
}

/** Runs `action` and returns the StateFileError it raises. */
function stateFileErrorOf(action: () => unknown): StateFileError {
  try {
    action();
  } catch (error) {
    if (error instanceof StateFileError) {
      return error;
    }
    throw error;
  }
  throw new Error("expected a StateFileError, but nothing was raised");
}

/** True when this user can create files in a folder of mode 0555, as root can. */
function permissionsAreBypassed(): boolean {
  const folder = mkdtempSync(join(tmpdir(), "citalid-state-probe-"));
  try {
    chmodSync(folder, 0o555);
    writeFileSync(join(folder, "probe"), "");
    return true;
  } catch {
    return false;
  } finally {
    chmodSync(folder, 0o755);
    rmSync(folder, { recursive: true, force: true });
  }
}

const VALID = '{"last_loaded_bundle_id":"20250105-2","last_run":"2025-01-06T00:00:00.000Z"}';

describe("parseState", () => {
  const cases: [string, string | null | undefined, ConnectorState | undefined, boolean][] = [
    ["null", null, undefined, false],
    ["undefined", undefined, undefined, false],
    ["an empty string", "", undefined, false],
    ["blank text", " \n", undefined, false],
    ['"null"', "null", undefined, false],
    ["an empty object", "{}", undefined, true],
    ["text that is not JSON", "not json", undefined, true],
    ["an array", "[]", undefined, true],
    ["a number", "42", undefined, true],
    ["a numeric version id", '{"last_loaded_bundle_id":123}', undefined, true],
    ["a version id without date", '{"last_loaded_bundle_id":"garbage"}', undefined, true],
    ["a version id with bad date", '{"last_loaded_bundle_id":"20250229"}', undefined, true],
    ["a numeric last_run", '{"last_loaded_bundle_id":"20250105","last_run":5}', undefined, true],
    [
      "a valid state",
      VALID,
      { last_loaded_bundle_id: "20250105-2", last_run: "2025-01-06T00:00:00.000Z" },
      false,
    ],
    ["a state with only last_run", '{"last_run":"2025-01-06T00:00:00.000Z"}', { last_run: "2025-01-06T00:00:00.000Z" }, false],
    [
      "a state with extra keys",
      '{"last_loaded_bundle_id":"20250105","custom":{"a":1},"count":3}',
      { last_loaded_bundle_id: "20250105", custom: { a: 1 }, count: 3 },
      false,
    ],
  ];

  for (const [name, raw, expected, warns] of cases) {
    test(`parses ${name}`, () => {
      const { logger, records } = capturingLogger();

      const state = parseState(raw, "platform state", logger);

      expect(state).toEqual(expected);
      expect(records.length).toBe(warns ? 1 : 0);
      if (warns) {
        expect(records[0]!.level).toBe("WARNING");
        expect(records[0]!.message).toContain("platform state");
        expect(records[0]!.attributes?.source).toBe("platform state");
      }
    });
  }
});

describe("serializeState", () => {
  test("writes null for no state", () => {
    expect(serializeState(undefined)).toBe("null");
  });

  test("writes a state as JSON", () => {
    const state = { last_loaded_bundle_id: "20250105-2", last_run: "2025-01-06T00:00:00.000Z" };

    expect(JSON.parse(serializeState(state))).toEqual(state);
  });

  test("drops an undefined version id", () => {
    const text = serializeState({ last_loaded_bundle_id: undefined, last_run: "2025-01-06T00:00:00.000Z" });

    expect(JSON.parse(text)).toEqual({ last_run: "2025-01-06T00:00:00.000Z" });
  });

  test("keeps extra keys", () => {
    const state = { last_loaded_bundle_id: "20250105", custom: [1, 2] };

    expect(JSON.parse(serializeState(state))).toEqual(state);
  });

  test("round-trips through parseState", () => {
    const state = { last_loaded_bundle_id: "20250105-2", last_run: "2025-01-06T00:00:00.000Z", other: true };

    expect(parseState(serializeState(state), "state file", silentLogger)).toEqual(state);
  });
});

describe("StateFile", () => {
  let folder: string;
  let path: string;
  const opened: StateFile[] = [];

  beforeEach(() => {
    folder = mkdtempSync(join(tmpdir(), "citalid-state-"));
    path = join(folder, "state.json");
  });

  afterEach(() => {
    for (const file of opened.splice(0)) {
      file.close();
    }
    chmodSync(folder, 0o755);
    rmSync(folder, { recursive: true, force: true });
  });

  function openStateFile(logger = silentLogger, at = path): StateFile {
    const file = new StateFile(at, logger);
    file.open();
    opened.push(file);
    return file;
  }

  test("reads back what it writes", () => {
    const file = openStateFile();
    const state = { last_loaded_bundle_id: "20250105-2", last_run: "2025-01-06T00:00:00.000Z", extra: 1 };

    file.write(state);

    expect(file.read()).toEqual(state);
  });

  test("reads undefined without a file", () => {
    expect(openStateFile().read()).toBeUndefined();
  });

  test("writes null for no state", () => {
    const file = openStateFile();

    file.write(undefined);

    expect(readFileSync(path, "utf8").trim()).toBe("null");
    expect(file.read()).toBeUndefined();
  });

  test("leaves no temporary file behind", () => {
    const file = openStateFile();

    file.write({ last_loaded_bundle_id: "20250105" });
    file.write({ last_loaded_bundle_id: "20250210" });

    expect(readdirSync(folder).toSorted()).toEqual(["state.json", "state.json.lock"]);
  });

  test("replaces the file on write", () => {
    const file = openStateFile();
    file.write({ last_loaded_bundle_id: "20250105" });
    const before = statSync(path).ino;

    file.write({ last_loaded_bundle_id: "20250210" });

    // A rename gives the path a new inode, so a reader never sees a half-written file.
    expect(statSync(path).ino).not.toBe(before);
    expect(file.read()).toEqual({ last_loaded_bundle_id: "20250210" });
  });

  test("writes with mode 0600", () => {
    const file = openStateFile();

    file.write({ last_loaded_bundle_id: "20250105" });

    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  test("tightens an existing file's mode", () => {
    writeFileSync(path, VALID, { mode: 0o644 });
    chmodSync(path, 0o644);
    const file = openStateFile();

    file.write({ last_loaded_bundle_id: "20250105" });

    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  test("moves a corrupt file aside", () => {
    writeFileSync(path, "{ not json");
    const { logger, records } = capturingLogger();
    const file = openStateFile(logger);

    const state = file.read();

    const aside = readdirSync(folder).filter((name) => name.startsWith("state.json.corrupt-"));
    const warnings = records.filter((record) => record.level === "WARNING");
    expect(state).toBeUndefined();
    expect(existsSync(path)).toBe(false);
    expect(aside).toHaveLength(1);
    expect(aside[0]).toMatch(/^state\.json\.corrupt-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/);
    expect(readFileSync(join(folder, aside[0]!), "utf8")).toBe("{ not json");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.attributes?.state_file).toBe(path);
    expect(warnings[0]!.attributes?.moved_to).toBe(join(folder, aside[0]!));
    expect(warnings[0]!.attributes?.reason).toBe("it is not JSON");
  });

  test("moves a wrong-shaped file aside", () => {
    writeFileSync(path, '{"last_loaded_bundle_id":"garbage"}');
    const file = openStateFile();

    expect(file.read()).toBeUndefined();
    expect(existsSync(path)).toBe(false);
  });

  const emptyMarkers: [string, string][] = [
    ["an empty file", ""],
    ["a null file", "null\n"],
  ];

  for (const [name, text] of emptyMarkers) {
    test(`keeps ${name} in place`, () => {
      writeFileSync(path, text);
      const { logger, records } = capturingLogger();
      const file = openStateFile(logger);

      expect(file.read()).toBeUndefined();
      expect(readFileSync(path, "utf8")).toBe(text);
      expect(records.filter((record) => record.level === "WARNING")).toEqual([]);
    });
  }

  test("names a missing folder", () => {
    const missing = join(folder, "absent");
    const file = new StateFile(join(missing, "state.json"), silentLogger);

    const error = stateFileErrorOf(() => file.open());

    expect(error.message).toContain(missing);
    expect(error.message).toContain("CONNECTOR_STATE_FILE");
  });

  // Root passes access checks through CAP_DAC_OVERRIDE, so a folder of mode
  // 0555 stays writable for it and open() cannot detect it. The case runs
  // only for users whose permissions apply.
  test.skipIf(permissionsAreBypassed())("names a read-only folder", () => {
    chmodSync(folder, 0o555);
    const file = new StateFile(path, silentLogger);

    const error = stateFileErrorOf(() => file.open());

    expect(error.message).toContain(folder);
    expect(error.message).toContain("CONNECTOR_STATE_FILE");
  });

  test("writes its pid to the lock", () => {
    openStateFile();

    expect(readFileSync(`${path}.lock`, "utf8").split(" ")[0]).toBe(String(process.pid));
  });

  test("removes the lock on close", () => {
    const file = openStateFile();

    file.close();

    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  test("rejects a lock of live process", async () => {
    const child = Bun.spawn(["sleep", "30"]);
    try {
      writeFileSync(`${path}.lock`, String(child.pid));
      const file = new StateFile(path, silentLogger);

      const error = stateFileErrorOf(() => file.open());

      expect(error.message).toContain(path);
      expect(error.message).toContain(`pid ${child.pid}`);
      expect(readFileSync(`${path}.lock`, "utf8")).toBe(String(child.pid));
    } finally {
      child.kill();
      await child.exited;
    }
  });

  test("rejects a lock with matching start time", async () => {
    const child = Bun.spawn(["sleep", "30"]);
    try {
      const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8");
      const started = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
      writeFileSync(`${path}.lock`, `${child.pid} ${started}`);
      const file = new StateFile(path, silentLogger);

      const error = stateFileErrorOf(() => file.open());

      expect(error.message).toContain(`pid ${child.pid}`);
    } finally {
      child.kill();
      await child.exited;
    }
  });

  test("takes over a lock of a reused pid", async () => {
    const child = Bun.spawn(["sleep", "30"]);
    try {
      // The pid is alive, but the lock recorded another start time: the
      // program now behind the pid is not the connector that wrote the lock.
      writeFileSync(`${path}.lock`, `${child.pid} 1`);
      const file = new StateFile(path, silentLogger);

      file.open();

      expect(readFileSync(`${path}.lock`, "utf8").split(" ")[0]).toBe(String(process.pid));
      file.close();
    } finally {
      child.kill();
      await child.exited;
    }
  });

  test("takes over a dead process's lock", async () => {
    const child = Bun.spawn(["true"]);
    await child.exited;
    writeFileSync(`${path}.lock`, String(child.pid));
    const { logger, records } = capturingLogger();

    openStateFile(logger);

    expect(readFileSync(`${path}.lock`, "utf8").split(" ")[0]).toBe(String(process.pid));
    expect(records.map((record) => record.attributes?.pid)).toEqual([child.pid]);
  });

  test("takes over a lock once its owner exits", async () => {
    const child = Bun.spawn(["sleep", "30"]);
    writeFileSync(`${path}.lock`, String(child.pid));
    expect(() => new StateFile(path, silentLogger).open()).toThrow(StateFileError);

    child.kill();
    await child.exited;
    openStateFile();

    expect(readFileSync(`${path}.lock`, "utf8").split(" ")[0]).toBe(String(process.pid));
  });

  test("takes over a lock without pid", () => {
    writeFileSync(`${path}.lock`, "not a pid");

    openStateFile();

    expect(readFileSync(`${path}.lock`, "utf8").split(" ")[0]).toBe(String(process.pid));
  });
});
