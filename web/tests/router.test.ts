import { describe, expect, it } from 'vitest';
import { isServerPath, match } from '../src/lib/router.svelte';
import { crumbs, parentDir } from '../src/lib/format';
import { renewAt, tokenExpiry } from '../src/lib/session.svelte';

describe('routes', () => {
  it('match patterns with optional parameters', () => {
    expect(match('/capsules/:id/:tab?', '/capsules/c-1')).toEqual({ id: 'c-1' });
    expect(match('/capsules/:id/:tab?', '/capsules/c%2F1/files')).toEqual({ id: 'c/1', tab: 'files' });
    expect(match('/capsules/:id/:tab?', '/capsules')).toBeNull();
    expect(match('/capsules/:id/:tab?', '/capsules/a/b/c')).toBeNull();
    expect(match('/admin/builds/new', '/admin/builds/new')).toEqual({});
    expect(match('/keys', '/team')).toBeNull();
    expect(match('/capsules/:id', '/capsules/%E0%A4%A')).toBeNull();
  });

  it('leave the API and /docs to the server', () => {
    expect(isServerPath('/docs')).toBe(true);
    expect(isServerPath('/v1/capsules')).toBe(true);
    expect(isServerPath('/capsules')).toBe(false);
    expect(isServerPath('/docsy')).toBe(false);
  });

  it('split capsule paths', () => {
    expect(parentDir('/home/user/a.txt')).toBe('/home/user');
    expect(parentDir('/a')).toBe('/');
    expect(crumbs('/home/user').map((c) => c.path)).toEqual(['/', '/home', '/home/user']);
  });
});

describe('session tokens', () => {
  const jwt = (claims: object) =>
    `x.${btoa(JSON.stringify(claims)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')}.y`;

  it('read the expiry of a JWT', () => {
    expect(tokenExpiry(jwt({ iat: 100, exp: 21700, sub: 'u' }))).toEqual({ iat: 100, exp: 21700 });
    expect(tokenExpiry('garbage')).toBeNull();
    expect(tokenExpiry(jwt({ sub: 'no expiry' }))).toBeNull();
  });

  it('renew at three quarters of the lifetime, and at least a minute early', () => {
    expect(renewAt(0, 21600)).toBe(16200);
    expect(renewAt(0, 100)).toBe(40);
  });
});
