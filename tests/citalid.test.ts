import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { CitalidClient, type DownloadSink } from "../lib/citalid.ts";
import { CitalidAuthError, CitalidError, DownloadAbortedError } from "../lib/errors.ts";
import { type Logger, createLogger } from "../lib/log.ts";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";

const PASSWORD = "p&ss=w%rd +é";

let citalid: FakeCitalid;
let lines: string[];
let logger: Logger;

beforeEach(async () => {
  citalid = await startFakeCitalid({
    password: PASSWORD,
    versions: [
      { id: "20250105-1", body: { type: "bundle", id: "bundle--1", objects: [] } },
      { id: "2025 01/06?x", body: { type: "bundle", id: "bundle--2", objects: [] } },
    ],
  });
  lines = [];
  logger = createLogger({ level: "debug", write: (line) => lines.push(line) });
});

afterEach(async () => {
  await citalid.stop();
});

function client(overrides: Partial<ConstructorParameters<typeof CitalidClient>[0]> = {}): CitalidClient {
  return new CitalidClient({
    url: citalid.url,
    user: citalid.user,
    password: PASSWORD,
    logger,
    userAgent: "citalid-connector/test",
    retryDelayMs: 5,
    ...overrides,
  });
}

describe("CitalidClient.login", () => {
  test("sends the password grant", async () => {
    await client().login();

    const request = citalid.requests.find((entry) => entry.route === "token")!;
    expect(request.method).toBe("POST");
    expect(request.headers["content-type"]).toBe("application/x-www-form-urlencoded");
    expect(request.headers.authorization).toBe("Basic MFJjUTJCbXVKUlJzWkt2WTFYZjFnZGppd1lSWmhRS0JOT3hZOUtPSTo=");
    expect(citalid.counts.logins).toBe(1);
  });

  test("wrong password raises CitalidAuthError", async () => {
    const error = await client({ password: "wrong" }).login().catch((caught) => caught);

    expect(error).toBeInstanceOf(CitalidAuthError);
    expect(error.message).toContain("Citalid rejected the credentials");
    expect(error.message).toContain("CITALID_PASSWORD");
    expect(error.message.includes("wrong")).toBe(false);
  });

  test("retries a reply cut short", async () => {
    citalid.inject("token", { kind: "truncate", times: 2 });

    await client().login();

    expect(citalid.counts.tokenRequests).toBe(3);
    const retried = lines.map((line) => JSON.parse(line)).filter((line) => line.message === "Citalid request failed, retrying");
    expect(retried.map((line) => line.attributes.attempt)).toEqual([2, 3]);
    expect(retried[0].attributes.reason).toContain("body cut off");
  });

  test("gives up on a reply always cut short", async () => {
    citalid.inject("token", { kind: "truncate" });

    const error = await client({ retryLimit: 2 }).login().catch((caught) => caught);

    expect(error).toBeInstanceOf(CitalidError);
    expect(error.message).toContain("Failed to log in to Citalid: body cut off");
    expect(error.message).toContain("after 3 attempts");
    expect(citalid.counts.tokenRequests).toBe(3);
  });

  test("HTML reply names the content type", async () => {
    citalid.inject("token", { kind: "body", body: "<html><body>Proxy login</body></html>", headers: { "Content-Type": "text/html" } });

    const error = await client().login().catch((caught) => caught);

    expect(error).toBeInstanceOf(CitalidError);
    expect(error.message).toContain("Citalid login reply on /auth/o/token/ is not JSON (HTTP 200, text/html)");
    expect(error.message).toContain("Proxy login");
    expect(error.message).toContain("check that CITALID_CUSTOMER_SUB_DOMAIN_URL is the address of the Citalid API");
  });

  test("reply cut inside the token hides it", async () => {
    const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjb25uZWN0b3IifQ.c2lnbmF0dXJl";
    citalid.inject("token", { kind: "body", body: `{"access_token": "${token.slice(0, 40)}`, headers: { "Content-Type": "application/json" } });

    const error = await client().login().catch((caught) => caught);

    expect(error.message).toContain("is not JSON");
    expect(error.message.includes(token.slice(0, 20))).toBe(false);
  });

  test("masks the token in later logs", async () => {
    const api = client();
    await api.login();
    const token = citalid.tokens.at(-1)!.accessToken;

    logger.info(`token is ${token}`);

    expect(lines.at(-1)!.includes(token)).toBe(false);
  });
});

