// What the tests share: the dev server's address and sessions (from the pytest that started it), a
// photo, and a tiny recording proxy that can break the connection the way networks and proxies do.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { TestContext } from "node:test";

import { type NanoBanana, NanoBananaError, type NanoBananaOptions, createNanoBanana } from "../src/index.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: these tests run from tests/client/test_typescript_client.py`);
  return value;
}

export interface Session {
  token: string;
  userId: string;
  projectId: string;
}

/** The API base, e.g. http://127.0.0.1:PORT/api/nano-banana. */
export const baseUrl = required("NANO_BANANA_BASE_URL");
const sessions = JSON.parse(required("NANO_BANANA_SESSIONS")) as Record<string, Session>;

/** A user who is a member of a project of their own, one per test (the rate limit counts per user). */
export function session(name: string): Session {
  const found = sessions[name];
  if (!found) throw new Error(`no session named ${name}: add it to SESSIONS in the pytest`);
  return found;
}

export function photo(): Blob {
  return new Blob([readFileSync(required("NANO_BANANA_TEST_IMAGE"))], { type: "image/png" });
}

export function clientFor(s: Session, options: Partial<NanoBananaOptions> = {}): NanoBanana {
  return createNanoBanana({ baseUrl, getToken: () => s.token, retry: { baseDelayMs: 50 }, ...options });
}

export interface Seen {
  method: string;
  path: string;
  idempotencyKey: string | undefined;
  ifNoneMatch: string | undefined;
  status: number;
}

/** What the proxy does with one request: pass it on, answer it itself, or break it. */
export type Action =
  | { kind: "forward" }
  | { kind: "respond"; status: number; headers?: Record<string, string>; body?: string }
  /** The server handles the request, but its answer never reaches the client (the connection drops). */
  | { kind: "drop-answer" }
  /** Pass a server-sent-event stream on, and cut the connection after its first event. */
  | { kind: "cut-after-first-event" }
  /** Answer as an event stream that never sends a byte (a proxy that buffers, a half-open connection). */
  | { kind: "silent-stream" };

export interface Proxy {
  /** The API base through the proxy. */
  baseUrl: string;
  seen: Seen[];
  close(): Promise<void>;
}

/** A proxy in front of the dev server for one test (closed after it); `decide` picks the action per request. */
export async function startProxy(t: TestContext, decide: (req: http.IncomingMessage) => Action): Promise<Proxy> {
  const upstream = new URL(baseUrl);
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const record: Seen = {
      method: req.method ?? "",
      path: req.url ?? "",
      idempotencyKey: req.headers["idempotency-key"] as string | undefined,
      ifNoneMatch: req.headers["if-none-match"],
      status: 0,
    };
    seen.push(record);
    const action = decide(req);
    if (action.kind === "silent-stream") {
      req.resume();
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.flushHeaders();
      return;
    }
    if (action.kind === "respond") {
      record.status = action.status;
      req.resume();
      res.writeHead(action.status, action.headers ?? {});
      res.end(action.body ?? "");
      return;
    }
    const forwarded = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        record.status = answer.statusCode ?? 0;
        if (action.kind === "drop-answer") {
          answer.resume();
          answer.on("end", () => req.socket.destroy());
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (action.kind === "cut-after-first-event") {
          let text = "";
          answer.on("data", (chunk: Buffer) => {
            text += chunk.toString("utf8");
            const complete = /\r?\n\r?\n/.test(text);
            answer.pause();
            // Cut only once the event has been handed to the client's socket.
            res.write(chunk, () => (complete ? (answer.destroy(), res.socket?.destroy()) : answer.resume()));
          });
          return;
        }
        answer.pipe(res);
      },
    );
    forwarded.on("error", () => res.socket?.destroy());
    req.pipe(forwarded);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const proxy: Proxy = {
    baseUrl: `http://127.0.0.1:${port}${upstream.pathname}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  t.after(() => (server.listening ? proxy.close() : undefined));
  return proxy;
}

/** The service's own 503 answer, as a proxy gives it. */
export function unavailable(requestId = "proxy-1"): Action {
  return {
    kind: "respond",
    status: 503,
    headers: { "Content-Type": "application/json", "Retry-After": "1", "X-Request-Id": requestId },
    body: JSON.stringify({ error: { code: "unavailable", message: "busy", details: {} } }),
  };
}

/** Assert that `promise` rejects with a NanoBananaError and hand it back. */
export async function failure(promise: Promise<unknown>): Promise<NanoBananaError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof NanoBananaError, `a NanoBananaError, not ${String(error)}`);
    return error;
  }
  assert.fail("expected a NanoBananaError");
}

/** Is this the stream itself (not its ticket)? */
export function isEventStream(req: http.IncomingMessage): boolean {
  return req.method === "GET" && /\/jobs\/[^/]+\/events(\?|$)/.test(req.url ?? "");
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
