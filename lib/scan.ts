/**
 * A streaming scanner of STIX 2.1 bundle JSON. It checks the JSON syntax of
 * the bytes as they arrive. For each item of the bundle's `objects` array,
 * it records the byte range, `type`, `id` and the references the item
 * makes, without building the objects. Memory therefore grows with the
 * number of objects and references, not with the bytes of each object.
 */
import { OPENCTI_EXTENSION_ID } from "./splitter.ts";

/** Kind of a JSON value, as recorded for the bundle and its items. */
export const JsonKind = {
  object: 0,
  array: 1,
  string: 2,
  number: 3,
  true: 4,
  false: 5,
  null: 6,
} as const;

/**
 * Record types in {@linkcode ScannedBundle.records}. Each record starts with
 * its type, and the records of one item are in document order:
 *
 * - `topRef` `[1, key, target]`: a top-level `*_ref` property. `target` is a
 *   string index, {@linkcode NULL_VALUE} for null or {@linkcode OTHER_VALUE}
 *   for any other value.
 * - `topRefs` `[2, key, n, t1 … tn]`: a top-level `*_refs` array, with
 *   {@linkcode OTHER_VALUE} for an item that is not a string.
 * - `topRefsOther` `[3, key]`: a top-level `*_refs` property that is neither
 *   an array nor null.
 * - `topRefsNull` `[4, key]`: a top-level `*_refs` property that is null.
 * - `nested` `[5, target]`: a string under a `*_ref` key, or in a `*_refs`
 *   array, below the top level, found the way `referencedIds` in bundle.ts
 *   walks an object.
 * - `granular` `[6, target]`: the `marking_ref` of a `granular_markings`
 *   entry. It is also a nested reference.
 * - `openctiId` `[7, value]`: the top-level `x_opencti_id` string.
 * - `extensionId` `[8, value]`: the `id` string of the OpenCTI extension in
 *   `extensions`.
 */
export const Rec = {
  topRef: 1,
  topRefs: 2,
  topRefsOther: 3,
  topRefsNull: 4,
  nested: 5,
  granular: 6,
  openctiId: 7,
  extensionId: 8,
} as const;

// NOTE: a member name that appears twice in one object leaves the records
// of both values. Readers that assign top-level *_ref and *_refs keys in
// order get JSON.parse's result (first position, last value), but the
// dependency order also follows the first value's references, and an
// `extensions` member that a later one replaces still gives its id.

/** `target` of a `topRef` record whose value is null. */
export const NULL_VALUE = -1;
/** `target` of a reference whose value is not a string (and not a null `*_ref`). */
export const OTHER_VALUE = -2;

/** Item flag: the item is an object with at least one member. */
export const FLAG_MEMBERS = 1;
/** Item flag: a string of the item has a byte that is not ASCII (0x80 or above). */
export const FLAG_NON_ASCII = 2;

/** Index of one bundle, returned by {@linkcode BundleScanner.end}. */
export interface ScannedBundle {
  /** Bytes scanned, a leading UTF-8 byte order mark included. */
  bytes: number;
  /** Kind of the top-level value. */
  topKind: number;
  /** Kind of the bundle's `type` value, or -1 when missing (or the top level is not an object). */
  typeKind: number;
  /** The `type` string, when it is one. */
  type: string | undefined;
  /** Byte range of the `type` value, to quote it in a message. */
  typeRange: [number, number];
  /** The bundle's `id`, when it is a string. */
  id: string | undefined;
  /** Kind of the `objects` value, or -1 when missing. */
  objectsKind: number;
  /** Items of `objects`. */
  count: number;
  /** Interned strings: ids, types, reference targets and key names. */
  strings: string[];
  /** Byte offset of each item's first byte. */
  start: Float64Array;
  /** Byte offset just after each item's last byte. */
  end: Float64Array;
  /** {@linkcode JsonKind} of each item. */
  kind: Uint8Array;
  /** String index of each item's `type`, -1 when missing, {@linkcode OTHER_VALUE} when not a string. */
  typeOf: Int32Array;
  /** String index of each item's `id`, -1 when missing, {@linkcode OTHER_VALUE} when not a string. */
  idOf: Int32Array;
  /** Start of each item's records in `records`. */
  recordStart: Int32Array;
  /** End of each item's records in `records`. */
  recordEnd: Int32Array;
  /** Item flags such as {@linkcode FLAG_MEMBERS}. */
  flags: Uint8Array;
  /** Bytes of whitespace between the tokens of each item, which minifying it removes. */
  whitespace: Int32Array;
  /**
   * Number of `"` and `\` bytes in each item, which escaping the item's
   * text as a JSON string doubles, so that its escaped size is known
   * without reading it.
   */
  escapes: Int32Array;
  records: Int32Array;
}

/** The bytes are not JSON, or they end before the JSON value does. */
export class JsonScanError extends Error {
  override name = "JsonScanError";
  /** Byte offset of the problem; the length of the input when it was cut short. */
  readonly offset: number;
  /** True when the input ended inside the value. */
  readonly truncated: boolean;

  constructor(message: string, offset: number, truncated: boolean) {
    super(message);
    this.offset = offset;
    this.truncated = truncated;
  }
}

// Parser states.
const S_START = 0;
const S_VALUE = 1;
const S_ARRAY_FIRST = 2;
const S_OBJECT_FIRST = 3;
const S_KEY = 4;
const S_COLON = 5;
const S_AFTER = 6;
const S_END = 7;
const S_STRING = 8;
const S_ESCAPE = 9;
const S_UNICODE = 10;
const S_NUMBER = 11;
const S_LITERAL = 12;
const S_BOM = 13;
const S_FAILED = 14;

// Number sub-states; the ones marked accepting may end the number.
const N_MINUS = 0;
const N_ZERO = 1; // accepting
const N_INT = 2; // accepting
const N_DOT = 3;
const N_FRAC = 4; // accepting
const N_EXP = 5;
const N_EXP_SIGN = 6;
const N_EXP_DIGITS = 7; // accepting

// Container roles: what the scanner records inside a container.
const R_PLAIN = 0;
const R_BUNDLE = 1;
const R_OBJECTS = 2;
const R_ITEM = 3;
const R_COLLECT = 4;
const R_TOP_REFS = 5;
const R_NESTED_REFS = 6;
const R_EXTENSIONS = 7;
const R_OPENCTI_EXT = 8;
const R_GRANULAR = 9;
const R_GRANULAR_ITEM = 10;

// Value roles: what a value means where it sits, set by its key or its array.
const V_NONE = 0;
const V_COLLECT = 1;
const V_NESTED_REF = 2;
const V_NESTED_REFS = 3;
const V_NESTED_REFS_ITEM = 4;
const V_TOP_REF = 5;
const V_TOP_REFS = 6;
const V_TOP_REFS_ITEM = 7;
const V_ITEM_TYPE = 8;
const V_ITEM_ID = 9;
const V_OPENCTI_ID = 10;
const V_EXTENSIONS = 11;
const V_OPENCTI_EXT = 12;
const V_EXT_ID = 13;
const V_GRANULAR = 14;
const V_GRANULAR_ITEM = 15;
const V_GRANULAR_MREF = 16;
const V_BUNDLE_TYPE = 17;
const V_BUNDLE_ID = 18;
const V_BUNDLE_OBJECTS = 19;
const V_ITEM = 20;
const V_TOP = 21;

