//! `vtriage vt ...`: every VirusTotal endpoint vtriage knows, from the command line, printing
//! VirusTotal's JSON (pretty).
//!
//! This module owns the argument definitions and the mapping from a subcommand to client
//! calls. Every request goes through the same [`vt::Client`] as the workers, so it passes the
//! shared quota gate; `url-id` and `file-id` compute ids locally and cost nothing. It never
//! touches the job queue.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::indicator::Indicator;
use crate::ingest::{self, Classified};
use crate::vt::{self, Collection};

/// `vtriage vt`
#[derive(Debug, Clone, Args)]
pub struct VtArgs {
    /// What to ask VirusTotal
    #[command(subcommand)]
    pub command: VtCommand,
}

/// The `vt` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum VtCommand {
    /// A file report (by MD5, SHA-1 or SHA-256), or its comments, votes or a relationship
    #[command(mut_arg("id", id_help("The file's MD5, SHA-1 or SHA-256")))]
    File(ObjectArgs),
    /// A URL report (by the URL itself or its VirusTotal id), or its comments, votes or a relationship
    #[command(mut_arg(
        "id",
        id_help(
            "The URL (defanged forms such as hxxp://evil[.]example/ \
        are accepted), or its VirusTotal URL id"
        )
    ))]
    Url(ObjectArgs),
    /// A domain report, or its comments, votes or a relationship
    #[command(mut_arg(
        "id",
        id_help(
            "The domain (defanged forms such as evil[.]example[.]com \
        are accepted)"
        )
    ))]
    Domain(ObjectArgs),
    /// An IP address report, or its comments, votes or a relationship
    #[command(mut_arg(
        "id",
        id_help(
            "The IP address (defanged forms such as 192.0.2[.]7 are \
        accepted)"
        )
    ))]
    Ip(ObjectArgs),
    /// Comments: `vt comment add KIND ID TEXT`
    #[command(subcommand)]
    Comment(CommentCommand),
    /// Votes on an object: harmless or malicious
    Vote {
        /// What kind of object
        #[arg(value_enum)]
        kind: ObjectKind,
        /// Its id (a hash, a URL or URL id, a domain, an IP address)
        id: String,
        /// The vote
        #[arg(value_enum)]
        verdict: Vote,
    },
    /// An analysis (what an upload or a URL submission returned)
    Analysis {
        /// The analysis id
        id: String,
    },
    /// The VirusTotal id of a URL (offline: unpadded base64url of the URL)
    UrlId {
        /// The URL (defanged forms such as hxxp://evil[.]example/ are accepted)
        url: String,
    },
    /// The VirusTotal id of a file (offline: its SHA-256)
    FileId {
        /// The file
        path: PathBuf,
    },
    /// Downloads a file from VirusTotal (premium API keys only)
    Download {
        /// The file's SHA-256 (or MD5, SHA-1)
        hash: String,
        /// Where to write it
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// `vt comment` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CommentCommand {
    /// Posts a comment on an object
    Add {
        /// What kind of object
        #[arg(value_enum)]
        kind: ObjectKind,
        /// Its id (a hash, a URL or URL id, a domain, an IP address)
        id: String,
        /// The comment (words starting with # become tags on VirusTotal)
        text: String,
    },
}

/// Arguments of `vt file|url|domain|ip`.
#[derive(Debug, Clone, Args)]
pub struct ObjectArgs {
    /// The object's id (each command's `--help` says what it takes)
    pub id: String,
    /// Print this relationship instead (e.g. contacted_domains, resolutions, urls)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["comments", "votes"])]
    pub relationship: Option<String>,
    /// Print the object's comments instead
    #[arg(long, conflicts_with = "votes")]
    pub comments: bool,
    /// Print the object's votes instead
    #[arg(long)]
    pub votes: bool,
    /// Items per page (relationships, comments, votes)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=40))]
    pub limit: u32,
    /// Follow the cursors and print every page's items (each page is one request)
    #[arg(long)]
    pub all: bool,
}

