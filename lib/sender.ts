import { chunkVersion } from "./bundle.ts";
import type { Logger } from "./log.ts";
import type { OpenCTIClient } from "./opencti.ts";
import { createProgress } from "./progress.ts";
import type { StixObject } from "./stix.ts";

/** What one version's send produced, for logs, work messages and metrics. */
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
  /** Releases connections. Safe to call more than once. */
  close(): Promise<void>;
}

/** Options of {@linkcode createApiSender}. */
export interface ApiSenderOptions {
  opencti: OpenCTIClient;
  connectorId: string;
  /** Largest bundle JSON pushed at once, in bytes (`CONNECTOR_PUSH_MAX_MB` × 1,000,000). */
  maxBundleBytes: number;
  logger: Logger;
  /** Called after each accepted bundle, with its size in bytes. */
  onBundle?: (bytes: number) => void;
}

/**
 * Creates a sender that pushes each version through `stixBundlePush`, cut
 * into bundles under the size limit in dependency order. Pushing a bundle
 * again is safe: the platform merges objects by STIX id.
 */
export function createApiSender(options: ApiSenderOptions): BundleSender {
  return {
    async send(objects, context) {
      const chunks = chunkVersion(context.versionId, context.bundleId, objects, options.maxBundleBytes);
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
    async close() {},
  };
}