// Bytes that end the plain run of a string: the quote, the backslash, the
// control characters, which JSON strings may not contain raw, and the bytes
// that are not ASCII, which set FLAG_NON_ASCII.
const STRING_STOP = new Uint8Array(256);
STRING_STOP[0x22] = 1;
STRING_STOP[0x5c] = 1;
STRING_STOP.fill(1, 0, 0x20);
STRING_STOP.fill(1, 0x80, 0x100);

// Values whose string content the scanner keeps.
const CAPTURED = new Uint8Array(22);
for (const role of [V_NESTED_REF, V_NESTED_REFS_ITEM, V_TOP_REF, V_TOP_REFS_ITEM, V_ITEM_TYPE, V_ITEM_ID, V_OPENCTI_ID, V_EXT_ID, V_GRANULAR_MREF, V_BUNDLE_TYPE, V_BUNDLE_ID]) {
  CAPTURED[role] = 1;
}

const encoder = new TextEncoder();
const KEY_TYPE = encoder.encode("type");
const KEY_ID = encoder.encode("id");
const KEY_OBJECTS = encoder.encode("objects");
const KEY_OPENCTI_ID = encoder.encode("x_opencti_id");
const KEY_EXTENSIONS = encoder.encode("extensions");
const KEY_GRANULAR = encoder.encode("granular_markings");
const KEY_MARKING_REF = encoder.encode("marking_ref");
const KEY_OPENCTI_EXT = encoder.encode(OPENCTI_EXTENSION_ID);

const LITERALS = [encoder.encode("true"), encoder.encode("false"), encoder.encode("null")];
const LITERAL_FIRST_BYTES = LITERALS.map((literal) => literal[0]!);
const LITERAL_KINDS = [JsonKind.true, JsonKind.false, JsonKind.null];

const UTF8_BOM = [0xef, 0xbb, 0xbf];

/**
 * Scans one bundle, fed chunk by chunk with {@linkcode write}, then
 * {@linkcode end}. The syntax check is RFC 8259 JSON as `JSON.parse` reads
 * it (a leading UTF-8 byte order mark is skipped, as `Response.text()` does),
 * except that invalid UTF-8 is not rejected, because decoding replaces it.
 *
 * @throws {JsonScanError} from `write` at the first byte that cannot be
 * JSON, and from `end` when the input stops inside the value.
 */
export class BundleScanner {
  readonly #fastItems: boolean;
  #state = S_START;
  #offset = 0;

  // Open containers, innermost last.
  #depth = 0;
  #isArray: number[] = [];
  #role: number[] = [];
  /** Value role of each container, handled again when it closes. */
  #openedAs: number[] = [];
  /** Role of the value after the current key, for object containers. */
  #keyRole: number[] = [];
  /** String index of the current key, for top-level keys of items. */
  #keyString: number[] = [];
  /** Position of the count in `records`, for top-level `*_refs` arrays. */
  #countAt: number[] = [];

  // The string or number being read.
  #stringIsKey = false;
  #stringRole = V_NONE;
  #capture = false;
  #captureFrom = 0;
  /** Bytes of a captured string that started in an earlier chunk. */
  #carry = new Uint8Array(256);
  #carryLength = 0;
  #escaped = false;
  #unicodeLeft = 0;
  #numberState = N_MINUS;
  #literal: Uint8Array = LITERALS[0]!;
  #literalIndex = 0;
  #literalKind = 0;
  #bomIndex = 0;

  // Results.
  #topKind = -1;
  #typeKind = -1;
  #type: string | undefined;
  #typeRange: [number, number] = [0, 0];
  #id: string | undefined;
  #objectsKind = -1;
  #count = 0;
  #capacity = 1024;
  #start = new Float64Array(this.#capacity);
  #end = new Float64Array(this.#capacity);
  #kind = new Uint8Array(this.#capacity);
  #itemType = new Int32Array(this.#capacity);
  #itemId = new Int32Array(this.#capacity);
  #recordStart = new Int32Array(this.#capacity);
  #recordEnd = new Int32Array(this.#capacity);
  #flags = new Uint8Array(this.#capacity);
  #whitespace = new Int32Array(this.#capacity);
  #escapes = new Int32Array(this.#capacity);
  #records = new Int32Array(8192);
  #recordCount = 0;
  #strings: string[] = [];
  /**
   * Open-addressing table of ASCII strings: each slot is the string's hash
   * and its index + 1, side by side, so that a probe reads one cache line.
   */
  #asciiTable = new Int32Array(2 << 12);
  #asciiCount = 0;
  /** Strings with other characters, which are rare in ids. */
  #otherIndex = new Map<string, number>();
  /** Depth of the open item's container, 0 when no item is open. */
  #itemDepth = 0;

  // Counts of the item that #fastItem reads.
  #fastEscapes = 0;
  #fastWhitespace = 0;
  /** String index of the top-level `*_ref` or `*_refs` key whose value #fastItem reads. */
  #fastKey = 0;

  /**
   * Creates a scanner. `fastItems: false` reads every item with the byte
   * state machine alone, which tests compare with the default.
   */
  constructor(options: { fastItems?: boolean } = {}) {
    this.#fastItems = options.fastItems ?? true;
  }

