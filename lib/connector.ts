import { readFileSync } from "node:fs";
import { CitalidClient } from "./citalid.ts";
import type { Config } from "./config.ts";
import { FatalError, OpenCTIError, StartupTimeoutError } from "./errors.ts";
import { readProxyEnvironment } from "./http.ts";
import { warnIfConnectorIdInUse } from "./instance-check.ts";
import type { Logger } from "./log.ts";
import type { ConnectorMetrics, MetricsServer } from "./metrics.ts";
import { type ConnectorInfo, type OpenCTIClient, type Registration, createOpenCTIClient, platformAtLeast } from "./opencti.ts";
import { Pinger } from "./ping.ts";
import { configureProgress, trackDownloads } from "./progress.ts";
import { type RunOutcome, type UnclosedWorks, closeAbandonedWorks, closeUnclosedWorks, isoSeconds, runImport } from "./run.ts";
import { Scheduler } from "./schedule.ts";
import { type BundleSender, createApiSender } from "./sender.ts";
import { SpoolFolderError, checkSpoolFolder, removeLeftoverSpoolFiles } from "./spool.ts";
import { StateFile, parseState } from "./state.ts";
import { StateSync } from "./state-sync.ts";
import { CONNECTOR_VERSION, USER_AGENT } from "./version.ts";
import { DEFAULT_TIMINGS, type Timings } from "./timings.ts";

/** Exit codes of the process. */
export const EXIT = { ok: 0, failed: 1, config: 2 } as const;


/**
 * Runs the connector until it is done: checks the state file, waits for the
 * platform, registers, adopts the platform's state, then runs once
 * (run-and-terminate) or on the schedule until SIGTERM or SIGINT. Resolves
 * with the process exit code.
 */
