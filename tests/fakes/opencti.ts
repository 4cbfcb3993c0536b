/**
 * Fake OpenCTI platform for tests: the GraphQL endpoint that an
 * EXTERNAL_IMPORT connector uses (registration, ping and connector state,
 * works, `stixBundlePush`, author identities), with switchable faults.
 *
 * Every request is parsed and validated against `tests/fixtures/schema.graphql`
 * and executed by graphql-js with in-memory resolvers. Errors follow the
 * platform's format: HTTP 200 with `{message, name: CODE, extensions: {code,
 * data: {http_status, genre}}}`. It imitates an external system, so it
 * imports nothing from `lib/`. It listens on 127.0.0.1 on a random port.
 *
 * @example
 * ```ts
 * const opencti = await startFakeOpenCTI();
 * // ... run the connector with OPENCTI_URL=opencti.url and OPENCTI_TOKEN=opencti.token
 * expect(opencti.pushes).toHaveLength(4);
 * await opencti.stop();
 * ```
 */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { randomUUID } from "node:crypto";
import type { AddressInfo, Socket } from "node:net";
import {
  buildASTSchema,
  execute,
  GraphQLError,
  Kind,
  parse,
  specifiedRules,
  validate,
  visit,
  type DocumentNode,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type ValidationRule,
} from "graphql";

/** Bearer token that the fake accepts unless `options.token` is set. */
export const DEFAULT_OPENCTI_TOKEN = "fake-opencti-token-3f9c1e7a";

/** Id of the user that the token authenticates, unless `options.userId` is set. */
export const DEFAULT_OPENCTI_USER_ID = "5b2e9d1c-7a4f-4c3e-9b8d-2f6a1e0c4d7b";

/** Platform version returned by `about { version }` unless `options.version` is set. */
export const DEFAULT_OPENCTI_VERSION = "6.9.22";

/**
 * Default request body limit in bytes: the platform's `app:max_payload_body_size`
 * default of "50mb", which Express reads as 50 × 1024 × 1024 bytes.
 */
export const DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024;

/**
 * Schema fields that first shipped in OpenCTI 7.x. Pass them as
 * `hiddenFields` to emulate a 6.9.x platform, which rejects them with
 * GRAPHQL_VALIDATION_FAILED.
 */
export const SCHEMA_FIELDS_SINCE_7: readonly string[] = Object.freeze([
  "Connector.jwks",
  "Connector.xtm_one_intent",
  "Connector.last_seen_at",
  "Connector.version",
  "Connector.slug",
  "RegisterConnectorInput.xtm_one_intent",
  "RegisterConnectorInput.version",
  "RegisterConnectorInput.slug",
]);

/**
 * Schema fields that first shipped in OpenCTI 6.9.10. Add them to
 * `hiddenFields` to emulate a platform older than 6.9.10.
 */
export const SCHEMA_FIELDS_SINCE_6_9_10: readonly string[] = Object.freeze([
  "ConnectorConfig.s3",
]);

/** RabbitMQ settings that `registerConnector` hands to the connector. */
export interface RabbitMQConnection {
  host: string;
  vhost: string;
  use_ssl: boolean;
  port: number;
  user: string;
  pass: string;
}

/** Queue counters that `connector_queue_details` returns. */
export interface QueueDetails {
  /** Messages waiting in the push queue. */
  messages_number: number;
  /** Size of those messages, in bytes. */
  messages_size: number;
}

/** Connector information sent with `pingConnector`. */
export interface ConnectorInfo {
  run_and_terminate: boolean;
  buffering: boolean;
  /** Queue threshold, in MB. */
  queue_threshold: number;
  /** Queue size, in MB. */
  queue_messages_size: number;
  next_run_datetime?: string | null;
  last_run_datetime?: string | null;
}

/** Input of `registerConnector`. */
export interface RegisterConnectorInput {
  id: string;
  name: string;
  type: string;
  scope?: string[] | null;
  auto?: boolean | null;
  auto_update?: boolean | null;
  enrichment_resolution?: string | null;
  only_contextual?: boolean | null;
  playbook_compatible?: boolean | null;
  listen_callback_uri?: string | null;
  xtm_one_intent?: string | null;
  version?: string | null;
  slug?: string | null;
}

/** A stored connector. */
export interface FakeConnector {
  id: string;
  name: string;
  type: string;
  scope: string[] | null;
  /** Last input of `registerConnector`, or null for a seeded connector. */
  registration: RegisterConnectorInput | null;
  /** Stored state string, exactly as the last ping sent it. */
  state: string | null;
  /** Set by a reset. The next ping clears it and does not store its state. */
  stateReset: boolean;
  stateTimestamp: string;
  userId: string;
  /** Last `connectorInfo` sent with a ping. */
  info: ConnectorInfo | null;
  createdAt: string;
  updatedAt: string;
}

/** Status of a work. */
export type WorkStatus = "wait" | "progress" | "complete" | "timeout";

/** A message or error of a work. */
export interface WorkMessage {
  timestamp: string;
  message: string | null;
  sequence: number;
  source: string | null;
}

/** A stored work. */
export interface FakeWork {
  id: string;
  connectorId: string;
  name: string | null;
  status: WorkStatus;
  /** Creation time, ISO 8601. */
  timestamp: string;
  receivedTime: string | null;
  processedTime: string | null;
  completedTime: string | null;
  completedNumber: number | null;
  updatedAt: string;
  messages: WorkMessage[];
  /** Errors, at most 100 of them, as on the platform. */
  errors: WorkMessage[];
  /** Sum of `addExpectations`. */
  expected: number;
  /** Count of `reportExpectation` calls. */
  processed: number;
  lastProcessed: string | null;
  toProcessedCalls: number;
  draftContext: string | null;
  /** Root field that created the work. */
  createdBy: "workAdd" | "stixBundlePush";
}

/** A bundle received through `stixBundlePush`. */
export interface FakePush {
  connectorId: string;
  /** Work of the push: the one sent, or the one created for it. */
  workId: string;
  /** `work_id` argument as sent. */
  workIdSent: string | null;
  /** Whether `workIdSent` named a stored work. */
  workKnown: boolean;
  bundle: PushedBundle;
  /** Size of the `bundle` argument, in UTF-8 bytes. */
  bytes: number;
  time: number;
}

/** A parsed bundle as pushed. */
export interface PushedBundle {
  type: "bundle";
  id?: string;
  objects: { type: string; id: string; [property: string]: unknown }[];
  [property: string]: unknown;
}

/** A `pingConnector` call. */
export interface FakePing {
  connectorId: string;
  /** `state` argument as sent, or null when absent. */
  state: string | null;
  connectorInfo: ConnectorInfo | null;
  /** Whether the ping only cleared the reset flag and its state was dropped. */
  stateIgnored: boolean;
  time: number;
}

/** A GraphQL operation that passed validation. */
export interface FakeOperation {
  operationName: string | null;
  operationType: "query" | "mutation" | "subscription";
  /** Root fields selected, aliases resolved to field names. */
  rootFields: string[];
  time: number;
}

/** An HTTP request as the fake received it. */
export interface FakeOpenCTIRequest {
  method: string;
  path: string;
  /** Headers with lower-case names. Repeated headers are joined with ", ". */
  headers: Record<string, string>;
  userAgent: string | null;
  /** Body as UTF-8, or "" when `recordBodies` is off or the body exceeded the limit. */
  body: string;
  bodyBytes: number;
  time: number;
  /** Status sent, or null when no status line was sent. */
  status: number | null;
}

