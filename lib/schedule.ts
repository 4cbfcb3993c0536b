import { Cron } from "croner";
import type { Logger } from "./log.ts";

/** Options of {@linkcode Scheduler}. */
export interface SchedulerOptions {
  /** Time from the start of one run to the start of the next, in milliseconds; more than 0. */
  periodMs: number;
  /** Runs one import; never rejects. Returns true when the run ended without error. */
  run: () => Promise<boolean>;
  /**
   * Returns true when the push queue is over the threshold, so the run must
   * wait. Called before each scheduled run except the first; never rejects.
   */
  isBuffering: () => Promise<boolean>;
  logger: Logger;
  /** Time between two queue checks while buffering, in milliseconds. @default 60000 */
  bufferingRecheckMs?: number;
}

/**
 * Runs the import at once, then once per duration period measured from the
 * start of the previous run, with croner. Runs never overlap: a run that
 * lasts longer than the period is followed by the next one as soon as it
 * ends. Before a scheduled run, a push queue over the threshold postpones
 * it, re-checked every minute.
 */
export class Scheduler {
  readonly #options: SchedulerOptions;
  #job: Cron | undefined;
  #immediate: ReturnType<typeof setTimeout> | undefined;
  #current: Promise<void> | undefined;
  #stopped = false;
  #rerun = false;
  /** Start of the next run, or null while a run is under way or after stop. */
  nextRun: Date | null = null;
  /** Start of the last run, or null before the first. */
  lastRun: Date | null = null;
  /** True while a run waits for the push queue to shrink. */
  buffering = false;

  constructor(options: SchedulerOptions) {
    if (!(options.periodMs > 0)) {
      throw new RangeError(`Scheduler period must be more than 0 ms, got ${options.periodMs}`);
    }
    this.#options = options;
  }

  /** Starts the first run at once. */
  start(): void {
    this.#launch(false);
  }

  /** True while a run is under way. */
  get running(): boolean {
    return this.#current !== undefined;
  }

  /** Starts a run at once, or right after the one under way ends (used after a remote reset). */
  runNow(): void {
    if (this.#stopped) {
      return;
    }
    if (this.#current) {
      this.#rerun = true;
      return;
    }
    this.#cancelNext();
    this.#launch(false);
  }

  /** Cancels the next run and waits for the run under way, if any. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#cancelNext();
    this.nextRun = null;
    await this.#current;
  }

  #launch(checkQueue: boolean): void {
    this.#current = this.#cycle(checkQueue).finally(() => {
      this.#current = undefined;
      if (this.#stopped) {
        return;
      }
      if (this.#rerun) {
        this.#rerun = false;
        this.#launch(false);
      }
    });
  }

  async #cycle(checkQueue: boolean): Promise<void> {
    if (checkQueue && (await this.#options.isBuffering())) {
      if (!this.buffering) {
        this.#options.logger.info(
          "Connector will not run until the queue messages size is reduced under queue threshold",
        );
      }
      this.buffering = true;
      this.#schedule(new Date(Date.now() + (this.#options.bufferingRecheckMs ?? 60_000)), true);
      return;
    }
    this.buffering = false;

    const started = new Date();
    this.lastRun = started;
    this.nextRun = null;
    await this.#options.run();
    if (this.#stopped || this.#rerun) {
      return;
    }

    const next = new Date(Math.max(Date.now(), started.getTime() + this.#options.periodMs));
    this.#schedule(next, true);
    this.#options.logger.info("Schedule next run of connector", { next_run_datetime: next.toISOString() });
  }

  #cancelNext(): void {
    this.#job?.stop();
    this.#job = undefined;
    clearTimeout(this.#immediate);
    this.#immediate = undefined;
  }

  #schedule(at: Date, checkQueue: boolean): void {
    this.nextRun = at;
    this.#cancelNext();
    const delay = at.getTime() - Date.now();
    const fire = () => {
      if (!this.#stopped && !this.#current) {
        this.#launch(checkQueue);
      }
    };
    if (delay <= 5) {
      // croner needs a time in the future.
      this.#immediate = setTimeout(fire, 0);
      return;
    }
    this.#job = new Cron(at, { maxRuns: 1 }, fire);
  }
}
