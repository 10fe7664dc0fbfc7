//! `cowctl ls`, `cat`, `map` and `restore --path`: the files of a backup, read from the
//! repository by the daemon without restoring the device (`/v1/repo/backups/{id}/...`).

use std::io::Write;
use std::path::PathBuf;

use cowd_api::files::{ExtractReport, ExtractRequest, FileInfo, FileKind, FileMap, Listing};

use super::repo::READ_TIMEOUT;
use super::sessions::print;
use super::{Outcome, absolute, repo_arg};
use crate::client::{self, Client, Reply};
use crate::output::{Align, Table, human_size, printable};

/// Where the filesystem is: the repository and the partition.
#[derive(Debug, Clone, clap::Args)]
pub struct Source {
    /// The repository [default: the daemon's, or the one this cowd made the backup in].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// The partition holding the filesystem (1, 2, ...) [default: the first with a filesystem
    /// cowd reads, or the whole device].
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    /// The backup (see `cowctl backups`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// A directory or file in its filesystem [default: /].
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: String,
    /// Long listing: mode, links, owner, size, time, name (and a link's target).
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CatArgs {
    #[arg(value_name = "ID")]
    pub id: String,
    /// A regular file in the backup's filesystem.
    #[arg(value_name = "PATH")]
    pub path: String,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Debug, Clone, clap::Args)]
#[group(id = "what", required = true, multiple = true, args = ["path", "offset"])]
pub struct MapArgs {
    #[arg(value_name = "ID")]
    pub id: String,
    /// The extents of this file on the device.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["offset", "length"])]
    pub path: Option<String>,
    /// The files and metadata owning the device's bytes from OFFSET (e.g. 1G, 4096).
    #[arg(long, value_name = "OFFSET", value_parser = super::size, requires = "length")]
    pub offset: Option<u64>,
    /// ... for LENGTH bytes.
    #[arg(long, value_name = "LENGTH", value_parser = super::size, requires = "offset")]
    pub length: Option<u64>,
    #[command(flatten)]
    pub source: Source,
}

pub(super) fn query(source: &Source) -> anyhow::Result<String> {
    let mut q = String::new();
    if let Some(r) = repo_arg(source.repo.as_deref())? {
        q.push_str(&format!("&repo={}", client::encode(&r)));
    }
    if let Some(p) = source.partition {
        q.push_str(&format!("&partition={p}"));
    }
    Ok(q)
}

pub(super) fn base(id: &str) -> String {
    format!("/v1/repo/backups/{}", client::encode(id))
}

