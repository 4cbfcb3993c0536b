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
  /**
   * PEM text of extra CA certificates to trust, added to the default store:
   * Bun's bundled Mozilla roots, the system store and `NODE_EXTRA_CA_CERTS`.
   */
  ca?: string;
  /** Retries after the first attempt, for network errors, 429 and 5xx. @default 4 */
  retryLimit?: number;
  /** Methods that are retried. @default ["get"] */
  retryMethods?: string[];
  /** Delay before the first retry in milliseconds; it doubles on each retry. @default 1000 */
  retryDelayMs?: number;
  /** Maximum delay between two retries in milliseconds, `Retry-After` included. @default 30000 */
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
    tls.ca = withDefaultCertificates(options.ca);
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
        if (tlsProblem(error) !== undefined) {
          return false;
        }
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

/**
 * Returns the CA certificates of the default store plus those in `extraPem`.
 * In Bun 1.4.5, fetch's `tls.ca` replaces the default store instead of
 * adding to it, so the store's certificates are passed along. That store
 * contains Bun's bundled roots, the system store (`SSL_CERT_FILE`,
 * `SSL_CERT_DIR`) and `NODE_EXTRA_CA_CERTS`.
 */
export function withDefaultCertificates(extraPem: string): string[] {
  // Required here so that node:tls loads only when a CA file is set,
  // because a loaded module stays resident in the idle process.
  const { getCACertificates } = require("node:tls") as typeof import("node:tls");
  const extra = extraPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [extraPem];
  return [...new Set([...getCACertificates("default"), ...getCACertificates("system"), ...extra])];
}

// Verification failures of OpenSSL (X509_V_ERR_* without the prefix) and of
// the host name check, as Bun's fetch reports them in `error.code`.
const UNTRUSTED_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "INVALID_CA",
]);
// NOTE: these names follow OpenSSL and Node. Only DEPTH_ZERO_SELF_SIGNED_CERT,
// ERR_TLS_CERT_ALTNAME_INVALID and EPROTO were checked against Bun 1.4.5.
const EXPIRED_CODES = new Set(["CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID"]);
const HOST_MISMATCH_CODES = new Set(["ERR_TLS_CERT_ALTNAME_INVALID", "HOSTNAME_MISMATCH"]);
// Bun 1.4.5 reports EPROTO when an https:// URL reaches a server without TLS.
const HANDSHAKE_CODES = new Set(["EPROTO"]);

/**
 * Why a TLS connection failed: a certificate that failed verification, or
 * a handshake that failed, most often because the server has no TLS.
 */
export type TlsProblem = "untrusted" | "expired" | "host-mismatch" | "handshake";

/** Returns why the error is a failed TLS connection, or undefined for any other error. */
export function tlsProblem(error: unknown): TlsProblem | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") {
      if (UNTRUSTED_CODES.has(code)) {
        return "untrusted";
      }
      if (EXPIRED_CODES.has(code)) {
        return "expired";
      }
      if (HOST_MISMATCH_CODES.has(code)) {
        return "host-mismatch";
      }
      if (HANDSHAKE_CODES.has(code)) {
        return "handshake";
      }
    }
    current = current.cause;
  }
  return undefined;
}

/**
 * Describes a failed TLS connection: the service, the URL, the reason and
 * the fix. `urlVariable` names the setting of the service's URL, and
 * `sslVerifyVariable` the one that turns verification off, when the service
 * has one.
 */
export function describeTlsError(
  service: string,
  url: string,
  error: unknown,
  variables: { urlVariable: string; sslVerifyVariable?: string },
): string {
  const problem = tlsProblem(error) ?? "untrusted";
  const sslVerifyVariable = variables.sslVerifyVariable;
  const reason = describeTlsReason(error);
  const skip = sslVerifyVariable ? `, or set ${sslVerifyVariable}=false to skip the check for ${service} only` : "";

  if (problem === "handshake") {
    return `${service} TLS handshake with ${url} failed (${reason}): if the server has no TLS, set ${variables.urlVariable} to an http:// URL, else check the port`;
  }
  if (problem === "expired") {
    return `${service} TLS certificate of ${url} is expired or not yet valid (${reason}): renew the server's certificate, or check this host's clock`;
  }
  if (problem === "host-mismatch") {
    return `${service} TLS certificate of ${url} does not name the host ${hostOf(url)} (${reason}): use a URL with a host name that the certificate names${skip}`;
  }
  return (
    `${service} TLS certificate of ${url} is not trusted (${reason}): set CONNECTOR_CA_FILE or ` +
    `NODE_EXTRA_CA_CERTS to a PEM file with the CA certificate that signed it${skip}`
  );
}

/** Returns `CODE: message` of the first error in the cause chain that has a code. */
function describeTlsReason(error: unknown): string {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") {
      return current.message && current.message !== code ? `${code}: ${current.message}` : code;
    }
    current = current.cause;
  }
  return describeHttpFailure(error);
}

function hostOf(url: string): string {
  try {
    return new URL(url).hostname;
  } catch {
    return url;
  }
}

const PROXY_VARIABLES = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"];

/** Proxy variables of the environment, for a start-up log line. */
export interface ProxyEnvironment {
  /** Each proxy variable that is set, with the credentials in its URL replaced by `***`. */
  variables: Record<string, string>;
  /** Passwords found in the proxy URLs, raw and percent-decoded, to mask in logs. */
  secrets: string[];
}

/**
 * Reads the proxy variables, which Bun's fetch applies by itself. In Bun
 * 1.4.5, an `http://` URL goes through `http_proxy`, else `HTTP_PROXY`, and
 * an `https://` URL through `https_proxy`, else `HTTPS_PROXY`. Both fall
 * back to `ALL_PROXY`. A host that `no_proxy`, else `NO_PROXY`, names (as
 * host, `host:port`, `.suffix` or `*`) is reached directly.
 */
export function readProxyEnvironment(env: Record<string, string | undefined>): ProxyEnvironment {
  const variables: Record<string, string> = {};
  const secrets: string[] = [];
  for (const name of PROXY_VARIABLES) {
    const value = env[name];
    if (value === undefined || value === "") {
      continue;
    }
    if (name.toUpperCase() === "NO_PROXY") {
      variables[name] = value;
      continue;
    }

    const { masked, credentials } = splitUrlCredentials(value);
    variables[name] = masked;
    const colon = credentials?.indexOf(":") ?? -1;
    if (credentials !== undefined && colon !== -1) {
      const password = credentials.slice(colon + 1);
      secrets.push(password, safeDecode(password));
    }
  }
  return { variables, secrets: [...new Set(secrets)].filter((secret) => secret !== "") };
}

/** Replaces the user name and password of a URL with `***`, as in `http://***@proxy:3128`. */
export function maskUrlCredentials(url: string): string {
  return splitUrlCredentials(url).masked;
}

/** Splits `scheme://user:password@host` at the last `@` of the authority, which a password may contain. */
function splitUrlCredentials(url: string): { masked: string; credentials?: string } {
  const schemeLength = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(url)?.[0].length ?? 0;
  const rest = url.slice(schemeLength);
  const authorityEnd = rest.search(/[/?#]/);
  const authority = authorityEnd === -1 ? rest : rest.slice(0, authorityEnd);
  const at = authority.lastIndexOf("@");
  if (at === -1) {
    return { masked: url };
  }
  return { masked: `${url.slice(0, schemeLength)}***${rest.slice(at)}`, credentials: authority.slice(0, at) };
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
