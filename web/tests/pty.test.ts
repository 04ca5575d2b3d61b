// The terminal session's protocol with a stand-in WebSocket (no server
// here): start, tag, reconnect by tag after a drop, exit.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PtySession, type PtyState } from '../src/lib/pty';

class FakeSocket {
  static all: FakeSocket[] = [];
  readyState = 0;
  binaryType = 'blob';
  sent: unknown[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: unknown }) => void) | null = null;
  onclose: (() => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(d: unknown) {
    this.sent.push(typeof d === 'string' ? JSON.parse(d) : new TextDecoder().decode(d as Uint8Array));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  recv(v: unknown) {
    this.onmessage?.({ data: typeof v === 'string' ? v : JSON.stringify(v) });
  }
  drop() {
    this.readyState = 3;
    this.onclose?.();
  }
}

function session(tag: string | null) {
  const states: PtyState[] = [];
  const tags: (string | null)[] = [];
  const out: string[] = [];
  const s = new PtySession(
    'cap-1',
    tag,
    { cols: 100, rows: 30 },
    {
      output: (d) => out.push(new TextDecoder().decode(d)),
      state: (st) => states.push(st),
      tag: (t) => tags.push(t),
    },
    { token: () => 'tok', socket: (url) => new FakeSocket(url) as unknown as WebSocket },
  );
  return { s, states, tags, out };
}

afterEach(() => {
  FakeSocket.all = [];
  vi.useRealTimers();
});

describe('PtySession (stand-in socket)', () => {
  it('authenticates, starts a shell and learns its tag', () => {
    const { s, states, tags } = session(null);
    const ws = FakeSocket.all[0];
    expect(ws.url).toMatch(/^ws:\/\/.*\/v1\/capsules\/cap-1\/pty$/);
    ws.open();
    expect(ws.sent).toEqual([
      { type: 'auth', token: 'tok' },
      { type: 'start', cols: 100, rows: 30 },
    ]);
    ws.recv({ type: 'started', tag: 'pty-1', pid: 7 });
    expect(tags).toEqual(['pty-1']);
    expect(states.at(-1)).toBe('open');
    s.input('ls\r');
    expect(ws.sent.at(-1)).toBe('ls\r');
    ws.recv({ type: 'ping' });
    expect(ws.sent.at(-1)).toEqual({ type: 'pong' });
    s.close();
  });

  it('reconnects to the same shell by tag after a drop', () => {
    vi.useFakeTimers();
    const { s, states } = session(null);
    const first = FakeSocket.all[0];
    first.open();
    first.recv({ type: 'started', tag: 'pty-9', pid: 7 });
    first.drop();
    expect(states.at(-1)).toBe('reconnecting');
    vi.advanceTimersByTime(300);
    const second = FakeSocket.all[1];
    second.open();
    expect(second.sent[1]).toEqual({ type: 'connect', tag: 'pty-9' });
    second.recv({ type: 'started', tag: 'pty-9', pid: 7 });
    expect(states.at(-1)).toBe('open');
    expect(second.sent.at(-1)).toEqual({ type: 'resize', cols: 100, rows: 30 });
    s.close();
  });

  it('forgets the tag when the shell exits or is gone', () => {
    const a = session('pty-old');
    const ws = FakeSocket.all[0];
    ws.open();
    expect(ws.sent[1]).toEqual({ type: 'connect', tag: 'pty-old' });
    ws.recv({ type: 'error', data: 'no such process', code: 'not_found', fatal: true });
    expect(a.states.at(-1)).toBe('gone');
    expect(a.tags).toEqual([null]);
    expect(FakeSocket.all).toHaveLength(1);

    const b = session(null);
    const ws2 = FakeSocket.all[1];
    ws2.open();
    ws2.recv({ type: 'started', tag: 'pty-2', pid: 3 });
    ws2.recv({ type: 'exit', exit_code: 0 });
    ws2.drop();
    expect(b.states.at(-1)).toBe('exited');
    expect(b.tags).toEqual(['pty-2', null]);
    expect(FakeSocket.all).toHaveLength(2);
  });
});
