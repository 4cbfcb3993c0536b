/**
 * A version kept in its spool file: the checks and the author of
 * `prepareVersion`, the bundles of `chunkVersion` and the splitter's input,
 * computed from the scanner's index, with each object read back from the
 * file only when it is sent.
 */
import { AUTHOR_ID, type BundleChunk, authorIdentity, takesAuthor } from "./bundle.ts";
import { BundleError, PushLimitError } from "./errors.ts";
import { FLAG_MEMBERS, FLAG_NON_ASCII, JsonKind, NULL_VALUE, Rec, type ScannedBundle } from "./scan.ts";
import { OPENCTI_EXTENSION_ID, OPENCTI_NAMESPACE, externalReferenceId, killChainPhaseId, uniqueBy, uuid5 } from "./splitter.ts";
import type { StixObject } from "./stix.ts";

/** Reads byte ranges of the version's JSON. */
export interface ByteRangeReader {
  /** Decodes bytes [start, end) as UTF-8. */
  text(start: number, end: number): string;
  /** Returns bytes [start, end), as a view valid until the next call. */
  bytes(start: number, end: number): Uint8Array;
}

/**
 * Property of each object that {@linkcode SpooledVersion.splitInput}
 * returns: the item it stands for. The splitter's shallow copies keep it,
 * and `JSON.stringify` and `Object.keys` skip it.
 */
export const SOURCE_ITEM: unique symbol = Symbol("spooled item");

// created_by_ref states besides a string index.
const MISSING = -3;

// Loops over items use indices: in Bun 1.4.5, for...of over a typed array
// allocated an iterator result per item in these functions, 150,000 objects
// on a 200 MB version.

// Change made to an item's created_by_ref when it is read back. Appending
// needs no parse: the author member goes before the closing brace, the
// place where prepareVersion adds a missing property.
const AUTHOR_KEEP = 0;
const AUTHOR_APPEND = 1;
const AUTHOR_SET = 2;
const AUTHOR_REPLACE = 3;

/** The member that becomes an object's author, as it is appended to its JSON text. */
const AUTHOR_MEMBER = Buffer.from(`"created_by_ref":${JSON.stringify(AUTHOR_ID)}`, "latin1");
// Its `"` bytes, which escaping doubles; the author id has no `"` or `\`.
const AUTHOR_MEMBER_ESCAPES = 4;

/**
 * Checks a scanned version as `prepareVersion` does and returns it ready to
 * send. Raises BundleError with the same messages.
 */
export function prepareSpooledVersion(scan: ScannedBundle, reader: ByteRangeReader, versionId: string): SpooledVersion {
  if (scan.topKind !== JsonKind.object) {
    let got = typeofName(scan.topKind);
    if (scan.topKind === JsonKind.array) {
      got = "an array";
    } else if (scan.topKind === JsonKind.null) {
      got = "null";
    }
    throw new BundleError(versionId, `expected a JSON object, got ${got}`);
  }
  if (scan.type !== "bundle") {
    const shown = scan.typeKind === -1 ? "missing" : JSON.stringify(JSON.parse(reader.text(scan.typeRange[0], scan.typeRange[1])));
    throw new BundleError(versionId, `"type" is ${shown}, expected "bundle"`);
  }
  if (scan.objectsKind !== JsonKind.array) {
    throw new BundleError(versionId, `"objects" is ${scan.objectsKind === -1 ? "missing" : "not an array"}`);
  }

  const { strings } = scan;
  const createdByKey = strings.indexOf("created_by_ref");
  const kept = new Int32Array(scan.count);
  let keptCount = 0;
  const needsAuthor = new Uint8Array(scan.count);
  const createdBy = new Int32Array(scan.count).fill(MISSING);
  for (let item = 0; item < scan.count; item++) {
    if (scan.kind[item] !== JsonKind.object) {
      throw new BundleError(versionId, `objects[${item}] is not an object`);
    }
    const typeIndex = scan.typeOf[item]!;
    const type = typeIndex >= 0 ? strings[typeIndex]! : "";
    if (type === "") {
      throw new BundleError(versionId, `objects[${item}] has no string "type"`);
    }
    const idIndex = scan.idOf[item]!;
    if (idIndex < 0 || !strings[idIndex]!.startsWith(type + "--")) {
      throw new BundleError(versionId, `objects[${item}] (type ${type}) has no id of the form "${type}--<uuid>"`);
    }
    if (strings[idIndex] === AUTHOR_ID) {
      continue;
    }
    if (createdByKey >= 0) {
      createdBy[item] = lastTopRef(scan, item, createdByKey);
    }
    if (takesAuthor(type) && createdBy[item] === MISSING) {
      needsAuthor[item] = AUTHOR_APPEND;
    } else if (takesAuthor(type) && createdBy[item] === NULL_VALUE) {
      needsAuthor[item] = AUTHOR_SET;
    }
    kept[keptCount++] = item;
  }

  const bundleId = scan.id ?? `bundle--${crypto.randomUUID()}`;
  return new SpooledVersion(versionId, bundleId, scan, reader, kept.subarray(0, keptCount), needsAuthor, createdBy);
}

/**
 * A checked version in its spool file. Objects are read, given the author
 * and serialized one at a time, so memory contains the index and the bundle
 * being sent, not the version.
 */
export class SpooledVersion {
  readonly versionId: string;
  readonly bundleId: string;
  readonly scan: ScannedBundle;
  /** Items sent, in bundle order: all but those with the author's id. */
  readonly items: Int32Array;
  readonly #reader: ByteRangeReader;
  /** AUTHOR_KEEP, AUTHOR_APPEND, AUTHOR_SET or AUTHOR_REPLACE, by item. */
  readonly #needsAuthor: Uint8Array;
  /** String index of each item's `created_by_ref` as served, or MISSING, NULL_VALUE, OTHER_VALUE. */
  readonly #createdBy: Int32Array;
  /** {@linkcode SpooledVersion.asciiExtraBytes} by item, -1 until counted, allocated at the first count. */
  #asciiExtra = new Int32Array(0);