/** An identity created through `identityAdd` or `organizationAdd`, or pushed in a bundle. */
export interface FakeIdentity {
  id: string;
  standardId: string;
  type: string;
  name: string;
  description: string | null;
  input: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}

/** Fields that every fault takes. */
export interface OpenCTIFaultCommon {
  /** Calls the fault applies to before it is removed. @default Infinity */
  times?: number;
  /** Matching calls let through unchanged before the fault starts to apply. @default 0 */
  skip?: number;
  /**
   * Text that the request body must contain for the fault to match, such as
   * the name of an object in a pushed bundle (JSON-escaped, as sent).
   * @default any body
   */
  bodyIncludes?: string;
}

/**
 * A fault for requests that select a given root field, or every request.
 *
 * Request-level kinds, which respond to the whole HTTP request:
 * - `status`: send `status` (such as 500, 502 or 503) with `body`
 *   (default: an nginx-style HTML error page) and `headers`.
 * - `html404`: send the Express page "Cannot POST /graphql" with status 404.
 * - `reset`: destroy the socket without answering.
 * - `hang`: never respond.
 * - `stall`: send the headers of a successful response and half of its
 *   body, then nothing more, keeping the socket open.
 *
 * Field-level kinds, which act in the resolver of the root field:
 * - `error`: raise a platform error with `code` (such as FORBIDDEN_ACCESS,
 *   AUTH_REQUIRED or LOCK_ERROR), so the response has HTTP 200 and `errors`.
 * - `delay`: wait `delayMs` milliseconds, then resolve normally.
 */
export type OpenCTIFault = OpenCTIFaultCommon &
  (
    | {
        kind: "status";
        status: number;
        body?: string | object;
        headers?: Record<string, string>;
      }
    | { kind: "html404" }
    | { kind: "reset" }
    | { kind: "hang" }
    | { kind: "stall" }
    | {
        kind: "error";
        code: string;
        message?: string;
        /** `extensions.data.http_status`. @default the platform's value for `code`, else 500 */
        httpStatus?: number;
      }
    | { kind: "delay"; delayMs: number }
  );

/** An injected fault, returned by {@link FakeOpenCTI.inject}. */
export interface OpenCTIFaultHandle {
  /** Root field name, or `"*"` for every request. */
  readonly field: string;
  readonly fault: OpenCTIFault;
  readonly hits: number;
  readonly remaining: number;
  remove(): void;
}

/** Options of {@link startFakeOpenCTI}. */
export interface FakeOpenCTIOptions {
  /** Bearer token to accept. @default DEFAULT_OPENCTI_TOKEN */
  token?: string;
  /** Id of the user behind the token, stored as `connector_user_id`. @default DEFAULT_OPENCTI_USER_ID */
  userId?: string;
  /** `about { version }`. @default "6.9.22" */
  version?: string;
  /** Path prefix of the endpoint, such as "/opencti". @default "" */
  basePath?: string;
  /** RabbitMQ settings returned in `config.connection`. @default 127.0.0.1:5672, vhost "/", guest/guest, no TLS */
  rabbitmq?: Partial<RabbitMQConnection>;
  /** Request body limit, in bytes. @default DEFAULT_MAX_BODY_BYTES */
  maxBodyBytes?: number;
  /** Initial `connector_queue_details`. @default zeros */
  queueDetails?: QueueDetails;
  /** `Type.field` names to remove from the schema, such as {@link SCHEMA_FIELDS_SINCE_7}. @default [] */
  hiddenFields?: readonly string[];
  /**
   * Whether to play the worker for each push: add one expectation per object
   * and report each as processed, which completes the work. @default false
   */
  simulateWorker?: boolean;
  /** Whether to keep request bodies in `requests`. @default true */
  recordBodies?: boolean;
  /**
   * Whether to keep each pushed bundle in `pushes`. With false, pushes are
   * validated and counted in `pushTotals` only, so that a benchmark can push
   * gigabytes. @default true
   */
  keepPushes?: boolean;
  /** PEM key and certificate: serve HTTPS instead of HTTP. */
  tls?: { key: string; cert: string };
}

/** A running fake OpenCTI platform. */
export interface FakeOpenCTI {
  /** Platform URL to configure as OPENCTI_URL, `basePath` included. */
  readonly url: string;
  /** URL of the GraphQL endpoint. */
  readonly graphqlUrl: string;
  readonly port: number;
  readonly token: string;
  readonly userId: string;
  /** Whether the listener is open. */
  readonly isUp: boolean;
  /** `about { version }`. Tests may change it at any time. */
  version: string;
  /** Request body limit in bytes. Tests may change it at any time. */
  maxBodyBytes: number;
  /** `connector_queue_details` of every connector. Tests may change it at any time. */
  queueDetails: QueueDetails;
  /** Whether pushes are processed as the worker would. Tests may change it at any time. */
  simulateWorker: boolean;

  readonly connectors: Map<string, FakeConnector>;
  /** Stored works, oldest first. Deleted works move to `deletedWorks`. */
  readonly works: FakeWork[];
  readonly deletedWorks: FakeWork[];
  readonly pushes: FakePush[];
  /** Bundles, objects and bundle bytes received through `stixBundlePush`, kept or not. */
  readonly pushTotals: { bundles: number; objects: number; bytes: number };
  readonly pings: FakePing[];
  readonly registrations: { input: RegisterConnectorInput; time: number }[];
  /** `deleteConnector` calls, which a connector should never send. */
  readonly connectorDeletes: { id: string; time: number }[];
  /** Queue purges done by state resets. */
  readonly queuePurges: {
    connectorId: string;
    queues: string[];
    time: number;
  }[];
  readonly identities: FakeIdentity[];
  readonly operations: FakeOperation[];
  readonly requests: FakeOpenCTIRequest[];
  readonly faults: readonly OpenCTIFaultHandle[];

  /**
   * Resets a connector's state as the UI does: state null, reset flag set,
   * queues purged.
   * @throws {Error} when no connector has that id.
   */
  resetState(connectorId: string): void;
  /** Creates or updates a connector with a given stored state, without a registration. */
  seedConnector(connector: {
    id: string;
    name?: string;
    state?: string | null;
  }): FakeConnector;
  /** Returns the works of one connector, oldest first. */
  worksOf(connectorId: string): FakeWork[];
  /** Returns the works that are not complete. */
  openWorks(): FakeWork[];
  /** Adds a fault for requests selecting root field `field`, or `"*"` for all. */
  inject(field: string, fault: OpenCTIFault): OpenCTIFaultHandle;
  clearFaults(): void;
  /**
   * Closes the listener and every open connection, so new connections are
   * refused. With `forMs`, reopens on the same port after that many
   * milliseconds.
   */
  goDown(forMs?: number): Promise<void>;
  /** Reopens the listener on the same port. */
  comeUp(): Promise<void>;
  /** Clears requests, operations, pings and pushes, but keeps connectors and works. */
  clearRecords(): void;
  /** Closes the server and every open connection. */
  stop(): Promise<void>;
}

interface ActiveFault {
  field: string;
  fault: OpenCTIFault;
  hits: number;
  remaining: number;
  /** Matching calls still to let through. */
  skip: number;
}

interface Context {
  authenticated: boolean;
  /** Request body, for faults with `bodyIncludes`. */
  body: string;
}

type Resolver = (args: Record<string, unknown>, context: Context) => unknown;

interface ErrorProfile {
  message: string;
  httpStatus: number;
  genre: "TECHNICAL" | "BUSINESS";
}

