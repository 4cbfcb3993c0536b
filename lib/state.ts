import { closeSync, existsSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeSync } from "node:fs";
import { constants as fsConstants, accessSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Logger } from "./log.ts";
import { isProcessAlive } from "./processes.ts";
import { hasDatePrefix } from "./versions.ts";

/**
 * The connector state, in the Python connector's shape. Keys other than
 * these two, found in a stored state, are kept as they are.
 */
export interface ConnectorState {
  /**
   * Id of the last Citalid version fully sent. Null, which the Python
   * connector stores when its first version fails, means none.
   */
  last_loaded_bundle_id?: string | null;
  /** UTC ISO 8601 time of the last run that ended without error. */
  last_run?: string;
  [key: string]: unknown;
}

/**
 * Parses a stored state string (the platform's `connector_state` or the
 * file's text). Returns undefined for "no state": `null`, `""`, `"null"`,
 * `"{}"`, invalid JSON or a wrong shape, the last three with a warning that
 * names `source`.
 */
export function parseState(raw: string | null | undefined, source: string, logger: Logger): ConnectorState | undefined {
  const { state, problem } = readStateText(raw);
  if (problem !== undefined) {
    logger.warn(`Ignoring the ${source}: ${problem}`, { source, excerpt: (raw ?? "").slice(0, 80) });
  }
  return state;
}

// Returns the state in a stored state string, or what makes it unusable.
// `null`, `""` and `"null"` give neither: they mean no state.
function readStateText(raw: string | null | undefined): { state?: ConnectorState; problem?: string } {
  if (raw === null || raw === undefined || raw.trim() === "" || raw.trim() === "null") {
    return {};
  }

  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { problem: "it is not JSON" };
  }
  const problem = stateProblem(value);
  return problem === undefined ? { state: value as ConnectorState } : { problem };
}

function stateProblem(value: unknown): string | undefined {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return `expected a JSON object, got ${Array.isArray(value) ? "an array" : value === null ? "null" : typeof value}`;
  }
  const state = value as Record<string, unknown>;
  if (Object.keys(state).length === 0) {
    return "it is an empty object";
  }
  const last = state.last_loaded_bundle_id;
  if (last !== undefined && last !== null && (typeof last !== "string" || !hasDatePrefix(last))) {
    return `last_loaded_bundle_id is ${JSON.stringify(last)}, expected a version id starting with YYYYMMDD`;
  }
  if (state.last_run !== undefined && typeof state.last_run !== "string") {
    return `last_run is ${JSON.stringify(state.last_run)}, expected a UTC ISO 8601 time`;
  }
  return undefined;
}

/**
 * Returns true when two serialised states (the platform's `connector_state`
 * or a state as sent) mean the same state. Invalid ones count as no state.
 */
export function isSameState(a: string | null, b: string | null): boolean {
  return serializeState(parseState(a, "first state", QUIET)) === serializeState(parseState(b, "second state", QUIET));
}

// A logger that prints nothing, for comparisons that must not warn.
const QUIET: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  addSecrets: () => {},
  setLevel: () => {},
  mask: (text) => text,
};

/** Serialises a state the way it is stored and sent: `"null"` for no state, as pycti does. */
export function serializeState(state: ConnectorState | undefined): string {
  if (state === undefined) {
    return "null";
  }
  const clean: ConnectorState = { ...state };
  if (clean.last_loaded_bundle_id === undefined) {
    delete clean.last_loaded_bundle_id;
  }
  return JSON.stringify(clean);
}

/**
 * The JSON state file: read at start-up, written atomically (temporary file,
 * fsync, rename, fsync of the folder) with mode 0600, and guarded by a lock
 * file so that two processes never share it.
 */
export class StateFile {
  readonly path: string;
  readonly #logger: Logger;
  #lockFd: number | undefined;
  /** Whether {@linkcode StateFile.open} removed a lock left by a process that is gone. */
  staleLockRemoved = false;

  constructor(path: string, logger: Logger) {
    this.path = path;
    this.#logger = logger;
  }

