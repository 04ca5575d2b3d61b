import { fireEvent, render, screen } from '@testing-library/svelte';
import { tick } from 'svelte';
import { describe, expect, it } from 'vitest';
import CapsuleTable from '../src/components/CapsuleTable.svelte';
import RecipeEditor from '../src/components/RecipeEditor.svelte';
import type { Capsule } from '../src/lib/types';

export function capsules(n: number): Capsule[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `cap-${String(i).padStart(5, '0')}`,
    status: i % 3 === 0 ? 'paused' : 'running',
    template: 'tiny',
    vcpus: 1,
    memory_mb: 512,
    timeout_sec: 300,
    disk_size_mb: 1024,
    created_at: new Date(Date.now() - i * 1000).toISOString(),
    last_updated: new Date().toISOString(),
    metadata: { n: String(i) },
  }));
}

describe('RecipeEditor', () => {
  it('colours keywords and shows errors at their line and column', async () => {
    const value = 'RUN echo hi\nUSRE app\nENV A=1';
    const { container } = render(RecipeEditor, {
      value,
      errors: [{ line: 2, column: 1, message: "unknown instruction 'USRE'" }],
    });
    expect(container.querySelector('.tok.keyword.run')?.textContent).toBe('RUN');
    expect(container.querySelector('.tok.keyword.env')?.textContent).toBe('ENV');
    expect(container.querySelector('.tok.unknown')?.textContent).toContain('U');
    const gutter = [...container.querySelectorAll('.gutter div')];
    expect(gutter.map((g) => g.classList.contains('err'))).toEqual([false, true, false]);
    expect(container.querySelector('.mark')?.textContent).toBe('U');
    const textarea = screen.getByRole('textbox') as HTMLTextAreaElement;
    expect(textarea.getAttribute('aria-invalid')).toBe('true');
    await fireEvent.click(screen.getByRole('button', { name: 'Line 2:1' }));
    expect(textarea.selectionStart).toBe(value.indexOf('USRE'));
  });
});

describe('CapsuleTable', () => {
  it('renders the rows near the viewport, each with its actions', async () => {
    const items = capsules(1000);
    const { container } = render(CapsuleTable, { items, onaction: () => {} });
    const rendered = () => [...container.querySelectorAll<HTMLElement>('tbody tr[data-capsule]')];
    expect(container.querySelector('table')?.getAttribute('aria-rowcount')).toBe('1001');
    const first = rendered();
    expect(first.length).toBeGreaterThan(10);
    expect(first.length).toBeLessThan(60);
    const labels = (tr: HTMLElement) => [...tr.querySelectorAll('button')].map((b) => b.getAttribute('aria-label'));
    expect(labels(first[0])).toEqual(['Resume cap-00000', 'Snapshot cap-00000', 'Destroy cap-00000']);
    expect(labels(first[1])).toEqual(['Pause cap-00001', 'Snapshot cap-00001', 'Destroy cap-00001']);
    const spacer = container.querySelector<HTMLElement>('tr.spacer td');
    expect(parseFloat(spacer?.style.height ?? '')).toBeGreaterThan((1000 - first.length - 1) * 40);

    // Scrolled down to row 500 (jsdom has no layout: the table reports it).
    const body = container.querySelector('tbody') as HTMLElement;
    body.getBoundingClientRect = () => ({ top: -500 * 43 }) as DOMRect;
    window.dispatchEvent(new Event('scroll'));
    await tick();
    const ids = rendered().map((tr) => tr.dataset.capsule);
    expect(ids).toContain('cap-00500');
    expect(ids).not.toContain('cap-00000');
    expect(rendered()[0].getAttribute('aria-rowindex')).toBe(String(Number(rendered()[0].dataset.index) + 2));
  });
});
