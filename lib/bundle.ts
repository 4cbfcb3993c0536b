import { BundleError, PushLimitError } from "./errors.ts";
import type { StixObject } from "./stix.ts";
import { OPENCTI_NAMESPACE, uuid5 } from "./splitter.ts";

const AUTHOR_DESCRIPTION =
  "Citalid offers a cyber risk quantification SaaS platform to manage security & cyber insurance investments. " +
  "Citalid is built upon a strong expertise in strategic Cyber Threat Intelligence (CTI) which enriches risk " +
  "assessment with dynamic state of the threats.";

/**
 * STIX id of the Citalid author. OpenCTI derives an Organization's id from
 * the canonical JSON of its lower-cased name and identity class, so this is
 * the same id the platform gives an Organization named "Citalid".
 */
export const AUTHOR_ID =
  "identity--" + uuid5(OPENCTI_NAMESPACE, '{"identity_class":"organization","name":"citalid"}');

/** Returns the Citalid author identity, identical on every run so that the platform merges it. */
export function authorIdentity(): StixObject {
  return {
    type: "identity",
    spec_version: "2.1",
    id: AUTHOR_ID,
    created: "2020-01-01T00:00:00.000Z",
    modified: "2020-01-01T00:00:00.000Z",
    name: "Citalid",
    identity_class: "organization",
    description: AUTHOR_DESCRIPTION,
  };
}

// STIX 2.1 cyber-observable types: they are not SDOs, so they get no author.
const OBSERVABLE_TYPES = new Set([
  "artifact", "autonomous-system", "directory", "domain-name", "email-addr", "email-message",
  "file", "ipv4-addr", "ipv6-addr", "mac-addr", "mutex", "network-traffic", "process",
  "software", "url", "user-account", "windows-registry-key", "x509-certificate",
]);

// Objects that describe the data rather than being part of it.
const NO_AUTHOR_TYPES = new Set(["identity", "marking-definition", "language-content", "extension-definition"]);

/** Returns true when an object of this type gets `created_by_ref`: SDOs (custom ones too) and SROs. */
export function takesAuthor(type: string): boolean {
  return !OBSERVABLE_TYPES.has(type) && !NO_AUTHOR_TYPES.has(type);
}

/**
 * Checks a downloaded version and returns its objects with the author added:
 * the author identity first, then every object as served, with
 * `created_by_ref` set on SDOs and SROs that have none. Existing
 * `created_by_ref` values and containers' `object_refs` are left alone.
 * Raises BundleError naming the version and the problem.
 */
export function prepareVersion(json: unknown, versionId: string): { bundleId: string; objects: StixObject[] } {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new BundleError(versionId, `expected a JSON object, got ${Array.isArray(json) ? "an array" : json === null ? "null" : typeof json}`);
  }

  const bundle = json as Record<string, unknown>;
  if (bundle.type !== "bundle") {
    throw new BundleError(versionId, `"type" is ${JSON.stringify(bundle.type) ?? "missing"}, expected "bundle"`);
  }
  if (!Array.isArray(bundle.objects)) {
    throw new BundleError(versionId, `"objects" is ${bundle.objects === undefined ? "missing" : "not an array"}`);
  }

  const objects: StixObject[] = [authorIdentity()];
  for (const [index, item] of (bundle.objects as unknown[]).entries()) {
    if (item === null || typeof item !== "object" || Array.isArray(item)) {
      throw new BundleError(versionId, `objects[${index}] is not an object`);
    }
    const object = item as Record<string, unknown>;
    if (typeof object.type !== "string" || object.type === "") {
      throw new BundleError(versionId, `objects[${index}] has no string "type"`);
    }
    if (typeof object.id !== "string" || !object.id.startsWith(object.type + "--")) {
      throw new BundleError(
        versionId,
        `objects[${index}] (type ${object.type}) has no id of the form "${object.type}--<uuid>"`,
      );
    }
    if (object.id === AUTHOR_ID) {
      continue;
    }
    if (takesAuthor(object.type) && (object.created_by_ref === undefined || object.created_by_ref === null)) {
      object.created_by_ref = AUTHOR_ID;
    }
    objects.push(object as StixObject);
  }

  const bundleId = typeof bundle.id === "string" ? bundle.id : `bundle--${crypto.randomUUID()}`;
  return { bundleId, objects };
}

