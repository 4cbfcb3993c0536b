import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";

import {
  canonicalize,
  externalReferenceId,
  isIdSupported,
  killChainPhaseId,
  OPENCTI_EXTENSION_ID,
  splitBundle,
  uuid5,
  type SplitResult,
} from "../lib/splitter.ts";
import type { StixBundle, StixObject } from "../lib/stix.ts";

const FIXTURES = join(import.meta.dir, "fixtures");

function loadRelease(release: string): StixBundle {
  const compressed = readFileSync(join(FIXTURES, `ics-attack-${release}.json.gz`));
  return JSON.parse(gunzipSync(compressed).toString("utf8")) as StixBundle;
}

function splitObjects(objects: StixObject[], cleanup = false): SplitResult {
  const bundle = { id: "bundle--00000000-0000-4000-8000-000000000000", objects };
  return splitBundle(bundle, { cleanupInconsistentBundle: cleanup });
}

function sentIds(result: SplitResult): string[] {
  return result.bundles.map(({ bundle }) => bundle.objects[0].id);
}

function sentObject(result: SplitResult, id: string): StixObject {
  const found = result.bundles.find(({ bundle }) => bundle.objects[0].id === id);
  if (found === undefined) {
    throw new Error(`${id} was not sent`);
  }
  return found.bundle.objects[0];
}

const IDENTITY = "identity--11111111-1111-4111-8111-111111111111";
const MARKING = "marking-definition--22222222-2222-4222-8222-222222222222";
const MALWARE = "malware--33333333-3333-4333-8333-333333333333";
const TOOL = "tool--44444444-4444-4444-8444-444444444444";
const REPORT = "report--55555555-5555-4555-8555-555555555555";
const ASSET = "x-mitre-asset--66666666-6666-4666-8666-666666666666";
const RELATIONSHIP = "relationship--77777777-7777-4777-8777-777777777777";
const SIGHTING = "sighting--88888888-8888-4888-8888-888888888888";
const MISSING = "identity--99999999-9999-4999-8999-999999999999";

// Results of pycti's splitter (split_bundle_with_expectations, no cleanup) on
// the fixture releases. The digest is the SHA-256 of the sorted
// "<object id>:<x_opencti_seq>" lines joined with "\n", cut to 16 hex digits.
const CONFORMANCE = [
  { release: "17.0", bundles: 1133, dropped: 552, digest: "63980d90731b0d7a" },
  { release: "17.1", bundles: 1099, dropped: 552, digest: "e7f3c8344bd71e78" },
  { release: "18.0", bundles: 861, dropped: 965, digest: "7e7b777d5a4465e8" },
  { release: "18.1", bundles: 861, dropped: 965, digest: "7e7b777d5a4465e8" },
];

describe("splitBundle conformance with pycti", () => {
  for (const expected of CONFORMANCE) {
    test(`ics-attack-${expected.release}`, () => {
      const bundle = loadRelease(expected.release);
      const result = splitBundle(bundle);

      const lines = result.bundles.map(({ bundle: part }) => `${part.objects[0].id}:${part.x_opencti_seq}`);
      const digest = createHash("sha256").update(lines.sort().join("\n")).digest("hex").slice(0, 16);

      expect(result.bundles.length).toBe(expected.bundles);
      expect(result.expectations).toBe(expected.bundles);
      expect(result.incompatible.length).toBe(expected.dropped);
      expect(digest).toBe(expected.digest);
    });
  }

  test("ics-attack-17.0 drops by type", () => {
    const result = splitBundle(loadRelease("17.0"));
    const dropped: Record<string, number> = {};
    for (const object of result.incompatible) {
      dropped[object.type] = (dropped[object.type] ?? 0) + 1;
    }

    expect(dropped).toEqual({
      relationship: 524,
      "x-mitre-asset": 14,
      "x-mitre-tactic": 12,
      "x-mitre-matrix": 1,
      "x-mitre-collection": 1,
    });
  });

  test("bundle shape", () => {
    const source = loadRelease("17.1");
    const result = splitBundle(source);

    for (const { bundle, seq } of result.bundles) {
      expect(Object.keys(bundle)).toEqual(["type", "id", "spec_version", "x_opencti_seq", "objects"]);
      expect(bundle.type).toBe("bundle");
      expect(bundle.id).toBe(source.id);
      expect(bundle.spec_version).toBe("2.1");
      expect(bundle.objects.length).toBe(1);
      expect(bundle.x_opencti_seq).toBe(seq);
      expect(bundle.objects[0].nb_deps).toBe(seq);
    }
  });

  test("sequence is ascending", () => {
    const result = splitBundle(loadRelease("18.0"));
    const seqs = result.bundles.map(({ seq }) => seq);

    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  });
});

