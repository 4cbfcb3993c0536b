import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { JsonScanError } from "../lib/scan.ts";
import { SPOOL_SUFFIX, SpoolFile, SpoolFolderError, SpoolReader, VersionSpool, checkSpoolFolder, removeLeftoverSpoolFiles } from "../lib/spool.ts";
import { deadPid } from "./helpers/processes.ts";

const silent = createLogger({ write: () => {} });
let folder: string;

beforeEach(() => {
  folder = mkdtempSync(join(tmpdir(), "citalid-spool-test-"));
});

afterEach(() => {
  rmSync(folder, { recursive: true, force: true });
});

describe("SpoolFile", () => {
  test("is created with mode 0600", () => {
    const file = SpoolFile.create(folder, "20250105-1");

    expect(statSync(file.path).mode & 0o777).toBe(0o600);
    file.remove();
  });

  test("name carries version and pid", () => {
    const file = SpoolFile.create(folder, "2025/01 05");

    const name = file.path.slice(folder.length + 1);
    expect(name).toStartWith("citalid-2025_01_05-");
    expect(name).toContain(`-${process.pid}-`);
    expect(name).toEndWith(SPOOL_SUFFIX);
    file.remove();
  });

  test("reads back what was written", () => {
    const file = SpoolFile.create(folder, "v");
    file.write(Buffer.from("hello "));
    file.write(Buffer.from("world"));

    const target = Buffer.alloc(5);
    file.readInto(6, 11, target);

    expect(target.toString()).toBe("world");
    expect(file.size).toBe(11);
    file.remove();
  });

  test("clear empties the file", () => {
    const file = SpoolFile.create(folder, "v");
    file.write(Buffer.from("first attempt"));

    file.clear();
    file.write(Buffer.from("ok"));

    expect(file.size).toBe(2);
    expect(statSync(file.path).size).toBe(2);
    file.remove();
  });

  test("clear keeps path and mode", () => {
    const file = SpoolFile.create(folder, "v");
    file.write(Buffer.from("first attempt"));

    file.clear();

    expect(statSync(file.path).size).toBe(0);
    expect(statSync(file.path).mode & 0o777).toBe(0o600);
    expect(readdirSync(folder)).toEqual([file.path.slice(folder.length + 1)]);
    file.remove();
  });

  test("clear of an empty file", () => {
    const file = SpoolFile.create(folder, "v");

    file.clear();
    file.write(Buffer.from("ok"));

    const target = Buffer.alloc(2);
    file.readInto(0, 2, target);
    expect(target.toString()).toBe("ok");
    expect(statSync(file.path).size).toBe(2);
    file.remove();
  });

  test("remove deletes the file", () => {
    const file = SpoolFile.create(folder, "v");

    file.remove();
    file.remove();

    expect(existsSync(file.path)).toBe(false);
  });

  test("read past the end raises", () => {
    const file = SpoolFile.create(folder, "v");
    file.write(Buffer.from("abc"));

    expect(() => file.readInto(0, 10, Buffer.alloc(10))).toThrow("ends at byte 3");
    file.remove();
  });
});

describe("SpoolReader", () => {
  const text = "héllo wörld, ünïcode 😀 across blocks " + "x".repeat(50) + "ぁぃぅぇぉ end";

  test("ranges equal the bytes", () => {
    const file = SpoolFile.create(folder, "v");
    const bytes = Buffer.from(text, "utf8");
    file.write(bytes);
    const reader = new SpoolReader(file, { blockBytes: 16, blocks: 2 });

    // Every range, so that blocks are evicted, reused and read across.
    for (let start = 0; start <= bytes.length; start += 3) {
      for (let end = start; end <= bytes.length; end += 5) {
        expect(reader.text(start, end)).toBe(bytes.toString("utf8", start, end));
      }
    }
    file.remove();
  });

  test("byte views equal the bytes", () => {
    const file = SpoolFile.create(folder, "v");
    const bytes = Buffer.from(text, "utf8");
    file.write(bytes);
    const reader = new SpoolReader(file, { blockBytes: 16, blocks: 2 });

    for (let start = 0; start <= bytes.length; start += 3) {
      for (let end = start; end <= bytes.length; end += 7) {
        expect(Buffer.from(reader.bytes(start, end)).equals(bytes.subarray(start, end))).toBe(true);
      }
    }
    file.remove();
  });

  test("reused block keeps its full size", () => {
    const file = SpoolFile.create(folder, "v");
    file.write(Buffer.from("0123456789abcdefghij"));
    const reader = new SpoolReader(file, { blockBytes: 8, blocks: 1 });

    // Block 2 is 4 bytes long; its memory then holds the 8 bytes of block 0.
    expect(reader.text(16, 20)).toBe("ghij");
    expect(reader.text(0, 8)).toBe("01234567");
    file.remove();
  });
});

