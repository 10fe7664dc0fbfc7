//! Human text of backups: the start line, the `status` table, the plain progress line, the
//! one-line status and the closing summary, all from the daemon's `BackupStatus`.

use cowd_api::backups::{BackupStarted, BackupState, BackupStatus};

use crate::output::{Align, Table, human_size, printable};

/// The state as the API spells it.
pub fn state_name(s: BackupState) -> &'static str {
    match s {
        BackupState::Running => "running",
        BackupState::Done => "done",
        BackupState::Failed => "failed",
        BackupState::Cancelled => "cancelled",
    }
}

/// Whole percent of `done` out of `total`, rounded down (100 only when all is done).
pub fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
}

/// A duration for humans: `0.8 s`, `12 s`, `3 min 20 s`, `2 h 5 min`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_owned();
    }
    if secs < 10.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Milliseconds with a precision that suits their size: `0.021 ms`, `3.5 ms`, `120 ms`.
pub fn millis(ms: f64) -> String {
    if ms == 0.0 {
        "0 ms".to_owned()
    } else if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `backup ID of EXPORT started: snapshot at TIME, N blocks of SIZE to copy (writes held X)`.
pub fn started_line(b: &BackupStarted) -> String {
    format!(
        "backup {} of {} started: snapshot at {}, {} blocks of {} to copy (writes held {})\n",
        printable(&b.id),
        printable(&b.export),
        printable(&b.snapshot_time),
        b.blocks_to_copy,
        human_size(u64::from(b.block_size)),
        millis(b.setup_ms)
    )
}

fn eta(r: &BackupStatus) -> String {
    match r.eta_s {
        Some(s) if r.state == BackupState::Running => duration(s),
        _ if r.state == BackupState::Running => "unknown".to_owned(),
        _ => "-".to_owned(),
    }
}

fn container(r: &BackupStatus) -> String {
    format!(
        "{}/{} (peak {})",
        r.container_used, r.container_slots, r.container_peak
    )
}

/// What the progress bar shows after the block count: rate, container fill, ETA.
pub fn progress_message(r: &BackupStatus) -> String {
    format!(
        "{:.1} MiB/s, container {}, ETA {}",
        r.mover_mib_s,
        container(r),
        eta(r)
    )
}

/// `42% 1234/2938 blocks, 180.5 MiB/s, container 3/16384 (peak 40), ETA 12 s`.
pub fn progress_line(r: &BackupStatus) -> String {
    format!(
        "{}% {}/{} blocks, {}\n",
        percent(r.blocks_done, r.blocks_total),
        r.blocks_done,
        r.blocks_total,
        progress_message(r)
    )
}

/// `backup ID of EXPORT STATE after 1.2 s, D/T blocks copied (reason)`.
pub fn status_line(r: &BackupStatus) -> String {
    let mut s = format!(
        "backup {} of {} {} after {}, {}/{} blocks copied",
        printable(&r.id),
        printable(&r.export),
        state_name(r.state),
        duration(r.elapsed_s),
        r.blocks_done,
        r.blocks_total
    );
    if let Some(reason) = &r.reason {
        s.push_str(&format!(" ({})", printable(reason)));
    }
    s.push('\n');
    s
}

/// `no backups` (of `export`): what a list of backups says when it is empty.
pub fn no_backups(export: Option<&str>) -> String {
    match export {
        Some(e) => format!("no backups of {}\n", printable(e)),
        None => "no backups\n".to_owned(),
    }
}

/// The `cowctl status` table; failed and cancelled sessions have their reason on the next line.
pub fn status_table(reports: &[BackupStatus], export: Option<&str>) -> String {
    if reports.is_empty() {
        return no_backups(export);
    }
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("EXPORT", Align::Left),
        ("STATE", Align::Left),
        ("PROGRESS", Align::Right),
        ("CONTAINER", Align::Right),
        ("COPIES", Align::Right),
        ("THROTTLED", Align::Right),
        ("MOVER", Align::Right),
        ("ETA", Align::Right),
    ]);
    for r in reports {
        t.row(vec![
            r.id.clone(),
            r.export.clone(),
            state_name(r.state).to_owned(),
            format!(
                "{}/{} {}%",
                r.blocks_done,
                r.blocks_total,
                percent(r.blocks_done, r.blocks_total)
            ),
            container(r),
            r.copies_before_write.to_string(),
            match r.throttled_writes {
                0 => "0".to_owned(),
                n => format!("{n} ({})", millis(r.throttle_delay_ms)),
            },
            format!("{:.1} MiB/s", r.mover_mib_s),
            eta(r),
        ]);
    }
    t.render_with_notes(|i, out| {
        let r = &reports[i];
        if let (BackupState::Failed | BackupState::Cancelled, Some(reason)) = (r.state, &r.reason) {
            out.push_str(&format!("  reason: {}\n", printable(reason)));
        }
    })
}

