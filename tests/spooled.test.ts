import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { AUTHOR_ID, chunkVersion, prepareVersion } from "../lib/bundle.ts";
import { BundleError, PushLimitError } from "../lib/errors.ts";
import { BundleScanner } from "../lib/scan.ts";
import { OPENCTI_EXTENSION_ID, splitBundle } from "../lib/splitter.ts";
import {
  PushRequestBuffer,
  SOURCE_ITEM,
  type SpooledVersion,
  chunkBundleId,
  chunkSpooledVersion,
  planChunks,
  prepareSpooledVersion,
  pushRequestEncoding,
} from "../lib/spooled.ts";
import type { StixObject } from "../lib/stix.ts";
import { bundleErrorOf } from "./helpers/bundle-error.ts";
import { seededRandom } from "./helpers/random.ts";

const VERSION = "20250105-1";
const FIXTURES = join(import.meta.dir, "fixtures");
const RELEASES = ["17.0", "17.1", "18.0", "18.1"];
const SPLIT_BUNDLE_ID = "bundle--00000000-0000-4000-8000-000000000000";
const PUSH_FIELDS = {
  query: "mutation ConnectorBundlePush($connectorId: String!, $bundle: String!, $workId: String) { stixBundlePush(connectorId: $connectorId, bundle: $bundle, work_id: $workId) }",
  connectorId: "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69",
  workId: "work--é\"quoted\"",
};

