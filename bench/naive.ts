/**
 * The naive pipeline of the benchmark: downloads one version as text,
 * parses it, and sends it back serialized in one GraphQL `stixBundlePush`
 * request to the fake OpenCTI. Prints `{"downloadMs", "parseMs", "pushMs",
 * "bytes"}` as JSON; exits 1 when the platform returns an error.
 *
 * Usage: bun bench/naive.ts <citalid url> <user> <password> <version id> <graphql url> <token> <connector id>
 */
import { CITALID_VERSIONS_PATH } from "../tests/fakes/citalid.ts";
import { login } from "./login.ts";

const [citalidUrl, user, password, versionId, graphqlUrl, openctiToken, connectorId] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string,
  string,
  string,
];

const MUTATION = `mutation ConnectorBundlePush($connectorId: String!, $bundle: String!, $workId: String) {
  stixBundlePush(connectorId: $connectorId, bundle: $bundle, work_id: $workId)
}`;

const token = await login(citalidUrl, user, password);

const downloadStarted = performance.now();
const response = await fetch(`${citalidUrl}${CITALID_VERSIONS_PATH}${encodeURIComponent(versionId)}/download/`, {
  headers: { authorization: `Bearer ${token}` },
});
const text = await response.text();
const downloadMs = performance.now() - downloadStarted;

const parseStarted = performance.now();
const bundle = JSON.parse(text) as unknown;
const body = JSON.stringify({ query: MUTATION, variables: { connectorId, bundle: JSON.stringify(bundle), workId: null } });
const parseMs = performance.now() - parseStarted;

const pushStarted = performance.now();
const reply = await fetch(graphqlUrl, {
  method: "POST",
  headers: { "content-type": "application/json", authorization: `Bearer ${openctiToken}` },
  body,
});
const result = (await reply.json()) as { errors?: { message: string }[] };
const pushMs = performance.now() - pushStarted;

if (result.errors !== undefined) {
  console.error(`stixBundlePush failed: ${result.errors[0]?.message}`);
  process.exit(1);
}
console.log(JSON.stringify({ downloadMs, parseMs, pushMs, bytes: Buffer.byteLength(text) }));
