// A value read from the API for a page: loading again aborts the read
// before, the page going away aborts it, and an abort is never an error.

import { errorText, isAbort } from './api';

export class Resource<T> {
  value = $state<T | null>(null);
  error = $state('');
  loading = $state(false);
  private ctl: AbortController | undefined;

  constructor(private readonly fetch: (signal: AbortSignal) => Promise<T>) {}

  async load(): Promise<void> {
    this.ctl?.abort();
    const ctl = (this.ctl = new AbortController());
    this.loading = true;
    try {
      this.value = await this.fetch(ctl.signal);
      this.error = '';
    } catch (e) {
      if (!isAbort(e)) this.error = errorText(e);
    } finally {
      if (this.ctl === ctl) this.loading = false;
    }
  }

  abort(): void {
    this.ctl?.abort();
  }

  /** Loads now and aborts when the calling component goes away. */
  follow(): void {
    $effect(() => {
      void this.load();
      return () => this.abort();
    });
  }
}