function uuid(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`;
}

function fixtureText(release: string): string {
  return gunzipSync(readFileSync(join(FIXTURES, `ics-attack-${release}.json.gz`))).toString("utf8");
}

/** Scans `text` and prepares it, reading items back from the same bytes. */
function spooled(text: string): SpooledVersion {
  const bytes = Buffer.from(text, "utf8");
  const scanner = new BundleScanner();
  scanner.write(bytes);
  return prepareSpooledVersion(scanner.end(), { text: (start, end) => bytes.toString("utf8", start, end), bytes: (start, end) => bytes.subarray(start, end) }, VERSION);
}

/** Returns the bundle ids and the sorted object ids of each bundle. */
function bundleContents(chunks: { json: string }[]): { ids: string[]; objects: string[][] } {
  const bundles = chunks.map((chunk) => JSON.parse(chunk.json) as { id: string; objects: StixObject[] });
  return {
    ids: bundles.map((bundle) => bundle.id),
    objects: bundles.map((bundle) => bundle.objects.map((object) => object.id).sort()),
  };
}

/** Returns the splitter's messages on whole objects and on the spooled version's light objects. */
function splitBoth(text: string): { whole: string[]; light: string[]; dropped: [number, number] } {
  const prepared = prepareVersion(JSON.parse(text), VERSION);
  const whole = splitBundle({ id: SPLIT_BUNDLE_ID, objects: prepared.objects });
  const version = spooled(text);
  const light = splitBundle({ id: SPLIT_BUNDLE_ID, objects: version.splitInput() });
  return {
    whole: whole.bundles.map(({ bundle }) => JSON.stringify(bundle)),
    light: light.bundles.map(({ bundle }) => JSON.stringify({ ...bundle, objects: [version.renderSplit(bundle.objects[0])] })),
    dropped: [whole.incompatible.length, light.incompatible.length],
  };
}

// A graph with the cases the splitter treats specially.
const TRICKY_GRAPH = {
  type: "bundle",
  id: "bundle--00000000-0000-4000-8000-0000000000ff",
  objects: [
    { type: "marking-definition", id: `marking-definition--${uuid(1)}`, definition_type: "statement", definition: { statement: "x" } },
    { type: "malware", id: `malware--${uuid(2)}`, name: "a", object_marking_refs: [`marking-definition--${uuid(1)}`], created_by_ref: null },
    { type: "malware", id: `malware--${uuid(3)}`, name: "b", created_by_ref: 5, x_opencti_id: "internal-3" },
    {
      type: "tool",
      id: `tool--${uuid(4)}`,
      name: "c",
      extensions: { [OPENCTI_EXTENSION_ID]: { id: "internal-4" } },
      external_references: [{ source_name: "s", url: "https://example.com/1" }, { source_name: "t", url: "https://example.com/1" }, { description: "no id" }],
      kill_chain_phases: [{ kill_chain_name: "k", phase_name: "p" }, { kill_chain_name: "k", phase_name: "p" }],
    },
    // A cycle of three, refs to internal ids, to itself, to a missing and an unsupported object.
    { type: "report", id: `report--${uuid(5)}`, object_refs: [`report--${uuid(6)}`, "internal-3", `report--${uuid(5)}`, `x-unknown--${uuid(9)}`, `malware--${uuid(99)}`, 12, null, `report--${uuid(6)}`] },
    { type: "report", id: `report--${uuid(6)}`, object_refs: [`report--${uuid(7)}`, "internal-4"] },
    { type: "report", id: `report--${uuid(7)}`, object_refs: [`report--${uuid(5)}`], odd_refs: "not a list", null_refs: null, thing_ref: { nested_ref: "x" } },
    { type: "relationship", id: `relationship--${uuid(8)}`, relationship_type: "uses", source_ref: `malware--${uuid(2)}`, target_ref: `x-unknown--${uuid(9)}` },
    { type: "relationship", id: `relationship--${uuid(10)}`, relationship_type: "uses", source_ref: `malware--${uuid(2)}`, target_ref: `tool--${uuid(4)}` },
    { type: "sighting", id: `sighting--${uuid(11)}`, sighting_of_ref: `malware--${uuid(3)}`, where_sighted_refs: [] },
    { type: "x-unknown", id: `x-unknown--${uuid(9)}`, name: "unsupported" },
    // The same id twice: the last one wins.
    { type: "malware", id: `malware--${uuid(12)}`, name: "first" },
    { type: "malware", id: `malware--${uuid(12)}`, name: "second", object_marking_refs: [`marking-definition--${uuid(1)}`] },
    { type: "identity", id: AUTHOR_ID, name: "served author, dropped" },
    { type: "ipv4-addr", id: `ipv4-addr--${uuid(13)}`, value: "192.0.2.1" },
  ],
};

describe("prepareSpooledVersion", () => {
  const invalid: [string, unknown][] = [
    ["null", null],
    ["a number", 42],
    ["a string", "bundle"],
    ["an array", []],
    ["a boolean", true],
    ["a missing type", { objects: [] }],
    ["a wrong type", { type: "report", objects: [] }],
    ["an object type", { type: { a: [1] }, objects: [] }],
    ["a number type", { type: 1.5, objects: [] }],
    ["missing objects", { type: "bundle" }],
    ["non-array objects", { type: "bundle", objects: {} }],
    ["a null object", { type: "bundle", objects: [null] }],
    ["an array object", { type: "bundle", objects: [[]] }],
    ["an object without type", { type: "bundle", objects: [{ id: `indicator--${uuid(1)}` }] }],
    ["an object with empty type", { type: "bundle", objects: [{ type: "", id: `--${uuid(1)}` }] }],
    ["an object with number type", { type: "bundle", objects: [{ type: 3, id: `--${uuid(1)}` }] }],
    ["an object without id", { type: "bundle", objects: [{ type: "indicator" }] }],
    ["an object with array id", { type: "bundle", objects: [{ type: "indicator", id: ["indicator--1"] }] }],
    ["an id of another type", { type: "bundle", objects: [{ type: "indicator", id: `malware--${uuid(1)}` }] }],
    ["a bad second object", { type: "bundle", objects: [{ type: "indicator", id: `indicator--${uuid(1)}` }, { id: "x" }] }],
  ];

  test.each(invalid)("rejects %s as prepareVersion", (_name, json) => {
    const expected = bundleErrorOf(() => prepareVersion(json, VERSION));

    const error = bundleErrorOf(() => spooled(JSON.stringify(json)));

    expect(error.message).toBe(expected.message);
    expect(error.versionId).toBe(VERSION);
    expect(error.retryable).toBe(false);
  });

  test("tricky graph objects equal prepareVersion's", () => {
    const text = JSON.stringify(TRICKY_GRAPH);
    const expected = prepareVersion(JSON.parse(text), VERSION);

    const version = spooled(text);

    expect(version.objectCount).toBe(expected.objects.length);
    expect([...version.items].map((item) => version.object(item))).toEqual(expected.objects.slice(1));
    expect(version.bundleId).toBe(TRICKY_GRAPH.id);
  });

  for (const release of RELEASES) {
    test(`ics-attack-${release} objects equal prepareVersion's`, () => {
      const text = fixtureText(release);
      const expected = prepareVersion(JSON.parse(text), VERSION);

      const version = spooled(text);

      expect([...version.items].map((item) => version.object(item))).toEqual(expected.objects.slice(1));
    });
  }

  test("texts parse as the objects", () => {
    const version = spooled(JSON.stringify(TRICKY_GRAPH));

    for (const item of version.items) {
      expect(JSON.parse(version.text(item))).toEqual(version.object(item));
    }
  });

  test("minified text without author is served bytes", () => {
    const text = '{"type":"bundle","objects":[{"type":"malware","id":"malware--1","created_by_ref":"identity--2","name":"\\u00e9"}]}';

    const version = spooled(text);

    expect(version.text(0)).toBe('{"type":"malware","id":"malware--1","created_by_ref":"identity--2","name":"\\u00e9"}');
  });

  test("pretty text is minified", () => {
    const text = JSON.stringify({ type: "bundle", objects: [{ type: "malware", id: "malware--1", created_by_ref: "identity--2" }] }, null, 2);

    const version = spooled(text);

    expect(version.text(0)).toBe('{"type":"malware","id":"malware--1","created_by_ref":"identity--2"}');
  });

  for (const pretty of [false, true]) {
    test(`appended author serializes as prepareVersion${pretty ? ", pretty" : ""}`, () => {
      const served = JSON.parse(fixtureText("18.0")) as { objects: StixObject[] };
      for (const object of served.objects) {
        delete object.created_by_ref;
      }
      const text = JSON.stringify(served, null, pretty ? 2 : undefined);
      const expected = prepareVersion(JSON.parse(text), VERSION).objects.slice(1);

      const version = spooled(text);

      expect([...version.items].every((item) => version.streamable(item))).toBe(true);
      expect([...version.items].map((item) => version.text(item))).toEqual(expected.map((object) => JSON.stringify(object)));
    });
  }

  test("null author is set in place", () => {
    const text = JSON.stringify({ type: "bundle", objects: [{ type: "malware", id: "malware--1", created_by_ref: null, name: "n" }] });

    const version = spooled(text);

    expect(version.streamable(0)).toBe(false);
    expect(version.text(0)).toBe(`{"type":"malware","id":"malware--1","created_by_ref":"${AUTHOR_ID}","name":"n"}`);
  });

  test("missing bundle id becomes random", () => {
    const version = spooled('{"type":"bundle","objects":[]}');

    expect(version.bundleId).toMatch(/^bundle--[0-9a-f-]{36}$/);
  });
});

