// The file browser with the REST API mocked (fetch): a file read that is
// still running when the user opens another one is aborted, and the abort
// is never shown as an error.
import { fireEvent, render, screen, waitFor } from '@testing-library/svelte';
import { afterEach, describe, expect, it, vi } from 'vitest';
import Files from '../src/pages/capsule/Files.svelte';
import type { Capsule, FileEntry } from '../src/lib/types';

const entry = (name: string, size = 10): FileEntry => ({
  name,
  path: `/home/user/${name}`,
  type: 'file',
  size,
  mode: 0o644,
  permissions: '-rw-r--r--',
  owner: 'user',
  group: 'user',
  modified_at: 1_700_000_000,
  symlink_target: null,
});

const capsule = { id: 'cap-1', status: 'running' } as Capsule;

afterEach(() => vi.unstubAllGlobals());

describe('Files (API mocked)', () => {
  it('aborts the first read when another file is opened', async () => {
    const reads: { path: string; signal: AbortSignal }[] = [];
    vi.stubGlobal(
      'fetch',
      vi.fn(async (url: string, init: RequestInit) => {
        const body = JSON.parse(String(init.body));
        if (url.endsWith('/files/list')) {
          return Response.json({ entries: [entry('slow.txt'), entry('fast.txt'), entry('huge.bin', 50 << 20)] });
        }
        const signal = init.signal as AbortSignal;
        reads.push({ path: body.path, signal });
        if (body.path.endsWith('slow.txt')) {
          return new Promise((_, reject) =>
            signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
          );
        }
        return new Response('contents of fast');
      }),
    );
    render(Files, { capsule });
    await fireEvent.click(await screen.findByRole('button', { name: 'slow.txt' }));
    await fireEvent.click(screen.getByRole('button', { name: 'fast.txt' }));
    expect(await screen.findByText('contents of fast')).toBeTruthy();
    expect(reads.map((r) => [r.path, r.signal.aborted])).toEqual([
      ['/home/user/slow.txt', true],
      ['/home/user/fast.txt', false],
    ]);
    expect(screen.queryByRole('alert')).toBeNull();
    // The listing told the absolute path of `~`.
    expect(screen.getByRole('button', { name: 'user' }).getAttribute('aria-current')).toBe('location');

    // Too large for the viewer: refused without reading it.
    await fireEvent.click(screen.getByRole('button', { name: 'huge.bin' }));
    expect(await screen.findByText(/viewer shows files up to 1 MiB/)).toBeTruthy();
    expect(reads).toHaveLength(2);
  });

  it('aborts a read still running when the page goes away', async () => {
    let signal: AbortSignal | undefined;
    vi.stubGlobal(
      'fetch',
      vi.fn(async (url: string, init: RequestInit) => {
        if (url.endsWith('/files/list')) return Response.json({ entries: [entry('slow.txt')] });
        signal = init.signal as AbortSignal;
        return new Promise(() => {});
      }),
    );
    const { unmount } = render(Files, { capsule });
    await fireEvent.click(await screen.findByRole('button', { name: 'slow.txt' }));
    await waitFor(() => expect(signal).toBeDefined());
    expect(signal?.aborted).toBe(false);
    unmount();
    expect(signal?.aborted).toBe(true);
  });
});
