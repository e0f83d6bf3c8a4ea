import { NanoBananaError, errorFromResponse } from "./errors.js";
import type { components, paths } from "./openapi.js";
import { readEvents } from "./sse.js";
import { type Call, type FetchLike, type RetryPolicy, type TokenSource, Transport, sleep } from "./transport.js";

type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type JobStatus = Schemas["JobStatus"];
export type Variant = Schemas["Variant"];
export type JobPage = Schemas["JobPage"];
export type Thread = Schemas["Thread"];
export type Message = Schemas["Message"];
export type ImageBlock = Schemas["ImageBlock"];
export type ImageCompareBlock = Schemas["ImageCompareBlock"];
export type Block = ImageBlock | ImageCompareBlock;
export type SignedUrls = Schemas["SignedUrls"];
export type Config = Schemas["Config"];
export type AspectRatio = Schemas["AspectRatio"];
export type Created = Schemas["Created"];
export type RefineCreated = Schemas["RefineCreated"];
export type EventsTicket = Schemas["EventsTicket"];
export type ListJobsQuery = NonNullable<paths["/api/nano-banana/jobs"]["get"]["parameters"]["query"]>;
export type Usage = Schemas["Usage"];
export type UsageQuery = NonNullable<paths["/api/nano-banana/usage"]["get"]["parameters"]["query"]>;
type BlocksQuery = paths["/api/nano-banana/jobs/{jobId}/blocks"]["get"]["parameters"]["query"];
type MultipartCreate = paths["/api/nano-banana/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"];
type JsonCreate = paths["/api/nano-banana/jobs"]["post"]["requestBody"]["content"]["application/json"];
type RefineBody = paths["/api/nano-banana/messages"]["post"]["requestBody"]["content"]["application/json"];
/** `DELETE /jobs/{id}`: the ids of every job deleted, this one first. */
export type Deleted = Schemas["Deleted"];

/** The states a job never leaves. */
export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set<JobStatus>(["succeeded", "failed", "canceled"]);

