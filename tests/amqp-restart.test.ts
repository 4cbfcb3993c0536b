/**
 * End-to-end on the real broker: the broker goes away in the middle of a
 * run, as in a restart. A TCP relay between the connector and the broker
 * cuts every connection and refuses new ones for a while, which is what a
 * client sees of a broker restart, without stopping the shared broker.
 */
import { afterEach, beforeEach, expect, setDefaultTimeout, test } from "bun:test";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { FIXTURE_VERSIONS, fixtureCitalidVersions } from "./fixtures/versions.ts";
import { type PushQueueConsumer, consumePushQueue } from "./helpers/broker.ts";
import { TEST_SECRETS, connectorEnv, runConnectorOnce, startConnector, tempDir } from "./helpers/connector.ts";

setDefaultTimeout(120_000);

// Split bundles per fixture version, the author included.
const BUNDLES_PER_VERSION = [1134, 1100, 862, 862];

interface Relay {
  port: number;
  /** Cuts every connection and refuses new ones until `restore`. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

async function startRelay(): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: "127.0.0.1", port: 5672 });
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      down = true;
      for (const socket of sockets) {
        socket.destroy();
      }
    },
    restore() {
      down = false;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

let citalid: FakeCitalid;
let opencti: FakeOpenCTI;
let consumer: PushQueueConsumer;
let relay: Relay;
let connectorId: string;
let stateDir: string;

beforeEach(async () => {
  connectorId = randomUUID();
  citalid = await startFakeCitalid({ versions: fixtureCitalidVersions(), password: TEST_SECRETS.citalidPassword });
  opencti = await startFakeOpenCTI({ token: TEST_SECRETS.openctiToken });
  consumer = await consumePushQueue(connectorId);
  relay = await startRelay();
  stateDir = tempDir();
});

afterEach(async () => {
  relay.cut();
  await relay.close();
  await consumer.settle();
  await consumer.close();
  await citalid.stop();
  await opencti.stop();
});

function env() {
  return connectorEnv(citalid, opencti, stateDir, {
    CONNECTOR_ID: connectorId,
    CONNECTOR_QUEUE_PROTOCOL: "amqp",
    MQ_HOST: "127.0.0.1",
    MQ_PORT: String(relay.port),
  });
}

function platformVersion(): string | null {
  const stored = opencti.connectors.get(connectorId)?.state;
  return stored ? (JSON.parse(stored).last_loaded_bundle_id ?? null) : null;
}

/** Returns, per fixture version, whether one complete run of action_sequence 1..n was consumed. */
function completeVersions(): boolean[] {
  const runs: number[] = [];
  let expected = 1;
  for (const message of consumer.messages) {
    const sequence = message.envelope.action_sequence;
    if (sequence === 1) {
      runs.push(0);
      expected = 1;
    }
    if (sequence === expected && runs.length > 0) {
      runs[runs.length - 1] = sequence;
      expected++;
    }
  }
  return BUNDLES_PER_VERSION.map((count) => runs.includes(count));
}

test("broker restart mid-run skips no version", async () => {
  const connector = startConnector(env(), ["--once"]);
  await connector.waitForLog((/Version sent and stored/));

  relay.cut();
  await Bun.sleep(300);
  relay.restore();
  const firstCode = await connector.exited;
  const afterFirst = platformVersion();
  await consumer.settle();

  const second = await runConnectorOnce(env());
  await consumer.settle();

  expect([0, 1]).toContain(firstCode);
  expect(afterFirst).not.toBeNull();
  expect(second.code).toBe(0);
  expect(platformVersion()).toBe(FIXTURE_VERSIONS.at(-1)!.id);
  expect(completeVersions()).toEqual([true, true, true, true]);
  expect(opencti.openWorks().filter((work) => work.toProcessedCalls === 0)).toEqual([]);
});
