//! libiscsi's conformance suite, `iscsi-test-cu`, run against an iSCSI target and its report
//! read back into one [`Outcome`] per test.
//!
//! ```text
//!   run_suite(url, [T1, T2, T3], limit)
//!      └─> iscsi-test-cu --dataloss --Verbose-scsi --test T3,T2,T1 URL   (killed at limit)
//!            │ stdout: CUnit's verbose report
//!            v
//!          parse ──> [TestResult { name, outcome }] in the order asked,
//!                    CUnit's own counts (Summary)
//! ```
//!
//! The report, as CUnit 2.1-3 writes it in verbose mode (libiscsi's `logging()` writes the
//! four-space lines, into the same stdout buffer, so the order holds):
//!
//! ```text
//! Suite: Read10
//!   Test: Simple ...passed
//! Suite: Unmap
//!   Test: Simple ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
//! passed
//! Suite: iSCSIdatasn
//!   Test: iSCSIDataSnInvalid ...    [FAILED] WRITE10 command failed with status 2 / ...
//! FAILED
//!     1. test_iscsi_datasn_invalid.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)
//! Suite: Inquiry
//!   Test: Standard ...passed    [SKIPPED] PERSISTENT RESERVE IN is not implemented.
//!
//! Run Summary:    Type  Total    Ran Passed Failed Inactive
//!               suites      4      4    n/a      0        0
//!                tests      4      4      3      1        0
//! ```
//!
//! Invariant: a test is [`Outcome::Passed`] only when CUnit says "passed" and the test logged
//! no "[SKIPPED]" (nor "[SKIPPING]") between its start and its verdict. libiscsi skips with
//! `CU_PASS`, so CUnit counts a skip as a pass. What a suite's cleanup logs after the verdict
//! (the last test above, on every test of a target without PERSISTENT RESERVE) belongs to no
//! test; a "[FAILED]" that a test logs and then accepts (a helper expected GOOD, the test
//! allows the refusal) does not fail it either: CUnit's verdict does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::require;

/// libiscsi's conformance test tool (Debian package libiscsi-bin).
pub const TEST_TOOL: &str = "iscsi-test-cu";

/// What became of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// What the test logged as "[FAILED]", then CUnit's failed assertions.
    Failed(String),
    /// The test's first "[SKIPPED]" line: the target lacks what it needs.
    /// (libiscsi's "[SKIPPING]" counts too.)
    Skipped(String),
    /// Never started: the run ended first (login failed, killed at the time limit, crashed).
    NotRun,
}

/// One test of the list and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// `FAMILY.SUITE.TEST`, as asked.
    pub name: String,
    pub outcome: Outcome,
}

/// CUnit's own count of tests ("tests" row of its Run Summary); skips count as passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub ran: u32,
    pub passed: u32,
    pub failed: u32,
}

/// How the tool's process ended.
#[derive(Debug)]
pub enum End {
    Exited(ExitStatus),
    /// Still running at the time limit: killed.
    Killed(Duration),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Exited(st) => write!(f, "{TEST_TOOL} {st}"),
            End::Killed(limit) => write!(f, "{TEST_TOOL} killed at the {limit:?} limit"),
        }
    }
}

/// One run of the suite.
#[derive(Debug)]
pub struct Report {
    /// Every test asked for, in the order asked.
    pub results: Vec<TestResult>,
    /// Absent when the tool ended before its summary.
    pub summary: Option<Summary>,
    pub end: End,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

/// `FAMILY.SUITE.TEST`: CUnit reports only SUITE and TEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    suite: String,
    test: String,
}

/// The key of an exact test name; panics on a family, a suite or a pattern (the tool matches
/// names with fnmatch, so `*`, `?` or `[` would run tests nobody listed).
fn key_of(name: &str) -> Key {
    let parts: Vec<&str> = name.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty()),
        "{name}: not FAMILY.SUITE.TEST"
    );
    assert!(
        !name.contains(['*', '?', '[', ',']),
        "{name}: a pattern, not one test"
    );
    Key {
        suite: parts[1].into(),
        test: parts[2].into(),
    }
}

