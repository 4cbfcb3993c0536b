import type { Logger } from "./log.ts";
import type { OpenCTIClient } from "./opencti.ts";
import type { StateFile } from "./state.ts";

// OpenCTI shows a connector as active while its `updated_at` is less than 5
// minutes old (`completeConnector` in opencti-platform's domain/connector.js).
const ACTIVE_WINDOW_MS = 5 * 60 * 1000;

// Allowance between the platform's clock and this host's, which the check
// compares: `updated_at` is the platform's time, the file's mtime is ours.
const CLOCK_SKEW_MS = 5000;

/** Options of {@linkcode warnIfConnectorIdInUse}. */
export interface ConnectorIdCheckOptions {
  opencti: OpenCTIClient;
  connectorId: string;
  file: StateFile;
  logger: Logger;
}

/**
 * Warns when another process seems to run with this connector id. Call it
 * before `registerConnector`, which moves `updated_at` itself.
 *
 * Every ping and registration moves the platform's `updated_at`, and this
 * connector touches its state file when it stops, after its last ping, also
 * when the grace time or a second signal ends it. So an `updated_at` less
 * than 5 minutes old, and more than 5 s later than the state file's mtime,
 * came from another process, unless the last process of this host crashed
 * (a stale lock) while it was pinging. A missing state file counts as never
 * used. A failed read is logged at debug level and skipped.
 *
 * NOTE: only the process that starts second warns, because the first one
 * saw no recent activity when it started.
 *
 * NOTE: a ping that the platform handles after this process has exited,
 * such as one under way at a forced exit while the platform was slow,
 * also looks like another process, so the warning names that case.
 *
 * Returns true when it warned.
 */
export async function warnIfConnectorIdInUse(options: ConnectorIdCheckOptions): Promise<boolean> {
  const { opencti, connectorId, file, logger } = options;
  const now = new Date();

  let updatedAt: Date | undefined;
  try {
    updatedAt = await opencti.connectorUpdatedAt(connectorId);
  } catch (error) {
    logger.debug("Failed to read the connector's last activity on the platform, so the check for another process with this id is skipped", {
      connector_id: connectorId,
      reason: error instanceof Error ? error.message : String(error),
    });
    return false;
  }
  if (updatedAt === undefined || now.getTime() - updatedAt.getTime() >= ACTIVE_WINDOW_MS) {
    return false;
  }

  if (file.staleLockRemoved) {
    return false;
  }
  const lastUsed = file.lastUsedAt();
  if (lastUsed !== undefined && updatedAt.getTime() <= lastUsed.getTime() + CLOCK_SKEW_MS) {
    return false;
  }

  const secondsAgo = Math.max(0, Math.round((now.getTime() - updatedAt.getTime()) / 1000));
  logger.warn(
    `Another process seems to be running with this CONNECTOR_ID: the platform last saw this id at ${updatedAt.toISOString()} ` +
      `(${secondsAgo} s ago), after this connector last used its state file (${lastUsed?.toISOString() ?? "never"}). ` +
      "Two processes with one id import every version twice and overwrite each other's state, so stop the other process, " +
      "or give each deployment its own CONNECTOR_ID (uuidgen). If no other process runs, the platform handled a request " +
      "of this connector's previous run late, or this host's clock is more than 5 s behind the platform's",
    {
      connector_id: connectorId,
      platform_last_seen: updatedAt.toISOString(),
      seconds_ago: secondsAgo,
      state_file: file.path,
      state_file_last_used: lastUsed?.toISOString() ?? null,
    },
  );
  return true;
}
