/**
 * Fake Citalid server for tests: the OAuth 2 password-grant login, the
 * versions listing and the version download, with switchable faults.
 *
 * It imitates an external system, so it imports nothing from `lib/`.
 * It listens on 127.0.0.1 on a random port.
 *
 * @example
 * ```ts
 * const citalid = await startFakeCitalid({
 *   versions: [{ id: "20250105", body: { type: "bundle", id: "bundle--1", objects: [] } }],
 * });
 * citalid.inject("download", { kind: "status", status: 503, times: 1 });
 * // ... point the connector at citalid.url, then:
 * await citalid.stop();
 * ```
 */

import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { randomBytes } from "node:crypto";
import { createReadStream, statSync } from "node:fs";
import type { AddressInfo, Socket } from "node:net";
import { Readable } from "node:stream";

/** Public OAuth client id of the Citalid API, sent with an empty secret. */
export const CITALID_CLIENT_ID = "0RcQ2BmuJRRsZKvY1Xf1gdjiwYRZhQKBNOxY9KOI";

/** Path of the token endpoint, relative to the base URL. */
export const CITALID_TOKEN_PATH = "/auth/o/token/";

/** Path of the API, relative to the base URL. */
export const CITALID_API_PATH = "/facade/risk-intelligence-center/api/v1";

/** Path of the versions listing, relative to the base URL. */
export const CITALID_VERSIONS_PATH = `${CITALID_API_PATH}/stix-bundles/versions/`;

/** Response body: bytes as they are, a string as UTF-8, anything else as JSON. */
export type CitalidBody = Uint8Array | string | object;

/** A dataset version that the fake lists and serves. */
export interface FakeCitalidVersion {
  /** Version id, usually `YYYYMMDD` followed by optional characters. */
  id: string;
  /** Download body, normally the STIX 2.1 bundle of the version. Required unless `bodyFile` is set. */
  body?: CitalidBody;
  /**
   * Path of a file served as the download body instead of `body`, read as
   * it is sent, so that a version of hundreds of MB takes no memory.
   */
  bodyFile?: string;
  /**
   * `created_at` in the listing.
   * @default the date of the `YYYYMMDD` prefix, one hour later for each
   * earlier version of the same day, or the start time of the fake
   */
  createdAt?: string;
  /** `name` in the listing. @default "Version <id>" */
  name?: string;
}

/** Options of {@link startFakeCitalid}. */
export interface FakeCitalidOptions {
  /** Versions to serve. @default [] */
  versions?: FakeCitalidVersion[];
  /** Username that the token endpoint accepts. @default "connector@example.com" */
  user?: string;
  /** Password that the token endpoint accepts. @default "fake-citalid-password" */
  password?: string;
  /** Path prefix of every route, such as "/tenant". @default "" */
  basePath?: string;
  /** Whether each listing comes in a new random order. @default true */
  shuffle?: boolean;
  /** API calls that one token allows before it gets 401. @default unlimited */
  tokenMaxRequests?: number;
  /** Lifetime of a token in milliseconds, also sent as `expires_in`. @default 36_000_000 */
  tokenTtlMs?: number;
  /** PEM key and certificate: serve HTTPS instead of HTTP. */
  tls?: { key: string; cert: string };
}

/** Route of a request. */
export type CitalidRoute = "token" | "list" | "download";

/**
 * What a fault applies to: a route, `"*"` for every request (unknown paths
 * included), or any other string as a version id, which matches the
 * downloads of that version.
 */
export type CitalidFaultTarget = CitalidRoute | "*" | (string & {});

/** Fields that every fault takes. */
export interface CitalidFaultCommon {
  /** Requests the fault applies to before it is removed. @default Infinity */
  times?: number;
  /** Wait before the fault acts, in milliseconds. @default 0 */
  delayMs?: number;
}

/**
 * A fault that replaces the normal handling of a matching request.
 *
 * - `status`: send `status` with `body` (default `{"detail": <reason>}`).
 * - `body`: send `body` with `status` (default 200), such as a listing that
 *   is not an array or a download that is not a bundle.
 * - `hang`: accept the request and never respond.
 * - `reset`: destroy the socket without answering.
 * - `truncate`: answer normally with the full `Content-Length`, send half of
 *   the body, then destroy the socket.
 * - `stall`: like `truncate`, but keep the socket open and send nothing more.
 * - `slow`: wait `delayMs`, then answer normally.
 * - `trickle`: respond as usual, but send the body in pieces of `chunkBytes`
 *   bytes, one every `intervalMs` milliseconds.
 */