// Messages, HTTP statuses and genres of the platform's errors, as defined in
// opencti-graphql `src/config/errors.ts`.
const ERROR_PROFILES: Record<string, ErrorProfile> = {
  AUTH_FAILURE: {
    message: "Bad login or password",
    httpStatus: 401,
    genre: "TECHNICAL",
  },
  AUTH_REQUIRED: {
    message: "You must be logged in to do this.",
    httpStatus: 401,
    genre: "TECHNICAL",
  },
  FORBIDDEN_ACCESS: {
    message: "You are not allowed to do this.",
    httpStatus: 403,
    genre: "TECHNICAL",
  },
  DATABASE_ERROR: {
    message: "A database error has occurred",
    httpStatus: 500,
    genre: "TECHNICAL",
  },
  UNKNOWN_ERROR: {
    message: "An unknown error has occurred",
    httpStatus: 500,
    genre: "TECHNICAL",
  },
  UNSUPPORTED_ERROR: {
    message: "Unsupported operation",
    httpStatus: 500,
    genre: "BUSINESS",
  },
  FUNCTIONAL_ERROR: {
    message: "Business validation",
    httpStatus: 400,
    genre: "BUSINESS",
  },
  MISSING_REFERENCE_ERROR: {
    message: "Element(s) not found",
    httpStatus: 404,
    genre: "BUSINESS",
  },
  VALIDATION_ERROR: {
    message: "Validation failed",
    httpStatus: 500,
    genre: "BUSINESS",
  },
  LOCK_ERROR: {
    message: "Execution timeout, too many concurrent call on the same entities",
    httpStatus: 500,
    genre: "BUSINESS",
  },
  WORK_NOT_ALIVE: {
    message:
      "Work is no longer alive, no request can be done within the context of this work",
    httpStatus: 400,
    genre: "BUSINESS",
  },
};

const MAX_WORK_ERRORS = 100;
const ACTIVE_WINDOW_MS = 5 * 60 * 1000;
const QUERY_FIELD_LIMIT = 2;
const MUTATION_FIELD_LIMIT = 1;
const SCHEMA_PATH = join(import.meta.dir, "..", "fixtures", "schema.graphql");
const REQUEST_LEVEL_KINDS = new Set([
  "status",
  "html404",
  "reset",
  "hang",
  "stall",
]);

const STATUS_TEXT: Record<number, string> = {
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Temporarily Unavailable",
  504: "Gateway Time-out",
};

/**
 * Starts a fake OpenCTI platform on 127.0.0.1 on a random port, serving
 * `POST <basePath>/graphql`.
 *
 * @throws {Error} when the schema file cannot be read or a hidden field does
 * not exist in it.
 */
