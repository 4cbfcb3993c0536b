import { readFileSync } from "node:fs";
import type { Config } from "./config.ts";
import { OpenCTIError } from "./errors.ts";
import { warnIfConnectorIdInUse } from "./instance-check.ts";
import type { Logger } from "./log.ts";
import { type OpenCTIClient, createOpenCTIClient } from "./opencti.ts";
import { Pinger } from "./ping.ts";
import { type ConnectorState, StateFile, StateFileError, isSameState, parseState, serializeState } from "./state.ts";
import type { Timings } from "./timings.ts";
import { isDatedInFuture } from "./versions.ts";

/** Options of {@linkcode runSetState}. */
export interface SetStateOptions {
  /** First retry delay of the requests, in milliseconds. */
  retryDelayMs: Timings["retryDelayMs"];
  /** Writes one line of the report. @default a line on stdout */
  write?: (line: string) => void;
  /** Day against which a version id dated in the future is rejected. @default now */
  today?: Date;
}

// One retry and short timeouts, as for --check, because an operator waits for the result.
const SET_STATE_RETRY_LIMIT = 1;
const SET_STATE_TIMEOUT_MS = 30_000;

// A platform that keeps its own state after a first ping has had a reset
// from the UI, which makes it ignore the state of the next ping only.
const PING_ATTEMPTS = 2;

/**
 * Sets the connector state to `versionId` by hand, so that the next run
 * imports only the versions after it. Takes the state file lock as start-up
 * does, registers the connector, sends the new state with a ping, and only
 * then writes it to the state file, keeping the other keys of the state
 * (such as `last_run`). The platform goes first because its state wins at
 * start-up: when it cannot be reached the file is left as it was, and a
 * failed file write after a ping is corrected by the next start anyway.
 * Prints the previous and new states on stdout. Each request gets one retry
 * and a timeout of 30 s per attempt.
 *
 * Resolves with 0 on success. Resolves with 1, and changes nothing, when the
 * platform cannot be reached or keeps its own state. Resolves with 2 when
 * the id is dated after tomorrow, when the state file cannot be used or is
 * in use by a running connector, or when the platform rejects the token.
 */
export async function runSetState(config: Config, logger: Logger, versionId: string, options: SetStateOptions): Promise<number> {
  const write = options.write ?? ((line: string) => process.stdout.write(line + "\n"));
  const connectorId = config.connector.id;
  if (isDatedInFuture(versionId, options.today ?? new Date())) {
    logger.error(
      `--set-state ${versionId} is dated after tomorrow: as the state it would hide every version published before that date. Give the id of the last version to skip`,
      { version_id: versionId },
    );
    return 2;
  }

  const file = new StateFile(config.connector.stateFile, logger);
  try {
    file.open();
  } catch (error) {
    return stateFileFailure(error, file, logger);
  }

  try {
    let local: ConnectorState | undefined;
    try {
      local = file.read();
    } catch (error) {
      return stateFileFailure(error, file, logger);
    }

    const ca = config.caFile ? readFileSync(config.caFile, "utf8") : undefined;
    const opencti = createOpenCTIClient(config, logger, ca, {
      retryLimit: SET_STATE_RETRY_LIMIT,
      retryDelayMs: options.retryDelayMs,
      timeoutMs: SET_STATE_TIMEOUT_MS,
    });

    // Another process with this id would overwrite the new state at its next ping.
    await warnIfConnectorIdInUse({ opencti, connectorId, file, logger });

    let remote: ConnectorState | undefined;
    let next: ConnectorState;
    try {
      const registration = await opencti.registerConnector({
        id: connectorId,
        name: config.connector.name,
        type: config.connector.type,
        scope: config.connector.scope,
      });
      remote = parseState(registration.connectorState, "connector state stored on the platform", logger);
      next = { ...(remote ?? local), last_loaded_bundle_id: versionId };

      const storedState = await sendState(opencti, config, logger, next);
      if (storedState !== undefined) {
        logger.error(
          "The platform kept its own connector state instead of the one sent, so the state file was left as it was: run --set-state again, and stop any other process with this CONNECTOR_ID",
          { connector_id: connectorId, sent: serializeState(next), platform_state: storedState },
        );
        return 1;
      }
    } catch (error) {
      return platformFailure(error, config, logger);
    }

    file.write(next);

    logger.info("Connector state set by hand", {
      connector_id: connectorId,
      previous_platform_last_loaded_bundle_id: remote?.last_loaded_bundle_id ?? null,
      previous_file_last_loaded_bundle_id: local?.last_loaded_bundle_id ?? null,
      last_loaded_bundle_id: versionId,
      state_file: file.path,
    });
    const report = [
      `Previous state on the platform (connector ${connectorId}): ${describe(remote)}`,
      `Previous state in ${file.path}: ${describe(local)}`,
      `New state, sent to the platform and written to the file: ${serializeState(next)}`,
      `The next run starts with the first Citalid version after ${versionId}.`,
    ];
    for (const line of report) {
      write(logger.mask(line));
    }
    return 0;
  } finally {
    file.close();
  }
}

// Pings the platform with the new state, up to PING_ATTEMPTS times, until it
// stores it. Returns undefined once it does, else the state it still stores.
// Raises the error of a failed ping.
async function sendState(opencti: OpenCTIClient, config: Config, logger: Logger, state: ConnectorState): Promise<string | null | undefined> {
  let storedState: string | null | undefined;
  const pinger = new Pinger({
    opencti,
    connectorId: config.connector.id,
    logger,
    state: () => serializeState(state),
    info: () => ({
      run_and_terminate: config.connector.runAndTerminate || config.connector.durationPeriodMs === 0,
      buffering: false,
      queue_threshold: config.connector.queueThresholdMb,
      queue_messages_size: 0,
      next_run_datetime: null,
      last_run_datetime: state.last_run ?? null,
    }),
    sameState: isSameState,
    onRemoteState: (remote) => {
      storedState = remote;
    },
  });

  for (let attempt = 1; attempt <= PING_ATTEMPTS; attempt++) {
    storedState = undefined;
    await pinger.ping();
    if (storedState === undefined) {
      return undefined;
    }
  }
  return storedState;
}

// Logs why the platform could not store the state. A rejected token or
// request is exit code 2, as at start-up. Any other failure is 1.
function platformFailure(error: unknown, config: Config, logger: Logger): number {
  const reason = error instanceof Error ? error.message : String(error);
  const fatal = error instanceof OpenCTIError && !error.retryable;
  logger.error(
    fatal
      ? `Cannot set the connector state, the platform refused the request: ${reason}. Nothing was changed`
      : `Cannot set the connector state, OpenCTI at ${config.opencti.url} cannot be reached: ${reason}. Nothing was changed: run --set-state again once the platform answers`,
    { connector_id: config.connector.id, state_file: config.connector.stateFile },
  );
  return fatal ? 2 : 1;
}

// Logs a state file that cannot be used and returns exit code 2, as at start-up.
function stateFileFailure(error: unknown, file: StateFile, logger: Logger): number {
  if (!(error instanceof StateFileError)) {
    throw error;
  }
  logger.error(error.message, { state_file: file.path });
  return 2;
}

function describe(state: ConnectorState | undefined): string {
  return state === undefined ? "none" : serializeState(state);
}
