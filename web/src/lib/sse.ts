// Server-Sent Events over fetch (EventSource cannot send the session's
// Authorization header): parse with eventsource-parser, reconnect with a
// growing delay, resume with Last-Event-ID, stop for good on a 4xx.

import { createParser } from 'eventsource-parser';
import { ApiError, authHeader, isAbort, toError } from './api';

export interface SseHandlers {
  event(name: string, data: string): void;
  /** The stream is (again) connected. */
  open?(): void;
  /** The connection failed or dropped; `final` when it will not retry. */
  error?(e: unknown, final: boolean): void;
}

export interface Follow {
  stop(): void;
}

const MAX_DELAY_MS = 15_000;

function permanent(e: unknown): boolean {
  return e instanceof ApiError && e.status >= 400 && e.status < 500 && ![408, 429].includes(e.status);
}

/** Follows `path` until `stop()` (or a 4xx). */
export function follow(path: string, on: SseHandlers): Follow {
  const ctl = new AbortController();
  let lastId: string | undefined;
  let delay = 500;

  const once = async () => {
    const headers: Record<string, string> = { Accept: 'text/event-stream', ...authHeader() };
    if (lastId) headers['Last-Event-ID'] = lastId;
    const res = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store' });
    if (!res.ok) throw await toError(res);
    if (!res.body) throw new Error('the event stream has no body');
    delay = 500;
    on.open?.();
    const parser = createParser({
      onEvent(ev) {
        if (ev.id) lastId = ev.id;
        on.event(ev.event ?? 'message', ev.data);
      },
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.feed(value);
    }
  };

  const loop = async () => {
    while (!ctl.signal.aborted) {
      try {
        await once();
      } catch (e) {
        if (isAbort(e) || ctl.signal.aborted) return;
        const final = permanent(e);
        on.error?.(e, final);
        if (final) return;
      }
      if (ctl.signal.aborted) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  };
  void loop();
  return { stop: () => ctl.abort() };
}