export type CitalidFault = CitalidFaultCommon &
  (
    | {
        kind: "status";
        status: number;
        body?: CitalidBody;
        headers?: Record<string, string>;
      }
    | {
        kind: "body";
        body: CitalidBody;
        status?: number;
        headers?: Record<string, string>;
      }
    | { kind: "hang" }
    | { kind: "reset" }
    | { kind: "truncate" }
    | { kind: "stall" }
    | { kind: "slow"; delayMs: number }
    | { kind: "trickle"; chunkBytes: number; intervalMs: number }
  );

/** Name of a fault kind. */
export type CitalidFaultKind = CitalidFault["kind"];

/** An injected fault, returned by {@link FakeCitalid.inject}. */
export interface CitalidFaultHandle {
  readonly target: CitalidFaultTarget;
  readonly fault: CitalidFault;
  /** Requests the fault has applied to so far. */
  readonly hits: number;
  /** Requests it still applies to, `Infinity` when unlimited. */
  readonly remaining: number;
  /** Removes the fault before its `times` run out. */
  remove(): void;
}

/** A request as the fake received it. */
export interface CitalidRequest {
  method: string;
  /** Request target as sent, query string included. */
  path: string;
  /** Headers with lower-case names. Repeated headers are joined with ", ". */
  headers: Record<string, string>;
  /** Body decoded as UTF-8. */
  body: string;
  /** Arrival time, in milliseconds since the epoch. */
  time: number;
  route: CitalidRoute | "unknown";
  /** Decoded version id of a download. */
  versionId: string | null;
  acceptLanguage: string | null;
  /** Status sent, or null when no status line was sent. */
  status: number | null;
  /** Kind of the fault that handled the request. */
  fault: CitalidFaultKind | null;
}

/** A token that the token endpoint issued. */
export interface CitalidToken {
  accessToken: string;
  refreshToken: string;
  /** Issue time, in milliseconds since the epoch. */
  issuedAt: number;
  /** API calls accepted with this token. */
  requests: number;
  /** Whether the token was revoked by the fake's controls. */
  revoked: boolean;
}

/** Request counters of the fake. */
export interface CitalidCounts {
  /** Requests to the token endpoint, failed ones included. */
  tokenRequests: number;
  /** Tokens issued. */
  logins: number;
  /** Requests to the versions listing, failed ones included. */
  lists: number;
  /** Requests to a version download, by decoded version id, failed ones included. */
  downloads: Record<string, number>;
  /** Requests to any version download. */
  downloadsTotal: number;
  /** API calls rejected with 401. */
  unauthorized: number;
}

/** A running fake Citalid server. */
export interface FakeCitalid {
  /** Base URL to configure in the connector, `basePath` included. */
  readonly url: string;
  /** Origin, such as `http://127.0.0.1:41234`. */
  readonly origin: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly basePath: string;
  /** Every request, oldest first. */
  readonly requests: CitalidRequest[];
  /** Every token issued, oldest first. */
  readonly tokens: CitalidToken[];
  readonly counts: CitalidCounts;
  /** Faults still active, in the order they are matched. */
  readonly faults: readonly CitalidFaultHandle[];
  /** Whether listings are shuffled. Tests may change it at any time. */
  shuffle: boolean;
  /** API calls per token, `Infinity` for unlimited. Tests may change it at any time. */
  tokenMaxRequests: number;

  /** Replaces the served versions. */
  setVersions(versions: FakeCitalidVersion[]): void;
  /** Adds a version, or replaces the one with the same id. */
  addVersion(version: FakeCitalidVersion): void;
  /** Removes a version and returns whether it existed. */
  removeVersion(id: string): boolean;
  /** Returns the version ids in the order they were set. */
  versionIds(): string[];
  /**
   * Adds a fault for the requests matching `target`. When several faults
   * match a request, the oldest one applies.
   */
  inject(target: CitalidFaultTarget, fault: CitalidFault): CitalidFaultHandle;
  /** Removes every fault. */
  clearFaults(): void;
  /** Revokes every token issued so far, so API calls get 401 until a new login. */
  rejectAllTokens(): void;
  /**
   * Revokes every token issued so far right after `count` more successful
   * downloads, so the next API call gets 401.
   */
  rejectTokensAfterDownloads(count: number): void;
  /** Clears the recorded requests and counters, but keeps tokens and faults. */
  clearRecords(): void;
  /** Closes the server and every open connection. */
  stop(): Promise<void>;
}

