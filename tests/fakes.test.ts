// Tests of the fake Citalid and fake OpenCTI servers that the end-to-end
// tests run the connector against.

import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CITALID_CLIENT_ID,
  CITALID_VERSIONS_PATH,
  startFakeCitalid,
  type FakeCitalid,
  type FakeCitalidOptions,
} from "./fakes/citalid.ts";
import {
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_OPENCTI_TOKEN,
  DEFAULT_OPENCTI_USER_ID,
  SCHEMA_FIELDS_SINCE_7,
  startFakeOpenCTI,
  type FakeOpenCTI,
  type FakeOpenCTIOptions,
} from "./fakes/opencti.ts";
import {
  FIXTURE_VERSIONS,
  fixtureCitalidVersions,
  loadFixtureBundle,
  parseFixtureBundle,
} from "./fixtures/versions.ts";
import { TEST_TLS } from "./fixtures/tls.ts";

const running: { stop(): Promise<void> }[] = [];

afterEach(async () => {
  const servers = running.splice(0);
  await Promise.all(servers.map((server) => server.stop()));
});

async function citalid(options: FakeCitalidOptions = {}): Promise<FakeCitalid> {
  const fake = await startFakeCitalid(options);
  running.push(fake);

  return fake;
}

async function opencti(options: FakeOpenCTIOptions = {}): Promise<FakeOpenCTI> {
  const fake = await startFakeOpenCTI(options);
  running.push(fake);

  return fake;
}

const BASIC_AUTH = `Basic ${Buffer.from(`${CITALID_CLIENT_ID}:`).toString("base64")}`;

function tokenRequest(
  fake: FakeCitalid,
  overrides: {
    user?: string;
    password?: string;
    headers?: Record<string, string>;
    body?: string;
  } = {},
): Promise<Response> {
  const body =
    overrides.body ??
    new URLSearchParams({
      grant_type: "password",
      username: overrides.user ?? fake.user,
      password: overrides.password ?? fake.password,
    }).toString();

  return fetch(`${fake.url}/auth/o/token/`, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      Authorization: BASIC_AUTH,
      ...overrides.headers,
    },
    body,
  });
}

async function login(fake: FakeCitalid): Promise<string> {
  const response = await tokenRequest(fake);
  const json = (await response.json()) as { access_token: string };

  return json.access_token;
}

function apiGet(
  fake: FakeCitalid,
  path: string,
  token: string | null,
  init: RequestInit = {},
): Promise<Response> {
  const headers: Record<string, string> = { "Accept-Language": "en" };
  if (token !== null) {
    headers.Authorization = `Bearer ${token}`;
  }

  return fetch(`${fake.url}${path}`, { ...init, headers });
}

function listVersions(
  fake: FakeCitalid,
  token: string | null,
): Promise<Response> {
  return apiGet(fake, CITALID_VERSIONS_PATH, token);
}

function download(
  fake: FakeCitalid,
  id: string,
  token: string | null,
  init: RequestInit = {},
): Promise<Response> {
  return apiGet(
    fake,
    `${CITALID_VERSIONS_PATH}${encodeURIComponent(id)}/download/`,
    token,
    init,
  );
}

interface GraphQLResponse {
  status: number;
  contentType: string | null;
  json: {
    data?: Record<string, any> | null;
    errors?: {
      message: string;
      name: string;
      path?: string[];
      extensions: {
        code: string;
        data?: { http_status: number; genre: string; [key: string]: unknown };
      };
    }[];
  };
}

async function graphql(
  fake: FakeOpenCTI,
  query: string,
  variables: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): Promise<GraphQLResponse> {
  const response = await fetch(fake.graphqlUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Authorization: `Bearer ${fake.token}`,
      "User-Agent": "fakes-test/1.0",
      ...headers,
    },
    body: JSON.stringify({ query, variables }),
  });

  return {
    status: response.status,
    contentType: response.headers.get("content-type"),
    json: (await response.json()) as GraphQLResponse["json"],
  };
}

const CONNECTOR_ID = "5e3f1c8a-9b2d-4e6f-8a1c-3d5b7e9f0a2c";

const REGISTER = `mutation RegisterConnector($input: RegisterConnectorInput) {
  registerConnector(input: $input) {
    id connector_state connector_user_id
    config { connection { host vhost use_ssl port user pass } push push_routing push_exchange listen }
  }
}`;

const PING = `mutation PingConnector($id: ID!, $state: String, $connectorInfo: ConnectorInfoInput) {
  pingConnector(id: $id, state: $state, connectorInfo: $connectorInfo) { id connector_state connector_state_reset }
}`;

const WORK_ADD = `mutation WorkAdd($connectorId: String!, $friendlyName: String) {
  workAdd(connectorId: $connectorId, friendlyName: $friendlyName) { id status name }
}`;

const PUSH = `mutation Push($connectorId: String!, $bundle: String!, $workId: String) {
  stixBundlePush(connectorId: $connectorId, bundle: $bundle, work_id: $workId)
}`;

const WORK = `query Work($id: ID!) {
  work(id: $id) { id status completed_number errors { message source } messages { message }
    tracking { import_expected_number import_processed_number } }
}`;

function registerInput(
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    id: CONNECTOR_ID,
    name: "Citalid",
    type: "EXTERNAL_IMPORT",
    scope: ["identity", "attack-pattern"],
    auto: false,
    only_contextual: false,
    playbook_compatible: false,
    ...overrides,
  };
}

async function registered(
  options: FakeOpenCTIOptions = {},
): Promise<FakeOpenCTI> {
  const fake = await opencti(options);
  const result = await graphql(fake, REGISTER, { input: registerInput() });
  expect(result.json.errors).toBeUndefined();

  return fake;
}

async function addWork(fake: FakeOpenCTI): Promise<string> {
  const result = await graphql(fake, WORK_ADD, {
    connectorId: CONNECTOR_ID,
    friendlyName: "Citalid run",
  });

  return result.json.data?.workAdd.id as string;
}

async function editWork(
  fake: FakeOpenCTI,
  id: string,
  edit: string,
): Promise<GraphQLResponse> {
  return graphql(
    fake,
    `mutation Edit($id: ID!) { workEdit(id: $id) { ${edit} } }`,
    { id },
  );
}

