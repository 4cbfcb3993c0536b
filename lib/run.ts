import { AuthorReferences } from "./authors.ts";
import type { CitalidClient } from "./citalid.ts";
import { DownloadAbortedError, OpenCTIError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { OpenCTIClient } from "./opencti.ts";
import type { BundleSender, SendResult } from "./sender.ts";
import { SpoolReader, VersionSpool } from "./spool.ts";
import { prepareSpooledVersion } from "./spooled.ts";
import type { StateSync } from "./state-sync.ts";
import { selectNewVersions } from "./versions.ts";

/** Figures of one version's import. */
export interface VersionReport {
  id: string;
  objects: number;
  bytes: number;
  bundles: number;
  dropped: number;
  ms: number;
}

/** Result of one run. */
export interface RunOutcome {
  status: "up-to-date" | "completed" | "failed" | "interrupted" | "reset";
  workId?: string;
  versions: VersionReport[];
  /** Versions that were new when the run started. */
  pending: string[];
  error?: Error;
}

/** Parts one run uses. */
export interface RunDependencies {
  citalid: CitalidClient;
  opencti: OpenCTIClient;
  sender: BundleSender;
  state: StateSync;
  logger: Logger;
  connectorId: string;
  /** Existing folder of the spool files that versions are downloaded into. */
  spoolDir: string;
  /** Returns true once a shutdown was requested: the run stops after the push under way. */
  stopping: () => boolean;
  /** Signal aborted when a shutdown is requested: a download under way stops at once, and the run with it. */
  abortDownload?: AbortSignal;
  /** Called after each version is fully sent and stored. */
  onVersion?: (report: VersionReport) => void;
  /** Called once the run's work exists, with its id; and with undefined when the run ends. */
  onWork?: (workId: string | undefined) => void;
  /** Returns the current time. @default () => new Date() */
  now?: () => Date;
  /**
   * Works that a run failed to close, kept from run to run: each run first
   * closes those left by earlier runs, then adds its own if closing fails.
   */
  unclosedWorks?: UnclosedWorks;
}

/** Works whose `toProcessed` failed, by work id, with the message and error flag to close them with. */
export type UnclosedWorks = Map<string, { message: string; inError: boolean }>;

/**
 * Runs one import: logs in to Citalid, lists the versions, and for each one
 * after the stored state, oldest first, downloads, checks and sends it, then
 * stores the state. The first failure stops the run with the state at the
 * last version fully sent, and the work is closed in error with the reason.
 * No work is created when nothing is new or when the login fails.
 */
export async function runImport(deps: RunDependencies): Promise<RunOutcome> {
  const { citalid, opencti, logger, state } = deps;
  const now = deps.now ?? (() => new Date());
  const generation = state.generation;
  const startedAt = now();
  const reports: VersionReport[] = [];
  const authors = new AuthorReferences(opencti, logger);
  let pending: string[] = [];
  let workId: string | undefined;

  try {
    if (deps.unclosedWorks && deps.unclosedWorks.size > 0) {
      await closeUnclosedWorks(opencti, deps.unclosedWorks, logger);
    }

    logger.info("Logging in to Citalid");
    await citalid.login();

    const ids = await citalid.listVersions();
    const last = state.state?.last_loaded_bundle_id;
    pending = selectNewVersions(ids, last, logger, now());
    logger.info("Listed Citalid versions", {
      versions: ids.length,
      new_versions: pending.length,
      last_loaded_bundle_id: last ?? null,
    });

    if (pending.length === 0) {
      logger.info("Last version of Citalid dataset already loaded", { last_loaded_bundle_id: last ?? null });
      await state.save({ ...state.state, last_run: isoSeconds(now()) });
      return { status: "up-to-date", versions: reports, pending };
    }

    workId = await opencti.workAdd(deps.connectorId, `Citalid run @ ${isoSeconds(startedAt)}`);
    deps.onWork?.(workId);
    logger.info("Initiated work", { work_id: workId, versions: pending });

    for (const versionId of pending) {
      if (deps.stopping()) {
        return await finishInterrupted(deps, workId, reports, pending);
      }
      if (state.generation !== generation) {
        return await finishReset(deps, workId, reports, pending);
      }

      const started = performance.now();
      logger.info("Processing version", { work_id: workId, version_id: versionId });
      const { result, objects, bytes, spool } = await importVersion(deps, authors, versionId, workId);
      try {
        if (state.generation !== generation) {
          // The platform reset the state during the push: storing this
          // version as loaded would skip the versions before it.
          return await finishReset(deps, workId, reports, pending);
        }
        await state.save({ ...state.state, last_loaded_bundle_id: versionId, last_run: isoSeconds(now()) });
      } finally {
        // The spool file goes only after the state is stored: a crash
        // between the two leaves a leftover file, which start-up removes.
        spool.remove();
      }

      const report: VersionReport = {
        id: versionId,
        objects,
        bytes,
        bundles: result.bundles,
        dropped: result.dropped,
        ms: Math.round(performance.now() - started),
      };
      reports.push(report);
      deps.onVersion?.(report);
      logger.info("Version sent and stored as the connector state", {
        work_id: workId,
        version_id: versionId,
        objects: report.objects,
        bytes: report.bytes,
        bundles: report.bundles,
        dropped: report.dropped,
        ms: report.ms,
      });
      if (state.generation !== generation) {
        return await finishReset(deps, workId, reports, pending);
      }
    }

    const message = `Imported ${reports.length} Citalid version(s): ${reports.map((report) => report.id).join(", ")} (${sum(reports, "objects")} objects, ${sum(reports, "bundles")} bundles)`;
    await closeWork(deps, workId, message, false);
    logger.info("Connector successfully run", { work_id: workId, versions: reports.length });
    return { status: "completed", workId, versions: reports, pending };
  } catch (error) {
    if (error instanceof DownloadAbortedError && workId) {
      return await finishInterrupted(deps, workId, reports, pending, error.versionId);
    }
    const failure = error instanceof Error ? error : new Error(String(error));
    const stored = state.state?.last_loaded_bundle_id ?? null;
    logger.error("Run failed", {
      work_id: workId ?? null,
      reason: failure.message,
      last_loaded_bundle_id: stored,
      versions_done: reports.length,
    });
    if (workId) {
      const reason = `Run failed after ${reports.length} of ${pending.length} version(s); the state stays at ${stored ?? "no version"}: ${failure.message}`;
      await closeWork(deps, workId, reason, true);
    }
    return { status: "failed", workId, versions: reports, pending, error: failure };
  }
}

/**
 * Downloads one version into a spool file, checks it, resolves its author
 * references and sends it. Returns the send's figures, the version's count
 * of distinct objects with the author, its size in bytes, and the spool
 * file, which the caller removes once the state is stored. A failure
 * removes the spool file before it is raised.
 */
async function importVersion(
  deps: RunDependencies,
  authors: AuthorReferences,
  versionId: string,
  workId: string,
): Promise<{ result: SendResult; objects: number; bytes: number; spool: VersionSpool }> {
  const spool = new VersionSpool(deps.spoolDir, versionId);
  deps.logger.debug("Downloading the version into a spool file", { version_id: versionId, path: spool.file.path });
  try {
    const download = await deps.citalid.downloadVersionTo(versionId, spool, { signal: deps.abortDownload });
    const version = prepareSpooledVersion(download.result, new SpoolReader(spool.file), versionId);
    if (version.items.length === 0) {
      // An empty version is a valid bundle, but it may be a publishing
      // fault, and the state moves past it.
      deps.logger.warn("The version has no objects: only the author identity is sent, and the state moves past it", {
        work_id: workId,
        version_id: versionId,
      });
    }
    const repeated = version.repeatedIds();
    if (repeated.count > 0) {
      deps.logger.warn("Objects of the version repeat the id of an earlier object: each id is sent once, with its last copy", {
        work_id: workId,
        version_id: versionId,
        repeated_objects: repeated.count,
        first_repeated_id: repeated.firstId ?? null,
      });
    }
    await authors.resolve(version, versionId);
    const result = await deps.sender.sendSpooled(version, { workId, versionId, bundleId: version.bundleId });
    return { result, objects: version.objectCount - repeated.count, bytes: download.bytes, spool };
  } catch (error) {
    spool.remove();
    throw error;
  }
}

// Closes the work of a run that a shutdown stopped between two versions,
// or during the download of `downloading`.
async function finishInterrupted(
  deps: RunDependencies,
  workId: string,
  reports: VersionReport[],
  pending: string[],
  downloading?: string,
): Promise<RunOutcome> {
  const during = downloading === undefined ? "" : ` during the download of version ${downloading},`;
  const message = `Run interrupted by a shutdown${during} after ${reports.length} of ${pending.length} version(s); the next run resumes after ${deps.state.state?.last_loaded_bundle_id ?? "no version"}`;
  deps.logger.warn("Run interrupted by a shutdown", { work_id: workId, versions_done: reports.length, downloading: downloading ?? null });
  await closeWork(deps, workId, message, false);
  return { status: "interrupted", workId, versions: reports, pending };
}

async function finishReset(deps: RunDependencies, workId: string, reports: VersionReport[], pending: string[]): Promise<RunOutcome> {
  const message = `Run stopped after ${reports.length} of ${pending.length} version(s): the connector state was reset from the platform`;
  deps.logger.warn("Run stopped because the connector state was reset", { work_id: workId });
  await closeWork(deps, workId, message, false);
  return { status: "reset", workId, versions: reports, pending };
}

async function closeWork(deps: RunDependencies, workId: string, message: string, inError: boolean): Promise<void> {
  try {
    await deps.opencti.workToProcessed(workId, message, inError);
  } catch (error) {
    const retried = deps.unclosedWorks !== undefined && isRetryable(error);
    deps.logger.error(retried ? "Failed to close the work, so the next run tries again" : "Failed to close the work", {
      work_id: workId,
      reason: error instanceof Error ? error.message : String(error),
    });
    if (retried) {
      deps.unclosedWorks!.set(workId, { message, inError });
    }
  }
}

/**
 * Closes the works that earlier runs failed to close, such as while the
 * platform was down, and removes each one closed from `unclosed`. A work
 * that still fails stays for the next call, unless the platform rejects the
 * request for good (an unknown work id). Never rejects.
 */
export async function closeUnclosedWorks(opencti: OpenCTIClient, unclosed: UnclosedWorks, logger: Logger): Promise<void> {
  for (const [workId, close] of [...unclosed]) {
    try {
      await opencti.workToProcessed(workId, close.message, close.inError);
      unclosed.delete(workId);
      logger.info("Closed a work that an earlier run could not close", { work_id: workId, in_error: close.inError });
    } catch (error) {
      const retried = isRetryable(error);
      if (!retried) {
        unclosed.delete(workId);
      }
      const message = retried
        ? "Still cannot close a work left open by an earlier run, so a later run tries again"
        : "Cannot close a work left open by an earlier run, giving up on it";
      logger.warn(message, {
        work_id: workId,
        reason: error instanceof Error ? error.message : String(error),
      });
    }
  }
}

/**
 * Closes, in error, the works of this connector that no `toProcessed` ever
 * reached: runs of an earlier process that was killed or crashed. Works
 * already processed but still waiting for the platform's workers are left
 * alone. Call it only while no other process runs with this connector id.
 * Logs and never rejects.
 */
export async function closeAbandonedWorks(opencti: OpenCTIClient, connectorId: string, logger: Logger): Promise<void> {
  let works: Awaited<ReturnType<OpenCTIClient["openWorks"]>>;
  try {
    works = await opencti.openWorks(connectorId);
  } catch (error) {
    logger.warn("Cannot list the connector's open works, so works of a stopped process stay open", {
      connector_id: connectorId,
      reason: error instanceof Error ? error.message : String(error),
    });
    return;
  }

  for (const work of works.filter((candidate) => candidate.processedTime === null)) {
    try {
      await opencti.workToProcessed(
        work.id,
        "The connector process stopped during this run (killed or crashed); the next run resumed from the stored state",
        true,
      );
      logger.warn("Closed a work that a stopped connector process left open", { work_id: work.id, work_name: work.name });
    } catch (error) {
      logger.warn("Cannot close a work that a stopped connector process left open", {
        work_id: work.id,
        reason: error instanceof Error ? error.message : String(error),
      });
    }
  }
}

function isRetryable(error: unknown): boolean {
  return !(error instanceof OpenCTIError) || error.retryable;
}

function sum(reports: VersionReport[], key: "objects" | "bundles"): number {
  return reports.reduce((total, report) => total + report[key], 0);
}

/** Formats a time as UTC ISO 8601 without milliseconds, `2026-12-04T15:00:00Z`. */
export function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

