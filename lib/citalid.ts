import { type KyInstance, isHTTPError, isTimeoutError } from "ky";
import { BodyDeadline } from "./body-deadline.ts";
import { CitalidAuthError, CitalidError, DownloadAbortedError, excerpt } from "./errors.ts";
import { createHttp, describeHttpFailure, describeTlsError, isTransientNetworkError, tlsProblem } from "./http.ts";
import type { Logger } from "./log.ts";
import { reportBodyProgress } from "./progress.ts";
import { JsonScanError } from "./scan.ts";

/** Public OAuth client id of Citalid's web client; its secret is empty. */
export const CITALID_CLIENT_ID = "0RcQ2BmuJRRsZKvY1Xf1gdjiwYRZhQKBNOxY9KOI";

const API_PATH = "/facade/risk-intelligence-center/api/v1";

/** Options of {@linkcode CitalidClient}. */
export interface CitalidClientOptions {
  /** Customer base URL with scheme and without a trailing slash. */
  url: string;
  user: string;
  password: string;
  /** `Accept-Language` value. @default "en" */
  language?: string;
  logger: Logger;
  userAgent: string;
  /** PEM text of extra CA certificates. */
  ca?: string;
  /** Retries after the first attempt. @default 4 */
  retryLimit?: number;
  /** First retry delay in milliseconds. @default 1000 */
  retryDelayMs?: number;
  /**
   * Time allowed for the response headers of one attempt, and for the body
   * of a response other than a download, in milliseconds. @default 30000
   */
  timeoutMs?: number;
  /** Time allowed for the body of a download, from its response headers, in milliseconds. @default 3600000 */
  downloadTimeoutMs?: number;
  /**
   * Time a download's body may go without a byte, in milliseconds, before
   * the attempt is aborted and retried like a body cut short. Not armed
   * when it is not shorter than `downloadTimeoutMs`. @default timeoutMs
   */
  downloadIdleTimeoutMs?: number;
  /**
   * Called as a download's body arrives, with the bytes received so far in
   * this attempt and the Content-Length when known, as described for
   * {@linkcode reportBodyProgress}.
   */
  onProgress?: (versionId: string, bytes: number, total: number | undefined) => void;
}

/**
 * The target of a streamed download, such as a `VersionSpool`. Each attempt
 * calls `begin`, `write` per chunk, then `end`.
 */
export interface DownloadSink<T> {
  /** Drops what an earlier attempt wrote. */
  begin(): void;
  /** Takes the next chunk. Raises JsonScanError when the body cannot be JSON. */
  write(chunk: Uint8Array): void;
  /** Completes the body and returns the result. Raises JsonScanError when the body was cut short. */
  end(): T;
  /** Returns the first bytes of the body as text, for an error message. */
  head(): string;
}

/** A version as listed by Citalid; fields other than `id` are ignored. */
export interface CitalidVersion {
  id: string;
}

/**
 * Client of the Citalid API: OAuth password-grant login, version listing and
 * version download. A 401 on an API call triggers one fresh login and one
 * retry; a second 401 raises {@linkcode CitalidAuthError}.
 */
export class CitalidClient {
  readonly #options: CitalidClientOptions;
  readonly #http: KyInstance;
  #token: string | undefined;