describe("splitBundle refs", () => {
  test("cycle is cut", () => {
    const result = splitObjects([
      { type: "report", id: REPORT, object_refs: [MALWARE] },
      { type: "malware", id: MALWARE, sample_refs: [TOOL] },
      { type: "tool", id: TOOL, x_custom_refs: [MALWARE] },
    ]);

    expect(sentIds(result)).toEqual([TOOL, MALWARE, REPORT]);
    expect(sentObject(result, TOOL).x_custom_refs).toEqual([]);
    expect(sentObject(result, MALWARE).sample_refs).toEqual([TOOL]);
    expect(result.bundles.map(({ seq }) => seq)).toEqual([1, 2, 3]);
  });

  test("cycle through the first object", () => {
    // pycti does not count the top-level object as an ancestor, so the walk
    // enters it a second time from the report and keeps the ref to it.
    const result = splitObjects([
      { type: "malware", id: MALWARE, sample_refs: [TOOL] },
      { type: "tool", id: TOOL, x_custom_refs: [REPORT] },
      { type: "report", id: REPORT, object_refs: [MALWARE] },
    ]);

    expect(sentIds(result)).toEqual([REPORT, TOOL, MALWARE]);
    expect(result.bundles.map(({ seq }) => seq)).toEqual([2, 3, 4]);
    expect(sentObject(result, MALWARE).sample_refs).toEqual([TOOL]);
    expect(sentObject(result, REPORT).object_refs).toEqual([MALWARE]);
  });

  test("back-reference is removed", () => {
    const result = splitObjects([
      { type: "malware", id: MALWARE, x_tools_refs: [TOOL] },
      { type: "tool", id: TOOL, x_malware_refs: [MALWARE] },
    ]);

    expect(sentObject(result, MALWARE).x_tools_refs).toEqual([TOOL]);
    expect(sentObject(result, TOOL).x_malware_refs).toEqual([]);
    expect(sentIds(result)).toEqual([TOOL, MALWARE]);
  });

  test("self-reference is removed", () => {
    const result = splitObjects([
      { type: "identity", id: IDENTITY, created_by_ref: IDENTITY, object_marking_refs: [IDENTITY, MARKING] },
      { type: "marking-definition", id: MARKING },
    ]);
    const identity = sentObject(result, IDENTITY);

    expect(identity.created_by_ref).toBeNull();
    expect(identity.object_marking_refs).toEqual([MARKING]);
    expect(identity.nb_deps).toBe(2);
  });

  test("unsupported refs are removed", () => {
    const result = splitObjects([
      { type: "malware", id: MALWARE, created_by_ref: ASSET, x_targets_refs: [ASSET, TOOL, "x-custom--1"] },
      { type: "tool", id: TOOL },
      { type: "x-mitre-asset", id: ASSET },
    ]);
    const malware = sentObject(result, MALWARE);

    expect(malware.created_by_ref).toBeNull();
    expect(malware.x_targets_refs).toEqual([TOOL]);
    expect(result.incompatible.map((object) => object.id)).toEqual([ASSET]);
  });

  test("kept refs are de-duplicated", () => {
    const result = splitObjects([
      { type: "report", id: REPORT, object_refs: [MALWARE, TOOL, MALWARE, TOOL] },
      { type: "malware", id: MALWARE },
      { type: "tool", id: TOOL },
    ]);
    const report = sentObject(result, REPORT);

    expect(report.object_refs).toEqual([MALWARE, TOOL]);
    // Every kept occurrence counts, as in pycti: 1 + 1 + 1 + 1 + 1.
    expect(report.nb_deps).toBe(5);
  });

  test("missing refs are kept", () => {
    const result = splitObjects([
      { type: "malware", id: MALWARE, created_by_ref: MISSING, object_marking_refs: [MARKING, MISSING] },
      { type: "marking-definition", id: MARKING },
    ]);
    const malware = sentObject(result, MALWARE);

    expect(malware.created_by_ref).toBe(MISSING);
    expect(malware.object_marking_refs).toEqual([MARKING, MISSING]);
    expect(malware.nb_deps).toBe(2);
  });

  test("cleanup removes missing refs", () => {
    const result = splitObjects(
      [
        { type: "malware", id: MALWARE, created_by_ref: MISSING, object_marking_refs: [MARKING, MISSING] },
        { type: "marking-definition", id: MARKING },
        { type: "relationship", id: RELATIONSHIP, source_ref: MALWARE, target_ref: MISSING },
      ],
      true,
    );
    const malware = sentObject(result, MALWARE);

    expect(malware.created_by_ref).toBeNull();
    expect(malware.object_marking_refs).toEqual([MARKING]);
    expect(result.incompatible.map((object) => object.id)).toEqual([RELATIONSHIP]);
  });

  test("ids without -- are kept", () => {
    const result = splitObjects([
      { type: "malware", id: MALWARE, created_by_ref: "internal-id", x_refs: ["a1b2"] },
    ]);
    const malware = sentObject(result, MALWARE);

    expect(malware.created_by_ref).toBe("internal-id");
    expect(malware.x_refs).toEqual(["a1b2"]);
  });

  test("x_opencti_id and extension id resolve refs", () => {
    const result = splitObjects([
      { type: "report", id: REPORT, object_refs: ["internal-malware", "internal-tool"] },
      { type: "malware", id: MALWARE, x_opencti_id: "internal-malware" },
      { type: "tool", id: TOOL, extensions: { [OPENCTI_EXTENSION_ID]: { id: "internal-tool" } } },
    ]);

    expect(sentObject(result, REPORT).nb_deps).toBe(3);
  });
});

