//! The host's own Debian mirror, read from its apt configuration, for the
//! `minimal` template's debootstrap: `/etc/apt/sources.list` and
//! `/etc/apt/sources.list.d/*.list` (one-line format) and
//! `/etc/apt/sources.list.d/*.sources` (deb822), in apt's order. Warren never
//! names a mirror of its own: hosts behind a proxy or a local mirror build
//! from what they are configured to use.

use std::path::{Path, PathBuf};

/// Where Debian packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The archive's base URI (`http://deb.debian.org/debian`).
    pub uri: String,
    /// The `Signed-By` keyring file, when the entry names one.
    pub keyring: Option<PathBuf>,
    /// The file the entry was found in.
    pub origin: PathBuf,
}

/// No usable mirror.
#[derive(Debug, thiserror::Error)]
#[error(
    "no Debian mirror for {suite} is configured in apt ({searched}); add one, e.g. \
     `deb http://<your mirror>/debian {suite} main` to /etc/apt/sources.list{found}"
)]
pub struct NoMirror {
    pub suite: String,
    pub searched: String,
    pub found: String,
}

/// One `deb` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    uris: Vec<String>,
    suites: Vec<String>,
    components: Vec<String>,
    signed_by: Option<String>,
    origin: PathBuf,
}

/// Debian's release names and aliases: a host on another release of Debian
/// still has a Debian archive that carries `suite`.
const DEBIAN_SUITES: [&str; 12] = [
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "stable",
    "oldstable",
    "oldoldstable",
    "testing",
    "unstable",
];

/// The mirror to fetch `suite` (e.g. `bookworm`) from, per the apt
/// configuration under `root` (`/` on a host): an entry for `suite` with
/// `main` first, else the first Debian archive entry with `main`.
pub fn find_mirror(root: &Path, suite: &str) -> Result<Mirror, NoMirror> {
    let (entries, searched) = read_entries(root);
    let usable = |e: &&Entry| e.components.iter().any(|c| c == "main");
    let pick = entries
        .iter()
        .filter(usable)
        .find(|e| e.suites.iter().any(|s| s == suite))
        .or_else(|| {
            entries
                .iter()
                .filter(usable)
                .find(|e| e.suites.iter().any(|s| DEBIAN_SUITES.contains(&s.as_str())))
        });
    match pick {
        Some(e) => Ok(Mirror {
            uri: e.uris[0].trim_end_matches('/').to_owned(),
            keyring: e
                .signed_by
                .as_deref()
                .filter(|k| k.starts_with('/') && !k.contains('\n'))
                .map(PathBuf::from),
            origin: e.origin.clone(),
        }),
        None => Err(NoMirror {
            suite: suite.to_owned(),
            searched: if searched.is_empty() {
                "no sources files exist".into()
            } else {
                format!("read {}", searched.join(", "))
            },
            found: if entries.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = entries
                    .iter()
                    .map(|e| format!("{} {}", e.uris.join(" "), e.suites.join(" ")))
                    .collect();
                format!(" (found only: {})", list.join("; "))
            },
        }),
    }
}

/// Every enabled `deb` entry with a URI debootstrap can fetch from, in
/// apt's order, and the files read.
fn read_entries(root: &Path) -> (Vec<Entry>, Vec<String>) {
    let etc = root.join("etc/apt");
    let mut files = vec![etc.join("sources.list")];
    if let Ok(dir) = std::fs::read_dir(etc.join("sources.list.d")) {
        let mut names: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("list" | "sources")
                )
            })
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut entries = Vec::new();
    let mut searched = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        searched.push(file.display().to_string());
        if file.extension().is_some_and(|e| e == "sources") {
            entries.extend(parse_deb822(&text, &file));
        } else {
            entries.extend(parse_one_line(&text, &file));
        }
    }
    entries.retain(|e| !e.uris.is_empty() && !e.suites.is_empty());
    (entries, searched)
}

fn fetchable(uri: &str) -> bool {
    ["http://", "https://", "ftp://", "file:/"]
        .iter()
        .any(|scheme| uri.starts_with(scheme))
}

