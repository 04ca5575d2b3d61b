// The REST client: JSON in and out, the session's bearer token on every
// call, `{"error":{"code","message"}}` turned into a typed ApiError, and an
// AbortSignal on every call so a page that goes away cancels what it asked.

import type { RecipeError } from './types';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** A recipe's errors (400 on a build). */
    readonly recipeErrors: RecipeError[] = [],
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** True for a request cancelled by its AbortController: never shown as an error. */
export function isAbort(e: unknown): boolean {
  return (
    (e instanceof DOMException && e.name === 'AbortError') ||
    (e instanceof Error && e.name === 'AbortError')
  );
}

/** Message to show for a failure (empty for an abort). */
export function errorText(e: unknown): string {
  if (isAbort(e)) return '';
  if (e instanceof Error) return e.message;
  return String(e);
}

interface AuthHooks {
  token(): string | null;
  /** A session token was refused (expired, revoked, team left). */
  expired(): void;
}

let hooks: AuthHooks = { token: () => null, expired: () => {} };

export function setAuthHooks(h: AuthHooks): void {
  hooks = h;
}

export function authHeader(): Record<string, string> {
  const t = hooks.token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

export interface RequestOptions {
  signal?: AbortSignal;
  /** Query parameters; undefined and empty values are left out. */
  query?: Record<string, string | number | boolean | undefined | null>;
}

export function url(path: string, query?: RequestOptions['query']): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/** Reads an error response into an ApiError. */
export async function toError(res: Response): Promise<ApiError> {
  let code = 'http_error';
  let message = `${res.status} ${res.statusText}`;
  let recipe: RecipeError[] = [];
  try {
    const body = await res.json();
    if (body?.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
      recipe = Array.isArray(body.error.errors) ? body.error.errors : [];
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message, recipe);
}

/** A fetch with the session's credentials; errors become ApiError. */
export async function send(
  method: string,
  path: string,
  body?: unknown,
  opts: RequestOptions = {},
): Promise<Response> {
  const headers: Record<string, string> = { ...authHeader() };
  let payload: BodyInit | undefined;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const res = await fetch(url(path, opts.query), {
    method,
    headers,
    body: payload,
    signal: opts.signal,
  });
  if (!res.ok) {
    const err = await toError(res);
    if (res.status === 401 && headers.Authorization) hooks.expired();
    throw err;
  }
  return res;
}

/** A JSON call; `undefined` for an empty answer (204). */
export async function api<T>(
  method: string,
  path: string,
  body?: unknown,
  opts: RequestOptions = {},
): Promise<T> {
  const res = await send(method, path, body, opts);
  if (res.status === 204 || res.headers.get('content-length') === '0') {
    return undefined as T;
  }
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const get = <T>(path: string, opts?: RequestOptions) => api<T>('GET', path, undefined, opts);
export const post = <T>(path: string, body?: unknown, opts?: RequestOptions) =>
  api<T>('POST', path, body, opts);
export const patch = <T>(path: string, body?: unknown, opts?: RequestOptions) =>
  api<T>('PATCH', path, body, opts);
export const del = <T>(path: string, opts?: RequestOptions) => api<T>('DELETE', path, undefined, opts);

/** The WebSocket URL of an API path on this origin. */
export function wsUrl(path: string): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

export interface UploadOptions extends RequestOptions {
  /** Bytes sent so far and in all (request body). */
  progress?(sent: number, total: number): void;
}

/**
 * A multipart upload with progress (fetch reports none for request
 * bodies): resolves with the JSON answer, rejects with ApiError, or with an
 * AbortError when `signal` fires.
 */
export function upload<T>(path: string, form: FormData, opts: UploadOptions = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const abort = () => xhr.abort();
    xhr.open('POST', url(path, opts.query));
    for (const [k, v] of Object.entries(authHeader())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => opts.progress?.(e.loaded, e.total);
    xhr.onerror = () => reject(new Error('the upload failed: network error'));
    xhr.onabort = () => reject(new DOMException('upload cancelled', 'AbortError'));
    xhr.onloadend = () => opts.signal?.removeEventListener('abort', abort);
    xhr.onload = () => {
      const res = new Response(xhr.status === 204 ? null : xhr.responseText, {
        status: xhr.status,
        statusText: xhr.statusText,
      });
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve((xhr.responseText ? JSON.parse(xhr.responseText) : undefined) as T);
        return;
      }
      if (xhr.status === 401) hooks.expired();
      void toError(res).then(reject);
    };
    if (opts.signal?.aborted) return reject(new DOMException('upload cancelled', 'AbortError'));
    opts.signal?.addEventListener('abort', abort);
    xhr.send(form);
  });
}
