import { beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import {
  AUTHOR_ID,
  authorIdentity,
  chunkVersion,
  dependencyOrder,
  prepareVersion,
  referencedIds,
  takesAuthor,
  type BundleChunk,
} from "../lib/bundle.ts";
import type { StixBundle, StixObject } from "../lib/stix.ts";
import { bundleErrorOf } from "./helpers/bundle-error.ts";

const VERSION = "20250105-1";
const BUNDLE_ID = "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d";

/** RFC 4122 version 5 UUID, written here apart from the one in lib/splitter.ts so the two check each other. */
function referenceUuid5(name: string, namespace: string): string {
  const digest = createHash("sha1")
    .update(Buffer.from(namespace.replaceAll("-", ""), "hex"))
    .update(Buffer.from(name, "utf8"))
    .digest("hex");
  const versionNibble = "5";
  const variantNibble = ((parseInt(digest[16]!, 16) & 0x3) | 0x8).toString(16);
  return [
    digest.slice(0, 8),
    digest.slice(8, 12),
    versionNibble + digest.slice(13, 16),
    variantNibble + digest.slice(17, 20),
    digest.slice(20, 32),
  ].join("-");
}

function uuid(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`;
}

describe("referenceUuid5", () => {
  test("matches Python's uuid5 example", () => {
    // Python's uuid module documentation: uuid5(NAMESPACE_DNS, "python.org").
    expect(referenceUuid5("python.org", "6ba7b810-9dad-11d1-80b4-00c04fd430c8")).toBe(
      "886313e1-3b8a-5372-9b90-0c9aee199e5d",
    );
  });
});

describe("AUTHOR_ID", () => {
  test("is uuid5 of canonical organization", () => {
    const expected =
      "identity--" +
      referenceUuid5('{"identity_class":"organization","name":"citalid"}', "00abedb4-aa42-466c-9c01-fed23315a9b7");

    expect(AUTHOR_ID).toBe(expected);
  });

  test("is the author identity's id", () => {
    expect(authorIdentity().id).toBe(AUTHOR_ID);
  });

  test("author identity is identical each call", () => {
    expect(authorIdentity()).toEqual(authorIdentity());
  });
});

describe("takesAuthor", () => {
  const cases: [string, boolean][] = [
    ["attack-pattern", true],
    ["indicator", true],
    ["report", true],
    ["relationship", true],
    ["sighting", true],
    ["x-mitre-tactic", true],
    ["identity", false],
    ["marking-definition", false],
    ["ipv4-addr", false],
    ["domain-name", false],
    ["file", false],
  ];

  for (const [type, expected] of cases) {
    test(`returns ${expected} for ${type}`, () => {
      expect(takesAuthor(type)).toBe(expected);
    });
  }
});

describe("prepareVersion", () => {
  const invalid: [string, unknown, string][] = [
    ["null", null, "expected a JSON object, got null"],
    ["a number", 42, "expected a JSON object, got number"],
    ["a string", "bundle", "expected a JSON object, got string"],
    ["an array", [], "expected a JSON object, got an array"],
    ["a missing type", { objects: [] }, '"type" is missing'],
    ["a wrong type", { type: "report", objects: [] }, '"type" is "report"'],
    ["missing objects", { type: "bundle" }, '"objects" is missing'],
    ["non-array objects", { type: "bundle", objects: {} }, '"objects" is not an array'],
    ["a null object", { type: "bundle", objects: [null] }, "objects[0] is not an object"],
    ["an array object", { type: "bundle", objects: [[]] }, "objects[0] is not an object"],
    ["an object without type", { type: "bundle", objects: [{ id: `indicator--${uuid(1)}` }] }, 'objects[0] has no string "type"'],
    ["an object with empty type", { type: "bundle", objects: [{ type: "", id: `--${uuid(1)}` }] }, 'objects[0] has no string "type"'],
    ["an object without id", { type: "bundle", objects: [{ type: "indicator" }] }, "objects[0] (type indicator) has no id"],
    [
      "an id of another type",
      { type: "bundle", objects: [{ type: "indicator", id: `malware--${uuid(1)}` }] },
      "objects[0] (type indicator) has no id",
    ],
    [
      "a bad second object",
      { type: "bundle", objects: [{ type: "indicator", id: `indicator--${uuid(1)}` }, { id: "x" }] },
      "objects[1] has no string",
    ],
  ];

  for (const [name, json, problem] of invalid) {
    test(`rejects ${name}`, () => {
      const error = bundleErrorOf(() => prepareVersion(json, VERSION));

      expect(error.versionId).toBe(VERSION);
      expect(error.message).toContain(`Citalid version ${VERSION}`);
      expect(error.message).toContain(problem);
      expect(error.retryable).toBe(false);
    });
  }

  function sample(): StixBundle {
    return {
      type: "bundle",
      id: BUNDLE_ID,
      objects: [
        {
          type: "report",
          spec_version: "2.1",
          id: `report--${uuid(1)}`,
          name: "Weekly",
          published: "2025-01-05T00:00:00.000Z",
          object_refs: [`indicator--${uuid(2)}`, `ipv4-addr--${uuid(3)}`],
        },
        { type: "indicator", spec_version: "2.1", id: `indicator--${uuid(2)}`, pattern: "[ipv4-addr:value = '192.0.2.1']" },
        { type: "ipv4-addr", spec_version: "2.1", id: `ipv4-addr--${uuid(3)}`, value: "192.0.2.1" },
        {
          type: "relationship",
          spec_version: "2.1",
          id: `relationship--${uuid(4)}`,
          relationship_type: "based-on",
          source_ref: `indicator--${uuid(2)}`,
          target_ref: `ipv4-addr--${uuid(3)}`,
        },
        { type: "identity", spec_version: "2.1", id: `identity--${uuid(5)}`, name: "ACME", identity_class: "organization" },
        {
          type: "marking-definition",
          spec_version: "2.1",
          id: `marking-definition--${uuid(6)}`,
          definition_type: "statement",
          definition: { statement: "Copyright" },
        },
        {
          type: "malware",
          spec_version: "2.1",
          id: `malware--${uuid(7)}`,
          name: "Kept",
          is_family: true,
          created_by_ref: `identity--${uuid(5)}`,
        },
        {
          type: "malware",
          spec_version: "2.1",
          id: `malware--${uuid(8)}`,
          name: "Foreign",
          is_family: true,
          created_by_ref: `identity--${uuid(99)}`,
        },
        { type: "x-citalid-score", id: `x-citalid-score--${uuid(9)}`, value: 3 },
        { type: "attack-pattern", spec_version: "2.1", id: `attack-pattern--${uuid(10)}`, name: "Null author", created_by_ref: null },
      ],
    };
  }

  function prepared(): Map<string, StixObject> {
    const { objects } = prepareVersion(sample(), VERSION);
    return new Map(objects.map((object) => [object.id, object]));
  }

  test("puts author identity first", () => {
    const { objects } = prepareVersion(sample(), VERSION);

    expect(objects[0]).toEqual(authorIdentity());
  });

  test("keeps every object in order", () => {
    const { objects } = prepareVersion(sample(), VERSION);

    expect(objects.slice(1).map((object) => object.id)).toEqual(sample().objects.map((object) => object.id));
  });

  test("keeps the bundle id", () => {
    expect(prepareVersion(sample(), VERSION).bundleId).toBe(BUNDLE_ID);
  });

  test("makes a bundle id when missing", () => {
    const { bundleId } = prepareVersion({ type: "bundle", objects: [] }, VERSION);

    expect(bundleId).toMatch(/^bundle--[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  const authored: [string, string | null][] = [
    [`report--${uuid(1)}`, AUTHOR_ID],
    [`indicator--${uuid(2)}`, AUTHOR_ID],
    [`relationship--${uuid(4)}`, AUTHOR_ID],
    [`x-citalid-score--${uuid(9)}`, AUTHOR_ID],
    [`attack-pattern--${uuid(10)}`, AUTHOR_ID],
    [`malware--${uuid(7)}`, `identity--${uuid(5)}`],
    [`malware--${uuid(8)}`, `identity--${uuid(99)}`],
  ];

  for (const [id, expected] of authored) {
    test(`sets created_by_ref of ${id.split("--")[0]} ${id.slice(-2)}`, () => {
      expect(prepared().get(id)?.created_by_ref).toBe(expected);
    });
  }

  const unauthored = [`ipv4-addr--${uuid(3)}`, `identity--${uuid(5)}`, `marking-definition--${uuid(6)}`];

  for (const id of unauthored) {
    test(`adds no author to ${id.split("--")[0]}`, () => {
      expect(prepared().get(id)).not.toHaveProperty("created_by_ref");
    });
  }

  test("leaves report object_refs alone", () => {
    const report = prepared().get(`report--${uuid(1)}`);

    expect(report?.object_refs).toEqual([`indicator--${uuid(2)}`, `ipv4-addr--${uuid(3)}`]);
  });

  test("replaces a served author identity", () => {
    const served = { ...authorIdentity(), name: "citalid (served)" };

    const { objects } = prepareVersion({ type: "bundle", objects: [served] }, VERSION);

    expect(objects).toEqual([authorIdentity()]);
  });
});

describe("referencedIds", () => {
  test("collects refs at any depth", () => {
    const object: StixObject = {
      type: "x-mitre-collection",
      id: `x-mitre-collection--${uuid(1)}`,
      created_by_ref: "identity--a",
      object_marking_refs: ["marking-definition--b"],
      x_mitre_contents: [{ object_ref: "attack-pattern--c", object_modified: "2025-01-01T00:00:00.000Z" }],
      granular_markings: [{ marking_ref: "marking-definition--d", selectors: ["name"] }],
      extensions: { "x-ext": { sample_refs: ["file--e"] } },
      name_ref: 5,
    };

    expect(referencedIds(object).sort()).toEqual([
      "attack-pattern--c",
      "file--e",
      "identity--a",
      "marking-definition--b",
      "marking-definition--d",
    ]);
  });
});

describe("dependencyOrder", () => {
  const object = (id: string, refs: string[] = []): StixObject => ({ type: id.split("--")[0]!, id, object_refs: refs });

  test("puts referenced objects first", () => {
    const objects = [
      object("report--1", ["indicator--2", "malware--3"]),
      object("indicator--2", ["malware--3"]),
      object("malware--3"),
    ];

    expect(dependencyOrder(objects).map((item) => item.id)).toEqual(["malware--3", "indicator--2", "report--1"]);
  });

  test("keeps order without references", () => {
    const objects = [object("malware--1"), object("malware--2"), object("malware--3")];

    expect(dependencyOrder(objects).map((item) => item.id)).toEqual(["malware--1", "malware--2", "malware--3"]);
  });

  test("ignores refs outside the list", () => {
    const objects = [object("report--1", ["indicator--404"]), object("malware--2")];

    expect(dependencyOrder(objects).map((item) => item.id)).toEqual(["report--1", "malware--2"]);
  });

  test("returns each object of a cycle once", () => {
    const objects = [
      object("report--1", ["report--2"]),
      object("report--2", ["report--3"]),
      object("report--3", ["report--1"]),
      object("report--4", ["report--4"]),
    ];

    const ordered = dependencyOrder(objects).map((item) => item.id);

    expect(ordered.toSorted()).toEqual(["report--1", "report--2", "report--3", "report--4"]);
  });

  test("handles a deep reference chain", () => {
    const depth = 20_000;
    const objects = Array.from({ length: depth }, (_, i) =>
      object(`report--${i}`, i + 1 < depth ? [`report--${i + 1}`] : []),
    );

    const ordered = dependencyOrder(objects);

    expect(ordered[0]?.id).toBe(`report--${depth - 1}`);
    expect(ordered.at(-1)?.id).toBe("report--0");
  });
});

/** The objects of one pushed bundle, with its id and byte size. */
interface ParsedChunk {
  id: string;
  bytes: number;
  declared: number;
  objects: StixObject[];
}

function parseChunks(chunks: BundleChunk[]): ParsedChunk[] {
  return chunks.map((chunk) => {
    const bundle = JSON.parse(chunk.json) as StixBundle;
    return { id: bundle.id, bytes: Buffer.byteLength(chunk.json), declared: chunk.objects, objects: bundle.objects };
  });
}

function markingRefsOf(object: StixObject): string[] {
  const direct = Array.isArray(object.object_marking_refs) ? (object.object_marking_refs as string[]) : [];
  const granular = Array.isArray(object.granular_markings)
    ? (object.granular_markings as { marking_ref?: string }[]).flatMap((marking) =>
        marking.marking_ref ? [marking.marking_ref] : [],
      )
    : [];
  return [...direct, ...granular];
}

/** A made-up version with markings, an outside author, observables and references in every direction. */
function syntheticVersion(): StixBundle {
  const filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(4);
  const markingA = `marking-definition--${uuid(0xa1)}`;
  const markingB = `marking-definition--${uuid(0xa2)}`;
  const markingUnused = `marking-definition--${uuid(0xa3)}`;
  const markingGranular = `marking-definition--${uuid(0xa4)}`;
  const outsideAuthor = `identity--${uuid(0xb1)}`;
  const patterns = Array.from({ length: 30 }, (_, i) => `attack-pattern--${uuid(0x100 + i)}`);

  const objects: StixObject[] = [];
  // The report and relationships come before what they reference, so only a dependency order keeps them valid.
  objects.push({
    type: "report",
    spec_version: "2.1",
    id: `report--${uuid(0xc1)}`,
    name: "Report over every pattern",
    published: "2025-01-05T00:00:00.000Z",
    object_refs: patterns,
    object_marking_refs: [markingA],
  });
  for (let i = 0; i + 1 < patterns.length; i++) {
    objects.push({
      type: "relationship",
      spec_version: "2.1",
      id: `relationship--${uuid(0x200 + i)}`,
      relationship_type: "related-to",
      source_ref: patterns[i + 1],
      target_ref: patterns[i],
      object_marking_refs: i % 2 === 0 ? [markingA] : [markingB],
    });
  }
  patterns.forEach((id, i) => {
    objects.push({
      type: "attack-pattern",
      spec_version: "2.1",
      id,
      name: `Pattern ${i}`,
      description: filler,
      created_by_ref: i % 5 === 0 ? outsideAuthor : undefined,
      object_marking_refs: i % 3 === 0 ? [markingB] : [],
      granular_markings: i === 17 ? [{ marking_ref: markingGranular, selectors: ["description"] }] : undefined,
    });
  });
  objects.push({ type: "ipv4-addr", spec_version: "2.1", id: `ipv4-addr--${uuid(0xd1)}`, value: "192.0.2.7" });
  objects.push({
    type: "identity",
    spec_version: "2.1",
    id: outsideAuthor,
    name: "Outside author",
    identity_class: "organization",
    object_marking_refs: [markingA],
  });
  for (const [id, statement] of [
    [markingA, "Marking A"],
    [markingB, "Marking B"],
    [markingUnused, "Marking that no object references. " + filler],
    [markingGranular, "Granular marking"],
  ] as const) {
    objects.push({
      type: "marking-definition",
      spec_version: "2.1",
      id,
      definition_type: "statement",
      definition: { statement },
    });
  }

  // Drop the undefined properties so that each object reads as served JSON.
  return JSON.parse(JSON.stringify({ type: "bundle", id: BUNDLE_ID, objects }));
}

function loadFixture(): StixBundle {
  const compressed = readFileSync(join(import.meta.dir, "fixtures", "ics-attack-17.0.json.gz"));
  return JSON.parse(new TextDecoder().decode(Bun.gunzipSync(compressed))) as StixBundle;
}

describe("chunkVersion", () => {
  test("returns one bundle when it fits", () => {
    const { bundleId, objects } = prepareVersion(syntheticVersion(), VERSION);

    const chunks = parseChunks(chunkVersion(VERSION, bundleId, objects, 10_000_000));

    const markings = objects.filter((object) => object.type === "marking-definition");
    const rest = objects.filter((object) => object.type !== "marking-definition" && object.id !== AUTHOR_ID);
    expect(chunks).toHaveLength(1);
    expect(chunks[0]!.id).toBe(BUNDLE_ID);
    expect(chunks[0]!.objects).toEqual([authorIdentity(), ...markings, ...rest]);
    expect(chunks[0]!.declared).toBe(objects.length);
  });

  test("returns one bundle at exact size", () => {
    const { bundleId, objects } = prepareVersion(syntheticVersion(), VERSION);
    const single = chunkVersion(VERSION, bundleId, objects, 10_000_000)[0]!;
    const exact = Buffer.byteLength(single.json);

    const chunks = chunkVersion(VERSION, bundleId, objects, exact);

    expect(chunks).toHaveLength(1);
    expect(chunks[0]!.json).toBe(single.json);
  });

  test("splits one byte under exact size", () => {
    const { bundleId, objects } = prepareVersion(syntheticVersion(), VERSION);
    const single = chunkVersion(VERSION, bundleId, objects, 10_000_000)[0]!;

    const chunks = chunkVersion(VERSION, bundleId, objects, Buffer.byteLength(single.json) - 1);

    expect(chunks.length).toBeGreaterThan(1);
  });

  test("rejects an object over the limit", () => {
    const version = syntheticVersion();
    version.objects.push({
      type: "note",
      spec_version: "2.1",
      id: `note--${uuid(0xe1)}`,
      content: "x".repeat(5_000),
      object_refs: [`report--${uuid(0xc1)}`],
    });
    const { bundleId, objects } = prepareVersion(version, VERSION);

    const error = bundleErrorOf(() => chunkVersion(VERSION, bundleId, objects, 3_000));

    expect(error.versionId).toBe(VERSION);
    expect(error.message).toContain(`note--${uuid(0xe1)}`);
    expect(error.message).toContain("CONNECTOR_PUSH_MAX_MB");
  });

  test("rejects a marking over the limit", () => {
    const version = syntheticVersion();
    const markingId = `marking-definition--${uuid(0xe2)}`;
    version.objects.push({
      type: "marking-definition",
      spec_version: "2.1",
      id: markingId,
      definition_type: "statement",
      definition: { statement: "x".repeat(5_000) },
    });
    const { bundleId, objects } = prepareVersion(version, VERSION);

    const error = bundleErrorOf(() => chunkVersion(VERSION, bundleId, objects, 3_000));

    expect(error.message).toContain(markingId);
    expect(error.message).toContain("CONNECTOR_PUSH_MAX_MB");
  });

  test("adds author when objects lack it", () => {
    const objects: StixObject[] = [{ type: "malware", id: `malware--${uuid(1)}`, name: "Alone", is_family: true }];

    const chunks = parseChunks(chunkVersion(VERSION, BUNDLE_ID, objects, 10_000_000));

    expect(chunks[0]!.objects.map((object) => object.id)).toEqual([AUTHOR_ID, `malware--${uuid(1)}`]);
  });
});

const splitCases: [string, () => StixBundle, number][] = [
  ["synthetic version at 3000 bytes", syntheticVersion, 3_000],
  ["synthetic version at 8000 bytes", syntheticVersion, 8_000],
  ["ATT&CK for ICS 17.0 at 500 KB", loadFixture, 500_000],
];

for (const [name, load, maxBytes] of splitCases) {
  describe(`chunkVersion on ${name}`, () => {
    let bundleId: string;
    let objects: StixObject[];
    let chunks: ParsedChunk[];
    let versionIds: Set<string>;
    let markingIds: Set<string>;

    beforeAll(() => {
      ({ bundleId, objects } = prepareVersion(load(), VERSION));
      chunks = parseChunks(chunkVersion(VERSION, bundleId, objects, maxBytes));
      versionIds = new Set(objects.map((object) => object.id));
      markingIds = new Set(objects.filter((object) => object.type === "marking-definition").map((object) => object.id));
    });

    test("returns several bundles", () => {
      expect(chunks.length).toBeGreaterThan(1);
    });

    test("keeps every bundle within maxBytes", () => {
      const oversized = chunks.filter((chunk) => chunk.bytes > maxBytes).map((chunk) => `${chunk.id}: ${chunk.bytes}`);

      expect(oversized).toEqual([]);
    });

    test("puts author first in every bundle", () => {
      const without = chunks.filter((chunk) => chunk.objects[0]?.id !== AUTHOR_ID).map((chunk) => chunk.id);

      expect(without).toEqual([]);
    });

    test("gives bundles distinct ids", () => {
      expect(new Set(chunks.map((chunk) => chunk.id)).size).toBe(chunks.length);
    });

    test("keeps version id on first bundle", () => {
      expect(chunks[0]!.id).toBe(bundleId);
    });

    test("declares each bundle's object count", () => {
      const wrong = chunks.filter((chunk) => chunk.declared !== chunk.objects.length).map((chunk) => chunk.id);

      expect(wrong).toEqual([]);
    });

    test("includes referenced marking definitions", () => {
      const missing: string[] = [];
      for (const chunk of chunks) {
        const present = new Set(chunk.objects.map((object) => object.id));
        for (const object of chunk.objects) {
          for (const ref of markingRefsOf(object)) {
            if (markingIds.has(ref) && !present.has(ref)) {
              missing.push(`${chunk.id}: ${object.id} -> ${ref}`);
            }
          }
        }
      }

      expect(missing).toEqual([]);
    });

    test("sends every object once", () => {
      const sent = new Map<string, number>();
      for (const chunk of chunks) {
        for (const object of chunk.objects) {
          sent.set(object.id, (sent.get(object.id) ?? 0) + 1);
        }
      }

      const unsent = objects.filter((object) => !sent.has(object.id)).map((object) => object.id);
      // The author and the marking definitions repeat by design.
      const repeated = [...sent]
        .filter(([id, count]) => count > 1 && id !== AUTHOR_ID && !markingIds.has(id))
        .map(([id]) => id);
      const unknown = [...sent.keys()].filter((id) => !versionIds.has(id));
      expect(unsent).toEqual([]);
      expect(repeated).toEqual([]);
      expect(unknown).toEqual([]);
    });

    test("sends objects unchanged", () => {
      const byId = new Map(objects.map((object) => [object.id, object]));
      const changed = chunks
        .flatMap((chunk) => chunk.objects)
        .filter((object) => JSON.stringify(object) !== JSON.stringify(byId.get(object.id)))
        .map((object) => object.id);

      expect(changed).toEqual([]);
    });

    test("sends references no later than referrers", () => {
      const firstChunk = new Map<string, number>();
      chunks.forEach((chunk, index) => {
        for (const object of chunk.objects) {
          if (!firstChunk.has(object.id)) {
            firstChunk.set(object.id, index);
          }
        }
      });

      const late: string[] = [];
      chunks.forEach((chunk, index) => {
        for (const object of chunk.objects) {
          for (const ref of referencedIds(object)) {
            if (versionIds.has(ref) && firstChunk.get(ref)! > index) {
              late.push(`${object.id} in bundle ${index} -> ${ref} in bundle ${firstChunk.get(ref)}`);
            }
          }
        }
      });

      expect(late).toEqual([]);
    });
  });
}
