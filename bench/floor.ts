/**
 * The floor of the benchmark: logs in to the fake Citalid, downloads one
 * version and drops the bytes as they arrive, then uploads the same bytes,
 * read from the version's file, to a sink that drops them. No parsing, no
 * spool file. Prints `{"downloadMs", "uploadMs", "bytes"}` as JSON.
 *
 * Usage: bun bench/floor.ts <citalid url> <user> <password> <version id> <version file> <sink url>
 */
import { CITALID_VERSIONS_PATH } from "../tests/fakes/citalid.ts";
import { login } from "./login.ts";

const [citalidUrl, user, password, versionId, versionFile, sinkUrl] = process.argv.slice(2) as [string, string, string, string, string, string];

const token = await login(citalidUrl, user, password);

const downloadStarted = performance.now();
const response = await fetch(`${citalidUrl}${CITALID_VERSIONS_PATH}${encodeURIComponent(versionId)}/download/`, {
  headers: { authorization: `Bearer ${token}` },
});
if (!response.ok || response.body === null) {
  throw new Error(`download of ${versionId} failed with HTTP ${response.status}`);
}
let bytes = 0;
for await (const chunk of response.body) {
  bytes += chunk.byteLength;
}
const downloadMs = performance.now() - downloadStarted;

const uploadStarted = performance.now();
const upload = await fetch(sinkUrl, { method: "POST", body: Bun.file(versionFile) });
if (!upload.ok) {
  throw new Error(`upload to the sink failed with HTTP ${upload.status}`);
}
await upload.arrayBuffer();
const uploadMs = performance.now() - uploadStarted;

console.log(JSON.stringify({ downloadMs, uploadMs, bytes }));
