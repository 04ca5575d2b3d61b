import { fireEvent, render, screen } from '@testing-library/svelte';
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
  // 1,000 rows are timed in the real browser (tests/console); jsdom is
  // far slower than a browser at this, so a smaller list checks the rows.
  it('renders a row per capsule with its actions', () => {
    const items = capsules(200);
    const { container } = render(CapsuleTable, { items, onaction: () => {} });
    // (Role queries over 1,000 rows are slow in jsdom: plain selectors.)
    const rows = container.querySelectorAll('tbody tr');
    expect(rows).toHaveLength(200);
    const labels = (i: number) => [...rows[i].querySelectorAll('button')].map((b) => b.getAttribute('aria-label'));
    expect(labels(0)).toEqual(['Resume cap-00000', 'Snapshot cap-00000', 'Destroy cap-00000']);
    expect(labels(1)).toEqual(['Pause cap-00001', 'Snapshot cap-00001', 'Destroy cap-00001']);
    expect(rows[199].querySelector('a')?.getAttribute('href')).toBe('/capsules/cap-00199');
  });
});
