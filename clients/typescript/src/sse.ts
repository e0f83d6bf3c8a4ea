/** One dispatched server-sent event (the HTML Living Standard's "event stream" format). */
export interface ServerSentEvent {
  event: string;
  data: string;
  id: string | null;
}

/**
 * The events of a `text/event-stream` body, read over `fetch` (so it runs wherever fetch streams:
 * browsers, Node 18+, workers). Ends when the body ends, or when nothing at all (not even a keepalive
 * comment) arrived for `idleTimeoutMs`: a connection that went silent is treated as a dropped one.
 */
export async function* readEvents(
  body: ReadableStream<Uint8Array>,
  idleTimeoutMs: number,
): AsyncGenerator<ServerSentEvent, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data: string[] = [];
  let event = "";
  let id: string | null = null;
  let idle: ReturnType<typeof setTimeout> | undefined;
  try {
    for (;;) {
      idle = setTimeout(() => void reader.cancel().catch(() => undefined), idleTimeoutMs);
      const { done, value } = await reader.read();
      clearTimeout(idle);
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // Lines end in CRLF, LF or CR; a CR at the very end may be the first half of a CRLF still to come.
      let match: RegExpExecArray | null;
      const terminator = /\r\n|\n|\r(?!$)/g;
      let start = 0;
      while ((match = terminator.exec(buffer)) !== null) {
        const line = buffer.slice(start, match.index);
        start = match.index + match[0].length;
        if (line === "") {
          if (data.length > 0) yield { event: event || "message", data: data.join("\n"), id };
          data = [];
          event = "";
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the server's keepalive
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") event = value;
        else if (field === "id" && !value.includes("\0")) id = value;
      }
      buffer = buffer.slice(start);
      if (done) return; // an event without its closing blank line is incomplete and not dispatched
    }
  } finally {
    clearTimeout(idle);
    await reader.cancel().catch(() => undefined); // a consumer that stopped early closes the connection now
  }
}
