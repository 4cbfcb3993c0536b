/**
 * Security of the real connector (`main.ts` as a subprocess) against the
 * fakes: TLS verification and CA files, proxy variables, file modes, and
 * secrets in everything the process prints or writes.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, closeSync, openSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { join } from "node:path";
import { getCACertificates } from "node:tls";
import { type TlsProblem, describeTlsError, maskUrlCredentials, readProxyEnvironment, tlsProblem, withDefaultCertificates } from "../lib/http.ts";
import { silentLogger } from "../lib/log.ts";
import { StateFile } from "../lib/state.ts";
import { type FakeCitalid, startFakeCitalid } from "./fakes/citalid.ts";
import { type FakeOpenCTI, startFakeOpenCTI } from "./fakes/opencti.ts";
import { TEST_TLS } from "./fixtures/tls.ts";
import { fixtureCitalidVersions } from "./fixtures/versions.ts";
import { type LogLine, TEST_SECRETS, connectorEnv, runConnectorOnce, startConnector, tempDir } from "./helpers/connector.ts";
import { SECURITY_TEST_SECRETS, findSecrets } from "./helpers/secrets.ts";

const REPO = join(import.meta.dir, "..");
const MAIN = join(REPO, "main.ts");
const TEST_CA_FILE = join(import.meta.dir, "fixtures", "tls", "localhost.crt");
const OTHER_CA_FILE = join(import.meta.dir, "fixtures", "tls", "other-ca.crt");
const CONNECTOR_ID = "0b4f5a2c-7d1e-4c3b-9a8f-1e2d3c4b5a69";
const ONE_VERSION = fixtureCitalidVersions().slice(0, 1);
const LAST_ID = ONE_VERSION[0]!.id;
// Each test starts at least one connector process; the default 5 s is too short under load.
const TIMEOUT_MS = 60_000;

let citalid: FakeCitalid;
let opencti: FakeOpenCTI;
let stateDir: string;

async function startFakes(options: { citalidTls?: boolean; openctiTls?: boolean } = {}): Promise<void> {
  citalid = await startFakeCitalid({
    versions: ONE_VERSION,
    password: TEST_SECRETS.citalidPassword,
    tls: options.citalidTls ? TEST_TLS : undefined,
  });
  opencti = await startFakeOpenCTI({
    token: TEST_SECRETS.openctiToken,
    tls: options.openctiTls ? TEST_TLS : undefined,
  });
}

beforeEach(() => {
  stateDir = tempDir("citalid-security-");
});

afterEach(async () => {
  await citalid?.stop();
  await opencti?.stop();
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return connectorEnv(citalid, opencti, stateDir, extra);
}

function platformLastVersion(): unknown {
  const stored = opencti.connectors.get(CONNECTOR_ID)?.state ?? null;
  return stored === null ? null : JSON.parse(stored).last_loaded_bundle_id;
}

function findLog(logs: LogLine[], message: string): LogLine | undefined {
  return logs.find((line) => line.message.includes(message));
}

function runFailureReason(logs: LogLine[]): string {
  return String(findLog(logs, "Run failed")?.attributes?.reason ?? "");
}

describe("TLS verification", () => {
  test(
    "untrusted platform certificate exits 2",
    async () => {
      await startFakes({ openctiTls: true });

      const run = await runConnectorOnce(env());

      expect(run.code).toBe(2);
      const error = run.logs().find((line) => line.level === "ERROR")?.message ?? "";
      expect(error).toContain("OpenCTI TLS certificate");
      expect(error).toContain(opencti.graphqlUrl);
      expect(error).toContain("is not trusted");
      expect(error).toContain("CONNECTOR_CA_FILE");
      expect(error).toContain("NODE_EXTRA_CA_CERTS");
      expect(error).toContain("OPENCTI_SSL_VERIFY=false");
      expect(opencti.requests).toHaveLength(0);
      expect(citalid.requests).toHaveLength(0);
      expect(findLog(run.logs(), "retrying")).toBeUndefined();
    },
    TIMEOUT_MS,
  );

  test(
    "untrusted Citalid certificate fails the run",
    async () => {
      await startFakes({ citalidTls: true });

      const run = await runConnectorOnce(env());

      expect(run.code).toBe(1);
      const reason = runFailureReason(run.logs());
      expect(reason).toContain("Citalid TLS certificate");
      expect(reason).toContain(`${citalid.url}/auth/o/token/`);
      expect(reason).toContain("is not trusted");
      expect(reason).toContain("CONNECTOR_CA_FILE");
      expect(reason).toContain("NODE_EXTRA_CA_CERTS");
      expect(reason).not.toContain("OPENCTI_SSL_VERIFY");
      expect(citalid.requests).toHaveLength(0);
      expect(findLog(run.logs(), "Citalid request failed, retrying")).toBeUndefined();
    },
    TIMEOUT_MS,
  );

  test(
    "OPENCTI_SSL_VERIFY=false skips only the platform",
    async () => {
      await startFakes({ citalidTls: true, openctiTls: true });

      const run = await runConnectorOnce(env({ OPENCTI_SSL_VERIFY: "false" }));

      const warning = findLog(run.logs(), "OPENCTI_SSL_VERIFY is false");
      expect(warning?.level).toBe("WARNING");
      expect(opencti.registrations).toHaveLength(1);
      expect(run.code).toBe(1);
      expect(runFailureReason(run.logs())).toContain("Citalid TLS certificate");
      expect(citalid.requests).toHaveLength(0);
    },
    TIMEOUT_MS,
  );

  const trustSources: [string, (configDir: string) => Record<string, string>][] = [
    ["CONNECTOR_CA_FILE", () => ({ CONNECTOR_CA_FILE: TEST_CA_FILE })],
    ["NODE_EXTRA_CA_CERTS", () => ({ NODE_EXTRA_CA_CERTS: TEST_CA_FILE })],
    [
      "config.yml ca_file",
      (configDir) => {
        writeFileSync(join(configDir, "config.yml"), `connector:\n  ca_file: ${TEST_CA_FILE}\n`);
        return {};
      },
    ],
  ];
  for (const [name, settings] of trustSources) {
    test(
      `${name} trusts both services`,
      async () => {
        await startFakes({ citalidTls: true, openctiTls: true });
        const configDir = tempDir("citalid-security-config-");

        const run = await runConnectorOnce(env(settings(configDir)), ["--once"], { cwd: configDir });

        expect(run.code).toBe(0);
        expect(platformLastVersion()).toBe(LAST_ID);
        expect(citalid.counts.logins).toBe(1);
      },
      TIMEOUT_MS,
    );
  }

  test(
    "CA file of another CA is rejected",
    async () => {
      await startFakes({ citalidTls: true, openctiTls: true });

      const run = await runConnectorOnce(env({ CONNECTOR_CA_FILE: OTHER_CA_FILE }));

      expect(run.code).toBe(2);
      const error = run.logs().find((line) => line.level === "ERROR")?.message ?? "";
      expect(error).toContain("is not trusted");
      expect(opencti.requests).toHaveLength(0);
    },
    TIMEOUT_MS,
  );
});

describe("TLS error messages", () => {
  function fetchError(code: string): Error {
    return Object.assign(new TypeError(`${code} fetching "https://127.0.0.1:8443/graphql"`), { code });
  }

  const problems: [string, TlsProblem | undefined][] = [
    ["DEPTH_ZERO_SELF_SIGNED_CERT", "untrusted"],
    ["SELF_SIGNED_CERT_IN_CHAIN", "untrusted"],
    ["UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "untrusted"],
    ["CERT_HAS_EXPIRED", "expired"],
    ["ERR_TLS_CERT_ALTNAME_INVALID", "host-mismatch"],
    ["EPROTO", "handshake"],
    ["ECONNREFUSED", undefined],
  ];
  for (const [code, expected] of problems) {
    test(`code ${code} is ${expected ?? "not TLS"}`, () => {
      expect(tlsProblem(fetchError(code))).toBe(expected);
    });
  }

  test("code in the cause is found", () => {
    const error = new Error("request failed", { cause: fetchError("DEPTH_ZERO_SELF_SIGNED_CERT") });

    expect(tlsProblem(error)).toBe("untrusted");
  });

  const messages: [string, string[]][] = [
    ["ERR_TLS_CERT_ALTNAME_INVALID", ["does not name the host 127.0.0.1", "OPENCTI_SSL_VERIFY=false"]],
    ["CERT_HAS_EXPIRED", ["is expired or not yet valid", "renew the server's certificate"]],
    ["EPROTO", ["TLS handshake", "set OPENCTI_URL to an http:// URL"]],
  ];
  for (const [code, parts] of messages) {
    test(`message for ${code} names the fix`, () => {
      const message = describeTlsError("OpenCTI", "https://127.0.0.1:8443/graphql", fetchError(code), {
        urlVariable: "OPENCTI_URL",
        sslVerifyVariable: "OPENCTI_SSL_VERIFY",
      });

      expect(message).toStartWith("OpenCTI TLS ");
      expect(message).toContain("https://127.0.0.1:8443/graphql");
      for (const part of parts) {
        expect(message).toContain(part);
      }
    });
  }
});

describe("CA file and the default store", () => {
  let server: ReturnType<typeof Bun.serve>;

  beforeEach(() => {
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { key: TEST_TLS.key, cert: TEST_TLS.cert },
      fetch: () => new Response("ok"),
    });
  });

  afterEach(() => {
    server.stop(true);
  });

  /**
   * Fetches the TLS server from a child process whose default store trusts
   * the test certificate through SSL_CERT_FILE, and returns what it printed.
   */
  async function fetchFromChild(script: string): Promise<string> {
    const proc = Bun.spawn([process.execPath, "-e", script], {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", SSL_CERT_FILE: TEST_CA_FILE, URL: server.url.href, OTHER_CA_FILE },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [output] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
    return output.trim();
  }

  test(
    "default store trusts SSL_CERT_FILE",
    async () => {
      const output = await fetchFromChild(
        `fetch(process.env.URL).then(() => console.log("ok"), (error) => console.log(error.code));`,
      );

      expect(output).toBe("ok");
    },
    TIMEOUT_MS,
  );

  // Pins the Bun behaviour that withDefaultCertificates works around: when
  // this fails, Bun adds tls.ca to the default store and the workaround can go.
  test(
    "Bun tls.ca replaces the default store",
    async () => {
      const output = await fetchFromChild(
        `const ca = require("node:fs").readFileSync(process.env.OTHER_CA_FILE, "utf8");
         fetch(process.env.URL, { tls: { ca } }).then(() => console.log("ok"), (error) => console.log(error.code));`,
      );

      expect(output).toBe("DEPTH_ZERO_SELF_SIGNED_CERT");
    },
    TIMEOUT_MS,
  );

  test(
    "createHttp CA adds to the default store",
    async () => {
      const output = await fetchFromChild(
        `const { createHttp } = require("./lib/http.ts");
         const { silentLogger } = require("./lib/log.ts");
         const ca = require("node:fs").readFileSync(process.env.OTHER_CA_FILE, "utf8");
         const http = createHttp({ service: "Test", logger: silentLogger, userAgent: "test", ca, retryLimit: 0 });
         http.get(process.env.URL).text().then((text) => console.log(text), (error) => console.log(error.code));`,
      );

      expect(output).toBe("ok");
    },
    TIMEOUT_MS,
  );

  test("default certificates keep bundled roots", () => {
    const extra = readFileSync(OTHER_CA_FILE, "utf8");

    const certificates = withDefaultCertificates(extra);

    const bundled = getCACertificates("bundled");
    expect(bundled.length).toBeGreaterThan(0);
    expect(bundled.filter((certificate) => !certificates.includes(certificate))).toEqual([]);
    expect(certificates).toContain(extra.trim());
  });

  test("default certificates split a PEM bundle", () => {
    const first = readFileSync(OTHER_CA_FILE, "utf8").trim();
    const second = readFileSync(TEST_CA_FILE, "utf8").trim();

    const certificates = withDefaultCertificates(`${first}\n${second}\n`);

    expect(certificates).toContain(first);
    expect(certificates).toContain(second);
  });
});