export async function startFakeOpenCTI(
  options: FakeOpenCTIOptions = {},
): Promise<FakeOpenCTI> {
  const token = options.token ?? DEFAULT_OPENCTI_TOKEN;
  const userId = options.userId ?? DEFAULT_OPENCTI_USER_ID;
  const basePath = normalizeBasePath(options.basePath ?? "");
  const recordBodies = options.recordBodies !== false;
  const keepPushes = options.keepPushes !== false;
  const pushTotals = { bundles: 0, objects: 0, bytes: 0 };
  const rabbitmq: RabbitMQConnection = {
    host: "127.0.0.1",
    vhost: "/",
    use_ssl: false,
    port: 5672,
    user: "guest",
    pass: "guest",
    ...options.rabbitmq,
  };
  const schema = buildFakeSchema(options.hiddenFields ?? []);
  const validationRules: ValidationRule[] = [
    ...specifiedRules,
    batchingProtection(QUERY_FIELD_LIMIT, MUTATION_FIELD_LIMIT),
  ];

  const connectors = new Map<string, FakeConnector>();
  const works: FakeWork[] = [];
  const deletedWorks: FakeWork[] = [];
  const pushes: FakePush[] = [];
  const pings: FakePing[] = [];
  const registrations: { input: RegisterConnectorInput; time: number }[] = [];
  const connectorDeletes: { id: string; time: number }[] = [];
  const queuePurges: { connectorId: string; queues: string[]; time: number }[] =
    [];
  const identities: FakeIdentity[] = [];
  const operations: FakeOperation[] = [];
  const requests: FakeOpenCTIRequest[] = [];
  const faults: ActiveFault[] = [];
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let lastWorkTime = 0;

  let server: Server | null = null;
  let sockets = new Set<Socket>();
  let port = 0;
  let stopped = false;

  const fake: FakeOpenCTI = {
    get url() {
      return origin() + basePath;
    },
    get graphqlUrl() {
      return `${origin()}${basePath}/graphql`;
    },
    get port() {
      return port;
    },
    token,
    userId,
    get isUp() {
      return server !== null;
    },
    version: options.version ?? DEFAULT_OPENCTI_VERSION,
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    queueDetails: options.queueDetails ?? {
      messages_number: 0,
      messages_size: 0,
    },
    simulateWorker: options.simulateWorker === true,
    connectors,
    works,
    deletedWorks,
    pushes,
    pushTotals,
    pings,
    registrations,
    connectorDeletes,
    queuePurges,
    identities,
    operations,
    requests,
    get faults() {
      return faults.map(toHandle);
    },

    resetState(connectorId) {
      const connector = connectors.get(connectorId);
      if (connector === undefined) {
        throw new Error(
          `No connector found with id "${connectorId}": register or seed it first`,
        );
      }

      resetConnectorState(connector);
    },

    seedConnector(seed) {
      const now = new Date().toISOString();
      const existing = connectors.get(seed.id);
      const connector: FakeConnector = existing ?? {
        id: seed.id,
        name: seed.name ?? "Seeded connector",
        type: "EXTERNAL_IMPORT",
        scope: null,
        registration: null,
        state: null,
        stateReset: false,
        stateTimestamp: now,
        userId,
        info: null,
        createdAt: now,
        updatedAt: now,
      };

      if (seed.name !== undefined) {
        connector.name = seed.name;
      }
      if (seed.state !== undefined) {
        connector.state = seed.state;
        connector.stateTimestamp = now;
      }
      connectors.set(seed.id, connector);

      return connector;
    },

    worksOf(connectorId) {
      return works.filter((work) => work.connectorId === connectorId);
    },

    openWorks() {
      return works.filter((work) => work.status !== "complete");
    },

    inject(field, fault) {
      const active: ActiveFault = {
        field,
        fault,
        hits: 0,
        remaining: fault.times ?? Infinity,
        skip: fault.skip ?? 0,
      };
      faults.push(active);

      return toHandle(active);
    },

    clearFaults() {
      faults.length = 0;
    },

    async goDown(forMs) {
      await closeListener();

      if (forMs !== undefined) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (!stopped) {
            fake.comeUp().catch((error: unknown) => {
              console.error(
                `fake OpenCTI failed to reopen port ${port}:`,
                error,
              );
            });
          }
        }, forMs);
        timers.add(timer);
      }
    },

    async comeUp() {
      if (server !== null || stopped) {
        return;
      }

      await openListener(port);
    },

    clearRecords() {
      requests.length = 0;
      operations.length = 0;
      pings.length = 0;
      pushes.length = 0;
      Object.assign(pushTotals, { bundles: 0, objects: 0, bytes: 0 });
      registrations.length = 0;
    },

    async stop() {
      stopped = true;

      for (const timer of timers) {
        clearTimeout(timer);
      }
      timers.clear();

      await closeListener();
    },
  };

  const root = createRoot();
  await openListener(0);

  return fake;

  function origin(): string {
    return `${options.tls === undefined ? "http" : "https"}://127.0.0.1:${port}`;
  }

  function toHandle(active: ActiveFault): OpenCTIFaultHandle {
    return {
      field: active.field,
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

  async function openListener(listenPort: number): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      receive(req, res).catch((error: unknown) => {
        failRequest(res, req, error);
      });
    };
    const next =
      options.tls === undefined
        ? createHttpServer(handler)
        : createHttpsServer(
            { key: options.tls.key, cert: options.tls.cert },
            handler,
          );
    const nextSockets = new Set<Socket>();

    next.on("connection", (socket: Socket) => {
      nextSockets.add(socket);
      socket.on("close", () => nextSockets.delete(socket));
    });

    await new Promise<void>((resolve, reject) => {
      next.once("error", reject);
      next.listen(listenPort, "127.0.0.1", () => {
        next.off("error", reject);
        resolve();
      });
    });

    server = next;
    sockets = nextSockets;
    port = (next.address() as AddressInfo).port;
  }

  async function closeListener(): Promise<void> {
    const current = server;
    if (current === null) {
      return;
    }

    server = null;
    const closed = new Promise<void>((resolve) =>
      current.close(() => resolve()),
    );
    for (const socket of sockets) {
      socket.destroy();
    }
    await closed;
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

  // Reads the body up to the limit and drains the rest, so that a client
  // still uploading gets the 413 instead of a reset connection.
  async function receive(
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    const limit = fake.maxBodyBytes;
    const chunks: Buffer[] = [];
    let bytes = 0;

    for await (const chunk of req) {
      const buffer = chunk as Buffer;
      bytes += buffer.length;
      if (bytes <= limit) {
        chunks.push(buffer);
      }
    }

    const tooLarge = bytes > limit;
    const body = tooLarge ? "" : Buffer.concat(chunks).toString("utf8");
    const record: FakeOpenCTIRequest = {
      method: req.method ?? "GET",
      path: req.url ?? "/",
      headers: flattenHeaders(req),
      userAgent: headerValue(req, "user-agent"),
      body: recordBodies ? body : "",
      bodyBytes: bytes,
      time: Date.now(),
      status: null,
    };
    requests.push(record);

    await respond(req, res, record, body, tooLarge);
  }

  async function respond(
    req: IncomingMessage,
    res: ServerResponse,
    record: FakeOpenCTIRequest,
    body: string,
    tooLarge: boolean,
  ): Promise<void> {
    const pathname = record.path.split("?")[0];

    if (pathname !== `${basePath}/graphql`) {
      send(
        res,
        record,
        404,
        cannotPostPage(record.method, pathname ?? "/"),
        "text/html; charset=utf-8",
      );
      return;
    }

    if (record.method !== "POST") {
      sendJson(res, record, 405, {
        name: "MethodNotAllowedError",
        message: `Method ${record.method} is not allowed on /graphql, use POST`,
      });
      return;
    }

    if (tooLarge) {
      send(res, record, 413, payloadTooLargePage(), "text/html; charset=utf-8");
      return;
    }

    const request = parseRequestBody(body);
    const document = request.ok ? tryParse(request.query) : null;
    const rootFields = document === null ? [] : allRootFields(document);

    const requestFault = takeFault(rootFields, REQUEST_LEVEL_KINDS, body);
    if (requestFault !== null) {
      respondWithFault(req, res, record, requestFault);
      return;
    }

    if (!request.ok) {
      sendJson(res, record, 400, { errors: [badRequest(request.message)] });
      return;
    }

    let parsed: DocumentNode;
    try {
      parsed = parse(request.query);
    } catch (error) {
      sendJson(res, record, 200, {
        errors: [failureError(error, "GRAPHQL_PARSE_FAILED")],
      });
      return;
    }

    const validationErrors = validate(schema, parsed, validationRules);
    if (validationErrors.length > 0) {
      sendJson(res, record, 200, {
        errors: validationErrors.map((error) =>
          failureError(error, "GRAPHQL_VALIDATION_FAILED"),
        ),
      });
      return;
    }

    recordOperation(parsed, request.operationName);

    const context: Context = {
      authenticated: headerValue(req, "authorization") === `Bearer ${token}`,
      body,
    };
    const result = await execute({
      schema,
      document: parsed,
      rootValue: root,
      contextValue: context,
      variableValues: request.variables,
      operationName: request.operationName,
    });

    const payload: Record<string, unknown> = {};
    if (result.errors !== undefined && result.errors.length > 0) {
      payload.errors = result.errors.map(formatExecutionError);
    }
    if ("data" in result) {
      payload.data = result.data;
    }

    sendJson(res, record, 200, payload);
  }

  function respondWithFault(
    req: IncomingMessage,
    res: ServerResponse,
    record: FakeOpenCTIRequest,
    fault: OpenCTIFault,
  ): void {
    if (fault.kind === "hang") {
      return;
    }

    if (fault.kind === "stall") {
      const body = Buffer.from(JSON.stringify({ data: {} }), "utf8");
      record.status = 200;
      res.writeHead(200, {
        "Content-Type": "application/json; charset=utf-8",
        "Content-Length": String(body.length),
      });
      res.write(body.subarray(0, Math.floor(body.length / 2)));
      return;
    }

    if (fault.kind === "reset") {
      req.socket.destroy();
      return;
    }

    if (fault.kind === "html404") {
      send(
        res,
        record,
        404,
        cannotPostPage("POST", `${basePath}/graphql`),
        "text/html; charset=utf-8",
      );
      return;
    }

    if (fault.kind === "status") {
      const body = fault.body ?? gatewayPage(fault.status);
      const isText = typeof body === "string";
      const text = isText ? body : JSON.stringify(body);
      const hasContentType = Object.keys(fault.headers ?? {}).some(
        (name) => name.toLowerCase() === "content-type",
      );
      const contentType = hasContentType
        ? null
        : isText
          ? "text/html; charset=utf-8"
          : "application/json";
      send(res, record, fault.status, text, contentType, fault.headers);
    }
  }

  function takeFault(
    rootFields: string[],
    kinds: Set<string>,
    body: string,
  ): OpenCTIFault | null {
    const active = faults.find(
      (candidate) =>
        kinds.has(candidate.fault.kind) &&
        (candidate.field === "*" || rootFields.includes(candidate.field)) &&
        (candidate.fault.bodyIncludes === undefined ||
          body.includes(candidate.fault.bodyIncludes)),
    );
    if (active === undefined) {
      return null;
    }
    if (active.skip > 0) {
      active.skip -= 1;
      return null;
    }

    active.hits += 1;
    active.remaining -= 1;
    if (active.remaining <= 0) {
      faults.splice(faults.indexOf(active), 1);
    }

    return active.fault;
  }

  function recordOperation(
    document: DocumentNode,
    operationName: string | null,
  ): void {
    const operation = selectOperation(document, operationName);
    if (operation === undefined) {
      return;
    }

    operations.push({
      operationName: operation.name?.value ?? null,
      operationType: operation.operation as FakeOperation["operationType"],
      rootFields: rootFieldsOf(operation, document),
      time: Date.now(),
    });
  }

  // Root resolvers: graphql-js's default field resolver calls each function
  // with (args, context, info). Every root field requires the token, then
  // applies the field-level faults injected for it.
  function createRoot(): Record<string, Resolver> {
    const resolvers: Record<string, Resolver> = {
      about: () => ({ version: fake.version, dependencies: [] }),
      connector: (args) => {
        const connector = connectors.get(String(args.id));
        return connector === undefined ? null : connectorView(connector);
      },
      work: (args) => {
        const work = findWork(String(args.id));
        return work === undefined ? null : workView(work);
      },
      isWorkAlive: (args) => findWork(String(args.id)) !== undefined,
      works: (args) => listWorks(args),
      identity: (args) => {
        const identity = identities.find(
          (candidate) =>
            candidate.id === args.id || candidate.standardId === args.id,
        );
        return identity === undefined ? null : identityView(identity);
      },
      registerConnector: (args) =>
        registerConnector(args.input as RegisterConnectorInput | null),
      pingConnector: (args) =>
        pingConnector(
          String(args.id),
          (args.state as string | null | undefined) ?? null,
          (args.connectorInfo as ConnectorInfo | null | undefined) ?? null,
        ),
      resetStateConnector: (args) => {
        const connector = requireConnector(String(args.id));
        resetConnectorState(connector);
        return connectorView(connector);
      },
      deleteConnector: (args) => deleteConnector(String(args.id)),
      workAdd: (args) =>
        workView(
          addWork(
            String(args.connectorId),
            (args.friendlyName as string | null) ?? null,
            "workAdd",
          ),
        ),
      workEdit: (args) => workEditMutations(String(args.id)),
      workDelete: (args) => {
        for (const work of works.filter(
          (candidate) => candidate.connectorId === args.connectorId,
        )) {
          removeWork(work);
        }
        return true;
      },
      stixBundlePush: (args) =>
        pushBundle(
          String(args.connectorId),
          String(args.bundle),
          (args.work_id as string | null) ?? null,
        ),
      identityAdd: (args) =>
        addIdentity(
          args.input as Record<string, unknown>,
          String((args.input as { type: string }).type),
        ),
      organizationAdd: (args) =>
        addIdentity(args.input as Record<string, unknown>, "Organization"),
    };

    const guarded: Record<string, Resolver> = {};
    for (const [field, resolve] of Object.entries(resolvers)) {
      guarded[field] = async (args, context) => {
        if (!context.authenticated) {
          throw platformError("AUTH_REQUIRED");
        }

        await applyFieldFaults(field, context.body);

        return resolve(args, context);
      };
    }

    return guarded;
  }

  // Applies the oldest delay fault and then the oldest error fault for one
  // resolver call of `field`, so a test can make a field both slow and fail.
  async function applyFieldFaults(field: string, body: string): Promise<void> {
    const delayFault = takeFault([field], new Set(["delay"]), body);
    if (delayFault?.kind === "delay") {
      await delay(delayFault.delayMs);
    }

    const errorFault = takeFault([field], new Set(["error"]), body);
    if (errorFault?.kind === "error") {
      const profile = ERROR_PROFILES[errorFault.code];
      throw platformError(errorFault.code, errorFault.message, {
        http_status: errorFault.httpStatus ?? profile?.httpStatus ?? 500,
      });
    }
  }

  function requireConnector(id: string): FakeConnector {
    const connector = connectors.get(id);
    if (connector === undefined) {
      throw platformError(
        "FUNCTIONAL_ERROR",
        "No connector found with the specified ID",
        { id },
      );
    }

    return connector;
  }

  function registerConnector(input: RegisterConnectorInput | null): unknown {
    if (input === null || input === undefined) {
      throw platformError(
        "FUNCTIONAL_ERROR",
        "registerConnector requires an input",
      );
    }

    // NOTE: the platform rejects a short name in its constraint plugin before
    // execution. The fake raises it from the resolver with a guessed code.
    if (input.name.trim().length < 2) {
      throw platformError(
        "VALIDATION_ERROR",
        "Connector name must be at least 2 characters and not blank",
        {
          field: "name",
        },
      );
    }

    const now = new Date().toISOString();
    registrations.push({ input, time: Date.now() });

    const existing = connectors.get(input.id);
    const scope =
      input.scope === null ||
      input.scope === undefined ||
      input.scope.length === 0
        ? null
        : input.scope;

    if (existing !== undefined) {
      existing.name = input.name;
      existing.type = input.type;
      existing.scope = scope;
      existing.registration = input;
      existing.userId = userId;
      existing.updatedAt = now;

      return connectorView(existing);
    }

    const connector: FakeConnector = {
      id: input.id,
      name: input.name,
      type: input.type,
      scope,
      registration: input,
      state: null,
      stateReset: false,
      stateTimestamp: now,
      userId,
      info: null,
      createdAt: now,
      updatedAt: now,
    };
    connectors.set(input.id, connector);

    return connectorView(connector);
  }

  function pingConnector(
    id: string,
    state: string | null,
    connectorInfo: ConnectorInfo | null,
  ): unknown {
    const connector = requireConnector(id);
    const stateIgnored = connector.stateReset;

    pings.push({
      connectorId: id,
      state,
      connectorInfo,
      stateIgnored,
      time: Date.now(),
    });

    if (stateIgnored) {
      connector.stateReset = false;
    } else {
      connector.updatedAt = new Date().toISOString();
      connector.state = state;
    }

    if (connectorInfo !== null) {
      connector.info = connectorInfo;
    }

    return connectorView(connector);
  }

  function resetConnectorState(connector: FakeConnector): void {
    connector.state = null;
    connector.stateReset = true;
    connector.stateTimestamp = new Date().toISOString();
    queuePurges.push({
      connectorId: connector.id,
      queues: [`push_${connector.id}`, `listen_${connector.id}`],
      time: Date.now(),
    });
    fake.queueDetails = { messages_number: 0, messages_size: 0 };
  }

  function deleteConnector(id: string): string {
    connectorDeletes.push({ id, time: Date.now() });
    requireConnector(id);
    connectors.delete(id);

    for (const work of works.filter(
      (candidate) => candidate.connectorId === id,
    )) {
      removeWork(work);
    }

    return id;
  }

  function findWork(id: string): FakeWork | undefined {
    return works.find((work) => work.id === id);
  }

  function removeWork(work: FakeWork): void {
    const index = works.indexOf(work);
    if (index !== -1) {
      works.splice(index, 1);
      deletedWorks.push(work);
    }
  }

  function addWork(
    connectorId: string,
    name: string | null,
    createdBy: FakeWork["createdBy"],
  ): FakeWork {
    const connector = connectors.get(connectorId);
    if (connector === undefined) {
      // The platform dereferences the missing connector and fails with a
      // generic error, not a FUNCTIONAL_ERROR.
      throw platformError("UNKNOWN_ERROR", undefined, {
        cause: `No connector found with id ${connectorId}`,
      });
    }

    // Work ids embed the creation time, so the time is bumped to keep them unique.
    lastWorkTime = Math.max(Date.now(), lastWorkTime + 1);
    const timestamp = new Date(lastWorkTime).toISOString();
    const work: FakeWork = {
      id: `work_${connectorId}_${timestamp}`,
      connectorId,
      name:
        createdBy === "stixBundlePush"
          ? `${connector.name} run @ ${timestamp}`
          : name,
      status: "progress",
      timestamp,
      receivedTime: timestamp,
      processedTime: null,
      completedTime: null,
      completedNumber: null,
      updatedAt: timestamp,
      messages: [],
      errors: [],
      expected: 0,
      processed: 0,
      lastProcessed: null,
      toProcessedCalls: 0,
      draftContext: null,
      createdBy,
    };
    works.push(work);

    return work;
  }

  function requireWork(id: string): FakeWork {
    const work = findWork(id);
    if (work === undefined) {
      // NOTE: the fake raises for an unknown work id so that a connector bug
      // shows in tests. What the platform does here was not checked.
      throw platformError(
        "FUNCTIONAL_ERROR",
        "No work found with the specified ID",
        { id },
      );
    }

    return work;
  }

  function workEditMutations(id: string): Record<string, Resolver> {
    return {
      delete: () => {
        removeWork(requireWork(id));
        return id;
      },
      ping: () => {
        requireWork(id).updatedAt = new Date().toISOString();
        return id;
      },
      toReceived: (args) => {
        const work = requireWork(id);
        const now = new Date().toISOString();
        work.status = "progress";
        work.receivedTime = now;
        work.updatedAt = now;
        appendMessage(
          work.messages,
          (args.message as string | null) ?? null,
          null,
          Infinity,
        );
        return id;
      },
      toProcessed: (args) => {
        markProcessed(
          requireWork(id),
          (args.message as string | null) ?? null,
          args.inError === true,
        );
        return id;
      },
      addExpectations: (args) => {
        const work = requireWork(id);
        work.expected += Number(args.expectations ?? 0);
        work.updatedAt = new Date().toISOString();
        return id;
      },
      reportExpectation: (args) => {
        // The platform skips the report for a work that is gone.
        const work = findWork(id);
        if (work !== undefined) {
          const error =
            (args.error as {
              error?: string | null;
              source?: string | null;
            } | null) ?? null;
          reportProcessed(work, error);
        }
        return id;
      },
      addDraftContext: (args) => {
        requireWork(id).draftContext =
          (args.draftContext as string | null) ?? null;
        return id;
      },
    };
  }

  // toProcessed completes the work when nothing was ever expected, or when
  // everything expected has already been processed.
  function markProcessed(
    work: FakeWork,
    message: string | null,
    inError: boolean,
  ): void {
    const now = new Date().toISOString();
    work.processedTime = now;
    work.updatedAt = now;
    work.toProcessedCalls += 1;
    appendMessage(
      inError ? work.errors : work.messages,
      message,
      null,
      inError ? MAX_WORK_ERRORS : Infinity,
    );

    if (work.expected === 0 || work.processed >= work.expected) {
      complete(work);
    }
  }

  // reportExpectation counts one processed item and completes the work once
  // processed reaches expected, whether or not toProcessed was called.
  function reportProcessed(
    work: FakeWork,
    error: { error?: string | null; source?: string | null } | null,
  ): void {
    const now = new Date().toISOString();
    work.processed += 1;
    work.lastProcessed = now;
    work.updatedAt = now;

    if (error !== null) {
      appendMessage(
        work.errors,
        error.error ?? null,
        error.source ?? null,
        MAX_WORK_ERRORS,
      );
    }

    if (work.processed >= work.expected) {
      complete(work);
    }
  }

  function complete(work: FakeWork): void {
    work.status = "complete";
    work.completedTime = new Date().toISOString();
    work.completedNumber = work.processed;
  }

  function pushBundle(
    connectorId: string,
    text: string,
    workIdSent: string | null,
  ): boolean {
    let bundle: PushedBundle;
    try {
      bundle = parseBundle(text);
    } catch (error) {
      throw platformError("UNSUPPORTED_ERROR", "Invalid bundle", {
        cause: (error as Error).message,
      });
    }

    if (!connectors.has(connectorId)) {
      throw platformError("UNSUPPORTED_ERROR", "Invalid bundle", {
        cause: `No connector found with id ${connectorId}`,
      });
    }

    const hasWorkId = workIdSent !== null && workIdSent !== "";
    let work = hasWorkId ? findWork(workIdSent) : undefined;
    const workKnown = work !== undefined;

    if (!hasWorkId) {
      work = addWork(connectorId, null, "stixBundlePush");
      if (bundle.objects.length === 1) {
        work.expected += 1;
      }
    }

    const bytes = Buffer.byteLength(text, "utf8");
    pushTotals.bundles += 1;
    pushTotals.objects += bundle.objects.length;
    pushTotals.bytes += bytes;
    if (keepPushes) {
      pushes.push({
        connectorId,
        // A work id that no stored work has is kept as sent, because the
        // platform still queues the bundle. Its worker then drops it.
        workId: work?.id ?? String(workIdSent),
        workIdSent,
        workKnown,
        bundle,
        bytes,
        time: Date.now(),
      });
    }

    if (fake.simulateWorker && work !== undefined) {
      simulateWorkerFor(work, bundle);
    }
    recordPushedIdentities(bundle);

    return true;
  }

  // The platform's worker imports pushed identities, after which the
  // `identity` query finds them by STIX id. The fake records them at once,
  // all as Organizations.
  function recordPushedIdentities(bundle: PushedBundle): void {
    const now = new Date().toISOString();

    for (const object of bundle.objects) {
      const known = identities.some(
        (identity) => identity.standardId === object.id,
      );
      if (object.type !== "identity" || known) {
        continue;
      }

      identities.push({
        id: randomUUID(),
        standardId: object.id,
        type: "Organization",
        name: String(object.name ?? ""),
        description:
          typeof object.description === "string" ? object.description : null,
        input: object,
        createdAt: now,
        updatedAt: now,
      });
    }
  }

  // The worker imports a single-object bundle as it is. It splits a larger
  // one, adds one expectation per object, then reports each as processed.
  function simulateWorkerFor(work: FakeWork, bundle: PushedBundle): void {
    if (bundle.objects.length > 1) {
      work.expected += bundle.objects.length;
    }

    for (let i = 0; i < bundle.objects.length; i += 1) {
      reportProcessed(work, null);
    }
  }

  function listWorks(args: Record<string, unknown>): unknown {
    let selected = [...works];
    const filters = args.filters as
      { filters?: { key: string[]; values: unknown[] }[] } | null | undefined;

    for (const filter of filters?.filters ?? []) {
      const values = filter.values.map(String);
      if (filter.key.includes("connector_id")) {
        selected = selected.filter((work) => values.includes(work.connectorId));
      }
      if (filter.key.includes("status")) {
        selected = selected.filter((work) => values.includes(work.status));
      }
    }

    selected.sort((a, b) => a.timestamp.localeCompare(b.timestamp));
    if (args.orderMode !== "asc") {
      selected.reverse();
    }

    const afterIndex =
      typeof args.after === "string"
        ? selected.findIndex((work) => work.id === args.after)
        : -1;
    const first = typeof args.first === "number" ? args.first : 50;
    const page = selected.slice(afterIndex + 1, afterIndex + 1 + first);
    const last = page[page.length - 1];

    return {
      pageInfo: {
        startCursor: page[0]?.id ?? "",
        endCursor: last?.id ?? "",
        hasNextPage: afterIndex + 1 + first < selected.length,
        hasPreviousPage: afterIndex >= 0,
        globalCount: selected.length,
      },
      edges: page.map((work) => ({ cursor: work.id, node: workView(work) })),
    };
  }

  function addIdentity(input: Record<string, unknown>, type: string): unknown {
    if (type !== "Organization") {
      throw platformError(
        "UNSUPPORTED_ERROR",
        `The fake OpenCTI creates only Organization identities, not ${type}`,
      );
    }

    const name = String(input.name ?? "");
    if (name.trim() === "") {
      throw platformError(
        "VALIDATION_ERROR",
        "Identity name must not be blank",
        { field: "name" },
      );
    }

    const now = new Date().toISOString();
    const existing = identities.find(
      (identity) =>
        identity.type === type &&
        identity.name.toLowerCase() === name.toLowerCase(),
    );

    if (existing !== undefined) {
      existing.updatedAt = now;
      existing.input = input;
      if (typeof input.description === "string") {
        existing.description = input.description;
      }
      return identityView(existing);
    }

    const identity: FakeIdentity = {
      id: randomUUID(),
      standardId:
        typeof input.stix_id === "string"
          ? input.stix_id
          : `identity--${randomUUID()}`,
      type,
      name,
      description:
        typeof input.description === "string" ? input.description : null,
      input,
      createdAt: now,
      updatedAt: now,
    };
    identities.push(identity);

    return identityView(identity);
  }

  function connectorView(connector: FakeConnector): Record<string, unknown> {
    const registration = connector.registration;
    const id = connector.id;

    return {
      id,
      standard_id: `connector--${id}`,
      entity_type: "Connector",
      parent_types: ["Basic-Object", "Internal-Object"],
      name: connector.name,
      title: connector.name,
      active: Date.now() - Date.parse(connector.updatedAt) < ACTIVE_WINDOW_MS,
      last_seen_at: connector.updatedAt,
      auto: registration?.auto ?? false,
      auto_update: registration?.auto_update ?? false,
      enrichment_resolution: registration?.enrichment_resolution ?? null,
      only_contextual: registration?.only_contextual ?? false,
      playbook_compatible: registration?.playbook_compatible ?? false,
      connector_trigger_filters: null,
      connector_type: connector.type,
      connector_scope: connector.scope,
      connector_state: connector.state,
      connector_schema: null,
      connector_schema_ui: null,
      connector_state_reset: connector.stateReset,
      connector_state_timestamp: connector.stateTimestamp,
      connector_user_id: connector.userId,
      connector_queue_details: { ...fake.queueDetails },
      connector_info: connector.info,
      connector_priority_group: "DEFAULT",
      updated_at: connector.updatedAt,
      refreshed_at: connector.updatedAt,
      created_at: connector.createdAt,
      config: {
        connection: { ...rabbitmq },
        s3: {
          endpoint: "127.0.0.1",
          port: 9000,
          use_ssl: false,
          bucket_name: "opencti-bucket",
          bucket_region: "us-east-1",
          access_key: "fake-s3-access-key",
          secret_key: "fake-s3-secret-key",
        },
        listen: `listen_${id}`,
        listen_routing: `listen_routing_${id}`,
        listen_exchange: "amqp.connector.exchange",
        listen_callback_uri: registration?.listen_callback_uri ?? null,
        push: `push_${id}`,
        push_routing: `push_routing_${id}`,
        push_exchange: "amqp.worker.exchange",
        dead_letter_routing: "listen_routing_too-large-bundle",
      },
      works: (args: { status?: string | null }) =>
        works
          .filter(
            (work) =>
              work.connectorId === id &&
              (args.status == null || work.status === args.status),
          )
          .map(workView),
      is_managed: false,
      built_in: false,
      xtm_one_intent: registration?.xtm_one_intent ?? null,
      version: registration?.version ?? null,
      slug: registration?.slug ?? null,
      jwks: JSON.stringify({ keys: [] }),
    };
  }

  function workView(work: FakeWork): Record<string, unknown> {
    return {
      id: work.id,
      name: work.name,
      user: { id: userId, name: "Fake connector user", entity_type: "User" },
      connector: () => {
        const connector = connectors.get(work.connectorId);
        return connector === undefined ? null : connectorView(connector);
      },
      timestamp: work.timestamp,
      status: work.status,
      event_source_id: null,
      received_time: work.receivedTime,
      processed_time: work.processedTime,
      completed_time: work.completedTime,
      completed_number: work.completedNumber,
      messages: work.messages,
      errors: work.errors,
      tracking: {
        import_expected_number: work.expected,
        import_last_processed: work.lastProcessed,
        import_processed_number: work.processed,
      },
      draft_context: work.draftContext,
    };
  }

  function identityView(identity: FakeIdentity): Record<string, unknown> {
    return {
      __typename: "Organization",
      id: identity.id,
      standard_id: identity.standardId,
      entity_type: "Organization",
      parent_types: [
        "Basic-Object",
        "Stix-Object",
        "Stix-Core-Object",
        "Stix-Domain-Object",
        "Identity",
      ],
      identity_class: "organization",
      name: identity.name,
      description: identity.description,
      contact_information: null,
      roles: null,
      x_opencti_aliases: null,
      x_opencti_reliability: null,
      created: identity.createdAt,
      modified: identity.updatedAt,
      created_at: identity.createdAt,
      updated_at: identity.updatedAt,
      x_opencti_organization_type: null,
      x_opencti_score: null,
    };
  }
}

