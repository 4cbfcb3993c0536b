// Tests of the RabbitMQ push path against a real broker on 127.0.0.1:5672
// (guest/guest). `.ci/rabbitmq.sh` starts one. Without a broker the tests are
// skipped, unless CI is set, in which case they fail.

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import tls from "node:tls";
import { gunzipSync } from "node:zlib";

import { connect, type Channel, type ChannelModel, type GetMessage } from "amqplib";

import {
  AmqpError,
  createAmqpSender,
  type AmqpRegistration,
  type AmqpSenderOptions,
  type RabbitMqConnection,
} from "../lib/amqp.ts";
import type { Config } from "../lib/config.ts";
import { createLogger, type Logger } from "../lib/log.ts";
import { configureProgress } from "../lib/progress.ts";
import { splitBundle } from "../lib/splitter.ts";
import type { StixBundle, StixObject } from "../lib/stix.ts";
import { TEST_TLS } from "./fixtures/tls.ts";

const BROKER_HOST = "127.0.0.1";
const BROKER_PORT = 5672;
const WORKER_EXCHANGE = "amqp.worker.exchange";
const CONNECTOR_USER_ID = "88ec0c6a-13ce-5e39-b486-354fe4a7084f";
const FIXTURES = join(import.meta.dir, "fixtures");
const CERTIFICATE_FILE = join(FIXTURES, "tls", "localhost.crt");

const DEFAULT_MQ: Config["mq"] = { rejectUnauthorized: true };

function probeBroker(): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: BROKER_HOST, port: BROKER_PORT });
    socket.setTimeout(2000);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}

function loadObjects(release: string): StixObject[] {
  const compressed = readFileSync(join(FIXTURES, `ics-attack-${release}.json.gz`));
  return (JSON.parse(gunzipSync(compressed).toString("utf8")) as StixBundle).objects;
}

interface CapturedLog {
  logger: Logger;
  lines: { level: string; message: string; attributes?: Record<string, unknown> }[];
  text: () => string;
}

function captureLog(): CapturedLog {
  const lines: CapturedLog["lines"] = [];
  const raw: string[] = [];
  const logger = createLogger({
    level: "debug",
    journald: false,
    write: (line) => {
      raw.push(line);
      lines.push(JSON.parse(line));
    },
  });
  return { logger, lines, text: () => raw.join("\n") };
}

// A push queue declared the way the platform declares it for a connector.
interface PushQueue {
  connectorId: string;
  queue: string;
  routingKey: string;
}

let admin: ChannelModel;
let adminChannel: Channel;
const createdQueues: string[] = [];

async function declarePushQueue(queueArguments: Record<string, unknown> = {}): Promise<PushQueue> {
  const connectorId = randomUUID();
  const queue = `push_${connectorId}`;
  const routingKey = `push_routing_${connectorId}`;

  await adminChannel.assertExchange(WORKER_EXCHANGE, "direct", { durable: true });
  await adminChannel.assertQueue(queue, {
    durable: true,
    exclusive: false,
    autoDelete: false,
    arguments: {
      name: "Citalid",
      config: { id: connectorId, type: "EXTERNAL_IMPORT", scope: "citalid" },
      "x-queue-type": "classic",
      ...queueArguments,
    },
  });
  await adminChannel.bindQueue(queue, WORKER_EXCHANGE, routingKey);
  createdQueues.push(queue);

  return { connectorId, queue, routingKey };
}

function registrationFor(push: PushQueue, connection: Partial<RabbitMqConnection> = {}): AmqpRegistration {
  const registration: AmqpRegistration = {
    connectorUserId: CONNECTOR_USER_ID,
    config: {
      connection: {
        host: BROKER_HOST,
        vhost: "/",
        use_ssl: false,
        port: BROKER_PORT,
        user: "guest",
        pass: "guest",
        ...connection,
      },
      push_exchange: WORKER_EXCHANGE,
      push_routing: push.routingKey,
    },
  };
  return registration;
}

interface ExpectationCall {
  workId: string;
  count: number;
  queuedBefore: number;
}