describe("chunkSpooledVersion", () => {
  for (const release of RELEASES) {
    for (const maxBytes of [10_000_000, 400_000, 250_000]) {
      // Minified as JSON.stringify writes it, a served text is the text
      // chunkVersion measures, so the bundles are the same.
      test(`ics-attack-${release} at ${maxBytes} bytes as chunkVersion`, () => {
        const text = JSON.stringify(JSON.parse(fixtureText(release)));
        const prepared = prepareVersion(JSON.parse(text), VERSION);
        const expected = bundleContents(chunkVersion(VERSION, prepared.bundleId, prepared.objects, maxBytes));

        const chunks = [...chunkSpooledVersion(spooled(text), maxBytes)];

        expect(bundleContents(chunks)).toEqual(expected);
        expect(Math.max(...chunks.map((chunk) => Buffer.byteLength(chunk.json)))).toBeLessThanOrEqual(maxBytes);
      });
    }
  }

  for (const release of RELEASES) {
    // Pretty-printed, served escapes such as \u2019 stay as they are, so
    // sizes and cuts may differ from chunkVersion's but the rules hold.
    test(`ics-attack-${release} pretty keeps the rules`, () => {
      const text = fixtureText(release);
      const served = JSON.parse(text).objects as StixObject[];
      const maxBytes = 300_000;

      const chunks = [...chunkSpooledVersion(spooled(text), maxBytes)];

      const bundles = chunks.map((chunk) => JSON.parse(chunk.json) as { id: string; objects: StixObject[] });
      expect(Math.max(...chunks.map((chunk) => Buffer.byteLength(chunk.json)))).toBeLessThanOrEqual(maxBytes);
      expect(bundles.map((bundle) => bundle.id)).toEqual(bundles.map((_bundle, index) => chunkBundleId(bundles[0]!.id, index)));
      const sent = new Map<string, number>();
      for (const [index, bundle] of bundles.entries()) {
        expect(bundle.objects[0]!.id).toBe(AUTHOR_ID);
        const inBundle = new Set(bundle.objects.map((object) => object.id));
        for (const object of bundle.objects) {
          for (const marking of (object.object_marking_refs as string[] | undefined) ?? []) {
            expect(inBundle.has(marking)).toBe(true);
          }
          if (object.type !== "marking-definition" && object.id !== AUTHOR_ID) {
            expect(sent.has(object.id)).toBe(false);
            sent.set(object.id, index);
          }
        }
      }
      const versionIds = new Set(served.map((object) => object.id));
      for (const object of served.filter((candidate) => candidate.type !== "marking-definition")) {
        expect(sent.has(object.id)).toBe(true);
        for (const ref of [object.source_ref, object.target_ref]) {
          if (typeof ref === "string" && versionIds.has(ref) && sent.has(ref)) {
            expect(sent.get(ref)!).toBeLessThanOrEqual(sent.get(object.id)!);
          }
        }
      }
    });
  }

  test("tricky graph cut as chunkVersion", () => {
    const text = JSON.stringify(TRICKY_GRAPH);
    const prepared = prepareVersion(JSON.parse(text), VERSION);

    for (const maxBytes of [2_000, 1_500, 1_200]) {
      const expected = bundleContents(chunkVersion(VERSION, prepared.bundleId, prepared.objects, maxBytes));
      expect(expected.ids.length).toBeGreaterThan(1);
      expect(bundleContents([...chunkSpooledVersion(spooled(text), maxBytes)])).toEqual(expected);
    }
  });

  test("duplicate id is sent once, last text", () => {
    const chunks = [...chunkSpooledVersion(spooled(JSON.stringify(TRICKY_GRAPH)), 100_000)];

    const objects = chunks.flatMap((chunk) => (JSON.parse(chunk.json) as { objects: StixObject[] }).objects);
    const duplicates = objects.filter((object) => object.id === `malware--${uuid(12)}`);
    expect(chunks.length).toBe(1);
    expect(duplicates.map((object) => object.name)).toEqual(["second"]);
  });

  test("bundle of exactly the limit is one", () => {
    const version = spooled(fixtureText("17.0"));
    const single = [...chunkSpooledVersion(version, 10_000_000)][0]!;
    const exact = Buffer.byteLength(single.json);

    expect([...chunkSpooledVersion(version, exact)].length).toBe(1);
    expect([...chunkSpooledVersion(version, exact - 1)].length).toBe(2);
  });

  test("object over the limit raises", () => {
    const version = spooled(fixtureText("17.0"));

    const error = bundleErrorOf(() => [...chunkSpooledVersion(version, 100_000)]);

    expect(error.message).toContain("x-mitre-collection--");
    expect(error.message).toContain("raise CONNECTOR_PUSH_MAX_MB");
    expect(error.message).toStartWith("Citalid version ");
    expect(error.message).toContain(" cannot be pushed: ");
    expect(error).toBeInstanceOf(PushLimitError);
  });

  test("object over the limit raises first", () => {
    const plans = planChunks(spooled(fixtureText("17.0")), 100_000);

    expect(() => plans.next()).toThrow(BundleError);
  });

  test("grown numbers are measured exactly", () => {
    // 2,000 numbers of 4 bytes that JSON.stringify writes with 21 digits.
    // A small object first, so that planning alone would send a bundle before it met the grown one.
    const small = { type: "tool", id: `tool--${uuid(2)}`, name: "first" };
    // A null created_by_ref makes it parsed and serialized again, where numbers grow.
    const grown = { type: "malware", id: `malware--${uuid(1)}`, created_by_ref: null, x_values: "1e20,".repeat(2_000).slice(0, -1) };
    const text = JSON.stringify({ type: "bundle", objects: [small, grown] }).replace(/"x_values":"([^"]*)"/, '"x_values":[$1]');

    const error = bundleErrorOf(() => planChunks(spooled(text), 30_000).next());

    expect(Buffer.byteLength(text)).toBeLessThan(12_000);
    expect(error.message).toContain(`object malware--${uuid(1)} alone needs`);
  });

  test("plans count each object once", () => {
    const text = fixtureText("18.0");
    const version = spooled(text);

    const plans = [...planChunks(version, 300_000)];

    const counted = plans.reduce((sum, plan) => sum + plan.versionObjects, 0);
    expect(counted).toBe(version.objectCount - 1);
  });

  test("plan json bytes are the bundle size", () => {
    const version = spooled(fixtureText("18.0"));

    for (const plan of planChunks(version, 300_000, pushRequestEncoding(PUSH_FIELDS))) {
      const bundle = JSON.parse(Buffer.from(new PushRequestBuffer().write(plan, PUSH_FIELDS, version)).toString("utf8")).variables.bundle as string;
      expect(plan.jsonBytes).toBe(Buffer.byteLength(bundle));
    }
  });
});