  /**
   * Runs {@linkcode checkStateFile}, then takes the lock for the life of the
   * process. Raises StateFileError with the path and the fix.
   */
  open(): void {
    checkStateFile(this.path);

    this.#lock();
  }

  /** Releases the lock. */
  close(): void {
    if (this.#lockFd !== undefined) {
      closeSync(this.#lockFd);
      this.#lockFd = undefined;
      rmSync(this.#lockPath, { force: true });
    }
  }

  /**
   * Reads the stored state. A file that is not a valid state is moved aside
   * to `<file>.corrupt-<time>` with a warning, and undefined is returned.
   */
  read(): ConnectorState | undefined {
    if (!existsSync(this.path)) {
      return undefined;
    }

    const text = readOrExplain(this.path, "State file");
    const { state, problem } = readStateText(text);
    if (problem !== undefined) {
      const aside = `${this.path}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;
      renameSync(this.path, aside);
      this.#logger.warn("State file is corrupt, moved it aside; the platform's state is used", {
        state_file: this.path,
        moved_to: aside,
        reason: problem,
        excerpt: text.slice(0, 80),
      });
    }
    return state;
  }

  /** Writes the state atomically with mode 0600. */
  write(state: ConnectorState | undefined): void {
    const temporary = `${this.path}.tmp-${process.pid}`;
    const fd = openSync(temporary, "w", 0o600);
    try {
      // The mode of openSync applies only when it creates the file, and a
      // temporary file left by a crash keeps its own.
      fchmodSync(fd, 0o600);
      writeSync(fd, serializeState(state) + "\n");
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.path);

    // The rename is durable only once the folder entry is on disk.
    const folderFd = openSync(dirname(this.path), "r");
    try {
      fsyncSync(folderFd);
    } finally {
      closeSync(folderFd);
    }
  }

  /** Returns the time the state file was last written or {@linkcode StateFile.touch}ed, or undefined when it does not exist. */
  lastUsedAt(): Date | undefined {
    return statSync(this.path, { throwIfNoEntry: false })?.mtime;
  }

  /**
   * Sets the state file's modification time to now, if the file exists, to
   * record when this process stopped. Only the owner may set it, so for a
   * file of another user (EACCES, EPERM) it logs a warning with the fix. It
   * does not raise, because it runs on the way out, after the error that
   * ends the process, if any.
   */
  touch(): void {
    if (existsSync(this.path)) {
      const now = new Date();
      try {
        utimesSync(this.path, now, now);
      } catch (error) {
        if (!isPermissionError(error)) {
          throw error;
        }
        this.#logger.warn(accessProblem(this.path, "State file", "update the time of"), { state_file: this.path });
      }
    }
  }

  get #lockPath(): string {
    return lockPathOf(this.path);
  }

  #lock(): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(this.#lockPath, "wx", 0o600);
        const started = processStartTime(process.pid);
        writeSync(fd, started === undefined ? String(process.pid) : `${process.pid} ${started}`);
        fsyncSync(fd);
        this.#lockFd = fd;
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
          throw new StateFileError(`Cannot create the lock file ${this.#lockPath}: ${(error as Error).message}`);
        }
      }

      const [ownerText, ownerStarted] = readOrExplain(this.#lockPath, "State file lock").trim().split(/\s+/);
      const owner = Number.parseInt(ownerText ?? "", 10);
      // After a reboot the pid in a leftover lock may belong to another
      // program; its start time then differs from the one recorded.
      const sameProcess = ownerStarted === undefined || processStartTime(owner) === ownerStarted;
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isProcessAlive(owner) && sameProcess) {
        throw new StateFileError(
          `State file ${this.path} is in use by another connector process (pid ${owner}): stop it, or give this one its own CONNECTOR_STATE_FILE`,
        );
      }
      // The process that held the lock is gone: a crash or a kill.
      this.#logger.info("Removing a stale state file lock", { lock_file: this.#lockPath, pid: owner });
      rmSync(this.#lockPath, { force: true });
      this.staleLockRemoved = true;
    }
    throw new StateFileError(`Cannot take the lock file ${this.#lockPath}: another process keeps recreating it`);
  }
}

/**
 * Checks, without changing anything, that the connector can use the state
 * file at `path`. Its folder must exist, be a folder and be writable, and
 * the path must not be a folder. An existing state file or lock file must
 * be readable and writable by this user. Start-up and `--check` both call
 * it. Raises StateFileError naming the path and the fix.
 */
export function checkStateFile(path: string): void {
  const folder = dirname(path);
  if (!existsSync(folder)) {
    throw new StateFileError(
      `State file folder ${folder} does not exist: create it or set CONNECTOR_STATE_FILE to a path in an existing folder`,
    );
  }
  try {
    closeSync(openSync(folder, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOTDIR") {
      throw new StateFileError(
        `State file folder ${folder} is not a folder: set CONNECTOR_STATE_FILE to a path in an existing folder`,
      );
    }
  }

  // Creating a file needs both write and search permission on the folder.
  try {
    accessSync(folder, fsConstants.W_OK | fsConstants.X_OK);
  } catch {
    throw new StateFileError(
      `State file folder ${folder} is not writable by this user: fix its permissions or set CONNECTOR_STATE_FILE elsewhere`,
    );
  }

  const stats = statSync(path, { throwIfNoEntry: false });
  if (stats?.isDirectory()) {
    throw new StateFileError(
      `State file ${path} is a folder: set CONNECTOR_STATE_FILE to a file path such as ${join(path, "state.json")}`,
    );
  }
  if (stats !== undefined && !isReadableAndWritable(path)) {
    throw new StateFileError(accessProblem(path, "State file", "read and write"));
  }

  const lock = lockPathOf(path);
  if (existsSync(lock) && !isReadableAndWritable(lock)) {
    throw new StateFileError(accessProblem(lock, "State file lock", "read and write"));
  }
}

/** The state file cannot be used: a missing or read-only folder, a file of another user, or a lock held by another process. */
export class StateFileError extends Error {
  override name = "StateFileError";
}

// Returns the start time of a process in clock ticks since boot (field 22 of
// /proc/<pid>/stat), or undefined where /proc is not available.
function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name in field 2 may contain spaces, so fields are counted after its ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19];
  } catch {
    return undefined;
  }
}