  /** Scans the next bytes. Raises JsonScanError at the first byte that cannot be JSON. */
  write(chunk: Uint8Array): void {
    if (this.#state === S_FAILED) {
      throw new JsonScanError("the scanner already failed", this.#offset, false);
    }
    const buffer = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    try {
      this.#scan(buffer);
    } catch (error) {
      this.#state = S_FAILED;
      throw error;
    }
    this.#offset += buffer.length;
  }

  /**
   * Checks that the input held one whole JSON value and returns the index.
   * Raises JsonScanError (`truncated`) when the input stopped inside it.
   */
  end(): ScannedBundle {
    if (this.#state === S_NUMBER && this.#depth === 0 && isAccepting(this.#numberState)) {
      this.#state = S_END;
    }
    if (this.#state !== S_END) {
      const where = this.#offset === 0 ? "is empty" : `ends at byte ${this.#offset} before the JSON value is complete`;
      this.#state = S_FAILED;
      throw new JsonScanError(`the JSON text ${where}`, this.#offset, true);
    }
    const count = this.#count;
    // Only the scan interns strings, and these tables are a large share of the index.
    this.#asciiTable = new Int32Array(0);
    this.#otherIndex = new Map();
    const result: ScannedBundle = {
      bytes: this.#offset,
      topKind: this.#topKind,
      typeKind: this.#typeKind,
      type: this.#type,
      typeRange: this.#typeRange,
      id: this.#id,
      objectsKind: this.#objectsKind,
      count,
      strings: this.#strings,
      // Views of the used part: a copy would need the whole index twice at
      // this moment, and growing by 1.5 keeps the spare capacity below a third.
      start: this.#start.subarray(0, count),
      end: this.#end.subarray(0, count),
      kind: this.#kind.subarray(0, count),
      typeOf: this.#itemType.subarray(0, count),
      idOf: this.#itemId.subarray(0, count),
      recordStart: this.#recordStart.subarray(0, count),
      recordEnd: this.#recordEnd.subarray(0, count),
      flags: this.#flags.subarray(0, count),
      whitespace: this.#whitespace.subarray(0, count),
      escapes: this.#escapes.subarray(0, count),
      records: this.#records.subarray(0, this.#recordCount),
    };
    this.#releaseArrays();
    return result;
  }

  // Drops the scanner's references to the arrays that the result now owns.
  #releaseArrays(): void {
    this.#capacity = 0;
    this.#start = new Float64Array(0);
    this.#end = new Float64Array(0);
    this.#kind = new Uint8Array(0);
    this.#itemType = new Int32Array(0);
    this.#itemId = new Int32Array(0);
    this.#recordStart = new Int32Array(0);
    this.#recordEnd = new Int32Array(0);
    this.#flags = new Uint8Array(0);
    this.#whitespace = new Int32Array(0);
    this.#escapes = new Int32Array(0);
    this.#records = new Int32Array(0);
    this.#strings = [];
  }

  #scan(buffer: Buffer): void {
    const length = buffer.length;
    let i = 0;
    let state = this.#state;

    if (this.#capture && state >= S_STRING && state <= S_UNICODE) {
      this.#captureFrom = 0;
    }

    while (i < length) {
      switch (state) {
        case S_STRING: {
          // The hot loop: most bytes of a bundle are inside strings. One
          // table load per byte is about 12% faster than three comparisons.
          let j = i;
          while (j < length && STRING_STOP[buffer[j]!] === 0) {
            j++;
          }
          if (j === length) {
            i = j;
            break;
          }
          const c = buffer[j]!;
          if (c === 0x22) {
            if (this.#itemDepth !== 0) {
              // The opening and the closing quote.
              this.#escapes[this.#count - 1]! += 2;
            }
            const isKey = this.#stringIsKey;
            this.#endString(buffer, j);
            i = j + 1;
            state = isKey ? S_COLON : this.#afterValueState();
            break;
          }
          if (c === 0x5c) {
            if (this.#itemDepth !== 0) {
              this.#escapes[this.#count - 1]! += 1;
            }
            this.#escaped = true;
            i = j + 1;
            state = S_ESCAPE;
            break;
          }
          if (c >= 0x80) {
            if (this.#itemDepth !== 0) {
              this.#flags[this.#count - 1]! |= FLAG_NON_ASCII;
            }
            i = j + 1;
            break;
          }
          throw this.#invalid(buffer, j, "inside a string, where control characters must be written as escapes such as \\u0009");
        }

        case S_ESCAPE: {
          const c = buffer[i]!;
          if (c === 0x75) {
            this.#unicodeLeft = 4;
            state = S_UNICODE;
          } else if (c === 0x22 || c === 0x5c) {
            if (this.#itemDepth !== 0) {
              this.#escapes[this.#count - 1]! += 1;
            }
            state = S_STRING;
          } else if (c === 0x2f || c === 0x62 || c === 0x66 || c === 0x6e || c === 0x72 || c === 0x74) {
            state = S_STRING;
          } else {
            throw this.#unexpected(buffer, i, "an escape character after the backslash (\" \\ / b f n r t or u)");
          }
          i++;
          break;
        }

        case S_UNICODE: {
          const c = buffer[i]!;
          if (!isHexDigit(c)) {
            throw this.#unexpected(buffer, i, "a hex digit of a \\u escape");
          }
          i++;
          if (--this.#unicodeLeft === 0) {
            state = S_STRING;
          }
          break;
        }

        case S_NUMBER: {
          const c = buffer[i]!;
          const next = nextNumberState(this.#numberState, c);
          if (next >= 0) {
            this.#numberState = next;
            i++;
            break;
          }
          if (!isAccepting(this.#numberState)) {
            throw this.#unexpected(buffer, i, "a digit of the number");
          }
          // The byte after the number is read again in the next state.
          state = this.#afterValueState();
          this.#endScalar(this.#offset + i);
          break;
        }

        case S_LITERAL: {
          const c = buffer[i]!;
          if (c !== this.#literal[this.#literalIndex]) {
            throw this.#unexpected(buffer, i, `the next letter of ${Buffer.from(this.#literal).toString("latin1")}`);
          }
          i++;
          if (++this.#literalIndex === this.#literal.length) {
            state = this.#afterValueState();
            this.#endScalar(this.#offset + i);
          }
          break;
        }

        case S_BOM: {
          if (buffer[i] !== UTF8_BOM[this.#bomIndex]) {
            throw this.#unexpected(buffer, i, "the rest of a UTF-8 byte order mark");
          }
          i++;
          if (++this.#bomIndex === UTF8_BOM.length) {
            state = S_VALUE;
          }
          break;
        }

        case S_START: {
          if (buffer[i] === UTF8_BOM[0]) {
            state = S_BOM;
          } else {
            state = S_VALUE;
          }
          break;
        }

        default: {
          // Structural states: skip whitespace, then read one token.
          let c = buffer[i]!;
          if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
            const from = i;
            i++;
            while (i < length) {
              c = buffer[i]!;
              if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
                break;
              }
              i++;
            }
            if (this.#itemDepth !== 0) {
              this.#whitespace[this.#count - 1]! += i - from;
            }
            if (i === length) {
              break;
            }
          }
          if (c === 0x7b && this.#fastItems && (state === S_VALUE || state === S_ARRAY_FIRST) && this.#depth > 0 && this.#role[this.#depth - 1] === R_OBJECTS) {
            const end = this.#fastItem(buffer, i);
            if (end > 0) {
              i = end;
              state = S_AFTER;
              break;
            }
          }
          state = this.#structural(buffer, i, c, state);
          i++;
          break;
        }
      }
    }

    if (this.#capture && state >= S_STRING && state <= S_UNICODE) {
      this.#appendCarry(buffer, this.#captureFrom, length);
    }
    this.#state = state;
  }

  // Reads one structural byte `c` at `i` in `state` and returns the next state.
  #structural(buffer: Buffer, i: number, c: number, state: number): number {
    switch (state) {
      case S_VALUE:
        return this.#beginValue(buffer, i, c);

      case S_ARRAY_FIRST:
        if (c === 0x5d) {
          return this.#closeContainer(i);
        }
        return this.#beginValue(buffer, i, c);

      case S_OBJECT_FIRST:
        if (c === 0x7d) {
          return this.#closeContainer(i);
        }
        if (c === 0x22) {
          return this.#beginKey(i);
        }
        throw this.#unexpected(buffer, i, "a member name or '}'");

      case S_KEY:
        if (c === 0x22) {
          return this.#beginKey(i);
        }
        throw this.#unexpected(buffer, i, "a member name");

      case S_COLON:
        if (c === 0x3a) {
          return S_VALUE;
        }
        throw this.#unexpected(buffer, i, "':'");

      case S_AFTER: {
        const d = this.#depth - 1;
        if (c === 0x2c) {
          return this.#isArray[d] === 1 ? S_VALUE : S_KEY;
        }
        if (c === (this.#isArray[d] === 1 ? 0x5d : 0x7d)) {
          return this.#closeContainer(i);
        }
        throw this.#unexpected(buffer, i, this.#isArray[d] === 1 ? "',' or ']'" : "',' or '}'");
      }

      case S_END:
        throw this.#unexpected(buffer, i, "the end of the input after the JSON value");

      default:
        throw new Error(`BundleScanner: unknown state ${state}`);
    }
  }

  // The role of a value that starts now, from its key or its array.
  #valueRole(): number {
    const d = this.#depth - 1;
    if (d < 0) {
      return V_TOP;
    }
    if (this.#isArray[d] === 0) {
      return this.#keyRole[d]!;
    }
    switch (this.#role[d]) {
      case R_COLLECT:
        return V_COLLECT;
      case R_OBJECTS:
        return V_ITEM;
      case R_TOP_REFS:
        return V_TOP_REFS_ITEM;
      case R_NESTED_REFS:
        return V_NESTED_REFS_ITEM;
      case R_GRANULAR:
        return V_GRANULAR_ITEM;
      default:
        return V_NONE;
    }
  }