function smallBundle(objectCount: number): string {
  const objects = Array.from({ length: objectCount }, (_, i) => ({
    type: "identity",
    id: `identity--00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
    spec_version: "2.1",
    name: `Identity ${i}`,
  }));

  return JSON.stringify({
    type: "bundle",
    id: "bundle--11111111-2222-4333-8444-555555555555",
    objects,
  });
}

test("fake Citalid issues a token for valid credentials", async () => {
  const fake = await citalid();

  const response = await tokenRequest(fake);
  const json = (await response.json()) as Record<string, unknown>;

  expect(response.status).toBe(200);
  expect(typeof json.access_token).toBe("string");
  expect(json.token_type).toBe("Bearer");
  expect(json.expires_in).toBe(36000);
  expect(typeof json.refresh_token).toBe("string");
  expect(json.scope).toBe("read write");
  expect(fake.counts.logins).toBe(1);
  expect(fake.tokens[0]?.accessToken).toBe(json.access_token as string);
});

test("fake Citalid issues a fresh token each login", async () => {
  const fake = await citalid();

  const first = await login(fake);
  const second = await login(fake);

  expect(first).not.toBe(second);
  expect(fake.counts.logins).toBe(2);
});

test("fake Citalid decodes form-encoded passwords", async () => {
  const password = "p&ss=w%rd + spaces ünïcødé 🔑";
  const fake = await citalid({ user: "analyst+ops@example.com", password });

  const encoded = await tokenRequest(fake);
  const raw = await tokenRequest(fake, {
    body: `grant_type=password&username=${fake.user}&password=${password}`,
  });

  expect(encoded.status).toBe(200);
  expect(raw.status).toBe(400);
});

test("fake Citalid rejects a wrong password", async () => {
  const fake = await citalid();

  const response = await tokenRequest(fake, { password: "wrong" });
  const json = (await response.json()) as Record<string, unknown>;

  expect(response.status).toBe(400);
  expect(json.error).toBe("invalid_grant");
  expect(typeof json.error_description).toBe("string");
  expect(fake.counts.tokenRequests).toBe(1);
  expect(fake.counts.logins).toBe(0);
});

test("fake Citalid rejects a missing client id", async () => {
  const fake = await citalid();

  const response = await tokenRequest(fake, {
    headers: { Authorization: "Basic d3Jvbmc6" },
  });
  const json = (await response.json()) as Record<string, unknown>;

  expect(response.status).toBe(401);
  expect(json.error).toBe("invalid_client");
});

test("fake Citalid rejects a JSON login body", async () => {
  const fake = await citalid();

  const response = await tokenRequest(fake, {
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      grant_type: "password",
      username: fake.user,
      password: fake.password,
    }),
  });
  const json = (await response.json()) as Record<string, unknown>;

  expect(response.status).toBe(400);
  expect(json.error).toBe("invalid_request");
});

test("fake Citalid rejects another grant type", async () => {
  const fake = await citalid();

  const response = await tokenRequest(fake, {
    body: "grant_type=client_credentials",
  });
  const json = (await response.json()) as Record<string, unknown>;

  expect(response.status).toBe(400);
  expect(json.error).toBe("unsupported_grant_type");
});

test("fake Citalid lists version records", async () => {
  const fake = await citalid({
    versions: fixtureCitalidVersions(),
    shuffle: false,
  });
  const token = await login(fake);

  const response = await listVersions(fake, token);
  const records = (await response.json()) as {
    id: string;
    created_at: string;
    name: string;
  }[];

  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("application/json");
  expect(records.map((record) => record.id)).toEqual(
    FIXTURE_VERSIONS.map((version) => version.id),
  );
  expect(records[0]?.created_at).toBe(FIXTURE_VERSIONS[0]?.createdAt);
  expect(records[0]?.name).toBe(FIXTURE_VERSIONS[0]?.name);
  expect(fake.counts.lists).toBe(1);
});

test("fake Citalid shuffles the listing by default", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  const orders = new Set<string>();

  for (let i = 0; i < 20; i += 1) {
    const records = (await (await listVersions(fake, token)).json()) as {
      id: string;
    }[];
    orders.add(records.map((record) => record.id).join(","));
    expect(records).toHaveLength(4);
  }

  expect(orders.size).toBeGreaterThan(1);
});

test("fake Citalid derives created_at from the id", async () => {
  const fake = await citalid({
    versions: [
      { id: "20250105a", body: "{}" },
      { id: "20250105b", body: "{}" },
      { id: "latest-build", body: "{}" },
    ],
    shuffle: false,
  });
  const token = await login(fake);

  const records = (await (await listVersions(fake, token)).json()) as {
    id: string;
    created_at: string;
    name: string;
  }[];

  expect(records[0]?.created_at).toBe("2025-01-05T00:00:00.000000Z");
  expect(records[1]?.created_at).toBe("2025-01-05T01:00:00.000000Z");
  expect(Number.isNaN(Date.parse(records[2]?.created_at ?? ""))).toBe(false);
  expect(records[0]?.name).toBe("Version 20250105a");
});

test("fake Citalid requires a bearer token", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });

  const missing = await listVersions(fake, null);
  const wrong = await listVersions(fake, "not-a-token");
  const missingJson = (await missing.json()) as Record<string, unknown>;

  expect(missing.status).toBe(401);
  expect(typeof missingJson.detail).toBe("string");
  expect(wrong.status).toBe(401);
  expect(fake.counts.unauthorized).toBe(2);
});

test("fake Citalid serves the fixture bundle bytes", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  const version = FIXTURE_VERSIONS[2]!;

  const response = await download(fake, version.id, token);
  const bytes = new Uint8Array(await response.arrayBuffer());

  expect(response.status).toBe(200);
  expect(response.headers.get("content-length")).toBe(String(bytes.length));
  expect(
    Buffer.from(bytes).equals(Buffer.from(loadFixtureBundle(version.file))),
  ).toBe(true);
  expect(fake.counts.downloads[version.id]).toBe(1);
  expect(fake.counts.downloadsTotal).toBe(1);
});

test("fake Citalid serves string and object bodies", async () => {
  const fake = await citalid({
    versions: [
      {
        id: "20250101",
        body: '{"type":"bundle","id":"bundle--1","objects":[]}',
      },
      {
        id: "20250102",
        body: { type: "bundle", id: "bundle--2", objects: [] },
      },
    ],
  });
  const token = await login(fake);

  const fromString = (await (
    await download(fake, "20250101", token)
  ).json()) as { id: string };
  const fromObject = (await (
    await download(fake, "20250102", token)
  ).json()) as { id: string };

  expect(fromString.id).toBe("bundle--1");
  expect(fromObject.id).toBe("bundle--2");
});

test("fake Citalid decodes a percent-encoded id", async () => {
  const id = "20250105 a/b?c#d%é";
  const fake = await citalid({ versions: [{ id, body: "{}" }] });
  const token = await login(fake);

  const encoded = await download(fake, id, token);
  const raw = await apiGet(
    fake,
    `${CITALID_VERSIONS_PATH}20250105%20a/b/download/`,
    token,
  );

  expect(encoded.status).toBe(200);
  expect(fake.requests.at(-2)?.versionId).toBe(id);
  expect(raw.status).toBe(404);
});

test("fake Citalid returns 404 for an unknown version", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);

  const response = await download(fake, "20990101", token);
  const json = (await response.json()) as Record<string, unknown>;

  expect(response.status).toBe(404);
  expect(json.detail).toBe("Not found.");
});

test("fake Citalid returns 404 for the latest route", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);

  const response = await apiGet(fake, `${CITALID_VERSIONS_PATH}latest/`, token);

  expect(response.status).toBe(404);
  expect(response.headers.get("content-type")).toContain("text/html");
});

test("fake Citalid records requests with headers", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);

  await listVersions(fake, token);

  const tokenCall = fake.requests[0]!;
  const listCall = fake.requests[1]!;
  expect(tokenCall.route).toBe("token");
  expect(tokenCall.method).toBe("POST");
  expect(tokenCall.body).toContain("grant_type=password");
  expect(tokenCall.headers.authorization).toBe(BASIC_AUTH);
  expect(tokenCall.status).toBe(200);
  expect(listCall.route).toBe("list");
  expect(listCall.path).toBe(CITALID_VERSIONS_PATH);
  expect(listCall.headers.authorization).toBe(`Bearer ${token}`);
  expect(listCall.acceptLanguage).toBe("en");
  expect(listCall.time).toBeGreaterThan(0);
});

test("fake Citalid serves routes under basePath", async () => {
  const fake = await citalid({
    versions: fixtureCitalidVersions(),
    basePath: "/tenant/",
  });
  const token = await login(fake);

  const inside = await listVersions(fake, token);
  const outside = await fetch(`${fake.origin}${CITALID_VERSIONS_PATH}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  const doubled = await fetch(`${fake.url}/${CITALID_VERSIONS_PATH}`, {
    headers: { Authorization: `Bearer ${token}` },
  });

  expect(fake.url).toBe(`${fake.origin}/tenant`);
  expect(inside.status).toBe(200);
  expect(outside.status).toBe(404);
  expect(doubled.status).toBe(404);
});

test("fake Citalid expires a token after tokenMaxRequests", async () => {
  const fake = await citalid({
    versions: fixtureCitalidVersions(),
    tokenMaxRequests: 2,
  });
  const token = await login(fake);

  const first = await listVersions(fake, token);
  const second = await listVersions(fake, token);
  const third = await listVersions(fake, token);
  const renewed = await listVersions(fake, await login(fake));

  expect(first.status).toBe(200);
  expect(second.status).toBe(200);
  expect(third.status).toBe(401);
  expect(renewed.status).toBe(200);
  expect(fake.tokens[0]?.requests).toBe(2);
});

test("fake Citalid expires a token after tokenTtlMs", async () => {
  const fake = await citalid({
    versions: fixtureCitalidVersions(),
    tokenTtlMs: 200,
  });
  const response = await tokenRequest(fake);
  const json = (await response.json()) as {
    access_token: string;
    expires_in: number;
  };

  const fresh = await listVersions(fake, json.access_token);
  await Bun.sleep(250);
  const expired = await listVersions(fake, json.access_token);

  expect(json.expires_in).toBe(1);
  expect(fresh.status).toBe(200);
  expect(expired.status).toBe(401);
});

test("fake Citalid rejectAllTokens revokes issued tokens", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);

  fake.rejectAllTokens();
  const revoked = await listVersions(fake, token);
  const renewed = await listVersions(fake, await login(fake));

  expect(revoked.status).toBe(401);
  expect(fake.tokens[0]?.revoked).toBe(true);
  expect(renewed.status).toBe(200);
});