/** Returns the ids an object references through `*_ref` and `*_refs` properties, nested ones included. */
export function referencedIds(object: StixObject): string[] {
  const ids: string[] = [];
  collectRefs(object, ids);
  return ids;
}

function collectRefs(value: unknown, ids: string[]): void {
  if (value === null || typeof value !== "object") {
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) {
      collectRefs(item, ids);
    }
    return;
  }
  for (const [key, property] of Object.entries(value)) {
    if (key.endsWith("_ref") && typeof property === "string") {
      ids.push(property);
    } else if (key.endsWith("_refs") && Array.isArray(property)) {
      for (const ref of property) {
        if (typeof ref === "string") {
          ids.push(ref);
        }
      }
    } else if (typeof property === "object") {
      collectRefs(property, ids);
    }
  }
}

/**
 * Orders objects so that what an object references within the list comes
 * before it (depth-first post-order; reference cycles are cut), keeping the
 * original order otherwise.
 */
export function dependencyOrder(objects: StixObject[]): StixObject[] {
  const byId = new Map<string, StixObject>();
  for (const object of objects) {
    byId.set(object.id, object);
  }

  const ordered: StixObject[] = [];
  const state = new Map<string, "visiting" | "done">();

  // An explicit stack: reference chains in large versions can be deep.
  for (const root of objects) {
    if (state.has(root.id)) {
      continue;
    }
    const stack: { object: StixObject; refs: string[]; next: number }[] = [
      { object: root, refs: referencedIds(root), next: 0 },
    ];
    state.set(root.id, "visiting");
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      if (frame.next < frame.refs.length) {
        const ref = frame.refs[frame.next++]!;
        const target = byId.get(ref);
        if (target && !state.has(ref)) {
          state.set(ref, "visiting");
          stack.push({ object: target, refs: referencedIds(target), next: 0 });
        }
        continue;
      }
      stack.pop();
      state.set(frame.object.id, "done");
      ordered.push(frame.object);
    }
  }
  return ordered;
}

/** One bundle to push: its JSON text and how many objects it carries. */
export interface BundleChunk {
  json: string;
  objects: number;
}

/**
 * Cuts a prepared version into bundles whose JSON is at most `maxBytes`:
 * objects in dependency order, each bundle carrying the author identity and
 * the marking definitions its objects reference. A version that fits is one
 * bundle with the version's bundle id. Raises BundleError when a single
 * object is larger than the limit.
 */