  #beginValue(buffer: Buffer, i: number, c: number): number {
    const role = this.#valueRole();
    const at = this.#offset + i;

    if (c === 0x22) {
      this.#beginScalar(role, JsonKind.string, at);
      this.#stringIsKey = false;
      this.#stringRole = role;
      this.#startString(i, CAPTURED[role] === 1);
      return S_STRING;
    }
    if (c === 0x7b || c === 0x5b) {
      this.#openContainer(role, c === 0x5b, at);
      return c === 0x5b ? S_ARRAY_FIRST : S_OBJECT_FIRST;
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      this.#beginScalar(role, JsonKind.number, at);
      if (c === 0x2d) {
        this.#numberState = N_MINUS;
      } else if (c === 0x30) {
        this.#numberState = N_ZERO;
      } else {
        this.#numberState = N_INT;
      }
      return S_NUMBER;
    }
    const literal = LITERAL_FIRST_BYTES.indexOf(c);
    if (literal >= 0) {
      this.#literal = LITERALS[literal]!;
      this.#literalIndex = 1;
      this.#literalKind = LITERAL_KINDS[literal]!;
      this.#beginScalar(role, this.#literalKind, at);
      return S_LITERAL;
    }
    throw this.#unexpected(buffer, i, "a JSON value");
  }

  #beginKey(i: number): number {
    const d = this.#depth - 1;
    if (this.#depth === this.#itemDepth) {
      this.#flags[this.#count - 1]! |= FLAG_MEMBERS;
    }
    this.#stringIsKey = true;
    this.#startString(i, this.#role[d] !== R_PLAIN);
    return S_STRING;
  }

  #startString(i: number, capture: boolean): void {
    this.#capture = capture;
    this.#captureFrom = i + 1;
    this.#escaped = false;
    this.#carryLength = 0;
  }

  #appendCarry(buffer: Buffer, from: number, to: number): void {
    const needed = this.#carryLength + (to - from);
    if (needed > this.#carry.length) {
      const grown = new Uint8Array(Math.max(needed, this.#carry.length * 2));
      grown.set(this.#carry.subarray(0, this.#carryLength));
      this.#carry = grown;
    }
    this.#carry.set(buffer.subarray(from, to), this.#carryLength);
    this.#carryLength = needed;
  }

  // Records what a scalar means when it starts; strings are completed in #endString.
  #beginScalar(role: number, kind: number, at: number): void {
    switch (role) {
      case V_TOP:
        this.#topKind = kind;
        break;
      case V_ITEM:
        this.#beginItem(kind, at);
        break;
      case V_TOP_REF:
        if (kind !== JsonKind.string) {
          this.#push3(Rec.topRef, this.#keyString[this.#depth - 1]!, kind === JsonKind.null ? NULL_VALUE : OTHER_VALUE);
        }
        break;
      case V_TOP_REFS:
        this.#push2(kind === JsonKind.null ? Rec.topRefsNull : Rec.topRefsOther, this.#keyString[this.#depth - 1]!);
        break;
      case V_TOP_REFS_ITEM:
        if (kind !== JsonKind.string) {
          this.#pushTopRefsItem(OTHER_VALUE);
        }
        break;
      case V_ITEM_TYPE:
        this.#itemType[this.#count - 1] = kind === JsonKind.string ? -1 : OTHER_VALUE;
        break;
      case V_ITEM_ID:
        this.#itemId[this.#count - 1] = kind === JsonKind.string ? -1 : OTHER_VALUE;
        break;
      case V_BUNDLE_TYPE:
        this.#typeKind = kind;
        this.#type = undefined;
        this.#typeRange = [at, at];
        break;
      case V_BUNDLE_ID:
        this.#id = undefined;
        break;
      case V_BUNDLE_OBJECTS:
        this.#resetItems();
        this.#objectsKind = kind;
        break;
    }
  }

  // Completes a number or literal that ended just before byte `at`.
  #endScalar(at: number): void {
    const role = this.#valueRole();
    if (role === V_ITEM) {
      this.#end[this.#count - 1] = at;
    } else if (role === V_BUNDLE_TYPE) {
      this.#typeRange[1] = at;
    }
  }

  #endString(buffer: Buffer, close: number): void {
    if (!this.#capture) {
      if (!this.#stringIsKey) {
        this.#endScalar(this.#offset + close + 1);
      }
      return;
    }

    let source = buffer;
    let from = this.#captureFrom;
    let to = close;
    if (this.#carryLength > 0) {
      this.#appendCarry(buffer, this.#captureFrom, close);
      source = Buffer.from(this.#carry.buffer, 0, this.#carryLength);
      from = 0;
      to = this.#carryLength;
    }
    this.#capture = false;

    if (this.#stringIsKey) {
      this.#endKey(source, from, to);
      return;
    }

    const role = this.#stringRole;
    switch (role) {
      case V_NESTED_REF:
      case V_NESTED_REFS_ITEM:
        this.#push2(Rec.nested, this.#internBytes(source, from, to));
        break;
      case V_GRANULAR_MREF:
        this.#push2(Rec.granular, this.#internBytes(source, from, to));
        break;
      case V_TOP_REF:
        this.#push3(Rec.topRef, this.#keyString[this.#depth - 1]!, this.#internBytes(source, from, to));
        break;
      case V_TOP_REFS_ITEM:
        this.#pushTopRefsItem(this.#internBytes(source, from, to));
        break;
      case V_ITEM_TYPE:
        this.#itemType[this.#count - 1] = this.#internBytes(source, from, to);
        break;
      case V_ITEM_ID:
        this.#itemId[this.#count - 1] = this.#internBytes(source, from, to);
        break;
      case V_OPENCTI_ID:
        this.#push2(Rec.openctiId, this.#internBytes(source, from, to));
        break;
      case V_EXT_ID:
        this.#push2(Rec.extensionId, this.#internBytes(source, from, to));
        break;
      case V_BUNDLE_TYPE:
        this.#type = decodeString(source, from, to, this.#escaped);
        this.#typeRange[1] = this.#offset + close + 1;
        break;
      case V_BUNDLE_ID:
        this.#id = decodeString(source, from, to, this.#escaped);
        break;
    }
  }

  // Sets the role of the value that follows the key in bytes [from, to).
  #endKey(source: Buffer, from: number, to: number): void {
    const d = this.#depth - 1;
    let bytes = source;
    let start = from;
    let stop = to;
    let text: string | undefined;
    if (this.#escaped) {
      text = decodeString(source, from, to, true);
      bytes = Buffer.from(text, "utf8");
      start = 0;
      stop = bytes.length;
    }

    const role = this.#role[d]!;
    const suffix = refSuffix(bytes, start, stop);
    let keyRole: number;
    switch (role) {
      case R_BUNDLE:
        keyRole = equals(bytes, start, stop, KEY_TYPE)
          ? V_BUNDLE_TYPE
          : equals(bytes, start, stop, KEY_ID)
            ? V_BUNDLE_ID
            : equals(bytes, start, stop, KEY_OBJECTS)
              ? V_BUNDLE_OBJECTS
              : V_NONE;
        break;
      case R_ITEM:
        if (suffix !== 0) {
          keyRole = suffix === 2 ? V_TOP_REFS : V_TOP_REF;
          this.#keyString[d] = text === undefined ? this.#internBytes(bytes, start, stop) : this.#intern(text);
        } else if (equals(bytes, start, stop, KEY_TYPE)) {
          keyRole = V_ITEM_TYPE;
        } else if (equals(bytes, start, stop, KEY_ID)) {
          keyRole = V_ITEM_ID;
        } else if (equals(bytes, start, stop, KEY_OPENCTI_ID)) {
          keyRole = V_OPENCTI_ID;
        } else if (equals(bytes, start, stop, KEY_EXTENSIONS)) {
          keyRole = V_EXTENSIONS;
        } else if (equals(bytes, start, stop, KEY_GRANULAR)) {
          keyRole = V_GRANULAR;
        } else {
          keyRole = V_COLLECT;
        }
        break;
      case R_EXTENSIONS:
        keyRole = suffix === 0 && equals(bytes, start, stop, KEY_OPENCTI_EXT) ? V_OPENCTI_EXT : collectRole(suffix);
        break;
      case R_OPENCTI_EXT:
        keyRole = suffix === 0 && equals(bytes, start, stop, KEY_ID) ? V_EXT_ID : collectRole(suffix);
        break;
      case R_GRANULAR_ITEM:
        keyRole = equals(bytes, start, stop, KEY_MARKING_REF) ? V_GRANULAR_MREF : collectRole(suffix);
        break;
      default:
        keyRole = collectRole(suffix);
        break;
    }
    this.#keyRole[d] = keyRole;
  }

  #openContainer(role: number, isArray: boolean, at: number): void {
    let containerRole: number;
    switch (role) {
      case V_TOP:
        this.#topKind = isArray ? JsonKind.array : JsonKind.object;
        containerRole = isArray ? R_PLAIN : R_BUNDLE;
        break;
      case V_ITEM:
        this.#beginItem(isArray ? JsonKind.array : JsonKind.object, at);
        containerRole = isArray ? R_PLAIN : R_ITEM;
        break;
      case V_BUNDLE_OBJECTS:
        this.#resetItems();
        this.#objectsKind = isArray ? JsonKind.array : JsonKind.object;
        containerRole = isArray ? R_OBJECTS : R_PLAIN;
        break;
      case V_BUNDLE_TYPE:
        this.#typeKind = isArray ? JsonKind.array : JsonKind.object;
        this.#type = undefined;
        this.#typeRange = [at, at];
        containerRole = R_PLAIN;
        break;
      case V_BUNDLE_ID:
        this.#id = undefined;
        containerRole = R_PLAIN;
        break;
      case V_TOP_REF:
        this.#push3(Rec.topRef, this.#keyString[this.#depth - 1]!, OTHER_VALUE);
        containerRole = R_COLLECT;
        break;
      case V_TOP_REFS:
        if (isArray) {
          this.#push3(Rec.topRefs, this.#keyString[this.#depth - 1]!, 0);
          containerRole = R_TOP_REFS;
        } else {
          this.#push2(Rec.topRefsOther, this.#keyString[this.#depth - 1]!);
          containerRole = R_COLLECT;
        }
        break;
      case V_TOP_REFS_ITEM:
        this.#pushTopRefsItem(OTHER_VALUE);
        containerRole = R_PLAIN;
        break;
      case V_NESTED_REFS:
        containerRole = isArray ? R_NESTED_REFS : R_COLLECT;
        break;
      case V_ITEM_TYPE:
        this.#itemType[this.#count - 1] = OTHER_VALUE;
        containerRole = R_COLLECT;
        break;
      case V_ITEM_ID:
        this.#itemId[this.#count - 1] = OTHER_VALUE;
        containerRole = R_COLLECT;
        break;
      case V_EXTENSIONS:
        containerRole = isArray ? R_COLLECT : R_EXTENSIONS;
        break;
      case V_OPENCTI_EXT:
        containerRole = isArray ? R_COLLECT : R_OPENCTI_EXT;
        break;
      case V_GRANULAR:
        containerRole = isArray ? R_GRANULAR : R_COLLECT;
        break;
      case V_GRANULAR_ITEM:
        containerRole = isArray ? R_COLLECT : R_GRANULAR_ITEM;
        break;
      case V_NONE:
      case V_NESTED_REFS_ITEM:
        containerRole = R_PLAIN;
        break;
      default:
        // V_COLLECT, V_NESTED_REF, V_OPENCTI_ID, V_EXT_ID, V_GRANULAR_MREF:
        // `referencedIds` walks into any object or array there.
        containerRole = R_COLLECT;
        break;
    }

    const d = this.#depth++;
    this.#isArray[d] = isArray ? 1 : 0;
    this.#role[d] = containerRole;
    this.#openedAs[d] = role;
    this.#keyRole[d] = V_NONE;
    if (containerRole === R_TOP_REFS) {
      this.#countAt[d] = this.#recordCount - 1;
    }
    if (role === V_ITEM) {
      this.#itemDepth = this.#depth;
    }
  }

  #closeContainer(i: number): number {
    const d = --this.#depth;
    const openedAs = this.#openedAs[d];
    const at = this.#offset + i + 1;
    if (openedAs === V_ITEM) {
      const item = this.#count - 1;
      this.#end[item] = at;
      this.#recordEnd[item] = this.#recordCount;
      this.#itemDepth = 0;
    } else if (openedAs === V_BUNDLE_TYPE) {
      this.#typeRange[1] = at;
    }
    return this.#afterValueState();
  }

  #afterValueState(): number {
    return this.#depth === 0 ? S_END : S_AFTER;
  }

  #beginItem(kind: number, at: number): void {
    if (this.#count === this.#capacity) {
      this.#grow();
    }
    const item = this.#count++;
    this.#start[item] = at;
    this.#end[item] = at;
    this.#kind[item] = kind;
    this.#itemType[item] = -1;
    this.#itemId[item] = -1;
    this.#recordStart[item] = this.#recordCount;
    this.#recordEnd[item] = this.#recordCount;
    this.#flags[item] = 0;
    this.#whitespace[item] = 0;
    this.#escapes[item] = 0;
  }

  #resetItems(): void {
    this.#count = 0;
    this.#recordCount = 0;
  }

  #grow(): void {
    const capacity = Math.ceil(this.#capacity * GROWTH);
    this.#start = growFloat(this.#start, capacity);
    this.#end = growFloat(this.#end, capacity);
    this.#kind = growBytes(this.#kind, capacity);
    this.#itemType = growInts(this.#itemType, capacity);
    this.#itemId = growInts(this.#itemId, capacity);
    this.#recordStart = growInts(this.#recordStart, capacity);
    this.#recordEnd = growInts(this.#recordEnd, capacity);
    this.#flags = growBytes(this.#flags, capacity);
    this.#whitespace = growInts(this.#whitespace, capacity);
    this.#escapes = growInts(this.#escapes, capacity);
    this.#capacity = capacity;
  }

  #reserve(extra: number): void {
    if (this.#recordCount + extra > this.#records.length) {
      this.#records = growInts(this.#records, Math.max(Math.ceil(this.#records.length * GROWTH), this.#recordCount + extra));
    }
  }

  #push2(a: number, b: number): void {
    this.#reserve(2);
    this.#records[this.#recordCount++] = a;
    this.#records[this.#recordCount++] = b;
  }

  #push3(a: number, b: number, c: number): void {
    this.#reserve(3);
    this.#records[this.#recordCount++] = a;
    this.#records[this.#recordCount++] = b;
    this.#records[this.#recordCount++] = c;
  }

  #pushTopRefsItem(target: number): void {
    this.#reserve(1);
    this.#records[this.#recordCount++] = target;
    this.#records[this.#countAt[this.#depth - 1]!]! += 1;
  }

  // Interns the string between a string's quotes, bytes [from, to). An
  // ASCII string without escapes, which ids and key names nearly always
  // are, is found by a hash of its bytes and decoded only the first time.
  #internBytes(bytes: Buffer, from: number, to: number): number {
    if (this.#escaped) {
      return this.#intern(decodeString(bytes, from, to, true));
    }
    return this.#internRaw(bytes, from, to);
  }

  // Interns the bytes [from, to) of a string without escapes.
  #internRaw(bytes: Buffer, from: number, to: number): number {
    return this.#internAscii(bytes, from, to, tailHash(bytes, from, to));
  }

  // Interns a decoded string. ASCII ones go to the byte table, so that a
  // string has one index whether or not it was escaped where it was found.
  #intern(text: string): number {
    if (/^[\x00-\x7f]*$/.test(text)) {
      const bytes = Buffer.from(text, "latin1");
      return this.#internAscii(bytes, 0, bytes.length, tailHash(bytes, 0, bytes.length));
    }
    let index = this.#otherIndex.get(text);
    if (index === undefined) {
      index = this.#addString(text);
      this.#otherIndex.set(text, index);
    }
    return index;
  }

  // Finds bytes [from, to) in the table of ASCII strings, or adds them. The
  // table contains only ASCII strings, so a match proves the bytes ASCII.
  // Bytes that match none and are not ASCII go to #intern as UTF-8 text.
  #internAscii(bytes: Buffer, from: number, to: number, hash: number): number {
    const table = this.#asciiTable;
    const mask = (table.length >> 1) - 1;
    const length = to - from;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const entry = table[2 * slot + 1]!;
      if (entry === 0) {
        if (!isAscii(bytes, from, to)) {
          return this.#intern(bytes.toString("utf8", from, to));
        }
        const index = this.#addString(latin1(bytes, from, to));
        table[2 * slot] = hash;
        table[2 * slot + 1] = index + 1;
        if (++this.#asciiCount > table.length >> 2) {
          this.#growAsciiTable();
        }
        return index;
      }
      if (table[2 * slot] === hash) {
        const candidate = this.#strings[entry - 1]!;
        if (candidate.length === length && sameAscii(candidate, bytes, from)) {
          return entry - 1;
        }
      }
    }
  }

  #addString(text: string): number {
    this.#strings.push(text);
    return this.#strings.length - 1;
  }

  #growAsciiTable(): void {
    const old = this.#asciiTable;
    const table = new Int32Array(old.length * 2);
    const mask = (table.length >> 1) - 1;
    for (let oldSlot = 0; oldSlot < old.length >> 1; oldSlot++) {
      const entry = old[2 * oldSlot + 1]!;
      if (entry === 0) {
        continue;
      }
      const hash = old[2 * oldSlot]!;
      let slot = hash & mask;
      while (table[2 * slot + 1] !== 0) {
        slot = (slot + 1) & mask;
      }
      table[2 * slot] = hash;
      table[2 * slot + 1] = entry;
    }
    this.#asciiTable = table;
  }

  // The fast path of items. Most bytes of a bundle are in items that are
  // objects and fit in the chunk at hand. #fastItem reads such an item with
  // one function per JSON value and local positions, and records what the
  // state machine would. It gives up, returning -1, at anything else: the
  // end of the chunk, an escape in a member name or in a kept string, a
  // deep nesting, or a byte that may not be JSON. The state machine then
  // reads the item again from its first byte and reports any error.
  // Strings that the attempt interned stay interned; the second reading
  // interns the same strings in the same order, so they keep their index.

  // Reads the object item that starts with the `{` at `i`. Returns the
  // position after its `}`, or -1 with the item's records undone.
  #fastItem(b: Buffer, i: number): number {
    const count = this.#count;
    const recordCount = this.#recordCount;
    this.#beginItem(JsonKind.object, this.#offset + i);
    this.#fastEscapes = 0;
    this.#fastWhitespace = 0;

    const end = this.#fastObject(b, i + 1, R_ITEM, 1);
    if (end < 0) {
      this.#count = count;
      this.#recordCount = recordCount;
      return -1;
    }

    const item = count;
    this.#end[item] = this.#offset + end;
    this.#recordEnd[item] = this.#recordCount;
    this.#escapes[item] = this.#fastEscapes;
    this.#whitespace[item] = this.#fastWhitespace;
    return end;
  }

  // Reads the members of an object whose `{` is before `i`, in a container
  // of role `role`. Returns the position after the `}`, or -1.
  #fastObject(b: Buffer, i: number, role: number, depth: number): number {
    if (depth > FAST_MAX_DEPTH) {
      return -1;
    }
    i = this.#fastSpace(b, i);
    if (b[i] === 0x7d) {
      return i + 1;
    }
    if (role === R_ITEM) {
      this.#flags[this.#count - 1]! |= FLAG_MEMBERS;
    }

    for (;;) {
      if (b[i] !== 0x22) {
        return -1;
      }
      const from = i + 1;
      const close = this.#fastString(b, from);
      if (close < 0 || (this.#escaped && role !== R_PLAIN)) {
        return -1;
      }
      const keyRole = role === R_PLAIN ? V_NONE : this.#fastKeyRole(b, from, close, role);

      i = this.#fastSpace(b, close + 1);
      if (b[i] !== 0x3a) {
        return -1;
      }
      i = this.#fastValue(b, this.#fastSpace(b, i + 1), keyRole, depth);
      if (i < 0) {
        return -1;
      }

      i = this.#fastSpace(b, i);
      const c = b[i];
      if (c === 0x2c) {
        i = this.#fastSpace(b, i + 1);
      } else if (c === 0x7d) {
        return i + 1;
      } else {
        return -1;
      }
    }
  }

  // Reads the values of an array whose `[` is before `i`, in a container of
  // role `role`. `countAt` is the position of a `topRefs` record's count.
  // Returns the position after the `]`, or -1.
  #fastArray(b: Buffer, i: number, role: number, depth: number, countAt: number): number {
    if (depth > FAST_MAX_DEPTH) {
      return -1;
    }
    i = this.#fastSpace(b, i);
    if (b[i] === 0x5d) {
      return i + 1;
    }
    const itemRole = arrayItemRole(role);

    for (;;) {
      const before = this.#recordCount;
      i = this.#fastValue(b, i, itemRole, depth);
      if (i < 0) {
        return -1;
      }
      if (itemRole === V_TOP_REFS_ITEM) {
        this.#records[countAt]! += this.#recordCount - before;
      }

      i = this.#fastSpace(b, i);
      const c = b[i];
      if (c === 0x2c) {
        i = this.#fastSpace(b, i + 1);
      } else if (c === 0x5d) {
        return i + 1;
      } else {
        return -1;
      }
    }
  }

  // Reads the value at `i` of role `role` and records it. Returns the
  // position after it, or -1.
  #fastValue(b: Buffer, i: number, role: number, depth: number): number {
    const c = b[i];
    if (c === 0x22) {
      const from = i + 1;
      const close = this.#fastString(b, from);
      if (close < 0) {
        return -1;
      }
      if (CAPTURED[role] === 1) {
        if (this.#escaped) {
          return -1;
        }
        this.#fastCapture(role, this.#internRaw(b, from, close));
      } else if (role === V_TOP_REFS) {
        this.#push2(Rec.topRefsOther, this.#fastKey);
      }
      return close + 1;
    }
    if (c === 0x7b) {
      return this.#fastObject(b, i + 1, this.#fastContainer(role, false), depth + 1);
    }
    if (c === 0x5b) {
      const containerRole = this.#fastContainer(role, true);
      return this.#fastArray(b, i + 1, containerRole, depth + 1, containerRole === R_TOP_REFS ? this.#recordCount - 1 : 0);
    }

    let end: number;
    let kind: number;
    if (c === 0x74) {
      end = b[i + 1] === 0x72 && b[i + 2] === 0x75 && b[i + 3] === 0x65 ? i + 4 : -1;
      kind = JsonKind.true;
    } else if (c === 0x66) {
      end = b[i + 1] === 0x61 && b[i + 2] === 0x6c && b[i + 3] === 0x73 && b[i + 4] === 0x65 ? i + 5 : -1;
      kind = JsonKind.false;
    } else if (c === 0x6e) {
      end = b[i + 1] === 0x75 && b[i + 2] === 0x6c && b[i + 3] === 0x6c ? i + 4 : -1;
      kind = JsonKind.null;
    } else {
      end = fastNumber(b, i);
      kind = JsonKind.number;
    }
    // A number or literal that touches the end of the chunk may go on in the next one.
    if (end < 0 || end >= b.length) {
      return -1;
    }
    this.#fastScalar(role, kind);
    return end;
  }

  // Records a kept string of role `role`, interned as `target`, as #endString
  // does. #fastScalar and #fastContainer record other values with it.
  #fastCapture(role: number, target: number): void {
    switch (role) {
      case V_NESTED_REF:
      case V_NESTED_REFS_ITEM:
        this.#push2(Rec.nested, target);
        break;
      case V_GRANULAR_MREF:
        this.#push2(Rec.granular, target);
        break;
      case V_TOP_REF:
        this.#push3(Rec.topRef, this.#fastKey, target);
        break;
      case V_TOP_REFS_ITEM:
        this.#reserve(1);
        this.#records[this.#recordCount++] = target;
        break;
      case V_ITEM_TYPE:
        this.#itemType[this.#count - 1] = target;
        break;
      case V_ITEM_ID:
        this.#itemId[this.#count - 1] = target;
        break;
      case V_OPENCTI_ID:
        this.#push2(Rec.openctiId, target);
        break;
      case V_EXT_ID:
        this.#push2(Rec.extensionId, target);
        break;
    }
  }

  // Records a number or literal of role `role`, as #beginScalar does in an item.
  #fastScalar(role: number, kind: number): void {
    if (role === V_TOP_REFS) {
      this.#push2(kind === JsonKind.null ? Rec.topRefsNull : Rec.topRefsOther, this.#fastKey);
    } else if (role === V_TOP_REF || role === V_TOP_REFS_ITEM || role === V_ITEM_TYPE || role === V_ITEM_ID) {
      this.#fastCapture(role, role === V_TOP_REF && kind === JsonKind.null ? NULL_VALUE : OTHER_VALUE);
    }
  }

  // Records an object or array of role `role` and returns its container
  // role, as #openContainer does in an item.
  #fastContainer(role: number, isArray: boolean): number {
    switch (role) {
      case V_TOP_REFS:
        if (isArray) {
          this.#push3(Rec.topRefs, this.#fastKey, 0);
          return R_TOP_REFS;
        }
        this.#push2(Rec.topRefsOther, this.#fastKey);
        return R_COLLECT;
      case V_TOP_REFS_ITEM:
        this.#fastCapture(role, OTHER_VALUE);
        return R_PLAIN;
      case V_TOP_REF:
      case V_ITEM_TYPE:
      case V_ITEM_ID:
        this.#fastCapture(role, OTHER_VALUE);
        return R_COLLECT;
      case V_NESTED_REFS:
        return isArray ? R_NESTED_REFS : R_COLLECT;
      case V_EXTENSIONS:
        return isArray ? R_COLLECT : R_EXTENSIONS;
      case V_OPENCTI_EXT:
        return isArray ? R_COLLECT : R_OPENCTI_EXT;
      case V_GRANULAR:
        return isArray ? R_GRANULAR : R_COLLECT;
      case V_GRANULAR_ITEM:
        return isArray ? R_COLLECT : R_GRANULAR_ITEM;
      case V_NONE:
      case V_NESTED_REFS_ITEM:
        return R_PLAIN;
      default:
        return R_COLLECT;
    }
  }

  // Returns the role of the value after the member name in bytes
  // [from, to), which has no escapes, in an object of role `role`, as
  // #endKey does. A top-level `*_ref` or `*_refs` name is interned.
  #fastKeyRole(b: Buffer, from: number, to: number, role: number): number {
    const suffix = refSuffix(b, from, to);
    switch (role) {
      case R_ITEM:
        if (suffix !== 0) {
          this.#fastKey = this.#internRaw(b, from, to);
          return suffix === 2 ? V_TOP_REFS : V_TOP_REF;
        }
        switch (to - from) {
          case 2:
            return equals(b, from, to, KEY_ID) ? V_ITEM_ID : V_COLLECT;
          case 4:
            return equals(b, from, to, KEY_TYPE) ? V_ITEM_TYPE : V_COLLECT;
          case 10:
            return equals(b, from, to, KEY_EXTENSIONS) ? V_EXTENSIONS : V_COLLECT;
          case 12:
            return equals(b, from, to, KEY_OPENCTI_ID) ? V_OPENCTI_ID : V_COLLECT;
          case 17:
            return equals(b, from, to, KEY_GRANULAR) ? V_GRANULAR : V_COLLECT;
          default:
            return V_COLLECT;
        }
      case R_EXTENSIONS:
        return suffix === 0 && equals(b, from, to, KEY_OPENCTI_EXT) ? V_OPENCTI_EXT : collectRole(suffix);
      case R_OPENCTI_EXT:
        return suffix === 0 && equals(b, from, to, KEY_ID) ? V_EXT_ID : collectRole(suffix);
      case R_GRANULAR_ITEM:
        return equals(b, from, to, KEY_MARKING_REF) ? V_GRANULAR_MREF : collectRole(suffix);
      default:
        return collectRole(suffix);
    }
  }

  // Reads the string whose opening quote is before `i`. Returns the
  // position of the closing quote, or -1. Counts its escapes in
  // #fastEscapes, sets #escaped when it has one, and flags the item when
  // it has a byte that is not ASCII.
  #fastString(b: Buffer, i: number): number {
    const length = b.length;
    let escapes = 2;
    this.#escaped = false;
    for (;;) {
      while (i < length && STRING_STOP[b[i]!] === 0) {
        i++;
      }
      if (i >= length) {
        return -1;
      }
      const c = b[i]!;
      if (c === 0x22) {
        this.#fastEscapes += escapes;
        return i;
      }
      if (c >= 0x80) {
        this.#flags[this.#count - 1]! |= FLAG_NON_ASCII;
        i++;
        continue;
      }
      if (c !== 0x5c) {
        return -1;
      }
      this.#escaped = true;
      const e = b[i + 1];
      if (e === 0x22 || e === 0x5c) {
        escapes += 2;
        i += 2;
      } else if (e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
        escapes += 1;
        i += 2;
      } else if (e === 0x75 && isHexDigit(b[i + 2]!) && isHexDigit(b[i + 3]!) && isHexDigit(b[i + 4]!) && isHexDigit(b[i + 5]!)) {
        escapes += 1;
        i += 6;
      } else {
        return -1;
      }
    }
  }

  // Skips the whitespace at `i`, counting it. Returns the position after it.
  #fastSpace(b: Buffer, i: number): number {
    let c = b[i]!;
    if (c > 0x20 || (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09)) {
      return i;
    }
    const from = i;
    do {
      c = b[++i]!;
    } while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09);
    this.#fastWhitespace += i - from;
    return i;
  }

  #unexpected(buffer: Buffer, i: number, expected: string): JsonScanError {
    return this.#invalid(buffer, i, `where ${expected} was expected`);
  }

  #invalid(buffer: Buffer, i: number, problem: string): JsonScanError {
    const at = this.#offset + i;
    return new JsonScanError(`invalid JSON at byte ${at}: found ${describeByte(buffer[i]!)} ${problem}`, at, false);
  }
}