test("fake Citalid rejects tokens after N downloads", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.rejectTokensAfterDownloads(2);

  const first = await download(fake, "20250105-1", token);
  const second = await download(fake, "20250105-2", token);
  const third = await download(fake, "20250210", token);
  const retried = await download(fake, "20250210", await login(fake));
  const fourth = await download(fake, "20250301", fake.tokens[1]!.accessToken);

  expect(first.status).toBe(200);
  expect(second.status).toBe(200);
  expect(third.status).toBe(401);
  expect(retried.status).toBe(200);
  expect(fourth.status).toBe(200);
  expect(fake.counts.downloads["20250210"]).toBe(2);
});

test("fake Citalid changes versions after start", async () => {
  const fake = await citalid({ shuffle: false });
  const token = await login(fake);

  const empty = (await (await listVersions(fake, token)).json()) as unknown[];
  fake.setVersions([{ id: "20250101", body: "{}" }]);
  fake.addVersion({ id: "20250102", body: "{}" });
  fake.addVersion({ id: "20250101", body: '{"replaced":true}' });
  const two = (await (await listVersions(fake, token)).json()) as {
    id: string;
  }[];
  const replaced = (await (
    await download(fake, "20250101", token)
  ).json()) as Record<string, unknown>;
  const removed = fake.removeVersion("20250102");
  const one = (await (await listVersions(fake, token)).json()) as {
    id: string;
  }[];

  expect(empty).toEqual([]);
  expect(two.map((record) => record.id)).toEqual(["20250101", "20250102"]);
  expect(replaced.replaced).toBe(true);
  expect(removed).toBe(true);
  expect(one.map((record) => record.id)).toEqual(["20250101"]);
  expect(fake.versionIds()).toEqual(["20250101"]);
});

test("fake Citalid status fault expires after times", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  const handle = fake.inject("list", {
    kind: "status",
    status: 429,
    headers: { "Retry-After": "3" },
    times: 1,
  });

  const limited = await listVersions(fake, token);
  const limitedJson = (await limited.json()) as Record<string, unknown>;
  const normal = await listVersions(fake, token);

  expect(limited.status).toBe(429);
  expect(limited.headers.get("retry-after")).toBe("3");
  expect(limitedJson.detail).toBe("Too Many Requests");
  expect(normal.status).toBe(200);
  expect(handle.hits).toBe(1);
  expect(handle.remaining).toBe(0);
  expect(fake.faults).toHaveLength(0);
  expect(fake.requests.at(-2)?.fault).toBe("status");
});

test("fake Citalid status fault covers server errors", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);

  for (const status of [429, 500, 502, 503, 504]) {
    fake.inject("download", { kind: "status", status, times: 1 });
    const response = await download(fake, "20250210", token);
    await response.arrayBuffer();
    expect(response.status).toBe(status);
  }
});

test("fake Citalid status fault sends an HTML page", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("list", {
    kind: "status",
    status: 404,
    body: "<html><body><h1>Not Found</h1></body></html>",
  });

  const response = await listVersions(fake, token);

  expect(response.status).toBe(404);
  expect(response.headers.get("content-type")).toBe("text/html; charset=utf-8");
  expect(await response.text()).toContain("<h1>Not Found</h1>");
});

test("fake Citalid status fault applies forever by default", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  fake.inject("token", {
    kind: "status",
    status: 401,
    body: { error: "invalid_client" },
  });

  for (let i = 0; i < 3; i += 1) {
    const response = await tokenRequest(fake);
    await response.arrayBuffer();
    expect(response.status).toBe(401);
  }

  expect(fake.faults[0]?.remaining).toBe(Infinity);
  expect(fake.counts.logins).toBe(0);
});

test("fake Citalid body fault replaces the listing", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("list", { kind: "body", body: { results: [] }, times: 1 });
  fake.inject("list", { kind: "body", body: [{ name: "no id" }], times: 1 });
  fake.inject("list", { kind: "body", body: [], times: 1 });

  const notArray = (await (await listVersions(fake, token)).json()) as unknown;
  const withoutId = (await (await listVersions(fake, token)).json()) as unknown;
  const empty = (await (await listVersions(fake, token)).json()) as unknown;

  expect(notArray).toEqual({ results: [] });
  expect(withoutId).toEqual([{ name: "no id" }]);
  expect(empty).toEqual([]);
});

test("fake Citalid body fault replaces one download", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("20250210", { kind: "body", body: "<html>maintenance</html>" });

  const other = await download(fake, "20250105-1", token);
  const replaced = await download(fake, "20250210", token);

  expect(other.status).toBe(200);
  expect((await other.json()) as { type: string }).toMatchObject({
    type: "bundle",
  });
  expect(replaced.status).toBe(200);
  expect(await replaced.text()).toBe("<html>maintenance</html>");
});

test("fake Citalid hang fault times out a client", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("list", { kind: "hang" });

  const error = await apiGet(fake, CITALID_VERSIONS_PATH, token, {
    signal: AbortSignal.timeout(300),
  }).catch((caught: Error) => caught);

  expect(error).toBeInstanceOf(Error);
  expect((error as Error).name).toBe("TimeoutError");
  expect(fake.requests.at(-1)?.fault).toBe("hang");
});

test("fake Citalid reset fault destroys the socket", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("download", { kind: "reset", times: 1 });

  // Bun's fetch may resend a request whose reused keep-alive socket was
  // reset, so the faulted request goes on a connection of its own.
  const error = await download(fake, "20250210", token, {
    keepalive: false,
  }).catch((caught: Error) => caught);
  const retried = await download(fake, "20250210", token);

  expect(error).toBeInstanceOf(Error);
  expect((error as Error & { code?: string }).code).toBe("ECONNRESET");
  expect(fake.requests[1]?.fault).toBe("reset");
  expect(fake.requests[1]?.status).toBeNull();
  expect(retried.status).toBe(200);
  expect(fake.counts.downloads["20250210"]).toBe(2);
});

test("fake Citalid truncate fault cuts the body", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  const full = loadFixtureBundle(FIXTURE_VERSIONS[0]!.file).length;
  fake.inject("download", { kind: "truncate", times: 1 });

  const response = await download(fake, "20250105-1", token);
  const error = await response.arrayBuffer().catch((caught: Error) => caught);

  expect(response.status).toBe(200);
  expect(response.headers.get("content-length")).toBe(String(full));
  expect(error).toBeInstanceOf(Error);
});

test("fake Citalid stall fault stops mid-body", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("download", { kind: "stall", times: 1 });

  const response = await download(fake, "20250105-1", token, {
    signal: AbortSignal.timeout(500),
  });
  const error = await response.arrayBuffer().catch((caught: Error) => caught);

  expect(response.status).toBe(200);
  expect(error).toBeInstanceOf(Error);
  expect((error as Error).name).toBe("TimeoutError");
});

test("fake Citalid slow fault delays the answer", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("list", { kind: "slow", delayMs: 300, times: 1 });

  const started = performance.now();
  const response = await listVersions(fake, token);
  const elapsed = performance.now() - started;

  expect(response.status).toBe(200);
  expect(elapsed).toBeGreaterThanOrEqual(290);
});

test("fake Citalid trickle fault sends the body in pieces", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  const full = loadFixtureBundle(FIXTURE_VERSIONS[0]!.file);
  const chunkBytes = Math.ceil(full.length / 4);
  fake.inject("download", { kind: "trickle", chunkBytes, intervalMs: 100, times: 1 });

  const started = performance.now();
  const response = await download(fake, "20250105-1", token);
  const body = Buffer.from(await response.arrayBuffer());
  const elapsed = performance.now() - started;

  expect(response.headers.get("content-length")).toBe(String(full.length));
  expect(body.equals(full)).toBe(true);
  expect(elapsed).toBeGreaterThanOrEqual(290);
});

test("fake Citalid delayMs precedes another fault", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("list", {
    kind: "status",
    status: 504,
    delayMs: 200,
    times: 1,
  });

  const started = performance.now();
  const response = await listVersions(fake, token);
  const elapsed = performance.now() - started;

  expect(response.status).toBe(504);
  expect(elapsed).toBeGreaterThanOrEqual(190);
});