function buildFakeSchema(hiddenFields: readonly string[]): GraphQLSchema {
  const document = parse(readFileSync(SCHEMA_PATH, "utf8"));
  if (hiddenFields.length === 0) {
    return buildASTSchema(document);
  }

  const hidden = new Set(hiddenFields);
  const removed = new Set<string>();
  const filterFields = <
    T extends {
      name: { value: string };
      fields?: readonly { name: { value: string } }[];
    },
  >(
    node: T,
  ): T => ({
    ...node,
    fields: node.fields?.filter((field) => {
      const key = `${node.name.value}.${field.name.value}`;
      if (hidden.has(key)) {
        removed.add(key);
        return false;
      }
      return true;
    }),
  });

  const trimmed = visit(document, {
    ObjectTypeDefinition: filterFields,
    InterfaceTypeDefinition: filterFields,
    InputObjectTypeDefinition: filterFields,
  });

  const missing = hiddenFields.filter((field) => !removed.has(field));
  if (missing.length > 0) {
    throw new Error(
      `hiddenFields names fields that the schema lacks: ${missing.join(", ")}`,
    );
  }

  return buildASTSchema(trimmed);
}

// Limits how often each root field may appear in one document, counting
// aliases and fragments, as the platform's graphql-no-alias rule does
// (`app:graphql:batching_protection`: 2 per query field, 1 per mutation field).
function batchingProtection(
  queryLimit: number,
  mutationLimit: number,
): ValidationRule {
  return (context) => {
    const counts = new Map<string, number>();
    const reported = new Set<string>();

    return {
      Field: {
        leave(node) {
          const parentType = context.getParentType()?.name;
          if (parentType !== "Query" && parentType !== "Mutation") {
            return;
          }

          const key = `${parentType}.${node.name.value}`;
          const limit = parentType === "Query" ? queryLimit : mutationLimit;
          const count = (counts.get(key) ?? 0) + 1;
          counts.set(key, count);

          if (count > limit && !reported.has(key)) {
            reported.add(key);
            context.reportError(
              new GraphQLError(
                `Allowed number of calls for ${parentType}->${node.name.value} has been exceeded (max: ${limit})`,
                { nodes: node },
              ),
            );
          }
        },
      },
    };
  };
}

