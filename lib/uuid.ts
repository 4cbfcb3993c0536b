import { createHash } from "node:crypto";

/** Namespace OpenCTI and pycti use for the deterministic ids of STIX objects. */
export const OPENCTI_NAMESPACE = "00abedb4-aa42-466c-9c01-fed23315a9b7";

/** Returns the RFC 4122 version 5 UUID of `name` in `namespace` (SHA-1 based). */
export function uuid5(name: string, namespace: string): string {
  const namespaceBytes = Buffer.from(namespace.replace(/-/g, ""), "hex");
  const hash = createHash("sha1").update(namespaceBytes).update(name, "utf8").digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
