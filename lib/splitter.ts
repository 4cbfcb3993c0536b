import type { StixObject } from "./stix.ts";

// A port of pycti's OpenCTIStix2Splitter.split_bundle_with_expectations
// (client-python, pycti/utils/opencti_stix2_splitter.py), without the
// event_version and group_by_deps options. The connector publishes what this
// produces on the push queue, and the worker expects what pycti sends.

/** Id of the OpenCTI STIX extension whose `id` property also indexes an object. */
export const OPENCTI_EXTENSION_ID = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";

/** UUID namespace of OpenCTI's deterministic ids, which STIX 2.1 defines for SCO ids. */
export const OPENCTI_NAMESPACE = "00abedb4-aa42-466c-9c01-fed23315a9b7";

// pycti/utils/opencti_stix2_utils.py: SUPPORTED_STIX_ENTITY_OBJECTS
// (STIX_META_OBJECTS + STIX_CORE_OBJECTS), SUPPORTED_INTERNAL_OBJECTS and the
// keys of STIX_CYBER_OBSERVABLE_MAPPING, then the splitter's own additions.
const STIX_META_OBJECTS = ["label", "vocabulary", "kill-chain-phase"];

const STIX_CORE_OBJECTS = [
  "attack-pattern",
  "campaign",
  "case-incident",
  "x-opencti-case-incident",
  "case-rfi",
  "x-opencti-case-rfi",
  "case-rft",
  "x-opencti-case-rft",
  "channel",
  "course-of-action",
  "data-component",
  "x-mitre-data-component",
  "data-source",
  "x-mitre-data-source",
  "event",
  "external-reference",
  "feedback",
  "x-opencti-feedback",
  "grouping",
  "identity",
  "incident",
  "indicator",
  "infrastructure",
  "intrusion-set",
  "language",
  "location",
  "malware",
  "malware-analysis",
  "marking-definition",
  "narrative",
  "note",
  "observed-data",
  "opinion",
  "report",
  "task",
  "x-opencti-task",
  "threat-actor",
  "tool",
  "vulnerability",
  "security-coverage",
];

const SUPPORTED_INTERNAL_OBJECTS = [
  "user",
  "group",
  "capability",
  "role",
  "settings",
  "notification",
  "work",
  "trash",
  "draftworkspace",
  "playbook",
  "deleteoperation",
  "workspace",
  "publicdashboard",
];

const STIX_CYBER_OBSERVABLES = [
  "autonomous-system",
  "directory",
  "domain-name",
  "email-addr",
  "email-message",
  "email-mime-part-type",
  "artifact",
  "file",
  "x509-certificate",
  "ipv4-addr",
  "ipv6-addr",
  "mac-addr",
  "mutex",
  "network-traffic",
  "process",
  "software",
  "url",
  "user-account",
  "windows-registry-key",
  "windows-registry-value-type",
  "hostname",
  "cryptographic-key",
  "cryptocurrency-wallet",
  "text",
  "user-agent",
  "bank-account",
  "phone-number",
  "credential",
  "tracking-number",
  "payment-card",
  "media-content",
  "simple-observable",
  "persona",
  "ssh-key",
];

/** STIX types that OpenCTI imports. The splitter removes refs to any other type. */
export const SUPPORTED_STIX_TYPES: ReadonlySet<string> = new Set([
  ...STIX_META_OBJECTS,
  ...STIX_CORE_OBJECTS,
  ...SUPPORTED_INTERNAL_OBJECTS,
  ...STIX_CYBER_OBSERVABLES,
  "relationship",
  "sighting",
  "pir",
]);

/**
 * Checks whether OpenCTI imports the type named by a STIX id (the part before
 * `--`). A value without `--`, such as an OpenCTI internal id, counts as
 * supported because it is not a STIX id.
 */
export function isIdSupported(id: string): boolean {
  const separator = id.indexOf("--");
  if (separator === -1) {
    return true;
  }

  return SUPPORTED_STIX_TYPES.has(id.slice(0, separator));
}