describe("CitalidClient.listVersions", () => {
  test("returns the ids in server order", async () => {
    citalid.shuffle = false;

    const ids = await client().listVersions();

    expect(ids).toEqual(["20250105-1", "2025 01/06?x"]);
  });

  test("sends the language and the token", async () => {
    await client({ language: "fr" }).listVersions();

    const request = citalid.requests.find((entry) => entry.route === "list")!;
    expect(request.acceptLanguage).toBe("fr");
    expect(request.headers.authorization).toStartWith("Bearer ");
  });

  test("logs in again once after a 401", async () => {
    const api = client();
    await api.login();
    citalid.rejectAllTokens();

    const ids = await api.listVersions();

    expect(ids.length).toBe(2);
    expect(citalid.counts.logins).toBe(2);
  });

  test("second 401 raises CitalidAuthError", async () => {
    citalid.inject("list", { kind: "status", status: 401 });

    const error = await client().listVersions().catch((caught) => caught);

    expect(error).toBeInstanceOf(CitalidAuthError);
    expect(error.message).toContain("Citalid rejected the credentials");
  });

  test("rejects records without an id", async () => {
    citalid.inject("list", { kind: "body", body: [{ name: "no id" }] });

    const error = await client().listVersions().catch((caught) => caught);

    expect(error).toBeInstanceOf(CitalidError);
    expect(error.message).toContain("without a string id");
    expect(error.message).toContain("/stix-bundles/versions/");
  });

  test("retries a 503 then succeeds", async () => {
    citalid.inject("list", { kind: "status", status: 503, times: 2 });

    const ids = await client().listVersions();

    expect(ids.length).toBe(2);
    expect(lines.filter((line) => line.includes("retrying")).length).toBe(2);
  });
});

describe("CitalidClient.downloadVersion", () => {
  test("percent-encodes the version id", async () => {
    const download = await client().downloadVersion("2025 01/06?x");

    expect((download.json as { id: string }).id).toBe("bundle--2");
    expect(citalid.counts.downloads["2025 01/06?x"]).toBe(1);
  });

  test.each([
    ["a trailing slash", "/"],
    ["no trailing slash", ""],
  ])("joins the URL with %s", async (_name, suffix) => {
    await client({ url: citalid.url + suffix.replace(/\/$/, "") }).downloadVersion("20250105-1");

    expect(citalid.requests.every((request) => !request.path.includes("//"))).toBe(true);
  });

  test("error names the path, status and version", async () => {
    citalid.inject("20250105-1", { kind: "status", status: 404, body: "<html>Not Found</html>" });

    const error = await client({ retryLimit: 0 }).downloadVersion("20250105-1").catch((caught) => caught);

    expect(error).toBeInstanceOf(CitalidError);
    expect(error.message).toContain("HTTP 404");
    expect(error.message).toContain("/stix-bundles/versions/20250105-1/download/");
    expect(error.message).toContain("20250105-1");
  });
});

describe("CitalidClient download idle timeout", () => {
  const BODY = { type: "bundle", id: "bundle--1", objects: [] };
  const HALF = Math.floor(JSON.stringify(BODY).length / 2);

  function retryAttributes(): { attempt: number; reason: string }[] {
    return lines
      .map((line) => JSON.parse(line))
      .filter((line) => line.message === "Citalid download failed, retrying")
      .map((line) => line.attributes);
  }

  test("stalled body is retried", async () => {
    citalid.inject("20250105-1", { kind: "stall", times: 1 });

    const download = await client({ timeoutMs: 200, downloadTimeoutMs: 60_000 }).downloadVersion("20250105-1");

    expect(download.json).toEqual(BODY);
    expect(citalid.counts.downloads["20250105-1"]).toBe(2);
    expect(retryAttributes().map((attributes) => attributes.reason)).toEqual([`no data for 200 ms after byte ${HALF}`]);
  });

  test("gives up on a body always stalled", async () => {
    citalid.inject("20250105-1", { kind: "stall" });

    const error = await client({ timeoutMs: 5000, downloadIdleTimeoutMs: 200, downloadTimeoutMs: 60_000, retryLimit: 1 })
      .downloadVersion("20250105-1")
      .catch((caught) => caught);

    expect(error).toBeInstanceOf(CitalidError);
    expect(error.message).toContain(`no data for 200 ms after byte ${HALF}`);
    expect(error.message).toContain("after 2 attempts");
    expect(citalid.counts.downloads["20250105-1"]).toBe(2);
  });
});

describe("CitalidClient.downloadVersionTo", () => {
  // A sink that discards the body, because these cases check only how the download ends.
  const sink: DownloadSink<void> = { begin() {}, write() {}, end() {}, head: () => "" };

  test("abort during the retry wait raises DownloadAbortedError", async () => {
    citalid.inject("20250105-1", { kind: "truncate" });
    const stop = new AbortController();
    const watched = createLogger({
      level: "debug",
      write: (line) => {
        if (line.includes("Citalid download failed, retrying")) {
          stop.abort();
        }
      },
    });

    // A retry wait of 60 s that the abort did not cut short would time the test out.
    const error = await client({ logger: watched, retryDelayMs: 60_000 })
      .downloadVersionTo("20250105-1", sink, { signal: stop.signal })
      .catch((caught) => caught);

    expect(error).toBeInstanceOf(DownloadAbortedError);
    expect(error.versionId).toBe("20250105-1");
    expect(citalid.counts.downloads["20250105-1"]).toBe(1);
  });

  test("signal aborted before the call sends nothing", async () => {
    const error = await client()
      .downloadVersionTo("20250105-1", sink, { signal: AbortSignal.abort() })
      .catch((caught) => caught);

    expect(error).toBeInstanceOf(DownloadAbortedError);
    expect(citalid.counts.downloads["20250105-1"]).toBeUndefined();
  });
});
