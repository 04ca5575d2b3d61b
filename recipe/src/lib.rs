//! `warren-recipe`: the build recipe language of Warren's template builds,
//! with no tie to the control plane (no database, no HTTP): the control
//! plane's build workers (`control/src/build/`) run what this crate plans,
//! and the fuzz targets (`fuzz/fuzz_targets/recipe_*.rs`) feed it untrusted
//! bytes. How builds fit the whole is in `docs/architecture.md`
//! ("Templates and builds").
//!
//! ```text
//! # comments start a line; a trailing backslash continues it
//! ENV APP=/srv/app PORT=8080
//! USER app
//! WORKDIR $APP
//! COPY requirements.txt src/ ./
//! RUN --timeout=10m pip install -r requirements.txt \
//!     && python -m compileall src
//! START python -m http.server $PORT
//! HEALTHCHECK --interval=2s --retries=30 curl -fs localhost:8080
//! ```
//!
//! Keywords are case-insensitive. Semantics follow Dockerfiles where this
//! crate is silent: `RUN`, `START` and `HEALTHCHECK` take a shell command
//! (or a JSON array, run without a shell) that is *not* expanded here;
//! `ENV`, `COPY`, `USER` and `WORKDIR` expand `$V`, `${V}`,
//! `${V:-default}` and `${V:+alternative}` against the ENV set by earlier
//! steps (`$$` and `\$` are a literal `$`; single quotes expand nothing);
//! the last `USER`, `WORKDIR`, `ENV` values and `START` become the
//! template's defaults.
//!
//! Map: [`parse`] turns text into a typed [`Recipe`] (errors name the line
//! and column); [`cache`] computes each step's cache key from the base
//! template, the normalised steps so far and the bytes of the files `COPY`
//! reads, over an abstract [`cache::ArchiveLookup`]; [`archive`] lists a
//! build archive (tar, tar.gz, zip) and refuses entries that would land
//! outside it; [`plan`] resolves a parsed recipe on a base template into
//! the steps a worker executes; [`contents`] reads the files a `COPY` needs
//! out of an archive.

pub mod archive;
pub mod cache;
pub mod contents;
mod lex;
pub mod parse;
pub mod plan;
mod words;

use std::time::Duration;

use serde::Serialize;

pub use parse::{parse, parse_with_env};

/// A parsed recipe: its steps in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipe {
    pub steps: Vec<Step>,
}

/// One instruction and where it starts in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// 1-based line of the instruction's keyword.
    pub line: usize,
    pub instruction: Instruction,
}

/// A command to run in the build capsule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Run by `/bin/sh -c`, as written.
    Shell(String),
    /// A JSON array: the program and its arguments, no shell.
    Exec(Vec<String>),
}

/// What a step does. Serialised (as JSON) it is the step's normalised form:
/// keyword case, spacing between words, comments and line breaks do not
/// change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Instruction {
    /// `RUN [--timeout=D] cmd`: runs to completion; fails the build on a
    /// non-zero exit or after the timeout.
    Run {
        command: Command,
        timeout: Option<Duration>,
    },
    /// `START cmd`: a daemon left running (the last one is the template's
    /// start command).
    Start { command: Command },
    /// `USER name`: created if missing, with passwordless sudo; later steps
    /// run as it; the last is the template's default user.
    User { name: String },
    /// `COPY src... dst`: files from the build archive (`sources` are clean
    /// paths relative to its root, `""` for the root itself, and may hold
    /// `*` and `?`); a relative `dest` resolves against the WORKDIR.
    Copy { sources: Vec<String>, dest: String },
    /// `ENV K=V...` (or `ENV K value`): values already expanded.
    Env { vars: Vec<(String, String)> },
    /// `WORKDIR p`: created if missing; relative to the previous one.
    Workdir { path: String },
    /// `HEALTHCHECK [--interval=D] [--timeout=D] [--start-period=D]
    /// [--retries=N] [CMD] cmd`: what tells the start command is ready.
    Healthcheck {
        command: Command,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        retries: Option<u32>,
    },
}

impl Instruction {
    /// The keyword, upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Run { .. } => "RUN",
            Instruction::Start { .. } => "START",
            Instruction::User { .. } => "USER",
            Instruction::Copy { .. } => "COPY",
            Instruction::Env { .. } => "ENV",
            Instruction::Workdir { .. } => "WORKDIR",
            Instruction::Healthcheck { .. } => "HEALTHCHECK",
        }
    }
}

/// A recipe error at a place in the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// Every error of a recipe (at least one), in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ParseErrors {
    pub errors: Vec<ParseError>,
}

/// Splits a relative path into clean components: `.` and empty parts go,
/// `..` removes the previous part. `None` when it climbs above the start.
pub(crate) fn clean_relative(path: &str) -> Option<Vec<&str>> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts)
}
