//! `cowctl diff ID1 ID2`: the files that differ between two backups of one export, found by
//! the daemon from the chunks that differ (`/v1/repo/backups/{id}/diff`).

use std::io::Write;

use cowd_api::files::{Change, Diff, FileKind};

use super::Outcome;
use super::files::{Source, base, query};
use super::repo::READ_TIMEOUT;
use super::sessions::print;
use crate::client::{self, Client, Reply};
use crate::output::printable;

#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// The older backup (see `cowctl backups`).
    #[arg(value_name = "ID1")]
    pub from: String,
    /// The newer backup of the same export.
    #[arg(value_name = "ID2")]
    pub to: String,
    #[command(flatten)]
    pub source: Source,
}

/// The mark in front of a path, as `restic diff` prints them.
fn mark(c: Change) -> char {
    match c {
        Change::Added => '+',
        Change::Removed => '-',
        Change::Modified => 'M',
        Change::Metadata => 'U',
        Change::Type => 'T',
    }
}

/// The text of `cowctl diff`: one line per path, then the counts.
pub fn diff_text(d: &Diff) -> String {
    let mut s = String::new();
    let mut counts = [0u64; 5];
    for e in &d.entries {
        let slash = if e.kind == FileKind::Dir { "/" } else { "" };
        s.push_str(&format!(
            "{}    {}{slash}\n",
            mark(e.change),
            printable(&e.path)
        ));
        counts[e.change as usize] += 1;
    }
    let [added, removed, modified, metadata, typ] = counts;
    s.push_str(&format!(
        "\n{added} added, {removed} removed, {modified} modified, {metadata} with other \
         metadata, {typ} of another type; {} of {} chunks differ, {} read, {:.1} s\n",
        d.chunks_changed, d.chunks, d.chunks_read, d.elapsed_s
    ));
    s
}

pub async fn diff(
    client: &Client,
    a: &DiffArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let path = format!(
        "{}/diff?to={}{}",
        base(&a.from),
        client::encode(&a.to),
        query(&a.source)?
    );
    let reply: Reply<Diff> = client.clone().with_timeout(READ_TIMEOUT).get(&path).await?;
    print(out, json, &reply, diff_text)
}

#[cfg(test)]
mod tests {
    use cowd_api::files::DiffEntry;

    use super::*;

    #[test]
    fn one_line_per_path_then_the_counts() {
        let e = |path: &str, change, kind| DiffEntry {
            path: path.into(),
            change,
            kind,
        };
        let d = Diff {
            from: "a".into(),
            to: "b".into(),
            export: "disk".into(),
            filesystem: "ext4".into(),
            chunks: 64,
            chunks_changed: 3,
            chunks_read: 5,
            entries: vec![
                e("/new", Change::Added, FileKind::File),
                e("/gone", Change::Removed, FileKind::Dir),
                e("/data", Change::Modified, FileKind::File),
                e("/mode", Change::Metadata, FileKind::File),
                e("/was-file", Change::Type, FileKind::Dir),
            ],
            elapsed_s: 0.31,
        };
        assert_eq!(
            diff_text(&d),
            "+    /new\n-    /gone/\nM    /data\nU    /mode\nT    /was-file/\n\n\
             1 added, 1 removed, 1 modified, 1 with other metadata, 1 of another type; \
             3 of 64 chunks differ, 5 read, 0.3 s\n"
        );
    }
}
