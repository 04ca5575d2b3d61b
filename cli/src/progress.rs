//! What the CLI shows while it works and when it is done: a spinner on
//! stderr for slow steps, and tables on stdout.

use std::io::{IsTerminal, Write};
use std::time::Duration;

/// A spinner on stderr for slow steps (a plain line when stderr is not a
/// TTY).
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    label: String,
}

impl Progress {
    pub fn start(label: &str) -> Self {
        let tty = std::io::stderr().is_terminal();
        let l = label.to_string();
        let task = tty.then(|| {
            tokio::spawn(async move {
                let frames = ['|', '/', '-', '\\'];
                let started = std::time::Instant::now();
                for i in 0.. {
                    eprint!(
                        "\r{} {l} ({:.0}s)",
                        frames[i % 4],
                        started.elapsed().as_secs_f64()
                    );
                    let _ = std::io::stderr().flush();
                    tokio::time::sleep(Duration::from_millis(120)).await;
                }
            })
        });
        if !tty {
            eprintln!("{label}...");
        }
        Self {
            task,
            label: label.to_string(),
        }
    }

    pub fn done(self, outcome: &str) {
        match &self.task {
            Some(t) => {
                t.abort();
                eprintln!("\r\x1b[2K{}: {outcome}", self.label);
            }
            None => eprintln!("{}: {outcome}", self.label),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

/// Prints `header` and `rows` in aligned columns.
pub fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows)
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