interface StoredVersion {
  id: string;
  body: Buffer;
  file: BodyFile | undefined;
  createdAt: string | undefined;
  name: string;
}

interface ActiveFault {
  target: CitalidFaultTarget;
  fault: CitalidFault;
  hits: number;
  remaining: number;
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** Sent instead of `body` when set. */
  file?: BodyFile;
}

interface BodyFile {
  path: string;
  size: number;
}

interface Routed {
  route: CitalidRoute | "unknown";
  versionId: string | null;
  /** Set when the path names a download whose id is not valid percent-encoding. */
  badEncoding: boolean;
}

const DEFAULT_USER = "connector@example.com";
const DEFAULT_PASSWORD = "fake-citalid-password";
const DEFAULT_TOKEN_TTL_MS = 36_000_000;
const DOWNLOAD_PREFIX = `${CITALID_API_PATH}/stix-bundles/versions/`;
const DOWNLOAD_SUFFIX = "/download/";

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/**
 * Starts a fake Citalid server on 127.0.0.1 on a random port.
 *
 * Routes, under `basePath`:
 * - `POST /auth/o/token/`: password grant. It requires the form content type,
 *   Basic auth with {@link CITALID_CLIENT_ID} and an empty secret, and the
 *   configured user and password. A wrong password gets 400 `invalid_grant`.
 * - `GET <api>/stix-bundles/versions/`: JSON array of `{id, created_at, name}`.
 * - `GET <api>/stix-bundles/versions/<percent-encoded id>/download/`: the body.
 *
 * API calls require `Authorization: Bearer <token>` with a token that is not
 * revoked, expired or used up, and get 401 otherwise.
 */
