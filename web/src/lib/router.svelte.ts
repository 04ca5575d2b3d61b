// A history-API router: the current path as reactive state, `go()` to move,
// and plain `<a href>` links intercepted so they stay in the page.

class Router {
  path = $state(location.pathname);
  search = $state(location.search);

  constructor() {
    addEventListener('popstate', () => this.sync());
  }

  private sync() {
    this.path = location.pathname;
    this.search = location.search;
  }

  go(to: string, opts: { replace?: boolean } = {}) {
    if (to === location.pathname + location.search) return;
    if (opts.replace) history.replaceState(null, '', to);
    else history.pushState(null, '', to);
    this.sync();
  }

  /** Keeps same-origin link clicks in the page (not /docs or the API). */
  intercept(e: MouseEvent) {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element | null)?.closest?.('a');
    if (!a || a.target || a.hasAttribute('download') || a.origin !== location.origin) return;
    if (isServerPath(a.pathname)) return;
    e.preventDefault();
    this.go(a.pathname + a.search);
  }
}

/** Paths the server answers itself (not console pages). */
export function isServerPath(path: string): boolean {
  return /^\/(v\d+|docs|openapi\.json|health)(\/|$)/.test(path);
}

/**
 * Matches a pattern such as `/capsules/:id/:tab?` (a trailing `?` makes a
 * parameter optional) against a path; the parameters, or null.
 */
export function match(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split('/').filter(Boolean);
  const got = path.split('/').filter(Boolean);
  const required = want.filter((w) => !w.endsWith('?')).length;
  if (got.length < required || got.length > want.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < got.length; i++) {
    let value: string;
    try {
      value = decodeURIComponent(got[i]);
    } catch {
      return null;
    }
    if (want[i].startsWith(':')) params[want[i].replace(/^:|\?$/g, '')] = value;
    else if (want[i] !== got[i]) return null;
  }
  return params;
}

export const router = new Router();