function lockPathOf(path: string): string {
  return `${path}.lock`;
}

function isReadableAndWritable(path: string): boolean {
  try {
    accessSync(path, fsConstants.R_OK | fsConstants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function isPermissionError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "EACCES" || code === "EPERM";
}

// Reads a file, turning a permission error into a StateFileError with the fix.
function readOrExplain(path: string, label: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw isPermissionError(error) ? new StateFileError(accessProblem(path, label, "read")) : error;
  }
}

// Names a file that this user cannot use, its owner and mode, and the fix,
// such as a state file left by a run under sudo.
function accessProblem(path: string, label: string, needs: string): string {
  const stats = statSync(path, { throwIfNoEntry: false });
  const uid = process.getuid?.() ?? "unknown";
  const owner = stats ? `belongs to uid ${stats.uid} with mode ${(stats.mode & 0o7777).toString(8).padStart(4, "0")}` : "is not usable";
  return (
    `${label} ${path} ${owner}, so this user (uid ${uid}) cannot ${needs} it: ` +
    `run "chown ${uid} ${path}" and "chmod 600 ${path}" as root to give it to the user the connector runs as, or set CONNECTOR_STATE_FILE to another path`
  );
}

/**
 * Returns what makes the state file at `path` unusable as a state, or
 * undefined when it is missing, empty, `null` or a valid state. Start-up
 * moves such a file aside (see {@linkcode StateFile.read}). Raises
 * StateFileError when the file cannot be read.
 */
export function stateFileProblem(path: string): string | undefined {
  if (!existsSync(path)) {
    return undefined;
  }
  return readStateText(readOrExplain(path, "State file")).problem;
}

/** Creates the folder of a state file, for callers that own the folder (tests, the demo). */
export function ensureStateFolder(path: string): void {
  mkdirSync(dirname(path), { recursive: true });
}
