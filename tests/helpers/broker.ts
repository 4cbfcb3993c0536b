/**
 * Plays the platform's and the worker's part on the real RabbitMQ broker
 * (127.0.0.1:5672, guest/guest): declares a connector's push queue as the
 * platform does at registration, consumes what the connector publishes, and
 * reports each message to the fake platform as processed, as the worker does.
 */
import { type Channel, type ChannelModel, connect } from "amqplib";

/** Address of the test broker. */
export const BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/";

/** Name of the platform's worker exchange. */
export const WORKER_EXCHANGE = "amqp.worker.exchange";

/** One message consumed from a push queue, decoded. */
export interface ConsumedMessage {
  envelope: {
    bundle_type: string;
    applicant_id: string | null;
    action_sequence: number;
    entities_types: string[];
    content: string;
    update: boolean;
    draft_id: string | null;
    work_id?: string;
  };
  bundle: { type: string; id: string; spec_version: string; x_opencti_seq: number; objects: { id: string; type: string; [key: string]: unknown }[] };
  properties: { deliveryMode?: number; contentEncoding?: string };
}

/** A push queue with a running consumer. */
export interface PushQueueConsumer {
  queue: string;
  messages: ConsumedMessage[];
  /** Waits until no message arrived for `quietMs`. */
  settle(quietMs?: number): Promise<void>;
  /** Deletes the queue and closes the connection. */
  close(): Promise<void>;
}

/**
 * Declares `push_<id>` on the worker exchange the way the platform does and
 * consumes it. With `reportTo`, each message is reported to the fake
 * platform's `workEdit.reportExpectation`, as the worker does after import.
 */
export async function consumePushQueue(connectorId: string, reportTo?: { graphqlUrl: string; token: string }): Promise<PushQueueConsumer> {
  const connection: ChannelModel = await connect(BROKER_URL);
  const channel: Channel = await connection.createChannel();
  const queue = `push_${connectorId}`;

  await channel.assertExchange(WORKER_EXCHANGE, "direct", { durable: true });
  await channel.assertQueue(queue, {
    durable: true,
    exclusive: false,
    autoDelete: false,
    arguments: {
      name: "Citalid",
      config: { id: connectorId, type: "EXTERNAL_IMPORT", scope: "citalid" },
      "x-queue-type": "classic",
    },
  });
  await channel.bindQueue(queue, WORKER_EXCHANGE, `push_routing_${connectorId}`);

  const messages: ConsumedMessage[] = [];
  let lastArrival = Date.now();
  let reports = Promise.resolve();
  await channel.consume(queue, (message) => {
    if (!message) {
      return;
    }
    const envelope = JSON.parse(message.content.toString("utf8")) as ConsumedMessage["envelope"];
    const bundle = JSON.parse(Buffer.from(envelope.content, "base64").toString("utf8")) as ConsumedMessage["bundle"];
    messages.push({ envelope, bundle, properties: message.properties });
    lastArrival = Date.now();
    channel.ack(message);
    if (reportTo && envelope.work_id) {
      const workId = envelope.work_id;
      reports = reports.then(() => reportExpectation(reportTo, workId));
    }
  });

  return {
    queue,
    messages,
    async settle(quietMs = 300) {
      while (Date.now() - lastArrival < quietMs) {
        await Bun.sleep(50);
      }
      await reports;
    },
    async close() {
      await channel.deleteQueue(queue).catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}

async function reportExpectation(target: { graphqlUrl: string; token: string }, workId: string): Promise<void> {
  // A report that arrives after the fake platform stopped is lost, as it would be for a real worker.
  await fetch(target.graphqlUrl, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${target.token}` },
    body: JSON.stringify({
      query: "mutation WorkerReport($id: ID!) { workEdit(id: $id) { reportExpectation } }",
      variables: { id: workId },
    }),
  }).catch(() => {});
}
