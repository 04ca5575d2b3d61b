//! Words of `ENV`, `COPY`, `USER` and `WORKDIR`: split on whitespace
//! outside quotes, then unquoted and expanded the way a Dockerfile does.
//!
//! - `'...'` is literal; `"..."` expands variables, `\"`, `\\` and `\$`
//!   are escapes inside it; outside quotes `\` escapes any character.
//! - `$V` and `${V}` are the value of V (empty when unset), `${V:-w}` is
//!   `w` when V is unset or empty, `${V:+w}` is `w` when it is set and not
//!   empty; `$$` is a literal `$`, as is a `$` before anything else.

use std::collections::BTreeMap;

use super::ParseError;
use super::lex::Ch;

fn error(at: &Ch, message: impl Into<String>) -> ParseError {
    ParseError {
        line: at.line,
        column: at.col,
        message: message.into(),
    }
}

/// Splits on whitespace outside quotes (backslash escapes kept for
/// [`expand`]); an unclosed quote is an error at the quote.
pub fn split(chars: &[Ch]) -> Result<Vec<&[Ch]>, ParseError> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut quote: Option<usize> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].c;
        match quote {
            Some(q) => {
                if c == chars[q].c {
                    quote = None;
                } else if c == '\\' && chars[q].c == '"' {
                    i += 1;
                }
            }
            None if c.is_whitespace() => {
                if let Some(s) = start.take() {
                    words.push(&chars[s..i]);
                }
            }
            None => {
                start.get_or_insert(i);
                match c {
                    '\'' | '"' => quote = Some(i),
                    '\\' => i += 1,
                    _ => {}
                }
            }
        }
        i += 1;
    }
    if let Some(q) = quote {
        return Err(error(
            &chars[q],
            format!("unterminated {} quote", chars[q].c),
        ));
    }
    if let Some(s) = start {
        words.push(&chars[s..]);
    }
    Ok(words)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Unquotes and expands one word (or any run of characters: whitespace in
/// it is kept).
pub fn expand(word: &[Ch], env: &BTreeMap<String, String>) -> Result<String, ParseError> {
    let mut out = String::new();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < word.len() {
        let c = word[i].c;
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('\''), _) => out.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => match word.get(i + 1) {
                Some(next) => {
                    out.push(next.c);
                    i += 1;
                }
                None => out.push('\\'),
            },
            (Some(_), '\\') => match word.get(i + 1).map(|n| n.c) {
                Some(n @ ('"' | '\\' | '$')) => {
                    out.push(n);
                    i += 1;
                }
                _ => out.push('\\'),
            },
            (_, '$') => {
                i = dollar(word, i, env, &mut out)?;
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// Expands the `$` at `word[at]` into `out`; returns the index after it.
fn dollar(
    word: &[Ch],
    at: usize,
    env: &BTreeMap<String, String>,
    out: &mut String,
) -> Result<usize, ParseError> {
    let lookup = |name: &str| env.get(name).cloned().unwrap_or_default();
    match word.get(at + 1).map(|n| n.c) {
        Some('$') => {
            out.push('$');
            Ok(at + 2)
        }
        Some('{') => {
            // Find the matching brace (defaults may nest `${...}`).
            let mut depth = 0;
            let mut close = None;
            for (j, ch) in word.iter().enumerate().skip(at + 1) {
                match ch.c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let close = close.ok_or_else(|| error(&word[at], "unterminated ${...}"))?;
            let inner = &word[at + 2..close];
            let name_len = inner.iter().take_while(|ch| is_name(ch.c)).count();
            let name: String = inner[..name_len].iter().map(|ch| ch.c).collect();
            if name.is_empty() || !is_name_start(inner[0].c) {
                return Err(error(
                    &word[at],
                    "${...} needs a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                ));
            }
            let rest = &inner[name_len..];
            let value = lookup(&name);
            match rest.first().map(|ch| ch.c) {
                None => out.push_str(&value),
                Some(':') if matches!(rest.get(1).map(|ch| ch.c), Some('-' | '+')) => {
                    let alternative = expand(&rest[2..], env)?;
                    let use_alternative = match rest[1].c {
                        '-' => value.is_empty(),
                        _ => !value.is_empty(),
                    };
                    if use_alternative {
                        out.push_str(&alternative);
                    } else if rest[1].c == '-' {
                        out.push_str(&value);
                    }
                }
                Some(_) => {
                    return Err(error(
                        &rest[0],
                        format!(
                            "unsupported modifier in ${{{name}...}}: use ${{{name}}}, ${{{name}:-default}} or ${{{name}:+alternative}}"
                        ),
                    ));
                }
            }
            Ok(close + 1)
        }
        Some(c) if is_name_start(c) => {
            let len = word[at + 1..].iter().take_while(|ch| is_name(ch.c)).count();
            let name: String = word[at + 1..at + 1 + len].iter().map(|ch| ch.c).collect();
            out.push_str(&lookup(&name));
            Ok(at + 1 + len)
        }
        _ => {
            out.push('$');
            Ok(at + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<Ch> {
        s.chars()
            .enumerate()
            .map(|(i, c)| Ch {
                c,
                line: 1,
                col: i + 1,
            })
            .collect()
    }

    fn env() -> BTreeMap<String, String> {
        [
            ("A".to_string(), "alpha".to_string()),
            ("EMPTY".to_string(), String::new()),
        ]
        .into()
    }

    fn x(s: &str) -> String {
        expand(&chars(s), &env()).unwrap()
    }

    #[test]
    fn variables() {
        assert_eq!(x("$A"), "alpha");
        assert_eq!(x("${A}x"), "alphax");
        assert_eq!(x("$Ax"), "", "the longest name is taken");
        assert_eq!(x("$UNSET-"), "-");
        assert_eq!(x("${UNSET:-d}"), "d");
        assert_eq!(x("${EMPTY:-d}"), "d");
        assert_eq!(x("${A:-d}"), "alpha");
        assert_eq!(x("${A:+set}"), "set");
        assert_eq!(x("${UNSET:+set}"), "");
        assert_eq!(x("${UNSET:-${A}}"), "alpha");
        assert_eq!(x("$$A"), "$A");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("cost: $5"), "cost: $5");
        assert_eq!(x("end$"), "end$");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A b'"), "$A b");
        assert_eq!(x("\"$A b\""), "alpha b");
        assert_eq!(x("\"q\\\"q\\$A\\n\""), "q\"q$A\\n");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(x("\"it's\""), "it's");
    }

    #[test]
    fn splitting() {
        let c = chars("a 'b c'  \"d \\\" e\" f\\ g");
        let words: Vec<String> = split(&c)
            .unwrap()
            .iter()
            .map(|w| w.iter().map(|ch| ch.c).collect())
            .collect();
        assert_eq!(words, ["a", "'b c'", "\"d \\\" e\"", "f\\ g"]);
        let e = split(&chars("a \"b")).unwrap_err();
        assert_eq!(e.column, 3);
    }

    #[test]
    fn bad_braces_point_at_the_dollar() {
        let e = expand(&chars("ab${A"), &env()).unwrap_err();
        assert_eq!(e.column, 3);
        let e = expand(&chars("${}"), &env()).unwrap_err();
        assert_eq!(e.column, 1);
        let e = expand(&chars("${A/x}"), &env()).unwrap_err();
        assert_eq!(e.column, 4);
        assert!(e.message.contains("modifier"));
    }
}