/** Creates an error in the platform's format for `code`. */
function platformError(
  code: string,
  message?: string,
  data: Record<string, unknown> = {},
): GraphQLError {
  const profile = ERROR_PROFILES[code];

  return new GraphQLError(message ?? profile?.message ?? code, {
    extensions: {
      code,
      data: {
        http_status: profile?.httpStatus ?? 500,
        genre: profile?.genre ?? "TECHNICAL",
        ...data,
      },
    },
  });
}

function formatExecutionError(error: GraphQLError): Record<string, unknown> {
  const extensions = error.extensions as { code?: unknown; data?: unknown };
  // graphql-js raises variable coercion and operation selection errors
  // without a code, and Apollo Server reports those as BAD_USER_INPUT.
  const code =
    typeof extensions.code === "string"
      ? extensions.code
      : error.path === undefined
        ? "BAD_USER_INPUT"
        : "UNKNOWN_ERROR";
  const profile = ERROR_PROFILES[code];
  const data =
    extensions.data ??
    (profile === undefined
      ? undefined
      : { http_status: profile.httpStatus, genre: profile.genre });

  return {
    message: error.message,
    ...(error.locations === undefined ? {} : { locations: error.locations }),
    ...(error.path === undefined ? {} : { path: error.path }),
    name: code,
    extensions: data === undefined ? { code } : { code, data },
  };
}