export async function startFakeCitalid(
  options: FakeCitalidOptions = {},
): Promise<FakeCitalid> {
  const user = options.user ?? DEFAULT_USER;
  const password = options.password ?? DEFAULT_PASSWORD;
  const basePath = normalizeBasePath(options.basePath ?? "");
  const tokenTtlMs = options.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS;
  const startedAt = new Date();

  let versions: StoredVersion[] = [];
  const faults: ActiveFault[] = [];
  const requests: CitalidRequest[] = [];
  const tokens: CitalidToken[] = [];
  const counts: CitalidCounts = emptyCounts();
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let revokeAfterDownloads: number | null = null;
  let stopped = false;

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      handle(req, res, Buffer.concat(chunks)).catch((error: unknown) => {
        failRequest(res, req, error);
      });
    });
    // A client that disconnects mid-request emits "error" on the request,
    // and an unhandled "error" event would crash the test process.
    req.on("error", () => {
      req.socket.destroy();
    });
  };

  const server: Server =
    options.tls === undefined
      ? createHttpServer(handler)
      : createHttpsServer(
          { key: options.tls.key, cert: options.tls.cert },
          handler,
        );

  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });

  const port = (server.address() as AddressInfo).port;
  const origin = `${options.tls === undefined ? "http" : "https"}://127.0.0.1:${port}`;

  const fake: FakeCitalid = {
    url: origin + basePath,
    origin,
    port,
    user,
    password,
    basePath,
    requests,
    tokens,
    counts,
    get faults() {
      return faults.map(toHandle);
    },
    shuffle: options.shuffle !== false,
    tokenMaxRequests: options.tokenMaxRequests ?? Infinity,

    setVersions(next) {
      versions = next.map(storeVersion);
    },

    addVersion(version) {
      const stored = storeVersion(version);
      const index = versions.findIndex(
        (existing) => existing.id === version.id,
      );

      if (index === -1) {
        versions.push(stored);
      } else {
        versions[index] = stored;
      }
    },

    removeVersion(id) {
      const before = versions.length;
      versions = versions.filter((version) => version.id !== id);

      return versions.length !== before;
    },

    versionIds() {
      return versions.map((version) => version.id);
    },

    inject(target, fault) {
      const active: ActiveFault = {
        target,
        fault,
        hits: 0,
        remaining: fault.times ?? Infinity,
      };
      faults.push(active);

      return toHandle(active);
    },

    clearFaults() {
      faults.length = 0;
    },

    rejectAllTokens() {
      revokeAll();
    },

    rejectTokensAfterDownloads(count) {
      if (count <= 0) {
        revokeAll();
        revokeAfterDownloads = null;
      } else {
        revokeAfterDownloads = count;
      }
    },

    clearRecords() {
      requests.length = 0;
      Object.assign(counts, emptyCounts());
    },

    async stop() {
      stopped = true;

      for (const timer of timers) {
        clearTimeout(timer);
      }
      timers.clear();

      const closed = new Promise<void>((resolve) =>
        server.close(() => resolve()),
      );
      for (const socket of sockets) {
        socket.destroy();
      }
      await closed;
    },
  };

  fake.setVersions(options.versions ?? []);

  return fake;

  function toHandle(active: ActiveFault): CitalidFaultHandle {
    return {
      target: active.target,
      fault: active.fault,
      get hits() {
        return active.hits;
      },
      get remaining() {
        return active.remaining;
      },
      remove() {
        const index = faults.indexOf(active);
        if (index !== -1) {
          faults.splice(index, 1);
        }
      },
    };
  }

  function revokeAll(): void {
    for (const token of tokens) {
      token.revoked = true;
    }
  }

  function delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });
  }

  async function handle(
    req: IncomingMessage,
    res: ServerResponse,
    body: Buffer,
  ): Promise<void> {
    const path = req.url ?? "/";
    const routed = route(path, basePath);
    const record: CitalidRequest = {
      method: req.method ?? "GET",
      path,
      headers: flattenHeaders(req),
      body: body.toString("utf8"),
      time: Date.now(),
      route: routed.route,
      versionId: routed.versionId,
      acceptLanguage: headerValue(req, "accept-language"),
      status: null,
      fault: null,
    };
    requests.push(record);
    countRequest(routed);

    const fault = takeFault(routed);
    if (fault !== null) {
      record.fault = fault.kind;
      if (fault.delayMs !== undefined && fault.delayMs > 0) {
        await delay(fault.delayMs);
      }
      if (stopped) {
        return;
      }
    }

    if (fault?.kind === "hang") {
      return;
    }

    if (fault?.kind === "reset") {
      req.socket.destroy();
      return;
    }

    if (fault?.kind === "status" || fault?.kind === "body") {
      const status =
        fault.kind === "status" ? fault.status : (fault.status ?? 200);
      const reply = makeReply(
        status,
        fault.body ?? defaultErrorBody(status),
        fault.headers,
      );
      send(res, record, reply);
      return;
    }

    const reply = answer(req, record, routed, body);

    if (fault?.kind === "truncate" || fault?.kind === "stall") {
      sendPartially(res, record, reply, fault.kind === "truncate");
      return;
    }

    if (fault?.kind === "trickle") {
      sendSlowly(res, record, reply, fault.chunkBytes, fault.intervalMs);
    } else {
      send(res, record, reply);
    }

    if (routed.route === "download" && reply.status === 200) {
      countSuccessfulDownload();
    }
  }

  function countRequest(routed: Routed): void {
    if (routed.route === "token") {
      counts.tokenRequests += 1;
    } else if (routed.route === "list") {
      counts.lists += 1;
    } else if (routed.route === "download" && routed.versionId !== null) {
      counts.downloads[routed.versionId] =
        (counts.downloads[routed.versionId] ?? 0) + 1;
      counts.downloadsTotal += 1;
    }
  }

  function countSuccessfulDownload(): void {
    if (revokeAfterDownloads === null) {
      return;
    }

    revokeAfterDownloads -= 1;
    if (revokeAfterDownloads <= 0) {
      revokeAll();
      revokeAfterDownloads = null;
    }
  }

  function takeFault(routed: Routed): CitalidFault | null {
    const active = faults.find((candidate) =>
      faultMatches(candidate.target, routed),
    );
    if (active === undefined) {
      return null;
    }

    active.hits += 1;
    active.remaining -= 1;
    if (active.remaining <= 0) {
      faults.splice(faults.indexOf(active), 1);
    }

    return active.fault;
  }

  function answer(
    req: IncomingMessage,
    record: CitalidRequest,
    routed: Routed,
    body: Buffer,
  ): Reply {
    if (routed.route === "unknown") {
      return notFoundPage();
    }

    if (routed.route === "token") {
      return answerToken(req, body);
    }

    if (req.method !== "GET") {
      return makeReply(
        405,
        { detail: `Method "${req.method}" not allowed.` },
        { Allow: "GET" },
      );
    }

    const unauthorized = authorize(req);
    if (unauthorized !== null) {
      counts.unauthorized += 1;
      return unauthorized;
    }

    if (routed.route === "list") {
      return makeReply(200, listing());
    }

    if (routed.badEncoding) {
      return makeReply(400, {
        detail: `Invalid percent-encoding in "${record.path}".`,
      });
    }

    const version = versions.find(
      (candidate) => candidate.id === routed.versionId,
    );
    if (version === undefined) {
      return makeReply(404, { detail: "Not found." });
    }

    return {
      status: 200,
      headers: {
        "Content-Type": "application/json",
        "Content-Disposition": `attachment; filename="${encodeURIComponent(version.id)}.json"`,
      },
      body: version.body,
      file: version.file,
    };
  }

  function answerToken(req: IncomingMessage, body: Buffer): Reply {
    if (req.method !== "POST") {
      return makeReply(405, "", { Allow: "POST" });
    }

    const contentType = (headerValue(req, "content-type") ?? "")
      .split(";")[0]
      ?.trim()
      .toLowerCase();
    if (contentType !== "application/x-www-form-urlencoded") {
      return makeReply(400, {
        error: "invalid_request",
        error_description:
          "Content-Type must be application/x-www-form-urlencoded.",
      });
    }

    if (!hasClientCredentials(headerValue(req, "authorization"))) {
      return makeReply(
        401,
        { error: "invalid_client" },
        { "WWW-Authenticate": 'Basic realm="oauth2"' },
      );
    }

    // URLSearchParams applies form decoding: "+" is a space and %XX
    // sequences are UTF-8 bytes, so passwords with "&", "=", "%" or non-ASCII
    // characters arrive intact when the client encodes them.
    const form = new URLSearchParams(body.toString("utf8"));

    if (form.get("grant_type") !== "password") {
      return makeReply(400, { error: "unsupported_grant_type" });
    }

    if (form.get("username") !== user || form.get("password") !== password) {
      return makeReply(400, {
        error: "invalid_grant",
        error_description: "Invalid credentials given.",
      });
    }

    const token: CitalidToken = {
      accessToken: randomBytes(24).toString("base64url"),
      refreshToken: randomBytes(24).toString("base64url"),
      issuedAt: Date.now(),
      requests: 0,
      revoked: false,
    };
    tokens.push(token);
    counts.logins += 1;

    return makeReply(
      200,
      {
        access_token: token.accessToken,
        token_type: "Bearer",
        expires_in: Math.ceil(tokenTtlMs / 1000),
        refresh_token: token.refreshToken,
        scope: "read write",
      },
      { "Cache-Control": "no-store", Pragma: "no-cache" },
    );
  }

  // Returns a 401 reply, or null when the request carries a usable token,
  // which then counts one API call.
  function authorize(req: IncomingMessage): Reply | null {
    const header = headerValue(req, "authorization") ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    const token =
      match === null
        ? undefined
        : tokens.find((candidate) => candidate.accessToken === match[1]);
    const usable =
      token !== undefined &&
      !token.revoked &&
      Date.now() - token.issuedAt < tokenTtlMs &&
      token.requests < fake.tokenMaxRequests;

    if (!usable) {
      return makeReply(
        401,
        { detail: "Authentication credentials were not provided." },
        { "WWW-Authenticate": 'Bearer realm="api"' },
      );
    }

    token.requests += 1;

    return null;
  }

  function listing(): { id: string; created_at: string; name: string }[] {
    const records = versions.map((version, index) => ({
      id: version.id,
      created_at:
        version.createdAt ?? defaultCreatedAt(versions, index, startedAt),
      name: version.name,
    }));

    if (fake.shuffle) {
      shuffleInPlace(records);
    }

    return records;
  }
}

