//! Human text of the repository commands: the `backups` table, the verify and prune reports,
//! restores (start line, progress, summary, table) and served backups, all from the daemon's
//! answers.

use std::collections::BTreeSet;
use std::time::SystemTime;

use cowd_api::exports::ExportInfo;
use cowd_api::repo::{
    Blocks, CorruptChunk, Listed, Manifest, Mode, PruneResult, RepairReport, RepoInfo, SyncReport,
    VerifyReport,
};
use cowd_api::restores::{RestoreState, RestoreStatus};
use cowd_api::units::rfc3339;

use crate::output::{Align, Table, human_size, printable};
use crate::report::{duration, no_backups, percent};

/// `n thing` or `n things` (`indexes` for `index`).
pub fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else if thing.ends_with('x') {
        format!("{n} {thing}es")
    } else {
        format!("{n} {thing}s")
    }
}

/// A time as `2026-11-25 19:06:38` (UTC, to the second).
pub fn time(t: SystemTime) -> String {
    let s = rfc3339::format(t);
    match s.get(..19) {
        Some(head) => head.replacen('T', " ", 1),
        None => s,
    }
}

/// `repository DIR created (format 2, chunk size 4.0 MiB, zstd level 1, id ...)`.
pub fn repo_created(r: &RepoInfo) -> String {
    let enc = match &r.key_fingerprint {
        Some(k) => format!(", encrypted with key {}", printable(k)),
        None => String::new(),
    };
    format!(
        "repository {} created (format {}, chunk size {}, zstd level {}, id {}{enc})\n",
        printable(&r.path),
        r.format,
        human_size(u64::from(r.chunk_size)),
        r.compression_level,
        printable(&r.id)
    )
}

/// `cowctl repo info`: one line per property.
pub fn repo_info(r: &RepoInfo) -> String {
    let encryption = match (&r.key_fingerprint, r.unlocked) {
        (None, _) => "none".to_owned(),
        (Some(k), Some(true)) => format!("AES-256-GCM, key {}, unlocked", printable(k)),
        (Some(k), _) => format!(
            "AES-256-GCM, key {}, locked (cowctl repo unlock)",
            printable(k)
        ),
    };
    format!(
        "repository   {}\nid           {}\nformat       {}\nchunk names  {}\nchunk size   {}\nzstd level   {}\nencryption   {encryption}\n",
        printable(&r.path),
        printable(&r.id),
        r.format,
        printable(&r.chunk_names),
        human_size(u64::from(r.chunk_size)),
        r.compression_level,
    )
}

/// `full used ext4`, `incr all`: the mode, the blocks read and the filesystem they came from.
pub fn mode(m: &Manifest) -> String {
    let mut s = match m.mode {
        Mode::Full => "full",
        Mode::Incremental => "incr",
    }
    .to_owned();
    s.push_str(match m.blocks {
        Blocks::Used => " used",
        Blocks::All => " all",
    });
    if let Some(fs) = &m.filesystem {
        s.push(' ');
        s.push_str(fs);
    }
    s
}

/// The `cowctl backups` table, oldest first as the daemon lists them; an incremental backup
/// has its parent on the next line (marked `(removed)` when it is not in the list: a parent is
/// of the same export), and a full backup made in auto mode says why it is not incremental.
pub fn backups_table(list: &[Manifest], export: Option<&str>) -> String {
    table(list, &[], export)
}