/// Sets the help of a `vt file|url|domain|ip` command's id: what that command takes.
fn id_help(help: &'static str) -> impl FnOnce(clap::Arg) -> clap::Arg {
    move |arg| arg.help(help)
}

/// Kinds of objects comments and votes are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectKind {
    /// A file (by hash)
    File,
    /// A URL
    Url,
    /// A domain
    Domain,
    /// An IP address
    Ip,
}

impl ObjectKind {
    fn collection(self) -> Collection {
        match self {
            ObjectKind::File => Collection::Files,
            ObjectKind::Url => Collection::Urls,
            ObjectKind::Domain => Collection::Domains,
            ObjectKind::Ip => Collection::IpAddresses,
        }
    }
}

/// A vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Vote {
    /// The object is harmless
    Harmless,
    /// The object is malicious
    Malicious,
}

impl Vote {
    fn as_str(self) -> &'static str {
        match self {
            Vote::Harmless => "harmless",
            Vote::Malicious => "malicious",
        }
    }
}

/// Why a `vt` command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// VirusTotal (or the quota gate) refused or failed.
    #[error(transparent)]
    Vt(#[from] vt::Error),
    /// The endpoint needs a premium key.
    #[error("{what} needs a premium VirusTotal API key; this key was refused (HTTP 403 Forbidden)")]
    PremiumOnly {
        /// What was attempted.
        what: &'static str,
    },
    /// A local file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said (printed after the path, once).
        #[source]
        source: std::io::Error,
    },
    /// An id that cannot name an object of its kind: refused before a request is spent on it.
    #[error("{id:?} is not {expected}; nothing was sent to VirusTotal")]
    InvalidId {
        /// The id as given.
        id: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// The output could not be written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Whether a subcommand works offline (no key, no request).
pub fn is_offline(command: &VtCommand) -> bool {
    matches!(command, VtCommand::UrlId { .. } | VtCommand::FileId { .. })
}

/// Checks the ids a subcommand names before anything is opened: an id that cannot be valid is
/// refused at once, not after the database and the key.
pub fn check_ids(command: &VtCommand) -> Result<(), Error> {
    match command {
        VtCommand::File(a) => object_id(Collection::Files, &a.id).map(drop),
        VtCommand::Url(a) => object_id(Collection::Urls, &a.id).map(drop),
        VtCommand::Domain(a) => object_id(Collection::Domains, &a.id).map(drop),
        VtCommand::Ip(a) => object_id(Collection::IpAddresses, &a.id).map(drop),
        VtCommand::Comment(CommentCommand::Add { kind, id, .. })
        | VtCommand::Vote { kind, id, .. } => object_id(kind.collection(), id).map(drop),
        VtCommand::Download { hash, .. } => object_id(Collection::Files, hash).map(drop),
        VtCommand::Analysis { .. } | VtCommand::UrlId { .. } | VtCommand::FileId { .. } => Ok(()),
    }
}

/// The id under which a collection knows `id`, parsed as `lookup` parses its arguments
/// (refanged, normalised): a URL given as a URL becomes its URL id; a file's id must be an MD5,
/// SHA-1 or SHA-256, a domain's a domain name, an IP address's an IP address. An id that cannot
/// be one is refused here, before a request is spent on it.
fn object_id(collection: Collection, id: &str) -> Result<String, Error> {
    let id = id.trim();
    let refanged = ingest::refang(id);
    if collection == Collection::Urls {
        // Without a scheme, it is a URL id as VirusTotal gave it.
        return Ok(if refanged.contains("://") {
            url_id(id)
        } else {
            id.to_owned()
        });
    }
    // `lookup` skips private addresses as a policy; asked for by name, they are asked.
    let opts = ingest::Options {
        skip_private_ips: false,
    };
    let expected = match collection {
        Collection::Files => "an MD5, SHA-1 or SHA-256 in hex",
        Collection::Domains => "a domain name ending in a public suffix",
        _ => "an IP address",
    };
    match ingest::classify(&refanged, &opts) {
        Classified::Indicator(i @ Indicator::Hash(_)) if collection == Collection::Files => {
            Ok(i.value())
        }
        Classified::Indicator(i @ Indicator::Domain(_)) if collection == Collection::Domains => {
            Ok(i.value())
        }
        Classified::Indicator(i @ Indicator::Ip(_)) if collection == Collection::IpAddresses => {
            Ok(i.value())
        }
        _ => Err(Error::InvalidId {
            id: id.to_owned(),
            expected,
        }),
    }
}

/// The URL id of a URL, refanged first (the id of `hxxp://evil[.]example/` is that of
/// `http://evil.example/`).
fn url_id(url: &str) -> String {
    vt::url_id(&ingest::refang(url.trim()))
}

/// Runs an offline subcommand, writing its answer to `out`.
pub async fn run_offline(command: &VtCommand, out: &mut impl Write) -> Result<(), Error> {
    match command {
        VtCommand::UrlId { url } => writeln!(out, "{}", url_id(url))?,
        VtCommand::FileId { path } => {
            let sha256 = crate::hashing::sha256_file(path)
                .await
                .map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
            writeln!(out, "{sha256}")?
        }
        _ => unreachable!("is_offline() chose the subcommand"),
    }
    Ok(())
}

/// Runs a subcommand against VirusTotal through `client`, writing the JSON answer to `out`.
pub async fn run(
    client: &vt::Client,
    command: &VtCommand,
    out: &mut impl Write,
) -> Result<(), Error> {
    if is_offline(command) {
        return run_offline(command, out).await;
    }
    let value = match command {
        VtCommand::File(a) => object(client, Collection::Files, a).await?,
        VtCommand::Url(a) => object(client, Collection::Urls, a).await?,
        VtCommand::Domain(a) => object(client, Collection::Domains, a).await?,
        VtCommand::Ip(a) => object(client, Collection::IpAddresses, a).await?,
        VtCommand::Comment(CommentCommand::Add { kind, id, text }) => {
            let c = kind.collection();
            client.add_comment(c, &object_id(c, id)?, text).await?
        }
        VtCommand::Vote { kind, id, verdict } => {
            let c = kind.collection();
            client
                .add_vote(c, &object_id(c, id)?, verdict.as_str())
                .await?
        }
        VtCommand::Analysis { id } => client.get_analysis(id.trim()).await?.raw,
        VtCommand::Download { hash, output } => download(client, hash, output).await?,
        VtCommand::UrlId { .. } | VtCommand::FileId { .. } => unreachable!("handled above"),
    };
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&value).expect("a JSON value prints")
    )?;
    Ok(())
}