function senderOptions(
  push: PushQueue,
  overrides: Partial<AmqpSenderOptions> = {},
): { options: AmqpSenderOptions; expectations: ExpectationCall[]; log: CapturedLog } {
  const expectations: ExpectationCall[] = [];
  const log = captureLog();
  const options: AmqpSenderOptions = {
    registration: registrationFor(push),
    mq: DEFAULT_MQ,
    logger: log.logger,
    retryDelayMs: 10,
    connectTimeoutMs: 5000,
    addExpectations: async (workId, count) => {
      expectations.push({ workId, count, queuedBefore: (await countMessages(push.queue)) ?? -1 });
    },
    ...overrides,
  };
  return { options, expectations, log };
}

// Counts the messages in a queue, or returns undefined when it does not
// exist. A failed check closes its channel, so each check has its own.
async function countMessages(queue: string): Promise<number | undefined> {
  const channel = await admin.createChannel();
  channel.on("error", () => {});
  try {
    return (await channel.checkQueue(queue)).messageCount;
  } catch {
    return undefined;
  } finally {
    await channel.close().catch(() => {});
  }
}

async function drainQueue(queue: string): Promise<GetMessage[]> {
  const messages: GetMessage[] = [];
  for (;;) {
    const message = await adminChannel.get(queue, { noAck: true });
    if (message === false) {
      return messages;
    }
    messages.push(message);
  }
}

function smallVersion(): StixObject[] {
  return [
    { type: "identity", id: "identity--c78cb6e5-0c4b-4611-8297-d1b8b55e40b5", name: "MITRE" },
    { type: "malware", id: "malware--11111111-1111-4111-8111-111111111111", name: "Triton" },
    {
      type: "relationship",
      id: "relationship--22222222-2222-4222-8222-222222222222",
      relationship_type: "uses",
      source_ref: "malware--11111111-1111-4111-8111-111111111111",
      target_ref: "x-mitre-asset--33333333-3333-4333-8333-333333333333",
    },
  ];
}

function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (error: Error) => error,
  );
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

// A TCP (or TLS-terminating) proxy to the broker, to cut or slow the
// connection under the sender.
interface Proxy {
  port: number;
  clientBytes: number;
  /** Destroys every proxied connection once this many bytes came from clients. */
  cutAfterBytes?: number;
  /** Pauses reading from the client for this long after each chunk, in milliseconds. */
  pauseMs?: number;
  /** Drops what clients send instead of forwarding it, as a hung broker would. */
  stalled?: boolean;
  connections: number;
  /** Destroys every proxied connection now. */
  cutAll: () => void;
  close: () => Promise<void>;
}

async function startProxy(useTls = false): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  const proxy: Proxy = {
    port: 0,
    clientBytes: 0,
    connections: 0,
    cutAll: () => {
      for (const socket of sockets) {
        socket.destroy();
      }
    },
    close: async () => {},
  };

  const onClient = (client: net.Socket) => {
    proxy.connections++;
    const upstream = net.connect({ host: BROKER_HOST, port: BROKER_PORT });
    sockets.add(client);
    sockets.add(upstream);
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", cut);
    upstream.on("error", cut);
    client.on("close", cut);
    upstream.on("close", cut);
    upstream.on("data", (chunk) => client.write(chunk));
    client.on("data", (chunk) => {
      if (proxy.stalled) {
        return;
      }
      proxy.clientBytes += chunk.length;
      upstream.write(chunk);
      if (proxy.cutAfterBytes !== undefined && proxy.clientBytes >= proxy.cutAfterBytes) {
        proxy.cutAfterBytes = undefined;
        proxy.cutAll();
        return;
      }
      if (proxy.pauseMs !== undefined) {
        client.pause();
        setTimeout(() => client.resume(), proxy.pauseMs);
      }
    });
  };

  const server = useTls
    ? tls.createServer({ key: TEST_TLS.key, cert: TEST_TLS.cert }, onClient)
    : net.createServer(onClient);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.port = (server.address() as net.AddressInfo).port;
  proxy.close = async () => {
    proxy.cutAll();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return proxy;
}

const brokerAvailable = await probeBroker();

if (!brokerAvailable && process.env.CI) {
  test("RabbitMQ answers on 127.0.0.1:5672", () => {
    throw new Error(
      `No RabbitMQ broker answers on ${BROKER_HOST}:${BROKER_PORT} and CI is set: run .ci/rabbitmq.sh first`,
    );
  });
}

const describeWithBroker = brokerAvailable ? describe : describe.skip;

