/**
 * Time limits on reading one response body: a total limit counted from the
 * response headers, and an idle limit between two chunks.
 */

/**
 * Aborts `controller` when the body takes longer than `totalMs` from now,
 * or when no chunk arrives for `idleMs`. An idle limit that is undefined,
 * or not shorter than the total limit, is not armed, because the total
 * limit always fires first then. Call {@linkcode received} after each chunk
 * and {@linkcode clear} once the body is read or has failed.
 */
export class BodyDeadline {
  readonly #totalMs: number;
  readonly #idleMs: number | undefined;
  readonly #total: ReturnType<typeof setTimeout>;
  readonly #idle: ReturnType<typeof setTimeout> | undefined;
  #bytes = 0;
  #reason: string | undefined;
  #cleared = false;

  constructor(controller: AbortController, totalMs: number, idleMs?: number) {
    this.#totalMs = totalMs;
    this.#idleMs = idleMs !== undefined && idleMs < totalMs ? idleMs : undefined;
    this.#total = setTimeout(() => this.#abort(controller, `timed out after ${this.#totalMs} ms reading the body`), totalMs);
    if (this.#idleMs !== undefined) {
      this.#idle = setTimeout(() => this.#abort(controller, `no data for ${this.#idleMs} ms after byte ${this.#bytes}`), this.#idleMs);
    }
  }

  /** Reason the deadline aborted the body, or undefined while it has not. */
  get reason(): string | undefined {
    return this.#reason;
  }

  /** Adds a chunk of `bytes` bytes to the count and restarts the idle limit. */
  received(bytes: number): void {
    this.#bytes += bytes;
    // A cleared timer must stay cleared, and refresh() would arm it again.
    if (!this.#cleared) {
      this.#idle?.refresh();
    }
  }

  /** Stops both limits. */
  clear(): void {
    this.#cleared = true;
    clearTimeout(this.#total);
    clearTimeout(this.#idle);
  }

  #abort(controller: AbortController, reason: string): void {
    if (this.#reason === undefined) {
      this.#reason = reason;
      this.clear();
      controller.abort();
    }
  }
}