export async function runConnector(config: Config, logger: Logger, options: { once: boolean; timings?: Partial<Timings> }): Promise<number> {
  const timings = { ...DEFAULT_TIMINGS, ...options.timings };
  const once = options.once || config.connector.runAndTerminate || config.connector.durationPeriodMs === 0;
  const ca = config.caFile ? readFileSync(config.caFile, "utf8") : undefined;
  logger.addSecrets(config.opencti.token, config.citalid.password, config.mq.pass);

  logger.info("Starting the Citalid connector", {
    connector_version: CONNECTOR_VERSION,
    connector_id: config.connector.id,
    queue_protocol: config.connector.queueProtocol,
    run_and_terminate: once,
    duration_period_ms: config.connector.durationPeriodMs,
    state_file: config.connector.stateFile,
    spool_dir: config.connector.spoolDir,
  });
  if (!config.opencti.sslVerify) {
    logger.warn("OPENCTI_SSL_VERIFY is false: the platform's TLS certificate is not verified (Citalid's still is)");
  }
  const proxy = readProxyEnvironment(process.env);
  logger.addSecrets(...proxy.secrets);
  if (Object.keys(proxy.variables).length > 0) {
    logger.info("Proxy variables are set: Bun's fetch sends the requests to both services through them, except to NO_PROXY hosts", proxy.variables);
  }

  configureProgress({ intervalMs: timings.progressIntervalMs });
  // prom-client and amqplib are loaded only when their setting is on,
  // metrics.ts here and amqp.ts in createSender, because a loaded
  // module stays resident: prom-client added about 3 MB to the idle binary
  // (measured on Bun 1.4.5).
  const metricsModule = config.connector.exposeMetrics ? await import("./metrics.ts") : undefined;
  const metrics = metricsModule
    ? new metricsModule.ConnectorMetrics({ namespace: config.connector.metricsNamespace, subsystem: config.connector.metricsSubsystem })
    : undefined;
  const downloads = trackDownloads({ logger, onBytes: (bytes) => metrics?.bytesDownloaded(bytes) });

  const file = new StateFile(config.connector.stateFile, logger);
  file.open();

  const shutdown = new Shutdown(logger, timings.shutdownGraceMs);
  shutdown.releaseLock = () => {
    // The next start compares this time with the platform's last ping, so
    // without it the pings sent up to this exit look like another process.
    file.touch();
    file.close();
  };
  let sender: BundleSender | undefined;
  let pinger: Pinger | undefined;
  let metricsServer: MetricsServer | undefined;
  try {
    openSpoolFolder(config.connector.spoolDir, logger);
    if (metricsModule && metrics) {
      metricsServer = startMetricsServer(config, metrics, logger, metricsModule);
    }
    const opencti = createOpenCTIClient(config, logger, ca, {
      retryDelayMs: timings.retryDelayMs,
      timeoutMs: timings.openctiTimeoutMs,
      pushMaxMb: config.connector.pushMaxMb,
    });

    const platformVersion = await waitForPlatform(opencti, logger, timings, shutdown, once);
    if (platformVersion === undefined) {
      return EXIT.ok;
    }
    if (!platformAtLeast(platformVersion, 6, 3)) {
      throw new FatalError(
        `OpenCTI ${platformVersion} is not supported: this connector needs OpenCTI 6.3 or later (stixBundlePush); upgrade the platform`,
      );
    }
    logger.info("Connected to OpenCTI", { platform_version: platformVersion, url: config.opencti.url });

    const idInUse = await warnIfConnectorIdInUse({ opencti, connectorId: config.connector.id, file, logger });
    const registration = await opencti.registerConnector({
      id: config.connector.id,
      name: config.connector.name,
      type: config.connector.type,
      scope: config.connector.scope,
    });
    logger.info("Connector registered with ID", { id: registration.id });

    const sync = new StateSync(file, logger, adoptInitialState(file, registration, logger));
    if (!idInUse) {
      // Works of another live process with this id would look the same.
      await closeAbandonedWorks(opencti, config.connector.id, logger);
    }
    const schedulerRef: { current?: Scheduler } = {};
    const info = (): ConnectorInfo => ({
      run_and_terminate: once,
      buffering: schedulerRef.current?.buffering ?? false,
      queue_threshold: config.connector.queueThresholdMb,
      queue_messages_size: queue.lastSizeMb,
      next_run_datetime: schedulerRef.current?.nextRun ? isoSeconds(schedulerRef.current.nextRun) : null,
      last_run_datetime: schedulerRef.current?.lastRun ? isoSeconds(schedulerRef.current.lastRun) : lastRunOnce,
    });
    let lastRunOnce: string | null = null;
    const queue = new QueueCheck(opencti, config, logger);

    pinger = new Pinger({
      opencti,
      connectorId: config.connector.id,
      logger,
      state: () => sync.serialized(),
      info,
      sameState: (a, b) => sync.sameState(a, b),
      onRemoteState: (remote) => sync.adoptRemote(remote),
      intervalMs: timings.pingIntervalMs,
    });
    sync.attach(pinger);
    metrics?.trackPings(pinger);
    pinger.start();
    await pinger.ping().catch(() => {});

    sender = await createSender(config, opencti, registration, logger);
    const citalid = new CitalidClient({
      url: config.citalid.url,
      user: config.citalid.user,
      password: config.citalid.password,
      language: config.citalid.language,
      logger,
      userAgent: USER_AGENT,
      ca,
      retryDelayMs: timings.retryDelayMs,
      timeoutMs: timings.citalidTimeoutMs,
      downloadTimeoutMs: timings.citalidDownloadTimeoutMs,
      downloadIdleTimeoutMs: timings.citalidTimeoutMs,
      onProgress: downloads.onProgress,
    });

    let fatal: Error | undefined;
    const activeSender = sender;
    const unclosedWorks: UnclosedWorks = new Map();
    let currentWork: string | undefined;
    shutdown.beforeForcedExit = async () => {
      if (currentWork) {
        await opencti.workToProcessed(
          currentWork,
          `Run interrupted by a shutdown during a push; the next run resumes after ${sync.state?.last_loaded_bundle_id ?? "no version"}`,
          false,
        );
      }
    };
    const runOnce = async (): Promise<RunOutcome> => {
      metrics?.runStarted();
      const outcome = await runImport({
        citalid,
        opencti,
        sender: activeSender,
        state: sync,
        logger,
        connectorId: config.connector.id,
        spoolDir: config.connector.spoolDir,
        stopping: () => shutdown.requested,
        abortDownload: shutdown.signal,
        unclosedWorks,
        onVersion: (report) => metrics?.versionImported(report),
        onWork: (workId) => {
          currentWork = workId;
        },
      });
      currentWork = undefined;
      // A run's garbage would otherwise stay in memory until the next run:
      // after a 50 MB version, the binary idled at about 100 MB without this
      // collection and the shrink, and at 60 MB with them (bench/RESULTS.md
      // has the current figure). A run-and-terminate process exits instead,
      // unless a reset starts the run again. The two took about 20 ms after
      // the 200 MB version of bench/.
      // Bun.shrink is deprecated in Bun 1.4.5, so it is called only if present.
      if (!once || outcome.status === "reset") {
        Bun.gc(true);
        if (typeof Bun.shrink === "function") {
          Bun.shrink();
        }
      }
      downloads.finish();
      metrics?.runFinished(outcome);
      if (outcome.error instanceof OpenCTIError && outcome.error.code === "AUTH_REQUIRED") {
        fatal = new FatalError(outcome.error.message);
      }
      return outcome;
    };

    if (once) {
      logger.info("Starting run and terminate");
      let outcome = await runOnce();
      for (let again = 0; outcome.status === "reset" && again < 3 && !shutdown.requested; again++) {
        outcome = await runOnce();
      }
      lastRunOnce = isoSeconds(new Date());
      await closeUnclosedWorks(opencti, unclosedWorks, logger);
      const stateSent = await finalPing(pinger, shutdown, timings);
      logger.info("Closing run and terminate", { status: outcome.status });
      if (fatal) {
        throw fatal;
      }
      if (!stateSent) {
        // The platform's state wins at the next start, so without this ping
        // the next run would import the versions of this one again.
        logger.error("The final connector state did not reach the platform: the next run imports this run's versions again", {
          last_loaded_bundle_id: sync.state?.last_loaded_bundle_id ?? null,
          state_file: config.connector.stateFile,
        });
        return EXIT.failed;
      }
      return outcome.status === "failed" ? EXIT.failed : EXIT.ok;
    }

    const scheduler = new Scheduler({
      periodMs: config.connector.durationPeriodMs,
      logger,
      bufferingRecheckMs: timings.bufferingRecheckMs,
      isBuffering: () => queue.isBuffering(),
      run: async () => {
        const outcome = await runOnce();
        if (fatal || queue.fatal) {
          shutdown.fail(fatal ?? queue.fatal!);
        }
        return outcome.status !== "failed";
      },
    });
    schedulerRef.current = scheduler;
    sync.onReset(() => scheduler.runNow());
    scheduler.start();

    const reason = await shutdown.wait();
    await scheduler.stop();
    await closeUnclosedWorks(opencti, unclosedWorks, logger);
    await pinger.ping().catch(() => {});
    if (reason instanceof Error) {
      throw reason;
    }
    logger.info("Connector stopped", { connector_id: config.connector.id });
    return EXIT.ok;
  } finally {
    metrics?.setState("stopped");
    await metricsServer?.stop();
    pinger?.stop();
    await sender?.close().catch(() => {});
    // The next start compares this time with the platform's last ping.
    file.touch();
    file.close();
    shutdown.dispose();
  }
}