export function chunkVersion(
  versionId: string,
  bundleId: string,
  objects: StixObject[],
  maxBytes: number,
): BundleChunk[] {
  const author = objects.find((object) => object.id === AUTHOR_ID) ?? authorIdentity();
  const markings = new Map<string, { object: StixObject; text: string }>();
  const others: StixObject[] = [];
  for (const object of objects) {
    if (object.id === AUTHOR_ID) {
      continue;
    }
    if (object.type === "marking-definition") {
      markings.set(object.id, { object, text: JSON.stringify(object) });
    } else {
      others.push(object);
    }
  }

  const authorText = JSON.stringify(author);
  const texts = others.map((object) => JSON.stringify(object));
  const total =
    texts.reduce((sum, text) => sum + Buffer.byteLength(text) + 1, 0) +
    [...markings.values()].reduce((sum, marking) => sum + Buffer.byteLength(marking.text) + 1, 0) +
    Buffer.byteLength(authorText) + envelopeBytes(bundleId);
  if (total <= maxBytes) {
    const parts = [authorText, ...[...markings.values()].map((marking) => marking.text), ...texts];
    return [{ json: wrap(bundleId, parts), objects: parts.length }];
  }

  const ordered = dependencyOrder(others);
  const textById = new Map<string, string>();
  others.forEach((object, index) => textById.set(object.id, texts[index]!));

  const chunks: BundleChunk[] = [];
  const usedMarkings = new Set<string>();
  let parts: string[] = [];
  let chunkMarkings = new Set<string>();
  let size = 0;
  let chunkId = chunkBundleId(bundleId, 0);

  const startChunk = () => {
    parts = [];
    chunkMarkings = new Set();
    chunkId = chunkBundleId(bundleId, chunks.length);
    size = envelopeBytes(chunkId) + Buffer.byteLength(authorText) + 1;
  };
  const objectBytes = (text: string, markingIds: string[]) =>
    Buffer.byteLength(text) + 1 +
    markingIds.reduce((sum, id) => sum + Buffer.byteLength(markings.get(id)!.text) + 1, 0);
  const flush = () => {
    const markingTexts = [...chunkMarkings].map((id) => markings.get(id)!.text);
    chunks.push({ json: wrap(chunkId, [authorText, ...markingTexts, ...parts]), objects: parts.length + markingTexts.length + 1 });
  };

  startChunk();
  for (const object of ordered) {
    const text = textById.get(object.id)!;
    let markingIds = markingRefs(object).filter((id) => markings.has(id) && !chunkMarkings.has(id));
    let extra = objectBytes(text, markingIds);

    if (size + extra > maxBytes && parts.length > 0) {
      flush();
      startChunk();
      markingIds = markingRefs(object).filter((id) => markings.has(id));
      extra = objectBytes(text, markingIds);
    }
    if (size + extra > maxBytes) {
      throw new PushLimitError(
        versionId,
        `object ${object.id} alone needs ${extra} bytes with the author and its markings, more than the ${maxBytes}-byte push limit: raise CONNECTOR_PUSH_MAX_MB`,
      );
    }

    for (const id of markingIds) {
      chunkMarkings.add(id);
      usedMarkings.add(id);
    }
    parts.push(text);
    size += extra;
  }

  // Marking definitions that no object references still belong to the
  // version, so they go after the objects, within the same size limit.
  for (const [id, marking] of markings) {
    if (usedMarkings.has(id)) {
      continue;
    }
    const extra = Buffer.byteLength(marking.text) + 1;
    if (size + extra > maxBytes && (parts.length > 0 || chunkMarkings.size > 0)) {
      flush();
      startChunk();
    }
    if (size + extra > maxBytes) {
      throw new PushLimitError(
        versionId,
        `marking definition ${id} alone needs ${extra} bytes with the author, more than the ${maxBytes}-byte push limit: raise CONNECTOR_PUSH_MAX_MB`,
      );
    }
    chunkMarkings.add(id);
    usedMarkings.add(id);
    size += extra;
  }
  flush();
  return chunks;
}

/** Returns the marking definitions an object references, in `object_marking_refs` and `granular_markings`. */
function markingRefs(object: StixObject): string[] {
  const refs: unknown[] = Array.isArray(object.object_marking_refs) ? [...object.object_marking_refs] : [];
  if (Array.isArray(object.granular_markings)) {
    for (const marking of object.granular_markings as unknown[]) {
      if (marking !== null && typeof marking === "object") {
        refs.push((marking as Record<string, unknown>).marking_ref);
      }
    }
  }
  return [...new Set(refs.filter((ref): ref is string => typeof ref === "string"))];
}

function chunkBundleId(bundleId: string, index: number): string {
  return index === 0 ? bundleId : "bundle--" + uuid5(OPENCTI_NAMESPACE, `${bundleId}/${index}`);
}

function envelopeBytes(bundleId: string): number {
  return Buffer.byteLength(wrap(bundleId, []));
}

function wrap(bundleId: string, parts: string[]): string {
  return `{"type":"bundle","id":${JSON.stringify(bundleId)},"spec_version":"2.1","objects":[${parts.join(",")}]}`;
}