describe("VersionSpool", () => {
  test("indexes what it writes", () => {
    const spool = new VersionSpool(folder, "v");
    spool.write(Buffer.from('{"type":"bundle","objects":[{"type":"a",'));
    spool.write(Buffer.from('"id":"a--1"}]}'));

    const scan = spool.end();

    expect(scan.count).toBe(1);
    expect(spool.file.size).toBe(54);
    spool.remove();
  });

  test("begin starts afresh", () => {
    const spool = new VersionSpool(folder, "v");
    spool.write(Buffer.from('{"type":"bundle","obj'));

    spool.begin();
    spool.write(Buffer.from('{"type":"bundle","objects":[]}'));

    expect(spool.end().type).toBe("bundle");
    expect(spool.file.size).toBe(30);
    expect(spool.head()).toBe('{"type":"bundle","objects":[]}');
    spool.remove();
  });

  test("html body raises while written", () => {
    const spool = new VersionSpool(folder, "v");

    expect(() => spool.write(Buffer.from("<!doctype html>"))).toThrow(JsonScanError);
    expect(spool.head()).toBe("<!doctype html>");
    spool.remove();
  });

  test("cut body raises at the end", () => {
    const spool = new VersionSpool(folder, "v");
    spool.write(Buffer.from('{"type":"bundle","objects":[{'));

    expect(() => spool.end()).toThrow("before the JSON value is complete");
    spool.remove();
  });

  test("head keeps 512 bytes", () => {
    const spool = new VersionSpool(folder, "v");
    spool.write(Buffer.from('["' + "a".repeat(1000)));

    expect(spool.head().length).toBe(512);
    spool.remove();
  });
});

describe("removeLeftoverSpoolFiles", () => {
  test("removes files of a gone process", () => {
    const leftover = join(folder, `citalid-20250105-${deadPid()}-0123abcd.spool`);
    writeFileSync(leftover, "partial");

    const removed = removeLeftoverSpoolFiles(folder, silent);

    expect(removed).toEqual([leftover]);
    expect(existsSync(leftover)).toBe(false);
  });

  test("removes files with this pid", () => {
    const leftover = join(folder, `citalid-20250105-${process.pid}-0123abcd.spool`);
    writeFileSync(leftover, "partial");

    removeLeftoverSpoolFiles(folder, silent);

    expect(existsSync(leftover)).toBe(false);
  });

  test("keeps files of a live process", () => {
    const live = join(folder, `citalid-20250105-${process.ppid}-0123abcd.spool`);
    writeFileSync(live, "in use");

    removeLeftoverSpoolFiles(folder, silent);

    expect(existsSync(live)).toBe(true);
  });

  test("keeps files of other names", () => {
    for (const name of ["state.json", "citalid-20250105.spool", "notes-1-0123abcd.spool", "citalid-x-1-0123abcd.spool.bak"]) {
      writeFileSync(join(folder, name), "");
    }

    removeLeftoverSpoolFiles(folder, silent);

    expect(readdirSync(folder).sort()).toEqual(["citalid-20250105.spool", "citalid-x-1-0123abcd.spool.bak", "notes-1-0123abcd.spool", "state.json"]);
  });

  test("logs how many it removed", () => {
    const lines: string[] = [];
    writeFileSync(join(folder, `citalid-a-${deadPid()}-0123abcd.spool`), "");

    removeLeftoverSpoolFiles(folder, createLogger({ write: (line) => lines.push(line) }));

    expect(lines.length).toBe(1);
    expect(JSON.parse(lines[0]!).attributes.files).toBe(1);
  });
});

describe("checkSpoolFolder", () => {
  test("accepts a writable folder", () => {
    expect(() => checkSpoolFolder(folder)).not.toThrow();
  });

  test("rejects a missing folder", () => {
    expect(() => checkSpoolFolder(join(folder, "missing"))).toThrow(SpoolFolderError);
  });

  test("rejects a file", () => {
    const path = join(folder, "file");
    writeFileSync(path, "");

    expect(() => checkSpoolFolder(path)).toThrow("is not a folder");
  });
});
