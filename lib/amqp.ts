import { readFileSync } from "node:fs";

import { connect, type ChannelModel, type ConfirmChannel, type Options, type SocketOptions } from "amqplib";

import type { Config } from "./config.ts";
import { RunError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { type Progress, createProgress } from "./progress.ts";
import type { BundleSender, SendContext, SendResult } from "./sender.ts";
import { splitBundle, type SplitResult } from "./splitter.ts";
import type { StixObject } from "./stix.ts";

/** RabbitMQ connection details from `registerConnector` (`config.connection`). */
export interface RabbitMqConnection {
  host: string;
  vhost: string;
  use_ssl: boolean;
  port: number;
  user: string;
  pass: string;
}

/** The parts of the `registerConnector` result that the RabbitMQ push path uses. */
export interface AmqpRegistration {
  /** Id of the connector's OpenCTI user, sent as `applicant_id` in every message. */
  connectorUserId: string | null;
  /** Null when the platform returned no queue configuration. */
  config: {
    connection: RabbitMqConnection;
    push_exchange: string;
    push_routing: string;
  } | null;
}

/** Options of {@linkcode createAmqpSender}. */
export interface AmqpSenderOptions {
  registration: AmqpRegistration;
  /** `MQ_*` overrides, which win over `registration.config.connection`. */
  mq: Config["mq"];
  /** PEM file of extra CA certificates trusted for the broker, besides the system ones. */
  caFile?: string;
  /** Adds `count` expectations to the work, before any message is published. */
  addExpectations: (workId: string, count: number) => Promise<void>;
  /**
   * Closes the work in error when publishing fails after the expectations
   * were added. Leave it out when the caller closes the work itself.
   */
  closeWorkInError?: (workId: string, message: string) => Promise<void>;
  logger: Logger;
  /** Author identity, added to the objects when no object has its id. */
  author?: StixObject;
  /** Messages published before waiting for the broker's confirms. @default 100 */
  batchSize?: number;
  /** Publish attempts after the first one for a nacked or unroutable message. @default 5 */
  maxRetries?: number;
  /** Delay before the first retry in milliseconds, doubled for each later one. @default 2000 */
  retryDelayMs?: number;
  /** Time allowed for the TCP and TLS connection and the AMQP handshake, in ms. @default 30000 */
  connectTimeoutMs?: number;
  /** Time allowed to publish one batch and receive its confirms, in milliseconds. @default 300000 */
  batchTimeoutMs?: number;
  /** AMQP heartbeat interval in seconds. @default 10 */
  heartbeatSeconds?: number;
}

/** A {@linkcode BundleSender} that publishes on the connector's push queue. */
export interface AmqpSender extends BundleSender {
  /**
   * Opens the connection and the confirm channel now instead of at the first
   * send, so that a wrong broker address fails at startup.
   *
   * @throws {AmqpError} when the broker cannot be reached or rejects the login.
   */
  connect(): Promise<void>;
}

/** A RabbitMQ connection, channel or publish failure. */
export class AmqpError extends RunError {
  override name = "AmqpError";
}

// Every connection error names these, because they override what
// registerConnector returned.
const OVERRIDE_HINT =
  "The connection details come from registerConnector: override them with MQ_HOST, MQ_PORT, " +
  "MQ_VHOST, MQ_USE_SSL, MQ_USER and MQ_PASS";

// Time allowed for the broker's close-ok, in milliseconds: at close() and
// after a failed send, when the connection may be stuck.
const CLOSE_TIMEOUT_MS = 5000;
const FAILED_CLOSE_TIMEOUT_MS = 1000;

/** Envelope of one push queue message, as pycti publishes it and the worker reads it. */
interface QueueBundleMessage {
  bundle_type: "QUEUE_BUNDLE";
  applicant_id: string | null;
  action_sequence: number;
  entities_types: string[];
  /** Base64 of the UTF-8 bundle JSON. */
  content: string;
  update: boolean;
  draft_id: string | null;
  work_id: string;
}

interface OutgoingMessage {
  sequence: number;
  messageId: string;
  body: Buffer;
}

// One connection and its confirm channel. `closed` turns true when either
// closes, for any reason, and the next send then opens a new session.
interface Session {
  connection: ChannelModel;
  channel: ConfirmChannel;
  closed: boolean;
  closeReason?: string;
  /** Resolves when the session closes. */
  whenClosed: Promise<void>;
  /** Message id to the broker's reason, for messages returned as unroutable. */
  returned: Map<string, string>;
  blockedReason?: string;
}

interface Target {
  url: string;
  connect: Options.Connect;
  socket: SocketOptions;
}

/**
 * Creates a sender that publishes each version on the connector's push queue
 * as pycti does: the objects are split into one bundle per object
 * ({@linkcode splitBundle}), `addExpectations(workId, n)` is called, then
 * each bundle is published as a persistent `QUEUE_BUNDLE` message on
 * `push_exchange` with `push_routing` on a confirm channel.
 *
 * Messages are published `batchSize` at a time, waiting for `drain` when the
 * socket buffer is full, and each batch waits for its confirms. A nacked or
 * unroutable message is published again up to `maxRetries` times with
 * exponential backoff. After that, or when the connection drops, `send`
 * rejects with an {@linkcode AmqpError} and the next send reconnects.
 *
 * One connection (heartbeat 10 s) serves every send until `close()`. It is
 * opened at the first `send` or `connect()`, with TLS when `use_ssl` is set.
 * The certificate is verified unless `mq.rejectUnauthorized` is false.
 *
 * @throws {AmqpError} when `registration.config` is null.
 */
export function createAmqpSender(options: AmqpSenderOptions): AmqpSender {
  const { registration, logger } = options;
  const queueConfig = registration.config;
  if (queueConfig === null) {
    throw new AmqpError(
      "registerConnector returned no queue configuration, so the RabbitMQ push exchange is unknown: " +
        "use CONNECTOR_QUEUE_PROTOCOL=api",
      { retryable: false },
    );
  }

  const batchSize = Math.max(1, options.batchSize ?? 100);
  const maxRetries = Math.max(0, options.maxRetries ?? 5);
  const retryDelayMs = options.retryDelayMs ?? 2000;
  const batchTimeoutMs = options.batchTimeoutMs ?? 300_000;
  const exchange = queueConfig.push_exchange;
  const routingKey = queueConfig.push_routing;
  const target = resolveTarget(queueConfig.connection, options);
  const password = target.connect.password ?? "";

  logger.addSecrets(password);

  let session: Session | undefined;
  // Sends run one after the other because they share the channel.
  let queue: Promise<unknown> = Promise.resolve();

  async function openSession(): Promise<Session> {
    if (session !== undefined && !session.closed) {
      return session;
    }

    session = undefined;
    logger.info("Connecting to RabbitMQ", {
      url: target.url,
      vhost: target.connect.vhost === undefined ? undefined : decodeURIComponent(target.connect.vhost),
      user: target.connect.username,
    });

    let connection: ChannelModel;
    try {
      connection = await connect(target.connect, target.socket);
    } catch (error) {
      throw connectionError(error, target, password);
    }

    let channel: ConfirmChannel;
    try {
      channel = await connection.createConfirmChannel();
    } catch (error) {
      await connection.close().catch(() => {});
      const reason = describeError(error, password);
      throw new AmqpError(`RabbitMQ at ${target.url} did not open a confirm channel: ${reason}`, { cause: error });
    }

    let markClosed!: () => void;
    const opened: Session = {
      connection,
      channel,
      closed: false,
      whenClosed: new Promise((resolve) => (markClosed = resolve)),
      returned: new Map(),
    };

    const onClosed = (source: "connection" | "channel", error?: Error) => {
      if (opened.closed) {
        return;
      }
      opened.closed = true;
      opened.closeReason = error ? describeError(error, password) : `${source} closed`;
      markClosed();
      if (session === opened) {
        logger.warn("RabbitMQ connection closed", { url: target.url, reason: opened.closeReason });
      }
    };

    connection.on("error", (error: Error) => onClosed("connection", error));
    connection.on("close", (error?: Error) => onClosed("connection", error));
    channel.on("error", (error: Error) => onClosed("channel", error));
    channel.on("close", () => onClosed("channel"));
    connection.on("blocked", (reason: string) => {
      opened.blockedReason = reason;
      logger.warn("RabbitMQ blocked publishing on the connection", { url: target.url, reason });
    });
    connection.on("unblocked", () => {
      opened.blockedReason = undefined;
      logger.info("RabbitMQ unblocked publishing on the connection", { url: target.url });
    });
    channel.on("return", (message) => {
      const fields = message.fields as unknown as { replyCode?: number; replyText?: string };
      const messageId = String(message.properties.messageId);
      opened.returned.set(messageId, `${fields.replyCode ?? "?"} ${fields.replyText ?? "returned"}`);
    });

    logger.info("Connected to RabbitMQ", { url: target.url, exchange, routing_key: routingKey });
    session = opened;
    return opened;
  }

  // Closes the session's connection, waiting at most `timeoutMs` for the
  // broker's close-ok before the socket is destroyed.
  async function discardSession(timeoutMs: number): Promise<void> {
    const current = session;
    session = undefined;
    if (current === undefined || current.closed) {
      return;
    }

    current.closed = true;
    const closedInTime = await withTimeout(
      current.connection.close().then(
        () => true,
        () => true,
      ),
      timeoutMs,
      false,
    );
    if (!closedInTime) {
      logger.warn("RabbitMQ did not confirm the connection close in time, so the socket is destroyed", {
        url: target.url,
        timeout_ms: timeoutMs,
      });
      destroySocket(current.connection);
    }
  }

  // `render` turns an object of the splitter's output into the object
  // published; the spooled path splits light objects and reads each back.
  async function sendVersion(
    objects: StixObject[],
    context: SendContext,
    render: (object: StixObject) => StixObject = (object) => object,
  ): Promise<SendResult> {
    const attributes = { work_id: context.workId, version_id: context.versionId };
    const author = options.author;
    const authorMissing = author !== undefined && !objects.some((object) => object.id === author.id);
    const withAuthor = authorMissing ? [author, ...objects] : objects;

    const split = splitBundle({ id: `bundle--${crypto.randomUUID()}`, objects: withAuthor });
    const dropped = split.incompatible.length;
    if (split.bundles.length === 0) {
      logger.warn("Nothing to send: every object of the version was dropped as incompatible", {
        ...attributes,
        dropped,
      });
      return { bundles: 0, objects: 0, bytes: 0, dropped };
    }

    // Connecting first means that an unreachable broker fails the send
    // before the work expects anything.
    const current = await openSession();

    try {
      await options.addExpectations(context.workId, split.expectations);
    } catch (error) {
      throw new AmqpError(
        `Adding ${split.expectations} expectations to work ${context.workId} failed, so nothing was published: ` +
          describeError(error, password),
        { cause: error },
      );
    }

    logger.info("Sending bundles to the push queue", {
      ...attributes,
      bundles: split.bundles.length,
      dropped,
      dropped_types: countTypes(split.incompatible),
      exchange,
      routing_key: routingKey,
    });

    const started = performance.now();
    try {
      const bytes = await publishAll(current, split, context, render);
      logger.info("Bundles sent to the push queue", {
        ...attributes,
        bundles: split.bundles.length,
        bytes,
        duration_ms: Math.round(performance.now() - started),
      });
      return { bundles: split.bundles.length, objects: split.bundles.length, bytes, dropped };
    } catch (error) {
      await discardSession(FAILED_CLOSE_TIMEOUT_MS);
      const message = error instanceof Error ? error.message : String(error);
      if (options.closeWorkInError !== undefined) {
        await options.closeWorkInError(context.workId, message).catch((closeError: unknown) => {
          logger.error("Closing the work in error failed", {
            ...attributes,
            error: describeError(closeError, password),
          });
        });
      }
      throw error;
    }
  }

  // Publishes every split bundle in order and returns the bytes of bundle
  // JSON sent. Progress counts the messages that RabbitMQ confirmed, one
  // object each, under the same message as the api protocol's pushes.
  async function publishAll(
    current: Session,
    split: SplitResult,
    context: SendContext,
    render: (object: StixObject) => StixObject,
  ): Promise<number> {
    const total = split.bundles.length;
    const progress = createProgress({
      message: "Pushing Citalid version",
      title: `Pushing ${context.versionId}`,
      unit: "objects",
      total,
      logger,
      attributes: { work_id: context.workId, version_id: context.versionId },
    });
    try {
      return await publishBatches(current, split, context, render, progress);
    } finally {
      progress.done();
    }
  }

  async function publishBatches(
    current: Session,
    split: SplitResult,
    context: SendContext,
    render: (object: StixObject) => StixObject,
    progress: Progress,
  ): Promise<number> {
    const total = split.bundles.length;
    let bytes = 0;

    for (let start = 0; start < total; start += batchSize) {
      const batch: OutgoingMessage[] = [];
      for (let index = start; index < Math.min(start + batchSize, total); index++) {
        const { bundle } = split.bundles[index]!;
        const json = JSON.stringify({ ...bundle, objects: [render(bundle.objects[0])] });
        const sequence = index + 1;
        bytes += Buffer.byteLength(json, "utf8");
        batch.push({
          sequence,
          messageId: `${context.workId}:${sequence}`,
          body: encodeMessage(json, sequence, registration.connectorUserId, context.workId),
        });
      }

      await publishWithRetries(current, batch, context, start, total);
      progress.advance(batch.length);
      logger.debug("Bundles confirmed by RabbitMQ", {
        work_id: context.workId,
        confirmed: start + batch.length,
        total,
      });
    }

    return bytes;
  }

  // NOTE: a retried message goes out after the rest of its batch, so the
  // worker can read it after objects that depend on it. The worker retries
  // those on its missing-reference errors.
  async function publishWithRetries(
    current: Session,
    batch: OutgoingMessage[],
    context: SendContext,
    confirmedBefore: number,
    total: number,
  ): Promise<void> {
    let pending = batch;

    for (let attempt = 0; ; attempt++) {
      const failures = await publishBatch(current, pending, context, confirmedBefore, total);
      if (failures.length === 0) {
        return;
      }

      const first = failures[0]!;
      if (attempt >= maxRetries) {
        throw new AmqpError(
          `RabbitMQ did not accept ${failures.length} message(s) of version ${context.versionId} ` +
            `(first: action_sequence ${first.message.sequence}, ${first.reason}) after ${maxRetries} retries ` +
            `on exchange "${exchange}" with routing key "${routingKey}". ` +
            "Check that the connector's push queue exists and is bound: the platform re-creates it at each ping",
        );
      }

      const delayMs = retryDelayMs * 2 ** attempt;
      logger.warn("RabbitMQ did not accept messages, retrying", {
        work_id: context.workId,
        version_id: context.versionId,
        messages: failures.length,
        action_sequence: first.message.sequence,
        reason: first.reason,
        retry: attempt + 1,
        max_retries: maxRetries,
        delay_ms: delayMs,
      });
      await Promise.race([sleep(delayMs), current.whenClosed]);
      pending = failures.map((failure) => failure.message);
    }
  }

  // Publishes one batch and waits for its confirms. Returns the messages
  // the broker nacked or returned as unroutable.
  async function publishBatch(
    current: Session,
    batch: OutgoingMessage[],
    context: SendContext,
    confirmedBefore: number,
    total: number,
  ): Promise<{ message: OutgoingMessage; reason: string }[]> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const blocked = current.blockedReason
          ? `, and the broker blocked the connection: ${current.blockedReason}`
          : "";
        reject(
          new AmqpError(
            `RabbitMQ did not confirm the messages of version ${context.versionId} within ${batchTimeoutMs} ms` +
              `${blocked}. ${confirmedBefore} of ${total} messages were confirmed before`,
          ),
        );
      }, batchTimeoutMs);
    });
    // The deadline may fire while no race listens to it.
    deadline.catch(() => {});

    try {
      // waitForConfirms rejects at the first nack while later messages are
      // still unconfirmed, so each message has its own confirm callback.
      const confirms: Promise<string | null>[] = [];
      for (const message of batch) {
        if (current.closed) {
          break;
        }

        let settle!: (reason: string | null) => void;
        confirms.push(new Promise((resolve) => (settle = resolve)));
        const accepted = current.channel.publish(
          exchange,
          routingKey,
          message.body,
          {
            deliveryMode: 2,
            contentEncoding: "utf-8",
            mandatory: true,
            messageId: message.messageId,
          },
          (error: unknown) => settle(error ? describeError(error, password) : null),
        );

        if (!accepted) {
          logger.debug("Waiting for the RabbitMQ channel buffer to drain", {
            work_id: context.workId,
            action_sequence: message.sequence,
          });
          await Promise.race([waitForDrain(current), deadline]);
        }
      }

      const outcomes = await Promise.race([Promise.all(confirms), deadline]);
      if (current.closed) {
        throw closedError(current, context, confirmedBefore, total);
      }

      const failures: { message: OutgoingMessage; reason: string }[] = [];
      batch.forEach((message, index) => {
        const returned = current.returned.get(message.messageId);
        current.returned.delete(message.messageId);
        const nacked = outcomes[index];
        if (returned !== undefined) {
          failures.push({ message, reason: `returned as unroutable: ${returned}` });
        } else if (nacked !== null && nacked !== undefined) {
          failures.push({ message, reason: `nacked: ${nacked}` });
        }
      });
      return failures;
    } catch (error) {
      if (error instanceof AmqpError) {
        throw error;
      }
      // publish throws once the channel is closed.
      if (current.closed) {
        throw closedError(current, context, confirmedBefore, total, error);
      }
      const reason = describeError(error, password);
      throw new AmqpError(`Publishing version ${context.versionId} to RabbitMQ failed: ${reason}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  function closedError(
    current: Session,
    context: SendContext,
    confirmedBefore: number,
    total: number,
    cause?: unknown,
  ): AmqpError {
    const reason = current.closeReason ?? "closed";
    const sizeHint = /larger than configured max size/i.test(reason)
      ? " A bundle is larger than the broker's max_message_size: raise that setting on the broker."
      : "";
    return new AmqpError(
      `The RabbitMQ connection to ${target.url} closed while version ${context.versionId} was being published ` +
        `(${confirmedBefore} of ${total} messages confirmed): ${reason}.${sizeHint} ` +
        "The next send reconnects",
      { cause },
    );
  }

  function enqueue<T>(task: () => Promise<T>): Promise<T> {
    const result = queue.then(task, task);
    queue = result.catch(() => {});
    return result;
  }

  return {
    send: (objects, context) => enqueue(() => sendVersion(objects, context)),
    sendSpooled: (version, context) =>
      enqueue(() => sendVersion(version.splitInput(), context, (object) => version.renderSplit(object))),
    connect: () => enqueue(async () => void (await openSession())),
    close: () =>
      enqueue(async () => {
        const current = session;
        await discardSession(CLOSE_TIMEOUT_MS);
        if (current !== undefined) {
          logger.info("RabbitMQ connection closed by the connector", { url: target.url });
        }
      }),
  };
}

// Applies the MQ_* overrides to the registration and builds amqplib's options.
function resolveTarget(registered: RabbitMqConnection, options: AmqpSenderOptions): Target {
  const { mq, logger } = options;
  const host = mq.host ?? registered.host;
  const port = mq.port ?? registered.port;
  const vhost = mq.vhost ?? registered.vhost;
  const useSsl = mq.useSsl ?? registered.use_ssl;
  const protocol = useSsl ? "amqps" : "amqp";

  const socket: SocketOptions = { timeout: options.connectTimeoutMs ?? 30_000, noDelay: true };
  if (useSsl) {
    socket.rejectUnauthorized = mq.rejectUnauthorized;
    if (!mq.rejectUnauthorized) {
      logger.warn(
        "The RabbitMQ TLS certificate is not verified because MQ_USE_SSL_REJECT_UNAUTHORIZED is false: " +
          "trust the broker's CA with CONNECTOR_CA_FILE instead",
        { host, port },
      );
    }
    if (options.caFile !== undefined) {
      // A require, because the compiled bundle hoists the imports of this
      // lazily loaded file, so an import would load node:tls at every start.
      const { rootCertificates } = require("node:tls") as typeof import("node:tls");
      socket.ca = [...rootCertificates, readCaFile(options.caFile)];
    }
  }

  return {
    url: `${protocol}://${formatHost(host)}:${port}`,
    connect: {
      protocol,
      hostname: host,
      port,
      username: mq.user ?? registered.user,
      password: mq.pass ?? registered.pass,
      // amqplib percent-decodes the vhost, so a literal "%" must be encoded.
      vhost: encodeURIComponent(vhost),
      heartbeat: options.heartbeatSeconds ?? 10,
    },
    socket,
  };
}