// The role of a value in an object that `referencedIds` walks into.
function collectRole(suffix: number): number {
  if (suffix === 2) {
    return V_NESTED_REFS;
  }
  return suffix === 1 ? V_NESTED_REF : V_COLLECT;
}

// Deepest nesting in an item that #fastItem reads; deeper items go to the state machine.
const FAST_MAX_DEPTH = 48;

// The role of the values of an array of role `role`, as #valueRole gives it.
function arrayItemRole(role: number): number {
  switch (role) {
    case R_COLLECT:
      return V_COLLECT;
    case R_TOP_REFS:
      return V_TOP_REFS_ITEM;
    case R_NESTED_REFS:
      return V_NESTED_REFS_ITEM;
    case R_GRANULAR:
      return V_GRANULAR_ITEM;
    default:
      return V_NONE;
  }
}

// Returns the position after the number at `i`, or -1 when there is none:
// RFC 8259 `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
function fastNumber(b: Uint8Array, i: number): number {
  if (b[i] === 0x2d) {
    i++;
  }
  let c = b[i]!;
  if (c === 0x30) {
    c = b[++i]!;
  } else if (c >= 0x31 && c <= 0x39) {
    do {
      c = b[++i]!;
    } while (c >= 0x30 && c <= 0x39);
  } else {
    return -1;
  }
  if (c === 0x2e) {
    c = b[++i]!;
    if (!(c >= 0x30 && c <= 0x39)) {
      return -1;
    }
    do {
      c = b[++i]!;
    } while (c >= 0x30 && c <= 0x39);
  }
  if (c === 0x65 || c === 0x45) {
    c = b[++i]!;
    if (c === 0x2b || c === 0x2d) {
      c = b[++i]!;
    }
    if (!(c >= 0x30 && c <= 0x39)) {
      return -1;
    }
    do {
      c = b[++i]!;
    } while (c >= 0x30 && c <= 0x39);
  }
  return i;
}

