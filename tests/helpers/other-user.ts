/**
 * Runs the connector as another user than the test process, so that file
 * permissions apply to it. The tests run as root, which reads and writes
 * any file whatever its mode.
 */
import { chownSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./connector.ts";

/** Uid and gid that the connector runs as in these tests, the user `nobody` on most Linux systems. */
export const OTHER_UID = 65534;

const MAIN = join(import.meta.dir, "..", "..", "main.ts");

/** Returns the command that starts `main.ts` as {@linkcode OTHER_UID}, with no supplementary groups. */
export function asOtherUser(): string[] {
  return ["setpriv", `--reuid=${OTHER_UID}`, `--regid=${OTHER_UID}`, "--clear-groups", process.execPath, MAIN];
}

/** Returns a fresh temporary folder owned by {@linkcode OTHER_UID}, mode 0700. */
export function otherUserDir(): string {
  const folder = tempDir();
  chownSync(folder, OTHER_UID, OTHER_UID);
  return folder;
}

// Returns why the connector cannot run as another user here, or undefined when it can.
function unavailableReason(): string | undefined {
  if (process.getuid?.() !== 0) {
    return "the tests do not run as root, so they cannot start the connector as another user";
  }
  if (!Bun.which("setpriv")) {
    return "setpriv (util-linux) is not installed";
  }
  const probe = Bun.spawnSync([...asOtherUser(), "--version"], { stdout: "ignore", stderr: "pipe" });
  if (probe.exitCode !== 0) {
    return `uid ${OTHER_UID} cannot run ${process.execPath} ${MAIN}: ${probe.stderr.toString().trim()}`;
  }
  return undefined;
}

/** Reason why the connector cannot run as another user here, or undefined when it can. */
export const otherUserUnavailable = unavailableReason();

/** Prints once, for the test file `file`, why its tests as another user are skipped. */
export function warnIfOtherUserUnavailable(file: string): void {
  if (otherUserUnavailable !== undefined) {
    console.warn(`${file}: skipping the tests as uid ${OTHER_UID}: ${otherUserUnavailable}`);
  }
}
