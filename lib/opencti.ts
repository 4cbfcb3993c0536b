import { type KyInstance, isHTTPError, isTimeoutError } from "ky";
import { OpenCTIError, excerpt } from "./errors.ts";
import { createHttp, describeHttpFailure, describeTlsError, isTransientNetworkError, tlsProblem } from "./http.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import { USER_AGENT } from "./version.ts";

/** RabbitMQ connection details handed out by `registerConnector`. */
export interface RabbitMQConnection {
  host: string;
  vhost: string;
  use_ssl: boolean;
  port: number;
  user: string;
  pass: string;
}

/** Parts of the `registerConnector` result that the connector uses. */
export interface Registration {
  id: string;
  /** The stored connector state, an opaque string (JSON written by connectors). */
  connectorState: string | null;
  connectorUserId: string | null;
  config: {
    connection: RabbitMQConnection;
    push: string;
    push_routing: string;
    push_exchange: string;
  } | null;
}

/** The `connectorInfo` argument of `pingConnector`. Sizes in MB, times in UTC. */
export interface ConnectorInfo {
  run_and_terminate: boolean;
  buffering: boolean;
  queue_threshold: number;
  queue_messages_size: number;
  next_run_datetime: string | null;
  last_run_datetime: string | null;
}

/** Options of {@linkcode OpenCTIClient}. */
export interface OpenCTIClientOptions {
  /** Platform base URL without a trailing slash. */
  url: string;
  token: string;
  logger: Logger;
  userAgent: string;
  /** Verify the platform's TLS certificate. @default true */
  sslVerify?: boolean;
  ca?: string;
  /** Retries after the first attempt. @default 6 */
  retryLimit?: number;
  /** First retry delay in milliseconds. @default 1000 */
  retryDelayMs?: number;
  /** Time allowed for one request, in milliseconds. @default 300000 */
  timeoutMs?: number;
  /** `CONNECTOR_PUSH_MAX_MB`, named in the message of an HTTP 413. */
  pushMaxMb?: number;
}

/**
 * Creates the client of the platform that `config` names, with the
 * connector's user agent and TLS settings. `ca` is the content of the CA
 * file, and `options` sets the retries and timeouts of this use.
 */
export function createOpenCTIClient(
  config: Config,
  logger: Logger,
  ca: string | undefined,
  options: Pick<OpenCTIClientOptions, "retryLimit" | "retryDelayMs" | "timeoutMs" | "pushMaxMb">,
): OpenCTIClient {
  return new OpenCTIClient({
    url: config.opencti.url,
    token: config.opencti.token,
    logger,
    userAgent: USER_AGENT,
    sslVerify: config.opencti.sslVerify,
    ca,
    ...options,
  });
}

const ERROR_MESSAGES: Record<string, string> = {
  AUTH_REQUIRED: "the OpenCTI token is invalid or expired: check OPENCTI_TOKEN",
  FORBIDDEN_ACCESS:
    "the OpenCTI user of OPENCTI_TOKEN lacks a capability: give it the Connector role",
  GRAPHQL_VALIDATION_FAILED:
    "the platform does not accept this connector's GraphQL operation: the OpenCTI version is probably not supported",
  UNSUPPORTED_ERROR: "the platform rejected the data as unsupported",
  FUNCTIONAL_ERROR: "the platform refused the request",
};

// Error codes that a retry can fix: the platform is busy or restarting, or
// its response was cut off. `request` sends the operation again on these.
const TRANSIENT_CODES = new Set(["LOCK_ERROR", "DATABASE_ERROR", "TIMEOUT_ERROR", "RESPONSE_CUT_OFF"]);

/** GraphQL document of `stixBundlePush`, with the variables `$connectorId`, `$bundle` and `$workId`. */
export const STIX_BUNDLE_PUSH_MUTATION = `mutation ConnectorBundlePush($connectorId: String!, $bundle: String!, $workId: String) {
        stixBundlePush(connectorId: $connectorId, bundle: $bundle, work_id: $workId)
      }`;