/// The table, with a parent among `damaged` marked so instead of `(removed)`.
fn table(list: &[Manifest], damaged: &[&str], export: Option<&str>) -> String {
    if list.is_empty() {
        return no_backups(export);
    }
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("TIME (UTC)", Align::Left),
        ("MODE", Align::Left),
        ("SIZE", Align::Right),
        ("READ", Align::Right),
        ("NEW", Align::Right),
        ("DURATION", Align::Right),
    ]);
    for m in list {
        t.row(vec![
            m.id.clone(),
            time(m.snapshot_time),
            mode(m),
            human_size(m.device_size),
            human_size(m.counts.bytes_read),
            human_size(m.counts.bytes_new_stored),
            duration(m.duration_s),
        ]);
    }
    t.render_with_notes(|i, out| {
        let m = &list[i];
        if let Some(parent) = &m.parent {
            let gone = if list.iter().any(|p| &p.id == parent) {
                ""
            } else if damaged.contains(&parent.as_str()) {
                " (damaged)"
            } else {
                " (removed)"
            };
            out.push_str(&format!("  parent: {}{gone}\n", printable(parent)));
        }
        if let Some(why) = &m.full_reason {
            out.push_str(&format!("  full because {}\n", printable(why)));
        }
    })
}

/// The `cowctl backups` listing: the table of complete backups, then each damaged backup (its
/// manifest cannot be read) with the problem, as `verify` names them.
pub fn listing(entries: &[Listed], export: Option<&str>) -> String {
    let mut complete = Vec::new();
    let mut damaged = Vec::new();
    for e in entries {
        match e {
            Listed::Complete(m) => complete.push(m.as_ref().clone()),
            Listed::Damaged(d) => damaged.push(d),
        }
    }
    let ids: Vec<&str> = damaged.iter().map(|d| d.id.as_str()).collect();
    let mut out = table(&complete, &ids, export);
    for d in damaged {
        out.push_str(&format!("DAMAGED {}\n", printable(&d.id)));
        out.push_str(&format!("  problem: {}\n", printable(&d.problem)));
    }
    out
}

fn chunk_problem(out: &mut String, kind: &str, c: &CorruptChunk) {
    out.push_str(&format!("{kind} chunk {}\n", c.digest));
    out.push_str(&format!("  problem: {}\n", printable(&c.problem)));
    out.push_str(&format!(
        "  path:    {}\n",
        printable(&c.path.to_string_lossy())
    ));
    let breaks: Vec<String> = c.backups.iter().map(|b| printable(b)).collect();
    out.push_str(&format!("  breaks:  {}\n", breaks.join(", ")));
}