/** Starts the metrics server. Raises FatalError when the port cannot be bound. */
function startMetricsServer(config: Config, metrics: ConnectorMetrics, logger: Logger, metricsModule: typeof import("./metrics.ts")): MetricsServer {
  try {
    return metricsModule.serveMetrics({ metrics, host: config.connector.metricsHost, port: config.connector.metricsPort, logger });
  } catch (error) {
    if (error instanceof metricsModule.MetricsPortError) {
      throw new FatalError(error.message);
    }
    throw error;
  }
}

// Checks the spool folder and removes the spool files a killed process
// left there. A folder that cannot be used stops the connector (exit 2).
function openSpoolFolder(folder: string, logger: Logger): void {
  try {
    checkSpoolFolder(folder);
  } catch (error) {
    throw error instanceof SpoolFolderError ? new FatalError(error.message) : error;
  }
  removeLeftoverSpoolFiles(folder, logger);
}

// Adopts the platform's state at start-up, which wins over the file: a
// reset from the OpenCTI UI leaves no state there. A state that is there
// but unusable (not JSON, or a bad version id) gives way to a usable state
// file instead, because a reset would have left none, and the next ping
// sends the file's state back.
function adoptInitialState(file: StateFile, registration: Registration, logger: Logger) {
  const local = file.read();
  const raw = registration.connectorState;
  const remote = parseState(raw, "connector state stored on the platform", logger);
  const stored = raw !== null && !["", "null", "{}"].includes(raw.trim());
  if (remote === undefined && stored && local !== undefined) {
    logger.warn("The connector state on the platform is unusable, so the state file's is used and sent to the platform", {
      connector_id: registration.id,
      last_loaded_bundle_id: local.last_loaded_bundle_id ?? null,
    });
    return local;
  }
  if (remote === undefined) {
    logger.info("The platform has no state for this connector: the import starts from the first version", {
      connector_id: registration.id,
      ignored_state_file_version: local?.last_loaded_bundle_id ?? null,
    });
  } else {
    logger.info("Loaded the connector state from the platform", {
      last_loaded_bundle_id: remote.last_loaded_bundle_id ?? null,
      last_run: remote.last_run ?? null,
    });
  }
  file.write(remote);
  return remote;
}

