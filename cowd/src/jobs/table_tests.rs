//! [`LocalTable`] on a manual clock: claims, leases, marks, the end of a job, and what `list`
//! shows. Leases are [`LEASE`] long; time moves only by `advance`.

use super::*;
use crate::jobs::testing::spec;

const LEASE: Duration = Duration::from_millis(1000);

/// A manual table with live movers `movers` and one job submitted.
fn table_with(movers: &[&str]) -> (LocalTable, JobId) {
    let t = LocalTable::manual();
    for m in movers {
        t.heartbeat(m, LEASE).unwrap();
    }
    let id = t.submit(spec(4096)).unwrap();
    (t, id)
}

fn view(t: &LocalTable, id: JobId) -> JobView {
    t.list()
        .unwrap()
        .into_iter()
        .find(|v| v.id == id)
        .unwrap_or_else(|| panic!("job {id} not listed"))
}

fn open_ids(t: &LocalTable, mover: &str) -> Vec<JobId> {
    t.open_jobs(mover)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn failed(error: JobError, reason: &str) -> Outcome {
    Outcome::Failed {
        error,
        segment: 0,
        source: false,
        reason: reason.into(),
    }
}

#[test]
fn a_claim_is_exclusive() {
    let (t, id) = table_with(&["a", "b"]);
    assert_eq!(open_ids(&t, "a"), vec![id]);
    assert!(t.claim(id, "a").unwrap());
    assert!(!t.claim(id, "b").unwrap(), "b claimed a job a holds");
    assert!(open_ids(&t, "b").is_empty(), "a held job is open to b");
    let v = view(&t, id);
    assert_eq!((v.mover.as_deref(), v.claims), (Some("a"), 1));
    // A mover the table never heard of claims nothing.
    let other = t.submit(spec(1)).unwrap();
    assert!(!t.claim(other, "ghost").unwrap());
    assert!(!t.claim(999, "a").unwrap(), "a job not in the table");
}

/// The table side of the model's `a_mover_cut_off_from_the_table_mid_copy_takes_its_job_up_again`:
/// a holder looking for jobs again stopped copying its own, and must get it back.
#[test]
fn a_holder_that_stopped_claims_its_job_again_anew() {
    let (t, id) = table_with(&["a", "b"]);
    assert!(t.claim(id, "a").unwrap());
    assert!(t.progress(id, "a", 2048, "be0 -> /v").unwrap());
    assert_eq!(open_ids(&t, "a"), vec![id], "its own job is open to it");
    assert!(t.claim(id, "a").unwrap());
    let v = view(&t, id);
    assert_eq!(
        (v.mover.as_deref(), v.claims, v.bytes, v.path),
        (Some("a"), 2, 0, None)
    );
    assert!(!t.claim(id, "b").unwrap(), "still exclusive");
}

#[test]
fn the_claim_of_a_mover_whose_lease_expired_is_void() {
    let (t, id) = table_with(&["a", "b"]);
    assert!(t.claim(id, "a").unwrap());
    assert!(t.progress(id, "a", 512, "be0 -> /v").unwrap());
    t.advance(LEASE / 2);
    t.heartbeat("b", LEASE).unwrap();
    assert!(open_ids(&t, "b").is_empty(), "a's lease still lives");
    t.advance(LEASE / 2);
    // a's lease ended exactly now: its claim is void and the job open again.
    assert_eq!(t.live_movers(), vec!["b".to_owned()]);
    assert_eq!(open_ids(&t, "b"), vec![id]);
    assert_eq!(view(&t, id).mover, None);
    assert_eq!(view(&t, id).state(), "queued");
    assert!(
        !t.progress(id, "a", 1024, "be0 -> /v").unwrap(),
        "a must stop"
    );
    assert!(!t.claim(id, "a").unwrap(), "a mover without a lease claims");
    assert!(t.claim(id, "b").unwrap());
    let v = view(&t, id);
    assert_eq!(
        (v.mover.as_deref(), v.claims, v.bytes, v.path),
        (Some("b"), 2, 0, None)
    );
    // a comes back: the job is b's, a may not finish it.
    t.heartbeat("a", LEASE).unwrap();
    assert!(!t.finish(id, "a", Outcome::Done { bytes: 4096 }).unwrap());
    assert!(t.finish(id, "b", Outcome::Done { bytes: 4096 }).unwrap());
    assert_eq!(view(&t, id).outcome, Some(Outcome::Done { bytes: 4096 }));
}

#[test]
fn only_the_holder_checkpoints_and_a_takeover_resumes_there() {
    let (t, id) = table_with(&["a", "b"]);
    assert_eq!(t.resume_at(id).unwrap(), 0, "a new job starts at 0");
    assert!(!t.checkpoint(id, "a", 1024).unwrap(), "not claimed yet");
    assert!(t.claim(id, "a").unwrap());
    assert!(t.checkpoint(id, "a", 1024).unwrap());
    assert!(!t.checkpoint(id, "b", 4096).unwrap(), "b does not hold it");
    assert_eq!(
        (t.resume_at(id).unwrap(), view(&t, id).durable),
        (1024, 1024)
    );
    // a's lease ends; b takes the job over where a's checkpoint says.
    t.advance(LEASE);
    t.heartbeat("b", LEASE).unwrap();
    assert!(!t.checkpoint(id, "a", 2048).unwrap(), "a must stop");
    assert!(t.claim(id, "b").unwrap());
    assert_eq!(t.resume_at(id).unwrap(), 1024);
    assert!(t.checkpoint(id, "b", 3072).unwrap());
    assert!(t.finish(id, "b", Outcome::Done { bytes: 4096 }).unwrap());
    assert!(!t.checkpoint(id, "b", 4096).unwrap(), "an ended job");
    assert_eq!(view(&t, id).durable, 3072);
    assert!(t.resume_at(999).is_err(), "a job not in the table");
}

#[test]
fn leave_voids_the_claims_at_once() {
    let (t, id) = table_with(&["a", "b"]);
    assert!(t.claim(id, "a").unwrap());
    t.leave("a").unwrap();
    assert_eq!(open_ids(&t, "b"), vec![id]);
    assert!(!t.progress(id, "a", 1, "p").unwrap());
}

#[test]
fn progress_and_finish_by_a_non_holder_return_false_and_change_nothing() {
    let (t, id) = table_with(&["a", "b"]);
    // Nobody holds it yet.
    assert!(!t.progress(id, "a", 1, "x").unwrap());
    assert!(!t.finish(id, "a", Outcome::Done { bytes: 1 }).unwrap());
    assert_eq!(view(&t, id).outcome, None);
    assert!(t.claim(id, "a").unwrap());
    assert!(t.progress(id, "a", 2048, "be0 -> /v").unwrap());
    let before = view(&t, id);
    assert!(!t.progress(id, "b", 4096, "be1 -> /w").unwrap());
    assert!(!t.finish(id, "b", Outcome::Done { bytes: 4096 }).unwrap());
    let failure = failed(JobError::DeviceFailure, "b's disk");
    assert!(!t.finish(id, "b", failure).unwrap());
    assert!(
        !t.progress(999, "a", 1, "x").unwrap(),
        "a job not in the table"
    );
    assert!(!t.finish(999, "a", Outcome::Done { bytes: 1 }).unwrap());
    assert_eq!(view(&t, id), before);
    assert_eq!(
        (before.bytes, before.path.as_deref()),
        (2048, Some("be0 -> /v"))
    );
}

#[test]
fn a_mover_marked_unavailable_never_sees_the_job_again() {
    let (t, id) = table_with(&["a", "b"]);
    assert!(t.claim(id, "a").unwrap());
    t.unavailable(id, "a", "copy target vault not reached")
        .unwrap();
    let v = view(&t, id);
    assert_eq!(v.mover, None, "the mark releases the claim");
    assert_eq!(v.outcome, None, "b may still try");
    assert_eq!(
        v.unavailable.get("a").map(String::as_str),
        Some("copy target vault not reached")
    );
    assert!(open_ids(&t, "a").is_empty());
    assert!(!t.claim(id, "a").unwrap());
    assert_eq!(open_ids(&t, "b"), vec![id]);
    assert!(t.claim(id, "b").unwrap());
    // The mark stays while b holds the job and after its lease ends; a fresh lease of a does
    // not lift it.
    t.advance(LEASE * 2);
    t.heartbeat("a", LEASE).unwrap();
    t.heartbeat("c", LEASE).unwrap();
    assert!(open_ids(&t, "a").is_empty());
    assert_eq!(open_ids(&t, "c"), vec![id]);
}

#[test]
fn when_every_live_mover_is_marked_the_job_fails_not_reachable_with_every_reason() {
    let (t, id) = table_with(&["a", "b", "dead"]);
    t.advance(LEASE / 2);
    t.heartbeat("a", LEASE).unwrap();
    t.heartbeat("b", LEASE).unwrap();
    t.advance(LEASE / 2);
    // "dead" is not live any more: a and b are all there is.
    assert!(t.claim(id, "a").unwrap());
    t.unavailable(id, "a", "no initiator port in group g")
        .unwrap();
    assert_eq!(t.settle(id).unwrap(), None, "b has not tried");
    assert!(t.claim(id, "b").unwrap());
    t.unavailable(id, "b", "be1 -> /v: down").unwrap();
    let expected = failed(
        JobError::NotReachable,
        "mover a: no initiator port in group g; mover b: be1 -> /v: down",
    );
    assert_eq!(view(&t, id).outcome, Some(expected.clone()));
    assert_eq!(t.settle(id).unwrap(), Some(expected.clone()));
    assert_eq!(view(&t, id).state(), "failed");
}

#[test]
fn a_job_held_by_a_live_mover_is_not_settled() {
    let (t, id) = table_with(&["a", "b"]);
    t.unavailable(id, "a", "down").unwrap();
    assert!(t.claim(id, "b").unwrap());
    assert_eq!(t.settle(id).unwrap(), None);
    // b dies while copying: every live mover (a) has marked it.
    t.advance(LEASE / 2);
    t.heartbeat("a", LEASE).unwrap();
    t.advance(LEASE / 2);
    assert_eq!(
        t.settle(id).unwrap(),
        Some(failed(JobError::NotReachable, "mover a: down"))
    );
}

#[test]
fn without_a_live_mover_a_job_fails_after_the_grace_period() {
    let t = LocalTable::manual().with_grace(Duration::from_secs(3));
    let id = t.submit(spec(1)).unwrap();
    t.advance(Duration::from_millis(2999));
    assert_eq!(t.settle(id).unwrap(), None, "movers may still be starting");
    t.advance(Duration::from_millis(1));
    let expected = failed(JobError::NotReachable, "no data mover is running");
    assert_eq!(t.settle(id).unwrap(), Some(expected.clone()));
    assert_eq!(wait_settled(&t, id).unwrap(), expected, "wait_settled ends");
    assert!(t.settle(999).is_err(), "a job not in the table");
}

#[test]
fn a_mover_that_starts_within_the_grace_period_gets_the_job() {
    let t = LocalTable::manual().with_grace(Duration::from_secs(3));
    let id = t.submit(spec(1)).unwrap();
    t.advance(Duration::from_secs(2));
    t.heartbeat("late", LEASE).unwrap();
    t.advance(Duration::from_secs(2));
    t.heartbeat("late", LEASE).unwrap();
    assert_eq!(t.settle(id).unwrap(), None);
    assert!(t.claim(id, "late").unwrap());
}

#[test]
fn an_ended_job_never_changes() {
    let (t, id) = table_with(&["a", "b"]);
    assert!(t.claim(id, "a").unwrap());
    assert!(t.progress(id, "a", 1024, "be0 -> /v").unwrap());
    t.cancel(id, "operator").unwrap();
    let ended = view(&t, id);
    assert_eq!(ended.outcome, Some(failed(JobError::Cancelled, "operator")));
    assert_eq!((ended.mover.as_deref(), ended.state()), (None, "failed"));

    assert!(!t.finish(id, "a", Outcome::Done { bytes: 4096 }).unwrap());
    assert!(!t.progress(id, "a", 2048, "be0 -> /v").unwrap());
    assert!(!t.claim(id, "b").unwrap());
    assert!(open_ids(&t, "b").is_empty());
    t.cancel(id, "twice").unwrap();
    t.unavailable(id, "b", "down").unwrap();
    t.advance(LEASE * 10);
    assert_eq!(t.settle(id).unwrap(), ended.outcome);
    assert_eq!(view(&t, id), ended);

    // The same after a finish by the holder.
    let (t, id) = table_with(&["a"]);
    assert!(t.claim(id, "a").unwrap());
    assert!(t.finish(id, "a", Outcome::Done { bytes: 4096 }).unwrap());
    let ended = view(&t, id);
    assert!(
        !t.finish(id, "a", failed(JobError::DeviceFailure, "late"))
            .unwrap(),
        "finished twice"
    );
    t.cancel(id, "too late").unwrap();
    t.unavailable(id, "a", "down").unwrap();
    assert_eq!(view(&t, id), ended);
    assert_eq!((ended.state(), ended.bytes), ("done", 4096));
}

#[test]
fn wait_returns_the_outcome_once_there_is_one() {
    let (t, id) = table_with(&["a"]);
    let t = std::sync::Arc::new(t);
    assert_eq!(t.wait(id, Duration::from_millis(10)).unwrap(), None);
    let waiter = {
        let t = t.clone();
        std::thread::spawn(move || t.wait(id, Duration::from_secs(30)))
    };
    assert!(t.claim(id, "a").unwrap());
    assert!(t.finish(id, "a", Outcome::Done { bytes: 4096 }).unwrap());
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(got, Some(Outcome::Done { bytes: 4096 }));
    assert_eq!(
        t.wait(id, Duration::ZERO).unwrap(),
        Some(Outcome::Done { bytes: 4096 })
    );
    assert!(
        t.wait(999, Duration::ZERO).is_err(),
        "a job not in the table"
    );
}

#[test]
fn list_shows_state_mover_bytes_and_claims() {
    let t = LocalTable::manual();
    t.heartbeat("a", LEASE).unwrap();
    t.heartbeat("b", LEASE).unwrap();
    let queued = t.submit(spec(10)).unwrap();
    let copying = t.submit(spec(20)).unwrap();
    let done = t.submit(spec(30)).unwrap();
    let failing = t.submit(spec(40)).unwrap();

    assert!(t.claim(copying, "a").unwrap());
    assert!(t.progress(copying, "a", 7, "be0 -> /v").unwrap());
    assert!(t.claim(done, "b").unwrap());
    assert!(t.progress(done, "b", 5, "be1 -> /w").unwrap());
    assert!(t.finish(done, "b", Outcome::Done { bytes: 30 }).unwrap());
    assert!(t.claim(failing, "b").unwrap());
    let broke = failed(JobError::DeviceFailure, "vault: EIO");
    assert!(t.finish(failing, "b", broke.clone()).unwrap());

    let list = t.list().unwrap();
    let row = |v: &JobView| (v.id, v.state(), v.mover.clone(), v.bytes, v.claims);
    let rows: Vec<_> = list.iter().map(row).collect();
    assert_eq!(
        rows,
        vec![
            (queued, "queued", None, 0, 0),
            (copying, "copying", Some("a".to_owned()), 7, 1),
            (done, "done", None, 30, 1),
            (failing, "failed", None, 0, 1),
        ]
    );
    assert_eq!(list[1].path.as_deref(), Some("be0 -> /v"));
    assert_eq!(list[1].spec, spec(20));
    assert_eq!(list[3].outcome, Some(broke));
}

#[test]
fn only_the_newest_ended_jobs_are_kept() {
    let t = LocalTable::manual();
    let open = t.submit(spec(1)).unwrap();
    let ids: Vec<JobId> = (0..KEEP_ENDED + 5)
        .map(|_| t.submit(spec(1)).unwrap())
        .collect();
    for &id in &ids {
        t.cancel(id, "enough").unwrap();
    }
    let listed: Vec<JobId> = t.list().unwrap().iter().map(|v| v.id).collect();
    let mut expected = vec![open];
    expected.extend_from_slice(&ids[5..]);
    assert_eq!(
        listed, expected,
        "the open job stays, the 5 oldest ended go"
    );
    assert!(t.wait(ids[0], Duration::ZERO).is_err());
    assert!(t.settle(ids[4]).is_err());
    assert!(t.settle(ids[5]).unwrap().is_some());
}

/// Found by `an_ended_job_never_changes`: a mover that reports `unavailable` for a job
/// cancelled meanwhile added its mark to the ended job.
#[test]
fn a_mark_after_the_end_changes_nothing() {
    let (t, id) = table_with(&["a"]);
    assert!(t.claim(id, "a").unwrap());
    t.cancel(id, "operator").unwrap();
    let ended = view(&t, id);
    t.unavailable(id, "a", "copy target vault not reached")
        .unwrap();
    assert_eq!(view(&t, id).unavailable, ended.unavailable);
}