/**
 * Serializes a JSON value as RFC 8785 (JCS) canonical JSON: keys sorted by
 * UTF-16 code units, no whitespace, ECMAScript number and string forms. This
 * is what the `stix2` Python package's `canonicalize` returns. `undefined`
 * becomes `null`, as a missing key read with `dict.get` does in Python.
 */
export function canonicalize(value: unknown): string {
  if (value === undefined || value === null) {
    return "null";
  }

  if (Array.isArray(value)) {
    return "[" + value.map(canonicalize).join(",") + "]";
  }

  if (typeof value === "object") {
    const record = value as Record<string, unknown>;
    const members = Object.keys(record)
      .sort()
      .map((key) => JSON.stringify(key) + ":" + canonicalize(record[key]));
    return "{" + members.join(",") + "}";
  }

  return JSON.stringify(value);
}

/**
 * Computes a version 5 UUID (SHA-1, RFC 9562) of `name`, encoded as UTF-8,
 * in `namespace`, as Python's `uuid.uuid5` does.
 *
 * @throws {TypeError} when `namespace` is not a UUID in its 36-character form.
 */
export function uuid5(namespace: string, name: string): string {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(namespace)) {
    throw new TypeError(
      `Invalid UUID namespace "${namespace}": expected the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`,
    );
  }

  // Bun's hasher, not node:crypto's createHash: importing node:crypto loads
  // that module at start-up, and a loaded module stays resident.
  const hash = new Bun.CryptoHasher("sha1")
    .update(Buffer.from(namespace.replaceAll("-", ""), "hex"))
    .update(name, "utf8")
    .digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;

  const hex = bytes.toString("hex");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
}

/**
 * Computes OpenCTI's id of an external reference: from its `url` when it has
 * one, else from `source_name` and `external_id`. Returns undefined when the
 * reference has neither, which makes the splitter drop it.
 */
export function externalReferenceId(reference: unknown): string | undefined {
  const url = readField(reference, "url");
  const sourceName = readField(reference, "source_name");
  const externalId = readField(reference, "external_id");

  let data: Record<string, unknown>;
  if (isPresent(url)) {
    data = { url };
  } else if (isPresent(sourceName) && isPresent(externalId)) {
    data = { source_name: sourceName, external_id: externalId };
  } else {
    return undefined;
  }

  return "external-reference--" + uuid5(OPENCTI_NAMESPACE, canonicalize(data));
}

/** Computes OpenCTI's id of a kill chain phase from `phase_name` and `kill_chain_name`. */
export function killChainPhaseId(phase: unknown): string {
  const data = {
    phase_name: readField(phase, "phase_name"),
    kill_chain_name: readField(phase, "kill_chain_name"),
  };
  return "kill-chain-phase--" + uuid5(OPENCTI_NAMESPACE, canonicalize(data));
}

/** One split bundle: a single object and its dependency count. */
export interface SplitBundle {
  type: "bundle";
  /** The id of the bundle that was split, the same in every part. */
  id: string;
  spec_version: "2.1";
  /** The object's dependency count, which orders the import on the worker side. */
  x_opencti_seq: number;
  objects: [StixObject];
}

/** Result of {@linkcode splitBundle}. */
export interface SplitResult {
  /** Objects the worker will import, one per bundle: the work's expectation count. */
  expectations: number;
  /** Objects left out: relationships or sightings without their refs, and unsupported types. */
  incompatible: StixObject[];
  /** One bundle per object, dependencies first. `seq` repeats `bundle.x_opencti_seq`. */
  bundles: { bundle: SplitBundle; seq: number }[];
}

/** Options of {@linkcode splitBundle}. */
export interface SplitOptions {
  /** Also remove refs to objects that are not in the bundle. @default false */
  cleanupInconsistentBundle?: boolean;
}

/** A bundle that {@linkcode splitBundle} cannot read. */
export class BundleSplitError extends Error {
  override name = "BundleSplitError";
}

