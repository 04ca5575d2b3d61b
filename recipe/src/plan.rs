//! A parsed recipe turned into what a worker executes: every step with the
//! context it runs in (user, ENV, working directory), its cache key, and
//! everything resolved that can be resolved before running (absolute
//! paths, the archive files each COPY writes where), plus the defaults the
//! finished template gets.
//!
//! Semantics (Dockerfile-like, see [`crate`]): steps run as root
//! until a USER; the working directory starts at the base template's (or
//! `/`), a relative WORKDIR or COPY destination resolves against the
//! current one; shell commands run with `/bin/sh -c`. A COPY source that
//! is a directory (or the archive root) copies its contents into the
//! destination; a single file goes to the destination path itself unless
//! that ends with `/` or is an existing directory. Files keep their
//! executable bit and belong to the current user.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::archive::{ArchiveEntry, ArchiveIndex, EntryKind};
use crate::cache::{self, ArchiveFile, ArchiveLookup, CacheKey, MissingSource};
use crate::{Command, Instruction, Recipe};

/// Docker's HEALTHCHECK defaults.
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const HEALTH_RETRIES: u32 = 3;

/// What the build starts from (the base template).
#[derive(Debug, Clone)]
pub struct Base {
    /// Identifies this version of the base for the cache (its name, when it
    /// was made, and the defaults its steps see).
    pub identity: String,
    pub user: String,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
}

/// The context a step runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub user: String,
    /// The recipe's ENV so far (on top of the base template's, which the
    /// build capsule has already).
    pub env: BTreeMap<String, String>,
    /// Absolute.
    pub workdir: String,
}

/// Where a copied file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Exactly this path.
    Path(String),
    /// This path, or the same name inside it if it is an existing directory.
    PathOrInto(String),
}

/// What a copied entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyKind {
    /// A file with the content of this archive path (itself, or the target
    /// of a hard link).
    File {
        content: String,
        executable: bool,
    },
    Symlink {
        target: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyItem {
    /// Where it is in the archive.
    pub source: String,
    pub target: Target,
    pub kind: CopyKind,
}

/// What a HEALTHCHECK polls, with Docker's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub retries: u32,
    /// The context it was declared in.
    pub ctx: Ctx,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run {
        argv: Vec<String>,
        timeout: Duration,
    },
    Start {
        argv: Vec<String>,
    },
    User {
        name: String,
    },
    Copy {
        items: Vec<CopyItem>,
    },
    /// Changes only later steps' context.
    Env,
    Workdir {
        path: String,
    },
    /// Declares the health check polled once every step ran.
    Healthcheck,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based line in the recipe.
    pub line: usize,
    pub keyword: &'static str,
    /// The instruction as written (continuations joined), for display.
    pub text: String,
    pub action: Action,
    pub ctx: Ctx,
    pub cache_key: CacheKey,
}

impl Step {
    /// Whether the step's result is a filesystem state worth a cache layer.
    /// ENV and HEALTHCHECK change no file; a START's daemon is a process,
    /// which a filesystem layer cannot hold.
    pub fn makes_layer(&self) -> bool {
        matches!(
            self.action,
            Action::Run { .. } | Action::User { .. } | Action::Copy { .. } | Action::Workdir { .. }
        )
    }
}

/// The finished template's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The last USER, else the base template's user.
    pub user: String,
    /// The base template's env with the recipe's ENV over it.
    pub env: BTreeMap<String, String>,
    /// The last WORKDIR, else the base template's.
    pub workdir: Option<String>,
    /// The last START (run in its working directory), if any.
    pub start_cmd: Option<String>,
    pub health: Option<Health>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub outcome: Outcome,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("line {line}: COPY needs a build archive (upload one with the recipe)")]
    NoArchive { line: usize },
    #[error(transparent)]
    MissingSource(#[from] MissingSource),
}

/// An archive with nothing in it (a build uploaded without one).
struct Empty;

impl ArchiveLookup for Empty {
    fn files_under(&self, _: &str) -> Vec<ArchiveFile> {
        Vec::new()
    }
}