  constructor(
    versionId: string,
    bundleId: string,
    scan: ScannedBundle,
    reader: ByteRangeReader,
    items: Int32Array,
    needsAuthor: Uint8Array,
    createdBy: Int32Array,
  ) {
    this.versionId = versionId;
    this.bundleId = bundleId;
    this.scan = scan;
    this.items = items;
    this.#reader = reader;
    this.#needsAuthor = needsAuthor;
    this.#createdBy = createdBy;
  }

  /** Objects of the version with the author identity: the length of `prepareVersion`'s objects. */
  get objectCount(): number {
    return this.items.length + 1;
  }

  /**
   * Counts the items whose id an earlier item already has, and returns the
   * first such id. Both protocols send each id once, with its last copy.
   */
  repeatedIds(): { count: number; firstId: string | undefined } {
    const seen = new Uint8Array(this.scan.strings.length);
    let count = 0;
    let firstId: string | undefined;
    for (let index = 0; index < this.items.length; index++) {
      const id = this.scan.idOf[this.items[index]!]!;
      if (seen[id] === 1) {
        count++;
        firstId ??= this.scan.strings[id];
      }
      seen[id] = 1;
    }
    return { count, firstId };
  }

  /** Returns the STIX id of an item. */
  id(item: number): string {
    return this.scan.strings[this.scan.idOf[item]!]!;
  }

  /** Returns the STIX type of an item. */
  type(item: number): string {
    return this.scan.strings[this.scan.typeOf[item]!]!;
  }

  /** Returns true when the author becomes the item's `created_by_ref`. */
  needsAuthor(item: number): boolean {
    return this.#needsAuthor[item] !== AUTHOR_KEEP;
  }

  /** Returns the ids of the version's identities. */
  *identityIds(): Generator<string> {
    for (let index = 0; index < this.items.length; index++) {
      const item = this.items[index]!;
      if (this.type(item) === "identity") {
        yield this.id(item);
      }
    }
  }

  /**
   * Returns each distinct string `created_by_ref` of the objects that keep
   * the one they were served with. A version has a handful, so the list is
   * short however large the version is.
   */
  authorRefs(): string[] {
    const seen = new Set<number>();
    for (let index = 0; index < this.items.length; index++) {
      const item = this.items[index]!;
      const createdBy = this.#createdBy[item]!;
      if (this.#needsAuthor[item] === AUTHOR_KEEP && createdBy >= 0) {
        seen.add(createdBy);
      }
    }
    return [...seen].map((index) => this.scan.strings[index]!);
  }

  /**
   * Makes the author the `created_by_ref` of every object whose served
   * `created_by_ref` is in `unknown`, when it is read back. Returns the
   * number of objects changed.
   */
  replaceAuthorRefs(unknown: ReadonlySet<string>): number {
    let replaced = 0;
    for (let index = 0; index < this.items.length; index++) {
      const item = this.items[index]!;
      const createdBy = this.#createdBy[item]!;
      if (this.#needsAuthor[item] === AUTHOR_KEEP && createdBy >= 0 && unknown.has(this.scan.strings[createdBy]!)) {
        this.#needsAuthor[item] = AUTHOR_REPLACE;
        replaced++;
      }
    }
    return replaced;
  }

  /** Reads an item and returns it with the author added or replaced, as `prepareVersion` and `AuthorReferences` do. */
  object(item: number): StixObject {
    const object = JSON.parse(this.#raw(item)) as StixObject;
    if (this.#needsAuthor[item] !== AUTHOR_KEEP) {
      object.created_by_ref = AUTHOR_ID;
    }
    return object;
  }

  /**
   * Returns the JSON text of an item with the author added, without
   * whitespace. An item that {@linkcode SpooledVersion.streamable} is
   * copied from its bytes, as {@linkcode SpooledVersion.writeStreamed}
   * writes it; any other is parsed and serialized again.
   */
  text(item: number): string {
    if (this.streamable(item)) {
      const bytes = Buffer.allocUnsafe(this.streamedLength(item));
      const end = this.writeStreamed(item, bytes, 0, false);
      return bytes.toString("utf8", 0, end);
    }
    return JSON.stringify(this.object(item));
  }

  /**
   * Returns true when an item's JSON text can be written from its bytes
   * without a parse: it keeps its `created_by_ref` or has none to add.
   * The others, with a null `created_by_ref` to set or one to replace, are
   * parsed.
   */
  streamable(item: number): boolean {
    const change = this.#needsAuthor[item];
    return change === AUTHOR_KEEP || change === AUTHOR_APPEND;
  }

  /** Returns true when a string of the item has a character that is not ASCII. */
  hasNonAscii(item: number): boolean {
    return (this.scan.flags[item]! & FLAG_NON_ASCII) !== 0;
  }

