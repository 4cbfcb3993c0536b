import { describe, expect, test } from "bun:test";

import { BundleError, CitalidAuthError, CitalidError, excerpt, PushLimitError, RunError } from "../lib/errors.ts";

describe("excerpt", () => {
  const masked: [string, string, string][] = [
    ["a JSON access_token", '{"access_token":"eyJhbGciOi.abc.def","expires_in":300}', '{"access_token":"***","expires_in":300}'],
    ["a spaced JSON token", '{"token" : "t-123"}', '{"token" : "***"}'],
    ["a form password", "username=alice&password=hunter22&grant_type=password", "username=alice&password=***&grant_type=password"],
    ["a JSON password", '{"password": "hunter22"}', '{"password": "***"}'],
    ["a password with spaces", '{"password":"correct horse battery"}', '{"password":"***"}'],
    ["an escaped quote in a password", '{"password":"a\\"b c"}', '{"password":"***"}'],
    ["a refresh_token", "refresh_token=r-456", "refresh_token=***"],
    ["a client secret", '{"client_secret":"s-789"}', '{"client_secret":"***"}'],
    ["a Bearer token", "Authorization failed for Bearer eyJ0eXAi.x.y", "Authorization failed for Bearer ***"],
    ["Basic credentials", "sent Basic YWxpY2U6aHVudGVyMg== to the server", "sent Basic *** to the server"],
    ["an authorization header", '{"authorization":"Bearer eyJ0eXAi.x.y"}', '{"authorization":"***"}'],
    ["a header line", "authorization: Bearer eyJ0eXAi.x.y", "authorization: ***"],
    ["a lower-case scheme", "Authorization: bearer eyJ0eXAi.x.y", "Authorization: ***"],
    ["an unterminated password", '{"password":"hunter22 and more', '{"password":"***"'],
    ["a numeric token", '{"token": 123456}', '{"token": ***}'],
  ];

  for (const [name, body, expected] of masked) {
    test(`masks ${name}`, () => {
      expect(excerpt(body, 500)).toBe(expected);
    });
  }

  const withoutSecrets: [string, string][] = [
    ["a GraphQL error", '{"errors":[{"message":"Not found"}]}'],
    ["the word token", '{"message":"token expired, log in again"}'],
    ["the word basic", "basic checks failed"],
  ];

  for (const [name, body] of withoutSecrets) {
    test(`keeps ${name}`, () => {
      expect(excerpt(body)).toBe(body);
    });
  }

  test("collapses whitespace", () => {
    expect(excerpt("  <html>\n\t<body>  Bad   Gateway </body>\r\n</html>\n")).toBe("<html> <body> Bad Gateway </body> </html>");
  });

  test("truncates to max characters", () => {
    const result = excerpt("a".repeat(200), 120);

    expect(result).toBe("a".repeat(120) + "…");
  });

  test("keeps a body of exactly max", () => {
    expect(excerpt("a".repeat(120), 120)).toBe("a".repeat(120));
  });

  test("masks before it truncates", () => {
    const result = excerpt('{"access_token":"' + "x".repeat(300) + '"}', 40);

    expect(result).toBe('{"access_token":"***"}');
  });

  test("masks a secret cut by truncation", () => {
    const result = excerpt("y".repeat(100) + " password=hunter22hunter22", 112);

    expect(result).not.toContain("hunter");
  });
});

describe("BundleError", () => {
  test("names the version and problem", () => {
    const error = new BundleError("20250105-2", '"objects" is missing');

    expect(error.message).toBe('Citalid version 20250105-2 is not a valid STIX 2.1 bundle: "objects" is missing');
    expect(error.versionId).toBe("20250105-2");
    expect(error.retryable).toBe(false);
    expect(error).toBeInstanceOf(RunError);
  });
});

describe("PushLimitError", () => {
  test("names the version and problem", () => {
    const error = new PushLimitError("20250105-2", "object x alone needs 20 bytes");

    expect(error.message).toBe("Citalid version 20250105-2 cannot be pushed: object x alone needs 20 bytes");
    expect(error).toBeInstanceOf(BundleError);
    expect(error.retryable).toBe(false);
  });
});

describe("RunError", () => {
  test("is retryable by default", () => {
    expect(new RunError("Server error").retryable).toBe(true);
  });

  test("keeps the cause", () => {
    const cause = new Error("socket hang up");

    expect(new RunError("Download failed", { cause }).cause).toBe(cause);
  });
});

describe("CitalidError", () => {
  test("keeps path, status and version", () => {
    const error = new CitalidAuthError("Citalid rejected the login", { path: "/auth/token", status: 401, retryable: false });

    expect(error.path).toBe("/auth/token");
    expect(error.status).toBe(401);
    expect(error.versionId).toBeUndefined();
    expect(error.retryable).toBe(false);
    expect(error.name).toBe("CitalidAuthError");
    expect(error).toBeInstanceOf(CitalidError);
  });
});