function readCaFile(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new AmqpError(
      `Cannot read the CA file ${path} for RabbitMQ: ${(error as Error).message}. Fix CONNECTOR_CA_FILE`,
      { cause: error, retryable: false },
    );
  }
}

function connectionError(error: unknown, target: Target, password: string): AmqpError {
  const reason = describeError(error, password);
  const vhost = decodeURIComponent(target.connect.vhost ?? "/");
  const user = target.connect.username ?? "";

  if (/ACCESS[-_]REFUSED/.test(reason)) {
    return new AmqpError(
      `RabbitMQ at ${target.url} rejected the login of user "${user}" on vhost "${vhost}": ${reason}. ` +
        OVERRIDE_HINT,
      { cause: error, retryable: false },
    );
  }

  // amqplib reports a refused connection.open as "Expected ConnectionOpenOk;
  // got <ConnectionClose ...>", which RabbitMQ sends when the vhost does not
  // exist or the user has no access to it.
  if (/NOT[-_]ALLOWED|Expected ConnectionOpenOk/.test(reason)) {
    return new AmqpError(
      `RabbitMQ at ${target.url} refused to open vhost "${vhost}" for user "${user}", ` +
        `so the vhost does not exist or the user has no access to it: ${reason}. ${OVERRIDE_HINT}`,
      { cause: error, retryable: false },
    );
  }

  const code = (error as { code?: unknown } | null)?.code;
  const tlsHint =
    typeof code === "string" && /CERT|SELF_SIGNED|UNABLE_TO|HOSTNAME|ERR_TLS/.test(code)
      ? ". Trust the broker's CA with CONNECTOR_CA_FILE"
      : "";
  return new AmqpError(
    `Cannot connect to RabbitMQ at ${target.url} (vhost "${vhost}"): ${reason}${tlsHint}. ${OVERRIDE_HINT}`,
    { cause: error },
  );
}