describe("splitBundle compatibility", () => {
  test("relationship without an end is dropped", () => {
    const result = splitObjects([
      { type: "malware", id: MALWARE },
      { type: "relationship", id: RELATIONSHIP, source_ref: MALWARE, target_ref: ASSET },
      { type: "x-mitre-asset", id: ASSET },
    ]);

    expect(sentIds(result)).toEqual([MALWARE]);
    expect(result.incompatible.map((object) => object.id)).toEqual([RELATIONSHIP, ASSET]);
    expect(result.incompatible[0]!.target_ref).toBeNull();
  });

  test("relationship with both ends is sent", () => {
    const result = splitObjects([
      { type: "relationship", id: RELATIONSHIP, source_ref: MALWARE, target_ref: TOOL },
      { type: "malware", id: MALWARE },
      { type: "tool", id: TOOL },
    ]);

    expect(sentIds(result)).toEqual([MALWARE, TOOL, RELATIONSHIP]);
    expect(sentObject(result, RELATIONSHIP).nb_deps).toBe(3);
  });

  test("sighting needs where_sighted_refs", () => {
    const result = splitObjects([
      { type: "sighting", id: SIGHTING, sighting_of_ref: MALWARE, where_sighted_refs: [ASSET] },
      { type: "malware", id: MALWARE },
    ]);

    expect(sentIds(result)).toEqual([MALWARE]);
    expect(result.incompatible.map((object) => object.id)).toEqual([SIGHTING]);
  });

  test("sighting with its refs is sent", () => {
    const result = splitObjects([
      { type: "sighting", id: SIGHTING, sighting_of_ref: MALWARE, where_sighted_refs: [IDENTITY] },
      { type: "malware", id: MALWARE },
      { type: "identity", id: IDENTITY },
    ]);

    expect(sentIds(result)).toEqual([MALWARE, IDENTITY, SIGHTING]);
  });
});

