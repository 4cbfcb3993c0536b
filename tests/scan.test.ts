import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { referencedIds } from "../lib/bundle.ts";
import { BundleScanner, FLAG_MEMBERS, FLAG_NON_ASCII, JsonKind, JsonScanError, type ScannedBundle } from "../lib/scan.ts";
import { OPENCTI_EXTENSION_ID } from "../lib/splitter.ts";
import { prepareSpooledVersion } from "../lib/spooled.ts";
import type { StixObject } from "../lib/stix.ts";
import { seededRandom } from "./helpers/random.ts";

const FIXTURES = join(import.meta.dir, "fixtures");
const RELEASES = ["17.0", "17.1", "18.0", "18.1"];

function fixtureBytes(release: string): Buffer {
  return gunzipSync(readFileSync(join(FIXTURES, `ics-attack-${release}.json.gz`)));
}

function scan(bytes: Uint8Array, chunkSize = bytes.length, fastItems = true): ScannedBundle {
  const scanner = new BundleScanner({ fastItems });
  for (let start = 0; start < bytes.length; start += Math.max(1, chunkSize)) {
    scanner.write(bytes.subarray(start, Math.min(start + Math.max(1, chunkSize), bytes.length)));
  }
  return scanner.end();
}

function scanText(text: string, chunkSize?: number): ScannedBundle {
  return scan(Buffer.from(text, "utf8"), chunkSize);
}

function scanError(text: string): JsonScanError {
  try {
    scanText(text);
  } catch (error) {
    if (error instanceof JsonScanError) {
      return error;
    }
    throw error;
  }
  throw new Error(`scanning ${JSON.stringify(text)} did not fail`);
}

function itemText(bytes: Buffer, result: ScannedBundle, item: number): string {
  return bytes.toString("utf8", result.start[item], result.end[item]);
}

/** Counts the whitespace characters of a JSON text that are not in a string. */
function whitespaceOutsideStrings(text: string): number {
  let count = 0;
  let inString = false;
  for (let k = 0; k < text.length; k++) {
    const char = text[k]!;
    if (inString) {
      if (char === "\\") {
        k++;
      } else if (char === '"') {
        inString = false;
      }
    } else if (char === '"') {
      inString = true;
    } else if (char === " " || char === "\n" || char === "\r" || char === "\t") {
      count++;
    }
  }
  return count;
}

/** Copies the index into plain arrays, to compare two scans of the same bytes. */
function snapshot(result: ScannedBundle): unknown {
  return {
    ...result,
    strings: [...result.strings],
    start: [...result.start],
    end: [...result.end],
    kind: [...result.kind],
    typeOf: [...result.typeOf],
    idOf: [...result.idOf],
    recordStart: [...result.recordStart],
    recordEnd: [...result.recordEnd],
    flags: [...result.flags],
    records: [...result.records],
  };
}

// Objects whose strings, keys and nesting are hard to tokenize.
const TRICKY_OBJECTS: StixObject[] = [
  {
    type: "malware",
    id: "malware--00000000-0000-4000-8000-000000000001",
    name: 'brackets ]}{[ and "quotes" and \\ backslash, commas, colons: ',
    description: "é ü 中文 \u2028 \u0000 \t\n emoji 😀 lone \ud800 surrogate",
    labels: [[[]], [[["deep"]]], {}],
    created_by_ref: "identity--00000000-0000-4000-8000-00000000000a",
    x_values: [0, -0, 1.5e-7, -12.25E+3, 1e400, true, false, null],
  },
  {
    type: "relationship",
    id: "relationship--00000000-0000-4000-8000-000000000002",
    source_ref: "malware--00000000-0000-4000-8000-000000000001",
    target_ref: "malware--00000000-0000-4000-8000-000000000003",
    object_marking_refs: ["marking-definition--00000000-0000-4000-8000-00000000000b", 7, null, { id: "x" }],
    granular_markings: [{ marking_ref: "marking-definition--00000000-0000-4000-8000-00000000000c", selectors: ["name"] }],
    extensions: {
      "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba": { id: "internal-id-2", nested_ref: "malware--00000000-0000-4000-8000-000000000003" },
    },
    x_opencti_id: "internal-id-x",
    odd_ref: { inner_refs: ["malware--00000000-0000-4000-8000-000000000003"] },
    odd_refs: { inner_ref: "malware--00000000-0000-4000-8000-000000000001" },
    null_refs: null,
    number_ref: 5,
  },
];