  /**
   * Returns the bytes that the `\\uXXXX` escapes add to the item's escaped
   * text, against its bytes that are not ASCII: each such character becomes
   * an escape of 7 bytes, or two for a character beyond U+FFFF.
   */
  asciiExtraBytes(item: number): number {
    if (this.#asciiExtra.length === 0) {
      this.#asciiExtra = new Int32Array(this.scan.count).fill(-1);
    }
    let extra = this.#asciiExtra[item]!;
    if (extra < 0) {
      extra = countAsciiExtra(this.#reader.bytes(this.scan.start[item]!, this.scan.end[item]!));
      this.#asciiExtra[item] = extra;
    }
    return extra;
  }

  /** Returns the length in bytes of the text that {@linkcode SpooledVersion.writeStreamed} writes unescaped. */
  streamedLength(item: number): number {
    let length = this.scan.end[item]! - this.scan.start[item]! - this.scan.whitespace[item]!;
    if (this.#needsAuthor[item] === AUTHOR_APPEND) {
      length += AUTHOR_MEMBER.length + ((this.scan.flags[item]! & FLAG_MEMBERS) !== 0 ? 1 : 0);
    }
    return length;
  }

  /** Returns the number of `"` and `\` bytes in the text that {@linkcode SpooledVersion.writeStreamed} writes. */
  streamedEscapes(item: number): number {
    return this.scan.escapes[item]! + (this.#needsAuthor[item] === AUTHOR_APPEND ? AUTHOR_MEMBER_ESCAPES : 0);
  }

  /**
   * Writes a streamable item's JSON text into `target` at `at`, from its
   * bytes as served. Whitespace between tokens is left out, and the author
   * member is appended when the item has no `created_by_ref`. With
   * `escape`, the text is the content of a JSON string in ASCII. Each `"`
   * and `\` gets a backslash, and each character that is not ASCII is
   * written as a `\uXXXX` escape with its backslash escaped. Invalid UTF-8
   * is read as U+FFFD, as TextDecoder reads it. Escapes and numbers stay as
   * served. Returns the offset after the text.
   */
  writeStreamed(item: number, target: Uint8Array, at: number, escape: boolean): number {
    const source = this.#reader.bytes(this.scan.start[item]!, this.scan.end[item]!);
    const append = this.#needsAuthor[item] === AUTHOR_APPEND;
    // With an author to append, the closing brace is written after it.
    const length = append ? source.length - 1 : source.length;
    let position = at;
    if (escape && this.hasNonAscii(item)) {
      position = copyAsciiEscaped(source, length, target, position, this.scan.whitespace[item]! > 0);
    } else if (this.scan.whitespace[item] === 0) {
      position = escape ? copyEscaped(source, length, target, position) : copyBytes(source, length, target, position);
    } else {
      position = copyMinified(source, length, target, position, escape);
    }
    if (append) {
      if ((this.scan.flags[item]! & FLAG_MEMBERS) !== 0) {
        target[position++] = 0x2c;
      }
      position = escape ? copyEscaped(AUTHOR_MEMBER, AUTHOR_MEMBER.length, target, position) : copyBytes(AUTHOR_MEMBER, AUTHOR_MEMBER.length, target, position);
      target[position++] = 0x7d;
    }
    return position;
  }

  /** Returns the string indices an item references, in `referencedIds` order. */
  refs(item: number): number[] {
    const refs: number[] = [];
    const cursor = { position: this.scan.recordStart[item]!, index: 0 };
    for (let ref = this.nextRef(item, cursor); ref >= 0; ref = this.nextRef(item, cursor)) {
      refs.push(ref);
    }
    return refs;
  }

  /**
   * Returns the next string index an item references after `cursor`, in
   * `referencedIds` order, and moves the cursor past it; -1 when there is
   * none. `cursor.position` starts at the item's `recordStart` and
   * `cursor.index` at 0. A walk over many items needs no array per item.
   */
  nextRef(item: number, cursor: { position: number; index: number }): number {
    const { records } = this.scan;
    const end = this.scan.recordEnd[item]!;
    let p = cursor.position;
    let index = cursor.index;
    let found = -1;
    while (p < end && found < 0) {
      const type = records[p]!;
      if (type === Rec.topRefs) {
        // `index` is the next target of this list to look at.
        const count = records[p + 2]!;
        while (index < count && found < 0) {
          found = records[p + 3 + index]!;
          index++;
        }
        if (index >= count) {
          p += 3 + count;
          index = 0;
        }
      } else {
        // `index` is 1 once this record's target was returned.
        const size = type === Rec.topRef ? 3 : 2;
        if (index === 0 && (type === Rec.topRef || type === Rec.nested || type === Rec.granular)) {
          found = records[p + size - 1]!;
        }
        p += size;
        index = 0;
      }
    }
    cursor.position = p;
    cursor.index = index;
    return found;
  }

  /**
   * Writes the marking definitions an item references, in
   * `object_marking_refs` and `granular_markings`, into `out` as string
   * indices without duplicates, and returns how many there are. `out` is
   * reused by the caller, so a walk over many items needs no array per item.
   */
  markingRefs(item: number, objectMarkingKey: number, out: number[]): number {
    const { records } = this.scan;
    const end = this.scan.recordEnd[item]!;
    // The last object_marking_refs is the one JSON.parse keeps.
    let list = -1;
    for (let p = this.scan.recordStart[item]!; p < end; p += recordSize(records, p)) {
      const type = records[p]!;
      if ((type === Rec.topRefs || type === Rec.topRefsOther || type === Rec.topRefsNull) && records[p + 1] === objectMarkingKey) {
        list = type === Rec.topRefs ? p : -1;
      }
    }

    out.length = 0;
    if (list >= 0) {
      for (let k = list + 3; k < list + 3 + records[list + 2]!; k++) {
        addUnique(out, records[k]!);
      }
    }
    for (let p = this.scan.recordStart[item]!; p < end; p += recordSize(records, p)) {
      if (records[p] === Rec.granular) {
        addUnique(out, records[p + 1]!);
      }
    }
    return out.length;
  }

  /**
   * Returns the splitter's input for this version: the author identity, then
   * for each item an object with only its `type`, `id`, top-level `*_ref`
   * and `*_refs` properties (in their order, the author added),
   * `x_opencti_id` and the OpenCTI extension id. These are all the
   * properties that decide the splitter's graph walk. Each object carries
   * its item in {@linkcode SOURCE_ITEM}; {@linkcode SpooledVersion.renderSplit}
   * turns the splitter's output back into whole objects.
   */
  splitInput(): StixObject[] {
    const { records, strings } = this.scan;
    const input: StixObject[] = [authorIdentity()];
    for (let index = 0; index < this.items.length; index++) {
      const item = this.items[index]!;
      const light: StixObject & { [SOURCE_ITEM]?: number } = { type: this.type(item), id: this.id(item) };
      let p = this.scan.recordStart[item]!;
      const end = this.scan.recordEnd[item]!;
      while (p < end) {
        const type = records[p]!;
        if (type === Rec.topRef) {
          const target = records[p + 2]!;
          // The splitter turns a *_ref that is not a string into null.
          light[strings[records[p + 1]!]!] = target >= 0 ? strings[target] : null;
          p += 3;
        } else if (type === Rec.topRefs) {
          const count = records[p + 2]!;
          const refs: (string | number)[] = [];
          for (let k = p + 3; k < p + 3 + count; k++) {
            // The splitter drops any item that is not a string; 0 stands for one.
            refs.push(records[k]! >= 0 ? strings[records[k]!]! : 0);
          }
          light[strings[records[p + 1]!]!] = refs;
          p += 3 + count;
        } else {
          const value = records[p + 1]!;
          if (type === Rec.topRefsOther) {
            // The splitter leaves a *_refs that is not a list as it is.
            light[strings[value]!] = true;
          } else if (type === Rec.topRefsNull) {
            light[strings[value]!] = null;
          } else if (type === Rec.openctiId) {
            light.x_opencti_id = strings[value];
          } else if (type === Rec.extensionId) {
            light.extensions = { [OPENCTI_EXTENSION_ID]: { id: strings[value] } };
          }
          p += 2;
        }
      }
      if (this.#needsAuthor[item] !== AUTHOR_KEEP) {
        light.created_by_ref = AUTHOR_ID;
      }
      light[SOURCE_ITEM] = item;
      input.push(light);
    }
    return input;
  }

  /**
   * Returns the whole object for one object of the splitter's output on
   * {@linkcode SpooledVersion.splitInput}: the item read back with the
   * author, the splitter's `*_ref` and `*_refs` values and `nb_deps`, and
   * `external_references` and `kill_chain_phases` without duplicates, as
   * the splitter makes them. An object without {@linkcode SOURCE_ITEM} (the
   * author) is returned as it is.
   */
  renderSplit(element: StixObject): StixObject {
    const item = (element as { [SOURCE_ITEM]?: number })[SOURCE_ITEM];
    if (item === undefined) {
      return element;
    }
    const object = this.object(item);
    for (const key of Object.keys(element)) {
      if (key.endsWith("_refs")) {
        if (Array.isArray(element[key])) {
          object[key] = element[key];
        }
      } else if (key.endsWith("_ref")) {
        object[key] = element[key];
      }
    }
    if (Array.isArray(object.external_references)) {
      object.external_references = uniqueBy(object.external_references, externalReferenceId);
    }
    if (Array.isArray(object.kill_chain_phases)) {
      object.kill_chain_phases = uniqueBy(object.kill_chain_phases, killChainPhaseId);
    }
    object.nb_deps = element.nb_deps;
    return object;
  }

  #raw(item: number): string {
    return this.#reader.text(this.scan.start[item]!, this.scan.end[item]!);
  }
}

/**
 * Form and size of the pieces that {@linkcode planChunks} cuts a bundle
 * into: each object's JSON text as it is, or escaped for a request that
 * carries the bundle as a JSON string.
 */
export interface ChunkEncoding {
  /** Returns the piece stored for an object's JSON text. */
  piece(text: string): string;
  /** Returns the bytes a piece adds to the request. */
  bytes(piece: string): number;
  /**
   * Returns the bytes that a streamed item adds, from the length of its
   * text and its count of `"` and `\` bytes.
   */
  streamedBytes(length: number, escapes: number): number;
  /** Returns the bytes of an empty bundle with this id, everything around it included. */
  envelopeBytes(bundleId: string): number;
  /** Upper bound of a piece's bytes per byte of the JSON text it is made from. */
  maxGrowth: number;
  /**
   * True when pieces are escaped JSON string content in ASCII, with a
   * `\uXXXX` escape for each other character, as
   * {@linkcode SpooledVersion.writeStreamed} writes with `escape`.
   */
  asciiOnly: boolean;
}

/** Bundle JSON as it is: `maxBytes` bounds the bundle's JSON text. */
export const BUNDLE_JSON: ChunkEncoding = {
  piece: (text) => text,
  bytes: (piece) => Buffer.byteLength(piece),
  streamedBytes: (length) => length,
  envelopeBytes: (bundleId) => Buffer.byteLength(wrap(bundleId, [])),
  maxGrowth: 1,
  asciiOnly: false,
};

// Upper bound of an object's JSON text, per byte served, once parsed and
// serialized again. A number grows at most 5.25 times, from "1e20" to
// "100000000000000000000". An invalid UTF-8 byte becomes U+FFFD, 3 bytes.
// Nothing else grows.
const TEXT_GROWTH = 5.25;
// Bytes that `"created_by_ref":"<author id>",` adds to an object, rounded up.
const AUTHOR_REF_BYTES = 80;

/**
 * A piece of a planned bundle: a string in the chosen encoding, or the item
 * number of a streamable object, whose bytes are copied from the spool file
 * when the bundle is written.
 */
export type ChunkPiece = string | number;

/** One bundle planned by {@linkcode planChunks}: its pieces in the chosen encoding. */
export interface ChunkPlan {
  bundleId: string;
  /** The author identity, the marking definitions, then the objects. */
  pieces: ChunkPiece[];
  /** Bytes the bundle takes in the chosen encoding, envelope included. */
  bytes: number;
  /** Bytes of the bundle's JSON text, whatever the encoding. */
  jsonBytes: number;
  /** Objects of the version in this bundle, without the author identity and the marking definitions it repeats. */
  versionObjects: number;
}

/**
 * Cuts a spooled version into bundles of at most `maxBytes` in `encoding`.
 * The rules are those of `chunkVersion` once a version is over the limit.
 * Objects go in dependency order, and each bundle carries the author
 * identity and the marking definitions its objects reference. Unreferenced
 * marking definitions go last, and an id served twice is sent once, with
 * the last text.
 * A version under the limit is one bundle with the version's bundle id, in
 * dependency order too, where `chunkVersion` keeps the served order and
 * both copies of a duplicate id. Bundles are planned one at a time as the
 * caller iterates, so only the current one is in memory. Raises BundleError
 * when a single object is larger than the limit.
 */
export function* planChunks(version: SpooledVersion, maxBytes: number, encoding: ChunkEncoding = BUNDLE_JSON): Generator<ChunkPlan> {
  const { strings } = version.scan;
  const authorText = JSON.stringify(authorIdentity());
  const authorPiece = encoding.piece(authorText);
  const authorBytes = encoding.bytes(authorPiece);
  const authorJsonBytes = Buffer.byteLength(authorText);
  const objectMarkingKey = strings.indexOf("object_marking_refs");

  // Marking definitions by id: the first one's place, the last one's text.
  const markings = new Map<number, { piece: string; bytes: number; jsonBytes: number }>();
  const others: number[] = [];
  for (let index = 0; index < version.items.length; index++) {
    const item = version.items[index]!;
    if (version.type(item) === "marking-definition") {
      const text = version.text(item);
      const piece = encoding.piece(text);
      markings.set(version.scan.idOf[item]!, { piece, bytes: encoding.bytes(piece), jsonBytes: Buffer.byteLength(text) });
    } else {
      others.push(item);
    }
  }

  const lastItem = new Int32Array(strings.length).fill(-1);
  for (let index = 0; index < others.length; index++) {
    const item = others[index]!;
    lastItem[version.scan.idOf[item]!] = item;
  }

  let chunkIndex = 0;
  let pieces: ChunkPiece[] = [];
  let chunkMarkings = new Set<number>();
  const usedMarkings = new Set<number>();
  let chunkId = version.bundleId;
  let size = 0;
  let jsonBytes = 0;
  let versionObjects = 0;

  // Each piece after the first one in the objects array adds a comma.
  const startChunk = () => {
    pieces = [];
    chunkMarkings = new Set();
    chunkId = chunkBundleId(version.bundleId, chunkIndex);
    size = encoding.envelopeBytes(chunkId) + authorBytes;
    jsonBytes = BUNDLE_JSON.envelopeBytes(chunkId) + authorJsonBytes;
    versionObjects = 0;
  };
  // The marking definitions in `ids` whose ids are not in `skip`, moved to `out`, and their bytes.
  const pickMarkings = (ids: number[], skip: Set<number> | undefined, out: number[]) => {
    out.length = 0;
    let bytes = 0;
    for (let index = 0; index < ids.length; index++) {
      const id = ids[index]!;
      const marking = markings.get(id);
      if (marking !== undefined && (skip === undefined || !skip.has(id))) {
        out.push(id);
        bytes += marking.bytes + 1;
      }
    }
    return bytes;
  };
  const markingJsonBytes = (ids: number[]) => {
    let bytes = 0;
    for (let index = 0; index < ids.length; index++) {
      bytes += markings.get(ids[index]!)!.jsonBytes + 1;
    }
    return bytes;
  };
  const flush = (): ChunkPlan => {
    const markingPieces = [...chunkMarkings].map((id) => markings.get(id)!.piece);
    chunkIndex++;
    const plan = { bundleId: chunkId, pieces: [authorPiece, ...markingPieces, ...pieces], bytes: size, jsonBytes, versionObjects };
    // The suspended generator would otherwise keep the pieces alive.
    pieces = [];
    return plan;
  };

  const order = dependencyOrder(version, others, lastItem);
  checkAloneSizes(version, order, lastItem, { maxBytes, encoding, markings, objectMarkingKey, authorBytes });
  const scratch: number[] = [];
  const markingIds: number[] = [];

  startChunk();
  for (let index = 0; index < order.length; index++) {
    const item = order[index]!;
    // Duplicate ids: the last object's text, as chunkVersion's textById.
    const textItem = lastItem[version.scan.idOf[item]!]!;
    let piece: ChunkPiece;
    let pieceJsonBytes: number;
    let pieceBytes: number;
    if (version.streamable(textItem)) {
      // Its size is known from the index, so the object is read only when the bundle is written.
      piece = textItem;
      pieceJsonBytes = version.streamedLength(textItem);
      pieceBytes = streamedPieceBytes(version, textItem, encoding) + 1;
    } else {
      const text = version.text(textItem);
      piece = encoding.piece(text);
      pieceJsonBytes = Buffer.byteLength(text);
      pieceBytes = encoding.bytes(piece) + 1;
    }
    version.markingRefs(item, objectMarkingKey, scratch);
    let extra = pieceBytes + pickMarkings(scratch, chunkMarkings, markingIds);

    if (size + extra > maxBytes && pieces.length > 0) {
      yield flush();
      startChunk();
      extra = pieceBytes + pickMarkings(scratch, undefined, markingIds);
    }
    if (size + extra > maxBytes) {
      throw new PushLimitError(
        version.versionId,
        `object ${version.id(item)} alone needs ${extra} bytes with the author and its markings, more than the ${maxBytes}-byte push limit: raise CONNECTOR_PUSH_MAX_MB`,
      );
    }

    for (let index = 0; index < markingIds.length; index++) {
      const id = markingIds[index]!;
      chunkMarkings.add(id);
      if (!usedMarkings.has(id)) {
        usedMarkings.add(id);
        versionObjects++;
      }
    }
    pieces.push(piece);
    size += extra;
    jsonBytes += pieceJsonBytes + 1 + markingJsonBytes(markingIds);
    versionObjects++;
  }

  // Marking definitions that no object references still belong to the
  // version, so they go after the objects, within the same size limit.
  for (const [id, marking] of markings) {
    if (usedMarkings.has(id)) {
      continue;
    }
    const extra = marking.bytes + 1;
    if (size + extra > maxBytes && (pieces.length > 0 || chunkMarkings.size > 0)) {
      yield flush();
      startChunk();
    }
    if (size + extra > maxBytes) {
      throw new PushLimitError(
        version.versionId,
        `marking definition ${strings[id]} alone needs ${extra} bytes with the author, more than the ${maxBytes}-byte push limit: raise CONNECTOR_PUSH_MAX_MB`,
      );
    }
    chunkMarkings.add(id);
    usedMarkings.add(id);
    size += extra;
    jsonBytes += marking.jsonBytes + 1;
    versionObjects++;
  }
  yield flush();
}

/**
 * Raises BundleError, before any bundle is planned, for the first object in
 * `order` or marking definition that does not fit in a bundle alone, so
 * that a version that cannot be sent is not sent in part. An object is read
 * only when an upper bound of its size from its byte range is over the
 * limit, so the check costs no read for objects far below it.
 */
function checkAloneSizes(
  version: SpooledVersion,
  order: Int32Array,
  lastItem: Int32Array,
  limits: {
    maxBytes: number;
    encoding: ChunkEncoding;
    markings: Map<number, { bytes: number }>;
    objectMarkingKey: number;
    authorBytes: number;
  },
): void {
  const { maxBytes, encoding, markings } = limits;
  const envelope =
    Math.max(encoding.envelopeBytes(version.bundleId), encoding.envelopeBytes(chunkBundleId(version.bundleId, 1))) + limits.authorBytes;

  for (const [id, marking] of markings) {
    if (envelope + marking.bytes + 1 > maxBytes) {
      throw new PushLimitError(
        version.versionId,
        `marking definition ${version.scan.strings[id]} alone needs ${marking.bytes + 1} bytes with the author, more than the ${maxBytes}-byte push limit: raise CONNECTOR_PUSH_MAX_MB`,
      );
    }
  }

  const { start, end, idOf } = version.scan;
  const scratch: number[] = [];
  for (let index = 0; index < order.length; index++) {
    const item = order[index]!;
    const textItem = lastItem[idOf[item]!]!;
    version.markingRefs(item, limits.objectMarkingKey, scratch);
    let markingBytes = 0;
    for (const id of scratch) {
      markingBytes += markings.has(id) ? markings.get(id)!.bytes + 1 : 0;
    }
    const streamable = version.streamable(textItem);
    const bound = streamable
      ? streamedPieceBound(version, textItem, encoding) + 1
      : encoding.maxGrowth * (TEXT_GROWTH * (end[textItem]! - start[textItem]!) + AUTHOR_REF_BYTES) + 1;
    if (envelope + markingBytes + bound <= maxBytes) {
      continue;
    }
    const exact = streamable ? streamedPieceBytes(version, textItem, encoding) : encoding.bytes(encoding.piece(version.text(textItem)));
    const extra = exact + 1 + markingBytes;
    if (envelope + extra > maxBytes) {
      throw new PushLimitError(
        version.versionId,
        `object ${version.id(item)} alone needs ${extra} bytes with the author and its markings, more than the ${maxBytes}-byte push limit: raise CONNECTOR_PUSH_MAX_MB`,
      );
    }
  }
}

// Returns the bytes of a streamable item's piece in `encoding`.
function streamedPieceBytes(version: SpooledVersion, item: number, encoding: ChunkEncoding): number {
  const bytes = encoding.streamedBytes(version.streamedLength(item), version.streamedEscapes(item));
  return encoding.asciiOnly && version.hasNonAscii(item) ? bytes + version.asciiExtraBytes(item) : bytes;
}

// Returns an upper bound of streamedPieceBytes without reading the item: a
// byte that is not ASCII adds at most 6 bytes, as an invalid byte becomes
// a 7-byte escape. Counting the exact bytes of the 7,260 such items of the
// 200 MB version of bench/ read 40 MB again before the first push.
function streamedPieceBound(version: SpooledVersion, item: number, encoding: ChunkEncoding): number {
  const bytes = encoding.streamedBytes(version.streamedLength(item), version.streamedEscapes(item));
  if (!encoding.asciiOnly || !version.hasNonAscii(item)) {
    return bytes;
  }
  return bytes + (UNICODE_ESCAPE_BYTES - 1) * (version.scan.end[item]! - version.scan.start[item]!);
}

/**
 * Cuts a spooled version into bundles whose JSON is at most `maxBytes`, as
 * {@linkcode planChunks} plans them, and returns each one's JSON text.
 * Raises BundleError when a single object is larger than the limit.
 */
export function* chunkSpooledVersion(version: SpooledVersion, maxBytes: number): Generator<BundleChunk> {
  for (const plan of planChunks(version, maxBytes, BUNDLE_JSON)) {
    const texts = plan.pieces.map((piece) => (typeof piece === "number" ? version.text(piece) : piece));
    yield { json: wrap(plan.bundleId, texts), objects: plan.pieces.length };
  }
}

/**
 * Orders items so that what an item references within `items` comes before
 * it (depth-first post-order, reference cycles cut), as `dependencyOrder`
 * in bundle.ts does. `lastItem` maps a string index to the last item with
 * that id. Returns one item per id.
 */
export function dependencyOrder(version: SpooledVersion, items: readonly number[], lastItem: Int32Array): Int32Array {
  const { idOf, recordStart } = version.scan;
  const state = new Uint8Array(lastItem.length);
  const ordered = new Int32Array(items.length);
  let count = 0;

  // An explicit stack, because reference chains in large versions can be
  // deep: each frame is an item and its reference cursor.
  const stackItems: number[] = [];
  const stackPositions: number[] = [];
  const stackIndexes: number[] = [];
  const cursor = { position: 0, index: 0 };
  const push = (item: number) => {
    stackItems.push(item);
    stackPositions.push(recordStart[item]!);
    stackIndexes.push(0);
  };
  for (let index = 0; index < items.length; index++) {
    const root = items[index]!;
    if (state[idOf[root]!] !== 0) {
      continue;
    }
    state[idOf[root]!] = 1;
    push(root);
    while (stackItems.length > 0) {
      const top = stackItems.length - 1;
      cursor.position = stackPositions[top]!;
      cursor.index = stackIndexes[top]!;
      const ref = version.nextRef(stackItems[top]!, cursor);
      stackPositions[top] = cursor.position;
      stackIndexes[top] = cursor.index;
      if (ref >= 0) {
        const target = lastItem[ref]!;
        if (target >= 0 && state[ref] === 0) {
          state[ref] = 1;
          push(target);
        }
        continue;
      }
      ordered[count++] = stackItems.pop()!;
      stackPositions.pop();
      stackIndexes.pop();
    }
  }
  return ordered.subarray(0, count);
}

// Returns the length of the record at `p`, in numbers.
function recordSize(records: Int32Array, p: number): number {
  const type = records[p]!;
  if (type === Rec.topRef) {
    return 3;
  }
  return type === Rec.topRefs ? 3 + records[p + 2]! : 2;
}

function addUnique(values: number[], value: number): void {
  if (value >= 0 && !values.includes(value)) {
    values.push(value);
  }
}

function lastTopRef(scan: ScannedBundle, item: number, key: number): number {
  const { records } = scan;
  let value = MISSING;
  let p = scan.recordStart[item]!;
  const end = scan.recordEnd[item]!;
  while (p < end) {
    const type = records[p]!;
    if (type === Rec.topRef) {
      if (records[p + 1] === key) {
        value = records[p + 2]!;
      }
      p += 3;
    } else if (type === Rec.topRefs) {
      p += 3 + records[p + 2]!;
    } else {
      p += 2;
    }
  }
  return value;
}

// Returns what `typeof` gives for a parsed JSON value of this kind.
function typeofName(kind: number): string {
  if (kind === JsonKind.string) {
    return "string";
  }
  if (kind === JsonKind.number) {
    return "number";
  }
  if (kind === JsonKind.true || kind === JsonKind.false) {
    return "boolean";
  }
  return "object";
}

/** Returns the id of a version's bundle number `index`, the same as chunkVersion's. */
export function chunkBundleId(bundleId: string, index: number): string {
  return index === 0 ? bundleId : "bundle--" + uuid5(OPENCTI_NAMESPACE, `${bundleId}/${index}`);
}

/** Returns the JSON text of a bundle with these object texts, as chunkVersion writes it. */
export function wrap(bundleId: string, parts: string[]): string {
  return `{"type":"bundle","id":${JSON.stringify(bundleId)},"spec_version":"2.1","objects":[${parts.join(",")}]}`;
}

/** The parts of a `stixBundlePush` request besides the bundle. */
export interface PushRequestFields {
  /** GraphQL document of the mutation, with `$connectorId`, `$bundle` and `$workId`. */
  query: string;
  connectorId: string;
  workId: string;
}

/**
 * Returns the encoding of `stixBundlePush` requests: the GraphQL JSON body
 * `{"query", "variables": {"connectorId", "bundle", "workId"}}` with the
 * bundle as an escaped JSON string, measured exactly in bytes, so that
 * {@linkcode planChunks} bounds the whole request body.
 */
export function pushRequestEncoding(fields: PushRequestFields): ChunkEncoding {
  const outside = Buffer.byteLength(requestPrefix(fields)) + Buffer.byteLength(requestSuffix(fields));
  return {
    piece: (text) => escapeJson(asciiJson(text)),
    bytes: (piece) => Buffer.byteLength(piece),
    // Escaping puts a backslash before each `"` and `\`.
    streamedBytes: (length, escapes) => length + escapes,
    envelopeBytes: (bundleId) => outside + Buffer.byteLength(escapeJson(asciiJson(bundlePrefix(bundleId)))) + BUNDLE_SUFFIX.length,
    // A character of 2 UTF-8 bytes becomes `\\u00e9`, 7 bytes, and one of 4
    // bytes becomes two such escapes. Escaping doubles `"` and `\`. The
    // texts contain no raw control characters (invalid in JSON strings).
    maxGrowth: 3.5,
    asciiOnly: true,
  };
}

/**
 * A reusable buffer for one `stixBundlePush` request body at a time,
 * written from a plan of {@linkcode pushRequestEncoding}. It grows to the
 * largest body written and is reused, so sending a version does not leave a
 * request-sized buffer behind per bundle.
 */
export class PushRequestBuffer {
  #memory: Buffer;

