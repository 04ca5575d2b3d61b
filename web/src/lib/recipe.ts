// Colouring a build recipe (control/src/recipe.rs describes the language):
// the instruction keyword of each logical line, its --flags, quoted
// strings, $VARIABLES, comments and line continuations. The server is the
// judge of what is valid; this only colours and locates.

export const KEYWORDS = ['RUN', 'START', 'USER', 'COPY', 'ENV', 'WORKDIR', 'HEALTHCHECK'] as const;

export type TokenKind = 'keyword' | 'unknown' | 'flag' | 'string' | 'variable' | 'comment' | 'continuation' | 'text';

export interface Token {
  kind: TokenKind;
  text: string;
  /** The keyword, for keyword tokens (one colour each). */
  keyword?: (typeof KEYWORDS)[number];
}

const VAR = /^\$(\{[^}]*\}?|[A-Za-z_][A-Za-z0-9_]*|\$)/;

/** Tokens of each physical line of `text`. */
export function highlight(text: string): Token[][] {
  const out: Token[][] = [];
  let continued = false;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const tokens: Token[] = [];
    const trimmed = line.trimStart();
    const indent = line.slice(0, line.length - trimmed.length);
    if (indent) tokens.push({ kind: 'text', text: indent });
    if (trimmed.startsWith('#')) {
      tokens.push({ kind: 'comment', text: trimmed });
      out.push(tokens);
      continue; // comments never start or end a continuation
    }
    let rest = trimmed;
    if (!continued && rest) {
      const word = /^\S+/.exec(rest)?.[0] ?? '';
      const upper = word.toUpperCase();
      const known = (KEYWORDS as readonly string[]).includes(upper);
      tokens.push(
        known
          ? { kind: 'keyword', text: word, keyword: upper as Token['keyword'] }
          : { kind: 'unknown', text: word },
      );
      rest = rest.slice(word.length);
    }
    const ends = /\\\s*$/.test(rest);
    const body = ends ? rest.replace(/\\\s*$/, '') : rest;
    tokens.push(...words(body));
    if (ends) tokens.push({ kind: 'continuation', text: rest.slice(body.length) });
    if (trimmed) continued = ends;
    out.push(tokens);
  }
  return out;
}

/** Flags, strings and variables in the arguments of a line. */
function words(s: string): Token[] {
  const out: Token[] = [];
  let plain = '';
  const flush = () => {
    if (plain) out.push({ kind: 'text', text: plain });
    plain = '';
  };
  let i = 0;
  let atWordStart = true;
  while (i < s.length) {
    const c = s[i];
    if (atWordStart && s.startsWith('--', i)) {
      const m = /^--\S*/.exec(s.slice(i))![0];
      flush();
      out.push({ kind: 'flag', text: m });
      i += m.length;
      atWordStart = false;
      continue;
    }
    if (c === '"' || c === "'") {
      const end = s.indexOf(c, i + 1);
      const stop = end < 0 ? s.length : end + 1;
      flush();
      out.push({ kind: 'string', text: s.slice(i, stop) });
      i = stop;
      atWordStart = false;
      continue;
    }
    if (c === '$') {
      const m = VAR.exec(s.slice(i));
      if (m) {
        flush();
        out.push({ kind: 'variable', text: m[0] });
        i += m[0].length;
        atWordStart = false;
        continue;
      }
    }
    plain += c;
    atWordStart = /\s/.test(c);
    i++;
  }
  flush();
  return out;
}

/** The offset in `text` of 1-based line and column (clamped). */
export function offsetOf(text: string, line: number, column: number): number {
  const lines = text.split('\n');
  let off = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length - 1); i++) off += lines[i].length + 1;
  const len = lines[Math.min(line, lines.length) - 1]?.length ?? 0;
  return off + Math.min(Math.max(column - 1, 0), len);
}