describe("BundleScanner on the fixtures", () => {
  for (const release of RELEASES) {
    test(`ics-attack-${release} item ranges parse as served`, () => {
      const bytes = fixtureBytes(release);
      const served = JSON.parse(bytes.toString("utf8")) as { id: string; objects: StixObject[] };

      const result = scan(bytes, 65_536);

      expect(result.count).toBe(served.objects.length);
      expect(result.type).toBe("bundle");
      expect(result.id).toBe(served.id);
      expect(result.bytes).toBe(bytes.length);
      for (let item = 0; item < result.count; item++) {
        expect(JSON.parse(itemText(bytes, result, item))).toEqual(served.objects[item]!);
      }
    });
  }

  test("ics-attack-17.0 ids and types match", () => {
    const bytes = fixtureBytes("17.0");
    const served = JSON.parse(bytes.toString("utf8")) as { objects: StixObject[] };

    const result = scan(bytes);

    const ids = [...result.idOf].map((index) => result.strings[index]);
    const types = [...result.typeOf].map((index) => result.strings[index]);
    expect(ids).toEqual(served.objects.map((object) => object.id));
    expect(types).toEqual(served.objects.map((object) => object.type));
  });

  test("ics-attack-17.0 refs follow referencedIds", () => {
    const bytes = fixtureBytes("17.0");
    const served = JSON.parse(bytes.toString("utf8")) as { objects: StixObject[] };
    const result = scan(bytes);
    const version = prepareSpooledVersion(result, { text: (start, end) => bytes.toString("utf8", start, end), bytes: (start, end) => bytes.subarray(start, end) }, "v");

    for (let item = 0; item < result.count; item++) {
      const refs = version.refs(item).map((index) => result.strings[index]);
      expect(refs).toEqual(referencedIds(served.objects[item]!));
    }
  });

  test("ics-attack-17.0 one byte at a time", () => {
    const bytes = fixtureBytes("17.0");

    expect(snapshot(scan(bytes, 1))).toEqual(snapshot(scan(bytes)));
  });

  test("ics-attack-17.0 escape counts", () => {
    const bytes = fixtureBytes("17.0");

    const result = scan(bytes, 4096);

    for (let item = 0; item < result.count; item++) {
      const text = itemText(bytes, result, item);
      expect(result.escapes[item]).toBe(text.split("").filter((char) => char === '"' || char === "\\").length);
    }
  });

  test("ics-attack-18.1 whitespace counts", () => {
    const bytes = fixtureBytes("18.1");

    const result = scan(bytes, 4096);

    for (let item = 0; item < result.count; item++) {
      expect(result.whitespace[item]).toBe(whitespaceOutsideStrings(itemText(bytes, result, item)));
    }
  });

  test("objects with members are flagged", () => {
    const result = scanText('{"objects":[{},{"a":{"b":1}},{ }]}');

    expect([...result.flags].map((flags) => flags & FLAG_MEMBERS)).toEqual([0, FLAG_MEMBERS, 0]);
  });
});