// Builds the message body: pycti's envelope around the base64 bundle JSON.
function encodeMessage(
  bundleJson: string,
  sequence: number,
  applicantId: string | null,
  workId: string,
): Buffer {
  const message: QueueBundleMessage = {
    bundle_type: "QUEUE_BUNDLE",
    applicant_id: applicantId,
    action_sequence: sequence,
    entities_types: [],
    content: Buffer.from(bundleJson, "utf8").toString("base64"),
    update: false,
    draft_id: null,
    work_id: workId,
  };
  return Buffer.from(JSON.stringify(message), "utf8");
}

function waitForDrain(current: Session): Promise<void> {
  const drained = new Promise<void>((resolve) => current.channel.once("drain", resolve));
  return Promise.race([drained, current.whenClosed]);
}

function countTypes(objects: readonly StixObject[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const object of objects) {
    counts[object.type] = (counts[object.type] ?? 0) + 1;
  }
  return counts;
}

// Error text without the broker password, which no amqplib message is
// known to contain but which must never reach a log line.
function describeError(error: unknown, password: string): string {
  const text = error instanceof Error ? error.message : String(error);
  return password.length >= 4 ? text.split(password).join("***") : text;
}

function formatHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

// Resolves with the promise's value, or with `fallback` after `milliseconds`.
async function withTimeout<T>(promise: Promise<T>, milliseconds: number, fallback: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(fallback), milliseconds);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// NOTE: amqplib has no public way to drop a connection without the close
// handshake, so this reaches for its internal socket (`connection.stream`,
// amqplib 2.3.1).
function destroySocket(model: ChannelModel): void {
  const internal = model.connection as unknown as { stream?: { destroy?: () => void } };
  internal.stream?.destroy?.();
}

function sleep(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}
