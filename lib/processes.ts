/**
 * Checks on other processes of this machine, for the lock of the state file
 * and the spool files that a killed connector left behind.
 */

/**
 * Returns true when a process with `pid` exists, including one of another
 * user (kill(pid, 0) then fails with EPERM).
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