/// `p` resolved against the absolute directory `dir`, `.` and `..`
/// folded (`..` stops at `/`).
pub fn resolve(dir: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{dir}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Quotes `s` for `/bin/sh`.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn argv(c: &Command) -> Vec<String> {
    match c {
        Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        Command::Exec(v) => v.clone(),
    }
}

fn shell_line(c: &Command) -> String {
    match c {
        Command::Shell(s) => s.clone(),
        Command::Exec(v) => v.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "),
    }
}

/// The instruction starting at 1-based `line` of `text`, continuation
/// lines joined and runs of blanks folded, for display.
fn source_text(text: &str, line: usize) -> String {
    let mut out = String::new();
    for l in text.lines().skip(line.saturating_sub(1)) {
        let l = l.trim();
        match l.strip_suffix('\\') {
            Some(head) => {
                out.push_str(head);
                out.push(' ');
            }
            None => {
                out.push_str(l);
                break;
            }
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The archive entries by path (the last entry of a path wins, as when
/// extracting).
fn entries_by_path(index: Option<&ArchiveIndex>) -> BTreeMap<&str, &ArchiveEntry> {
    index
        .map(|i| i.entries.iter().map(|e| (e.path.as_str(), e)).collect())
        .unwrap_or_default()
}

/// The items one COPY writes.
fn copy_items(
    sources: &[String],
    dest: &str,
    workdir: &str,
    lookup: &dyn ArchiveLookup,
    entries: &BTreeMap<&str, &ArchiveEntry>,
) -> Vec<CopyItem> {
    let dest_abs = resolve(workdir, dest);
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    let mut items = Vec::new();
    for source in sources {
        let depth = source.split('/').filter(|p| !p.is_empty()).count();
        for f in cache::matching(lookup, source) {
            let parts: Vec<&str> = f.path.split('/').collect();
            let (rel, single) = if parts.len() > depth {
                // Below a directory the source named (or matched).
                (parts[depth..].join("/"), false)
            } else {
                (parts.last().copied().unwrap_or_default().to_string(), true)
            };
            let target = if single && !into_dir && !source.contains(['*', '?']) {
                Target::PathOrInto(dest_abs.clone())
            } else {
                Target::Path(resolve(&dest_abs, &rel))
            };
            let kind = match entries.get(f.path.as_str()).map(|e| &e.kind) {
                Some(EntryKind::Symlink { target }) => CopyKind::Symlink {
                    target: target.clone(),
                },
                Some(EntryKind::HardLink { target }) => CopyKind::File {
                    content: target.clone(),
                    executable: f.mode & 0o111 != 0,
                },
                _ => CopyKind::File {
                    content: f.path.clone(),
                    executable: f.mode & 0o111 != 0,
                },
            };
            items.push(CopyItem {
                source: f.path.clone(),
                target,
                kind,
            });
        }
    }
    items
}

/// Plans `recipe` (parsed from `text`) on `base` with the uploaded
/// `archive`; `run_timeout` is a RUN's limit when it sets none.
pub fn plan(
    text: &str,
    recipe: &Recipe,
    base: &Base,
    archive: Option<&ArchiveIndex>,
    run_timeout: Duration,
) -> Result<Plan, PlanError> {
    let lookup: &dyn ArchiveLookup = match archive {
        Some(a) => a,
        None => {
            if let Some(s) = recipe
                .steps
                .iter()
                .find(|s| matches!(s.instruction, Instruction::Copy { .. }))
            {
                return Err(PlanError::NoArchive { line: s.line });
            }
            &Empty
        }
    };
    let keys = cache::cache_keys(&base.identity, recipe, lookup)?;
    let entries = entries_by_path(archive);
    let mut ctx = Ctx {
        user: "root".into(),
        env: BTreeMap::new(),
        workdir: base.workdir.clone().unwrap_or_else(|| "/".into()),
    };
    let mut outcome = Outcome {
        user: base.user.clone(),
        env: base.env.clone(),
        workdir: base.workdir.clone(),
        start_cmd: None,
        health: None,
    };
    let mut steps = Vec::with_capacity(recipe.steps.len());
    for (s, key) in recipe.steps.iter().zip(keys) {
        let here = ctx.clone();
        let action = match &s.instruction {
            Instruction::Run { command, timeout } => Action::Run {
                argv: argv(command),
                timeout: timeout.unwrap_or(run_timeout),
            },
            Instruction::Start { command } => {
                outcome.start_cmd = Some(format!(
                    "cd {} && {}",
                    sh_quote(&ctx.workdir),
                    shell_line(command)
                ));
                Action::Start {
                    argv: argv(command),
                }
            }
            Instruction::User { name } => {
                ctx.user = name.clone();
                outcome.user = name.clone();
                Action::User { name: name.clone() }
            }
            Instruction::Copy { sources, dest } => Action::Copy {
                items: copy_items(sources, dest, &ctx.workdir, lookup, &entries),
            },
            Instruction::Env { vars } => {
                ctx.env.extend(vars.iter().cloned());
                outcome.env.extend(vars.iter().cloned());
                Action::Env
            }
            Instruction::Workdir { path } => {
                ctx.workdir = resolve(&ctx.workdir, path);
                outcome.workdir = Some(ctx.workdir.clone());
                Action::Workdir {
                    path: ctx.workdir.clone(),
                }
            }
            Instruction::Healthcheck {
                command,
                interval,
                timeout,
                start_period,
                retries,
            } => {
                outcome.health = Some(Health {
                    argv: argv(command),
                    interval: interval.unwrap_or(HEALTH_INTERVAL),
                    timeout: timeout.unwrap_or(HEALTH_TIMEOUT),
                    start_period: start_period.unwrap_or_default(),
                    retries: retries.unwrap_or(HEALTH_RETRIES).max(1),
                    ctx: ctx.clone(),
                });
                Action::Healthcheck
            }
        };
        steps.push(Step {
            line: s.line,
            keyword: s.instruction.keyword(),
            text: source_text(text, s.line),
            action,
            ctx: here,
            cache_key: key,
        });
    }
    Ok(Plan { steps, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::inspect;
    use crate::contents::tests::tar_of;
    use crate::parse;

    fn base() -> Base {
        Base {
            identity: "tiny@0".into(),
            user: "user".into(),
            env: BTreeMap::from([("PATH".into(), "/bin".into())]),
            workdir: None,
        }
    }

    fn plan_of(text: &str, files: &[(&str, &[u8])]) -> Plan {
        // No archive at all when the recipe copies nothing.
        let index =
            (!files.is_empty()).then(|| inspect(std::io::Cursor::new(tar_of(files))).unwrap());
        plan(
            text,
            &parse(text).unwrap(),
            &base(),
            index.as_ref(),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn contexts_follow_user_env_and_workdir() {
        let p = plan_of(
            "ENV A=1\nWORKDIR /srv\nUSER app\nWORKDIR data\nRUN --timeout=5s \\\n  echo   $A\nSTART ./serve --port 8\nHEALTHCHECK --retries=2 true",
            &[],
        );
        let ctx: Vec<(&str, &str)> = p
            .steps
            .iter()
            .map(|s| (s.ctx.user.as_str(), s.ctx.workdir.as_str()))
            .collect();
        assert_eq!(
            ctx,
            [
                ("root", "/"),
                ("root", "/"),
                ("root", "/srv"),
                ("app", "/srv"),
                ("app", "/srv/data"),
                ("app", "/srv/data"),
                ("app", "/srv/data"),
            ]
        );
        assert_eq!(p.steps[4].text, "RUN --timeout=5s echo $A");
        assert_eq!(
            p.steps[4].action,
            Action::Run {
                // The command's own spacing is the shell's business.
                argv: vec!["/bin/sh".into(), "-c".into(), "echo   $A".into()],
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(p.steps[4].ctx.env["A"], "1");
        let o = &p.outcome;
        assert_eq!(o.user, "app");
        assert_eq!(o.workdir.as_deref(), Some("/srv/data"));
        assert_eq!(o.env["A"], "1");
        assert_eq!(o.env["PATH"], "/bin");
        assert_eq!(
            o.start_cmd.as_deref(),
            Some("cd /srv/data && ./serve --port 8")
        );
        let h = o.health.as_ref().unwrap();
        assert_eq!((h.retries, h.interval), (2, HEALTH_INTERVAL));
        let layers: Vec<bool> = p.steps.iter().map(Step::makes_layer).collect();
        assert_eq!(layers, [false, true, true, true, true, false, false]);
    }

    #[test]
    fn copy_targets() {
        let files: &[(&str, &[u8])] = &[
            ("app/main.py", b"1"),
            ("app/lib/u.py", b"2"),
            ("run.sh", b"3"),
            ("a.cfg", b"4"),
        ];
        let p = plan_of(
            "WORKDIR /w\nCOPY app dst\nCOPY run.sh /usr/local/bin\nCOPY run.sh a.cfg conf/\nCOPY *.cfg /etc/x/\nCOPY . /all/",
            files,
        );
        let targets = |i: usize| -> Vec<(String, Target)> {
            let Action::Copy { items } = &p.steps[i].action else {
                panic!("step {i}")
            };
            items
                .iter()
                .map(|it| (it.source.clone(), it.target.clone()))
                .collect()
        };
        let path = |s: &str| Target::Path(s.into());
        assert_eq!(
            targets(1),
            [
                ("app/lib/u.py".into(), path("/w/dst/lib/u.py")),
                ("app/main.py".into(), path("/w/dst/main.py")),
            ]
        );
        assert_eq!(
            targets(2),
            [("run.sh".into(), Target::PathOrInto("/usr/local/bin".into()))]
        );
        assert_eq!(
            targets(3),
            [
                ("run.sh".into(), path("/w/conf/run.sh")),
                ("a.cfg".into(), path("/w/conf/a.cfg")),
            ]
        );
        assert_eq!(targets(4), [("a.cfg".into(), path("/etc/x/a.cfg"))]);
        assert_eq!(targets(5).len(), 4);
        assert_eq!(targets(5)[0].1, path("/all/a.cfg"));
    }

    #[test]
    fn copy_needs_an_archive_with_its_sources() {
        let text = "RUN true\nCOPY a /b";
        let r = parse(text).unwrap();
        let err = plan(text, &r, &base(), None, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, PlanError::NoArchive { line: 2 }));
        let index = inspect(std::io::Cursor::new(tar_of(&[("other", b"x")]))).unwrap();
        let err = plan(text, &r, &base(), Some(&index), Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: COPY source \"a\" is not in the build archive"
        );
    }

    #[test]
    fn paths_resolve_and_quote() {
        assert_eq!(resolve("/a/b", "../c/./d"), "/a/c/d");
        assert_eq!(resolve("/a", "/x/../../y"), "/y");
        assert_eq!(resolve("/", "."), "/");
        assert_eq!(sh_quote("/srv/app"), "/srv/app");
        assert_eq!(sh_quote("it's here"), r"'it'\''s here'");
        assert_eq!(sh_quote(""), "''");
    }
}