/// Runs `tests` (exact `FAMILY.SUITE.TEST` names) against `url` with `--dataloss` (the
/// logical unit is a scratch file), killing the tool at `limit`.
///
/// `--Verbose-scsi` raises libiscsi's log level to verbose: several tests skip with a
/// verbose-level "[SKIPPED]" and no `CU_PASS` ("LUN is not removable" in StartStopUnit and
/// NoMedia, "LUN too small. Skipping assert" inside WriteSame*.ZeroBlocks), which the normal
/// level would report as a silent pass. It costs output (about 35 KiB a test) and some time.
pub fn run_suite(url: &str, tests: &[&str], limit: Duration) -> Report {
    require(TEST_TOOL);
    // The tool registers a comma-separated list from its end, so the reversed list runs in
    // the order given.
    let list: Vec<&str> = tests.iter().rev().copied().collect();
    let started = Instant::now();
    let mut child = Command::new(TEST_TOOL)
        .args([
            "--dataloss",
            "--ignore",
            "--verbose",
            "--Verbose-scsi",
            "--test",
        ])
        .arg(list.join(","))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {TEST_TOOL}: {e}"));
    let (stdout, end) = wait_output(&mut child, limit);
    let stderr = child
        .stderr
        .take()
        .map(|mut e| {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
        .unwrap_or_default();
    let (results, summary) = parse(&stdout, tests);
    Report {
        results,
        summary,
        end,
        elapsed: started.elapsed(),
        stdout,
        stderr,
    }
}

/// Reads the child's stdout to its end, killing the child if that takes longer than `limit`.
///
/// std has no wait with a time limit; the end of stdout is the condition waited on instead
/// (the tool holds it until it exits). The kill goes through the `Child`, not yet reaped, so
/// it cannot reach a reused pid. The tool writes little to stderr (usage, login errors): a
/// pipe's buffer holds it until it is read after the exit.
fn wait_output(child: &mut Child, limit: Duration) -> (String, End) {
    let mut out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        let _ = tx.send(b);
    });
    let (bytes, killed) = match rx.recv_timeout(limit) {
        Ok(b) => (b, false),
        Err(_) => {
            let _ = child.kill();
            (rx.recv().unwrap_or_default(), true)
        }
    };
    let status = child.wait().expect("wait for iscsi-test-cu");
    let end = if killed {
        End::Killed(limit)
    } else {
        End::Exited(status)
    };
    (String::from_utf8_lossy(&bytes).into_owned(), end)
}

/// Where the reader is in the report.
#[derive(Debug)]
enum State {
    /// Between tests (or in a suite's cleanup output, after a verdict).
    Between,
    /// A test started and has no verdict yet.
    Open(Key),
    /// After a FAILED verdict: CUnit's numbered failure records follow.
    Records(Key),
    /// After "Run Summary:".
    Summary,
}

/// What one test logged before its verdict, and the verdict.
#[derive(Debug, Default)]
struct Seen {
    started: bool,
    skipped: Option<String>,
    failed_logs: Vec<String>,
    records: Vec<String>,
    verdict: Option<bool>,
}

