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
