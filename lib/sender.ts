import { chunkVersion } from "./bundle.ts";
import type { Logger } from "./log.ts";
import { type OpenCTIClient, STIX_BUNDLE_PUSH_MUTATION } from "./opencti.ts";
import { createProgress } from "./progress.ts";
import { pushSpooledVersion } from "./push.ts";
import type { SpooledVersion } from "./spooled.ts";
import type { StixObject } from "./stix.ts";

/** Figures of one version's send, for logs, work messages and metrics. */
export interface SendResult {
  /** Bundles pushed (api) or messages published (amqp). */
  bundles: number;
  /** STIX objects sent, the author identity included once per bundle. */
  objects: number;
  /** Bytes of bundle JSON sent. */
  bytes: number;
  /** Objects the splitter dropped as incompatible (amqp only). */
  dropped: number;
}

/** The work and version a send belongs to. */
export interface SendContext {
  workId: string;
  versionId: string;
  /** Id of the bundle the version was served as. */
  bundleId: string;
}

/**
 * Sends the STIX objects of one version to the platform, through
 * `stixBundlePush` or through RabbitMQ. `send` resolves once every bundle is
 * accepted (api) or confirmed by the broker (amqp), and rejects otherwise.
 */
export interface BundleSender {
  send(objects: StixObject[], context: SendContext): Promise<SendResult>;
  /**
   * Sends a version kept in its spool file as `send` sends its objects,
   * reading each object back from the file when its bundle is built.
   */
  sendSpooled(version: SpooledVersion, context: SendContext): Promise<SendResult>;
  /** Releases connections. Safe to call more than once. */
  close(): Promise<void>;
}

/** Options of {@linkcode createApiSender}. */
export interface ApiSenderOptions {
  opencti: OpenCTIClient;
  connectorId: string;
  /**
   * Largest `stixBundlePush` request body, in bytes (`CONNECTOR_PUSH_MAX_MB`
   * × 1,000,000). The bundle travels as a JSON string inside the GraphQL
   * request, so its escaped size plus the request envelope must fit.
   */
  maxBundleBytes: number;
  logger: Logger;
  /** Called after each accepted bundle, with its size in bytes. */
  onBundle?: (bytes: number) => void;
}

/**
 * Creates a sender that pushes each version through `stixBundlePush`, cut
 * into bundles in dependency order so that each request body stays under
 * the size limit. Pushing a bundle again is safe: the platform merges
 * objects by STIX id.
 */
export function createApiSender(options: ApiSenderOptions): BundleSender {
  return {
    async send(objects, context) {
      const chunks = chunkUnderRequestLimit(context, objects, options.maxBundleBytes);
      const progress = createProgress({
        message: "Pushing Citalid version",
        title: `Pushing ${context.versionId}`,
        unit: "objects",
        total: chunks.reduce((total, chunk) => total + chunk.objects, 0),
        logger: options.logger,
        attributes: { work_id: context.workId, version_id: context.versionId },
      });

      let bytes = 0;
      let sentObjects = 0;
      try {
        for (const [index, chunk] of chunks.entries()) {
          const size = Buffer.byteLength(chunk.json);
          options.logger.debug("Pushing a bundle through the API", {
            work_id: context.workId,
            version_id: context.versionId,
            bundle: index + 1,
            bundles: chunks.length,
            objects: chunk.objects,
            bytes: size,
          });
          await options.opencti.stixBundlePush(options.connectorId, chunk.json, context.workId);
          bytes += size;
          sentObjects += chunk.objects;
          options.onBundle?.(size);
          progress.advance(chunk.objects);
        }
      } finally {
        progress.done();
      }
      return { bundles: chunks.length, objects: sentObjects, bytes, dropped: 0 };
    },
    async sendSpooled(version, context) {
      // The bundles are planned as they are sent, so the total is the
      // version's objects, each counted once.
      const progress = createProgress({
        message: "Pushing Citalid version",
        title: `Pushing ${context.versionId}`,
        unit: "objects",
        total: version.items.length,
        logger: options.logger,
        attributes: { work_id: context.workId, version_id: context.versionId },
      });
      try {
        const sent = await pushSpooledVersion(version, {
          send: (body) => options.opencti.stixBundlePushBody(body),
          request: { query: STIX_BUNDLE_PUSH_MUTATION, connectorId: options.connectorId, workId: context.workId },
          maxRequestBytes: options.maxBundleBytes,
          logger: options.logger,
          onBundle: (plan) => {
            options.onBundle?.(plan.jsonBytes);
            progress.advance(plan.versionObjects);
          },
        });
        return { bundles: sent.bundles, objects: sent.objects, bytes: sent.bytes, dropped: 0 };
      } finally {
        progress.done();
      }
    },
    async close() {},
  };
}

// Bytes of a stixBundlePush request besides the escaped bundle: the query
// text (about 220 bytes), the connector and work ids, and the JSON keys.
const PUSH_ENVELOPE_BYTES = 1024;

/** Returns the size of the request body that carries `bundleJson` as a GraphQL string variable. */
function requestBytes(bundleJson: string): number {
  return Buffer.byteLength(JSON.stringify(bundleJson)) + PUSH_ENVELOPE_BYTES;
}

/**
 * Cuts a version into bundles whose push requests fit in `maxRequestBytes`.
 * JSON escaping makes a request larger than its bundle by a share that
 * depends on the data (every quote gains a backslash), so the bundle limit
 * is lowered by the measured excess and the version cut again, at most a
 * few times. Raises BundleError when one object cannot fit.
 */
function chunkUnderRequestLimit(context: SendContext, objects: StixObject[], maxRequestBytes: number) {
  let bundleLimit = maxRequestBytes - PUSH_ENVELOPE_BYTES;
  let chunks = chunkVersion(context.versionId, context.bundleId, objects, bundleLimit);
  for (let round = 0; round < 4; round++) {
    const largest = Math.max(...chunks.map((chunk) => requestBytes(chunk.json)));
    if (largest <= maxRequestBytes) {
      break;
    }
    bundleLimit = Math.floor((bundleLimit * maxRequestBytes) / largest) - 1;
    chunks = chunkVersion(context.versionId, context.bundleId, objects, bundleLimit);
  }
  return chunks;
}