describe("pushRequestEncoding", () => {
  const version = spooled(fixtureText("17.1"));
  const maxBytes = 300_000;
  const plans = [...planChunks(version, maxBytes, pushRequestEncoding(PUSH_FIELDS))];
  const buffer = new PushRequestBuffer();
  const bodies = plans.map((plan) => Buffer.from(buffer.write(plan, PUSH_FIELDS, version)));

  test("bodies are their planned size", () => {
    expect(bodies.map((body) => body.length)).toEqual(plans.map((plan) => plan.bytes));
  });

  test("bodies stay under the limit", () => {
    expect(Math.max(...bodies.map((body) => body.length))).toBeLessThanOrEqual(maxBytes);
  });

  test("bodies carry the request fields", () => {
    for (const body of bodies) {
      const request = JSON.parse(body.toString("utf8"));
      expect(request.query).toBe(PUSH_FIELDS.query);
      expect(request.variables.connectorId).toBe(PUSH_FIELDS.connectorId);
      expect(request.variables.workId).toBe(PUSH_FIELDS.workId);
    }
  });

  test("bundles carry every object", () => {
    const served = JSON.parse(fixtureText("17.1")).objects as StixObject[];

    const received = new Set(bodies.flatMap((body) => JSON.parse(JSON.parse(body.toString("utf8")).variables.bundle).objects.map((object: StixObject) => object.id)));

    expect(served.filter((object) => !received.has(object.id))).toEqual([]);
    expect(received.has(AUTHOR_ID)).toBe(true);
  });
});

