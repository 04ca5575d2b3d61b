import { describe, expect, it } from 'vitest';
import { CapsuleStore } from '../src/lib/capsules.svelte';
import type { Capsule } from '../src/lib/types';

const cap = (id: string, status: Capsule['status']) => ({ id, status }) as Capsule;

describe('CapsuleStore', () => {
  it('replaces a known capsule in place and puts a new one first', () => {
    const s = new CapsuleStore();
    s.upsert(cap('a', 'starting'));
    s.upsert(cap('b', 'running'));
    const before = s.items;
    s.upsert(cap('a', 'running'));
    expect(s.items.map((c) => [c.id, c.status])).toEqual([
      ['b', 'running'],
      ['a', 'running'],
    ]);
    expect(s.items).not.toBe(before); // a new list, so the page sees the change
    expect(s.find('a')?.status).toBe('running');
  });
});
