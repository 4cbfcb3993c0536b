import ky, { type KyInstance, isHTTPError, isNetworkError, isTimeoutError } from "ky";
import type { Logger } from "./log.ts";

/** Options of {@linkcode createHttp}. */
export interface HttpOptions {
  /** Service name used in retry logs, for example `Citalid`. */
  service: string;
  logger: Logger;
  userAgent: string;
  /** Verify the server's TLS certificate. @default true */
  rejectUnauthorized?: boolean;
  /** PEM text of extra CA certificates to trust, added to the system store. */
  ca?: string;
  /** Retries after the first attempt, for network errors, 429 and 5xx. @default 4 */
  retryLimit?: number;
  /** Methods that are retried. @default ["get"] */
  retryMethods?: string[];
  /** Delay before the first retry in milliseconds; it doubles on each retry. @default 1000 */
  retryDelayMs?: number;
  /** Longest delay between two retries in milliseconds, `Retry-After` included. @default 30000 */
  maxRetryDelayMs?: number;
  /** Time allowed for the response headers of one attempt, in milliseconds. @default 30000 */
  timeoutMs?: number;
}

// Bun's fetch reports socket failures with these codes, which ky does not
// recognise as network errors, so it would not retry them by itself.
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ConnectionRefused",
  "ECONNRESET",
  "ConnectionClosed",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "FailedToOpenSocket",
]);

const RETRY_STATUS = [408, 429, 500, 502, 503, 504];

/**
 * Returns true when the error is a connection failure worth retrying:
 * refused, reset or closed sockets, DNS failures and ky's network errors.
 */
export function isTransientNetworkError(error: unknown): boolean {
  if (isNetworkError(error)) {
    return true;
  }

  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && NETWORK_CODES.has(code)) {
      return true;
    }
    current = current.cause;
  }
  return false;
}

/**
 * Creates the ky instance shared by a service client: a per-attempt timeout,
 * bounded retries with exponential backoff and jitter for network errors,
 * timeouts, 429 (honouring `Retry-After`) and 5xx, a log line per retry with
 * the attempt count, and the TLS settings passed to Bun's fetch.
 */
export function createHttp(options: HttpOptions): KyInstance {
  const retryLimit = options.retryLimit ?? 4;
  const baseDelay = options.retryDelayMs ?? 1000;
  const maxDelay = options.maxRetryDelayMs ?? 30_000;
  const tls: Record<string, unknown> = {};
  if (options.rejectUnauthorized === false) {
    tls.rejectUnauthorized = false;
  }
  if (options.ca) {
    tls.ca = options.ca;
  }

  return ky.create({
    timeout: options.timeoutMs ?? 30_000,
    throwHttpErrors: true,
    headers: { "user-agent": options.userAgent },
    retry: {
      limit: retryLimit,
      methods: options.retryMethods ?? ["get"],
      statusCodes: RETRY_STATUS,
      afterStatusCodes: [429, 503],
      maxRetryAfter: maxDelay,
      backoffLimit: maxDelay,
      delay: (attempt) => baseDelay * 2 ** (attempt - 1),
      // Percentage jitter keeps the backoff shape while spreading clients apart.
      jitter: (delay) => delay * (0.8 + Math.random() * 0.4),
      retryOnTimeout: true,
      shouldRetry: ({ error }) => {
        if (isTransientNetworkError(error)) {
          return true;
        }
        return undefined;
      },
    },
    fetch: (input, init) => fetch(input, { ...init, tls } as RequestInit),
    hooks: {
      beforeRetry: [
        ({ request, error, retryCount }) => {
          options.logger.warn(`${options.service} request failed, retrying`, {
            method: request.method,
            path: new URL(request.url).pathname,
            attempt: retryCount + 1,
            max_attempts: retryLimit + 1,
            reason: describeHttpFailure(error),
          });
        },
      ],
    },
  });
}

/** Describes a failed request in a few words, without headers or body. */
export function describeHttpFailure(error: unknown): string {
  if (isHTTPError(error)) {
    return `HTTP ${error.response.status}`;
  }
  if (isTimeoutError(error)) {
    return "timed out";
  }
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    const cause = error.cause instanceof Error ? error.cause : undefined;
    const causeCode = cause ? (cause as { code?: unknown }).code : undefined;
    if (typeof code === "string") {
      return code;
    }
    if (typeof causeCode === "string") {
      return causeCode;
    }
    return error.message;
  }
  return String(error);
}
