/**
 * A failure that ends the current run with a message meant for the operator.
 * `retryable` is true when the next run may succeed without a change of
 * configuration (a server error) and false when it cannot (bad credentials).
 */
export class RunError extends Error {
  override name = "RunError";
  readonly retryable: boolean;

  constructor(message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, { cause: options.cause });
    this.retryable = options.retryable ?? true;
  }
}

/** A Citalid API call failed: names the URL path, the status and the version. */
export class CitalidError extends RunError {
  override name = "CitalidError";
  readonly path: string;
  readonly status?: number;
  readonly versionId?: string;

  constructor(
    message: string,
    details: { path: string; status?: number; versionId?: string; cause?: unknown; retryable?: boolean },
  ) {
    super(message, { cause: details.cause, retryable: details.retryable });
    this.path = details.path;
    this.status = details.status;
    this.versionId = details.versionId;
  }
}

/** Download of a version that a shutdown aborted. It is not a failure of Citalid. */
export class DownloadAbortedError extends RunError {
  override name = "DownloadAbortedError";
  readonly versionId: string;

  constructor(versionId: string, options: { cause?: unknown } = {}) {
    super(`Download of Citalid version ${versionId} aborted by a shutdown`, { cause: options.cause });
    this.versionId = versionId;
  }
}

/** Citalid refused the user name and password. Retrying does not help. */
export class CitalidAuthError extends CitalidError {
  override name = "CitalidAuthError";
}

/** A downloaded version is not a usable STIX 2.1 bundle. */
export class BundleError extends RunError {
  override name = "BundleError";
  readonly versionId: string;

  constructor(versionId: string, problem: string, label = "is not a valid STIX 2.1 bundle") {
    super(`Citalid version ${versionId} ${label}: ${problem}`, {
      retryable: false,
    });
    this.versionId = versionId;
  }
}

/** A valid version contains an object or a marking definition larger than one push within `CONNECTOR_PUSH_MAX_MB`. */
export class PushLimitError extends BundleError {
  override name = "PushLimitError";

  constructor(versionId: string, problem: string) {
    super(versionId, problem, "cannot be pushed");
  }
}

/**
 * An OpenCTI GraphQL call failed. `code` is the platform's error code
 * (`AUTH_REQUIRED`, `FORBIDDEN_ACCESS`, …) or a local one: `HTTP_<status>`,
 * `NOT_GRAPHQL`, `NETWORK`, `TLS` (a certificate or handshake failure).
 */
export class OpenCTIError extends RunError {
  override name = "OpenCTIError";
  readonly code: string;
  readonly operation: string;

  constructor(message: string, details: { code: string; operation: string; cause?: unknown; retryable?: boolean }) {
    super(message, { cause: details.cause, retryable: details.retryable });
    this.code = details.code;
    this.operation = details.operation;
  }
}

// A secret key and its value. A quoted value runs to its closing quote or to
// the end of the text, so spaces and escaped quotes inside it are masked too.
// An unquoted value may start with an auth scheme: `authorization: Bearer x`.
const SECRET_FIELD =
  /("?(?:access_token|refresh_token|token|password|secret|authorization)"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|(?:(?:Bearer|Basic)\s+)?[^"&\s,}]+)/gi;

/** Shortens and masks a response body for an error message or a log line. */
export function excerpt(body: string, max = 120): string {
  const masked = body
    .replace(SECRET_FIELD, (_field, key: string, value: string) => key + (value.startsWith('"') ? '"***"' : "***"))
    .replace(/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/g, "$1 ***")
    // A JWT outside a named field: base64url header "eyJ…", payload and signature.
    .replace(/\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, "***")
    .replace(/\s+/g, " ")
    .trim();
  return masked.length > max ? masked.slice(0, max) + "…" : masked;
}

/** A failure that restarting the process does not fix; the process exits with code 2. */
export class FatalError extends Error {
  override name = "FatalError";
}

/** A one-shot run that gave up waiting for the platform at start-up. The process exits with code 1. */
export class StartupTimeoutError extends Error {
  override name = "StartupTimeoutError";
}