function storeVersion(version: FakeCitalidVersion): StoredVersion {
  return {
    id: version.id,
    body: toBuffer(version.body ?? ""),
    file: version.bodyFile === undefined ? undefined : { path: version.bodyFile, size: statSync(version.bodyFile).size },
    createdAt: version.createdAt,
    name: version.name ?? `Version ${version.id}`,
  };
}

function emptyCounts(): CitalidCounts {
  return {
    tokenRequests: 0,
    logins: 0,
    lists: 0,
    downloads: {},
    downloadsTotal: 0,
    unauthorized: 0,
  };
}

function normalizeBasePath(basePath: string): string {
  const trimmed = basePath.replace(/\/+$/, "");

  if (trimmed === "") {
    return "";
  }

  return trimmed.startsWith("/") ? trimmed : `/${trimmed}`;
}

function route(path: string, basePath: string): Routed {
  const pathname = path.split("?")[0] ?? "";
  const unknown: Routed = {
    route: "unknown",
    versionId: null,
    badEncoding: false,
  };

  if (!pathname.startsWith(`${basePath}/`)) {
    return unknown;
  }

  const rest = pathname.slice(basePath.length);

  if (rest === CITALID_TOKEN_PATH) {
    return { route: "token", versionId: null, badEncoding: false };
  }

  if (rest === CITALID_VERSIONS_PATH) {
    return { route: "list", versionId: null, badEncoding: false };
  }

  if (rest.startsWith(DOWNLOAD_PREFIX) && rest.endsWith(DOWNLOAD_SUFFIX)) {
    const segment = rest.slice(
      DOWNLOAD_PREFIX.length,
      rest.length - DOWNLOAD_SUFFIX.length,
    );

    // A raw "/" in the id would split it into two path segments, so an id
    // that the client did not percent-encode does not reach this route.
    if (segment === "" || segment.includes("/")) {
      return unknown;
    }

    try {
      return {
        route: "download",
        versionId: decodeURIComponent(segment),
        badEncoding: false,
      };
    } catch {
      return { route: "download", versionId: segment, badEncoding: true };
    }
  }

  return unknown;
}