/**
 * Splits a STIX bundle into one bundle per object, as pycti does before it
 * publishes on the push queue. Each object gets an `nb_deps` property, which
 * is 1 plus the `nb_deps` of every ref it keeps, and the bundles are stably
 * sorted by it so that dependencies come first.
 *
 * On the way, it removes refs (`*_ref`, `*_refs`) to unsupported STIX types,
 * to the object itself, to an ancestor (a cycle) or back to a referencing
 * object, and a removed `*_ref` becomes null. `*_refs` lists lose duplicates,
 * and `external_references` and `kill_chain_phases` lose duplicates by
 * OpenCTI id. When two objects share an id, the last one wins. Refs to
 * objects outside the bundle are kept unless `cleanupInconsistentBundle` is
 * set.
 *
 * The input objects are not modified: each indexed object is copied one
 * level deep, and nested values are shared with the input. A bundle without
 * an `id` gets a random `bundle--<uuid4>`.
 *
 * @throws {BundleSplitError} when `objects` is not an array or an object has
 * no string `id` or `type`.
 */
export function splitBundle(
  bundle: { id?: string; objects: readonly StixObject[] },
  options: SplitOptions = {},
): SplitResult {
  if (!Array.isArray(bundle.objects)) {
    throw new BundleSplitError("The bundle has no objects array: pass a STIX bundle with an `objects` list");
  }

  const bundleId = bundle.id ?? `bundle--${crypto.randomUUID()}`;
  const splitter = new Splitter(options.cleanupInconsistentBundle ?? false);
  const ids = splitter.index(bundle.objects);

  for (const id of ids) {
    splitter.enlist(id, []);
  }

  // Array.prototype.sort is stable, like Python's list.sort.
  const elements = splitter.elements.sort((a, b) => a.nb_deps! - b.nb_deps!);

  const bundles = elements.map((element) => {
    const seq = element.nb_deps!;
    const part: SplitBundle = {
      type: "bundle",
      id: bundleId,
      spec_version: "2.1",
      x_opencti_seq: seq,
      objects: [element],
    };
    return { bundle: part, seq };
  });

  return { expectations: bundles.length, incompatible: splitter.incompatible, bundles };
}

type SplitItem = StixObject & { nb_deps?: number };

// The state of one split, named after pycti's attributes: raw_data, cache_index,
// cache_refs, elements and incompatible_items.
class Splitter {
  readonly rawData = new Map<string, SplitItem>();
  readonly cacheIndex = new Map<string, SplitItem>();
  readonly cacheRefs = new Map<string, Set<string>>();
  readonly elements: SplitItem[] = [];
  readonly incompatible: SplitItem[] = [];

  constructor(private readonly cleanupInconsistentBundle: boolean) {}

  // Indexes copies of the objects and returns their ids in bundle order.
  index(objects: readonly StixObject[]): string[] {
    const ids: string[] = [];

    objects.forEach((object, position) => {
      if (typeof object?.id !== "string" || typeof object.type !== "string") {
        throw new BundleSplitError(
          `The STIX object at position ${position} of the bundle has no string id or type: fix or remove it`,
        );
      }

      const item: SplitItem = { ...object };
      this.rawData.set(item.id, item);
      for (const internalId of internalIds(item)) {
        this.rawData.set(internalId, item);
      }
      ids.push(item.id);
    });

    return ids;
  }

