import assert from "node:assert/strict";
import { test } from "node:test";

import { type ServerSentEvent, readEvents } from "../src/index.js";

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
}

async function collect(chunks: string[]): Promise<ServerSentEvent[]> {
  const events: ServerSentEvent[] = [];
  for await (const event of readEvents(streamOf(chunks), 5_000)) events.push(event);
  return events;
}

test("events split anywhere, in any line ending, with comments and multi-line data", async () => {
  const events = await collect([
    ": keepalive\n\nevent: job\ndata: {\"a\":",
    "1}\r",
    "\n\r\nevent: job\rdata: line one\rdata:line two\r\rdata: plain\n",
    "id: 7\n\ndata: é",
    "\n\n",
  ]);
  assert.deepEqual(events, [
    { event: "job", data: '{"a":1}', id: null },
    { event: "job", data: "line one\nline two", id: null },
    { event: "message", data: "plain", id: "7" },
    { event: "message", data: "é", id: "7" },
  ]);
});

test("an event cut off before its blank line is not delivered", async () => {
  assert.deepEqual(await collect(["event: job\ndata: {}\n\nevent: job\ndata: {\"half\""]), [
    { event: "job", data: "{}", id: null },
  ]);
});

test("a stream that stays silent ends after the idle timeout", async () => {
  const silent = new ReadableStream<Uint8Array>({ start() {} });
  const events: ServerSentEvent[] = [];
  for await (const event of readEvents(silent, 50)) events.push(event);
  assert.deepEqual(events, []);
});