// Returns 2 when bytes [from, to) end with "_refs", 1 with "_ref", else 0.
function refSuffix(bytes: Uint8Array, from: number, to: number): number {
  const n = to - from;
  if (n >= 5 && bytes[to - 1] === 0x73 && bytes[to - 2] === 0x66 && bytes[to - 3] === 0x65 && bytes[to - 4] === 0x72 && bytes[to - 5] === 0x5f) {
    return 2;
  }
  if (n >= 4 && bytes[to - 1] === 0x66 && bytes[to - 2] === 0x65 && bytes[to - 3] === 0x72 && bytes[to - 4] === 0x5f) {
    return 1;
  }
  return 0;
}

function equals(bytes: Uint8Array, from: number, to: number, expected: Uint8Array): boolean {
  if (to - from !== expected.length) {
    return false;
  }
  for (let k = 0; k < expected.length; k++) {
    if (bytes[from + k] !== expected[k]) {
      return false;
    }
  }
  return true;
}

// Growth factor of the index arrays.
const GROWTH = 1.5;

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
// Bytes at the end of a string that its hash covers. Ids end with a UUID,
// so their last bytes tell them apart. Hashing the whole string made the
// scan of the 200 MB version of bench/ about 5% slower.
const HASHED_BYTES = 16;

// FNV-1a of the length and the last HASHED_BYTES bytes of [from, to).
function tailHash(bytes: Uint8Array, from: number, to: number): number {
  let hash = Math.imul(FNV_OFFSET ^ (to - from), FNV_PRIME);
  for (let k = Math.max(from, to - HASHED_BYTES); k < to; k++) {
    hash = Math.imul(hash ^ bytes[k]!, FNV_PRIME);
  }
  return hash;
}