describeWithBroker("createAmqpSender", () => {
  beforeAll(async () => {
    admin = await connect(`amqp://guest:guest@${BROKER_HOST}:${BROKER_PORT}`);
    adminChannel = await admin.createChannel();
    adminChannel.on("error", (error: Error) => {
      throw new Error(`The test's admin channel closed: ${error.message}`);
    });
  });

  afterEach(async () => {
    while (createdQueues.length > 0) {
      await adminChannel.deleteQueue(createdQueues.pop()!);
    }
  });

  afterAll(async () => {
    await admin?.close();
  });

  test("publishes a fixture version", async () => {
    const push = await declarePushQueue();
    const { options, expectations, log } = senderOptions(push);
    const objects = loadObjects("17.0");
    const expected = splitBundle({ objects: loadObjects("17.0") });
    const sender = createAmqpSender(options);

    const result = await sender.send(objects, { workId: "work-1", versionId: "20250105-1", bundleId: "bundle--1" });
    await sender.close();
    const messages = await drainQueue(push.queue);

    expect(result.bundles).toBe(1133);
    expect(result.objects).toBe(1133);
    expect(result.dropped).toBe(552);
    expect(expectations).toEqual([{ workId: "work-1", count: 1133, queuedBefore: 0 }]);
    expect(messages.length).toBe(1133);

    let bytes = 0;
    const bundleIds = new Set<string>();
    messages.forEach((message, index) => {
      const envelope = JSON.parse(message.content.toString("utf8"));
      const json = Buffer.from(envelope.content, "base64").toString("utf8");
      const bundle = JSON.parse(json);
      const reference = expected.bundles[index]!.bundle;
      bytes += Buffer.byteLength(json, "utf8");
      bundleIds.add(bundle.id);

      expect(Object.keys(envelope)).toEqual([
        "bundle_type",
        "applicant_id",
        "action_sequence",
        "entities_types",
        "content",
        "update",
        "draft_id",
        "work_id",
      ]);
      expect(envelope.bundle_type).toBe("QUEUE_BUNDLE");
      expect(envelope.applicant_id).toBe(CONNECTOR_USER_ID);
      expect(envelope.action_sequence).toBe(index + 1);
      expect(envelope.entities_types).toEqual([]);
      expect(envelope.update).toBe(false);
      expect(envelope.draft_id).toBeNull();
      expect(envelope.work_id).toBe("work-1");
      expect(bundle.type).toBe("bundle");
      expect(bundle.spec_version).toBe("2.1");
      expect(bundle.x_opencti_seq).toBe(reference.x_opencti_seq);
      expect(bundle.objects).toEqual(reference.objects);
      expect(message.properties.deliveryMode).toBe(2);
      expect(message.properties.contentEncoding).toBe("utf-8");
      expect(message.fields.exchange).toBe(WORKER_EXCHANGE);
      expect(message.fields.routingKey).toBe(push.routingKey);
    });

    expect(bundleIds.size).toBe(1);
    expect(result.bytes).toBe(bytes);
    expect(log.lines.some((line) => line.message === "Bundles sent to the push queue")).toBe(true);
  });

  test("adds a missing author once", async () => {
    const push = await declarePushQueue();
    const author = { type: "identity", id: "identity--aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", name: "Citalid" };
    const { options } = senderOptions(push, { author });
    const sender = createAmqpSender(options);

    const first = await sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" });
    const second = await sender.send([author, ...smallVersion()], { workId: "work-2", versionId: "v2", bundleId: "bundle--1" });
    await sender.close();
    const messages = await drainQueue(push.queue);
    const ids = messages.map((message) => {
      const envelope = JSON.parse(message.content.toString("utf8"));
      return JSON.parse(Buffer.from(envelope.content, "base64").toString("utf8")).objects[0].id;
    });

    expect(first.bundles).toBe(3);
    expect(first.dropped).toBe(1);
    expect(second.bundles).toBe(3);
    expect(ids.filter((id) => id === author.id).length).toBe(2);
  });

  test("logs progress per confirmed batch", async () => {
    const push = await declarePushQueue();
    const { options, log } = senderOptions(push, { batchSize: 400 });
    const sender = createAmqpSender(options);
    // An interval of 0 logs a line at each confirmed batch.
    configureProgress({ intervalMs: 0 });

    try {
      await sender.send(loadObjects("17.0"), { workId: "work-1", versionId: "20250105-1", bundleId: "bundle--1" });
    } finally {
      configureProgress({ intervalMs: 10_000 });
      await sender.close();
    }
    await drainQueue(push.queue);

    const progressLines = log.lines.filter((line) => line.message === "Pushing Citalid version");
    expect(progressLines.map((line) => line.attributes?.objects)).toEqual([400, 800, 1133]);
    expect(progressLines.every((line) => line.attributes?.total_objects === 1133)).toBe(true);
    expect(progressLines.every((line) => line.attributes?.work_id === "work-1" && line.attributes?.version_id === "20250105-1")).toBe(true);
  });

  test("MQ overrides win over the registration", async () => {
    const push = await declarePushQueue();
    const closedPort = await freePort();
    const { options, expectations, log } = senderOptions(push, {
      mq: {
        host: BROKER_HOST,
        port: BROKER_PORT,
        vhost: "/",
        useSsl: false,
        user: "guest",
        pass: "guest",
        rejectUnauthorized: true,
      },
    });
    options.registration = registrationFor(push, {
      host: "127.0.0.1",
      port: closedPort,
      vhost: "no-such-vhost",
      use_ssl: true,
      user: "nobody",
      pass: "registered-password",
    });
    const sender = createAmqpSender(options);

    const result = await sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" });
    await sender.close();

    const connecting = log.lines.find((line) => line.message === "Connecting to RabbitMQ");

    expect(result.bundles).toBe(2);
    expect(expectations.length).toBe(1);
    // The logger masks the user name too, because it equals the password.
    expect(connecting?.attributes?.url).toBe("amqp://127.0.0.1:5672");
    expect(connecting?.attributes?.vhost).toBe("/");
    expect((await drainQueue(push.queue)).length).toBe(2);
  });

  test("wrong password fails clearly", async () => {
    const push = await declarePushQueue();
    const password = "wrong-password-4711";
    const { options, expectations, log } = senderOptions(push);
    options.registration = registrationFor(push, { pass: password });
    const sender = createAmqpSender(options);

    const error = await rejection(sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" }));
    await sender.close();

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain("127.0.0.1:5672");
    expect(error.message).toContain("ACCESS");
    expect(error.message).toContain('user "guest"');
    for (const variable of ["MQ_HOST", "MQ_PORT", "MQ_VHOST", "MQ_USE_SSL", "MQ_USER", "MQ_PASS"]) {
      expect(error.message).toContain(variable);
    }
    expect(error.message).not.toContain(password);
    expect(log.text()).not.toContain(password);
    expect(expectations).toEqual([]);
  });

  test("closed port fails clearly", async () => {
    const push = await declarePushQueue();
    const port = await freePort();
    const { options, expectations } = senderOptions(push);
    options.registration = registrationFor(push, { port });
    const sender = createAmqpSender(options);

    const error = await rejection(sender.connect());

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain(`amqp://127.0.0.1:${port}`);
    expect(error.message).toContain("ECONNREFUSED");
    expect(error.message).toContain("MQ_PORT");
    expect(expectations).toEqual([]);
  });

  test("unknown vhost fails clearly", async () => {
    const push = await declarePushQueue();
    const { options } = senderOptions(push, { mq: { vhost: "no-such-vhost", rejectUnauthorized: true } });
    const sender = createAmqpSender(options);

    const error = await rejection(sender.connect());

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain('vhost "no-such-vhost"');
    expect(error.message).toContain("MQ_VHOST");
  });

  test("deleted queue fails after retries", async () => {
    const push = await declarePushQueue();
    const closed: { workId: string; message: string }[] = [];
    const { options, expectations, log } = senderOptions(push, {
      maxRetries: 2,
      closeWorkInError: async (workId, message) => {
        closed.push({ workId, message });
      },
    });
    const sender = createAmqpSender(options);
    await sender.connect();
    await adminChannel.deleteQueue(push.queue);

    const error = await rejection(sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" }));
    const retries = log.lines.filter((line) => line.message === "RabbitMQ did not accept messages, retrying");

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain("unroutable");
    expect(error.message).toContain("after 2 retries");
    expect(error.message).toContain(push.routingKey);
    expect(retries.length).toBe(2);
    expect(retries.every((line) => line.level === "WARNING")).toBe(true);
    expect(expectations.length).toBe(1);
    expect(closed.length).toBe(1);
    expect(closed[0]!.workId).toBe("work-1");
    expect(closed[0]!.message).toBe(error.message);

    // Once the platform re-creates the queue, the next send goes through.
    await adminChannel.assertQueue(push.queue, { durable: true });
    await adminChannel.bindQueue(push.queue, WORKER_EXCHANGE, push.routingKey);
    const result = await sender.send(smallVersion(), { workId: "work-2", versionId: "v1", bundleId: "bundle--1" });
    await sender.close();

    expect(result.bundles).toBe(2);
    expect((await drainQueue(push.queue)).length).toBe(2);
  });

  test("nacked messages fail after retries", async () => {
    const push = await declarePushQueue({ "x-max-length": 0, "x-overflow": "reject-publish" });
    const { options, log } = senderOptions(push, { maxRetries: 1 });
    const sender = createAmqpSender(options);

    const error = await rejection(sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" }));
    await sender.close();

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain("nacked");
    expect(log.lines.filter((line) => line.message === "RabbitMQ did not accept messages, retrying").length).toBe(1);
  });

  test("missing exchange fails clearly", async () => {
    const push = await declarePushQueue();
    const { options } = senderOptions(push);
    options.registration.config!.push_exchange = `no-such-exchange-${push.connectorId}`;
    const sender = createAmqpSender(options);

    const error = await rejection(sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" }));
    await sender.close();

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain("NOT_FOUND");
    expect(error.message).toContain(`no-such-exchange-${push.connectorId}`);
  });

  test("dropped connection fails, then reconnects", async () => {
    const push = await declarePushQueue();
    const proxy = await startProxy();
    const { options, expectations } = senderOptions(push, { batchSize: 20 });
    options.registration = registrationFor(push, { port: proxy.port });
    const sender = createAmqpSender(options);
    await sender.connect();
    proxy.cutAfterBytes = proxy.clientBytes + 200_000;

    const error = await rejection(sender.send(loadObjects("17.1"), { workId: "work-1", versionId: "20250105-2", bundleId: "bundle--1" }));
    const firstConnections = proxy.connections;
    const result = await sender.send(smallVersion(), { workId: "work-2", versionId: "v2", bundleId: "bundle--1" });
    await sender.close();
    await proxy.close();

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain("closed while version 20250105-2 was being published");
    expect(error.message).toContain(`127.0.0.1:${proxy.port}`);
    expect(expectations[0]!.count).toBe(1099);
    expect(firstConnections).toBe(1);
    expect(proxy.connections).toBe(2);
    expect(result.bundles).toBe(2);
  });

  test("idle connection drop reconnects", async () => {
    const push = await declarePushQueue();
    const proxy = await startProxy();
    const { options, log } = senderOptions(push);
    options.registration = registrationFor(push, { port: proxy.port });
    const sender = createAmqpSender(options);
    await sender.connect();

    proxy.cutAll();
    await Bun.sleep(100);
    const result = await sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" });
    await sender.close();
    await proxy.close();

    expect(result.bundles).toBe(2);
    expect(proxy.connections).toBe(2);
    expect(log.lines.some((line) => line.message === "RabbitMQ connection closed")).toBe(true);
  });

  test("stalled broker times out", async () => {
    const push = await declarePushQueue();
    const proxy = await startProxy();
    const closed: string[] = [];
    const { options } = senderOptions(push, {
      batchTimeoutMs: 300,
      closeWorkInError: async (workId) => {
        closed.push(workId);
      },
    });
    options.registration = registrationFor(push, { port: proxy.port });
    const sender = createAmqpSender(options);
    await sender.connect();

    proxy.stalled = true;
    const error = await rejection(sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" }));
    await sender.close();
    await proxy.close();

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain("did not confirm the messages of version v1 within 300 ms");
    expect(closed).toEqual(["work-1"]);
  });

  test("full channel buffer waits for drain", async () => {
    const push = await declarePushQueue();
    const proxy = await startProxy();
    proxy.pauseMs = 2;
    // amqplib's channel buffer accepts about 2,000 frames before publish
    // returns false, so 3,000 one-frame messages go out as one batch.
    const { options, log } = senderOptions(push, { batchSize: 5000 });
    options.registration = registrationFor(push, { port: proxy.port });
    const sender = createAmqpSender(options);
    const objects = Array.from({ length: 3000 }, () => ({ type: "identity", id: `identity--${randomUUID()}` }));

    const result = await sender.send(objects, { workId: "work-1", versionId: "v1", bundleId: "bundle--1" });
    await sender.close();
    await proxy.close();
    const messages = await drainQueue(push.queue);
    const sequences = messages.map((message) => JSON.parse(message.content.toString("utf8")).action_sequence);
    const drainWaits = log.lines.filter((line) => line.message.startsWith("Waiting for the RabbitMQ channel buffer"));

    expect(result.bundles).toBe(3000);
    expect(drainWaits.length).toBeGreaterThan(0);
    expect(messages.length).toBe(3000);
    expect(sequences).toEqual(Array.from({ length: 3000 }, (_, index) => index + 1));
  });

  test("TLS with a trusted CA file", async () => {
    const push = await declarePushQueue();
    const proxy = await startProxy(true);
    const { options } = senderOptions(push, { caFile: CERTIFICATE_FILE });
    options.registration = registrationFor(push, { port: proxy.port, use_ssl: true });
    const sender = createAmqpSender(options);

    const result = await sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" });
    await sender.close();
    await proxy.close();

    expect(result.bundles).toBe(2);
    expect((await drainQueue(push.queue)).length).toBe(2);
  });

  test("TLS rejects an unknown certificate", async () => {
    const push = await declarePushQueue();
    const proxy = await startProxy(true);
    const { options } = senderOptions(push);
    options.registration = registrationFor(push, { port: proxy.port, use_ssl: true });
    const sender = createAmqpSender(options);

    const error = await rejection(sender.connect());
    await proxy.close();

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain(`amqps://127.0.0.1:${proxy.port}`);
    expect(error.message).toContain("CONNECTOR_CA_FILE");
  });

  test("TLS without verification warns", async () => {
    const push = await declarePushQueue();
    const proxy = await startProxy(true);
    const { options, log } = senderOptions(push, { mq: { rejectUnauthorized: false } });
    options.registration = registrationFor(push, { port: proxy.port, use_ssl: true });
    const sender = createAmqpSender(options);

    const result = await sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" });
    await sender.close();
    await proxy.close();
    const warning = log.lines.find((line) => line.level === "WARNING" && line.message.includes("not verified"));

    expect(result.bundles).toBe(2);
    expect(warning?.message).toContain("MQ_USE_SSL_REJECT_UNAUTHORIZED");
  });

  test("failed expectations publish nothing", async () => {
    const push = await declarePushQueue();
    const { options } = senderOptions(push, {
      addExpectations: async () => {
        throw new Error("workEdit failed");
      },
    });
    const sender = createAmqpSender(options);

    const error = await rejection(sender.send(smallVersion(), { workId: "work-1", versionId: "v1", bundleId: "bundle--1" }));
    await sender.close();

    expect(error).toBeInstanceOf(AmqpError);
    expect(error.message).toContain("work work-1");
    expect(error.message).toContain("workEdit failed");
    expect((await drainQueue(push.queue)).length).toBe(0);
  });

  test("close is idempotent", async () => {
    const push = await declarePushQueue();
    const { options } = senderOptions(push);
    const sender = createAmqpSender(options);
    await sender.connect();

    await sender.close();
    await sender.close();

    expect(true).toBe(true);
  });
});

describe("createAmqpSender without a broker", () => {
  test("null queue configuration rejected", () => {
    const options = {
      registration: { connectorUserId: null, config: null },
      mq: DEFAULT_MQ,
      logger: captureLog().logger,
      addExpectations: async () => {},
    } satisfies AmqpSenderOptions;

    expect(() => createAmqpSender(options)).toThrow("CONNECTOR_QUEUE_PROTOCOL=api");
  });

  test("version without sendable objects", async () => {
    const calls: number[] = [];
    const log = captureLog();
    const sender = createAmqpSender({
      registration: {
        connectorUserId: null,
        config: {
          connection: { host: "127.0.0.1", vhost: "/", use_ssl: false, port: 1, user: "guest", pass: "guest" },
          push_exchange: WORKER_EXCHANGE,
          push_routing: "push_routing_unused",
        },
      },
      mq: DEFAULT_MQ,
      logger: log.logger,
      addExpectations: async (_workId, count) => {
        calls.push(count);
      },
    });

    const result = await sender.send([{ type: "x-mitre-tactic", id: "x-mitre-tactic--1" }], {
      workId: "work-1",
      versionId: "v1",
      bundleId: "bundle--1",
    });
    await sender.close();

    expect(result).toEqual({ bundles: 0, objects: 0, bytes: 0, dropped: 1 });
    expect(calls).toEqual([]);
  });
});