test("fake Citalid applies the oldest matching fault first", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("download", { kind: "status", status: 500, times: 1 });
  fake.inject("20250210", { kind: "status", status: 503, times: 1 });

  const first = await download(fake, "20250210", token);
  const second = await download(fake, "20250210", token);
  const third = await download(fake, "20250210", token);

  expect(first.status).toBe(500);
  expect(second.status).toBe(503);
  expect(third.status).toBe(200);
});

test("fake Citalid star fault matches every route", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  fake.inject("*", { kind: "status", status: 503, times: 2 });

  const token = await tokenRequest(fake);
  const unknown = await fetch(`${fake.url}/nowhere`);

  expect(token.status).toBe(503);
  expect(unknown.status).toBe(503);
  expect(fake.faults).toHaveLength(0);
});

test("fake Citalid removes a fault by handle", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  const handle = fake.inject("list", { kind: "status", status: 500 });
  fake.inject("download", { kind: "status", status: 500 });

  handle.remove();
  const listed = await listVersions(fake, token);
  fake.clearFaults();
  const downloaded = await download(fake, "20250210", token);

  expect(listed.status).toBe(200);
  expect(downloaded.status).toBe(200);
});

test("fake Citalid clearRecords keeps tokens", async () => {
  const fake = await citalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);

  fake.clearRecords();
  const response = await listVersions(fake, token);

  expect(response.status).toBe(200);
  expect(fake.requests).toHaveLength(1);
  expect(fake.counts.logins).toBe(0);
  expect(fake.counts.lists).toBe(1);
});

test("fake Citalid serves HTTPS with a given certificate", async () => {
  const fake = await citalid({
    versions: fixtureCitalidVersions(),
    tls: TEST_TLS,
  });

  const response = await fetch(`${fake.url}/auth/o/token/`, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      Authorization: BASIC_AUTH,
    },
    body: new URLSearchParams({
      grant_type: "password",
      username: fake.user,
      password: fake.password,
    }),
    tls: { ca: TEST_TLS.cert },
  });
  const untrusted = await fetch(`${fake.url}/auth/o/token/`, {
    method: "POST",
  }).catch((caught: Error) => caught);

  expect(fake.url.startsWith("https://127.0.0.1:")).toBe(true);
  expect(response.status).toBe(200);
  expect(untrusted).toBeInstanceOf(Error);
});

test("fake Citalid stop closes hanging connections", async () => {
  const fake = await startFakeCitalid({ versions: fixtureCitalidVersions() });
  const token = await login(fake);
  fake.inject("list", { kind: "hang" });

  const pending = listVersions(fake, token).catch((caught: Error) => caught);
  while (fake.requests.length < 2) {
    await Bun.sleep(10);
  }
  await fake.stop();
  const outcome = await pending;

  expect(outcome).toBeInstanceOf(Error);
});

test("fake OpenCTI returns the about version", async () => {
  const fake = await opencti();

  const result = await graphql(fake, "query healthCheck { about { version } }");
  fake.version = "7.260817.0";
  const changed = await graphql(fake, "{ about { version } }");

  expect(result.status).toBe(200);
  expect(result.json.data?.about.version).toBe("6.9.22");
  expect(changed.json.data?.about.version).toBe("7.260817.0");
});

test("fake OpenCTI rejects an unknown field", async () => {
  const fake = await opencti();

  const result = await graphql(fake, "{ about { version uptime } }");
  const error = result.json.errors?.[0];

  expect(result.status).toBe(200);
  expect(result.json.data).toBeUndefined();
  expect(error?.name).toBe("GRAPHQL_VALIDATION_FAILED");
  expect(error?.extensions.code).toBe("GRAPHQL_VALIDATION_FAILED");
  expect(error?.message).toContain("uptime");
  expect(fake.operations).toHaveLength(0);
});

test("fake OpenCTI rejects a wrong argument type", async () => {
  const fake = await opencti();

  const result = await graphql(
    fake,
    "mutation { pingConnector(id: 1, state: 2) { id } }",
  );

  expect(result.json.errors?.[0]?.extensions.code).toBe(
    "GRAPHQL_VALIDATION_FAILED",
  );
});

test("fake OpenCTI rejects a parse error", async () => {
  const fake = await opencti();

  const result = await graphql(fake, "{ about { version ");

  expect(result.status).toBe(200);
  expect(result.json.errors?.[0]?.extensions.code).toBe("GRAPHQL_PARSE_FAILED");
});

test("fake OpenCTI rejects an unknown input field", async () => {
  const fake = await opencti();

  const result = await graphql(fake, REGISTER, {
    input: registerInput({ surprise: true }),
  });

  expect(result.status).toBe(200);
  expect(result.json.errors?.[0]?.extensions.code).toBe("BAD_USER_INPUT");
  expect(result.json.errors?.[0]?.message).toContain("surprise");
  expect(fake.connectors.size).toBe(0);
});