/// `deb [opt=value ...] uri suite component...` lines.
fn parse_one_line(text: &str, origin: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line
            .strip_prefix("deb")
            .filter(|r| r.starts_with([' ', '\t']))
        else {
            continue; // blank, deb-src or something else
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(options) = rest.strip_prefix('[') {
            let Some((options, after)) = options.split_once(']') else {
                continue;
            };
            for option in options.split_whitespace() {
                if let Some((key, value)) = option.split_once('=')
                    && key.eq_ignore_ascii_case("signed-by")
                {
                    signed_by = Some(value.to_owned());
                }
            }
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        if !fetchable(uri) {
            continue;
        }
        entries.push(Entry {
            uris: vec![uri.to_owned()],
            suites: vec![suite.to_owned()],
            components: words.map(str::to_owned).collect(),
            signed_by,
            origin: origin.to_owned(),
        });
    }
    entries
}

/// deb822 stanzas: `Field: value` lines, continuation lines indented,
/// stanzas separated by blank lines, `#` lines ignored.
fn parse_deb822(text: &str, origin: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut finish = |fields: &mut Vec<(String, String)>| {
        if fields.is_empty() {
            return;
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let words = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if enabled && words("Types").iter().any(|t| t == "deb") {
            entries.push(Entry {
                uris: words("URIs").into_iter().filter(|u| fetchable(u)).collect(),
                suites: words("Suites"),
                components: words("Components"),
                signed_by: get("Signed-By").map(|v| v.trim().to_owned()),
                origin: origin.to_owned(),
            });
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            finish(&mut fields);
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    finish(&mut fields);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/apt/sources.list.d")).unwrap();
        for (name, text) in files {
            std::fs::write(root.path().join("etc/apt").join(name), text).unwrap();
        }
        root
    }

    #[test]
    fn one_line_sources_list() {
        let root = root_with(&[(
            "sources.list",
            "# the local mirror\n\
             deb-src http://src.example/debian bookworm main\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/local.gpg] http://mirror.example/debian/ bookworm main contrib # trailing\n\
             deb http://security.example/debian-security bookworm-security main\n",
        )]);
        let m = find_mirror(root.path(), "bookworm").unwrap();
        assert_eq!(m.uri, "http://mirror.example/debian");
        assert_eq!(
            m.keyring.as_deref(),
            Some(Path::new("/usr/share/keyrings/local.gpg"))
        );
        assert!(m.origin.ends_with("etc/apt/sources.list"));
    }

    #[test]
    fn deb822_sources() {
        let root = root_with(&[
            (
                "sources.list.d/debian.sources",
                "Types: deb\n\
                 # a comment inside\n\
                 URIs: http://deb.example/debian\n\
                 Suites: bookworm bookworm-updates\n\
                 Components: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
                 \n\
                 Types: deb\n\
                 URIs: http://deb.example/debian-security\n\
                 Suites: bookworm-security\n\
                 Components: main\n",
            ),
            // Disabled files and other extensions are not apt sources.
            (
                "sources.list.d/other.list.disabled",
                "deb http://wrong.example/debian bookworm main\n",
            ),
        ]);
        let m = find_mirror(root.path(), "bookworm").unwrap();
        assert_eq!(m.uri, "http://deb.example/debian");
        assert_eq!(
            m.keyring.as_deref(),
            Some(Path::new("/usr/share/keyrings/debian-archive-keyring.gpg"))
        );
        assert!(m.origin.ends_with("debian.sources"));
    }

    #[test]
    fn disabled_stanzas_inline_keys_and_continuations() {
        let root = root_with(&[(
            "sources.list.d/a.sources",
            "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n\
             Types: deb deb-src\n\
             URIs: cdrom:/media http://on.example/debian\n\
             Suites: bookworm\n\
             Components:\n main\n\
             Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n",
        )]);
        let m = find_mirror(root.path(), "bookworm").unwrap();
        assert_eq!(m.uri, "http://on.example/debian");
        assert_eq!(m.keyring, None, "an inline key is no keyring file");
    }

    #[test]
    fn another_debian_release_still_names_a_debian_archive() {
        let root = root_with(&[(
            "sources.list.d/x.list",
            "deb https://deb.nodesource.example/node_20.x nodistro main\n\
             deb http://trixie.example/debian trixie main\n",
        )]);
        let m = find_mirror(root.path(), "bookworm").unwrap();
        assert_eq!(m.uri, "http://trixie.example/debian");
    }

    #[test]
    fn none_configured_is_a_clear_error() {
        let empty = root_with(&[]);
        let e = find_mirror(empty.path(), "bookworm")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Debian mirror for bookworm"), "{e}");
        assert!(e.contains("/etc/apt/sources.list"), "{e}");

        let third_party = root_with(&[(
            "sources.list.d/node.sources",
            "Types: deb\nURIs: https://deb.nodesource.example/node_20.x\nSuites: nodistro\nComponents: main\n",
        )]);
        let e = find_mirror(third_party.path(), "bookworm")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("found only: https://deb.nodesource.example/node_20.x nodistro"),
            "{e}"
        );
    }

    #[test]
    fn this_hosts_configuration_reads() {
        // Whatever this machine uses; only checks that reading works.
        if let Ok(m) = find_mirror(Path::new("/"), "bookworm") {
            assert!(fetchable(&m.uri), "{m:?}");
        }
    }
}