describe("request bodies from served bytes", () => {
  // Objects are copied from their bytes, escaped, minified and given the author on the way.
  const objects = [
    ...JSON.parse(fixtureText("18.0")).objects.map((object: StixObject, index: number) => {
      if (index % 2 === 0) {
        delete object.created_by_ref;
      }
      return object;
    }),
    { type: "malware", id: `malware--${uuid(7)}`, created_by_ref: AUTHOR_ID, name: 'q"uo\\te \\"', description: "é 中文 😀 \u2028 \ud800 ]}{[" },
  ];
  // Half of the objects pretty-printed, so that copies both minify and pass through.
  const text = `{"type":"bundle","id":"bundle--00000000-0000-4000-8000-0000000000aa","objects":[${objects.map((object, index) => JSON.stringify(object, null, index % 3 === 0 ? 1 : undefined)).join(",")}]}`;
  const version = spooled(text);
  const plans = [...planChunks(version, 300_000, pushRequestEncoding(PUSH_FIELDS))];
  const buffer = new PushRequestBuffer();
  const bodies = plans.map((plan) => Buffer.from(buffer.write(plan, PUSH_FIELDS, version)));

  test("most objects are streamed", () => {
    const streamed = [...version.items].filter((item) => version.streamable(item));

    expect(streamed.length).toBeGreaterThan(version.items.length - 5);
  });

  test("bodies are their planned size", () => {
    expect(bodies.map((body) => body.length)).toEqual(plans.map((plan) => plan.bytes));
    expect(Math.max(...bodies.map((body) => body.length))).toBeLessThanOrEqual(300_000);
  });

  test("objects equal prepareVersion's", () => {
    const expected = prepareVersion(JSON.parse(text), VERSION).objects;

    const received = new Map(
      bodies.flatMap((body) => (JSON.parse(JSON.parse(body.toString("utf8")).variables.bundle) as { objects: StixObject[] }).objects).map((object) => [object.id, object]),
    );

    for (const object of expected) {
      expect(received.get(object.id)).toEqual(object);
    }
  });

  test("bodies and bundles are ASCII", () => {
    for (const body of bodies) {
      const bundle = JSON.parse(body.toString("utf8")).variables.bundle as string;

      expect(body.every((byte) => byte < 0x80)).toBe(true);
      expect(/^[\x00-\x7f]*$/.test(bundle)).toBe(true);
    }
  });

  test("invalid UTF-8 arrives as U+FFFD", () => {
    const bytes = Buffer.concat([
      Buffer.from(`{"type":"bundle","objects":[{"type":"malware","id":"malware--${uuid(8)}","created_by_ref":"identity--x","name":"a`),
      Buffer.from([0xff, 0xc3]),
      Buffer.from('b"}]}'),
    ]);
    const scanner = new BundleScanner();
    scanner.write(bytes);
    const invalid = prepareSpooledVersion(scanner.end(), { text: (start, end) => bytes.toString("utf8", start, end), bytes: (start, end) => bytes.subarray(start, end) }, VERSION);

    const [plan] = [...planChunks(invalid, 100_000, pushRequestEncoding(PUSH_FIELDS))];
    const body = Buffer.from(new PushRequestBuffer().write(plan!, PUSH_FIELDS, invalid)).toString("utf8");

    expect(JSON.parse(JSON.parse(body).variables.bundle).objects[1].name).toBe("a\ufffd\ufffdb");
    expect(body).toContain("a\\\\ufffd\\\\ufffdb");
  });
});