test("fake OpenCTI rejects a body without query", async () => {
  const fake = await opencti();

  const response = await fetch(fake.graphqlUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
  const json = (await response.json()) as GraphQLResponse["json"];

  expect(response.status).toBe(400);
  expect(json.errors?.[0]?.extensions.code).toBe("BAD_REQUEST");
});

test("fake OpenCTI requires the bearer token", async () => {
  const fake = await opencti();

  const wrong = await graphql(
    fake,
    "{ about { version } }",
    {},
    { Authorization: "Bearer wrong" },
  );
  const error = wrong.json.errors?.[0];

  expect(wrong.status).toBe(200);
  expect(wrong.json.data?.about).toBeNull();
  expect(error?.name).toBe("AUTH_REQUIRED");
  expect(error?.extensions.code).toBe("AUTH_REQUIRED");
  expect(error?.extensions.data?.http_status).toBe(401);
  expect(error?.extensions.data?.genre).toBe("TECHNICAL");
  expect(error?.message).toBe("You must be logged in to do this.");
});

test("fake OpenCTI accepts a configured token", async () => {
  const fake = await opencti({ token: "custom-token" });

  const result = await graphql(fake, "{ about { version } }");
  const withDefault = await graphql(
    fake,
    "{ about { version } }",
    {},
    {
      Authorization: `Bearer ${DEFAULT_OPENCTI_TOKEN}`,
    },
  );

  expect(result.json.errors).toBeUndefined();
  expect(withDefault.json.errors?.[0]?.name).toBe("AUTH_REQUIRED");
});

test("fake OpenCTI records requests and User-Agent", async () => {
  const fake = await opencti();

  await graphql(fake, "query healthCheck { about { version } }");

  const request = fake.requests[0]!;
  expect(request.userAgent).toBe("fakes-test/1.0");
  expect(request.headers.authorization).toBe(`Bearer ${fake.token}`);
  expect(request.body).toContain("healthCheck");
  expect(request.status).toBe(200);
  expect(fake.operations[0]?.operationName).toBe("healthCheck");
  expect(fake.operations[0]?.operationType).toBe("query");
  expect(fake.operations[0]?.rootFields).toEqual(["about"]);
});

test("fake OpenCTI registers a connector", async () => {
  const fake = await opencti({ rabbitmq: { host: "127.0.0.2" } });

  const result = await graphql(fake, REGISTER, { input: registerInput() });
  const connector = result.json.data?.registerConnector;

  expect(result.json.errors).toBeUndefined();
  expect(connector.id).toBe(CONNECTOR_ID);
  expect(connector.connector_state).toBeNull();
  expect(connector.connector_user_id).toBe(DEFAULT_OPENCTI_USER_ID);
  expect(connector.config.connection).toEqual({
    host: "127.0.0.2",
    vhost: "/",
    use_ssl: false,
    port: 5672,
    user: "guest",
    pass: "guest",
  });
  expect(connector.config.push).toBe(`push_${CONNECTOR_ID}`);
  expect(connector.config.push_routing).toBe(`push_routing_${CONNECTOR_ID}`);
  expect(connector.config.push_exchange).toBe("amqp.worker.exchange");
  expect(connector.config.listen).toBe(`listen_${CONNECTOR_ID}`);
  expect(fake.connectors.get(CONNECTOR_ID)?.scope).toEqual([
    "identity",
    "attack-pattern",
  ]);
  expect(fake.registrations).toHaveLength(1);
});

test("fake OpenCTI re-registration keeps the state", async () => {
  const fake = await registered();
  await graphql(fake, PING, {
    id: CONNECTOR_ID,
    state: '{"last_loaded_bundle_id":"20250105-1"}',
  });

  const again = await graphql(fake, REGISTER, {
    input: registerInput({ name: "Citalid renamed" }),
  });

  expect(again.json.data?.registerConnector.connector_state).toBe(
    '{"last_loaded_bundle_id":"20250105-1"}',
  );
  expect(fake.connectors.get(CONNECTOR_ID)?.name).toBe("Citalid renamed");
  expect(fake.connectors.size).toBe(1);
  expect(fake.registrations).toHaveLength(2);
});

test("fake OpenCTI rejects a short connector name", async () => {
  const fake = await opencti();

  const result = await graphql(fake, REGISTER, {
    input: registerInput({ name: " " }),
  });

  expect(result.json.errors?.[0]?.extensions.code).toBe("VALIDATION_ERROR");
  expect(fake.connectors.size).toBe(0);
});

test("fake OpenCTI ping stores the state verbatim", async () => {
  const fake = await registered();
  const connectorInfo = {
    run_and_terminate: false,
    buffering: false,
    queue_threshold: 500,
    queue_messages_size: 0.25,
    next_run_datetime: "2025-03-01T10:00:00Z",
    last_run_datetime: null,
  };

  for (const state of [
    "null",
    "",
    "{}",
    "not json",
    '{"last_loaded_bundle_id":123}',
  ]) {
    const result = await graphql(fake, PING, {
      id: CONNECTOR_ID,
      state,
      connectorInfo,
    });
    expect(result.json.data?.pingConnector.connector_state).toBe(state);
    expect(fake.connectors.get(CONNECTOR_ID)?.state).toBe(state);
  }

  expect(fake.pings).toHaveLength(5);
  expect(fake.pings[0]?.connectorInfo).toEqual(connectorInfo);
  expect(fake.pings[0]?.stateIgnored).toBe(false);
  expect(fake.connectors.get(CONNECTOR_ID)?.info).toEqual(connectorInfo);
});

test("fake OpenCTI ping without state stores null", async () => {
  const fake = await registered();
  await graphql(fake, PING, { id: CONNECTOR_ID, state: "{}" });

  const result = await graphql(fake, PING, { id: CONNECTOR_ID });

  expect(result.json.data?.pingConnector.connector_state).toBeNull();
  expect(fake.pings[1]?.state).toBeNull();
});

test("fake OpenCTI ping rejects an unknown connector", async () => {
  const fake = await opencti();

  const result = await graphql(fake, PING, { id: "unknown", state: "{}" });
  const error = result.json.errors?.[0];

  expect(result.json.data?.pingConnector).toBeNull();
  expect(error?.name).toBe("FUNCTIONAL_ERROR");
  expect(error?.message).toBe("No connector found with the specified ID");
  expect(error?.extensions.data?.http_status).toBe(400);
  expect(error?.extensions.data?.genre).toBe("BUSINESS");
});

test("fake OpenCTI reset drops the next ping state", async () => {
  const fake = await registered({
    queueDetails: { messages_number: 3, messages_size: 4096 },
  });
  await graphql(fake, PING, {
    id: CONNECTOR_ID,
    state: '{"last_loaded_bundle_id":"20250210"}',
  });

  fake.resetState(CONNECTOR_ID);
  const afterReset = fake.connectors.get(CONNECTOR_ID);
  expect(afterReset?.state).toBeNull();
  expect(afterReset?.stateReset).toBe(true);
  expect(fake.queuePurges[0]?.queues).toEqual([
    `push_${CONNECTOR_ID}`,
    `listen_${CONNECTOR_ID}`,
  ]);
  expect(fake.queueDetails).toEqual({ messages_number: 0, messages_size: 0 });

  const first = await graphql(fake, PING, {
    id: CONNECTOR_ID,
    state: '{"last_loaded_bundle_id":"20250210"}',
  });
  expect(first.json.data?.pingConnector.connector_state).toBeNull();
  expect(first.json.data?.pingConnector.connector_state_reset).toBe(false);
  expect(fake.pings.at(-1)?.stateIgnored).toBe(true);

  const second = await graphql(fake, PING, {
    id: CONNECTOR_ID,
    state: "null",
  });
  expect(second.json.data?.pingConnector.connector_state).toBe("null");
  expect(fake.pings.at(-1)?.stateIgnored).toBe(false);
});

test("fake OpenCTI resetStateConnector mutation resets", async () => {
  const fake = await registered();
  await graphql(fake, PING, { id: CONNECTOR_ID, state: "{}" });

  const result = await graphql(
    fake,
    "mutation ConnectorResetStateMutation($id: ID!) { resetStateConnector(id: $id) { id connector_state } }",
    { id: CONNECTOR_ID },
  );

  expect(result.json.data?.resetStateConnector.connector_state).toBeNull();
  expect(fake.connectors.get(CONNECTOR_ID)?.stateReset).toBe(true);
});

test("fake OpenCTI resetState rejects an unknown id", async () => {
  const fake = await opencti();

  expect(() => fake.resetState("unknown")).toThrow(
    'No connector found with id "unknown"',
  );
});

test("fake OpenCTI seeds a connector state", async () => {
  const fake = await opencti();
  fake.seedConnector({ id: CONNECTOR_ID, state: "not json" });

  const result = await graphql(fake, REGISTER, { input: registerInput() });

  expect(result.json.data?.registerConnector.connector_state).toBe("not json");
});

test("fake OpenCTI connector query returns null for unknown", async () => {
  const fake = await opencti();

  const result = await graphql(
    fake,
    'query { connector(id: "unknown") { id } }',
  );

  expect(result.json.errors).toBeUndefined();
  expect(result.json.data?.connector).toBeNull();
});

test("fake OpenCTI reports the queue details", async () => {
  const fake = await registered();
  fake.queueDetails = { messages_number: 12, messages_size: 600_000_000 };

  const result = await graphql(
    fake,
    "query Q($id: String!) { connector(id: $id) { id active connector_state connector_queue_details { messages_number messages_size } } }",
    { id: CONNECTOR_ID },
  );

  expect(result.json.data?.connector.active).toBe(true);
  expect(result.json.data?.connector.connector_queue_details).toEqual({
    messages_number: 12,
    messages_size: 600_000_000,
  });
});

test("fake OpenCTI workAdd opens a work in progress", async () => {
  const fake = await registered();

  const result = await graphql(fake, WORK_ADD, {
    connectorId: CONNECTOR_ID,
    friendlyName: "Citalid run",
  });
  const work = result.json.data?.workAdd;

  expect(work.id).toMatch(
    new RegExp(
      `^work_${CONNECTOR_ID}_\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z$`,
    ),
  );
  expect(work.status).toBe("progress");
  expect(work.name).toBe("Citalid run");
  expect(fake.works[0]?.receivedTime).not.toBeNull();
  expect(fake.openWorks()).toHaveLength(1);
});

test("fake OpenCTI workAdd gives unique ids", async () => {
  const fake = await registered();

  const ids = await Promise.all([addWork(fake), addWork(fake), addWork(fake)]);

  expect(new Set(ids).size).toBe(3);
});

test("fake OpenCTI workAdd fails for an unknown connector", async () => {
  const fake = await opencti();

  const result = await graphql(fake, WORK_ADD, { connectorId: "unknown" });

  expect(result.json.data).toBeNull();
  expect(result.json.errors?.[0]?.name).toBe("UNKNOWN_ERROR");
});

test("fake OpenCTI toProcessed completes a work without expectations", async () => {
  const fake = await registered();
  const id = await addWork(fake);

  await editWork(fake, id, 'toProcessed(message: "Loaded 2 versions")');
  const result = await graphql(fake, WORK, { id });
  const work = result.json.data?.work;

  expect(work.status).toBe("complete");
  expect(work.completed_number).toBe(0);
  expect(work.messages).toEqual([{ message: "Loaded 2 versions" }]);
  expect(fake.works[0]?.completedTime).not.toBeNull();
});

test("fake OpenCTI toProcessed waits for expectations", async () => {
  const fake = await registered();
  const id = await addWork(fake);

  await editWork(fake, id, "addExpectations(expectations: 2)");
  await editWork(fake, id, 'toProcessed(message: "sent")');
  const waiting = fake.works[0]?.status;
  await editWork(fake, id, "reportExpectation");
  const halfway = fake.works[0]?.status;
  await editWork(fake, id, "reportExpectation");
  const result = await graphql(fake, WORK, { id });

  expect(waiting).toBe("progress");
  expect(halfway).toBe("progress");
  expect(result.json.data?.work.status).toBe("complete");
  expect(result.json.data?.work.completed_number).toBe(2);
  expect(result.json.data?.work.tracking).toEqual({
    import_expected_number: 2,
    import_processed_number: 2,
  });
});

test("fake OpenCTI reportExpectation completes without toProcessed", async () => {
  const fake = await registered();
  const id = await addWork(fake);

  await editWork(fake, id, "addExpectations(expectations: 2)");
  await editWork(fake, id, "reportExpectation");
  await editWork(
    fake,
    id,
    'reportExpectation(error: {error: "Missing reference", source: "relationship--1"})',
  );

  const work = fake.works[0]!;
  expect(work.status).toBe("complete");
  expect(work.toProcessedCalls).toBe(0);
  expect(work.errors).toHaveLength(1);
  expect(work.errors[0]?.message).toBe("Missing reference");
  expect(work.errors[0]?.source).toBe("relationship--1");
});

test("fake OpenCTI toProcessed in error records an error", async () => {
  const fake = await registered();
  const id = await addWork(fake);

  await editWork(
    fake,
    id,
    'toProcessed(message: "Citalid download failed: 503", inError: true)',
  );

  const work = fake.works[0]!;
  expect(work.status).toBe("complete");
  expect(work.errors.map((error) => error.message)).toEqual([
    "Citalid download failed: 503",
  ]);
  expect(work.messages).toHaveLength(0);
});

test("fake OpenCTI keeps at most 100 work errors", async () => {
  const fake = await registered();
  const id = await addWork(fake);
  await editWork(fake, id, "addExpectations(expectations: 150)");

  for (let i = 0; i < 105; i += 1) {
    await editWork(fake, id, `reportExpectation(error: {error: "e${i}"})`);
  }

  expect(fake.works[0]?.errors).toHaveLength(100);
  expect(fake.works[0]?.processed).toBe(105);
  expect(fake.works[0]?.status).toBe("progress");
});

test("fake OpenCTI toReceived, ping and delete edit a work", async () => {
  const fake = await registered();
  const id = await addWork(fake);

  const received = await editWork(fake, id, 'toReceived(message: "started")');
  const pinged = await editWork(fake, id, "ping");
  const alive = await graphql(
    fake,
    "query A($id: ID!) { isWorkAlive(id: $id) }",
    { id },
  );
  const deleted = await editWork(fake, id, "delete");
  const gone = await graphql(
    fake,
    "query A($id: ID!) { isWorkAlive(id: $id) }",
    { id },
  );
  const missing = await graphql(fake, WORK, { id });

  expect(received.json.data?.workEdit.toReceived).toBe(id);
  expect(pinged.json.data?.workEdit.ping).toBe(id);
  expect(alive.json.data?.isWorkAlive).toBe(true);
  expect(deleted.json.data?.workEdit.delete).toBe(id);
  expect(gone.json.data?.isWorkAlive).toBe(false);
  expect(missing.json.data?.work).toBeNull();
  expect(fake.works).toHaveLength(0);
  expect(fake.deletedWorks[0]?.id).toBe(id);
  expect(fake.deletedWorks[0]?.messages[0]?.message).toBe("started");
});

test("fake OpenCTI workEdit rejects an unknown work", async () => {
  const fake = await registered();

  const processed = await editWork(fake, "work_unknown", "toProcessed");
  const reported = await editWork(fake, "work_unknown", "reportExpectation");

  expect(processed.json.errors?.[0]?.name).toBe("FUNCTIONAL_ERROR");
  expect(reported.json.errors).toBeUndefined();
});

test("fake OpenCTI lists works", async () => {
  const fake = await registered();
  const first = await addWork(fake);
  const second = await addWork(fake);
  await editWork(fake, first, "toProcessed");

  const all = await graphql(
    fake,
    "{ works(first: 10) { pageInfo { globalCount } edges { node { id status } } } }",
  );
  const open = await graphql(
    fake,
    `
      query W($filters: FilterGroup) {
        works(filters: $filters) {
          edges {
            node {
              id
            }
          }
        }
      }
    `,
    {
      filters: {
        mode: "and",
        filterGroups: [],
        filters: [
          { key: ["connector_id"], values: [CONNECTOR_ID] },
          { key: ["status"], values: ["progress"] },
        ],
      },
    },
  );
  const viaConnector = await graphql(
    fake,
    'query C($id: String!) { connector(id: $id) { works(status: "complete") { id } } }',
    { id: CONNECTOR_ID },
  );

  expect(all.json.data?.works.pageInfo.globalCount).toBe(2);
  expect(all.json.data?.works.edges[0].node.id).toBe(second);
  expect(open.json.data?.works.edges).toEqual([{ node: { id: second } }]);
  expect(viaConnector.json.data?.connector.works).toEqual([{ id: first }]);
  expect(fake.worksOf(CONNECTOR_ID)).toHaveLength(2);
});

test("fake OpenCTI stores a pushed bundle", async () => {
  const fake = await registered();
  const workId = await addWork(fake);
  const bundle = new TextDecoder().decode(
    loadFixtureBundle(FIXTURE_VERSIONS[3]!.file),
  );

  const result = await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle,
    workId,
  });
  const push = fake.pushes[0]!;

  expect(result.json.errors).toBeUndefined();
  expect(result.json.data?.stixBundlePush).toBe(true);
  expect(push.connectorId).toBe(CONNECTOR_ID);
  expect(push.workId).toBe(workId);
  expect(push.workKnown).toBe(true);
  expect(push.bundle.objects).toHaveLength(
    parseFixtureBundle(FIXTURE_VERSIONS[3]!.file).objects.length,
  );
  expect(push.bytes).toBe(Buffer.byteLength(bundle));
  expect(fake.works[0]?.expected).toBe(0);
});