/** A request that the test proxy received. */
interface ProxiedRequest {
  method: string;
  /** `host:port` of a CONNECT, or the absolute URL of a plain request. */
  target: string;
  proxyAuthorization: string | null;
}

interface TestProxy {
  url: string;
  port: number;
  requests: ProxiedRequest[];
  stop(): Promise<void>;
}

/**
 * Starts a forwarding proxy on 127.0.0.1: plain HTTP requests with an
 * absolute URL, and CONNECT tunnels. It forwards to 127.0.0.1 only and
 * replies 403 for any other host. With `credentials`, a request without
 * the matching `Proxy-Authorization` gets 407.
 */
async function startProxy(options: { credentials?: string } = {}): Promise<TestProxy> {
  const requests: ProxiedRequest[] = [];
  const expected = options.credentials ? `Basic ${btoa(options.credentials)}` : undefined;
  const sockets = new Set<net.Socket>();

  const allowed = (request: http.IncomingMessage): boolean => {
    return expected === undefined || request.headers["proxy-authorization"] === expected;
  };
  const record = (request: http.IncomingMessage) => {
    requests.push({
      method: request.method ?? "",
      target: request.url ?? "",
      proxyAuthorization: request.headers["proxy-authorization"] ?? null,
    });
  };

  const server = http.createServer((request, response) => {
    record(request);
    if (!allowed(request)) {
      response.writeHead(407, { "proxy-authenticate": 'Basic realm="test"' }).end();
      return;
    }
    const target = new URL(request.url ?? "");
    if (target.hostname !== "127.0.0.1") {
      response.writeHead(403).end("the test proxy forwards to 127.0.0.1 only");
      return;
    }

    const headers = { ...request.headers };
    delete headers["proxy-authorization"];
    const upstream = http.request(
      { host: "127.0.0.1", port: target.port, path: target.pathname + target.search, method: request.method, headers },
      (reply) => {
        response.writeHead(reply.statusCode ?? 502, reply.headers);
        reply.pipe(response);
      },
    );
    upstream.on("error", () => response.destroy());
    request.pipe(upstream);
  });

  server.on("connect", (request: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    record(request);
    sockets.add(client);
    client.on("error", () => client.destroy());
    if (!allowed(request)) {
      client.end("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    const [host, port] = (request.url ?? "").split(":");
    if (host !== "127.0.0.1") {
      client.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
      return;
    }

    const upstream = net.connect(Number(port), "127.0.0.1", () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on("error", () => client.destroy());
  });

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    async stop() {
      for (const socket of sockets) {
        socket.destroy();
      }
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("proxy variables", () => {
  let proxy: TestProxy;

  afterEach(async () => {
    await proxy?.stop();
  });

  function proxiedTo(origin: string): ProxiedRequest[] {
    const hostPort = new URL(origin).host;
    return proxy.requests.filter((request) => request.target.startsWith(origin) || request.target === hostPort);
  }

  for (const variable of ["HTTP_PROXY", "http_proxy", "ALL_PROXY"]) {
    test(
      `${variable} carries both services`,
      async () => {
        await startFakes();
        proxy = await startProxy();

        const run = await runConnectorOnce(env({ [variable]: proxy.url }));

        expect(run.code).toBe(0);
        expect(proxiedTo(citalid.origin)).toHaveLength(citalid.requests.length);
        expect(citalid.requests.length).toBeGreaterThan(0);
        expect(proxiedTo(new URL(opencti.url).origin)).toHaveLength(opencti.requests.length);
        expect(opencti.requests.length).toBeGreaterThan(0);
      },
      TIMEOUT_MS,
    );
  }

  test(
    "HTTPS_PROXY tunnels both HTTPS services",
    async () => {
      await startFakes({ citalidTls: true, openctiTls: true });
      proxy = await startProxy();

      const run = await runConnectorOnce(env({ HTTPS_PROXY: proxy.url, CONNECTOR_CA_FILE: TEST_CA_FILE }));

      expect(run.code).toBe(0);
      const tunnels = new Set(proxy.requests.filter((request) => request.method === "CONNECT").map((request) => request.target));
      expect(tunnels.has(`127.0.0.1:${citalid.port}`)).toBe(true);
      expect(tunnels.has(`127.0.0.1:${opencti.port}`)).toBe(true);
    },
    TIMEOUT_MS,
  );

  const bypasses: [string, (ports: { citalid: number; opencti: number }) => Record<string, string>][] = [
    ["NO_PROXY host", () => ({ NO_PROXY: "127.0.0.1" })],
    ["no_proxy host", () => ({ no_proxy: "127.0.0.1" })],
    ["NO_PROXY star", () => ({ NO_PROXY: "*" })],
    ["NO_PROXY list with spaces", () => ({ NO_PROXY: "example.org, 127.0.0.1" })],
    ["NO_PROXY host and ports", (ports) => ({ NO_PROXY: `127.0.0.1:${ports.citalid},127.0.0.1:${ports.opencti}` })],
  ];
  for (const [name, settings] of bypasses) {
    test(
      `${name} bypasses the proxy`,
      async () => {
        await startFakes();
        proxy = await startProxy();

        const run = await runConnectorOnce(env({ HTTP_PROXY: proxy.url, ...settings({ citalid: citalid.port, opencti: opencti.port }) }));

        expect(run.code).toBe(0);
        expect(proxy.requests).toEqual([]);
        expect(citalid.requests.length).toBeGreaterThan(0);
      },
      TIMEOUT_MS,
    );
  }

  test(
    "NO_PROXY port matches one service",
    async () => {
      await startFakes();
      proxy = await startProxy();

      const run = await runConnectorOnce(env({ HTTP_PROXY: proxy.url, NO_PROXY: `127.0.0.1:${citalid.port}` }));

      expect(run.code).toBe(0);
      expect(proxiedTo(citalid.origin)).toEqual([]);
      expect(proxiedTo(new URL(opencti.url).origin).length).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );

  test(
    "proxy password is sent, never printed",
    async () => {
      await startFakes();
      const credentials = `proxyuser:${SECURITY_TEST_SECRETS.proxyPassword}`;
      proxy = await startProxy({ credentials });
      const proxyUrl = `http://${credentials}@127.0.0.1:${proxy.port}`;

      const run = await runConnectorOnce(env({ HTTP_PROXY: proxyUrl }));

      expect(run.code).toBe(0);
      expect(proxy.requests.length).toBeGreaterThan(0);
      expect(proxy.requests.every((request) => request.proxyAuthorization === `Basic ${btoa(credentials)}`)).toBe(true);
      const announced = findLog(run.logs(), "Proxy variables are set");
      expect(announced?.attributes?.HTTP_PROXY).toBe(`http://***@127.0.0.1:${proxy.port}`);
      expect(findSecrets(run.lines.join("\n") + run.stdout())).toEqual([]);
    },
    TIMEOUT_MS,
  );

  test(
    "unreachable proxy keeps its password hidden",
    async () => {
      await startFakes();
      proxy = await startProxy();
      const closedPort = proxy.port;
      await proxy.stop();
      const proxyUrl = `http://proxyuser:${SECURITY_TEST_SECRETS.proxyPassword}@127.0.0.1:${closedPort}`;

      const connector = startConnector(env({ HTTP_PROXY: proxyUrl }));
      await connector.waitForLog("OpenCTI is not reachable yet");
      connector.proc.kill("SIGTERM");
      await connector.exited;

      expect(findSecrets(connector.lines.join("\n") + connector.stdout())).toEqual([]);
      expect(opencti.requests).toHaveLength(0);
    },
    TIMEOUT_MS,
  );
});

describe("proxy environment reader", () => {
  const masks: [string, string][] = [
    ["http://127.0.0.1:3128", "http://127.0.0.1:3128"],
    ["http://user:secret@127.0.0.1:3128", "http://***@127.0.0.1:3128"],
    ["http://user:p@ss@127.0.0.1:3128/", "http://***@127.0.0.1:3128/"],
    ["user:secret@127.0.0.1:3128", "***@127.0.0.1:3128"],
    ["http://127.0.0.1:3128/path@x", "http://127.0.0.1:3128/path@x"],
  ];
  for (const [url, expected] of masks) {
    test(`mask ${url}`, () => {
      expect(maskUrlCredentials(url)).toBe(expected);
    });
  }

  test("reads set variables only", () => {
    const proxy = readProxyEnvironment({ HTTPS_PROXY: "http://127.0.0.1:3128", http_proxy: "", NO_PROXY: "localhost" });

    expect(proxy.variables).toEqual({ HTTPS_PROXY: "http://127.0.0.1:3128", NO_PROXY: "localhost" });
  });

  test("returns the password as a secret", () => {
    const proxy = readProxyEnvironment({ HTTP_PROXY: "http://user:p%40ss%20word@127.0.0.1:3128" });

    expect(proxy.secrets).toEqual(["p%40ss%20word", "p@ss word"]);
  });

  test("keeps the user name out of secrets", () => {
    const proxy = readProxyEnvironment({ HTTP_PROXY: "http://proxyuser@127.0.0.1:3128" });

    expect(proxy.secrets).toEqual([]);
  });
});

describe("file modes", () => {
  test(
    "state file is 0600 under umask 000",
    async () => {
      await startFakes();
      const marker = join(stateDir, "umask-marker");
      const command = ["sh", "-c", `umask 000; : > "${marker}"; exec "$0" "$@"`, process.execPath, MAIN];

      const run = await runConnectorOnce(env(), ["--once"], { command });

      expect(run.code).toBe(0);
      // The marker shows that the umask applied: created with 0666, it keeps every bit.
      expect(statSync(marker).mode & 0o777).toBe(0o666);
      const files = readdirSync(stateDir).filter((name) => name !== "umask-marker");
      expect(files).toContain("state.json");
      for (const name of files) {
        expect({ name, mode: (statSync(join(stateDir, name)).mode & 0o777).toString(8) }).toEqual({ name, mode: "600" });
      }
    },
    TIMEOUT_MS,
  );

  test("leftover temporary file becomes 0600", () => {
    const path = join(stateDir, "state.json");
    const temporary = `${path}.tmp-${process.pid}`;
    closeSync(openSync(temporary, "w", 0o644));
    chmodSync(temporary, 0o644);

    new StateFile(path, silentLogger).write({ last_loaded_bundle_id: "20250105-1" });

    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  const configModes: [number, boolean][] = [
    [0o644, true],
    [0o640, true],
    [0o600, false],
  ];
  for (const [mode, warns] of configModes) {
    test(
      `config.yml mode ${mode.toString(8)} with password ${warns ? "warns" : "is silent"}`,
      async () => {
        await startFakes();
        const configDir = tempDir("citalid-security-config-");
        const configPath = join(configDir, "config.yml");
        writeFileSync(configPath, `citalid:\n  password: ${JSON.stringify(TEST_SECRETS.citalidPassword)}\n`);
        chmodSync(configPath, mode);
        const settings = env();
        delete settings.CITALID_PASSWORD;

        const run = await runConnectorOnce(settings, ["--once"], { cwd: configDir });

        expect(run.code).toBe(0);
        const warning = findLog(run.logs(), "other users can access it");
        expect(warning !== undefined).toBe(warns);
        if (warns) {
          expect(warning?.level).toBe("WARNING");
          expect(warning?.message).toContain(`chmod 600 ${configPath}`);
          expect(warning?.message).toContain("citalid.password");
        }
      },
      TIMEOUT_MS,
    );
  }
});

describe("secrets in output", () => {
  function secretEnv(extra: Record<string, string> = {}): Record<string, string> {
    return env({ MQ_PASS: SECURITY_TEST_SECRETS.mqPassword, ...extra });
  }

  test(
    "--help prints no secret",
    async () => {
      await startFakes();

      const run = await runConnectorOnce(secretEnv(), ["--help"]);

      expect(run.code).toBe(0);
      expect(run.stdout()).toContain("Usage: citalid-connector");
      expect(findSecrets(run.lines.join("\n") + run.stdout())).toEqual([]);
    },
    TIMEOUT_MS,
  );

  test(
    "--check prints no secret",
    async () => {
      await startFakes();

      const run = await runConnectorOnce(secretEnv(), ["--check"]);

      expect(run.code).toBe(0);
      expect(run.stdout()).toContain("All checks passed.");
      expect(findSecrets(run.lines.join("\n") + run.stdout())).toEqual([]);
    },
    TIMEOUT_MS,
  );

  test(
    "state file holds no secret",
    async () => {
      await startFakes();

      const run = await runConnectorOnce(secretEnv());

      expect(run.code).toBe(0);
      const text = readFileSync(join(stateDir, "state.json"), "utf8");
      expect(JSON.parse(text).last_loaded_bundle_id).toBe(LAST_ID);
      expect(findSecrets(text)).toEqual([]);
    },
    TIMEOUT_MS,
  );

  // Each case is an invalid configuration that contains secrets. `yaml` is the
  // config.yml written beside the connector, and `unset` lists variables
  // removed from the environment so that config.yml supplies them.
  const configErrors: { name: string; env?: Record<string, string>; yaml?: string; unset?: string[]; names: string }[] = [
    { name: "invalid id beside valid secrets", env: { CONNECTOR_ID: "not-a-uuid" }, names: "CONNECTOR_ID" },
    { name: "numeric OPENCTI_TOKEN", yaml: "opencti:\n  token: 424242424242\n", unset: ["OPENCTI_TOKEN"], names: "OPENCTI_TOKEN" },
    { name: "numeric CITALID_PASSWORD", yaml: "citalid:\n  password: 975319753197\n", unset: ["CITALID_PASSWORD"], names: "CITALID_PASSWORD" },
    { name: "numeric MQ_PASS", yaml: "mq:\n  pass: 864208642086\n", unset: ["MQ_PASS"], names: "MQ_PASS" },
    {
      name: "YAML error on the password line",
      yaml: `citalid:\n  password: "${SECURITY_TEST_SECRETS.mqPassword}\n  user: x\n`,
      names: "invalid YAML",
    },
    {
      name: "quoted secrets beside an invalid id",
      env: {
        OPENCTI_TOKEN: `"${TEST_SECRETS.openctiToken}"`,
        CITALID_PASSWORD: `'${TEST_SECRETS.citalidPassword}'`,
        MQ_PASS: `"${SECURITY_TEST_SECRETS.mqPassword}"`,
        CONNECTOR_ID: "ChangeMe",
      },
      names: "CONNECTOR_ID",
    },
  ];
  for (const { name, env: extra, yaml, unset, names } of configErrors) {
    test(
      `config error with ${name} hides secrets`,
      async () => {
        await startFakes();
        const configDir = tempDir("citalid-security-config-");
        if (yaml !== undefined) {
          writeFileSync(join(configDir, "config.yml"), yaml, { mode: 0o600 });
        }
        const settings = secretEnv(extra);
        for (const variable of unset ?? []) {
          delete settings[variable];
        }

        const run = await runConnectorOnce(settings, ["--once"], { cwd: configDir });

        expect(run.code).toBe(2);
        const output = run.lines.join("\n") + run.stdout();
        expect(output).toContain("invalid configuration");
        expect(output).toContain(names);
        expect(findSecrets(output)).toEqual([]);
        for (const number of ["424242424242", "975319753197", "864208642086"]) {
          expect(output).not.toContain(number);
        }
        expect(opencti.requests).toHaveLength(0);
      },
      TIMEOUT_MS,
    );
  }
});