/// What `cowctl verify` prints: the figures, then every problem.
pub fn verify_text(r: &VerifyReport) -> String {
    if r.is_ok() {
        let what = match r.backups_checked {
            0 => return "no backups to verify\n".to_owned(),
            1 => "1 backup".to_owned(),
            n => format!("all {n} backups"),
        };
        return format!(
            "{what} verified: {}, {}\n",
            count(r.chunks_checked, "chunk"),
            human_size(r.bytes_checked)
        );
    }
    let mut out = format!(
        "checked {}: {} read, {} verified\n",
        count(r.backups_checked, "backup"),
        count(r.chunks_checked, "chunk"),
        human_size(r.bytes_checked)
    );
    for c in &r.corrupt {
        chunk_problem(&mut out, "corrupt", c);
    }
    for c in &r.missing {
        chunk_problem(&mut out, "missing", c);
    }
    for (id, problem) in &r.bad_indexes {
        out.push_str(&format!(
            "bad backup {}: {}\n",
            printable(id),
            printable(problem)
        ));
    }
    let damaged = damaged_backups(r);
    out.push_str(&format!(
        "damaged backups: {}\n",
        damaged
            .iter()
            .map(|b| printable(b))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out
}

/// The backups that a problem of `r` breaks, sorted.
pub fn damaged_backups(r: &VerifyReport) -> BTreeSet<&str> {
    r.corrupt
        .iter()
        .chain(&r.missing)
        .flat_map(|c| c.backups.iter().map(String::as_str))
        .chain(r.bad_indexes.iter().map(|(id, _)| id.as_str()))
        .collect()
}

/// The one-line failure of a verify that found problems (`None` when all is good).
pub fn verify_failure(r: &VerifyReport) -> Option<String> {
    if r.is_ok() {
        return None;
    }
    Some(format!(
        "verification failed: {}, {}, {} ({} damaged)",
        count(r.corrupt.len() as u64, "corrupt chunk"),
        count(r.missing.len() as u64, "missing chunk"),
        count(r.bad_indexes.len() as u64, "bad index"),
        count(damaged_backups(r).len() as u64, "backup")
    ))
}

/// What `cowctl prune` prints: each backup of the export with what happens to it, then the
/// garbage collection.
/// What `repo sync` did: each backup copied (or that would be), those already there, and
/// the chunks moved.
pub fn sync_text(r: &SyncReport, dry_run: bool) -> String {
    let mut out = String::new();
    let action = if dry_run { "would copy" } else { "copied" };
    for id in &r.synced {
        out.push_str(&format!("{action}  {}\n", printable(id)));
    }
    for id in &r.present {
        out.push_str(&format!("present  {}\n", printable(id)));
    }
    if r.synced.is_empty() {
        out.push_str("nothing to copy\n");
    }
    let stored = if dry_run {
        String::new()
    } else {
        format!(", {} stored", human_size(r.stored_bytes))
    };
    out.push_str(&format!(
        "chunks: {} {action} ({}{stored}), {} already there\n",
        count(r.chunks_copied, "chunk"),
        human_size(r.bytes_copied),
        r.chunks_present
    ));
    out
}

/// What `repo repair` found and did: each chunk and index taken again and from where, each
/// chunk no repository held, each backup that stays damaged (or was removed).
pub fn repair_text(r: &RepairReport, dry_run: bool) -> String {
    if r.found.is_ok() {
        return format!("nothing to repair: {}", verify_text(&r.found));
    }
    let mut out = String::new();
    let verb = if dry_run { "would repair" } else { "repaired" };
    for (d, from) in &r.chunks_repaired {
        out.push_str(&format!("{verb} chunk {d} from {}\n", printable(from)));
    }
    for (id, from) in &r.indexes_repaired {
        out.push_str(&format!(
            "{verb} index of {} from {}\n",
            printable(id),
            printable(from)
        ));
    }
    for d in &r.chunks_unrepaired {
        out.push_str(&format!(
            "cannot repair chunk {d}: no repository given holds it intact\n"
        ));
    }
    for (id, why) in &r.broken {
        let fate = if r.removed.contains(id) {
            "removed"
        } else {
            "damaged"
        };
        out.push_str(&format!("{fate} {}: {}\n", printable(id), printable(why)));
    }
    if r.broken.is_empty() {
        out.push_str(if dry_run {
            "every damaged backup can be repaired\n"
        } else {
            "every backup verifies now\n"
        });
    }
    out
}

pub fn prune_text(r: &PruneResult, dry_run: bool) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    for k in &r.keep {
        let reasons: Vec<String> = k.reasons.iter().map(|r| printable(r)).collect();
        rows.push((
            "keep",
            format!("{} ({})", printable(&k.id), reasons.join(", ")),
        ));
    }
    for id in &r.remove {
        let action = if dry_run {
            "would remove"
        } else if r.removed.contains(id) {
            "removed"
        } else {
            // It became the parent of a backup started since the plan.
            "not removed"
        };
        let mut text = printable(id);
        if action == "not removed" {
            text.push_str(" (in use by a running backup; a later prune removes it)");
        }
        rows.push((action, text));
    }
    let width = rows.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (action, text) in &rows {
        out.push_str(&format!("{action:<width$}  {text}\n"));
    }
    if r.remove.is_empty() {
        out.push_str("nothing to remove\n");
    }
    let g = &r.gc;
    if dry_run {
        out.push_str(&format!(
            "gc (dry run): {} ({}) unused now; chunks that only the backups to remove use are \
             not counted\n",
            count(g.chunks_removed, "chunk"),
            human_size(g.bytes_freed)
        ));
    } else {
        let mut line = format!(
            "gc: removed {}, freed {}; {} still in use",
            count(g.chunks_removed, "chunk"),
            human_size(g.bytes_freed),
            count(g.chunks_referenced, "chunk")
        );
        if g.chunks_kept_young > 0 {
            line.push_str(&format!(
                ", {} unused but too recent to remove",
                g.chunks_kept_young
            ));
        }
        line.push('\n');
        out.push_str(&line);
    }
    out
}

/// The state as the API spells it.
pub fn restore_state(s: RestoreState) -> &'static str {
    match s {
        RestoreState::Running => "running",
        RestoreState::Done => "done",
        RestoreState::Failed => "failed",
    }
}