/// Reads the tool's stdout: the outcome of each of `tests` in their order, and CUnit's counts.
pub fn parse(stdout: &str, tests: &[&str]) -> (Vec<TestResult>, Option<Summary>) {
    let keys: Vec<Key> = tests.iter().map(|t| key_of(t)).collect();
    let mut seen: HashMap<Key, Seen> = HashMap::new();
    for (k, name) in keys.iter().zip(tests) {
        assert!(
            seen.insert(k.clone(), Seen::default()).is_none(),
            "{name}: listed twice (CUnit names only SUITE.TEST)"
        );
    }
    let mut suite = String::new();
    let mut state = State::Between;
    let mut summary = None;
    for line in stdout.lines() {
        let mut rest = line;
        // A line can hold a test's start, its verdict and cleanup output after it.
        while !rest.is_empty() {
            if let Some(name) = rest.strip_prefix("Suite: ") {
                suite = name.trim().into();
                state = State::Between;
                break;
            }
            if let Some(tail) = rest.strip_prefix("  Test: ") {
                let (test, after) = tail.split_once(" ...").unwrap_or((tail, ""));
                let k = Key {
                    suite: suite.clone(),
                    test: test.trim().into(),
                };
                if let Some(s) = seen.get_mut(&k) {
                    s.started = true;
                }
                state = State::Open(k);
                rest = after;
                continue;
            }
            if rest.starts_with("Run Summary:") {
                state = State::Summary;
                break;
            }
            match &state {
                State::Open(k) => {
                    let entry = seen.get_mut(k);
                    if let Some(after) = rest.strip_prefix("passed") {
                        if let Some(s) = entry {
                            s.verdict.get_or_insert(true);
                        }
                        state = State::Between;
                        rest = after;
                        continue;
                    }
                    if let Some(after) = rest.strip_prefix("FAILED") {
                        if let Some(s) = entry {
                            s.verdict.get_or_insert(false);
                        }
                        state = State::Records(k.clone());
                        rest = after;
                        continue;
                    }
                    if let Some(s) = entry {
                        note_log(s, rest);
                    }
                }
                State::Records(k) => match failure_record(rest) {
                    Some(record) => {
                        if let Some(s) = seen.get_mut(k) {
                            s.records.push(record.into());
                        }
                    }
                    None => state = State::Between,
                },
                State::Summary => {
                    if let Some(s) = summary_row(rest) {
                        summary = Some(s);
                        state = State::Between;
                    }
                }
                State::Between => {}
            }
            break;
        }
    }
    let results = keys
        .iter()
        .zip(tests)
        .map(|(k, name)| TestResult {
            name: (*name).into(),
            outcome: outcome(&seen[k]),
        })
        .collect();
    (results, summary)
}

fn outcome(s: &Seen) -> Outcome {
    match (s.verdict, &s.skipped) {
        (Some(false), _) => {
            let mut lines = s.failed_logs.clone();
            lines.extend(s.records.iter().cloned());
            Outcome::Failed(lines.join("\n"))
        }
        (Some(true), Some(reason)) => Outcome::Skipped(reason.clone()),
        (Some(true), None) => Outcome::Passed,
        (None, _) if s.started => Outcome::Failed(
            "no verdict: iscsi-test-cu ended during this test (see how it ended)".into(),
        ),
        (None, _) => Outcome::NotRun,
    }
}

/// A line a test logged before its verdict.
fn note_log(s: &mut Seen, line: &str) {
    let skip = ["[SKIPPED]", "[SKIPPING]"]
        .iter()
        .find_map(|m| line.split_once(m).map(|(_, reason)| reason));
    if let Some(reason) = skip {
        s.skipped.get_or_insert_with(|| reason.trim().into());
    } else if line.contains("[FAILED]") {
        s.failed_logs.push(line.trim().into());
    }
}

/// `    1. file.c:98  - CU_ASSERT...`: the record without its number, and without what a
/// suite's cleanup logged after it on the same line (CUnit ends a record with no newline;
/// libiscsi starts a log line with four spaces).
fn failure_record(line: &str) -> Option<&str> {
    let t = line.strip_prefix("    ")?;
    let (n, record) = t.split_once(". ")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(record.split("    ").next().unwrap_or(record).trim_end())
}

/// `               tests      4      4      3      1        0`: Total Ran Passed Failed Inactive.
fn summary_row(line: &str) -> Option<Summary> {
    let mut f = line.split_whitespace();
    if f.next()? != "tests" {
        return None;
    }
    let n: Vec<u32> = f.map(str::parse).collect::<Result<_, _>>().ok()?;
    match n[..] {
        [_total, ran, passed, failed, _inactive] => Some(Summary {
            ran,
            passed,
            failed,
        }),
        _ => None,
    }
}