// Sends the last ping of a one-shot run, with a few attempts because no
// later ping would carry the state. Returns true once the platform has it.
async function finalPing(pinger: Pinger, shutdown: Shutdown, timings: Timings): Promise<boolean> {
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      await pinger.ping();
      return true;
    } catch {
      if (attempt === 5 || (await shutdown.sleep(timings.retryDelayMs * 2 ** (attempt - 1)))) {
        return false;
      }
    }
  }
  return false;
}

// Waits for the platform without end in scheduled mode, so that a platform
// that boots slowly never sends the connector into a restart loop. A one-shot
// run gives up after `onceStartupTimeoutMs`, so a timer or cron job ends.
async function waitForPlatform(opencti: OpenCTIClient, logger: Logger, timings: Timings, shutdown: Shutdown, once: boolean): Promise<string | undefined> {
  const started = Date.now();
  const deadline = started + timings.onceStartupTimeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      // This loop is the retry: the request's own retries would wait a
      // minute or more before the deadline below is checked. A one-shot
      // run's request also ends at the deadline.
      return await opencti.platformVersion({ retry: false, timeoutMs: once ? deadline - Date.now() : undefined });
    } catch (error) {
      if (error instanceof OpenCTIError && !error.retryable) {
        throw new FatalError(error.message);
      }
      const left = deadline - Date.now();
      if (once && left <= 0) {
        throw new StartupTimeoutError(
          `OpenCTI was not reachable within ${seconds(timings.onceStartupTimeoutMs)} of start-up (CONNECTOR_ONCE_STARTUP_TIMEOUT_MS), so this one-shot run gives up after ${attempt} attempt(s) in ${seconds(Date.now() - started)}: ${(error as Error).message}. Run it again once the platform at OPENCTI_URL responds`,
        );
      }
      // A one-shot run makes its last attempt at the deadline, not after it.
      const delay = Math.min(timings.retryDelayMs * 2 ** (attempt - 1), timings.startupMaxDelayMs, once ? left : Number.POSITIVE_INFINITY);
      logger.warn("OpenCTI is not reachable yet, waiting before the next attempt", {
        wait_attempt: attempt,
        delay_ms: delay,
        reason: (error as Error).message,
      });
      if (await shutdown.sleep(delay)) {
        return undefined;
      }
    }
  }
}

// Formats a duration in milliseconds as seconds, with a decimal below 10 s.
function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

async function createSender(config: Config, opencti: OpenCTIClient, registration: Registration, logger: Logger): Promise<BundleSender> {
  if (config.connector.queueProtocol === "api") {
    return createApiSender({
      opencti,
      connectorId: config.connector.id,
      maxBundleBytes: config.connector.pushMaxMb * 1_000_000,
      logger,
    });
  }
  const { createAmqpSender } = await import("./amqp.ts");
  const amqp = createAmqpSender({
    registration,
    mq: config.mq,
    caFile: config.caFile,
    addExpectations: (workId, count) => opencti.workAddExpectations(workId, count),
    logger,
  });
  // Connecting now shows a wrong broker address or password at start-up.
  // A failure is only logged, because a broker that is down now may be up by
  // the first push.
  try {
    await amqp.connect();
  } catch (error) {
    logger.error("Cannot connect to RabbitMQ yet; each run tries again", {
      reason: error instanceof Error ? error.message : String(error),
    });
  }
  return amqp;
}

/** Push queue check before scheduled runs. */
class QueueCheck {
  readonly #opencti: OpenCTIClient;
  readonly #config: Config;
  readonly #logger: Logger;
  #disabled = false;
  lastSizeMb = 0;
  fatal: Error | undefined;

