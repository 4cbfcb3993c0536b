import type { Logger } from "./log.ts";
import type { ConnectorInfo, OpenCTIClient } from "./opencti.ts";

/** Options of {@linkcode Pinger}. */
export interface PingerOptions {
  opencti: OpenCTIClient;
  connectorId: string;
  logger: Logger;
  /** Returns the serialised state to send. */
  state: () => string;
  /** Returns the connector info to send. */
  info: () => ConnectorInfo;
  /**
   * Called when the platform returns a state other than the one sent,
   * which is what a reset from the OpenCTI UI looks like.
   */
  onRemoteState: (remote: string | null, sent: string) => void;
  /** Returns true when two serialised states mean the same state. */
  sameState: (a: string | null, b: string) => boolean;
  /** Time between two pings, in milliseconds. @default 40000 */
  intervalMs?: number;
}

/**
 * Pings the platform every 40 s with the state and connector info, as the
 * Python helper does, and on demand right after each state change. Pings are
 * sent one at a time; a failed ping is logged and counted, never thrown by
 * the timer.
 */
export class Pinger {
  readonly #options: PingerOptions;
  #timer: ReturnType<typeof setInterval> | undefined;
  #queue: Promise<void> = Promise.resolve();
  #failing = false;
  /** Successful pings. */
  sent = 0;
  /** Failed pings. */
  failed = 0;

  constructor(options: PingerOptions) {
    this.#options = options;
  }

  /** Starts the periodic pings. */
  start(): void {
    if (this.#timer) {
      return;
    }
    this.#timer = setInterval(() => {
      this.ping().catch(() => {});
    }, this.#options.intervalMs ?? 40_000);
  }

  /** Stops the periodic pings; a ping under way finishes. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Sends one ping after those already queued. Rejects when it fails; the error is also logged. */
  ping(): Promise<void> {
    const next = this.#queue.then(() => this.#send());
    this.#queue = next.catch(() => {});
    return next;
  }

  async #send(): Promise<void> {
    const sent = this.#options.state();
    let remote: string | null;
    try {
      remote = await this.#options.opencti.pingConnector(this.#options.connectorId, sent, this.#options.info());
    } catch (error) {
      this.failed++;
      this.#failing = true;
      this.#options.logger.error("Error pinging the API", {
        connector_id: this.#options.connectorId,
        reason: error instanceof Error ? error.message : String(error),
      });
      throw error;
    }

    this.sent++;
    if (this.#failing) {
      this.#failing = false;
      this.#options.logger.info("API ping back to normal", { connector_id: this.#options.connectorId });
    }
    if (!this.#options.sameState(remote, sent)) {
      this.#options.onRemoteState(remote, sent);
    }
  }
}