/// The closing summary of `wait` and `start-backup --wait`.
pub fn summary(r: &BackupStatus) -> String {
    let mut lines = vec![
        format!(
            "backup {} of {} {} in {}",
            printable(&r.id),
            printable(&r.export),
            state_name(r.state),
            duration(r.elapsed_s)
        ),
        format!(
            "  blocks:              {}/{} of {} ({}%), {} moved at {:.1} MiB/s",
            r.blocks_done,
            r.blocks_total,
            human_size(u64::from(r.block_size)),
            percent(r.blocks_done, r.blocks_total),
            human_size(r.moved_bytes),
            r.mover_mib_s
        ),
        format!("  copies before write: {}", r.copies_before_write),
        format!(
            "  throttled writes:    {} (delayed {})",
            r.throttled_writes,
            millis(r.throttle_delay_ms)
        ),
        format!(
            "  waited writes:       {} (waited {})",
            r.waited_writes,
            millis(r.wait_ms)
        ),
        format!(
            "  container peak:      {} of {} slots",
            r.container_peak, r.container_slots
        ),
        format!("  target:              {}", printable(&r.target)),
    ];
    if let Some(reason) = &r.reason {
        lines.push(format!("  reason:              {}", printable(reason)));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as the daemon sends it (built from JSON: fields the daemon adds later and
    /// `cowctl` does not show need no change here).
    pub(crate) fn report(state: BackupState, done: u64, total: u64) -> BackupStatus {
        serde_json::from_value(serde_json::json!({
            "id": "disk-20260101T000000Z-00ab",
            "export": "disk",
            "state": state,
            "reason": null,
            "target": "/backups/disk.img",
            "snapshot_time": "2026-01-01T00:00:00.000000Z",
            "ended_time": null,
            "quiesce": "none",
            "setup_ms": 0.25,
            "block_size": 65536,
            "blocks_total": total,
            "blocks_done": done,
            "container_path": "/var/lib/cowd/containers/x.cow",
            "container_slots": 16384,
            "container_used": 3,
            "container_peak": 40,
            "copies_before_write": 12,
            "throttled_writes": 2,
            "throttle_delay_ms": 35.0,
            "waited_writes": 0,
            "wait_ms": 0.0,
            "moved_bytes": 1234u64 << 16,
            "elapsed_s": 12.04,
            "mover_mib_s": 180.5,
            "eta_s": 12.4,
        }))
        .unwrap()
    }

    #[test]
    fn percents_round_down() {
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(0, 10), 0);
        assert_eq!(percent(1234, 2938), 42);
        assert_eq!(percent(2937, 2938), 99);
        assert_eq!(percent(2938, 2938), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.84), "0.8 s");
        assert_eq!(duration(12.4), "12 s");
        assert_eq!(duration(200.0), "3 min 20 s");
        assert_eq!(duration(7500.0), "2 h 5 min");
        assert_eq!(duration(f64::NAN), "?");
        assert_eq!(millis(0.0), "0 ms");
        assert_eq!(millis(0.021231), "0.021 ms");
        assert_eq!(millis(3.54), "3.5 ms");
        assert_eq!(millis(1234.4), "1234 ms");
    }

    #[test]
    fn plain_progress_line() {
        assert_eq!(
            progress_line(&report(BackupState::Running, 1234, 2938)),
            "42% 1234/2938 blocks, 180.5 MiB/s, container 3/16384 (peak 40), ETA 12 s\n"
        );
        let mut r = report(BackupState::Running, 0, 2938);
        r.eta_s = None;
        assert!(progress_line(&r).ends_with("ETA unknown\n"));
    }

    #[test]
    fn start_line() {
        let b = BackupStarted {
            id: "disk-1".into(),
            export: "disk".into(),
            snapshot_time: "2026-01-01T00:00:00.000001Z".into(),
            block_size: 65536,
            blocks_total: 4096,
            blocks_to_copy: 100,
            setup_ms: 1.25,
            quiesce: "none".into(),
        };
        assert_eq!(
            started_line(&b),
            "backup disk-1 of disk started: snapshot at 2026-01-01T00:00:00.000001Z, \
             100 blocks of 64.0 KiB to copy (writes held 1.2 ms)\n"
        );
    }

    #[test]
    fn table_has_reasons_under_failed_rows() {
        let mut failed = report(BackupState::Failed, 10, 2938);
        failed.id = "disk-2".into();
        failed.reason = Some("target /x: No space left\non device".into());
        let done = report(BackupState::Done, 2938, 2938);
        let t = status_table(&[done, failed], None);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        let words: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            words,
            [
                "ID",
                "EXPORT",
                "STATE",
                "PROGRESS",
                "CONTAINER",
                "COPIES",
                "THROTTLED",
                "MOVER",
                "ETA"
            ]
        );
        assert!(
            lines[1].starts_with("disk-20260101T000000Z-00ab  disk"),
            "{t}"
        );
        assert!(lines[1].contains(" done "), "{t}");
        assert!(lines[1].contains("2938/2938 100%"), "{t}");
        assert!(lines[1].contains("3/16384 (peak 40)"), "{t}");
        assert!(lines[1].contains("2 (35.0 ms)"), "{t}");
        assert!(lines[1].ends_with("180.5 MiB/s    -"), "{t}");
        assert!(lines[2].contains("10/2938 0%"), "{t}");
        assert_eq!(
            lines[3], "  reason: target /x: No space left\\non device",
            "{t}"
        );
        assert_eq!(status_table(&[], Some("disk")), "no backups of disk\n");
        assert_eq!(status_table(&[], None), "no backups\n");
    }

    #[test]
    fn summary_names_every_figure() {
        let mut r = report(BackupState::Cancelled, 10, 2938);
        r.reason = Some("cancelled by the operator".into());
        let s = summary(&r);
        assert!(
            s.starts_with("backup disk-20260101T000000Z-00ab of disk cancelled in 12 s\n"),
            "{s}"
        );
        for needle in [
            "blocks:              10/2938 of 64.0 KiB (0%), 77.1 MiB moved at 180.5 MiB/s",
            "copies before write: 12",
            "throttled writes:    2 (delayed 35.0 ms)",
            "waited writes:       0 (waited 0 ms)",
            "container peak:      40 of 16384 slots",
            "reason:              cancelled by the operator",
        ] {
            assert!(s.contains(needle), "{needle:?} not in\n{s}");
        }
        assert_eq!(
            status_line(&r),
            "backup disk-20260101T000000Z-00ab of disk cancelled after 12 s, 10/2938 blocks \
             copied (cancelled by the operator)\n"
        );
    }
}