describe("BundleScanner on tricky JSON", () => {
  const document = JSON.stringify({ type: "bundle", id: "bundle--00000000-0000-4000-8000-0000000000ff", objects: TRICKY_OBJECTS });
  const bytes = Buffer.from(document, "utf8");

  test("item ranges parse as served", () => {
    const result = scan(bytes);

    expect(result.count).toBe(TRICKY_OBJECTS.length);
    for (let item = 0; item < result.count; item++) {
      expect(JSON.parse(itemText(bytes, result, item))).toEqual(JSON.parse(JSON.stringify(TRICKY_OBJECTS[item])));
    }
  });

  test("every chunk size gives one index", () => {
    const whole = snapshot(scan(bytes));

    for (const size of [1, 2, 3, 5, 7, 13, 64, 1000]) {
      expect(snapshot(scan(bytes, size))).toEqual(whole);
    }
  });

  test("refs follow referencedIds", () => {
    const result = scan(bytes);
    const version = prepareSpooledVersion(result, { text: (start, end) => bytes.toString("utf8", start, end), bytes: (start, end) => bytes.subarray(start, end) }, "v");

    for (let item = 0; item < result.count; item++) {
      const refs = version.refs(item).map((index) => result.strings[index]);
      expect(refs).toEqual(referencedIds(JSON.parse(JSON.stringify(TRICKY_OBJECTS[item]))));
    }
  });

  test("escape counts cover escapes", () => {
    const text = JSON.stringify({ objects: [{ "k\\\"ey": 'a"b\\c', n: 1 }] });

    const result = scanText(text, 3);

    const item = text.slice(result.start[0], result.end[0]);
    expect(result.escapes[0]).toBe(item.split("").filter((char) => char === '"' || char === "\\").length);
  });

  test("escaped key names are decoded", () => {
    const text = '{"type":"bundle","objects":[{"t\\u0079pe":"report","\\u0069d":"report--1","object\\u005frefs":["a--1"],"sub":{"x_r\\u0065f":"b--2"}}]}';

    const result = scanText(text);

    expect(result.strings[result.typeOf[0]!]).toBe("report");
    expect(result.strings[result.idOf[0]!]).toBe("report--1");
    expect(result.strings).toContain("object_refs");
    expect(result.strings).toContain("a--1");
    expect(result.strings).toContain("b--2");
  });

  test("escaped values are decoded", () => {
    const text = '{"type":"bundle","objects":[{"type":"x","id":"x--\\u00e9\\ud83d\\ude00\\"\\\\\\/\\b\\f\\n\\r\\t"}]}';

    const result = scanText(text);

    expect(result.strings[result.idOf[0]!]).toBe('x--é😀"\\/\b\f\n\r\t');
  });

  test("byte order mark is skipped", () => {
    const result = scan(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"type":"bundle","objects":[]}')]));

    expect(result.type).toBe("bundle");
    expect(result.count).toBe(0);
  });

  test("last objects member wins", () => {
    const result = scanText('{"type":"bundle","objects":[{"type":"a","id":"a--1"}],"objects":[{"type":"b","id":"b--2"}],"id":"bundle--1","id":"bundle--2"}');

    expect(result.count).toBe(1);
    expect(result.strings[result.idOf[0]!]).toBe("b--2");
    expect(result.id).toBe("bundle--2");
  });

  test("kinds of values are recorded", () => {
    const result = scanText('{"type":["bundle"],"objects":[1,"s",[],{},null,true,false]}');

    expect(result.typeKind).toBe(JsonKind.array);
    expect(result.type).toBeUndefined();
    expect([...result.kind]).toEqual([JsonKind.number, JsonKind.string, JsonKind.array, JsonKind.object, JsonKind.null, JsonKind.true, JsonKind.false]);
  });

  test("item ranges of scalars", () => {
    const text = '{"objects":[ 12.5e3 , "a]b" ,true]}';

    const result = scanText(text);

    const items = [0, 1, 2].map((item) => text.slice(result.start[item], result.end[item]));
    expect(items).toEqual(["12.5e3", '"a]b"', "true"]);
  });

  test("top-level scalars are accepted", () => {
    for (const text of ["0", " -1.5 ", '"x"', "null", "[]", "true"]) {
      expect(scanText(text).topKind).not.toBe(-1);
    }
  });
});