/// `restore ID of backup B to PATH started: N chunks`; for a live restore, what is served.
pub fn restore_started(s: &RestoreStatus) -> String {
    if s.live {
        return format!(
            "live restore {} of backup {}: export {} serves {} now, read-write\n  {} left to restore behind it (follow with `cowctl restores`)\n",
            printable(&s.id),
            printable(&s.backup),
            printable(s.export.as_deref().unwrap_or("?")),
            printable(&s.to),
            count(s.chunks_total - s.chunks_done, "chunk")
        );
    }
    format!(
        "restore {} of backup {} to {} started: {} to write\n",
        printable(&s.id),
        printable(&s.backup),
        printable(&s.to),
        count(s.chunks_total, "chunk")
    )
}

/// What the progress bar of a restore shows after the chunk count.
pub fn restore_message(s: &RestoreStatus) -> String {
    format!(
        "{} written, {:.1} MiB/s",
        human_size(s.bytes_written),
        s.mib_s
    )
}

/// `42% 12/28 chunks, 48.0 MiB written, 120.5 MiB/s`.
pub fn restore_line(s: &RestoreStatus) -> String {
    format!(
        "{}% {}/{} chunks, {}\n",
        percent(s.chunks_done, s.chunks_total),
        s.chunks_done,
        s.chunks_total,
        restore_message(s)
    )
}

/// `live restore ID (export NAME): 42% 12/28 chunks, 3 on demand, 48.0 MiB written`.
pub fn live_line(s: &RestoreStatus) -> String {
    let mut line = format!(
        "live restore {} (export {}): {}% {}/{} chunks, {} on demand, {} written",
        printable(&s.id),
        printable(s.export.as_deref().unwrap_or("?")),
        percent(s.chunks_done, s.chunks_total),
        s.chunks_done,
        s.chunks_total,
        s.chunks_on_demand,
        human_size(s.bytes_written)
    );
    if s.chunks_failed > 0 {
        line.push_str(&format!(
            ", {} that cannot be restored",
            count(s.chunks_failed, "chunk")
        ));
    }
    line.push('\n');
    line
}

/// The closing summary of `cowctl restore`.
pub fn restore_summary(s: &RestoreStatus) -> String {
    let mut out = format!(
        "restore {} of backup {} {} in {}\n",
        printable(&s.id),
        printable(&s.backup),
        restore_state(s.state),
        duration(s.elapsed_s)
    );
    out.push_str(&format!(
        "  chunks:  {}/{} ({}%)\n",
        s.chunks_done,
        s.chunks_total,
        percent(s.chunks_done, s.chunks_total)
    ));
    out.push_str(&format!(
        "  written: {} of data at {:.1} MiB/s (zero chunks become holes)\n",
        human_size(s.bytes_written),
        s.mib_s
    ));
    out.push_str(&format!("  target:  {}\n", printable(&s.to)));
    if let Some(r) = &s.reason {
        out.push_str(&format!("  reason:  {}\n", printable(r)));
    }
    if let Some(n) = &s.note {
        out.push_str(&format!("  note:    {}\n", printable(n)));
    }
    out
}

