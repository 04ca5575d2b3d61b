// The team's capsules, kept live: one list request, then the lifecycle
// event stream (SSE) updates rows as their state changes. No polling: a
// reconnect of the stream re-reads the list once to catch what it missed.

import { errorText, get, isAbort } from './api';
import { follow, type Follow } from './sse';
import type { Capsule, LifecycleEvent } from './types';

export class CapsuleStore {
  /** Replaced, never changed in place (raw: no proxy over a thousand rows). */
  items = $state.raw<Capsule[]>([]);
  loaded = $state(false);
  /** The event stream is connected. */
  live = $state(false);
  error = $state('');
  private stream: Follow | undefined;
  private ctl: AbortController | undefined;

  start(): void {
    this.stop();
    this.stream = follow('/v1/events/stream', {
      open: () => {
        this.live = true;
        this.error = '';
        void this.reload();
      },
      event: (name, data) => this.apply(name, data),
      error: (e, final) => {
        this.live = false;
        if (final) this.error = errorText(e);
      },
    });
  }

  stop(): void {
    this.stream?.stop();
    this.ctl?.abort();
    this.live = false;
  }

  /** Reads the whole list again. */
  async reload(): Promise<void> {
    this.ctl?.abort();
    const ctl = (this.ctl = new AbortController());
    try {
      this.items = await get<Capsule[]>('/v1/capsules', { signal: ctl.signal });
      this.loaded = true;
      this.error = '';
    } catch (e) {
      if (!isAbort(e)) this.error = errorText(e);
    }
  }

  find(id: string): Capsule | undefined {
    return this.items.find((c) => c.id === id);
  }

  /** Adds or replaces a capsule (newest first). */
  upsert(c: Capsule): void {
    const i = this.items.findIndex((x) => x.id === c.id);
    if (i < 0) {
      this.items = [c, ...this.items];
      return;
    }
    const next = this.items.slice();
    next[i] = c;
    this.items = next;
  }

  private apply(name: string, data: string): void {
    let ev: LifecycleEvent;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    if (ev.resource?.type !== 'capsule' || name === 'connected') return;
    if (ev.sandbox) {
      this.upsert(ev.sandbox);
      return;
    }
    // A frame too large for NOTIFY comes without the capsule: read it.
    const id = ev.resource.id;
    get<Capsule>(`/v1/capsules/${encodeURIComponent(id)}`).then(
      (c) => this.upsert(c),
      () => {
        this.items = this.items.filter((c) => c.id !== id);
      },
    );
  }
}

export const capsules = new CapsuleStore();
