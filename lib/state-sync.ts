import type { Logger } from "./log.ts";
import type { Pinger } from "./ping.ts";
import { type ConnectorState, type StateFile, isSameState, parseState, serializeState } from "./state.ts";

/**
 * Keeps the connector state in step in three places: memory, the state file
 * and the platform. Every change is written to the file, then sent to the
 * platform at once with a ping. A different state coming back from the
 * platform (a reset from the OpenCTI UI) replaces the local one and bumps
 * {@linkcode StateSync.generation}, which makes a run in progress stop.
 */
export class StateSync {
  readonly #file: StateFile;
  readonly #logger: Logger;
  #state: ConnectorState | undefined;
  #pinger: Pinger | undefined;
  #listeners: (() => void)[] = [];
  /** Incremented on each remote reset. */
  generation = 0;

  constructor(file: StateFile, logger: Logger, initial: ConnectorState | undefined) {
    this.#file = file;
    this.#logger = logger;
    this.#state = initial;
  }

  /** Sets the pinger used to push changes. */
  attach(pinger: Pinger): void {
    this.#pinger = pinger;
  }

  /** The current state, or undefined for none. */
  get state(): ConnectorState | undefined {
    return this.#state;
  }

  /** The current state as sent to the platform. */
  serialized(): string {
    return serializeState(this.#state);
  }

  /** Registers a function called after each remote reset. */
  onReset(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /**
   * Stores a new state: the file first, then the platform. A failed push to
   * the platform is logged and retried by the next ping; the file already
   * has the state.
   */
  async save(state: ConnectorState): Promise<void> {
    this.#state = state;
    this.#file.write(state);
    if (this.#pinger) {
      try {
        await this.#pinger.ping();
      } catch {
        this.#logger.warn("State saved to the file but not yet to the platform; the next ping sends it", {
          state_file: this.#file.path,
        });
      }
    }
  }

  /** Returns true when two serialised states mean the same state. */
  sameState(a: string | null, b: string): boolean {
    return isSameState(a, b);
  }

  /** Adopts the state the platform returned, after a reset from the OpenCTI UI. */
  adoptRemote(remote: string | null): void {
    const previous = this.#state;
    this.#state = parseState(remote, "connector state returned by the platform", this.#logger);
    this.#file.write(this.#state);
    this.generation++;
    this.#logger.warn("Connector state has been remotely reset; a fresh import starts", {
      previous_last_loaded_bundle_id: previous?.last_loaded_bundle_id ?? null,
      last_loaded_bundle_id: this.#state?.last_loaded_bundle_id ?? null,
    });
    for (const listener of this.#listeners) {
      listener();
    }
  }
}