function failureError(error: unknown, code: string): Record<string, unknown> {
  const graphQLError =
    error instanceof GraphQLError ? error : new GraphQLError(String(error));

  return {
    message: graphQLError.message,
    ...(graphQLError.locations === undefined
      ? {}
      : { locations: graphQLError.locations }),
    name: code,
    extensions: { code },
  };
}

function badRequest(message: string): Record<string, unknown> {
  return { message, name: "BAD_REQUEST", extensions: { code: "BAD_REQUEST" } };
}

type ParsedRequest =
  | {
      ok: true;
      query: string;
      variables: Record<string, unknown> | undefined;
      operationName: string | null;
    }
  | { ok: false; message: string };

function parseRequestBody(body: string): ParsedRequest {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (error) {
    return {
      ok: false,
      message: `Request body is not valid JSON: ${(error as Error).message}`,
    };
  }

  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return {
      ok: false,
      message:
        "Request body must be a JSON object with a query; batched requests are not supported",
    };
  }

  const request = json as {
    query?: unknown;
    variables?: unknown;
    operationName?: unknown;
  };
  if (typeof request.query !== "string" || request.query.trim() === "") {
    return {
      ok: false,
      message:
        "GraphQL operations must contain a non-empty `query` or a `persistedQuery` extension.",
    };
  }

  const variables =
    typeof request.variables === "object" && request.variables !== null
      ? (request.variables as Record<string, unknown>)
      : undefined;
  const operationName =
    typeof request.operationName === "string" ? request.operationName : null;

  return { ok: true, query: request.query, variables, operationName };
}