export interface NanoBananaOptions {
  /** The API's base URL, e.g. `https://api.example.com/api/nano-banana` (the dev server's is `http://127.0.0.1:8080/api/nano-banana`). */
  baseUrl: string;
  getToken: TokenSource;
  /** Defaults to the global `fetch`. */
  fetch?: FetchLike;
  retry?: RetryPolicy;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export type CreateJobInput = Pick<
  MultipartCreate,
  "projectId" | "prompt" | "variantCount" | "aspectRatio" | "webhookUrl" | "model" | "resolution"
> & {
  /** JPEG, PNG or WebP (the server checks the bytes, not the type); a `File` keeps its name. */
  image: Blob;
  /** With `webhookUrl`: which events to POST (default succeeded, failed, canceled). docs/webhooks.md */
  webhookEvents?: Schemas["WebhookEvents"];
  /** Reference images, sent to the model after `image` in this order (at most the model's `maxReferences`). */
  references?: Blob[];
  /** Makes creation safe to repeat: the same key and body give the same job. Generated when absent. */
  idempotencyKey?: string;
};

export type CreateJobFromPathInput = JsonCreate & { idempotencyKey?: string };

export type RefineInput = RefineBody & { idempotencyKey?: string };

/** What creation answered, plus the key it was made with (keep it to repeat the request safely later). */
export type CreatedJob = Created & { idempotencyKey: string; replayed: boolean };
export type RefinedJob = RefineCreated & { idempotencyKey: string; replayed: boolean };

export interface ImageBlockQuery {
  variantId: string;
  type?: "image";
}
export interface ImageCompareBlockQuery {
  variantId: string;
  type: "image_compare";
  layout?: NonNullable<BlocksQuery["layout"]>;
  /** The "before": `parent` (default), what this job was made from (a refinement's: the variant it refined);
   * `original`, the photo its thread began with. */
  before?: NonNullable<BlocksQuery["before"]>;
}

export interface WatchOptions extends RequestOptions {
  /** Polling interval once streaming is given up (default 2000 ms). */
  pollIntervalMs?: number;
  /** A stream that sends nothing, not even the server's 15 s keepalive, for this long is reconnected (default 45 000 ms). */
  idleTimeoutMs?: number;
  /** Consecutive failed stream attempts before falling back to polling (default 3). */
  streamAttempts?: number;
}

export interface JobWatch {
  /** The job in its terminal state; rejects with the signal's reason once stopped or aborted. */
  readonly done: Promise<Job>;
  stop(): void;
}

export interface NanoBanana {
  /** Public guardrails (file size, accepted types, limits), to check before uploading. */
  config(options?: RequestOptions): Promise<Config>;
  /** Upload a photo and queue a job. Repeated on dropped connections, 503 and short 429s with the same Idempotency-Key. */
  createJob(input: CreateJobInput, options?: RequestOptions): Promise<CreatedJob>;
  /** Queue a job from an image already stored (your upload, or a variant of the same project). */
  createJobFromPath(input: CreateJobFromPathInput, options?: RequestOptions): Promise<CreatedJob>;
  getJob(jobId: string, options?: RequestOptions): Promise<Job>;
  /** A project's jobs, newest first, one page at a time (keyset cursor). */
  listJobs(query: ListJobsQuery, options?: RequestOptions): AsyncGenerator<JobPage, void, undefined>;
  /** A project's usage by UTC day (`from`..`to`, at most 92 days; default this month) and its month against the image budget. */
  usage(query: UsageQuery, options?: RequestOptions): Promise<Usage>;
  /** Cancel a queued or running job (409 `invalid_transition` once finished). Not repeated automatically. */
  cancel(jobId: string, options?: RequestOptions): Promise<Job>;
  /** Delete a job (and the jobs refined from it, as the server decides). Not repeated automatically. */
  deleteJob(jobId: string, options?: RequestOptions): Promise<Deleted>;
  /** Refine a variant of a succeeded job: a new job in the same thread. */
  refine(input: RefineInput, options?: RequestOptions): Promise<RefinedJob>;
  /** The whole thread the job belongs to, oldest first. */
  thread(jobId: string, options?: RequestOptions): Promise<Thread>;
  /** Document Builder block JSON for a variant of a succeeded job. */
  blocks(jobId: string, query: ImageBlockQuery, options?: RequestOptions): Promise<ImageBlock>;
  blocks(jobId: string, query: ImageCompareBlockQuery, options?: RequestOptions): Promise<ImageCompareBlock>;
  /** Fresh signed URLs for stored paths (a block's `storagePath`), at most 50; the rest come back in `notFound`. */
  signUrls(paths: string[], options?: RequestOptions): Promise<SignedUrls>;
  /**
   * Follow a job: `onUpdate` gets each new state (the current one first) until a terminal state.
   * Server-sent events over fetch with a stream ticket; reconnects a dropped or silent stream; falls
   * back to polling with `If-None-Match` when streaming keeps failing.
   */
  watch(jobId: string, onUpdate: (job: Job) => void, options?: WatchOptions): JobWatch;
  /** The job once it is terminal (`succeeded`, `failed` or `canceled`). */
  waitFor(jobId: string, options?: WatchOptions & { onUpdate?: (job: Job) => void }): Promise<Job>;
}

/** A random Idempotency-Key; `crypto.randomUUID` exists only in secure contexts, `getRandomValues` everywhere. */
export function newIdempotencyKey(): string {
  if (typeof globalThis.crypto.randomUUID === "function") return globalThis.crypto.randomUUID();
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function jobPath(jobId: string, suffix = ""): string {
  return `/jobs/${encodeURIComponent(jobId)}${suffix}`;
}

function withKey<T>(body: T, key: string, response: Response): T & { idempotencyKey: string; replayed: boolean } {
  return { ...body, idempotencyKey: key, replayed: response.status === 200 };
}

export function createNanoBanana(options: NanoBananaOptions): NanoBanana {
  const fetchImpl: FetchLike = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const transport = new Transport(options.baseUrl, options.getToken, fetchImpl, options.retry);

  async function created<T>(call: Omit<Call, "retry">, key: string): Promise<T & { idempotencyKey: string; replayed: boolean }> {
    const response = await transport.send({ ...call, retry: true, headers: { ...call.headers, "Idempotency-Key": key } });
    return withKey((await response.json()) as T, key, response);
  }

  const get = <T>(path: string, signal?: AbortSignal, query?: Call["query"]): Promise<T> =>
    transport.json<T>({ method: "GET", path, query, retry: true, signal });

  const client: NanoBanana = {
    config: (opts = {}) => get<Config>("/config", opts.signal),

    createJob(input, opts = {}) {
      const form = new FormData();
      const name = (input.image as { name?: unknown }).name;
      form.append("image", input.image, typeof name === "string" && name ? name : "image");
      form.append("projectId", input.projectId);
      form.append("prompt", input.prompt);
      if (input.variantCount !== undefined) form.append("variantCount", String(input.variantCount));
      if (input.aspectRatio !== undefined) form.append("aspectRatio", input.aspectRatio);
      if (input.webhookUrl !== undefined) form.append("webhookUrl", input.webhookUrl);
      if (input.webhookEvents !== undefined) form.append("webhookEvents", input.webhookEvents.join(","));
      if (input.model !== undefined) form.append("model", input.model);
      if (input.resolution !== undefined) form.append("resolution", input.resolution);
      (input.references ?? []).forEach((ref, i) => {
        const refName = (ref as { name?: unknown }).name;
        form.append("reference", ref, typeof refName === "string" && refName ? refName : `reference-${i}`);
      });
      const key = input.idempotencyKey ?? newIdempotencyKey();
      return created<Created>({ method: "POST", path: "/jobs", body: form, signal: opts.signal }, key);
    },

    createJobFromPath(input, opts = {}) {
      const { idempotencyKey, ...body } = input;
      const key = idempotencyKey ?? newIdempotencyKey();
      const headers = { "Content-Type": "application/json" };
      return created<Created>({ method: "POST", path: "/jobs", headers, body: JSON.stringify(body), signal: opts.signal }, key);
    },

    getJob: (jobId, opts = {}) => get<Job>(jobPath(jobId), opts.signal),

    async *listJobs(query, opts = {}) {
      let cursor = query.cursor;
      for (;;) {
        const page = await get<JobPage>("/jobs", opts.signal, { ...query, cursor });
        yield page;
        if (!page.nextCursor) return;
        cursor = page.nextCursor;
      }
    },

    usage: (query, opts = {}) => get<Usage>("/usage", opts.signal, { ...query }),

    cancel: (jobId, opts = {}) =>
      transport.json<Job>({ method: "POST", path: jobPath(jobId, "/cancel"), retry: false, signal: opts.signal }),

    deleteJob: (jobId, opts = {}) =>
      transport.json<Deleted>({ method: "DELETE", path: jobPath(jobId), retry: false, signal: opts.signal }),

    refine(input, opts = {}) {
      const { idempotencyKey, ...body } = input;
      const key = idempotencyKey ?? newIdempotencyKey();
      const headers = { "Content-Type": "application/json" };
      return created<RefineCreated>(
        { method: "POST", path: "/messages", headers, body: JSON.stringify(body), signal: opts.signal },
        key,
      );
    },

    thread: (jobId, opts = {}) => get<Thread>(jobPath(jobId, "/messages"), opts.signal),

    blocks: ((jobId: string, query: ImageBlockQuery | ImageCompareBlockQuery, opts: RequestOptions = {}) =>
      get<Block>(jobPath(jobId, "/blocks"), opts.signal, { ...query })) as NanoBanana["blocks"],

    // Signing changes nothing on the server, so it is repeated like a GET.
    signUrls: (storagePaths, opts = {}) =>
      transport.json<SignedUrls>({
        method: "POST",
        path: "/signed-urls",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ paths: storagePaths }),
        retry: true,
        signal: opts.signal,
      }),

    watch(jobId, onUpdate, opts = {}) {
      const controller = new AbortController();
      const stopOnAbort = (): void => controller.abort(opts.signal?.reason);
      if (opts.signal?.aborted) stopOnAbort();
      else opts.signal?.addEventListener("abort", stopOnAbort, { once: true });
      const done = follow(transport, jobId, onUpdate, opts, controller.signal).finally(() => {
        opts.signal?.removeEventListener("abort", stopOnAbort);
        controller.abort(); // ends a stream still open
      });
      done.catch(() => undefined); // a watch stopped and never awaited is not an unhandled rejection
      return { done, stop: () => controller.abort() };
    },

    waitFor(jobId, opts = {}) {
      const { onUpdate, ...watchOptions } = opts;
      return client.watch(jobId, onUpdate ?? (() => undefined), watchOptions).done;
    },
  };
  return client;
}