  constructor(options: CitalidClientOptions) {
    this.#options = options;
    this.#http = createHttp({
      service: "Citalid",
      logger: options.logger,
      userAgent: options.userAgent,
      ca: options.ca,
      retryLimit: options.retryLimit,
      retryDelayMs: options.retryDelayMs,
      timeoutMs: options.timeoutMs,
      // The token request changes nothing on the server, so retrying it is safe.
      retryMethods: ["get", "post"],
    });
  }

  /**
   * Logs in with the password grant and keeps the access token. A reply
   * whose body is cut short or late is requested again, up to `retryLimit`
   * times with backoff, like the other requests. Raises CitalidAuthError
   * when Citalid rejects the credentials, else CitalidError.
   */
  async login(): Promise<void> {
    const path = "/auth/o/token/";
    const { response, text } = await this.#readText(path, "log in to Citalid", undefined, (signal) => this.#requestToken(path, signal));

    let reply: unknown;
    try {
      reply = JSON.parse(text);
    } catch {
      // excerpt masks an access_token field, even one cut short.
      throw new CitalidError(
        `Citalid login reply on ${path} is not JSON (HTTP ${response.status}, ${contentType(response)}): ${this.#excerpt(text)}; check that CITALID_CUSTOMER_SUB_DOMAIN_URL is the address of the Citalid API`,
        { path, status: response.status },
      );
    }
    const token = (reply as { access_token?: unknown } | null)?.access_token;
    if (typeof token !== "string" || token === "") {
      throw new CitalidError(`Citalid login reply on ${path} has no access_token`, { path });
    }
    this.#options.logger.addSecrets(token);
    this.#token = token;
  }

  // Sends the token request and returns the response once its headers
  // arrive. The HTTP layer retries network errors and 5xx replies.
  async #requestToken(path: string, signal: AbortSignal): Promise<Response> {
    const body = new URLSearchParams({
      grant_type: "password",
      username: this.#options.user,
      password: this.#options.password,
    });
    try {
      return await this.#http.post(this.#options.url + path, {
        body,
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: "Basic " + btoa(CITALID_CLIENT_ID + ":"),
          "accept-language": this.#options.language ?? "en",
        },
        signal,
      });
    } catch (error) {
      if (isHTTPError(error) && (error.response.status === 400 || error.response.status === 401)) {
        throw new CitalidAuthError(
          `Citalid rejected the credentials of user "${this.#options.user}" (HTTP ${error.response.status} on ${path}): check CITALID_USER and CITALID_PASSWORD`,
          { path, status: error.response.status, retryable: false },
        );
      }
      throw await this.#wrap(error, path, "log in to Citalid");
    }
  }

  /** Lists the published version ids, in the server's order. Raises CitalidError. */
  async listVersions(): Promise<string[]> {
    const path = `${API_PATH}/stix-bundles/versions/`;
    const { response, text } = await this.#getText(path, "list the Citalid versions");

    let records: unknown;
    try {
      records = text.trim() === "" ? [] : JSON.parse(text);
    } catch {
      throw new CitalidError(
        `Citalid version list on ${path} is not JSON (HTTP ${response.status}, ${contentType(response)}): ${this.#excerpt(text)}`,
        { path, status: response.status },
      );
    }

    if (!Array.isArray(records)) {
      throw new CitalidError(
        `Citalid version list on ${path} is not a JSON array but ${describeJson(records)}`,
        { path, status: response.status, retryable: true },
      );
    }

    const ids: string[] = [];
    for (const [index, record] of records.entries()) {
      const id = (record as { id?: unknown } | null)?.id;
      if (typeof id !== "string" || id === "") {
        throw new CitalidError(
          `Citalid version list on ${path} has a record without a string id at index ${index}: ${this.#excerpt(JSON.stringify(record) ?? "null")}`,
          { path, status: response.status },
        );
      }
      ids.push(id);
    }
    return ids;
  }

  /**
   * Downloads one version into `sink` as its body arrives, so the body is
   * never held in memory. A body cut short, late, idle for
   * `downloadIdleTimeoutMs`, or that the sink rejects as not JSON is
   * downloaded again from its start, up to `retryLimit` times with backoff,
   * and each retry is logged with its attempt number.
   * Returns the sink's result and the body's size in bytes. Raises
   * CitalidError, or an error of the sink other than JsonScanError (such as
   * a failed write) unchanged.
   *
   * Once `options.signal` is aborted, the request, the body or the wait
   * before a retry under way stops at once and DownloadAbortedError is
   * raised. The caller then drops what the sink contains.
   */
  async downloadVersionTo<T>(versionId: string, sink: DownloadSink<T>, options: { signal?: AbortSignal } = {}): Promise<{ result: T; bytes: number }> {
    const stop = options.signal;
    try {
      return await this.#download(versionId, sink, stop);
    } catch (error) {
      if (stop?.aborted) {
        throw new DownloadAbortedError(versionId, { cause: error });
      }
      throw error;
    }
  }

  // Runs the attempts of downloadVersionTo. `stop` aborts each request and each wait.
  async #download<T>(versionId: string, sink: DownloadSink<T>, stop: AbortSignal | undefined): Promise<{ result: T; bytes: number }> {
    const path = `${API_PATH}/stix-bundles/versions/${encodeURIComponent(versionId)}/download/`;
    const action = `download Citalid version ${versionId}`;
    const attempts = (this.#options.retryLimit ?? 4) + 1;
    const bodyTimeoutMs = this.#options.downloadTimeoutMs ?? 3_600_000;

    for (let attempt = 1; ; attempt++) {
      stop?.throwIfAborted();
      const controller = new AbortController();
      const signal = stop ? AbortSignal.any([controller.signal, stop]) : controller.signal;
      const response = await this.#call(path, action, versionId, signal);
      const deadline = new BodyDeadline(controller, bodyTimeoutMs, this.#downloadIdleTimeoutMs());
      const onProgress = this.#options.onProgress;
      const body = onProgress ? reportBodyProgress(response, (bytes, total) => onProgress(versionId, bytes, total)) : response;
      let outcome: StreamOutcome<T>;
      try {
        outcome = await streamInto(body, sink, deadline);
      } finally {
        deadline.clear();
      }
      if (outcome.ok) {
        return { result: outcome.result, bytes: outcome.bytes };
      }

      stop?.throwIfAborted();
      const reason = deadline.reason ?? outcome.reason;
      if (attempt < attempts) {
        this.#logBodyRetry(path, versionId, attempt, attempts, reason);
        await sleep(this.#retryDelay(attempt), stop);
        continue;
      }
      if (outcome.notJson && deadline.reason === undefined) {
        throw new CitalidError(
          `Download of Citalid version ${versionId} on ${path} is not JSON after ${attempts} attempts (HTTP ${response.status}, ${contentType(response)}): ${reason}; the body starts with ${this.#excerpt(sink.head())}`,
          { path, status: response.status, versionId },
        );
      }
      throw new CitalidError(`Failed to ${action}: ${reason} on ${path} (version ${versionId}), after ${attempts} attempts`, {
        path,
        status: response.status,
        versionId,
        cause: outcome.cause,
      });
    }
  }

  /**
   * Downloads one version and parses it as JSON, holding the whole body in
   * memory; the connector uses {@linkcode downloadVersionTo} instead. A body
   * cut short, late, idle for `downloadIdleTimeoutMs` or not JSON is
   * downloaded again, a bounded number of times. Raises CitalidError.
   */
  async downloadVersion(versionId: string): Promise<{ json: unknown; bytes: number }> {
    const path = `${API_PATH}/stix-bundles/versions/${encodeURIComponent(versionId)}/download/`;
    const attempts = (this.#options.retryLimit ?? 4) + 1;

    for (let attempt = 1; ; attempt++) {
      const { response, text } = await this.#getText(path, `download Citalid version ${versionId}`, versionId);

      try {
        return { json: JSON.parse(text), bytes: Buffer.byteLength(text) };
      } catch {
        if (attempt < attempts) {
          this.#logBodyRetry(path, versionId, attempt, attempts, "body is not JSON");
          await sleep(this.#retryDelay(attempt));
          continue;
        }
        throw new CitalidError(
          `Download of Citalid version ${versionId} on ${path} is not JSON after ${attempts} attempts (HTTP ${response.status}, ${contentType(response)}): ${this.#excerpt(text)}`,
          { path, status: response.status, versionId },
        );
      }
    }
  }

  /**
   * Sends a GET and reads the whole body as text. The body must arrive
   * within `downloadTimeoutMs` for a download, else `timeoutMs`, counted
   * from the response headers, and a download's body must not go
   * `downloadIdleTimeoutMs` without a byte. A body cut short or late is
   * requested again, up to `retryLimit` times.
   */
  #getText(path: string, action: string, versionId?: string): Promise<{ response: Response; text: string }> {
    return this.#readText(path, action, versionId, (signal) => this.#call(path, action, versionId, signal));
  }

  // Sends a request with `send` and reads its whole body as text, with the
  // timeouts and retries of #getText.
  async #readText(
    path: string,
    action: string,
    versionId: string | undefined,
    send: (signal: AbortSignal) => Promise<Response>,
  ): Promise<{ response: Response; text: string }> {
    const attempts = (this.#options.retryLimit ?? 4) + 1;
    const bodyTimeoutMs = versionId
      ? (this.#options.downloadTimeoutMs ?? 3_600_000)
      : (this.#options.timeoutMs ?? 30_000);
    // Other bodies get no idle limit, because it would equal their total limit.
    const idleTimeoutMs = versionId ? this.#downloadIdleTimeoutMs() : undefined;

    for (let attempt = 1; ; attempt++) {
      const controller = new AbortController();
      const response = await send(controller.signal);
      const deadline = new BodyDeadline(controller, bodyTimeoutMs, idleTimeoutMs);
      const onProgress = this.#options.onProgress;
      const body = versionId && onProgress ? reportBodyProgress(response, (bytes, total) => onProgress(versionId, bytes, total)) : response;
      try {
        return { response, text: await readBodyText(body, deadline) };
      } catch (error) {
        const reason = deadline.reason ?? `body cut off: ${describeHttpFailure(error)}`;
        if (attempt < attempts) {
          this.#logBodyRetry(path, versionId, attempt, attempts, reason);
          await sleep(this.#retryDelay(attempt));
          continue;
        }
        const subject = versionId ? ` (version ${versionId})` : "";
        throw new CitalidError(`Failed to ${action}: ${reason} on ${path}${subject}, after ${attempts} attempts`, {
          path,
          status: response.status,
          versionId,
          cause: error,
        });
      } finally {
        deadline.clear();
      }
    }
  }

  #downloadIdleTimeoutMs(): number {
    return this.#options.downloadIdleTimeoutMs ?? this.#options.timeoutMs ?? 30_000;
  }

  async #call(path: string, action: string, versionId: string | undefined, signal: AbortSignal): Promise<Response> {
    if (this.#token === undefined) {
      await this.login();
    }

    for (let relogin = 0; ; relogin++) {
      try {
        return await this.#http.get(this.#options.url + path, {
          headers: {
            authorization: `Bearer ${this.#token}`,
            "accept-language": this.#options.language ?? "en",
          },
          timeout: this.#options.timeoutMs ?? 30_000,
          signal,
        });
      } catch (error) {
        if (isHTTPError(error) && error.response.status === 401) {
          if (relogin === 0) {
            this.#options.logger.info("Citalid token was rejected, logging in again", { path });
            await this.login();
            continue;
          }
          throw new CitalidAuthError(
            `Citalid rejected the credentials: HTTP 401 on ${path} right after a fresh login of user "${this.#options.user}"`,
            { path, status: 401, versionId, retryable: false },
          );
        }
        throw await this.#wrap(error, path, action, versionId);
      }
    }
  }

  async #wrap(error: unknown, path: string, action: string, versionId?: string): Promise<CitalidError> {
    const subject = versionId ? ` (version ${versionId})` : "";
    if (isHTTPError(error)) {
      const status = error.response.status;
      const data = typeof error.data === "string" ? error.data : JSON.stringify(error.data ?? "");
      return new CitalidError(
        `Failed to ${action}: HTTP ${status} on ${this.#options.url}${path}${subject}: ${this.#excerpt(data)}`,
        { path, status, versionId, cause: error },
      );
    }
    if (tlsProblem(error) !== undefined) {
      // Citalid has no setting that turns verification off.
      const message = describeTlsError("Citalid", this.#options.url + path, error, {
        urlVariable: "CITALID_CUSTOMER_SUB_DOMAIN_URL",
      });
      return new CitalidError(`Failed to ${action}: ${message}`, { path, versionId, cause: error, retryable: false });
    }
    if (isTimeoutError(error)) {
      return new CitalidError(`Failed to ${action}: timed out on ${this.#options.url}${path}${subject}`, {
        path,
        versionId,
        cause: error,
      });
    }
    const reason = isTransientNetworkError(error) ? describeHttpFailure(error) : String(error);
    return new CitalidError(`Failed to ${action}: ${reason} on ${this.#options.url}${path}${subject}`, {
      path,
      versionId,
      cause: error,
    });
  }

  // Cuts a reply body for a message, with the registered secrets masked
  // first: a secret cut by the length limit would no longer be found whole.
  #excerpt(body: string): string {
    return excerpt(this.#options.logger.mask(body));
  }

  #logBodyRetry(path: string, versionId: string | undefined, attempt: number, attempts: number, reason: string): void {
    this.#options.logger.warn(versionId ? "Citalid download failed, retrying" : "Citalid request failed, retrying", {
      path,
      version_id: versionId ?? null,
      attempt: attempt + 1,
      max_attempts: attempts,
      reason,
    });
  }

  #retryDelay(attempt: number): number {
    const base = (this.#options.retryDelayMs ?? 1000) * 2 ** (attempt - 1);
    return Math.min(base, 30_000) * (0.8 + Math.random() * 0.4);
  }
}