/** Options of one {@linkcode OpenCTIClient.request}. */
export interface RequestOptions {
  /** False to send the operation once, without the client's retries. @default true */
  retry?: boolean;
  /** Timeout of each attempt, in milliseconds, in place of the client's. */
  timeoutMs?: number;
}

/**
 * Client of the OpenCTI GraphQL API for one connector: `POST <url>/graphql`
 * with the bearer token, bounded retries with backoff on network errors and
 * 5xx, and typed {@linkcode OpenCTIError}s carrying the platform's code.
 */
export class OpenCTIClient {
  readonly #options: OpenCTIClientOptions;
  readonly #http: KyInstance;
  readonly #endpoint: string;

  constructor(options: OpenCTIClientOptions) {
    this.#options = options;
    this.#endpoint = options.url.replace(/\/+$/, "") + "/graphql";
    this.#http = createHttp({
      service: "OpenCTI",
      logger: options.logger,
      userAgent: options.userAgent,
      rejectUnauthorized: options.sslVerify ?? true,
      ca: options.ca,
      retryLimit: options.retryLimit ?? 6,
      retryDelayMs: options.retryDelayMs,
      timeoutMs: options.timeoutMs ?? 300_000,
      // Every operation this connector sends can be repeated safely: pushes
      // are merged by STIX id and the others set values.
      retryMethods: ["post"],
    });
    options.logger.addSecrets(options.token);
  }

  /** The GraphQL endpoint URL. */
  get endpoint(): string {
    return this.#endpoint;
  }

  /**
   * Sends one GraphQL operation and returns its `data`. A platform error
   * that a retry can fix (LOCK_ERROR, DATABASE_ERROR, TIMEOUT_ERROR) or a
   * response cut off is sent again with backoff, up to `retryLimit` times;
   * network errors and 5xx are retried the same way by the HTTP layer.
   * `body`, when given, is the request body already serialized as
   * `{"query", "variables"}` JSON in UTF-8 and is sent in place of those.
   * With `retry: false` the operation is sent once, and `timeoutMs`
   * replaces the client's timeout for it. Raises OpenCTIError.
   */
  async request<T>(operation: string, query: string, variables: Record<string, unknown> = {}, body?: Uint8Array, options: RequestOptions = {}): Promise<T> {
    const retry = options.retry ?? true;
    const attempts = retry ? (this.#options.retryLimit ?? 6) + 1 : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#requestOnce<T>(operation, query, variables, body, options);
      } catch (error) {
        if (!(error instanceof OpenCTIError) || !TRANSIENT_CODES.has(error.code) || attempt >= attempts) {
          throw error;
        }
        this.#options.logger.warn("OpenCTI request failed, retrying", {
          operation,
          attempt: attempt + 1,
          max_attempts: attempts,
          reason: error.code,
        });
        const delay = Math.min((this.#options.retryDelayMs ?? 1000) * 2 ** (attempt - 1), 30_000);
        await Bun.sleep(delay * (0.8 + Math.random() * 0.4));
      }
    }
  }

  async #requestOnce<T>(operation: string, query: string, variables: Record<string, unknown>, body: Uint8Array | undefined, options: RequestOptions): Promise<T> {
    const authorization = `Bearer ${this.#options.token}`;
    // With `retry: false`, the HTTP layer does not retry network errors and 5xx either.
    const once = {
      ...(options.retry === false ? { retry: { limit: 0 } } : {}),
      ...(options.timeoutMs === undefined ? {} : { timeout: Math.max(1, Math.round(options.timeoutMs)) }),
    };
    const pending =
      body === undefined
        ? this.#http.post(this.#endpoint, { json: { query, variables }, headers: { authorization }, ...once })
        : this.#http.post(this.#endpoint, { body, headers: { authorization, "content-type": "application/json" }, ...once });
    let response: Response;
    try {
      response = await pending;
    } catch (error) {
      throw this.#wrapHttpError(error, operation);
    }

    let text: string;
    try {
      // ky's text() bounds the body read by the request timeout, which
      // reading the Response directly would not.
      text = await pending.text();
    } catch (error) {
      throw new OpenCTIError(`OpenCTI ${operation} response was cut off: ${describeHttpFailure(error)}`, {
        code: "RESPONSE_CUT_OFF",
        operation,
        cause: error,
      });
    }
    let payload: { data?: unknown; errors?: { message?: string; name?: string; extensions?: { code?: string } }[] };
    try {
      payload = JSON.parse(text);
    } catch {
      throw this.#notGraphQL(operation, response, text);
    }
    if (payload === null || typeof payload !== "object" || (!("data" in payload) && !("errors" in payload))) {
      throw this.#notGraphQL(operation, response, text);
    }

    const first = payload.errors?.[0];
    if (first) {
      const code = first.extensions?.code ?? first.name ?? "UNKNOWN";
      const meaning = ERROR_MESSAGES[code];
      const detail = this.#excerpt(first.message ?? "", 300);
      throw new OpenCTIError(
        meaning
          ? `OpenCTI ${operation} failed with ${code}: ${meaning} (${detail})`
          : `OpenCTI ${operation} failed with ${code}: ${detail}`,
        { code, operation, retryable: TRANSIENT_CODES.has(code) },
      );
    }
    return payload.data as T;
  }

  /** Returns the platform's version string (`about { version }`), sent once with `retry: false`. */
  async platformVersion(options: RequestOptions = {}): Promise<string> {
    const data = await this.request<{ about: { version: string } | null }>(
      "about",
      "query ConnectorAbout { about { version } }",
      {},
      undefined,
      options,
    );
    if (!data.about?.version) {
      throw new OpenCTIError("OpenCTI about query returned no version", { code: "NO_VERSION", operation: "about" });
    }
    return data.about.version;
  }

  /** Registers (or re-registers) the connector and returns its stored state and queue details. */
  async registerConnector(input: { id: string; name: string; type: string; scope: string[] }): Promise<Registration> {
    const data = await this.request<{ registerConnector: Record<string, any> | null }>(
      "registerConnector",
      `mutation ConnectorRegister($input: RegisterConnectorInput) {
        registerConnector(input: $input) {
          id
          connector_state
          connector_user_id
          config {
            connection { host vhost use_ssl port user pass }
            push
            push_routing
            push_exchange
          }
        }
      }`,
      {
        input: {
          id: input.id,
          name: input.name,
          type: input.type,
          scope: input.scope,
          auto: false,
          only_contextual: false,
          playbook_compatible: false,
        },
      },
    );

    const connector = data.registerConnector;
    if (!connector) {
      throw new OpenCTIError(`OpenCTI registerConnector returned nothing for connector ${input.id}`, {
        code: "NO_CONNECTOR",
        operation: "registerConnector",
      });
    }
    if (connector.config?.connection?.pass) {
      this.#options.logger.addSecrets(connector.config.connection.pass);
    }
    return {
      id: connector.id,
      connectorState: connector.connector_state ?? null,
      connectorUserId: connector.connector_user_id ?? null,
      config: connector.config ?? null,
    };
  }

  /** Sends a ping with the state and connector info; returns the state the platform now stores. */
  async pingConnector(id: string, state: string, info: ConnectorInfo): Promise<string | null> {
    const data = await this.request<{ pingConnector: { connector_state: string | null } | null }>(
      "pingConnector",
      `mutation ConnectorPing($id: ID!, $state: String, $connectorInfo: ConnectorInfoInput) {
        pingConnector(id: $id, state: $state, connectorInfo: $connectorInfo) { id connector_state }
      }`,
      { id, state, connectorInfo: info },
    );
    if (!data.pingConnector) {
      throw new OpenCTIError(`OpenCTI pingConnector returned nothing for connector ${id}`, {
        code: "NO_CONNECTOR",
        operation: "pingConnector",
      });
    }
    return data.pingConnector.connector_state ?? null;
  }

  /** Creates a work for the connector and returns its id. */
  async workAdd(connectorId: string, friendlyName: string): Promise<string> {
    const data = await this.request<{ workAdd: { id: string } }>(
      "workAdd",
      `mutation ConnectorWorkAdd($connectorId: String!, $friendlyName: String) {
        workAdd(connectorId: $connectorId, friendlyName: $friendlyName) { id }
      }`,
      { connectorId, friendlyName },
    );
    return data.workAdd.id;
  }

  /**
   * Marks a work as processed, in error or not, with a message. Registered
   * secrets in the message are masked, because the platform shows it to
   * every user who can see the connector.
   */
  async workToProcessed(workId: string, rawMessage: string, inError: boolean): Promise<void> {
    const message = this.#options.logger.mask(rawMessage);
    await this.request(
      "workEdit.toProcessed",
      `mutation ConnectorWorkToProcessed($id: ID!, $message: String, $inError: Boolean) {
        workEdit(id: $id) { toProcessed(message: $message, inError: $inError) }
      }`,
      { id: workId, message, inError },
    );
  }

  /** Adds expected items to a work, before the matching AMQP messages are published. */
  async workAddExpectations(workId: string, expectations: number): Promise<void> {
    await this.request(
      "workEdit.addExpectations",
      `mutation ConnectorWorkAddExpectations($id: ID!, $expectations: Int) {
        workEdit(id: $id) { addExpectations(expectations: $expectations) }
      }`,
      { id: workId, expectations },
    );
  }

  /** Pushes one bundle (a JSON string) through `stixBundlePush`. */
  async stixBundlePush(connectorId: string, bundle: string, workId: string): Promise<void> {
    await this.request("stixBundlePush", STIX_BUNDLE_PUSH_MUTATION, { connectorId, bundle, workId });
  }

  /**
   * Pushes one bundle through `stixBundlePush` with the request body
   * already serialized: {@linkcode STIX_BUNDLE_PUSH_MUTATION} and its
   * variables as JSON in UTF-8, so that a large bundle is not copied into
   * another string. The caller keeps `body` unchanged until this resolves.
   */
  async stixBundlePushBody(body: Uint8Array): Promise<void> {
    await this.request("stixBundlePush", STIX_BUNDLE_PUSH_MUTATION, {}, body);
  }

  /**
   * Returns the connector's works in the `wait` or `progress` status, with
   * their `processed_time`, which `toProcessed` sets.
   */
  async openWorks(connectorId: string): Promise<{ id: string; name: string | null; processedTime: string | null }[]> {
    const data = await this.request<{
      connector: {
        waiting: { id: string; name: string | null; processed_time: string | null }[] | null;
        running: { id: string; name: string | null; processed_time: string | null }[] | null;
      } | null;
    }>(
      "connector",
      `query ConnectorOpenWorks($id: String!) {
        connector(id: $id) {
          id
          waiting: works(status: "wait") { id name processed_time }
          running: works(status: "progress") { id name processed_time }
        }
      }`,
      { id: connectorId },
    );
    const works = [...(data.connector?.waiting ?? []), ...(data.connector?.running ?? [])];
    return works.map((work) => ({ id: work.id, name: work.name, processedTime: work.processed_time }));
  }

  /** Returns true when the platform has an identity with this STIX id (`identity(id)`). */
  async identityExists(stixId: string): Promise<boolean> {
    const data = await this.request<{ identity: { id: string } | null }>(
      "identity",
      `query ConnectorIdentity($id: String!) {
        identity(id: $id) { id }
      }`,
      { id: stixId },
    );
    return data.identity !== null;
  }

  /** Returns the size of the connector's push queue in bytes, or undefined when the connector is unknown. */
  async queueSize(connectorId: string): Promise<{ messages: number; bytes: number } | undefined> {
    const data = await this.request<{
      connector: { connector_queue_details: { messages_number: number; messages_size: number } } | null;
    }>(
      "connector",
      `query ConnectorQueueDetails($id: String!) {
        connector(id: $id) { id connector_queue_details { messages_number messages_size } }
      }`,
      { id: connectorId },
    );
    if (!data.connector) {
      return undefined;
    }
    const details = data.connector.connector_queue_details;
    return { messages: details.messages_number, bytes: details.messages_size };
  }

  /**
   * Returns the connector's `updated_at`, which each registration and ping
   * moves, or undefined when the platform has no connector with this id.
   */
  async connectorUpdatedAt(connectorId: string): Promise<Date | undefined> {
    const data = await this.request<{ connector: { updated_at: string | null } | null }>(
      "connector",
      `query ConnectorUpdatedAt($id: String!) {
        connector(id: $id) { id updated_at }
      }`,
      { id: connectorId },
    );
    const updatedAt = data.connector?.updated_at;
    if (!updatedAt || Number.isNaN(Date.parse(updatedAt))) {
      return undefined;
    }
    return new Date(updatedAt);
  }

  #wrapHttpError(error: unknown, operation: string): OpenCTIError {
    if (isHTTPError(error)) {
      const status = error.response.status;
      const body = typeof error.data === "string" ? error.data : JSON.stringify(error.data ?? "");
      if (status === 413) {
        return new OpenCTIError(
          `OpenCTI ${operation} failed with HTTP 413: the request was larger than the platform's body limit (app:max_payload_body_size); lower CONNECTOR_PUSH_MAX_MB (now ${this.#options.pushMaxMb ?? "unset"}) or raise the platform's limit`,
          { code: "HTTP_413", operation, retryable: false },
        );
      }
      const contentType = error.response.headers.get("content-type") ?? "";
      // A 5xx page comes from the platform or a reverse proxy in front of it
      // while the platform restarts, so it is retried below whatever its type.
      const transient = status >= 500 || status === 429 || status === 408;
      if (status === 404 || status === 405 || (!transient && contentType.includes("text/html"))) {
        return new OpenCTIError(
          `${this.#endpoint} is not an OpenCTI GraphQL endpoint (HTTP ${status} on ${operation}: ${this.#excerpt(body)}): ${this.#urlHint()}`,
          { code: "NOT_GRAPHQL", operation, retryable: false },
        );
      }
      return new OpenCTIError(`OpenCTI ${operation} failed with HTTP ${status}: ${this.#excerpt(body)}`, {
        code: `HTTP_${status}`,
        operation,
        cause: error,
        retryable: transient,
      });
    }
    if (tlsProblem(error) !== undefined) {
      const message = describeTlsError("OpenCTI", this.#endpoint, error, {
        urlVariable: "OPENCTI_URL",
        sslVerifyVariable: "OPENCTI_SSL_VERIFY",
      });
      return new OpenCTIError(message, {
        code: "TLS",
        operation,
        cause: error,
        retryable: false,
      });
    }
    if (isTimeoutError(error)) {
      return new OpenCTIError(`OpenCTI ${operation} timed out on ${this.#endpoint}`, {
        code: "TIMEOUT",
        operation,
        cause: error,
      });
    }
    const reason = isTransientNetworkError(error) ? describeHttpFailure(error) : String(error);
    return new OpenCTIError(`OpenCTI ${operation} failed: ${reason} on ${this.#endpoint}: check that the platform is up and OPENCTI_URL is right`, {
      code: "NETWORK",
      operation,
      cause: error,
    });
  }

  // Cuts a reply body for a message, with the registered secrets masked
  // first: a secret cut by the length limit would no longer be found whole.
  #excerpt(body: string, max?: number): string {
    return excerpt(this.#options.logger.mask(body), max);
  }

  #urlHint(): string {
    if (/\/graphql$/i.test(this.#options.url.replace(/\/+$/, ""))) {
      return "check OPENCTI_URL: give the platform's base URL without /graphql, which the connector adds";
    }
    return "check OPENCTI_URL";
  }

  #notGraphQL(operation: string, response: Response, text: string): OpenCTIError {
    const contentType = response.headers.get("content-type") ?? "no content type";
    return new OpenCTIError(
      `${this.#endpoint} is not an OpenCTI GraphQL endpoint: ${operation} got HTTP ${response.status} with ${contentType} (${this.#excerpt(text)}): ${this.#urlHint()}`,
      { code: "NOT_GRAPHQL", operation, retryable: false },
    );
  }
}

/** Returns true when `version` (`6.9.22`, `7.260817.0`) is at least `major.minor`. */
export function platformAtLeast(version: string, major: number, minor: number): boolean {
  const match = /^(\d+)\.(\d+)/.exec(version);
  if (!match) {
    return false;
  }
  const [actualMajor, actualMinor] = [Number(match[1]), Number(match[2])];
  return actualMajor > major || (actualMajor === major && actualMinor >= minor);
}