describe("request bodies in ASCII", () => {
  // Byte sequences of every kind the UTF-8 decoder meets: valid ones of 2, 3
  // and 4 bytes, cut ones, overlong ones, surrogates, bytes past U+10FFFF
  // and bytes that never start a sequence.
  const SEQUENCES = [
    [0xc3, 0xa9],
    [0xe4, 0xb8, 0xad],
    [0xf0, 0x9f, 0x98, 0x80],
    [0xe2, 0x80, 0xa8],
    [0x80],
    [0xbf, 0xc3, 0xa9],
    [0xc0, 0xaf],
    [0xc1, 0xbf],
    [0xe0, 0x80, 0x80],
    [0xe0, 0xa0],
    [0xed, 0xa0, 0x80],
    [0xed, 0x9f, 0xbf],
    [0xf0, 0x8f, 0xbf, 0xbf],
    [0xf4, 0x8f, 0xbf, 0xbf],
    [0xf4, 0x90, 0x80, 0x80],
    [0xf0, 0x9f, 0x98],
    [0xe4, 0xb8],
    [0xc3],
    [0xf5, 0x80],
    [0xfe, 0xff],
  ];

  // Returns a served version whose objects carry `sequences` in a string,
  // the odd ones pretty-printed, and the text TextDecoder reads from it.
  function servedWith(sequences: number[][]): { bytes: Buffer; text: string } {
    const parts: Buffer[] = [Buffer.from('{"type":"bundle","objects":[')];
    sequences.forEach((sequence, index) => {
      const space = index % 2 === 1 ? "\n  " : "";
      parts.push(Buffer.from(`${index > 0 ? "," : ""}{${space}"type": "malware",${space}"id":"malware--${uuid(100 + index)}",${space}"created_by_ref":"${AUTHOR_ID}","name":"a`));
      parts.push(Buffer.from(sequence));
      parts.push(Buffer.from(`\\"z",${space}"labels":["\u00e9${index}"]}`));
    });
    parts.push(Buffer.from("]}"));
    const bytes = Buffer.concat(parts);
    return { bytes, text: new TextDecoder().decode(bytes) };
  }

  // Returns the objects, the request bodies and their planned sizes for a plan of `bytes`.
  function pushed(bytes: Buffer, maxBytes: number): { objects: StixObject[]; bodies: Buffer[]; plans: number[] } {
    const scanner = new BundleScanner();
    scanner.write(bytes);
    const version = prepareSpooledVersion(scanner.end(), { text: (start, end) => bytes.toString("utf8", start, end), bytes: (start, end) => bytes.subarray(start, end) }, VERSION);
    const buffer = new PushRequestBuffer();
    const plans = [...planChunks(version, maxBytes, pushRequestEncoding(PUSH_FIELDS))];
    const bodies = plans.map((plan) => Buffer.from(buffer.write(plan, PUSH_FIELDS, version)));
    const objects = bodies.flatMap((body) => (JSON.parse(JSON.parse(body.toString("ascii")).variables.bundle) as { objects: StixObject[] }).objects);
    return { objects, bodies, plans: plans.map((plan) => plan.bytes) };
  }

  test("each sequence reads as TextDecoder reads it", () => {
    const { bytes, text } = servedWith(SEQUENCES);

    const { objects, bodies, plans } = pushed(bytes, 100_000);

    expect(bodies.map((body) => body.length)).toEqual(plans);
    expect(bodies.every((body) => body.every((byte) => byte < 0x80))).toBe(true);
    const served = (JSON.parse(text) as { objects: StixObject[] }).objects;
    for (const object of served) {
      expect(objects.find((received) => received.id === object.id)).toEqual(object);
    }
  });

  test("random bytes read as TextDecoder reads them", () => {
    const random = seededRandom(41);
    const sequences = Array.from({ length: 300 }, () =>
      Array.from({ length: 1 + Math.floor(random() * 9) }, () => (random() < 0.2 ? 0x61 : 0x80 + Math.floor(random() * 0x80))),
    );
    const { bytes, text } = servedWith(sequences);

    const { objects, bodies, plans } = pushed(bytes, 20_000);

    expect(bodies.length).toBeGreaterThan(1);
    expect(bodies.map((body) => body.length)).toEqual(plans);
    const served = (JSON.parse(text) as { objects: StixObject[] }).objects;
    for (const object of served) {
      expect(objects.find((received) => received.id === object.id)).toEqual(object);
    }
  });

  test("size check counts exact escapes", () => {
    const { bytes } = servedWith([[0xc3, 0xa9, ...Buffer.from("x".repeat(5000))]]);
    const [body] = pushed(bytes, 1_000_000).bodies;

    expect(pushed(bytes, body!.length).bodies).toHaveLength(1);
    expect(() => pushed(bytes, body!.length - 1)).toThrow(PushLimitError);
  });

  test("escapes are lowercase \\uXXXX", () => {
    const { bytes } = servedWith([[0xf0, 0x9f, 0x98, 0x80]]);

    const { bodies } = pushed(bytes, 100_000);

    expect(bodies[0]!.toString("ascii")).toContain("a\\\\ud83d\\\\ude00\\\\\\\"z");
  });
});