describe("splitBundle objects", () => {
  test("last duplicate id wins", () => {
    const result = splitObjects([
      { type: "malware", id: MALWARE, name: "first" },
      { type: "tool", id: TOOL },
      { type: "malware", id: MALWARE, name: "last" },
    ]);

    expect(result.expectations).toBe(2);
    expect(sentObject(result, MALWARE).name).toBe("last");
  });

  test("external references de-duplicated", () => {
    const references = [
      { source_name: "mitre-attack", external_id: "T0800", url: "https://attack.mitre.org/techniques/T0800" },
      { source_name: "other", url: "https://attack.mitre.org/techniques/T0800" },
      { source_name: "mitre-attack", external_id: "T0800" },
      { source_name: "mitre-attack", external_id: "T0800", description: "duplicate" },
      { source_name: "no id or url" },
      { description: "nothing" },
      { source_name: "mitre-attack", external_id: "T0801", url: null },
    ];
    const result = splitObjects([
      { type: "attack-pattern", id: "attack-pattern--1", external_references: references },
    ]);

    expect(sentObject(result, "attack-pattern--1").external_references).toEqual([
      references[0],
      references[2],
      references[6],
    ]);
  });

  test("kill chain phases de-duplicated", () => {
    const phases = [
      { kill_chain_name: "mitre-ics-attack", phase_name: "initial-access-ics" },
      { phase_name: "initial-access-ics", kill_chain_name: "mitre-ics-attack", x_extra: true },
      { kill_chain_name: "mitre-ics-attack", phase_name: "execution-ics" },
      { kill_chain_name: "mitre-ics-attack" },
      { kill_chain_name: "mitre-ics-attack" },
    ];
    const result = splitObjects([
      { type: "attack-pattern", id: "attack-pattern--1", kill_chain_phases: phases },
    ]);
    const kept = sentObject(result, "attack-pattern--1").kill_chain_phases;

    expect(kept).toEqual([phases[0], phases[2], phases[3]]);
  });

  test("stable sort by nb_deps", () => {
    const result = splitObjects([
      { type: "tool", id: "tool--c", created_by_ref: IDENTITY },
      { type: "tool", id: "tool--a" },
      { type: "tool", id: "tool--b", created_by_ref: IDENTITY },
      { type: "tool", id: "tool--d" },
      { type: "identity", id: IDENTITY },
    ]);

    expect(sentIds(result)).toEqual([IDENTITY, "tool--a", "tool--d", "tool--c", "tool--b"]);
    expect(result.bundles.map(({ seq }) => seq)).toEqual([1, 1, 1, 2, 2]);
  });

  test("input objects unchanged", () => {
    const references = [{ url: "https://example.org" }, { url: "https://example.org" }];
    const malware = {
      type: "malware",
      id: MALWARE,
      created_by_ref: MALWARE,
      x_refs: [TOOL, TOOL],
      external_references: references,
    };
    const before = structuredClone(malware);

    const result = splitObjects([malware, { type: "tool", id: TOOL }]);

    expect(malware).toEqual(before);
    expect(sentObject(result, MALWARE)).not.toBe(malware);
  });

  test("bundle id generated when missing", () => {
    const result = splitBundle({ objects: [{ type: "tool", id: TOOL }] });

    expect(result.bundles[0]!.bundle.id).toMatch(/^bundle--[0-9a-f-]{36}$/);
  });

  test("object without id rejected", () => {
    const objects = [{ type: "tool" }] as unknown as StixObject[];

    expect(() => splitObjects(objects)).toThrow("position 0");
  });

  test("missing objects array rejected", () => {
    expect(() => splitBundle({} as { objects: StixObject[] })).toThrow("no objects array");
  });
});

describe("splitter identifiers", () => {
  // Expected values from Python 3: uuid.uuid5 over the canonical JSON.
  test("uuid5 matches Python", () => {
    const dns = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";

    expect(uuid5(dns, "python.org")).toBe("886313e1-3b8a-5372-9b90-0c9aee199e5d");
  });

  test("uuid5 rejects a bad namespace", () => {
    expect(() => uuid5("not-a-uuid", "x")).toThrow("Invalid UUID namespace");
  });

  test("external reference ids match pycti", () => {
    expect(externalReferenceId({ url: "https://attack.mitre.org/techniques/T0800", source_name: "x" })).toBe(
      "external-reference--06d0935d-5a8b-5f5e-8d0c-719a39b4e698",
    );
    expect(externalReferenceId({ source_name: "mitre-attack", external_id: "T0800" })).toBe(
      "external-reference--a6580c04-84f2-5969-a60c-1e38f68e6770",
    );
    expect(externalReferenceId({ url: "https://exemple.fr/é" })).toBe(
      "external-reference--cba4b5c4-7072-5769-9eb5-2cb83d131c07",
    );
    expect(externalReferenceId({ source_name: "mitre-attack" })).toBeUndefined();
  });

  test("kill chain phase ids match pycti", () => {
    expect(killChainPhaseId({ kill_chain_name: "mitre-ics-attack", phase_name: "initial-access-ics" })).toBe(
      "kill-chain-phase--e158abd0-8fe4-55c7-a7b2-addc7886cd94",
    );
    expect(killChainPhaseId({ kill_chain_name: "k" })).toBe(
      "kill-chain-phase--85d47d4b-002f-5890-8e77-50ab3c4e3225",
    );
  });

  test("canonicalize sorts keys", () => {
    const canonical = canonicalize({ url: "a", b: [2, { z: null, a: "é" }] });

    expect(canonical).toBe('{"b":[2,{"a":"é","z":null}],"url":"a"}');
  });

  test("isIdSupported by type prefix", () => {
    expect(isIdSupported(MALWARE)).toBe(true);
    expect(isIdSupported("pir--1")).toBe(true);
    expect(isIdSupported("x-mitre-data-component--1")).toBe(true);
    expect(isIdSupported(ASSET)).toBe(false);
    expect(isIdSupported("x-mitre-tactic--1")).toBe(false);
    expect(isIdSupported("no-separator")).toBe(true);
  });
});
