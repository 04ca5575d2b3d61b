// Files of a capsule through the REST API (control/src/api/files.rs).

import { post, send, upload, type UploadOptions } from './api';
import type { FileEntry } from './types';

/** Largest file the viewer shows; bigger ones are offered as a download. */
export const VIEW_LIMIT = 1 << 20;

const base = (id: string) => `/v1/capsules/${encodeURIComponent(id)}/files`;

export async function listDir(id: string, path: string, signal?: AbortSignal): Promise<FileEntry[]> {
  const res = await post<{ entries: FileEntry[] }>(`${base(id)}/list`, { path }, { signal });
  return res.entries.sort((a, b) => {
    const dirs = Number(b.type === 'directory') - Number(a.type === 'directory');
    return dirs || a.name.localeCompare(b.name);
  });
}

/** A file's bytes; aborts with `signal`. */
export async function readFile(id: string, path: string, signal?: AbortSignal): Promise<Uint8Array> {
  const res = await send('POST', `${base(id)}/read`, { path }, { signal });
  return new Uint8Array(await res.arrayBuffer());
}

/** Text for the viewer, or null for a binary file (a NUL in its first 8 KiB). */
export function asText(data: Uint8Array): string | null {
  if (data.subarray(0, 8192).includes(0)) return null;
  return new TextDecoder().decode(data);
}

export function uploadFile(id: string, path: string, file: File, opts: UploadOptions): Promise<void> {
  const form = new FormData();
  form.append('file', file, file.name);
  return upload<void>(`${base(id)}/stream/write`, form, { ...opts, query: { path } });
}

export const makeDir = (id: string, path: string) => post<unknown>(`${base(id)}/mkdir`, { path });
export const removePath = (id: string, path: string) => post<void>(`${base(id)}/remove`, { path });
export const renamePath = (id: string, from: string, to: string) => post<unknown>(`${base(id)}/rename`, { from, to });

/** Saves bytes under `name` through the browser's download. */
export function saveAs(data: Uint8Array, name: string): void {
  const href = URL.createObjectURL(new Blob([data as BlobPart]));
  const a = Object.assign(document.createElement('a'), { href, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}