function isAscii(bytes: Uint8Array, from: number, to: number): boolean {
  let high = 0;
  for (let k = from; k < to; k++) {
    high |= bytes[k]!;
  }
  return (high & 0x80) === 0;
}

// Decodes with Bun's Buffer#latin1Slice, which is not in @types/node. On
// Bun 1.4.5 it decoded short ASCII strings about twice as fast as
// toString("utf8") and four times as fast as toString("latin1").
function latin1(bytes: Buffer, from: number, to: number): string {
  return (bytes as Buffer & { latin1Slice(start: number, end: number): string }).latin1Slice(from, to);
}

function sameAscii(text: string, bytes: Buffer, from: number): boolean {
  for (let k = 0; k < text.length; k++) {
    if (text.charCodeAt(k) !== bytes[from + k]) {
      return false;
    }
  }
  return true;
}

// Decodes the raw bytes between a string's quotes. Escapes go through
// JSON.parse, which the syntax check has already made safe.
function decodeString(bytes: Buffer, from: number, to: number, escaped: boolean): string {
  const raw = bytes.toString("utf8", from, to);
  return escaped ? (JSON.parse('"' + raw + '"') as string) : raw;
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

function isAccepting(state: number): boolean {
  return state === N_ZERO || state === N_INT || state === N_FRAC || state === N_EXP_DIGITS;
}

// Returns the number state after byte `c`, or -1 when `c` is not part of
// the number: RFC 8259 `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
function nextNumberState(state: number, c: number): number {
  const digit = c >= 0x30 && c <= 0x39;
  const dot = c === 0x2e;
  const exponent = c === 0x65 || c === 0x45;
  switch (state) {
    case N_MINUS:
      if (c === 0x30) {
        return N_ZERO;
      }
      return digit ? N_INT : -1;
    case N_ZERO:
      if (dot) {
        return N_DOT;
      }
      return exponent ? N_EXP : -1;
    case N_INT:
      if (digit) {
        return N_INT;
      }
      if (dot) {
        return N_DOT;
      }
      return exponent ? N_EXP : -1;
    case N_DOT:
      return digit ? N_FRAC : -1;
    case N_FRAC:
      if (digit) {
        return N_FRAC;
      }
      return exponent ? N_EXP : -1;
    case N_EXP:
      if (digit) {
        return N_EXP_DIGITS;
      }
      return c === 0x2b || c === 0x2d ? N_EXP_SIGN : -1;
    case N_EXP_SIGN:
    case N_EXP_DIGITS:
      return digit ? N_EXP_DIGITS : -1;
    default:
      return -1;
  }
}

function describeByte(c: number): string {
  if (c >= 0x21 && c <= 0x7e) {
    return `'${String.fromCharCode(c)}'`;
  }
  return `byte 0x${c.toString(16).padStart(2, "0")}`;
}

function growFloat(array: Float64Array, capacity: number): Float64Array<ArrayBuffer> {
  const grown = new Float64Array(capacity);
  grown.set(array);
  return grown;
}

function growInts(array: Int32Array, capacity: number): Int32Array<ArrayBuffer> {
  const grown = new Int32Array(capacity);
  grown.set(array);
  return grown;
}

function growBytes(array: Uint8Array, capacity: number): Uint8Array<ArrayBuffer> {
  const grown = new Uint8Array(capacity);
  grown.set(array);
  return grown;
}