function faultMatches(target: CitalidFaultTarget, routed: Routed): boolean {
  if (target === "*") {
    return true;
  }

  if (target === "token" || target === "list" || target === "download") {
    return routed.route === target;
  }

  return routed.route === "download" && routed.versionId === target;
}

function hasClientCredentials(header: string | null): boolean {
  const match = /^Basic\s+(\S+)$/i.exec(header ?? "");

  if (match === null || match[1] === undefined) {
    return false;
  }

  return (
    Buffer.from(match[1], "base64").toString("utf8") === `${CITALID_CLIENT_ID}:`
  );
}

function defaultCreatedAt(
  versions: StoredVersion[],
  index: number,
  startedAt: Date,
): string {
  const version = versions[index];
  const match =
    version === undefined ? null : /^(\d{4})(\d{2})(\d{2})/.exec(version.id);

  if (match === null) {
    return startedAt.toISOString();
  }

  const day = match[0];
  const earlierSameDay = versions
    .slice(0, index)
    .filter((other) => other.id.startsWith(day)).length;
  const hour = String(Math.min(earlierSameDay, 23)).padStart(2, "0");

  return `${match[1]}-${match[2]}-${match[3]}T${hour}:00:00.000000Z`;
}

function shuffleInPlace<T>(items: T[]): void {
  for (let i = items.length - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    const item = items[i] as T;
    items[i] = items[j] as T;
    items[j] = item;
  }
}

function toBuffer(body: CitalidBody): Buffer {
  if (body instanceof Uint8Array) {
    return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  }

  if (typeof body === "string") {
    return Buffer.from(body, "utf8");
  }

  return Buffer.from(JSON.stringify(body), "utf8");
}

function contentTypeOf(body: CitalidBody): string {
  if (body instanceof Uint8Array) {
    return "application/octet-stream";
  }

  if (typeof body === "string") {
    return body.trimStart().startsWith("<")
      ? "text/html; charset=utf-8"
      : "text/plain; charset=utf-8";
  }

  return "application/json";
}

