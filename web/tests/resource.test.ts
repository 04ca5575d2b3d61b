import { describe, expect, it } from 'vitest';
import { ApiError } from '../src/lib/api';
import { Resource } from '../src/lib/resource.svelte';

describe('Resource', () => {
  it('a new load aborts the one before; an abort is no error', async () => {
    const signals: AbortSignal[] = [];
    let answer = 'first';
    const r = new Resource(
      (signal) =>
        new Promise<string>((resolve, reject) => {
          signals.push(signal);
          const value = answer;
          signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
          setTimeout(() => resolve(value), 20);
        }),
    );
    const first = r.load();
    answer = 'second';
    const second = r.load();
    await Promise.all([first, second]);
    expect(signals.map((s) => s.aborted)).toEqual([true, false]);
    expect(r.value).toBe('second');
    expect(r.error).toBe('');
    expect(r.loading).toBe(false);
  });

  it('shows a failure, and clears it on the next success', async () => {
    let fail = true;
    const r = new Resource(async () => {
      if (fail) throw new ApiError(403, 'forbidden', 'platform administrators only');
      return 1;
    });
    await r.load();
    expect(r.error).toBe('platform administrators only');
    fail = false;
    await r.load();
    expect([r.value, r.error]).toEqual([1, '']);
  });
});
