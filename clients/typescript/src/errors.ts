import type { components } from "./openapi.js";

/** The stable error codes of the service's error envelope (`{"error": {"code", ...}}`). */
export type ApiErrorCode = components["schemas"]["Error"]["error"]["code"];

/**
 * Codes the client itself gives: `network_error` when no answer came (status 0), and
 * `unexpected_response` when an answer was not the service's JSON (a proxy's HTML error page, say).
 */
export type ClientErrorCode = "network_error" | "unexpected_response";

export type ErrorCode = ApiErrorCode | ClientErrorCode;

export interface NanoBananaErrorInit {
  status: number;
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
  requestId?: string | null;
  retryAfterSeconds?: number | null;
  cause?: unknown;
}

/** Every failure the client reports (other than an abort, which rejects with the signal's reason). */
export class NanoBananaError extends Error {
  override readonly name = "NanoBananaError";
  /** HTTP status, or 0 when the service could not be reached. */
  readonly status: number;
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  /** The request's id (`X-Request-Id`): it finds the request's log lines on the server. */
  readonly requestId: string | null;
  /** From `Retry-After` on 429 and 503: when asking again can succeed. */
  readonly retryAfterSeconds: number | null;

  constructor(init: NanoBananaErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? {};
    this.requestId = init.requestId ?? null;
    this.retryAfterSeconds = init.retryAfterSeconds ?? null;
  }
}

/** `Retry-After` in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); null when absent or unreadable. */
export function retryAfterSeconds(header: string | null, now: number = Date.now()): number | null {
  if (header === null || header.trim() === "") return null;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The error a non-2xx answer stands for, read from the service's envelope when it is one. */
export async function errorFromResponse(response: Response): Promise<NanoBananaError> {
  const headerRequestId = response.headers.get("X-Request-Id");
  const retryAfter = retryAfterSeconds(response.headers.get("Retry-After"));
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const envelope = isRecord(body) && isRecord(body["error"]) ? body["error"] : null;
  if (envelope === null || typeof envelope["code"] !== "string") {
    return new NanoBananaError({
      status: response.status,
      code: response.status === 503 ? "unavailable" : "unexpected_response",
      message: `the service answered ${response.status} without its error envelope`,
      requestId: headerRequestId,
      retryAfterSeconds: retryAfter,
    });
  }
  const details = isRecord(envelope["details"]) ? envelope["details"] : {};
  const fromDetails = typeof details["retryAfterSeconds"] === "number" ? details["retryAfterSeconds"] : null;
  return new NanoBananaError({
    status: response.status,
    code: envelope["code"] as ErrorCode,
    message: typeof envelope["message"] === "string" ? envelope["message"] : "",
    details,
    requestId: typeof envelope["requestId"] === "string" ? envelope["requestId"] : headerRequestId,
    retryAfterSeconds: retryAfter ?? fromDetails,
  });
}
