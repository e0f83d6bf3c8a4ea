// Verifying the completion webhooks the service POSTs to a builder's server (docs/webhooks.md): Standard
// Webhooks signatures, HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" with a `whsec_` secret,
// checked with the Web Crypto API (Node 20+ and browsers alike, no dependency).
import type { components } from "./openapi.js";

type Job = components["schemas"]["Job"];
export type WebhookEventName = components["schemas"]["WebhookEvent"];

/** What a delivery carries: `data` is the job as `GET /jobs/{id}` renders it when the delivery is sent
 * (a retried `job.running` may already show a later status). */
export interface JobWebhook {
  type: `job.${WebhookEventName}`;
  timestamp: string;
  data: Job;
}

export interface VerifyWebhookOptions {
  /** How far `webhook-timestamp` may be from now, in seconds (default 300). */
  toleranceSeconds?: number;
  /** The current time in milliseconds (default `Date.now`), for tests. */
  now?: () => number;
}

/** A delivery that is not signed by any of the given secrets, is stale, or is malformed. */
export class WebhookVerificationError extends Error {
  override readonly name = "WebhookVerificationError";
}

type HeaderSource = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderSource, name: string): string {
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name) ?? "";
  const record = headers as Record<string, string | string[] | undefined>;
  const key = Object.keys(record).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : record[key];
  return (Array.isArray(value) ? value[0] : value) ?? "";
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(new ArrayBuffer(binary.length));
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

async function hmac(secret: string, content: string): Promise<Uint8Array> {
  const raw = secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret;
  const key = await crypto.subtle.importKey("raw", fromBase64(raw), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(content)));
}

/**
 * Check a delivery against one secret or several (during a rotation, any may match) and return its payload.
 * Pass the raw body exactly as received (not re-serialized JSON) and the request's headers.
 * Throws WebhookVerificationError when no secret signed it, the timestamp is outside the tolerance, or a
 * header is missing. Deduplicate on the `webhook-id` header: retries carry the same one.
 */
export async function verifyWebhook(
  body: string,
  headers: HeaderSource,
  secrets: string | readonly string[],
  options: VerifyWebhookOptions = {},
): Promise<JobWebhook> {
  const id = header(headers, "webhook-id");
  const stamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!id || !stamp || !signatures) throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature");
  const tolerance = options.toleranceSeconds ?? 300;
  const now = (options.now ?? Date.now)() / 1000;
  if (!/^\d+$/.test(stamp) || Math.abs(now - Number(stamp)) > tolerance) {
    throw new WebhookVerificationError("webhook-timestamp is outside the tolerance");
  }
  const offered: Uint8Array[] = [];
  for (const item of signatures.split(" ")) {
    const [version, value] = item.split(",", 2);
    if (version !== "v1" || !value) continue;
    try {
      offered.push(fromBase64(value));
    } catch {
      continue; // not base64: cannot match
    }
  }
  for (const secret of typeof secrets === "string" ? [secrets] : secrets) {
    const expected = await hmac(secret, `${id}.${stamp}.${body}`);
    if (offered.some((candidate) => sameBytes(candidate, expected))) return JSON.parse(body) as JobWebhook;
  }
  throw new WebhookVerificationError("no signature matches");
}