/// The `cowctl restores` table, newest first; failed restores have their reason on the next
/// line.
pub fn restores_table(list: &[RestoreStatus]) -> String {
    if list.is_empty() {
        return "no restores\n".to_owned();
    }
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("BACKUP", Align::Left),
        ("STATE", Align::Left),
        ("PROGRESS", Align::Right),
        ("WRITTEN", Align::Right),
        ("RATE", Align::Right),
        ("TO", Align::Left),
    ]);
    for s in list {
        t.row(vec![
            s.id.clone(),
            s.backup.clone(),
            restore_state(s.state).to_owned(),
            format!(
                "{}/{} {}%",
                s.chunks_done,
                s.chunks_total,
                percent(s.chunks_done, s.chunks_total)
            ),
            human_size(s.bytes_written),
            format!("{:.1} MiB/s", s.mib_s),
            match &s.export {
                Some(e) if s.live => format!("{} (live, export {e})", s.to),
                _ => s.to.clone(),
            },
        ]);
    }
    t.render_with_notes(|i, out| {
        let s = &list[i];
        if let (RestoreState::Failed, Some(reason)) = (s.state, &s.reason) {
            out.push_str(&format!("  reason: {}\n", printable(reason)));
        }
        if s.live && s.state == RestoreState::Running && s.chunks_on_demand + s.chunks_failed > 0 {
            out.push_str(&format!(
                "  {} fetched on demand, {} failed\n",
                count(s.chunks_on_demand, "chunk"),
                s.chunks_failed
            ));
        }
        if let Some(n) = &s.note {
            out.push_str(&format!("  {}\n", printable(n)));
        }
    })
}

/// `export NAME serves backup ID from repository DIR (64.0 MiB, read-only)`.
pub fn served(e: &ExportInfo) -> String {
    format!(
        "export {} serves {} ({}, read-only)\n",
        printable(&e.name),
        printable(&e.description),
        human_size(e.size)
    )
}