function makeReply(
  status: number,
  body: CitalidBody,
  headers: Record<string, string> = {},
): Reply {
  const hasContentType = Object.keys(headers).some(
    (name) => name.toLowerCase() === "content-type",
  );
  const buffer = toBuffer(body);

  return {
    status,
    headers:
      hasContentType || buffer.length === 0
        ? headers
        : { "Content-Type": contentTypeOf(body), ...headers },
    body: buffer,
  };
}

function defaultErrorBody(status: number): CitalidBody {
  return { detail: REASONS[status] ?? `HTTP ${status}` };
}

function notFoundPage(): Reply {
  const html =
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n' +
    "<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n";

  return makeReply(404, html);
}

function send(res: ServerResponse, record: CitalidRequest, reply: Reply): void {
  record.status = reply.status;
  res.writeHead(reply.status, {
    ...reply.headers,
    "Content-Length": String(reply.file?.size ?? reply.body.length),
  });
  if (reply.file !== undefined) {
    createReadStream(reply.file.path).pipe(res);
    return;
  }
  res.end(reply.body);
}

// Sends the status line, the headers with the full Content-Length and half
// of the body. With `destroy`, the socket is destroyed once that half is
// flushed. Otherwise it stays open until stop().
function sendPartially(
  res: ServerResponse,
  record: CitalidRequest,
  reply: Reply,
  destroy: boolean,
): void {
  record.status = reply.status;
  const size = reply.file?.size ?? reply.body.length;
  res.writeHead(reply.status, {
    ...reply.headers,
    "Content-Length": String(size),
  });

  const afterHalf = () => {
    if (destroy) {
      res.socket?.destroy();
    }
  };
  if (reply.file !== undefined && size >= 2) {
    const half = createReadStream(reply.file.path, { start: 0, end: Math.floor(size / 2) - 1 });
    half.pipe(res, { end: false });
    // An empty write calls back once the half before it is flushed.
    half.on("end", () => res.write("", afterHalf));
    return;
  }
  res.write(reply.body.subarray(0, Math.floor(reply.body.length / 2)), afterHalf);
}

// Sends the reply with its full Content-Length, `chunkBytes` bytes of the
// body at a time with `intervalMs` between two pieces. Stops when the
// response is destroyed, such as by stop() or by the client.
function sendSlowly(
  res: ServerResponse,
  record: CitalidRequest,
  reply: Reply,
  chunkBytes: number,
  intervalMs: number,
): void {
  record.status = reply.status;
  res.writeHead(reply.status, {
    ...reply.headers,
    "Content-Length": String(reply.file?.size ?? reply.body.length),
  });

  const source =
    reply.file !== undefined
      ? createReadStream(reply.file.path, { highWaterMark: chunkBytes })
      : Readable.from(pieces(reply.body, chunkBytes));
  source.on("data", (chunk: Buffer) => {
    source.pause();
    res.write(chunk);
    setTimeout(() => {
      if (res.destroyed) {
        source.destroy();
      } else {
        source.resume();
      }
    }, intervalMs);
  });
  source.on("end", () => res.end());
}

function* pieces(body: Buffer, size: number): Generator<Buffer> {
  for (let start = 0; start < body.length; start += size) {
    yield body.subarray(start, start + size);
  }
}

function headerValue(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name];

  if (value === undefined) {
    return null;
  }

  return Array.isArray(value) ? value.join(", ") : value;
}

function flattenHeaders(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};

  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) {
      headers[name] = Array.isArray(value) ? value.join(", ") : value;
    }
  }

  return headers;
}

// Reports a bug in the fake itself as a 500, so that the test sees a failed
// request instead of a hang, and logs it for the test output.
function failRequest(
  res: ServerResponse,
  req: IncomingMessage,
  error: unknown,
): void {
  console.error(`fake Citalid failed on ${req.method} ${req.url}:`, error);

  if (res.headersSent) {
    res.destroy();
    return;
  }

  res.writeHead(500, { "Content-Type": "text/plain; charset=utf-8" });
  res.end(`fake Citalid failed: ${String(error)}`);
}
