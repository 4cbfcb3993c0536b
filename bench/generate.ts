/**
 * Generates large Citalid versions from the ATT&CK for ICS fixtures: copies
 * of the releases' objects with fresh ids, every reference to a copied
 * object rewritten to the copy's id, so the graph of each copy is whole.
 * The marking definition and the MITRE identity are shared by all copies,
 * as a real dataset shares its markings. Output is minified JSON, written
 * as it is generated.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const FIXTURES = join(import.meta.dir, "..", "tests", "fixtures");
const RELEASES = ["17.0", "17.1", "18.0", "18.1"];
const SHARED_TYPES = new Set(["marking-definition", "identity"]);
const ID_PATTERN = /\b([a-z0-9-]+)--([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b/g;

/** Options of {@linkcode generateVersion}. */
export interface GenerateOptions {
  /** Output file, overwritten. */
  path: string;
  /** Size to reach, in bytes; the file ends after the first copy that reaches it. */
  targetBytes: number;
  /** Remove `created_by_ref` from the copies, so that the connector adds its author to each. @default false */
  withoutAuthor?: boolean;
}

/** Size and contents of the file {@linkcode generateVersion} wrote. */
export interface GeneratedVersion {
  path: string;
  bytes: number;
  objects: number;
  copies: number;
}

interface Template {
  /** Minified JSON of each object that is copied. */
  texts: string[];
  /** Ids defined by the copied objects, which each copy renames. */
  ids: Set<string>;
}

/** Writes one version of about `targetBytes` bytes and returns its size. */
export function generateVersion(options: GenerateOptions): GeneratedVersion {
  const shared = new Map<string, string>();
  const templates = RELEASES.map((release) => loadTemplate(release, shared, options.withoutAuthor ?? false));

  const fd = openSync(options.path, "w", 0o600);
  let bytes = 0;
  let objects = 0;
  let copies = 0;
  const write = (text: string) => {
    const buffer = Buffer.from(text, "utf8");
    let done = 0;
    while (done < buffer.length) {
      done += writeSync(fd, buffer, done);
    }
    bytes += buffer.length;
  };

  try {
    write(`{"type":"bundle","id":"bundle--${crypto.randomUUID()}","spec_version":"2.1","objects":[`);
    let first = true;
    for (const text of shared.values()) {
      write((first ? "" : ",") + text);
      first = false;
      objects++;
    }
    while (bytes < options.targetBytes) {
      const template = templates[copies % templates.length]!;
      const renamed = new Map<string, string>();
      for (const id of template.ids) {
        renamed.set(id, id.slice(0, id.indexOf("--") + 2) + crypto.randomUUID());
      }
      const parts: string[] = [];
      for (const text of template.texts) {
        parts.push(text.replace(ID_PATTERN, (id) => renamed.get(id) ?? id));
      }
      write("," + parts.join(","));
      objects += parts.length;
      copies++;
    }
    write("]}");
  } finally {
    closeSync(fd);
  }
  return { path: options.path, bytes, objects, copies };
}

function loadTemplate(release: string, shared: Map<string, string>, withoutAuthor: boolean): Template {
  const bundle = JSON.parse(gunzipSync(readFileSync(join(FIXTURES, `ics-attack-${release}.json.gz`))).toString("utf8")) as {
    objects: { id: string; type: string; created_by_ref?: string }[];
  };
  const texts: string[] = [];
  const ids = new Set<string>();
  for (const object of bundle.objects) {
    if (SHARED_TYPES.has(object.type)) {
      shared.set(object.id, JSON.stringify(object));
      continue;
    }
    if (withoutAuthor) {
      delete object.created_by_ref;
    }
    ids.add(object.id);
    texts.push(JSON.stringify(object));
  }
  return { texts, ids };
}

if (import.meta.main) {
  const [path, megabytes, flag] = process.argv.slice(2);
  if (path === undefined || megabytes === undefined) {
    console.error("usage: bun bench/generate.ts <output file> <size in MB> [--without-author]");
    process.exit(2);
  }
  const result = generateVersion({ path, targetBytes: Number(megabytes) * 1_000_000, withoutAuthor: flag === "--without-author" });
  console.log(JSON.stringify(result));
}