impl Report {
    /// The tests that did not pass: failed, skipped or not run.
    pub fn not_passed(&self) -> Vec<&TestResult> {
        self.results
            .iter()
            .filter(|r| r.outcome != Outcome::Passed)
            .collect()
    }

    /// Checks the parse against CUnit's own counts: every test run has a verdict, as many
    /// failed. A mismatch means the report's format is not the one this module reads.
    pub fn agrees_with_cunit(&self) -> Result<(), String> {
        let Some(s) = self.summary else {
            return Err("no Run Summary: the tool ended early".into());
        };
        let count =
            |f: fn(&Outcome) -> bool| self.results.iter().filter(|r| f(&r.outcome)).count() as u32;
        let failed = count(|o| matches!(o, Outcome::Failed(_)));
        let passed = count(|o| matches!(o, Outcome::Passed | Outcome::Skipped(_)));
        if (s.ran, s.passed, s.failed) == (passed + failed, passed, failed) {
            Ok(())
        } else {
            Err(format!(
                "CUnit counted {s:?}; parsed {passed} passed or skipped, {failed} failed"
            ))
        }
    }

    /// One line per test (PASS, FAIL, SKIP, ----), failure messages indented under their
    /// test, then how the run ended; the tool's stderr when a test did not run.
    pub fn table(&self) -> String {
        let width = self.results.iter().map(|r| r.name.len()).max().unwrap_or(0);
        let mut t = String::new();
        for r in &self.results {
            let (tag, text) = match &r.outcome {
                Outcome::Passed => ("PASS", ""),
                Outcome::Failed(m) => ("FAIL", m.as_str()),
                Outcome::Skipped(m) => ("SKIP", m.as_str()),
                Outcome::NotRun => ("----", "not run"),
            };
            let mut lines = text.lines();
            let first = format!("{tag}  {:width$}  {}", r.name, lines.next().unwrap_or(""));
            let _ = writeln!(t, "{}", first.trim_end());
            for l in lines {
                let _ = writeln!(t, "{:w$}{l}", "", w = width + 8);
            }
        }
        let count =
            |tag: fn(&Outcome) -> bool| self.results.iter().filter(|r| tag(&r.outcome)).count();
        let _ = writeln!(
            t,
            "{} passed, {} failed, {} skipped, {} not run of {}; {} after {:.1} s; CUnit: {:?}",
            count(|o| *o == Outcome::Passed),
            count(|o| matches!(o, Outcome::Failed(_))),
            count(|o| matches!(o, Outcome::Skipped(_))),
            count(|o| *o == Outcome::NotRun),
            self.results.len(),
            self.end,
            self.elapsed.as_secs_f64(),
            self.summary,
        );
        if self.results.iter().any(|r| r.outcome == Outcome::NotRun) {
            let _ = writeln!(t, "{TEST_TOOL} stderr:\n{}", self.stderr.trim_end());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of iscsi-test-cu 1.19 (tgtd and cowd runs), with a run cut short.
    const REPORT: &str = "\n\n     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: Read10
  Test: Simple ...passed
Suite: Unmap
  Test: Simple ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
passed
Suite: iSCSIdatasn
  Test: iSCSIDataSnInvalid ...    [FAILED] WRITE10 command failed with status 2 / sense key COMMAND ABORTED(0x0b)
FAILED
    1. test_iscsi_datasn_invalid.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)
    2. test_iscsi_datasn_invalid.c:116  - CU_ASSERT_NOT_EQUAL(ret,0)
Suite: WriteSame16
  Test: UnmapVPD ...    [FAILED] WRITESAME16 command failed with status 2 / sense key ILLEGAL_REQUEST(0x05)
passed
Suite: Inquiry
  Test: Standard ...passed    [SKIPPED] PERSISTENT RESERVE IN is not implemented.

Suite: GetLBAStatus
  Test: UnmapSingle ...FAILED
    1. test_get_lba_status_unmap_single.c:135  - CU_FAIL(\"lba offset\")    Send PRIN/READ_KEYS

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      6      6    n/a      0        0
               tests      6      6      4      2        0
             asserts     10     10      8      2      n/a

Elapsed time =    0.065 seconds
Tests completed with return value: 0
";

    const NAMES: [&str; 7] = [
        "SCSI.Read10.Simple",
        "SCSI.Unmap.Simple",
        "iSCSI.iSCSIdatasn.iSCSIDataSnInvalid",
        "SCSI.WriteSame16.UnmapVPD",
        "SCSI.Inquiry.Standard",
        "SCSI.GetLBAStatus.UnmapSingle",
        "SCSI.Read10.BeyondEol",
    ];

    fn outcomes(stdout: &str) -> Vec<Outcome> {
        parse(stdout, &NAMES)
            .0
            .into_iter()
            .map(|r| r.outcome)
            .collect()
    }

    #[test]
    fn verdicts_skips_and_cleanup_output_are_told_apart() {
        let (results, summary) = parse(REPORT, &NAMES);
        let got: Vec<&Outcome> = results.iter().map(|r| &r.outcome).collect();
        assert_eq!(
            got,
            [
                &Outcome::Passed,
                &Outcome::Skipped("Logical unit is fully provisioned. Skipping test".into()),
                &Outcome::Failed(
                    "[FAILED] WRITE10 command failed with status 2 / sense key COMMAND \
                     ABORTED(0x0b)\ntest_iscsi_datasn_invalid.c:98  - \
                     CU_ASSERT_NOT_EQUAL(ret,0)\ntest_iscsi_datasn_invalid.c:116  - \
                     CU_ASSERT_NOT_EQUAL(ret,0)"
                        .into()
                ),
                // Logged a refusal, then accepted it: CUnit's verdict stands.
                &Outcome::Passed,
                // The "[SKIPPED]" after the verdict is the suite's cleanup.
                &Outcome::Passed,
                &Outcome::Failed(
                    "test_get_lba_status_unmap_single.c:135  - CU_FAIL(\"lba offset\")".into()
                ),
                &Outcome::NotRun,
            ]
        );
        assert_eq!(
            summary,
            Some(Summary {
                ran: 6,
                passed: 4,
                failed: 2
            })
        );
        assert_eq!(results[0].name, "SCSI.Read10.Simple");
    }

    #[test]
    fn a_test_without_a_verdict_failed_and_the_rest_did_not_run() {
        let cut = &REPORT[..REPORT.find("Suite: WriteSame16").unwrap() + 40];
        let got = outcomes(cut);
        assert!(matches!(&got[3], Outcome::Failed(m) if m.starts_with("no verdict")));
        assert_eq!(
            got[4..],
            [Outcome::NotRun, Outcome::NotRun, Outcome::NotRun]
        );
        assert_eq!(parse(cut, &NAMES).1, None);
    }

    #[test]
    fn the_report_agrees_with_cunits_counts() {
        let (results, summary) = parse(REPORT, &NAMES);
        let mut r = Report {
            results,
            summary,
            end: End::Killed(Duration::ZERO),
            elapsed: Duration::ZERO,
            stdout: String::new(),
            stderr: String::new(),
        };
        r.agrees_with_cunit().unwrap();
        assert_eq!(r.not_passed().len(), 4);
        let table = r.table();
        assert!(table.contains("SKIP  SCSI.Unmap.Simple "), "{table}");
        assert!(table.contains("----  SCSI.Read10.BeyondEol"), "{table}");
        r.summary = Some(Summary {
            ran: 6,
            passed: 5,
            failed: 1,
        });
        assert!(r.agrees_with_cunit().is_err());
    }

    #[test]
    #[should_panic(expected = "a pattern")]
    fn patterns_are_refused() {
        parse("", &["SCSI.Read10.*"]);
    }

    #[test]
    #[should_panic(expected = "listed twice")]
    fn a_test_listed_twice_is_refused() {
        parse("", &["SCSI.Read10.Simple", "ALL.Read10.Simple"]);
    }
}
