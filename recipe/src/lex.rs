//! Physical lines to logical ones: `#` comment lines and blank lines drop
//! out, a line ending in `\` continues on the next. Every character keeps
//! the line and column it came from, so errors point into the source.

use super::ParseError;

/// A character and where it is in the source (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ch {
    pub c: char,
    pub line: usize,
    pub col: usize,
}

/// The logical lines of `text`; an error when it ends inside a continuation.
pub fn logical_lines(text: &str) -> Result<Vec<Vec<Ch>>, ParseError> {
    let mut lines = Vec::new();
    let mut current: Vec<Ch> = Vec::new();
    let mut open_continuation: Option<(usize, usize)> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let chars: Vec<Ch> = raw
            .chars()
            .enumerate()
            .map(|(i, c)| Ch {
                c,
                line: index + 1,
                col: i + 1,
            })
            .collect();
        let first = chars.iter().position(|ch| !ch.c.is_whitespace());
        let Some(first) = first else {
            continue; // blank, also inside a continuation
        };
        if chars[first].c == '#' {
            continue; // a comment, also inside a continuation
        }
        let last = chars
            .iter()
            .rposition(|ch| !ch.c.is_whitespace())
            .unwrap_or(first);
        if chars[last].c == '\\' {
            current.extend_from_slice(&chars[..last]);
            open_continuation = Some((index + 1, last + 1));
        } else {
            current.extend_from_slice(&chars);
            lines.push(std::mem::take(&mut current));
            open_continuation = None;
        }
    }
    if let Some((line, column)) = open_continuation {
        return Err(ParseError {
            line,
            column,
            message: "the recipe ends inside a line continuation (a trailing `\\`)".into(),
        });
    }
    Ok(lines)
}

/// The text of `chars`.
pub fn text(chars: &[Ch]) -> String {
    chars.iter().map(|ch| ch.c).collect()
}

/// `chars` without leading and trailing whitespace.
pub fn trim(chars: &[Ch]) -> &[Ch] {
    let start = chars
        .iter()
        .position(|ch| !ch.c.is_whitespace())
        .unwrap_or(chars.len());
    let end = chars
        .iter()
        .rposition(|ch| !ch.c.is_whitespace())
        .map_or(start, |e| e + 1);
    &chars[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        logical_lines(text)
            .unwrap()
            .iter()
            .map(|l| super::text(l))
            .collect()
    }

    #[test]
    fn comments_blanks_and_continuations() {
        let src = "# a comment\n\nRUN a \\\n  # inside\n\n  b\\\n c\r\n  ENV X=1  \n";
        assert_eq!(lines(src), ["RUN a   b c", "  ENV X=1  "]);
    }

    #[test]
    fn positions_survive_continuations() {
        let l = &logical_lines("RUN a \\\n   bc").unwrap()[0];
        let b = l.iter().find(|ch| ch.c == 'b').unwrap();
        assert_eq!((b.line, b.col), (2, 4));
    }

    #[test]
    fn a_dangling_continuation_is_an_error() {
        let e = logical_lines("RUN a\nRUN b \\\n\n# c\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 7));
    }

    #[test]
    fn hash_inside_a_line_is_text() {
        assert_eq!(lines("RUN echo a # b"), ["RUN echo a # b"]);
    }
}