function parseBundle(text: string): PushedBundle {
  const json = JSON.parse(text) as unknown;

  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error("bundle is not a JSON object");
  }

  const bundle = json as { type?: unknown; objects?: unknown };
  if (bundle.type !== "bundle") {
    throw new Error(
      `bundle type is ${JSON.stringify(bundle.type)}, expected "bundle"`,
    );
  }

  if (!Array.isArray(bundle.objects) || bundle.objects.length === 0) {
    throw new Error("bundle has no objects");
  }

  return json as PushedBundle;
}

function tryParse(query: string): DocumentNode | null {
  try {
    return parse(query);
  } catch {
    return null;
  }
}

function selectOperation(
  document: DocumentNode,
  operationName: string | null,
): OperationDefinitionNode | undefined {
  const operations = document.definitions.filter(
    (definition): definition is OperationDefinitionNode =>
      definition.kind === Kind.OPERATION_DEFINITION,
  );

  if (operationName === null) {
    return operations.length === 1 ? operations[0] : undefined;
  }

  return operations.find(
    (operation) => operation.name?.value === operationName,
  );
}

function allRootFields(document: DocumentNode): string[] {
  const fields: string[] = [];

  for (const definition of document.definitions) {
    if (definition.kind === Kind.OPERATION_DEFINITION) {
      fields.push(...rootFieldsOf(definition, document));
    }
  }

  return fields;
}

// Collects root field names, following fragment spreads and inline fragments.
function rootFieldsOf(
  operation: OperationDefinitionNode,
  document: DocumentNode,
): string[] {
  const fields: string[] = [];
  const fragments = new Map<
    string,
    { selectionSet: OperationDefinitionNode["selectionSet"] }
  >();

  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) {
      fragments.set(definition.name.value, definition);
    }
  }

  const seen = new Set<string>();
  const walk = (
    selectionSet: OperationDefinitionNode["selectionSet"],
  ): void => {
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) {
        fields.push(selection.name.value);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        walk(selection.selectionSet);
      } else if (!seen.has(selection.name.value)) {
        seen.add(selection.name.value);
        const fragment = fragments.get(selection.name.value);
        if (fragment !== undefined) {
          walk(fragment.selectionSet);
        }
      }
    }
  };
  walk(operation.selectionSet);

  return fields;
}

function appendMessage(
  list: WorkMessage[],
  message: string | null,
  source: string | null,
  max: number,
): void {
  if (message === null || list.length >= max) {
    return;
  }

  list.push({
    timestamp: new Date().toISOString(),
    message,
    sequence: list.length,
    source,
  });
}

function normalizeBasePath(basePath: string): string {
  const trimmed = basePath.replace(/\/+$/, "");

  if (trimmed === "") {
    return "";
  }

  return trimmed.startsWith("/") ? trimmed : `/${trimmed}`;
}

// The page of Express's default handler (finalhandler) for an unmatched route.
function cannotPostPage(method: string, path: string): string {
  return (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n</head>\n' +
    `<body>\n<pre>Cannot ${escapeHtml(method)} ${escapeHtml(path)}</pre>\n</body>\n</html>\n`
  );
}

// The page of Express's default error handler (finalhandler) for body-parser's
// PayloadTooLargeError when NODE_ENV is production.
function payloadTooLargePage(): string {
  return (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n</head>\n' +
    "<body>\n<pre>Payload Too Large</pre>\n</body>\n</html>\n"
  );
}

// An nginx-style error page, as a reverse proxy in front of the platform sends.
function gatewayPage(status: number): string {
  const title = `${status} ${STATUS_TEXT[status] ?? "Error"}`;

  return (
    `<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n` +
    `<center><h1>${title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n`
  );
}

function escapeHtml(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;");
}

function send(
  res: ServerResponse,
  record: FakeOpenCTIRequest,
  status: number,
  body: string,
  contentType: string | null,
  headers: Record<string, string> = {},
): void {
  const buffer = Buffer.from(body, "utf8");
  record.status = status;
  res.writeHead(status, {
    ...(contentType === null ? {} : { "Content-Type": contentType }),
    ...headers,
    "Content-Length": String(buffer.length),
  });
  res.end(buffer);
}

function sendJson(
  res: ServerResponse,
  record: FakeOpenCTIRequest,
  status: number,
  payload: unknown,
): void {
  send(
    res,
    record,
    status,
    JSON.stringify(payload),
    "application/json; charset=utf-8",
  );
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

// Responds to a failure of the fake itself with a 500, or closes the socket
// when headers were already sent, and logs the error for the test output.
// A client that disconnected mid-body needs neither.
function failRequest(
  res: ServerResponse,
  req: IncomingMessage,
  error: unknown,
): void {
  if (req.destroyed || req.socket.destroyed) {
    return;
  }

  console.error(`fake OpenCTI failed on ${req.method} ${req.url}:`, error);

  if (res.headersSent) {
    res.destroy();
    return;
  }

  res.writeHead(500, { "Content-Type": "text/plain; charset=utf-8" });
  res.end(`fake OpenCTI failed: ${String(error)}`);
}