  constructor(opencti: OpenCTIClient, config: Config, logger: Logger) {
    this.#opencti = opencti;
    this.#config = config;
    this.#logger = logger;
  }

  async isBuffering(): Promise<boolean> {
    if (this.#disabled) {
      return false;
    }
    try {
      const size = await this.#opencti.queueSize(this.#config.connector.id);
      this.lastSizeMb = (size?.bytes ?? 0) / 1_000_000;
      return this.lastSizeMb >= this.#config.connector.queueThresholdMb;
    } catch (error) {
      if (error instanceof OpenCTIError && error.code === "FORBIDDEN_ACCESS") {
        this.#disabled = true;
        this.#logger.warn("The OpenCTI user cannot read the push queue size (FORBIDDEN_ACCESS): running without buffering checks", {
          connector_id: this.#config.connector.id,
        });
        return false;
      }
      if (error instanceof OpenCTIError && error.code === "AUTH_REQUIRED") {
        this.fatal = new FatalError(error.message);
        return false;
      }
      this.#logger.warn("Could not read the push queue size; running without the buffering check this time", {
        reason: (error as Error).message,
      });
      return false;
    }
  }
}

/** SIGTERM and SIGINT handling: the first requests a clean stop, the second exits at once. */
class Shutdown {
  readonly #logger: Logger;
  readonly #graceMs: number;
  #resolve: ((reason: Error | string) => void) | undefined;
  readonly #done: Promise<Error | string>;
  #sleepers = new Set<() => void>();
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #abort = new AbortController();
  requested = false;
  /** Closes the work of the run under way; called before a forced exit. */
  beforeForcedExit: (() => Promise<void>) | undefined;
  /** Records the exit time on the state file and releases its lock. Called before any forced exit. */
  releaseLock: (() => void) | undefined;
  readonly #handler = (signal: NodeJS.Signals) => this.#onSignal(signal);

  constructor(logger: Logger, graceMs: number) {
    this.#logger = logger;
    this.#graceMs = graceMs;
    this.#done = new Promise((resolve) => {
      this.#resolve = resolve;
    });
    process.on("SIGTERM", this.#handler);
    process.on("SIGINT", this.#handler);
  }

  /** Signal aborted at the first SIGTERM or SIGINT, to stop a download under way. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  wait(): Promise<Error | string> {
    return this.#done;
  }

  /** Stops the connector because of an error a restart cannot fix. */
  fail(error: Error): void {
    this.requested = true;
    this.#resolve?.(error);
  }

  /** Sleeps; resolves true when a shutdown cut the sleep short. */
  sleep(ms: number): Promise<boolean> {
    if (this.requested) {
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#sleepers.delete(wake);
        resolve(false);
      }, ms);
      this.#sleepers.add(wake);
    });
  }

  dispose(): void {
    process.off("SIGTERM", this.#handler);
    process.off("SIGINT", this.#handler);
    clearTimeout(this.#graceTimer);
  }

  // Runs releaseLock without raising, so that the exit that follows happens.
  #releaseLock(): void {
    try {
      this.releaseLock?.();
    } catch (error) {
      this.#logger.warn("Failed to touch the state file or release its lock before exiting; the next start removes the lock as stale", {
        reason: error instanceof Error ? error.message : String(error),
      });
    }
  }

  #onSignal(signal: NodeJS.Signals): void {
    if (this.requested) {
      this.#logger.warn("Second signal received, exiting at once", { signal });
      this.#releaseLock();
      process.exit(EXIT.failed);
    }
    this.requested = true;
    this.#logger.info("Preparing connector for clean shutdown", { signal });
    for (const wake of [...this.#sleepers]) {
      wake();
    }
    this.#resolve?.(signal);
    this.#abort.abort();
    this.#graceTimer = setTimeout(async () => {
      this.#logger.warn("Shutdown took too long, exiting with the push under way unfinished", {
        grace_ms: this.#graceMs,
      });
      // The work is closed and the lock released, each within a short time,
      // so that neither is left behind by this exit.
      await Promise.race([this.beforeForcedExit?.().catch(() => {}), Bun.sleep(800)]);
      this.#releaseLock();
      process.exit(EXIT.ok);
    }, this.#graceMs);
    this.#graceTimer.unref?.();
  }
}