type StreamOutcome<T> =
  | { ok: true; result: T; bytes: number }
  | { ok: false; reason: string; notJson: boolean; cause?: unknown };

// Streams one attempt's body into the sink. A body cut short or not JSON is
// an outcome to retry; other errors of the sink are raised.
async function streamInto<T>(response: Response, sink: DownloadSink<T>, deadline: BodyDeadline): Promise<StreamOutcome<T>> {
  sink.begin();
  const expected = identityLength(response);
  const reader = response.body?.getReader();
  let bytes = 0;
  while (reader !== undefined) {
    let next: Awaited<ReturnType<typeof reader.read>>;
    try {
      next = await reader.read();
    } catch (error) {
      return { ok: false, notJson: false, reason: `body cut off: ${describeHttpFailure(error)}`, cause: error };
    }
    if (next.done) {
      break;
    }
    bytes += next.value.byteLength;
    try {
      sink.write(next.value);
    } catch (error) {
      // Stops the download at the first byte that cannot be JSON.
      await reader.cancel().catch(() => {});
      if (error instanceof JsonScanError) {
        return { ok: false, notJson: true, reason: `body is not JSON: ${error.message}` };
      }
      throw error;
    }
    // After the write, so that a slow sink does not count as an idle server.
    deadline.received(next.value.byteLength);
  }

  if (expected !== undefined && bytes !== expected) {
    return { ok: false, notJson: false, reason: `body cut off: ${bytes} of ${expected} bytes received` };
  }
  try {
    return { ok: true, result: sink.end(), bytes };
  } catch (error) {
    if (error instanceof JsonScanError) {
      return error.truncated
        ? { ok: false, notJson: false, reason: `body cut off: ${error.message}` }
        : { ok: false, notJson: true, reason: `body is not JSON: ${error.message}` };
    }
    throw error;
  }
}

// Reads a whole body as UTF-8 text, as Response.text() does, and reports
// each chunk to the deadline.
async function readBodyText(response: Response, deadline: BodyDeadline): Promise<string> {
  const chunks: Uint8Array[] = [];
  const reader = response.body?.getReader();
  while (reader !== undefined) {
    const next = await reader.read();
    if (next.done) {
      break;
    }
    chunks.push(next.value);
    deadline.received(next.value.byteLength);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}

// The Content-Length of a body that fetch does not decompress, else undefined.
function identityLength(response: Response): number | undefined {
  const encoding = response.headers.get("content-encoding");
  const length = Number(response.headers.get("content-length") ?? Number.NaN);
  if ((encoding !== null && encoding !== "identity") || !Number.isInteger(length) || length < 0) {
    return undefined;
  }
  return length;
}

function contentType(response: Response): string {
  return response.headers.get("content-type") ?? "no content type";
}

function describeJson(value: unknown): string {
  if (value === null) {
    return "null";
  }
  if (typeof value === "object") {
    return `an object with keys ${Object.keys(value).slice(0, 5).join(", ") || "(none)"}`;
  }
  return `a ${typeof value}`;
}

// Waits `ms` milliseconds, or less when `signal` is aborted meanwhile.
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
