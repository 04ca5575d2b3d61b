//! User commands: `warren capsule ...` and `warren template ...`, as an
//! ordinary client of the REST API (the same calls the `wrenn` SDK makes).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Subcommand;
use futures::StreamExt;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_api_types::capsules::{CapsuleView, CreateCapsuleRequest};
use warren_api_types::files::PathRequest;
use warren_api_types::process::{ExecRequest, ExecResponse};
use warren_api_types::status::CapsuleStatus;
use warren_api_types::templates::TemplateView;

use crate::client::{Api, path_segment};
use crate::progress::{Progress, print_table};

#[derive(Debug, Subcommand)]
pub enum CapsuleCmd {
    /// Create a capsule and wait until it runs.
    Create {
        #[arg(long, short)]
        template: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        #[arg(long)]
        memory_mb: Option<u32>,
        /// Idle seconds before auto-pause (0: never).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// List capsules.
    Ls,
    /// Run a command: `warren capsule exec ID -- CMD ARGS...`.
    Exec {
        id: String,
        #[arg(required = true, trailing_var_arg = true)]
        cmd: Vec<String>,
        #[arg(long)]
        cwd: Option<String>,
        /// Seconds before the command is killed.
        #[arg(long, default_value_t = 60)]
        timeout: u32,
    },
    /// Open a terminal in the capsule.
    Pty {
        id: String,
        /// Program to run (default: the template's shell).
        #[arg(long)]
        cmd: Option<String>,
    },
    /// Copy a file in or out: `warren capsule cp ./f ID:/path` or `ID:/path ./f`.
    Cp {
        src: String,
        dst: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Destroy a capsule.
    Rm {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Templates this team can start capsules from.
    Ls,
    /// Build a template from a recipe, showing its log live (Ctrl-C
    /// cancels the build).
    Build {
        /// The recipe file.
        file: PathBuf,
        /// Name of the template to make.
        #[arg(long)]
        name: String,
        /// Template to build on (default: the platform's default).
        #[arg(long)]
        base: Option<String>,
        /// Archive (tar, tar.gz or zip) holding the files COPY reads.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// Replace the team's template of the same name.
        #[arg(long)]
        overwrite: bool,
        #[arg(long)]
        vcpus: Option<u32>,
        #[arg(long)]
        memory_mb: Option<u32>,
    },
    /// Delete one of the team's templates.
    Rm { name: String },
}

pub async fn capsule(api: &Api, cmd: CapsuleCmd) -> anyhow::Result<i32> {
    match cmd {
        CapsuleCmd::Create {
            template,
            vcpus,
            memory_mb,
            timeout,
        } => {
            let p = Progress::start("creating capsule");
            let req = CreateCapsuleRequest {
                template,
                vcpus,
                memory_mb,
                timeout_sec: timeout,
                metadata: None,
            };
            let mut c: CapsuleView = api.post("/v1/capsules", &req).await?;
            while c.status == CapsuleStatus::Starting {
                tokio::time::sleep(Duration::from_millis(300)).await;
                c = api.get(&format!("/v1/capsules/{}", c.id)).await?;
            }
            p.done(c.status.as_str());
            println!("{}", c.id);
            Ok(if c.status == CapsuleStatus::Running {
                0
            } else {
                1
            })
        }
        CapsuleCmd::Ls => {
            let list: Vec<CapsuleView> = api.get("/v1/capsules").await?;
            let rows = list
                .into_iter()
                .map(|c| {
                    vec![
                        c.id,
                        c.status.to_string(),
                        c.template,
                        c.vcpus.to_string(),
                        c.memory_mb.to_string(),
                        c.created_at,
                    ]
                })
                .collect();
            let header = ["ID", "STATUS", "TEMPLATE", "VCPUS", "MEMORY_MB", "CREATED"];
            print_table(&header, rows);
            Ok(0)
        }
        CapsuleCmd::Exec {
            id,
            cmd,
            cwd,
            timeout,
        } => {
            let (first, rest) = cmd.split_first().context("a command is required")?;
            let req = ExecRequest {
                cmd: first.clone(),
                args: (!rest.is_empty()).then(|| rest.to_vec()),
                timeout_sec: Some(timeout),
                cwd,
                ..ExecRequest::default()
            };
            let r: ExecResponse = api.post(&format!("/v1/capsules/{id}/exec"), &req).await?;
            let decode = |raw: &str| -> Vec<u8> {
                if r.encoding == "base64" {
                    base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .unwrap_or_default()
                } else {
                    raw.as_bytes().to_vec()
                }
            };
            std::io::stdout().write_all(&decode(&r.stdout))?;
            std::io::stderr().write_all(&decode(&r.stderr))?;
            Ok(r.exit_code)
        }
        CapsuleCmd::Pty { id, cmd } => crate::terminal::run(api, &id, cmd).await,
        CapsuleCmd::Cp { src, dst } => copy(api, &src, &dst).await.map(|()| 0),
        CapsuleCmd::Pause { id } => lifecycle(api, &id, "pause", "pausing").await,
        CapsuleCmd::Resume { id } => lifecycle(api, &id, "resume", "resuming").await,
        CapsuleCmd::Rm { id } => {
            let p = Progress::start("destroying capsule");
            api.delete(&format!("/v1/capsules/{id}")).await?;
            p.done("done");
            Ok(0)
        }
    }
}

async fn lifecycle(api: &Api, id: &str, op: &str, label: &str) -> anyhow::Result<i32> {
    let p = Progress::start(&format!("{label} {id}"));
    let c: CapsuleView = api.act(&format!("/v1/capsules/{id}/{op}")).await?;
    p.done(c.status.as_str());
    Ok(0)
}

/// `ID:/path` → (id, path).
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (id, path) = spec.split_once(':')?;
    (!id.is_empty() && id.starts_with("sb-") && !path.is_empty()).then_some((id, path))
}

async fn copy(api: &Api, src: &str, dst: &str) -> anyhow::Result<()> {
    match (remote(src), remote(dst)) {
        (None, Some((id, path))) => {
            let file = tokio::fs::File::open(src)
                .await
                .with_context(|| format!("opening {src}"))?;
            let len = file.metadata().await?.len();
            let p = Progress::start(&format!("uploading {len} bytes"));
            let stream = futures::stream::unfold(Some(file), |state| async move {
                let mut file = state?;
                let mut buf = vec![0u8; 64 << 10];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(buf), Some(file)))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            });
            let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
                .file_name("upload");
            let form = reqwest::multipart::Form::new()
                .text("path", path.to_string())
                .part("file", part);
            let req = api
                .request(
                    Method::POST,
                    &format!("/v1/capsules/{id}/files/stream/write"),
                )
                .multipart(form);
            api.send_empty(req).await?;
            p.done("done");
            Ok(())
        }
        (Some((id, path)), None) => {
            let p = Progress::start(&format!("downloading {path}"));
            let resp = api
                .request(
                    Method::POST,
                    &format!("/v1/capsules/{id}/files/stream/read"),
                )
                .json(&PathRequest { path: path.into() })
                .send()
                .await?;
            let resp = Api::check(resp).await?;
            let mut out = tokio::fs::File::create(dst)
                .await
                .with_context(|| format!("creating {dst}"))?;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
            p.done("done");
            Ok(())
        }
        _ => bail!("exactly one of the two paths must be a capsule path (sb-...:/path)"),
    }
}

pub async fn template(api: &Api, cmd: TemplateCmd) -> anyhow::Result<i32> {
    match cmd {
        TemplateCmd::Build {
            file,
            name,
            base,
            archive,
            overwrite,
            vcpus,
            memory_mb,
        } => {
            let recipe = tokio::fs::read_to_string(&file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            let req = crate::build::BuildArgs {
                name,
                base,
                recipe,
                archive,
                overwrite,
                vcpus,
                memory_mb,
            };
            crate::build::run(api, req).await
        }
        TemplateCmd::Rm { name } => {
            let p = Progress::start(&format!("deleting template {name}"));
            api.delete(&format!("/v1/snapshots/{}", path_segment(&name)))
                .await?;
            p.done("deleted");
            Ok(0)
        }
        TemplateCmd::Ls => {
            let list: Vec<TemplateView> = api.get("/v1/snapshots").await?;
            let rows = list
                .into_iter()
                .map(|t| {
                    vec![
                        t.name,
                        t.kind.to_string(),
                        t.size_bytes.to_string(),
                        t.created_at,
                    ]
                })
                .collect();
            print_table(&["NAME", "TYPE", "SIZE_BYTES", "CREATED"], rows);
            Ok(0)
        }
    }
}
