// Capsule lifecycle calls; answers update the live list at once (the
// event stream confirms them a moment later).

import { del, post } from './api';
import { capsules } from './capsules.svelte';
import type { Capsule, Template } from './types';

const path = (id: string) => `/v1/capsules/${encodeURIComponent(id)}`;

export interface CreateSpec {
  template?: string;
  vcpus?: number;
  memory_mb?: number;
  timeout_sec?: number;
  metadata?: Record<string, string>;
}

export async function createCapsule(spec: CreateSpec): Promise<Capsule> {
  const c = await post<Capsule>('/v1/capsules', spec);
  capsules.upsert(c);
  return c;
}

export async function pauseCapsule(id: string): Promise<void> {
  capsules.upsert(await post<Capsule>(`${path(id)}/pause`));
}

export async function resumeCapsule(id: string): Promise<void> {
  capsules.upsert(await post<Capsule>(`${path(id)}/resume`));
}

export async function destroyCapsule(id: string): Promise<void> {
  await del(path(id));
}

export async function snapshotCapsule(id: string, name: string): Promise<Template> {
  return post<Template>('/v1/snapshots', { sandbox_id: id, name: name || undefined });
}

export const canPause = (c: Capsule) => c.status === 'running';
export const canResume = (c: Capsule) => c.status === 'paused';
export const isGone = (c: Capsule) => c.status === 'stopped' || c.status === 'error';