/// `export NAME removed (it served backup ID from repository DIR)`.
pub fn unserved(e: &ExportInfo) -> String {
    format!(
        "export {} removed (it served {})\n",
        printable(&e.name),
        printable(&e.description)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cowd_api::repo::{GcReport, Kept};
    use serde_json::json;

    /// A manifest as the daemon sends it.
    fn manifest(id: &str, mode: &str, parent: Option<&str>) -> Manifest {
        serde_json::from_value(json!({
            "id": id,
            "export": "disk",
            "device_size": 64u64 << 20,
            "block_size": 65536,
            "chunk_size": 4u64 << 20,
            "snapshot_time": "2026-11-25T19:06:38.512345Z",
            "started_time": "2026-11-25T19:06:38.500000Z",
            "ended_time": "2026-11-25T19:06:40.000000Z",
            "duration_s": 1.49,
            "mode": mode,
            "parent": parent,
            "full_reason": null,
            "blocks": "used",
            "filesystem": "ext4",
            "counts": {
                "chunks_total": 16, "chunks_zero": 2, "chunks_new": 3, "chunks_reused": 0,
                "chunks_inherited": 11, "bytes_read": 12u64 << 20, "bytes_new_stored": 5u64 << 20
            },
            "index_sha256": "00".repeat(32),
            "status": "complete",
        }))
        .unwrap()
    }

    #[test]
    fn times_and_modes() {
        let m = manifest("a", "full", None);
        assert_eq!(time(m.snapshot_time), "2026-11-25 19:06:38");
        assert_eq!(mode(&m), "full used ext4");
        let mut i = manifest("b", "incremental", Some("a"));
        i.blocks = Blocks::All;
        i.filesystem = None;
        assert_eq!(mode(&i), "incr all");
        assert_eq!(count(1, "chunk"), "1 chunk");
        assert_eq!(count(0, "chunk"), "0 chunks");
        assert_eq!(count(2, "bad index"), "2 bad indexes");
    }

    #[test]
    fn backups_table_shows_parents_and_reasons() {
        let mut full = manifest("disk-1", "full", None);
        full.full_reason = Some("no earlier backup of this export in the repository".into());
        let incr = manifest("disk-2", "incremental", Some("disk-1"));
        let t = backups_table(&[full, incr], None);
        assert_eq!(
            t,
            "ID      TIME (UTC)           MODE                SIZE      READ      NEW  DURATION\n\
             disk-1  2026-11-25 19:06:38  full used ext4  64.0 MiB  12.0 MiB  5.0 MiB     1.5 s\n\
             \x20 full because no earlier backup of this export in the repository\n\
             disk-2  2026-11-25 19:06:38  incr used ext4  64.0 MiB  12.0 MiB  5.0 MiB     1.5 s\n\
             \x20 parent: disk-1\n"
        );
        assert_eq!(backups_table(&[], None), "no backups\n");
        let t = backups_table(&[manifest("disk-2", "incremental", Some("disk-1"))], None);
        assert!(t.ends_with("\n  parent: disk-1 (removed)\n"), "{t}");
        assert_eq!(backups_table(&[], Some("disk")), "no backups of disk\n");
    }

    #[test]
    fn a_damaged_backup_is_listed_with_its_problem() {
        let entries: Vec<Listed> = serde_json::from_value(json!([
            manifest("disk-1", "full", None),
            {"id": "disk-2", "status": "damaged", "problem": "manifest: EOF while parsing"},
        ]))
        .unwrap();
        assert!(matches!(entries[1], Listed::Damaged(_)));
        let t = listing(&entries, None);
        assert!(t.starts_with("ID "), "{t}");
        assert!(
            t.ends_with("DAMAGED disk-2\n  problem: manifest: EOF while parsing\n"),
            "{t}"
        );
    }

    fn bad(digest: char, backups: &[&str], problem: &str) -> CorruptChunk {
        let hex = digest.to_string().repeat(64);
        serde_json::from_value(json!({
            "digest": hex,
            "path": format!("/r/chunks/{}/{hex}", &hex[..2]),
            "problem": problem,
            "backups": backups,
        }))
        .unwrap()
    }

    #[test]
    fn verify_reports() {
        let mut r = VerifyReport {
            backups_checked: 2,
            chunks_checked: 35,
            bytes_checked: 140 << 20,
            ..VerifyReport::default()
        };
        assert_eq!(
            verify_text(&r),
            "all 2 backups verified: 35 chunks, 140.0 MiB\n"
        );
        assert_eq!(verify_failure(&r), None);
        let one = VerifyReport {
            backups_checked: 1,
            chunks_checked: 1,
            bytes_checked: 4 << 20,
            ..VerifyReport::default()
        };
        assert_eq!(verify_text(&one), "1 backup verified: 1 chunk, 4.0 MiB\n");
        assert_eq!(
            verify_text(&VerifyReport::default()),
            "no backups to verify\n"
        );
        r.corrupt
            .push(bad('a', &["disk-1", "disk-2"], "SHA-256 mismatch"));
        r.missing.push(bad('b', &["disk-2"], "missing"));
        r.bad_indexes
            .push(("disk-3".into(), "index checksum mismatch".into()));
        let t = verify_text(&r);
        let a = "a".repeat(64);
        for needle in [
            "checked 2 backups: 35 chunks read, 140.0 MiB verified\n".to_owned(),
            format!(
                "corrupt chunk {a}\n  problem: SHA-256 mismatch\n  path:    /r/chunks/aa/{a}\n  breaks:  disk-1, disk-2\n"
            ),
            format!("missing chunk {}\n", "b".repeat(64)),
            "bad backup disk-3: index checksum mismatch\n".to_owned(),
            "damaged backups: disk-1, disk-2, disk-3\n".to_owned(),
        ] {
            assert!(t.contains(&needle), "{needle:?} not in\n{t}");
        }
        assert_eq!(
            verify_failure(&r).unwrap(),
            "verification failed: 1 corrupt chunk, 1 missing chunk, 1 bad index (3 backups damaged)"
        );
    }

    fn pruned(removed: &[&str]) -> PruneResult {
        PruneResult {
            keep: vec![Kept {
                id: "disk-3".into(),
                reasons: vec!["last".into(), "daily".into()],
            }],
            remove: vec!["disk-2".into(), "disk-1".into()],
            removed: removed.iter().map(|s| s.to_string()).collect(),
            gc: GcReport {
                chunks_referenced: 16,
                chunks_removed: 3,
                bytes_freed: 12 << 20,
                chunks_kept_young: 0,
            },
        }
    }

    #[test]
    fn prune_reports() {
        assert_eq!(
            prune_text(&pruned(&["disk-2", "disk-1"]), false),
            "keep     disk-3 (last, daily)\n\
             removed  disk-2\n\
             removed  disk-1\n\
             gc: removed 3 chunks, freed 12.0 MiB; 16 chunks still in use\n"
        );
        let t = prune_text(&pruned(&[]), true);
        assert!(
            t.starts_with(
                "keep          disk-3 (last, daily)\nwould remove  disk-2\nwould remove  disk-1\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("gc (dry run): 3 chunks (12.0 MiB) unused now"),
            "{t}"
        );
        let t = prune_text(&pruned(&["disk-1"]), false);
        assert!(
            t.contains("not removed  disk-2 (in use by a running backup"),
            "{t}"
        );
        let mut nothing = pruned(&[]);
        nothing.remove.clear();
        nothing.gc.chunks_kept_young = 2;
        assert_eq!(
            prune_text(&nothing, false),
            "keep  disk-3 (last, daily)\nnothing to remove\n\
             gc: removed 3 chunks, freed 12.0 MiB; 16 chunks still in use, 2 unused but too \
             recent to remove\n"
        );
    }

    fn restore(state: &str, done: u64, reason: Option<&str>) -> RestoreStatus {
        serde_json::from_value(json!({
            "id": "restore-disk-1-00ab",
            "backup": "disk-1",
            "to": "/r/disk.img",
            "state": state,
            "reason": reason,
            "chunks_total": 16,
            "chunks_done": done,
            "bytes_written": 48u64 << 20,
            "elapsed_s": 0.42,
            "mib_s": 114.29,
            "started_time": "2026-11-25T19:10:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn restore_texts() {
        let r = restore("running", 12, None);
        assert_eq!(
            restore_started(&r),
            "restore restore-disk-1-00ab of backup disk-1 to /r/disk.img started: 16 chunks to \
             write\n"
        );
        assert_eq!(
            restore_line(&r),
            "75% 12/16 chunks, 48.0 MiB written, 114.3 MiB/s\n"
        );
        let f = restore("failed", 3, Some("chunk 4: corrupt"));
        let s = restore_summary(&f);
        assert!(
            s.starts_with("restore restore-disk-1-00ab of backup disk-1 failed in 0.4 s\n"),
            "{s}"
        );
        assert!(s.contains("  reason:  chunk 4: corrupt\n"), "{s}");
        assert!(
            s.contains("  written: 48.0 MiB of data at 114.3 MiB/s"),
            "{s}"
        );
        let t = restores_table(&[f, restore("done", 16, None)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(
            lines[1].contains(" failed ") && lines[1].contains("3/16 18%"),
            "{t}"
        );
        assert_eq!(lines[2], "  reason: chunk 4: corrupt");
        assert!(lines[3].ends_with("/r/disk.img"), "{t}");
        assert_eq!(restores_table(&[]), "no restores\n");
    }

    #[test]
    fn served_texts() {
        let e = ExportInfo {
            name: "old".into(),
            path: "/r".into(),
            description: "backup disk-1 from repository /r".into(),
            size: 64 << 20,
            read_only: true,
            connections: 0,
        };
        assert_eq!(
            served(&e),
            "export old serves backup disk-1 from repository /r (64.0 MiB, read-only)\n"
        );
        assert_eq!(
            unserved(&e),
            "export old removed (it served backup disk-1 from repository /r)\n"
        );
        let r = RepoInfo {
            path: "/r".into(),
            id: "f00".into(),
            chunk_size: 4 << 20,
            compression_level: 1,
            format: 2,
            chunk_names: "blake3".into(),
            key_fingerprint: None,
            unlocked: None,
        };
        assert_eq!(
            repo_created(&r),
            "repository /r created (format 2, chunk size 4.0 MiB, zstd level 1, id f00)\n"
        );
    }
}
