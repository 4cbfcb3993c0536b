/**
 * Secrets of the security tests, beside those of the connector harness, and
 * the forms in which a leaked secret would show in the connector's output.
 */
import { TEST_SECRETS } from "./connector.ts";

/** Secrets that only the security tests use. */
export const SECURITY_TEST_SECRETS = {
  mqPassword: "mq-pass-3e8b1f6d",
  proxyPassword: "proxy-pw-7c2a9e4b",
};

/**
 * Returns every test secret by name. The harness's `mqPassword` is left out
 * because it is `guest`, RabbitMQ's default user name, which logs may name.
 */
export function allTestSecrets(): Record<string, string> {
  return {
    openctiToken: TEST_SECRETS.openctiToken,
    citalidPassword: TEST_SECRETS.citalidPassword,
    ...SECURITY_TEST_SECRETS,
  };
}

/** Returns the forms a secret takes in output: raw, JSON-escaped, percent-encoded and form-encoded. */
export function secretForms(secret: string): string[] {
  const forms = [
    secret,
    JSON.stringify(secret).slice(1, -1),
    encodeURIComponent(secret),
    new URLSearchParams({ s: secret }).toString().slice("s=".length),
  ];
  return [...new Set(forms)];
}

/** Returns the names of the test secrets found in `text`, in any of their forms. */
export function findSecrets(text: string): string[] {
  return Object.entries(allTestSecrets())
    .filter(([, secret]) => secretForms(secret).some((form) => text.includes(form)))
    .map(([name]) => name);
}