  /** Allocates `capacity` bytes now, such as the request limit, so that writes need no larger buffer. */
  constructor(capacity = 0) {
    this.#memory = Buffer.allocUnsafe(capacity);
  }

  /**
   * Writes the request body of `plan` and returns a view of it, valid until
   * the next write. The objects sent as served are read from `version`.
   */
  write(plan: ChunkPlan, fields: PushRequestFields, version: SpooledVersion): Uint8Array {
    if (this.#memory.length < plan.bytes) {
      this.#memory = Buffer.allocUnsafe(plan.bytes);
    }
    const memory = this.#memory;
    let at = memory.write(requestPrefix(fields), 0);
    at += memory.write(escapeJson(asciiJson(bundlePrefix(plan.bundleId))), at);
    for (let index = 0; index < plan.pieces.length; index++) {
      const piece = plan.pieces[index]!;
      if (index > 0) {
        memory[at++] = 0x2c;
      }
      at = typeof piece === "number" ? version.writeStreamed(piece, memory, at, true) : at + memory.write(piece, at);
    }
    at += memory.write(BUNDLE_SUFFIX, at);
    at += memory.write(requestSuffix(fields), at);
    if (at !== plan.bytes) {
      throw new Error(`stixBundlePush body of bundle ${plan.bundleId} is ${at} bytes, but ${plan.bytes} were planned`);
    }
    return memory.subarray(0, at);
  }
}

const BUNDLE_SUFFIX = "]}";

function requestPrefix(fields: PushRequestFields): string {
  return asciiJson(`{"query":${JSON.stringify(fields.query)},"variables":{"connectorId":${JSON.stringify(fields.connectorId)},"bundle":"`);
}

function requestSuffix(fields: PushRequestFields): string {
  return asciiJson(`","workId":${JSON.stringify(fields.workId)}}}`);
}

function bundlePrefix(bundleId: string): string {
  return `{"type":"bundle","id":${JSON.stringify(bundleId)},"spec_version":"2.1","objects":[`;
}

// The content of JSON.stringify(text) between its quotes.
function escapeJson(text: string): string {
  return JSON.stringify(text).slice(1, -1);
}

// Returns JSON text with each character that is not ASCII written as a
// `\uXXXX` escape, as Python's json.dumps does by default, so a request
// body is ASCII. A platform then parses it as a string of 1-byte
// characters: a 9.6 MB stixBundlePush body with 722 other characters
// parsed in about 21 ms instead of 40 ms, body and bundle, in Bun 1.4.5.
// Such characters appear only inside JSON strings, so each escape is valid.
function asciiJson(text: string): string {
  return text.replace(NON_ASCII, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

const NON_ASCII = /[\u0080-\uffff]/g;

// The three copies below take JSON text bytes as served, whose strings hold
// no raw control characters (the scanner rejects them), so a `"` or `\` is
// the only byte that escaping as a JSON string content changes. Bytes of
// invalid UTF-8 are copied as they are, and the platform's decoder replaces
// them with U+FFFD as decoding them here would.

// Copies the first `length` bytes of `source` into `target` at `at`.
function copyBytes(source: Uint8Array, length: number, target: Uint8Array, at: number): number {
  target.set(source.subarray(0, length), at);
  return at + length;
}

// Copies the first `length` bytes of `source` with a backslash before each `"` and `\`.
function copyEscaped(source: Uint8Array, length: number, target: Uint8Array, at: number): number {
  let position = at;
  for (let k = 0; k < length; k++) {
    const c = source[k]!;
    if (c === 0x22 || c === 0x5c) {
      target[position++] = 0x5c;
    }
    target[position++] = c;
  }
  return position;
}

// Copies the first `length` bytes of `source` escaped, each byte that is not
// ASCII read as UTF-8 and written as `\\uXXXX`, and without the whitespace
// between tokens when `minify` is set.
function copyAsciiEscaped(source: Uint8Array, length: number, target: Uint8Array, at: number, minify: boolean): number {
  let position = at;
  let inString = false;
  let afterBackslash = false;
  let k = 0;
  while (k < length) {
    const c = source[k]!;
    if (c >= 0x80) {
      const read = readUtf8(source, k, length);
      const codePoint = Math.floor(read / 8);
      if (codePoint >= 0x10000) {
        position = writeUnicodeEscape(0xd800 + ((codePoint - 0x10000) >> 10), target, position);
        position = writeUnicodeEscape(0xdc00 + ((codePoint - 0x10000) & 0x3ff), target, position);
      } else {
        position = writeUnicodeEscape(codePoint, target, position);
      }
      k += read % 8;
      afterBackslash = false;
      continue;
    }
    k++;
    if (inString) {
      if (afterBackslash) {
        afterBackslash = false;
      } else if (c === 0x5c) {
        afterBackslash = true;
      } else if (c === 0x22) {
        inString = false;
      }
    } else if (minify && (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09)) {
      continue;
    } else if (c === 0x22) {
      inString = true;
    }
    if (c === 0x22 || c === 0x5c) {
      target[position++] = 0x5c;
    }
    target[position++] = c;
  }
  return position;
}

// Returns the bytes that copyAsciiEscaped adds for the bytes of `source`
// that are not ASCII, against copying them escaped as they are.
function countAsciiExtra(source: Uint8Array): number {
  let extra = 0;
  let k = 0;
  while (k < source.length) {
    if (source[k]! < 0x80) {
      k++;
      continue;
    }
    const read = readUtf8(source, k, source.length);
    const units = Math.floor(read / 8) >= 0x10000 ? 2 : 1;
    extra += units * UNICODE_ESCAPE_BYTES - (read % 8);
    k += read % 8;
  }
  return extra;
}

// Bytes of `\\uXXXX`, an escape inside escaped JSON string content.
const UNICODE_ESCAPE_BYTES = 7;
const HEX_DIGITS = Buffer.from("0123456789abcdef");

// Writes `\\uXXXX` for the UTF-16 code unit `unit`.
function writeUnicodeEscape(unit: number, target: Uint8Array, at: number): number {
  target[at] = 0x5c;
  target[at + 1] = 0x5c;
  target[at + 2] = 0x75;
  target[at + 3] = HEX_DIGITS[(unit >> 12) & 0xf]!;
  target[at + 4] = HEX_DIGITS[(unit >> 8) & 0xf]!;
  target[at + 5] = HEX_DIGITS[(unit >> 4) & 0xf]!;
  target[at + 6] = HEX_DIGITS[unit & 0xf]!;
  return at + UNICODE_ESCAPE_BYTES;
}

// Reads the UTF-8 sequence whose first byte, 0x80 or above, is at `k`, as
// the UTF-8 decoder of the WHATWG Encoding Standard (TextDecoder) does. An
// invalid or cut sequence is one U+FFFD, and the byte that breaks it is
// read again. Returns the code point times 8 plus the bytes read (1 to 4).
function readUtf8(source: Uint8Array, k: number, end: number): number {
  const first = source[k]!;
  let needed: number;
  let codePoint: number;
  let lower = 0x80;
  let upper = 0xbf;
  if (first >= 0xc2 && first <= 0xdf) {
    needed = 1;
    codePoint = first & 0x1f;
  } else if (first >= 0xe0 && first <= 0xef) {
    lower = first === 0xe0 ? 0xa0 : 0x80;
    upper = first === 0xed ? 0x9f : 0xbf;
    needed = 2;
    codePoint = first & 0x0f;
  } else if (first >= 0xf0 && first <= 0xf4) {
    lower = first === 0xf0 ? 0x90 : 0x80;
    upper = first === 0xf4 ? 0x8f : 0xbf;
    needed = 3;
    codePoint = first & 0x07;
  } else {
    return REPLACEMENT * 8 + 1;
  }
  for (let seen = 1; seen <= needed; seen++) {
    const byte = k + seen < end ? source[k + seen]! : -1;
    if (byte < lower || byte > upper) {
      return REPLACEMENT * 8 + seen;
    }
    lower = 0x80;
    upper = 0xbf;
    codePoint = (codePoint << 6) | (byte & 0x3f);
  }
  return codePoint * 8 + needed + 1;
}

const REPLACEMENT = 0xfffd;

// Copies the first `length` bytes of `source` without the whitespace between
// tokens, escaped when `escape` is set.
function copyMinified(source: Uint8Array, length: number, target: Uint8Array, at: number, escape: boolean): number {
  let position = at;
  let inString = false;
  let afterBackslash = false;
  for (let k = 0; k < length; k++) {
    const c = source[k]!;
    if (inString) {
      if (afterBackslash) {
        afterBackslash = false;
      } else if (c === 0x5c) {
        afterBackslash = true;
      } else if (c === 0x22) {
        inString = false;
      }
    } else if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
      continue;
    } else if (c === 0x22) {
      inString = true;
    }
    if (escape && (c === 0x22 || c === 0x5c)) {
      target[position++] = 0x5c;
    }
    target[position++] = c;
  }
  return position;
}