test("fake OpenCTI push without work creates one", async () => {
  const fake = await registered();

  await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle: smallBundle(1),
  });
  await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle: smallBundle(3),
    workId: "",
  });

  expect(fake.works).toHaveLength(2);
  expect(fake.works[0]?.createdBy).toBe("stixBundlePush");
  expect(fake.works[0]?.status).toBe("progress");
  expect(fake.works[0]?.name).toStartWith("Citalid run @ ");
  expect(fake.works[0]?.expected).toBe(1);
  expect(fake.works[1]?.expected).toBe(0);
  expect(fake.pushes[1]?.workId).toBe(fake.works[1]!.id);
});

test("fake OpenCTI push keeps an unknown work id", async () => {
  const fake = await registered();

  await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle: smallBundle(2),
    workId: "work_gone",
  });

  expect(fake.pushes[0]?.workId).toBe("work_gone");
  expect(fake.pushes[0]?.workKnown).toBe(false);
  expect(fake.works).toHaveLength(0);
});

test("fake OpenCTI rejects an invalid bundle", async () => {
  const fake = await registered();
  const invalid = [
    "not json",
    "[]",
    JSON.stringify({
      type: "report",
      objects: [{ type: "identity", id: "identity--1" }],
    }),
    JSON.stringify({ type: "bundle", id: "bundle--1", objects: [] }),
    JSON.stringify({ type: "bundle", id: "bundle--1" }),
  ];

  for (const bundle of invalid) {
    const result = await graphql(fake, PUSH, {
      connectorId: CONNECTOR_ID,
      bundle,
    });
    const error = result.json.errors?.[0];
    expect(result.json.data?.stixBundlePush).toBeNull();
    expect(error?.name).toBe("UNSUPPORTED_ERROR");
    expect(error?.message).toBe("Invalid bundle");
    expect(typeof error?.extensions.data?.cause).toBe("string");
  }

  expect(fake.pushes).toHaveLength(0);
});

test("fake OpenCTI push rejects an unknown connector", async () => {
  const fake = await opencti();

  const result = await graphql(fake, PUSH, {
    connectorId: "unknown",
    bundle: smallBundle(1),
  });

  expect(result.json.errors?.[0]?.name).toBe("UNSUPPORTED_ERROR");
  expect(result.json.errors?.[0]?.extensions.data?.cause).toContain("unknown");
});

