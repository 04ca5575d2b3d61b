// Template builds (control/src/api/builds.rs).

import { upload, type UploadOptions } from './api';
import type { Build } from './types';

export interface BuildForm {
  name: string;
  base?: string;
  recipe: string;
  overwrite: boolean;
  vcpus?: number;
  memory_mb?: number;
  archive?: File | null;
}

/** Archives of builds queued from this page, so a rebuild can reuse them. */
export const archives = new Map<string, File>();

/** Queues a build (multipart: the fields, and the archive COPY reads). */
export async function submitBuild(form: BuildForm, opts: UploadOptions = {}): Promise<Build> {
  const body = new FormData();
  body.append('name', form.name);
  if (form.base) body.append('base', form.base);
  body.append('recipe', form.recipe);
  body.append('overwrite', String(form.overwrite));
  if (form.vcpus) body.append('vcpus', String(form.vcpus));
  if (form.memory_mb) body.append('memory_mb', String(form.memory_mb));
  if (form.archive) body.append('archive', form.archive, form.archive.name);
  const build = await upload<Build>('/v1/admin/builds', body, opts);
  if (form.archive) archives.set(build.id, form.archive);
  return build;
}

export const terminal = (s: Build['status']) => s === 'succeeded' || s === 'failed' || s === 'cancelled';
