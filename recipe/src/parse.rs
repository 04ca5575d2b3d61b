//! Recipe text to [`Recipe`]: one instruction per logical line, flags
//! (`--name=value`) before the arguments, every error with its line and
//! column (all of them, not just the first).

use std::collections::BTreeMap;
use std::time::Duration;

use super::lex::{self, Ch};
use super::{Command, Instruction, ParseError, ParseErrors, Recipe, Step, clean_relative, words};

const KEYWORDS: &str = "RUN, START, USER, COPY, ENV, WORKDIR, HEALTHCHECK";

/// Parses `text` with no ENV set beforehand.
pub fn parse(text: &str) -> Result<Recipe, ParseErrors> {
    parse_with_env(text, &BTreeMap::new())
}

/// Parses `text`; `env` is what `$V` expands to before the recipe's own
/// ENV steps (e.g. the base template's environment).
pub fn parse_with_env(text: &str, env: &BTreeMap<String, String>) -> Result<Recipe, ParseErrors> {
    let lines = lex::logical_lines(text).map_err(|e| ParseErrors { errors: vec![e] })?;
    let mut env = env.clone();
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    for line in &lines {
        match instruction(line, &env) {
            Ok(step) => {
                if let Instruction::Env { vars } = &step.instruction {
                    env.extend(vars.iter().cloned());
                }
                steps.push(step);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(Recipe { steps })
    } else {
        Err(ParseErrors { errors })
    }
}

fn error(at: &Ch, message: impl Into<String>) -> ParseError {
    ParseError {
        line: at.line,
        column: at.col,
        message: message.into(),
    }
}

/// One logical line (never empty: the lexer drops blank lines).
fn instruction(line: &[Ch], env: &BTreeMap<String, String>) -> Result<Step, ParseError> {
    let line = lex::trim(line);
    let keyword_len = line
        .iter()
        .position(|ch| ch.c.is_whitespace())
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(keyword_len);
    let at = keyword[0];
    let rest = lex::trim(rest);
    let upper = lex::text(keyword).to_ascii_uppercase();
    let instruction = match upper.as_str() {
        "RUN" => {
            let (flags, rest) = flags(rest, &["timeout"])?;
            Instruction::Run {
                timeout: flag_duration(&flags, "timeout")?,
                command: command(rest, &at, "RUN")?,
            }
        }
        "START" => {
            let (_, rest) = flags(rest, &[])?;
            Instruction::Start {
                command: command(rest, &at, "START")?,
            }
        }
        "HEALTHCHECK" => {
            let (flags, mut rest) =
                flags(rest, &["interval", "timeout", "start-period", "retries"])?;
            // Dockerfile's spelling, `HEALTHCHECK [OPTIONS] CMD command`.
            let first = rest.iter().take_while(|ch| !ch.c.is_whitespace()).count();
            if lex::text(&rest[..first]).eq_ignore_ascii_case("CMD") {
                rest = lex::trim(&rest[first..]);
            }
            Instruction::Healthcheck {
                interval: flag_duration(&flags, "interval")?,
                timeout: flag_duration(&flags, "timeout")?,
                start_period: flag_duration(&flags, "start-period")?,
                retries: match flags.iter().find(|f| f.name == "retries") {
                    None => None,
                    Some(f) => Some(f.value.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(
                        || {
                            error(
                                &f.at,
                                format!("--retries={} is not a positive whole number", f.value),
                            )
                        },
                    )?),
                },
                command: command(rest, &at, "HEALTHCHECK")?,
            }
        }
        "USER" => {
            let (_, rest) = flags(rest, &[])?;
            let [word] = single(rest, &at, "USER", "a user name")?;
            let name = words::expand(word, env)?;
            if !valid_user(&name) {
                return Err(error(
                    &word[0],
                    format!(
                        "{name:?} is not a user name: use 1-32 of [a-z0-9_-], starting with a letter or _"
                    ),
                ));
            }
            Instruction::User { name }
        }
        "WORKDIR" => {
            let (_, rest) = flags(rest, &[])?;
            let [word] = single(rest, &at, "WORKDIR", "a directory")?;
            let path = words::expand(word, env)?;
            if path.is_empty() || path.contains('\0') {
                return Err(error(&word[0], "WORKDIR needs a directory"));
            }
            Instruction::Workdir { path }
        }
        "ENV" => Instruction::Env {
            vars: env_vars(rest, &at, env)?,
        },
        "COPY" => copy(rest, &at, env)?,
        _ => {
            return Err(error(
                &at,
                format!(
                    "unknown instruction {:?} (expected one of {KEYWORDS})",
                    lex::text(keyword)
                ),
            ));
        }
    };
    Ok(Step {
        line: at.line,
        instruction,
    })
}

/// A `--name=value` flag.
#[derive(Debug)]
struct Flag {
    name: String,
    value: String,
    at: Ch,
}

/// The leading `--name=value` flags (only `allowed` names) and the rest.
fn flags<'a>(mut rest: &'a [Ch], allowed: &[&str]) -> Result<(Vec<Flag>, &'a [Ch]), ParseError> {
    let mut found: Vec<Flag> = Vec::new();
    while rest.len() > 2 && rest[0].c == '-' && rest[1].c == '-' {
        let len = rest
            .iter()
            .position(|ch| ch.c.is_whitespace())
            .unwrap_or(rest.len());
        let word = lex::text(&rest[2..len]);
        let at = rest[0];
        let (name, value) = word.split_once('=').unwrap_or((&word, ""));
        if !allowed.contains(&name) {
            let expected = if allowed.is_empty() {
                "this instruction takes no flags".to_owned()
            } else {
                format!(
                    "expected {}",
                    allowed
                        .iter()
                        .map(|a| format!("--{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(error(&at, format!("unknown flag --{name} ({expected})")));
        }
        if value.is_empty() {
            return Err(error(
                &at,
                format!("flag --{name} needs a value: --{name}=..."),
            ));
        }
        if found.iter().any(|f| f.name == name) {
            return Err(error(&at, format!("flag --{name} is given twice")));
        }
        found.push(Flag {
            name: name.to_owned(),
            value: value.to_owned(),
            at,
        });
        rest = lex::trim(&rest[len..]);
    }
    Ok((found, rest))
}

fn flag_duration(flags: &[Flag], name: &str) -> Result<Option<Duration>, ParseError> {
    match flags.iter().find(|f| f.name == name) {
        None => Ok(None),
        Some(f) => parse_duration(&f.value)
            .map(Some)
            .ok_or_else(|| {
                error(
                    &f.at,
                    format!(
                        "--{name}={} is not a positive duration (e.g. 30s, 5m, 1h30m, 500ms; a bare number is seconds)",
                        f.value
                    ),
                )
            }),
    }
}

/// `1h30m`, `5m`, `30s`, `250ms`, or a bare number of seconds; must be > 0.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .ok()
            .map(Duration::from_secs)
            .filter(|d| !d.is_zero());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(unit)?;
        rest = &rest[unit_len..];
    }
    (!total.is_zero()).then_some(total)
}

/// A shell command or a JSON array; never empty.
fn command(rest: &[Ch], keyword: &Ch, name: &str) -> Result<Command, ParseError> {
    let text = lex::text(rest);
    if text.is_empty() {
        return Err(error(keyword, format!("{name} needs a command")));
    }
    if text.starts_with('[')
        && let Ok(argv) = serde_json::from_str::<Vec<String>>(&text)
    {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(error(&rest[0], format!("{name} needs a program to run")));
        }
        return Ok(Command::Exec(argv));
    }
    Ok(Command::Shell(text))
}

/// Exactly one word.
fn single<'a>(
    rest: &'a [Ch],
    keyword: &Ch,
    name: &str,
    what: &str,
) -> Result<[&'a [Ch]; 1], ParseError> {
    let words = words::split(rest)?;
    match words.as_slice() {
        [] => Err(error(keyword, format!("{name} needs {what}"))),
        [one] => Ok([one]),
        [_, extra, ..] => Err(error(&extra[0], format!("{name} takes only {what}"))),
    }
}

fn valid_user(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=32).contains(&name.len())
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `K=V K2="v 2"` or `K value with spaces`; values expanded against the
/// ENV from before this line.
fn env_vars(
    rest: &[Ch],
    keyword: &Ch,
    env: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ParseError> {
    let words = words::split(rest)?;
    let Some(first) = words.first() else {
        return Err(error(keyword, "ENV needs a variable: ENV NAME=value"));
    };
    let key_of = |word: &[Ch]| -> Result<(String, Option<usize>), ParseError> {
        let eq = word.iter().position(|ch| ch.c == '=');
        let key = lex::text(&word[..eq.unwrap_or(word.len())]);
        if !valid_env_name(&key) {
            return Err(error(
                &word[0],
                format!("{key:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            ));
        }
        Ok((key, eq))
    };
    if let (key, None) = key_of(first)? {
        // `ENV KEY the value`: everything after the key.
        let after = lex::trim(&rest[first.len()..]);
        if after.is_empty() {
            return Err(error(
                &first[0],
                format!("ENV {key} needs a value: ENV {key}=value"),
            ));
        }
        return Ok(vec![(key, words::expand(after, env)?)]);
    }
    let mut vars = Vec::new();
    for word in words {
        let (key, eq) = key_of(word)?;
        let Some(eq) = eq else {
            return Err(error(
                &word[0],
                format!("{key} has no value: write {key}=value"),
            ));
        };
        vars.push((key, words::expand(&word[eq + 1..], env)?));
    }
    Ok(vars)
}

fn copy(
    rest: &[Ch],
    keyword: &Ch,
    env: &BTreeMap<String, String>,
) -> Result<Instruction, ParseError> {
    let (_, rest) = flags(rest, &[])?;
    // Arguments with where they start (for errors).
    let args: Vec<(String, Ch)> = match serde_json::from_str::<Vec<String>>(&lex::text(rest)) {
        Ok(list) if rest.first().is_some_and(|ch| ch.c == '[') => {
            let at = rest[0];
            list.into_iter()
                .map(|s| {
                    let chars: Vec<Ch> = s.chars().map(|c| Ch { c, ..at }).collect();
                    Ok((words::expand(&chars, env)?, at))
                })
                .collect::<Result<_, ParseError>>()?
        }
        _ => words::split(rest)?
            .into_iter()
            .map(|w| Ok((words::expand(w, env)?, w[0])))
            .collect::<Result<_, ParseError>>()?,
    };
    let Some(((dest, dest_at), sources)) = args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(error(
            keyword,
            "COPY needs at least one source and a destination: COPY src... dst",
        ));
    };
    let mut clean = Vec::new();
    for (source, at) in sources {
        let parts = clean_relative(source).ok_or_else(|| {
            error(
                at,
                format!("COPY source {source:?} leaves the build archive"),
            )
        })?;
        clean.push(parts.join("/"));
    }
    if dest.is_empty() {
        return Err(error(dest_at, "COPY needs a destination"));
    }
    let many = clean.len() > 1 || clean.iter().any(|s| s.contains(['*', '?']));
    if many && !dest.ends_with('/') {
        return Err(error(
            dest_at,
            format!(
                "COPY with several sources (or a wildcard) needs a directory destination ending in /: {dest}/"
            ),
        ));
    }
    Ok(Instruction::Copy {
        sources: clean,
        dest: dest.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Instruction {
        let r = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(r.steps.len(), 1);
        r.steps.into_iter().next().unwrap().instruction
    }

    fn err(text: &str) -> ParseError {
        let e = parse(text).expect_err(text);
        e.errors[0].clone()
    }

    fn shell(s: &str) -> Command {
        Command::Shell(s.into())
    }

    #[test]
    fn every_keyword_in_any_case() {
        let text = "\
# build an app
run apt-get update
Run --timeout=10m make
START python -m http.server 8000
user app
COPY a.txt /srv/
env A=1
WorkDir /srv
healthcheck --interval=2s --timeout=1s --start-period=5s --retries=3 curl -f localhost:8000
";
        let r = parse(text).unwrap();
        let got: Vec<(usize, Instruction)> = r
            .steps
            .into_iter()
            .map(|s| (s.line, s.instruction))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    2,
                    Instruction::Run {
                        command: shell("apt-get update"),
                        timeout: None
                    }
                ),
                (
                    3,
                    Instruction::Run {
                        command: shell("make"),
                        timeout: Some(Duration::from_secs(600))
                    }
                ),
                (
                    4,
                    Instruction::Start {
                        command: shell("python -m http.server 8000")
                    }
                ),
                (5, Instruction::User { name: "app".into() }),
                (
                    6,
                    Instruction::Copy {
                        sources: vec!["a.txt".into()],
                        dest: "/srv/".into()
                    }
                ),
                (
                    7,
                    Instruction::Env {
                        vars: vec![("A".into(), "1".into())]
                    }
                ),
                (
                    8,
                    Instruction::Workdir {
                        path: "/srv".into()
                    }
                ),
                (
                    9,
                    Instruction::Healthcheck {
                        command: shell("curl -f localhost:8000"),
                        interval: Some(Duration::from_secs(2)),
                        timeout: Some(Duration::from_secs(1)),
                        start_period: Some(Duration::from_secs(5)),
                        retries: Some(3),
                    }
                ),
            ]
        );
    }

    #[test]
    fn continuations_keep_the_first_line_number() {
        let r =
            parse("\n\nRUN apt-get install -y \\\n    curl \\\n    # a comment\n    git\nUSER x")
                .unwrap();
        assert_eq!(r.steps[0].line, 3);
        assert_eq!(
            r.steps[0].instruction,
            Instruction::Run {
                command: shell("apt-get install -y     curl     git"),
                timeout: None
            }
        );
        assert_eq!(r.steps[1].line, 7);
    }

    #[test]
    fn exec_form_and_healthcheck_cmd() {
        assert_eq!(
            one(r#"START ["python3", "-m", "http.server"]"#),
            Instruction::Start {
                command: Command::Exec(vec!["python3".into(), "-m".into(), "http.server".into()])
            }
        );
        assert_eq!(
            one("RUN [not json"),
            Instruction::Run {
                command: shell("[not json"),
                timeout: None
            }
        );
        assert!(matches!(
            one("HEALTHCHECK CMD true"),
            Instruction::Healthcheck { command: Command::Shell(c), .. } if c == "true"
        ));
        assert_eq!(err("RUN []").column, 5);
    }

    #[test]
    fn env_forms_and_expansion() {
        let r = parse(
            "ENV A=1 B=\"two words\" C='$A'\n\
             ENV D=$A${B}x E=${NOPE:-dflt} F=$$A G=\\$A\n\
             ENV A=2 H=$A\n\
             ENV LEGACY the rest $A\n\
             WORKDIR /home/$A\n\
             USER ${U:-builder}\n\
             COPY $A.txt \"${B}/\"\n\
             RUN echo $A",
        )
        .unwrap();
        let ins: Vec<Instruction> = r.steps.into_iter().map(|s| s.instruction).collect();
        let vars = |i: usize| match &ins[i] {
            Instruction::Env { vars } => vars.clone(),
            other => panic!("{other:?}"),
        };
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            vars(0),
            pairs(&[("A", "1"), ("B", "two words"), ("C", "$A")])
        );
        assert_eq!(
            vars(1),
            pairs(&[
                ("D", "1two wordsx"),
                ("E", "dflt"),
                ("F", "$A"),
                ("G", "$A")
            ])
        );
        // Expansion sees the values from before the line.
        assert_eq!(vars(2), pairs(&[("A", "2"), ("H", "1")]));
        assert_eq!(vars(3), pairs(&[("LEGACY", "the rest 2")]));
        assert_eq!(
            ins[4],
            Instruction::Workdir {
                path: "/home/2".into()
            }
        );
        assert_eq!(
            ins[5],
            Instruction::User {
                name: "builder".into()
            }
        );
        assert_eq!(
            ins[6],
            Instruction::Copy {
                sources: vec!["2.txt".into()],
                dest: "two words/".into()
            }
        );
        assert_eq!(
            ins[7],
            Instruction::Run {
                command: shell("echo $A"),
                timeout: None
            },
            "RUN is the shell's to expand"
        );
    }

    #[test]
    fn base_environment_expands() {
        let base = [("HOME".to_string(), "/home/user".to_string())].into();
        let r = parse_with_env("WORKDIR $HOME/app", &base).unwrap();
        assert_eq!(
            r.steps[0].instruction,
            Instruction::Workdir {
                path: "/home/user/app".into()
            }
        );
    }

    #[test]
    fn copy_sources_are_cleaned_and_checked() {
        assert_eq!(
            one("COPY ./src/../lib/ a/./b.txt /dst/"),
            Instruction::Copy {
                sources: vec!["lib".into(), "a/b.txt".into()],
                dest: "/dst/".into()
            }
        );
        assert_eq!(
            one("COPY / app"),
            Instruction::Copy {
                sources: vec!["".into()],
                dest: "app".into()
            }
        );
        assert_eq!(
            one(r#"COPY ["a b.txt", "/d/"]"#),
            Instruction::Copy {
                sources: vec!["a b.txt".into()],
                dest: "/d/".into()
            }
        );
        let e = err("COPY ok ../../etc/passwd /x/");
        assert_eq!((e.line, e.column), (1, 9));
        assert!(e.message.contains("leaves the build archive"), "{e}");
        assert!(err("COPY a b c").message.contains("ending in /"));
        assert!(err("COPY *.py app").message.contains("ending in /"));
        assert!(err("COPY onlyone").message.contains("at least one source"));
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("FROM debian", (1, 1), "unknown instruction \"FROM\""),
            ("RUN ok\n  BOGUS x", (2, 3), "unknown instruction"),
            ("RUN", (1, 1), "RUN needs a command"),
            ("RUN --timeout=0 x", (1, 5), "not a positive duration"),
            ("RUN --timeout=soon x", (1, 5), "not a positive duration"),
            ("RUN --timeout x", (1, 5), "needs a value"),
            ("RUN --user=x y", (1, 5), "unknown flag --user"),
            ("START --x=1 y", (1, 7), "takes no flags"),
            ("HEALTHCHECK --retries=0 true", (1, 13), "--retries=0"),
            (
                "HEALTHCHECK --interval=1s --interval=2s true",
                (1, 27),
                "given twice",
            ),
            ("USER", (1, 1), "USER needs a user name"),
            ("USER a b", (1, 8), "takes only"),
            ("USER Root", (1, 6), "not a user name"),
            ("ENV", (1, 1), "ENV needs a variable"),
            ("ENV 1A=x", (1, 5), "not a variable name"),
            ("ENV A=1 B", (1, 9), "B has no value"),
            ("ENV A", (1, 5), "needs a value"),
            ("ENV A=\"open", (1, 7), "unterminated \" quote"),
            ("ENV A=${B", (1, 7), "unterminated ${"),
            ("WORKDIR", (1, 1), "needs a directory"),
            ("RUN a \\", (1, 7), "continuation"),
        ];
        for (text, (line, column), message) in cases {
            let e = err(text);
            assert_eq!((e.line, e.column), (*line, *column), "{text:?}: {e}");
            assert!(e.message.contains(message), "{text:?}: {e}");
        }
    }

    #[test]
    fn every_error_is_reported() {
        let e = parse("RUN ok\nNOPE\nUSER\nRUN fine\nENV =x").unwrap_err();
        let at: Vec<(usize, usize)> = e.errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(at, [(2, 1), (3, 1), (5, 5)]);
        assert!(
            e.to_string()
                .starts_with("line 2, column 1: unknown instruction"),
            "{e}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "0", "0s", "5x", "m", "1.5s", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = err("ENV É=1");
        assert_eq!(e.column, 5);
        let e = err("RUN ok\nUSER é x");
        assert_eq!((e.line, e.column), (2, 8));
    }
}