describe("BundleScanner syntax errors", () => {
  const invalid = [
    "",
    " ",
    "<!doctype html><html></html>",
    '{"a":1,}',
    '{"a":1 "b":2}',
    "[1,]",
    "[1 2]",
    '{"a" 1}',
    "{a:1}",
    "{'a':1}",
    '{"a":01}',
    '{"a":1.}',
    '{"a":.5}',
    '{"a":-}',
    '{"a":1e}',
    '{"a":+1}',
    '{"a":tru}',
    '{"a":nul}',
    '{"a":"\\x"}',
    '{"a":"\\u12G4"}',
    '{"a":"tab\there"}',
    '{"a":"line\nbreak"}',
    '{"a":1}}',
    '{"a":1} x',
    "[}",
    '{"a":[1}',
    "\ufeff\ufeff{}",
    '{"a":NaN}',
    '{"a":Infinity}',
  ];

  test.each(invalid)("JSON.parse agrees on %j", (text) => {
    expect(() => JSON.parse(text)).toThrow();
  });

  test.each(invalid)("rejects %j", (text) => {
    expect(scanError(text)).toBeInstanceOf(JsonScanError);
  });

  test("error names the byte offset", () => {
    const error = scanError('{"a":1,}');

    expect(error.offset).toBe(7);
    expect(error.truncated).toBe(false);
    expect(error.message).toContain("byte 7");
  });

  test.each([
    ['{"a":"tab\there"}', "invalid JSON at byte 9: found byte 0x09 inside a string, where control characters must be written as escapes such as \\u0009"],
    ['{"a":"\\q"}', "invalid JSON at byte 7: found 'q' where an escape character after the backslash (\" \\ / b f n r t or u) was expected"],
    ['{"a":"\\u12G4"}', "invalid JSON at byte 10: found 'G' where a hex digit of a \\u escape was expected"],
    ['{"a":-}', "invalid JSON at byte 6: found '}' where a digit of the number was expected"],
    ['{"a":tru}', "invalid JSON at byte 8: found '}' where the next letter of true was expected"],
  ])("error message for %j", (text, message) => {
    expect(scanError(text).message).toBe(message);
  });

  test("html body fails at the first byte", () => {
    const scanner = new BundleScanner();

    expect(() => scanner.write(Buffer.from("<html>"))).toThrow(JsonScanError);
  });

  test("every proper prefix is truncated", () => {
    const text = JSON.stringify({ type: "bundle", objects: TRICKY_OBJECTS });
    const bytes = Buffer.from(text, "utf8");

    for (let length = 0; length < bytes.length; length++) {
      const scanner = new BundleScanner();
      scanner.write(bytes.subarray(0, length));
      let error: unknown;
      try {
        scanner.end();
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(JsonScanError);
      expect((error as JsonScanError).truncated).toBe(true);
    }
  });

  test("failed scanner stays failed", () => {
    const scanner = new BundleScanner();
    expect(() => scanner.write(Buffer.from("{]"))).toThrow(JsonScanError);

    expect(() => scanner.write(Buffer.from("{}"))).toThrow(JsonScanError);
  });
});

describe("BundleScanner fast item path", () => {
  // A scan with the fast path must give the index that the state machine
  // alone gives, and the same error at the same byte.
  function expectSameIndex(bytes: Uint8Array, chunkSizes: number[]): void {
    for (const size of chunkSizes) {
      expect(snapshot(scan(bytes, size))).toEqual(snapshot(scan(bytes, size, false)));
    }
  }

  function scanFailure(text: string, fastItems: boolean): { message: string; offset: number; truncated: boolean } {
    try {
      scan(Buffer.from(text, "utf8"), undefined, fastItems);
    } catch (error) {
      if (error instanceof JsonScanError) {
        return { message: error.message, offset: error.offset, truncated: error.truncated };
      }
      throw error;
    }
    throw new Error(`scanning ${JSON.stringify(text)} did not fail`);
  }

  for (const release of RELEASES) {
    test(`ics-attack-${release} matches the state machine`, () => {
      expectSameIndex(fixtureBytes(release), [65_536, 4_096]);
    });
  }

  test("tricky objects match at every chunk size", () => {
    const bytes = Buffer.from(JSON.stringify({ type: "bundle", objects: TRICKY_OBJECTS }), "utf8");

    expectSameIndex(bytes, [bytes.length, 1000, 64, 13, 7, 3, 1]);
  });

  test("generated objects match", () => {
    const random = seededRandom(20_261_205);

    for (let round = 0; round < 150; round++) {
      const objects = Array.from({ length: 1 + Math.floor(random() * 6) }, () => randomItem(random));
      const text = `{"type":"bundle","objects":[${objects.map((item) => serialize(item, random)).join(",")}]}`;
      expect(() => JSON.parse(text)).not.toThrow();

      expectSameIndex(Buffer.from(text, "utf8"), [text.length * 4, 97, 5]);
    }
  });

  test("items nested too deep match", () => {
    const deep = `${"[".repeat(300)}"x"${"]".repeat(300)}`;
    const text = `{"objects":[{"type":"a","id":"a--1","x_refs":["b--2"],"deep":${deep},"nested":{"y_ref":"c--3"}}]}`;

    const result = scanText(text);

    expect(result.strings[result.idOf[0]!]).toBe("a--1");
    expectSameIndex(Buffer.from(text, "utf8"), [text.length, 11]);
  });

  test("bytes that are not ASCII flag the item", () => {
    const text = '{"objects":[{"name":"caf\u00e9"},{"name":"cafe","x":["\\u00e9"]},{"deep":[{"k":"\u4e2d"}]},{"k\u00e9y":1}]}';

    for (const fastItems of [true, false]) {
      const result = scan(Buffer.from(text, "utf8"), undefined, fastItems);

      expect([...result.flags].map((flags) => flags & FLAG_NON_ASCII)).toEqual([FLAG_NON_ASCII, 0, FLAG_NON_ASCII, FLAG_NON_ASCII]);
    }
  });

  test("whitespace and escapes inside items", () => {
    const text = '{"objects":[ { "type" : "a" ,\n\t"id":"a--1", "name":"q\\"uote\\\\ \\u0041 \\n" , "x" : [ 1 , { } ] } ]}';
    const item = JSON.parse(text).objects[0];

    const result = scanText(text);

    const served = text.slice(result.start[0], result.end[0]);
    expect(JSON.parse(served)).toEqual(item);
    expect(result.whitespace[0]).toBe(whitespaceOutsideStrings(served));
    expect(result.escapes[0]).toBe(served.split("").filter((char) => char === '"' || char === "\\").length);
    expectSameIndex(Buffer.from(text, "utf8"), [text.length, 2]);
  });

  const invalidItems = [
    '{"a":01}',
    '{"a":1.}',
    '{"a":-}',
    '{"a":1e+}',
    '{"a":tru}',
    '{"a":nulL}',
    '{"a":"\\x"}',
    '{"a":"\\u12G4"}',
    '{"a":"tab\there"}',
    '{"a" 1}',
    '{"a":1,}',
    '{"a":[1 2]}',
    '{"a":[1,]}',
    '{"a_ref":{"b":}}',
    '{"type":"x","id":"x--1","c_refs":["d--1",]}',
    '{"k\\q":1}',
    '{1:2}',
    '{"a":1]',
  ];

  test.each(invalidItems)("error in item %j matches", (item) => {
    const text = `{"type":"bundle","objects":[{"type":"ok","id":"ok--1"},${item}]}`;
    expect(() => JSON.parse(text)).toThrow();

    expect(scanFailure(text, true)).toEqual(scanFailure(text, false));
  });
});

const RANDOM_KEYS = ["type", "id", "x_opencti_id", "extensions", OPENCTI_EXTENSION_ID, "granular_markings", "marking_ref", "selectors", "a_ref", "b_refs", "_ref", "_refs", "name", "x\u0000y", 'q"k', "é_ref"];
const RANDOM_STRINGS = ["", "a--1", "b--2", "report--3", 'quote " and \\ slash', "line\nbreak\ttab", "é ü 中文 😀", "\u2028", "x".repeat(300)];
const RANDOM_NUMBERS = ["0", "-0", "12", "-3.25", "1e5", "2.5E-3", "-7e+2", "0.0001"];

// Returns a random item: mostly objects whose keys are the ones the scanner records.
function randomItem(random: () => number): unknown {
  const pick = random();
  if (pick < 0.05) {
    return randomValue(random, 2);
  }
  return randomObject(random, 0);
}

function randomObject(random: () => number, depth: number): Record<string, unknown> {
  const object: Record<string, unknown> = {};
  const members = Math.floor(random() * 7);
  for (let k = 0; k < members; k++) {
    const key = RANDOM_KEYS[Math.floor(random() * RANDOM_KEYS.length)]!;
    object[key] = randomValue(random, depth + 1);
  }
  return object;
}

function randomValue(random: () => number, depth: number): unknown {
  const pick = random();
  if (pick < 0.35) {
    return RANDOM_STRINGS[Math.floor(random() * RANDOM_STRINGS.length)];
  }
  if (pick < 0.45) {
    return { number: RANDOM_NUMBERS[Math.floor(random() * RANDOM_NUMBERS.length)] };
  }
  if (pick < 0.55) {
    return [true, false, null][Math.floor(random() * 3)];
  }
  if (depth > 5 || pick < 0.75) {
    return Array.from({ length: Math.floor(random() * 4) }, () => (depth > 5 ? "leaf" : randomValue(random, depth + 1)));
  }
  return randomObject(random, depth);
}

// Writes a value as JSON with random whitespace between tokens. A
// `{ number }` wrapper is written as the raw number text.
function serialize(value: unknown, random: () => number): string {
  const space = () => [" ", "", "", "\n", "\t ", "\r\n"][Math.floor(random() * 6)];
  if (typeof value === "string" || value === null || typeof value === "boolean") {
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    return `[${space()}${value.map((item) => serialize(item, random)).join(`${space()},${space()}`)}${space()}]`;
  }
  const record = value as Record<string, unknown>;
  if (Object.keys(record).length === 1 && typeof record.number === "string") {
    return record.number;
  }
  const members = Object.entries(record).map(([key, item]) => `${JSON.stringify(key)}${space()}:${space()}${serialize(item, random)}`);
  return `{${space()}${members.join(`${space()},${space()}`)}${space()}}`;
}