/// `drwxr-xr-x`-style mode of `f`.
fn mode_string(f: &FileInfo) -> String {
    let t = match f.kind {
        FileKind::File => '-',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    };
    let mut s = String::from(t);
    for (shift, special, lower) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (f.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (f.mode & special != 0, x) {
            (true, true) => lower,
            (true, false) => lower.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// The text of `cowctl ls`.
pub fn listing(l: &Listing, long: bool) -> String {
    if !long {
        return l
            .entries
            .iter()
            .map(|e| {
                format!(
                    "{}{}\n",
                    printable(&e.name),
                    if e.kind == FileKind::Dir { "/" } else { "" }
                )
            })
            .collect();
    }
    let mut t = Table::new(&[
        ("MODE", Align::Left),
        ("LINKS", Align::Right),
        ("UID", Align::Right),
        ("GID", Align::Right),
        ("SIZE", Align::Right),
        ("MODIFIED", Align::Left),
        ("NAME", Align::Left),
    ]);
    for e in &l.entries {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.mtime_s.max(0) as u64);
        let mut name = printable(&e.name);
        if let Some(target) = &e.target {
            name.push_str(&format!(" -> {}", printable(target)));
        }
        t.row(vec![
            mode_string(e),
            e.nlink.to_string(),
            e.uid.to_string(),
            e.gid.to_string(),
            e.size.to_string(),
            cowd_api::units::rfc3339::format(when),
            name,
        ]);
    }
    t.render()
}

pub async fn ls(
    client: &Client,
    a: &LsArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let path = format!(
        "{}/files?path={}{}",
        base(&a.id),
        client::encode(&a.path),
        query(&a.source)?
    );
    let reply: Reply<Listing> = client.clone().with_timeout(READ_TIMEOUT).get(&path).await?;
    print(out, json, &reply, |l| listing(l, a.long))
}

pub async fn cat(client: &Client, a: &CatArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let client = client.clone().with_timeout(READ_TIMEOUT);
    let mut offset = 0u64;
    loop {
        let path = format!(
            "{}/file?path={}&offset={offset}{}",
            base(&a.id),
            client::encode(&a.path),
            query(&a.source)?
        );
        let bytes = client.get_bytes(&path).await?;
        if bytes.is_empty() {
            break;
        }
        match out.write_all(&bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Outcome::Success),
            r => r?,
        }
        offset += bytes.len() as u64;
    }
    out.flush()?;
    Ok(Outcome::Success)
}

/// The text of `cowctl map`.
pub fn map_text(m: &FileMap) -> String {
    let mut s = String::new();
    if let Some(p) = &m.path {
        s.push_str(&format!(
            "{} ({}, filesystem at byte {}):\n",
            printable(p),
            m.filesystem,
            m.fs_offset
        ));
        let mut t = Table::new(&[
            ("FILE OFFSET", Align::Right),
            ("DEVICE OFFSET", Align::Right),
            ("LENGTH", Align::Right),
            ("", Align::Left),
        ]);
        for e in &m.extents {
            t.row(vec![
                e.file_offset.to_string(),
                e.device_offset
                    .map_or("in metadata".into(), |d| d.to_string()),
                e.length.to_string(),
                if e.unwritten {
                    "unwritten".into()
                } else {
                    String::new()
                },
            ]);
        }
        if m.extents.is_empty() {
            s.push_str("  no data on the device (empty, or all holes)\n");
        } else {
            s.push_str(&t.render());
        }
        return s;
    }
    if m.owners.is_empty() {
        return "no file or metadata owns these bytes (free space)\n".into();
    }
    let mut t = Table::new(&[
        ("DEVICE OFFSET", Align::Right),
        ("LENGTH", Align::Right),
        ("KIND", Align::Left),
        ("OWNER", Align::Left),
    ]);
    for o in &m.owners {
        t.row(vec![
            o.device_offset.to_string(),
            o.length.to_string(),
            o.kind.clone(),
            printable(&o.owner),
        ]);
    }
    t.render()
}

pub async fn map(
    client: &Client,
    a: &MapArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let what = match (&a.path, a.offset, a.length) {
        (Some(p), _, _) => format!("path={}", client::encode(p)),
        (None, Some(o), Some(l)) => format!("offset={o}&length={l}"),
        _ => {
            return Ok(Outcome::Usage(
                "give --path PATH, or --offset and --length".into(),
            ));
        }
    };
    let path = format!("{}/map?{what}{}", base(&a.id), query(&a.source)?);
    let reply: Reply<FileMap> = client.clone().with_timeout(READ_TIMEOUT).get(&path).await?;
    print(out, json, &reply, map_text)
}

/// `cowctl restore ID --path P... --to DIR`.
pub async fn extract(
    client: &Client,
    id: &str,
    paths: &[String],
    to: &std::path::Path,
    source: &Source,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let body = ExtractRequest {
        repo: repo_arg(source.repo.as_deref())?,
        partition: source.partition,
        paths: paths.to_vec(),
        to: absolute("--to", to)?,
    };
    let reply: Reply<ExtractReport> = client
        .clone()
        .with_timeout(READ_TIMEOUT)
        .post(&format!("{}/extract", base(id)), &body)
        .await?;
    print(out, json, &reply, |r| {
        format!(
            "extracted {} files ({}), {} directories, {} symbolic links, {} hard links, {} special files into {} in {:.1} s\n",
            r.files,
            human_size(r.bytes),
            r.dirs,
            r.symlinks,
            r.hard_links,
            r.specials,
            printable(&to.display().to_string()),
            r.elapsed_s
        )
    })
}
