//! Runs the two tools slots drive by command: `nft` (the firewall, fed a
//! script on stdin so every change is one atomic transaction) and `tc` (the
//! tx shaper, fed a `-batch` script). Either may run inside a slot's namespace.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::error::{NetError, Result};
use crate::netns;

/// Runs `program args...` (inside `netns` when given), feeding `stdin`, and
/// returns its stdout. A missing tool is reported with the package to install.
pub(crate) async fn run(
    program: &str,
    args: &[&str],
    stdin: &str,
    netns: Option<&Path>,
) -> Result<String> {
    let command_line = || {
        let mut line = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(ns) = netns {
            line.push_str(&format!(" (in {})", ns.display()));
        }
        line
    };
    let mut command = match netns {
        Some(ns) => netns::command(ns, program)
            .map_err(|err| NetError::io(format!("entering {}", ns.display()), err))?,
        None => tokio::process::Command::new(program),
    };
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|err| {
        let hint = match program {
            "nft" => " (install the `nftables` package)",
            "tc" => " (install the `iproute2` package)",
            _ => "",
        };
        NetError::io(format!("starting `{}`{hint}", command_line()), err)
    })?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .await
            .map_err(|err| NetError::io(format!("writing to `{}`", command_line()), err))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|err| NetError::io(format!("waiting for `{}`", command_line()), err))?;
    if !output.status.success() {
        return Err(NetError::Command {
            command: command_line(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