test("fake OpenCTI simulated worker completes works", async () => {
  const fake = await registered({ simulateWorker: true });
  const workId = await addWork(fake);

  await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle: smallBundle(3),
    workId,
  });
  const afterPush = { ...fake.works[0]! };
  await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle: smallBundle(1),
  });

  expect(afterPush.expected).toBe(3);
  expect(afterPush.processed).toBe(3);
  expect(afterPush.status).toBe("complete");
  expect(fake.works[1]?.expected).toBe(1);
  expect(fake.works[1]?.status).toBe("complete");
});

test("fake OpenCTI enforces mutation batching protection", async () => {
  const fake = await registered();
  const id = await addWork(fake);

  const result = await graphql(
    fake,
    `
      mutation Two($id: ID!) {
        a: workEdit(id: $id) {
          ping
        }
        b: workEdit(id: $id) {
          ping
        }
      }
    `,
    { id },
  );
  const mixed = await graphql(
    fake,
    `mutation Mixed($id: ID!) { workEdit(id: $id) { ping } pingConnector(id: "${CONNECTOR_ID}") { id } }`,
    { id },
  );

  expect(result.json.errors?.[0]?.extensions.code).toBe(
    "GRAPHQL_VALIDATION_FAILED",
  );
  expect(result.json.errors?.[0]?.message).toBe(
    "Allowed number of calls for Mutation->workEdit has been exceeded (max: 1)",
  );
  expect(mixed.json.errors).toBeUndefined();
});

test("fake OpenCTI allows a query field twice", async () => {
  const fake = await opencti();

  const twice = await graphql(
    fake,
    "{ a: about { version } b: about { version } }",
  );
  const thrice = await graphql(
    fake,
    "{ a: about { version } b: about { version } c: about { version } }",
  );

  expect(twice.json.errors).toBeUndefined();
  expect(thrice.json.errors?.[0]?.extensions.code).toBe(
    "GRAPHQL_VALIDATION_FAILED",
  );
});

test("fake OpenCTI records deleteConnector", async () => {
  const fake = await registered();
  await addWork(fake);

  const result = await graphql(
    fake,
    "mutation D($id: ID!) { deleteConnector(id: $id) }",
    { id: CONNECTOR_ID },
  );

  expect(result.json.data?.deleteConnector).toBe(CONNECTOR_ID);
  expect(fake.connectorDeletes.map((call) => call.id)).toEqual([CONNECTOR_ID]);
  expect(fake.connectors.size).toBe(0);
  expect(fake.works).toHaveLength(0);
});

test("fake OpenCTI creates an organization once", async () => {
  const fake = await opencti();
  const query = `mutation O($input: OrganizationAddInput!) { organizationAdd(input: $input) { id standard_id name identity_class } }`;

  const first = await graphql(fake, query, {
    input: { name: "Citalid", description: "Cyber risk quantification" },
  });
  const second = await graphql(
    fake,
    `
      mutation I($input: IdentityAddInput!) {
        identityAdd(input: $input) {
          id
          name
          ... on Organization {
            identity_class
          }
        }
      }
    `,
    { input: { type: "Organization", name: "citalid" } },
  );
  const sector = await graphql(
    fake,
    `
      mutation I($input: IdentityAddInput!) {
        identityAdd(input: $input) {
          id
        }
      }
    `,
    {
      input: { type: "Sector", name: "Energy" },
    },
  );

  expect(first.json.data?.organizationAdd.name).toBe("Citalid");
  expect(first.json.data?.organizationAdd.identity_class).toBe("organization");
  expect(first.json.data?.organizationAdd.standard_id).toStartWith(
    "identity--",
  );
  expect(second.json.data?.identityAdd.id).toBe(
    first.json.data?.organizationAdd.id,
  );
  expect(sector.json.errors?.[0]?.name).toBe("UNSUPPORTED_ERROR");
  expect(fake.identities).toHaveLength(1);
  expect(fake.identities[0]?.description).toBe("Cyber risk quantification");
});

test("fake OpenCTI status fault fails a field N times", async () => {
  const fake = await registered();
  const handle = fake.inject("pingConnector", {
    kind: "status",
    status: 502,
    times: 2,
  });

  const statuses: number[] = [];
  for (let i = 0; i < 3; i += 1) {
    const response = await fetch(fake.graphqlUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Authorization: `Bearer ${fake.token}`,
      },
      body: JSON.stringify({
        query: PING,
        variables: { id: CONNECTOR_ID, state: "{}" },
      }),
    });
    statuses.push(response.status);
    if (i === 0) {
      expect(await response.text()).toContain("502 Bad Gateway");
    } else {
      await response.arrayBuffer();
    }
  }
  const other = await graphql(fake, "{ about { version } }");

  expect(statuses).toEqual([502, 502, 200]);
  expect(handle.hits).toBe(2);
  expect(other.status).toBe(200);
  expect(fake.pings).toHaveLength(1);
});

test("fake OpenCTI error fault raises a platform error", async () => {
  const fake = await registered();
  fake.inject("connector", {
    kind: "error",
    code: "FORBIDDEN_ACCESS",
    times: 1,
  });

  const denied = await graphql(fake, 'query { connector(id: "x") { id } }');
  const allowed = await graphql(fake, 'query { connector(id: "x") { id } }');
  const error = denied.json.errors?.[0];

  expect(denied.status).toBe(200);
  expect(error?.name).toBe("FORBIDDEN_ACCESS");
  expect(error?.extensions.code).toBe("FORBIDDEN_ACCESS");
  expect(error?.extensions.data?.http_status).toBe(403);
  expect(error?.message).toBe("You are not allowed to do this.");
  expect(error?.path).toEqual(["connector"]);
  expect(allowed.json.errors).toBeUndefined();
});

test("fake OpenCTI error fault takes any code", async () => {
  const fake = await registered();
  fake.inject("stixBundlePush", {
    kind: "error",
    code: "AUTH_REQUIRED",
    times: 1,
  });
  fake.inject("stixBundlePush", {
    kind: "error",
    code: "LOCK_ERROR",
    message: "Lock timeout",
    httpStatus: 503,
    times: 1,
  });

  const first = await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle: smallBundle(1),
  });
  const second = await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle: smallBundle(1),
  });

  expect(first.json.errors?.[0]?.name).toBe("AUTH_REQUIRED");
  expect(second.json.errors?.[0]?.name).toBe("LOCK_ERROR");
  expect(second.json.errors?.[0]?.message).toBe("Lock timeout");
  expect(second.json.errors?.[0]?.extensions.data?.http_status).toBe(503);
  expect(fake.pushes).toHaveLength(0);
});

test("fake OpenCTI delay fault slows a field", async () => {
  const fake = await registered();
  fake.inject("workAdd", { kind: "delay", delayMs: 300, times: 1 });

  const started = performance.now();
  const result = await graphql(fake, WORK_ADD, { connectorId: CONNECTOR_ID });
  const elapsed = performance.now() - started;

  expect(result.json.errors).toBeUndefined();
  expect(elapsed).toBeGreaterThanOrEqual(290);
});

test("fake OpenCTI html404 fault mimics a wrong URL", async () => {
  const fake = await opencti();
  fake.inject("*", { kind: "html404", times: 1 });

  const response = await fetch(fake.graphqlUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query: "{ about { version } }" }),
  });

  expect(response.status).toBe(404);
  expect(response.headers.get("content-type")).toBe("text/html; charset=utf-8");
  expect(await response.text()).toContain("<pre>Cannot POST /graphql</pre>");
});

test("fake OpenCTI rejects other paths with Cannot POST", async () => {
  const fake = await opencti({ basePath: "/opencti" });

  const wrong = await fetch(`${fake.url}//graphql`, {
    method: "POST",
    body: "{}",
  });
  const root = await fetch(`${fake.url.replace("/opencti", "")}/graphql`, {
    method: "POST",
    body: "{}",
  });
  const right = await graphql(fake, "{ about { version } }");

  expect(fake.graphqlUrl).toBe(`${fake.url}/graphql`);
  expect(wrong.status).toBe(404);
  expect(await wrong.text()).toContain("Cannot POST /opencti//graphql");
  expect(root.status).toBe(404);
  expect(right.status).toBe(200);
});

test("fake OpenCTI rejects GET with 405", async () => {
  const fake = await opencti();

  const response = await fetch(fake.graphqlUrl);
  const json = (await response.json()) as Record<string, unknown>;

  expect(response.status).toBe(405);
  expect(json.name).toBe("MethodNotAllowedError");
});

