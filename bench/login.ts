/** Logs the benchmark's reference pipelines in to the fake Citalid. */
import { CITALID_CLIENT_ID, CITALID_TOKEN_PATH } from "../tests/fakes/citalid.ts";

/** Logs in with the password grant and returns the access token. Raises on any HTTP error. */
export async function login(url: string, username: string, secret: string): Promise<string> {
  const reply = await fetch(url + CITALID_TOKEN_PATH, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: "Basic " + btoa(CITALID_CLIENT_ID + ":"),
    },
    body: new URLSearchParams({ grant_type: "password", username, password: secret }),
  });
  if (!reply.ok) {
    throw new Error(`login to ${url} failed with HTTP ${reply.status}`);
  }
  return ((await reply.json()) as { access_token: string }).access_token;
}
