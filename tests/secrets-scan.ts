#!/usr/bin/env bun
/**
 * Scans what every connector process of the test suite printed (the
 * harness's OUTPUT_LOG, or the file given as the first argument) for the
 * test secrets, raw and in their escaped and encoded forms.
 *
 * Prints each secret found by name with the line numbers, never the lines,
 * so that the scan's own output leaks nothing. Exits 1 when a secret is
 * found or the log is missing, because a scan of nothing proves nothing,
 * and 0 otherwise.
 *
 * Usage: bun tests/secrets-scan.ts [LOG]
 */
import { existsSync, readFileSync } from "node:fs";
import { OUTPUT_LOG } from "./helpers/connector.ts";
import { allTestSecrets, secretForms } from "./helpers/secrets.ts";

const MAX_LINES_SHOWN = 10;

function scan(path: string): number {
  if (!existsSync(path)) {
    console.error(`secrets-scan: ${path} not found: run the test suite first, which writes it`);
    return 1;
  }

  const lines = readFileSync(path, "utf8").split("\n");
  let leaks = 0;
  for (const [name, secret] of Object.entries(allTestSecrets())) {
    const forms = secretForms(secret);
    const found: number[] = [];
    lines.forEach((line, index) => {
      if (forms.some((form) => line.includes(form))) {
        found.push(index + 1);
      }
    });
    if (found.length > 0) {
      leaks++;
      const shown = found.slice(0, MAX_LINES_SHOWN).join(", ");
      const more = found.length > MAX_LINES_SHOWN ? ` and ${found.length - MAX_LINES_SHOWN} more` : "";
      console.error(`secrets-scan: test secret ${name} found in ${path} on line(s) ${shown}${more}`);
    }
  }

  if (leaks > 0) {
    return 1;
  }
  console.log(`secrets-scan: no test secret in ${lines.length} line(s) of ${path}`);
  return 0;
}

process.exit(scan(process.argv[2] ?? OUTPUT_LOG));