describe("splitInput", () => {
  for (const release of RELEASES) {
    test(`ics-attack-${release} split as whole objects`, () => {
      const { whole, light, dropped } = splitBoth(fixtureText(release));

      expect(light.length).toBe(whole.length);
      expect(light).toEqual(whole);
      expect(dropped[1]).toBe(dropped[0]);
    });
  }

  test("tricky graph split as whole objects", () => {
    const { whole, light, dropped } = splitBoth(JSON.stringify(TRICKY_GRAPH));

    expect(light).toEqual(whole);
    expect(dropped[1]).toBe(dropped[0]);
  });

  test("light objects carry their item", () => {
    const version = spooled(JSON.stringify(TRICKY_GRAPH));

    const input = version.splitInput();

    expect((input[0] as unknown as Record<symbol, unknown>)[SOURCE_ITEM]).toBeUndefined();
    expect(input.slice(1).map((object) => (object as unknown as Record<symbol, unknown>)[SOURCE_ITEM])).toEqual([...version.items]);
  });

  test("light objects hold no text", () => {
    const version = spooled(JSON.stringify(TRICKY_GRAPH));

    const light = version.splitInput().find((object) => object.id === `tool--${uuid(4)}`)!;

    expect(Object.keys(light)).toEqual(["type", "id", "extensions", "created_by_ref"]);
  });
});
