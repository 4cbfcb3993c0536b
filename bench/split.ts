/**
 * The amqp splitter alone on one version, in one of two forms. `whole`
 * parses the version and splits its objects, as pycti does. `spooled` scans
 * the file, splits the light objects that the connector builds from the
 * index, then renders every message's object from the file.
 * Prints the timings, the objects per second of the split and the peak RSS
 * (VmHWM) as JSON.
 *
 * Usage: bun bench/split.ts <whole|spooled> <version file, .json or .json.gz>
 */
import { closeSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { prepareVersion } from "../lib/bundle.ts";
import { BundleScanner } from "../lib/scan.ts";
import { type RangeFile, SpoolReader } from "../lib/spool.ts";
import { prepareSpooledVersion } from "../lib/spooled.ts";
import { splitBundle } from "../lib/splitter.ts";

const [mode, path] = process.argv.slice(2) as ["whole" | "spooled", string];
const BUNDLE_ID = "bundle--00000000-0000-4000-8000-000000000000";

const result = path.endsWith(".gz") ? measure(gunzipSync(readFileSync(path))) : measure(path);
console.log(JSON.stringify({ ...result, peakRssMb: peakRssMb() }));

function measure(source: string | Buffer): Record<string, number> {
  const loadStarted = performance.now();
  if (mode === "whole") {
    const text = typeof source === "string" ? readFileSync(source, "utf8") : source.toString("utf8");
    const objects = prepareVersion(JSON.parse(text), "v").objects;
    const splitStarted = performance.now();
    const split = splitBundle({ id: BUNDLE_ID, objects });
    const splitMs = performance.now() - splitStarted;
    let bytes = 0;
    for (const { bundle } of split.bundles) {
      bytes += JSON.stringify(bundle).length;
    }
    const renderMs = performance.now() - splitStarted - splitMs;
    return { objects: objects.length, messages: split.bundles.length, loadMs: splitStarted - loadStarted, splitMs, renderMs, objectsPerSecond: objects.length / (splitMs / 1000), bytes };
  }

  const file = typeof source === "string" ? fileOnDisk(source) : bufferFile(source);
  const scanner = new BundleScanner();
  const chunk = Buffer.allocUnsafe(1 << 20);
  for (let position = 0; position < file.size; position += chunk.length) {
    const end = Math.min(position + chunk.length, file.size);
    file.readInto(position, end, chunk);
    scanner.write(chunk.subarray(0, end - position));
  }
  const version = prepareSpooledVersion(scanner.end(), new SpoolReader(file), "v");
  const inputStarted = performance.now();
  const input = version.splitInput();
  const splitStarted = performance.now();
  const split = splitBundle({ id: BUNDLE_ID, objects: input });
  const splitMs = performance.now() - splitStarted;
  let bytes = 0;
  for (const { bundle } of split.bundles) {
    bytes += JSON.stringify({ ...bundle, objects: [version.renderSplit(bundle.objects[0])] }).length;
  }
  const renderMs = performance.now() - splitStarted - splitMs;
  return {
    objects: version.objectCount,
    messages: split.bundles.length,
    loadMs: inputStarted - loadStarted,
    inputMs: splitStarted - inputStarted,
    splitMs,
    renderMs,
    objectsPerSecond: version.objectCount / (splitMs / 1000),
    bytes,
  };
}

function fileOnDisk(filePath: string): RangeFile {
  const fd = openSync(filePath, "r");
  process.on("exit", () => closeSync(fd));
  return {
    size: statSync(filePath).size,
    readInto(start, end, target, offset = 0) {
      readSync(fd, target, offset, end - start, start);
    },
  };
}

function bufferFile(bytes: Buffer): RangeFile {
  return {
    size: bytes.length,
    readInto(start, end, target, offset = 0) {
      target.set(bytes.subarray(start, end), offset);
    },
  };
}

function peakRssMb(): number {
  const status = readFileSync("/proc/self/status", "utf8");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) / 1024;
}
