import { NanoBananaError, errorFromResponse } from "./errors.js";

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** A bearer token for each request (a Supabase access token); null sends none. Called per request, so a refreshed token is used at once. */
export type TokenSource = () => string | null | Promise<string | null>;

export interface RetryPolicy {
  /** Tries in all for a request that is safe to repeat (default 4). */
  maxAttempts?: number;
  /** The longest single wait, in ms; an answer asking to wait longer (`Retry-After`) is surfaced instead (default 10 000). */
  maxDelayMs?: number;
  /** First backoff after a dropped connection or a 503 without `Retry-After`, doubled each time (default 250). */
  baseDelayMs?: number;
}

export interface Call {
  method: "GET" | "POST" | "DELETE";
  path: string;
  query?: Record<string, string | number | undefined> | undefined;
  headers?: Record<string, string>;
  body?: BodyInit;
  /** Only where the API says a repeat is safe: GETs, reads over POST, creation with an Idempotency-Key. */
  retry: boolean;
  /** Send If-None-Match; a 304 answer is then returned rather than thrown. */
  ifNoneMatch?: string | null;
  signal?: AbortSignal | undefined;
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Requests with the caller's token, the service's error envelope, and bounded retries where they are safe. */
export class Transport {
  readonly baseUrl: string;
  readonly fetch: FetchLike;
  private readonly getToken: TokenSource;
  private readonly maxAttempts: number;
  private readonly maxDelayMs: number;
  private readonly baseDelayMs: number;

  constructor(baseUrl: string, getToken: TokenSource, fetchImpl: FetchLike, retry: RetryPolicy = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.getToken = getToken;
    this.fetch = fetchImpl;
    this.maxAttempts = Math.max(1, retry.maxAttempts ?? 4);
    this.maxDelayMs = retry.maxDelayMs ?? 10_000;
    this.baseDelayMs = retry.baseDelayMs ?? 250;
  }

  url(path: string, query?: Record<string, string | number | undefined>): string {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined) params.set(key, String(value));
    }
    const search = params.toString();
    return `${this.baseUrl}${path}${search ? `?${search}` : ""}`;
  }

  /** The backoff before try `attempt + 1`: exponential with full jitter, never above maxDelayMs. */
  backoff(attempt: number): number {
    return Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
  }

  /** The answer (2xx, or 304 to a conditional GET); anything else is thrown as a NanoBananaError. */
  async send(call: Call): Promise<Response> {
    const attempts = call.retry ? this.maxAttempts : 1;
    for (let attempt = 1; ; attempt++) {
      call.signal?.throwIfAborted();
      const headers: Record<string, string> = { Accept: "application/json", ...call.headers };
      const token = await this.getToken();
      if (token) headers["Authorization"] = `Bearer ${token}`;
      const init: RequestInit = { method: call.method, headers };
      if (call.body !== undefined) init.body = call.body;
      if (call.signal) init.signal = call.signal;
      if (call.ifNoneMatch) {
        headers["If-None-Match"] = call.ifNoneMatch;
        init.cache = "no-store"; // a browser would otherwise answer the revalidation from its own cache
      }
      let response: Response;
      try {
        response = await this.fetch(this.url(call.path, call.query), init);
      } catch (cause) {
        call.signal?.throwIfAborted();
        const error = new NanoBananaError({
          status: 0,
          code: "network_error",
          message: `the service could not be reached (${call.method} ${call.path})`,
          cause,
        });
        if (attempt >= attempts) throw error;
        await sleep(this.backoff(attempt), call.signal);
        continue;
      }
      if (response.ok || (response.status === 304 && call.ifNoneMatch)) return response;
      const error = await errorFromResponse(response);
      if (attempt < attempts && (response.status === 429 || response.status === 503)) {
        const wait = error.retryAfterSeconds !== null ? error.retryAfterSeconds * 1000 : this.backoff(attempt);
        if (wait <= this.maxDelayMs) {
          await sleep(wait, call.signal);
          continue;
        }
      }
      throw error;
    }
  }

  async json<T>(call: Call): Promise<T> {
    const response = await this.send(call);
    try {
      return (await response.json()) as T;
    } catch (cause) {
      call.signal?.throwIfAborted();
      throw new NanoBananaError({
        status: response.status,
        code: "unexpected_response",
        message: `the answer to ${call.method} ${call.path} was not JSON`,
        requestId: response.headers.get("X-Request-Id"),
        cause,
      });
    }
  }
}
