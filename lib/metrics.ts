/**
 * Prometheus metrics of the connector, with the names of the Python
 * helper's (pycti's `OpenCTIMetricHandler`) and a few of this connector's
 * own, served over HTTP by {@linkcode serveMetrics}.
 */
import { Counter, Gauge, Registry } from "prom-client";
import type { Logger } from "./log.ts";
import type { RunOutcome, VersionReport } from "./run.ts";

/** Values of the `state` metric, as in pycti. */
export type ConnectorState = "idle" | "running" | "stopped";

const STATES: readonly ConnectorState[] = ["idle", "running", "stopped"];

/** Options of {@linkcode ConnectorMetrics}. */
export interface MetricsOptions {
  /** First prefix of every name, such as `opencti`, or "" for none. @default "" */
  namespace?: string;
  /** Second prefix of every name, after the namespace, or "" for none. @default "" */
  subsystem?: string;
}

/** Counts of successful and failed pings, such as those a Pinger keeps. */
export interface PingCounts {
  readonly sent: number;
  readonly failed: number;
}

/**
 * The connector's metrics in their own registry. Names are joined with
 * underscores from the namespace, the subsystem and the name, skipping
 * empty parts, as Python's prometheus_client does: `opencti_citalid_runs_total`.
 */
export class ConnectorMetrics {
  readonly registry = new Registry();
  readonly #bundlesSent: Counter;
  readonly #recordsSent: Counter;
  readonly #runs: Counter;
  readonly #errors: Counter;
  readonly #versionsImported: Counter;
  readonly #bytesDownloaded: Counter;
  readonly #lastSuccessfulRun: Gauge;
  readonly #state: Gauge<string>;
  /** Label of the `state` metric, its full name, as in Python's prometheus_client Enum. */
  readonly #stateLabel: string;
  #pings: PingCounts = { sent: 0, failed: 0 };

  constructor(options: MetricsOptions = {}) {
    const name = (base: string) => [options.namespace, options.subsystem, base].filter((part) => part).join("_");
    const registers = [this.registry];
    const pings = () => this.#pings;

    this.#bundlesSent = new Counter({ name: name("bundles_sent_total"), help: "Number of bundles sent", registers });
    this.#recordsSent = new Counter({
      name: name("records_sent_total"),
      // pycti counts the objects of each bundle. This counts those of each
      // version, the author once, so a version cut into bundles counts less.
      help: "Number of records (STIX objects of the versions, the author included once) sent",
      registers,
    });
    this.#runs = new Counter({ name: name("runs_total"), help: "Number of run", registers });
    this.#errors = new Counter({ name: name("errors_total"), help: "Number of errors", registers });
    // Each scrape copies the pinger's own counts, so the pinger needs no metrics hook.
    new Counter({
      name: name("ping_api_total"),
      help: "Number of pings to the API",
      registers,
      collect() {
        this.reset();
        this.inc(pings().sent);
      },
    });
    new Counter({
      name: name("ping_api_errors_total"),
      help: "Number of errors when pinging the API",
      registers,
      collect() {
        this.reset();
        this.inc(pings().failed);
      },
    });
    this.#stateLabel = name("state");
    this.#state = new Gauge({ name: name("state"), help: "State of connector", labelNames: [this.#stateLabel], registers });
    this.#versionsImported = new Counter({
      name: name("versions_imported_total"),
      help: "Number of Citalid versions sent and stored as the connector state",
      registers,
    });
    this.#lastSuccessfulRun = new Gauge({
      name: name("last_successful_run_timestamp_seconds"),
      help: "Unix time of the end of the last run that completed or found nothing new, in seconds",
      registers,
    });
    this.#bytesDownloaded = new Counter({
      name: name("bytes_downloaded_total"),
      help: "Bytes of Citalid version bodies received, after decompression, retries included",
      registers,
    });
    this.setState("idle");
  }

  /** Sets the `state` metric: 1 for `state` and 0 for the other values, like pycti's Enum. */
  setState(state: ConnectorState): void {
    for (const value of STATES) {
      this.#state.set({ [this.#stateLabel]: value }, value === state ? 1 : 0);
    }
  }

  /** Reads the ping counts from `source` at each scrape. */
  trackPings(source: PingCounts): void {
    this.#pings = source;
  }

  /** Marks the start of a run: the state becomes `running`. */
  runStarted(): void {
    this.setState("running");
  }

  /**
   * Records the end of a run: one more run, one more error when it failed,
   * the time of success when it completed or found nothing new, and the
   * state back to `idle`.
   */
  runFinished(outcome: RunOutcome, now = new Date()): void {
    this.#runs.inc();
    if (outcome.status === "failed") {
      this.#errors.inc();
    }
    if (outcome.status === "completed" || outcome.status === "up-to-date") {
      this.#lastSuccessfulRun.set(now.getTime() / 1000);
    }
    this.setState("idle");
  }

  /** Records a version fully sent and stored: its bundles, its objects and one more version. */
  versionImported(report: VersionReport): void {
    this.#versionsImported.inc();
    this.#bundlesSent.inc(report.bundles);
    this.#recordsSent.inc(report.objects);
  }

  /** Adds bytes of a Citalid download as they arrive. */
  bytesDownloaded(bytes: number): void {
    this.#bytesDownloaded.inc(bytes);
  }
}

/** A running metrics server. */
export interface MetricsServer {
  /** Port the server listens on. */
  readonly port: number;
  /** Closes the listener and open connections. */
  stop(): Promise<void>;
}

/** Error raised when the metrics port cannot be bound. Its message names CONNECTOR_METRICS_PORT. */
export class MetricsPortError extends Error {
  override name = "MetricsPortError";
}

/** Options of {@linkcode serveMetrics}. */
export interface ServeMetricsOptions {
  metrics: ConnectorMetrics;
  /** Address to listen on, such as 127.0.0.1 or 0.0.0.0. */
  host: string;
  /** TCP port, 1 to 65535. */
  port: number;
  logger: Logger;
}

/**
 * Serves the metrics in the Prometheus text format on `GET /metrics` (and
 * on `/`, as Python's prometheus_client serves every path). Logs
 * `Exposing metrics on port` with the port.
 *
 * @throws {MetricsPortError} when the port is in use or cannot be bound.
 */
export function serveMetrics(options: ServeMetricsOptions): MetricsServer {
  const { registry } = options.metrics;
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: options.host,
      port: options.port,
      async fetch(request) {
        const path = new URL(request.url).pathname;
        if (path !== "/metrics" && path !== "/") {
          return new Response("Not found: metrics are on /metrics\n", { status: 404 });
        }
        if (request.method !== "GET" && request.method !== "HEAD") {
          return new Response("Method not allowed: use GET\n", { status: 405, headers: { allow: "GET, HEAD" } });
        }
        return new Response(await registry.metrics(), { headers: { "content-type": registry.contentType } });
      },
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === "EADDRINUSE"
        ? `${options.host}:${options.port} is already in use, so stop the other process or choose another port`
        : `cannot listen on ${options.host}:${options.port} (${code ?? (error as Error).message}), so check CONNECTOR_METRICS_HOST and the port`;
    throw new MetricsPortError(`CONNECTOR_METRICS_PORT (connector.metrics_port) is ${options.port}: ${reason}`);
  }

  options.logger.info("Exposing metrics on port", { port: server.port, host: options.host });
  return {
    port: server.port ?? options.port,
    async stop() {
      await server.stop(true);
    },
  };
}
