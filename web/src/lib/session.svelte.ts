// The signed-in user: the session token (kept in localStorage so a reload
// stays signed in), renewed before it expires through /v1/auth/refresh, the
// user's profile and teams, team switching and sign-out.

import { ApiError, get, post, setAuthHooks } from './api';
import type { AuthResponse, Me, Team } from './types';

const KEY = 'warren.session';
/** Renew this long before expiry at the latest. */
const MARGIN_S = 60;

/** Seconds since the epoch at which a JWT expires (null when unreadable). */
export function tokenExpiry(token: string): { iat: number; exp: number } | null {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    return typeof claims.exp === 'number' ? { iat: claims.iat ?? claims.exp, exp: claims.exp } : null;
  } catch {
    return null;
  }
}

/** When to renew a session valid from `iat` to `exp` (seconds): at 3/4 of its life. */
export function renewAt(iat: number, exp: number): number {
  return Math.min(iat + ((exp - iat) * 3) / 4, exp - MARGIN_S);
}

class Session {
  token = $state<string | null>(null);
  me = $state<Me | null>(null);
  teams = $state<Team[]>([]);
  /** Why the user was signed out, shown on the sign-in page. */
  notice = $state('');
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    setAuthHooks({
      token: () => this.token,
      expired: () => this.signOut('Your session ended. Please sign in again.'),
    });
    addEventListener('storage', (e) => {
      if (e.key !== KEY) return;
      if (!e.newValue) this.signOut();
      else if (e.newValue !== this.token) void this.adopt(e.newValue);
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.schedule();
    });
  }

  get team(): Team | undefined {
    return this.teams.find((t) => t.id === this.me?.team_id);
  }

  /** Picks up the stored session, if it is still valid. */
  async restore(): Promise<void> {
    const stored = localStorage.getItem(KEY);
    if (!stored) return;
    const exp = tokenExpiry(stored);
    if (!exp || exp.exp * 1000 <= Date.now()) {
      localStorage.removeItem(KEY);
      return;
    }
    try {
      await this.adopt(stored);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) throw e;
    }
  }

  async signIn(email: string, password: string): Promise<void> {
    const res = await post<AuthResponse>('/v1/auth/login', { email, password });
    this.notice = '';
    await this.adopt(res.token);
  }

  async switchTeam(teamId: string): Promise<void> {
    const res = await post<AuthResponse>('/v1/auth/switch-team', { team_id: teamId });
    await this.adopt(res.token);
  }

  /** Exchanges the session for a fresh one. */
  async refresh(): Promise<void> {
    try {
      const res = await post<AuthResponse>('/v1/auth/refresh');
      this.store(res.token);
    } catch (e) {
      // A refused session signs out (through the 401 hook); anything else
      // (network down) tries again shortly while the token lasts.
      if (!(e instanceof ApiError && e.status === 401)) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => void this.refresh(), 15_000);
      }
    }
  }

  signOut(notice = ''): void {
    clearTimeout(this.timer);
    localStorage.removeItem(KEY);
    this.token = null;
    this.me = null;
    this.teams = [];
    this.notice = notice;
  }

  private async adopt(token: string): Promise<void> {
    this.store(token);
    const [me, teams] = await Promise.all([get<Me>('/v1/me'), get<Team[]>('/v1/teams')]);
    this.me = me;
    this.teams = teams;
  }

  private store(token: string): void {
    this.token = token;
    localStorage.setItem(KEY, token);
    this.schedule();
  }

  private due(): void {
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (exp && renewAt(exp.iat, exp.exp) > Date.now() / 1000 + 1) this.schedule();
    else void this.refresh();
  }

  private schedule(): void {
    clearTimeout(this.timer);
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (!exp) return;
    const now = Date.now() / 1000;
    if (exp.exp <= now) {
      this.signOut('Your session expired. Please sign in again.');
      return;
    }
    const wait = Math.max(0, renewAt(exp.iat, exp.exp) - now);
    // setTimeout holds at most 2^31-1 ms; a longer wait is re-planned then.
    this.timer = setTimeout(() => this.due(), Math.min(wait * 1000, 2 ** 31 - 1));
  }
}

export const session = new Session();
