import { describe, expect, it } from 'vitest';
import { highlight, offsetOf } from '../src/lib/recipe';

const kinds = (line: ReturnType<typeof highlight>[number]) => line.map((t) => [t.kind, t.text]);

describe('recipe highlighting', () => {
  it('colours each instruction keyword, case-insensitively', () => {
    const lines = highlight('run echo hi\nSTART srv\nUSER app\nCOPY a b\nENV A=1\nWORKDIR /x\nHEALTHCHECK curl x');
    expect(lines.map((l) => l[0].keyword)).toEqual(['RUN', 'START', 'USER', 'COPY', 'ENV', 'WORKDIR', 'HEALTHCHECK']);
    expect(lines[0][0]).toMatchObject({ kind: 'keyword', text: 'run' });
  });

  it('marks unknown instructions, flags, strings, variables and comments', () => {
    const [bad, run, comment] = highlight('FROM debian\nRUN --timeout=10m echo "$HOME" ${X:-y} \'lit\'\n  # note');
    expect(bad[0]).toMatchObject({ kind: 'unknown', text: 'FROM' });
    expect(kinds(run)).toEqual([
      ['keyword', 'RUN'],
      ['text', ' '],
      ['flag', '--timeout=10m'],
      ['text', ' echo '],
      ['string', '"$HOME"'],
      ['text', ' '],
      ['variable', '${X:-y}'],
      ['text', ' '],
      ['string', "'lit'"],
    ]);
    expect(kinds(comment)).toEqual([
      ['text', '  '],
      ['comment', '# note'],
    ]);
  });

  it('does not take a continued line for an instruction', () => {
    const lines = highlight('RUN apt-get update \\\n    # a comment inside\n    && apt-get install -y curl\nUSER app');
    expect(lines[0].at(-1)).toMatchObject({ kind: 'continuation' });
    expect(lines[1].map((t) => t.kind)).toEqual(['text', 'comment']);
    expect(lines[2].some((t) => t.kind === 'keyword' || t.kind === 'unknown')).toBe(false);
    expect(lines[3][0]).toMatchObject({ kind: 'keyword', keyword: 'USER' });
  });

  it('keeps every character, so the colours line up with the text', () => {
    const text = 'ENV A=$B \\\n  C="d e"\n\nRUN x';
    expect(highlight(text).map((l) => l.map((t) => t.text).join('')).join('\n')).toBe(text);
  });

  it('finds a line and column in the text', () => {
    const text = 'RUN a\nUSRE b\nRUN c';
    expect(text.slice(offsetOf(text, 2, 1), offsetOf(text, 2, 1) + 4)).toBe('USRE');
    expect(offsetOf(text, 3, 99)).toBe(text.length);
    expect(offsetOf(text, 99, 1)).toBe(text.lastIndexOf('RUN'));
  });
});