/** Stream the job's events; after `streamAttempts` consecutive failures, poll instead. */
async function follow(
  transport: Transport,
  jobId: string,
  onUpdate: (job: Job) => void,
  opts: WatchOptions,
  signal: AbortSignal,
): Promise<Job> {
  let lastSeen = "";
  // Each state once: a reconnected stream starts again with the current state.
  const seen = (job: Job): boolean => {
    const key = `${job.status}|${job.updatedAt}|${job.attempt}`;
    if (key !== lastSeen) {
      lastSeen = key;
      onUpdate(job);
    }
    return TERMINAL_STATUSES.has(job.status);
  };
  const streamAttempts = opts.streamAttempts ?? 3;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 45_000;
  let failures = 0;
  let ticket: EventsTicket | null = null;
  while (failures < streamAttempts) {
    signal.throwIfAborted();
    try {
      if (ticket === null || Date.parse(ticket.expiresAt) - Date.now() < 5_000) {
        const call: Call = { method: "POST", path: jobPath(jobId, "/events-ticket"), retry: true, signal };
        ticket = await transport.json<EventsTicket>(call);
      }
      const url = transport.url(jobPath(jobId, "/events"), { ticket: ticket.ticket });
      const init: RequestInit = { headers: { Accept: "text/event-stream" }, cache: "no-store", signal };
      const response = await transport.fetch(url, init);
      const type = response.headers.get("Content-Type") ?? "";
      if (response.ok && type.startsWith("text/event-stream") && response.body) {
        for await (const event of readEvents(response.body, idleTimeoutMs)) {
          if (event.event !== "job") continue;
          failures = 0;
          const job = JSON.parse(event.data) as Job;
          if (seen(job)) return job;
        }
        failures += 1; // ended (or went silent) before a terminal state: reconnect
      } else {
        const error = response.ok ? null : await errorFromResponse(response);
        if (error?.status === 404) throw error; // the job is gone, or was never the caller's
        if (error?.status === 401) ticket = null; // an expired or revoked ticket: ask for a new one
        failures += 1;
      }
    } catch (error) {
      signal.throwIfAborted();
      // A refused ticket (401/403/404) ends the watch; a dropped connection is one more failure.
      if (error instanceof NanoBananaError && error.status >= 400 && error.status < 500) throw error;
      failures += 1;
    }
    if (failures > 0 && failures < streamAttempts) await sleep(transport.backoff(failures), signal);
  }
  return poll(transport, jobId, seen, opts.pollIntervalMs ?? 2_000, signal);
}

/** Poll the job; an unchanged job is a bodiless 304 to `If-None-Match`. */
async function poll(
  transport: Transport,
  jobId: string,
  seen: (job: Job) => boolean,
  intervalMs: number,
  signal: AbortSignal,
): Promise<Job> {
  let etag: string | null = null;
  for (;;) {
    const response = await transport.send({ method: "GET", path: jobPath(jobId), retry: true, ifNoneMatch: etag, signal });
    if (response.status !== 304) {
      // Unreadable across origins unless exposed; then the browser's own cache revalidates instead.
      etag = response.headers.get("ETag");
      const job = (await response.json()) as Job;
      if (seen(job)) return job;
    }
    await sleep(intervalMs, signal);
  }
}
