// One terminal session over `/v1/capsules/{id}/pty` (control/src/api/pty.rs
// describes the messages). The shell outlives the socket: after a network
// drop, or a page reload that kept the tag, the session connects again by
// tag and the same shell carries on.

import { wsUrl } from './api';

export type PtyState = 'connecting' | 'open' | 'reconnecting' | 'exited' | 'gone' | 'failed';

export interface PtyEvents {
  output(data: Uint8Array): void;
  state(state: PtyState, detail?: string): void;
  /** The shell's tag, once the server named it (null: forget it). */
  tag(tag: string | null): void;
}

export interface PtyOptions {
  token(): string | null;
  /** Makes the socket (tests pass a stand-in). */
  socket?(url: string): WebSocket;
}

const MAX_DELAY_MS = 10_000;
const encoder = new TextEncoder();

export class PtySession {
  private ws: WebSocket | null = null;
  private tagName: string | null;
  private size: { cols: number; rows: number };
  private closed = false;
  private delay = 250;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private current: PtyState = 'connecting';
  private readonly onOnline = () => this.retryNow();

  constructor(
    private readonly capsuleId: string,
    tag: string | null,
    size: { cols: number; rows: number },
    private readonly ev: PtyEvents,
    private readonly opts: PtyOptions,
  ) {
    this.tagName = tag;
    this.size = size;
    addEventListener('online', this.onOnline);
    this.open();
  }

  get tag(): string | null {
    return this.tagName;
  }

  /** Keystrokes or pasted text; dropped while disconnected. */
  input(data: string): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(encoder.encode(data));
  }

  resize(cols: number, rows: number): void {
    this.size = { cols, rows };
    this.sendJson({ type: 'resize', cols, rows });
  }

  /** Ends the shell. */
  kill(): void {
    this.sendJson({ type: 'kill' });
  }

  /** Leaves the shell running and stops reconnecting. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    removeEventListener('online', this.onOnline);
    this.ws?.close(1000);
    this.ws = null;
  }

  private sendJson(v: unknown): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(v));
  }

  private open(): void {
    this.setState(this.tagName ? 'reconnecting' : 'connecting');
    const url = wsUrl(`/v1/capsules/${encodeURIComponent(this.capsuleId)}/pty`);
    const ws = this.opts.socket ? this.opts.socket(url) : new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let ended = false;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'auth', token: this.opts.token() ?? '' }));
      ws.send(
        JSON.stringify(
          this.tagName
            ? { type: 'connect', tag: this.tagName }
            : { type: 'start', cols: this.size.cols, rows: this.size.rows },
        ),
      );
    };
    ws.onmessage = (m) => {
      if (m.data instanceof ArrayBuffer) {
        this.ev.output(new Uint8Array(m.data));
        return;
      }
      let msg: { type?: string; tag?: string; exit_code?: number; data?: string; code?: string; fatal?: boolean };
      try {
        msg = JSON.parse(String(m.data));
      } catch {
        return;
      }
      switch (msg.type) {
        case 'started':
          if (msg.tag && msg.tag !== this.tagName) {
            this.tagName = msg.tag;
            this.ev.tag(msg.tag);
          }
          this.opened();
          // A reconnected shell may have missed a resize.
          if (this.tagName) this.sendJson({ type: 'resize', ...this.size });
          break;
        case 'exit':
          ended = true;
          this.finish('exited', `exit code ${msg.exit_code ?? '?'}`);
          break;
        case 'ping':
          this.sendJson({ type: 'pong' });
          break;
        case 'error':
          if (!msg.fatal) break;
          ended = true;
          if (msg.code === 'not_found' && this.tagName) this.finish('gone', msg.data);
          else if (msg.code === 'unauthorized' || msg.code === 'invalid_state' || msg.code === 'invalid_request') {
            this.finish('failed', msg.data);
          } else {
            // The host or envd hiccupped: try again like after a drop.
            ended = false;
            this.setState('reconnecting', msg.data);
          }
          break;
      }
    };
    ws.onclose = () => {
      if (this.ws === ws) this.ws = null;
      if (this.closed || ended) return;
      this.setState('reconnecting');
      this.timer = setTimeout(() => this.open(), this.delay);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    };
  }

  private setState(state: PtyState, detail?: string): void {
    this.current = state;
    this.ev.state(state, detail);
  }

  private opened(): void {
    if (this.current === 'open') return;
    this.delay = 250;
    this.setState('open');
  }

  private finish(state: PtyState, detail?: string): void {
    this.closed = true;
    removeEventListener('online', this.onOnline);
    if (state !== 'failed') {
      this.tagName = null;
      this.ev.tag(null);
    }
    this.setState(state, detail);
    this.ws?.close(1000);
  }

  private retryNow(): void {
    if (this.closed || this.ws) return;
    clearTimeout(this.timer);
    this.delay = 250;
    this.open();
  }
}