/// An object, or one of its collections (a relationship, comments, votes).
async fn object(client: &vt::Client, c: Collection, a: &ObjectArgs) -> Result<Value, Error> {
    let id = object_id(c, &a.id)?;
    let relationship = match (&a.relationship, a.comments, a.votes) {
        (Some(r), _, _) => r.trim(),
        (None, true, _) => "comments",
        (None, false, true) => "votes",
        (None, false, false) => return Ok(client.get_object(c, &id).await?.json()),
    };
    let first = client
        .get_relationship(c, &id, relationship, a.limit, None)
        .await?;
    if !a.all {
        return Ok(first.raw);
    }
    let mut items = first.items;
    let mut cursor = first.cursor;
    let mut pages = 1u32;
    let mut seen = std::collections::HashSet::new();
    while let Some(c_next) = cursor.take() {
        // A server that hands back a cursor it gave before would loop forever.
        if !seen.insert(c_next.clone()) {
            break;
        }
        let page = client
            .get_relationship(c, &id, relationship, a.limit, Some(&c_next))
            .await?;
        pages += 1;
        items.extend(page.items);
        cursor = page.cursor;
    }
    Ok(json!({
        "data": items,
        "meta": {"count": items.len(), "pages": pages},
    }))
}

async fn download(client: &vt::Client, hash: &str, output: &Path) -> Result<Value, Error> {
    let hash = object_id(Collection::Files, hash)?;
    match client.download_file(&hash, output).await {
        Ok(bytes) => Ok(json!({
            "sha256": hash,
            "path": output.display().to_string(),
            "bytes": bytes,
        })),
        Err(vt::Error::Forbidden { .. }) => Err(Error::PremiumOnly {
            what: "downloading files",
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_given_as_urls_become_url_ids_and_others_are_normalised() {
        let id = |c, s| object_id(c, s).unwrap();
        assert_eq!(
            id(Collection::Urls, "http://example.com/"),
            "aHR0cDovL2V4YW1wbGUuY29tLw"
        );
        assert_eq!(
            id(Collection::Urls, "aHR0cDovL2V4YW1wbGUuY29tLw"),
            "aHR0cDovL2V4YW1wbGUuY29tLw"
        );
        assert_eq!(
            id(Collection::Domains, " A.example[.]com "),
            "a.example.com"
        );
        assert_eq!(id(Collection::IpAddresses, "10.0.0.1"), "10.0.0.1");
        assert_eq!(
            id(Collection::Files, "44D88612FEA8A8F36DE82E1278ABB02F"),
            "44d88612fea8a8f36de82e1278abb02f"
        );
    }

    #[test]
    fn ids_that_cannot_be_of_their_kind_are_refused() {
        for (c, bad) in [
            (Collection::Files, "zzz"),
            (Collection::Files, "evil.example.com"),
            (Collection::IpAddresses, "999.1.1.1"),
            (Collection::IpAddresses, "evil.example.com"),
            (Collection::Domains, "not a domain"),
            (Collection::Domains, "readme.txt"),
            (Collection::Domains, "8.8.8.8"),
        ] {
            let err = object_id(c, bad).unwrap_err();
            assert!(matches!(err, Error::InvalidId { .. }), "{bad}: {err}");
            assert!(err.to_string().starts_with(&format!("{bad:?} is not ")));
        }
    }

    #[tokio::test]
    async fn url_id_refangs_its_url_as_lookup_does() {
        let plain = vt::url_id("http://evil.example/");
        for defanged in ["hxxp://evil[.]example/", " hxxp[://]evil(.)example/ "] {
            let mut out = Vec::new();
            let cmd = VtCommand::UrlId {
                url: defanged.into(),
            };
            run_offline(&cmd, &mut out).await.unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), format!("{plain}\n"));
            assert_eq!(object_id(Collection::Urls, defanged).unwrap(), plain);
        }
    }

    #[tokio::test]
    async fn url_id_and_file_id_are_computed_offline() {
        let mut out = Vec::new();
        let cmd = VtCommand::UrlId {
            url: "http://example.com/".into(),
        };
        assert!(is_offline(&cmd));
        run_offline(&cmd, &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "aHR0cDovL2V4YW1wbGUuY29tLw\n"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let mut out = Vec::new();
        run_offline(&VtCommand::FileId { path }, &mut out)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        );
    }

    #[tokio::test]
    async fn file_id_errors_name_the_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nonexistent");
        for (path, why) in [
            (missing, "No such file or directory"),
            (dir.path().to_owned(), "Is a directory"),
        ] {
            let cmd = VtCommand::FileId { path: path.clone() };
            let err = run_offline(&cmd, &mut Vec::new()).await.unwrap_err();
            // As `main` prints it: the error and its causes.
            let printed = format!("{:#}", anyhow::Error::from(err));
            assert!(
                printed.starts_with(&format!("cannot read {}: {why}", path.display())),
                "{printed}"
            );
            assert_eq!(printed.matches(why).count(), 1, "{printed}");
        }
    }
}