test("fake OpenCTI reset fault destroys the socket", async () => {
  const fake = await registered();
  fake.inject("stixBundlePush", { kind: "reset", times: 1 });

  // A connection of its own, because Bun's fetch may resend a request
  // whose reused keep-alive socket was reset.
  const error = await fetch(fake.graphqlUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Authorization: `Bearer ${fake.token}`,
    },
    body: JSON.stringify({
      query: PUSH,
      variables: { connectorId: CONNECTOR_ID, bundle: smallBundle(1) },
    }),
    keepalive: false,
  }).catch((caught: Error) => caught);

  expect(error).toBeInstanceOf(Error);
  expect((error as Error & { code?: string }).code).toBe("ECONNRESET");
  expect(fake.requests.at(-1)?.status).toBeNull();
  expect(fake.pushes).toHaveLength(0);
});

test("fake OpenCTI hang fault never answers", async () => {
  const fake = await opencti();
  fake.inject("about", { kind: "hang" });

  const error = await fetch(fake.graphqlUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query: "{ about { version } }" }),
    signal: AbortSignal.timeout(300),
  }).catch((caught: Error) => caught);

  expect((error as Error).name).toBe("TimeoutError");
});

test("fake OpenCTI rejects a body over maxBodyBytes", async () => {
  const fake = await registered({ maxBodyBytes: 1024 * 1024 });
  const bundle = smallBundle(20_000);

  const response = await fetch(fake.graphqlUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Authorization: `Bearer ${fake.token}`,
    },
    body: JSON.stringify({
      query: PUSH,
      variables: { connectorId: CONNECTOR_ID, bundle },
    }),
  });
  const text = await response.text();
  fake.maxBodyBytes = DEFAULT_MAX_BODY_BYTES;
  const accepted = await graphql(fake, PUSH, {
    connectorId: CONNECTOR_ID,
    bundle,
  });

  expect(bundle.length).toBeGreaterThan(1024 * 1024);
  expect(response.status).toBe(413);
  expect(text).toContain("<pre>Payload Too Large</pre>");
  expect(text).not.toContain("errors");
  expect(fake.requests.at(-2)?.bodyBytes).toBeGreaterThan(1024 * 1024);
  expect(accepted.json.data?.stixBundlePush).toBe(true);
  expect(fake.pushes).toHaveLength(1);
});

test("fake OpenCTI goes down and up on the same port", async () => {
  const fake = await registered();
  const port = fake.port;

  await fake.goDown();
  const refused = await graphql(fake, "{ about { version } }").catch(
    (caught: Error) => caught,
  );
  expect(fake.isUp).toBe(false);
  expect((refused as Error & { code?: string }).code).toBe("ECONNREFUSED");

  await fake.comeUp();
  const back = await graphql(fake, PING, { id: CONNECTOR_ID, state: "{}" });

  expect(fake.isUp).toBe(true);
  expect(fake.port).toBe(port);
  expect(back.json.data?.pingConnector.id).toBe(CONNECTOR_ID);
});

test("fake OpenCTI comes back after goDown forMs", async () => {
  const fake = await opencti();
  const port = fake.port;

  await fake.goDown(300);
  const refused = await graphql(fake, "{ about { version } }").catch(
    (caught: Error) => caught,
  );
  await Bun.sleep(500);
  const back = await graphql(fake, "{ about { version } }");

  expect(refused).toBeInstanceOf(Error);
  expect(back.status).toBe(200);
  expect(fake.port).toBe(port);
});

test("fake OpenCTI goDown closes kept-alive connections", async () => {
  const fake = await opencti();
  fake.inject("about", { kind: "hang" });

  const pending = graphql(fake, "{ about { version } }").catch(
    (caught: Error) => caught,
  );
  while (fake.requests.length < 1) {
    await Bun.sleep(10);
  }
  await fake.goDown();

  expect(await pending).toBeInstanceOf(Error);
});

test("fake OpenCTI hides fields of newer platforms", async () => {
  const fake = await opencti({ hiddenFields: SCHEMA_FIELDS_SINCE_7 });

  const jwks = await graphql(fake, 'query { connector(id: "x") { id jwks } }');
  const input = await graphql(fake, REGISTER, {
    input: registerInput({ version: "1.0.0" }),
  });
  const plain = await graphql(fake, REGISTER, { input: registerInput() });

  expect(jwks.json.errors?.[0]?.extensions.code).toBe(
    "GRAPHQL_VALIDATION_FAILED",
  );
  expect(jwks.json.errors?.[0]?.message).toContain("jwks");
  expect(input.json.errors?.[0]?.extensions.code).toBe("BAD_USER_INPUT");
  expect(plain.json.errors).toBeUndefined();
});

test("fake OpenCTI rejects an unknown hidden field", async () => {
  await expect(
    startFakeOpenCTI({ hiddenFields: ["Connector.nothing"] }),
  ).rejects.toThrow("Connector.nothing");
});

test("fake OpenCTI serves HTTPS with a given certificate", async () => {
  const fake = await opencti({ tls: TEST_TLS });

  const response = await fetch(fake.graphqlUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Authorization: `Bearer ${fake.token}`,
    },
    body: JSON.stringify({ query: "{ about { version } }" }),
    tls: { ca: TEST_TLS.cert },
  });
  const json = (await response.json()) as GraphQLResponse["json"];

  expect(fake.url.startsWith("https://127.0.0.1:")).toBe(true);
  expect(json.data?.about.version).toBe("6.9.22");
});

test("fake OpenCTI clearRecords keeps connectors", async () => {
  const fake = await registered();
  await graphql(fake, PING, { id: CONNECTOR_ID, state: "{}" });

  fake.clearRecords();

  expect(fake.requests).toHaveLength(0);
  expect(fake.pings).toHaveLength(0);
  expect(fake.operations).toHaveLength(0);
  expect(fake.connectors.get(CONNECTOR_ID)?.state).toBe("{}");
});

test("fake Citalid serves a body file", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "fake-citalid-")), "version.json");
  writeFileSync(path, '{"type":"bundle","objects":[]}');
  const fake = await citalid({ versions: [{ id: "20250105", bodyFile: path }] });

  const response = await download(fake, "20250105", await login(fake));

  expect(response.headers.get("content-length")).toBe("30");
  expect(await response.text()).toBe('{"type":"bundle","objects":[]}');
});

test("fake Citalid truncates a body file", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "fake-citalid-")), "version.json");
  writeFileSync(path, "0123456789");
  const fake = await citalid({ versions: [{ id: "20250105", bodyFile: path }] });
  const token = await login(fake);
  fake.inject("download", { kind: "truncate", times: 1 });

  // fetch drops what arrived before the reset, so the raw bytes are read from a socket.
  const raw = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(fake.port, "127.0.0.1", () => {
      socket.write(`GET ${CITALID_VERSIONS_PATH}20250105/download/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n\r\n`);
    });
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("utf8")));
    socket.on("error", reject);
  });
  const [head, body] = raw.split("\r\n\r\n");

  expect(head).toContain("Content-Length: 10");
  expect(body).toBe("01234");
});

test("fake Citalid trickles a body file", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "fake-citalid-")), "version.json");
  writeFileSync(path, "0123456789");
  const fake = await citalid({ versions: [{ id: "20250105", bodyFile: path }] });
  const token = await login(fake);
  fake.inject("download", { kind: "trickle", chunkBytes: 4, intervalMs: 100, times: 1 });

  const started = performance.now();
  const response = await download(fake, "20250105", token);
  const body = await response.text();
  const elapsed = performance.now() - started;

  expect(body).toBe("0123456789");
  expect(elapsed).toBeGreaterThanOrEqual(190);
});

test("fake OpenCTI counts pushes it does not keep", async () => {
  const fake = await registered({ keepPushes: false });
  const bundle = JSON.stringify({ type: "bundle", id: "bundle--1", objects: [{ type: "note", id: "note--1" }] });

  const result = await graphql(fake, PUSH, { connectorId: CONNECTOR_ID, bundle, workId: null });

  expect(result.json.errors).toBeUndefined();
  expect(fake.pushes).toHaveLength(0);
  expect(fake.pushTotals).toEqual({ bundles: 1, objects: 1, bytes: Buffer.byteLength(bundle) });
});