  // pycti's enlist_element: walks the refs of `itemId` depth first, cleans the
  // item on the way, appends it after its dependencies and returns nb_deps.
  // `parents` contains the refs followed from the top-level object down to here.
  enlist(itemId: string, parents: readonly string[]): number {
    const item = this.rawData.get(itemId);
    if (item === undefined) {
      return 0;
    }

    const existing = this.cacheIndex.get(itemId);
    if (existing !== undefined) {
      return existing.nb_deps!;
    }

    let nbDeps = 1;
    let itemRefs = this.cacheRefs.get(itemId);
    if (itemRefs === undefined) {
      itemRefs = new Set();
      this.cacheRefs.set(itemId, itemRefs);
    }

    for (const key of Object.keys(item)) {
      const value = item[key];

      if (key.endsWith("_refs") && value !== undefined && value !== null) {
        // NOTE: pycti iterates any value here, even the characters of a
        // string. This port leaves a `*_refs` value that is not a list as is.
        if (!Array.isArray(value)) {
          continue;
        }

        // The walk below can reach this item again through a cycle, and pycti
        // then iterates whatever list `item[key]` contains at that moment. Reading
        // and replacing item[key] exactly as pycti does keeps the same result.
        const toKeep: string[] = [];
        const keptRefs = new Set<string>();
        for (const ref of value) {
          if (this.isRefFollowed(ref, itemId, parents)) {
            itemRefs.add(ref);
            nbDeps += this.enlist(ref, [...parents, ref]);
            if (!keptRefs.has(ref)) {
              keptRefs.add(ref);
              toKeep.push(ref);
            }
          }
          item[key] = toKeep;
        }
      } else if (key.endsWith("_ref")) {
        if (this.isRefFollowed(value, itemId, parents)) {
          itemRefs.add(value);
          nbDeps += this.enlist(value, [...parents, value]);
        } else {
          item[key] = null;
        }
      } else if (key === "external_references" && Array.isArray(value)) {
        item[key] = uniqueBy(value, externalReferenceId);
      } else if (key === "kill_chain_phases" && Array.isArray(value)) {
        item[key] = uniqueBy(value, killChainPhaseId);
      }
    }

    item.nb_deps = nbDeps;

    if (!this.cacheIndex.has(itemId)) {
      if (isCompatible(item, itemId)) {
        this.elements.push(item);
      } else {
        this.incompatible.push(item);
      }

      this.cacheIndex.set(itemId, item);
      for (const internalId of internalIds(item)) {
        this.cacheIndex.set(internalId, item);
      }
    }

    return nbDeps;
  }

  // A ref is followed (kept and counted) when it names a supported type, is
  // not removed by the cleanup, is not an ancestor or the item itself, and
  // its target does not already reference the item.
  private isRefFollowed(ref: unknown, itemId: string, parents: readonly string[]): ref is string {
    // NOTE: pycti raises on a ref that is not a string, and this port drops it.
    if (typeof ref !== "string") {
      return false;
    }

    const isMissing = !this.rawData.has(ref);
    const refRefs = this.cacheRefs.get(ref);
    const isBackReference = refRefs !== undefined && refRefs.has(itemId);

    return (
      isIdSupported(ref) &&
      !(isMissing && this.cleanupInconsistentBundle) &&
      !parents.includes(ref) &&
      ref !== itemId &&
      !isBackReference
    );
  }
}

// A relationship needs both ends and a sighting needs what was sighted and
// where. Any other object needs a supported type.
function isCompatible(item: SplitItem, itemId: string): boolean {
  if (item.type === "relationship") {
    return isPresent(item.source_ref) && isPresent(item.target_ref);
  }

  if (item.type === "sighting") {
    const whereSighted = item.where_sighted_refs;
    return isPresent(item.sighting_of_ref) && Array.isArray(whereSighted) && whereSighted.length > 0;
  }

  return isIdSupported(itemId);
}

// The ids besides `id` that OpenCTI exports an object with.
function internalIds(item: SplitItem): string[] {
  const ids: string[] = [];

  const opencti = item.x_opencti_id;
  if (typeof opencti === "string" && opencti !== "") {
    ids.push(opencti);
  }

  const extension = readField(item.extensions, OPENCTI_EXTENSION_ID);
  const extensionId = readField(extension, "id");
  if (typeof extensionId === "string" && extensionId !== "") {
    ids.push(extensionId);
  }

  return ids;
}

/** Keeps the first entry of each id, in order. Entries without an id are dropped. */
export function uniqueBy(entries: readonly unknown[], idOf: (entry: unknown) => string | undefined): unknown[] {
  const seen = new Set<string>();
  const unique: unknown[] = [];

  for (const entry of entries) {
    const id = idOf(entry);
    if (id !== undefined && !seen.has(id)) {
      seen.add(id);
      unique.push(entry);
    }
  }

  return unique;
}

// Reads a property the way Python's dict.get does. An entry that is not a
// plain object reads as empty, where pycti would raise.
function readField(container: unknown, name: string): unknown {
  if (typeof container !== "object" || container === null || Array.isArray(container)) {
    return undefined;
  }

  return Object.hasOwn(container, name) ? (container as Record<string, unknown>)[name] : undefined;
}

// Python's `is not None`, with a missing key read as None.
function isPresent(value: unknown): boolean {
  return value !== undefined && value !== null;
}
