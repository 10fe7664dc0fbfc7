//! The rules of the list table alone: identifiers, bounds, what is held and for how long.

use super::*;

fn failure() -> FailedSegmentDetails {
    FailedSegmentDetails {
        scsi_status: 0x02,
        sense: vec![
            0x70, 0, 0x0A, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x0D, 0x02, 0, 0, 0, 0,
        ],
    }
}

#[test]
fn identifiers_are_unique_among_running_lists_only() {
    let lists = Arc::new(Lists::default());
    let first = lists.begin(1, ListIdUsage::Hold).unwrap();
    assert_eq!(
        lists.begin(1, ListIdUsage::Discard).unwrap_err(),
        Refused::InProgress
    );
    let unnamed: Vec<_> = (0..2)
        .map(|_| lists.begin(1, ListIdUsage::Unnamed).unwrap())
        .collect();
    first.finish(None);
    let again = lists.begin(1, ListIdUsage::Hold).unwrap();
    assert!(
        lists.copy_status(1, 12).unwrap()[4] == 0x00,
        "the new list 1 runs; the old result went"
    );
    drop((again, unnamed));
    assert_eq!(
        lists.copy_status(1, 12),
        None,
        "dropped without finishing: forgotten"
    );
}

#[test]
fn at_most_max_running_lists_run() {
    let lists = Arc::new(Lists::default());
    let running: Vec<_> = (0..MAX_RUNNING as u8)
        .map(|i| lists.begin(i, ListIdUsage::Hold).unwrap())
        .collect();
    assert_eq!(
        lists.begin(200, ListIdUsage::Unnamed).unwrap_err(),
        Refused::TooMany
    );
    drop(running);
    assert!(lists.begin(200, ListIdUsage::Unnamed).is_ok());
}

#[test]
fn held_results_are_bounded_oldest_first() {
    let lists = Arc::new(Lists::default());
    for id in 0..=HELD as u8 {
        lists.begin(id, ListIdUsage::Hold).unwrap().finish(None);
    }
    assert_eq!(lists.copy_status(0, 12), None, "the oldest went");
    assert_eq!(lists.copy_status(1, 12).unwrap()[4], 0x01);
    assert_eq!(lists.copy_status(HELD as u8, 12).unwrap()[4], 0x01);
}

#[test]
fn a_failure_is_held_until_its_status_and_details_were_both_reported() {
    let lists = Arc::new(Lists::default());
    lists
        .begin(5, ListIdUsage::Hold)
        .unwrap()
        .finish(Some(failure()));
    assert_eq!(lists.copy_status(5, 12).unwrap()[4], 0x02);
    let whole = results::failed_segment_details(Some(&failure()), u32::MAX);
    let part = lists.failed_segment_details(5, 20).unwrap();
    assert_eq!(part, whole[..20], "cut, and still held");
    assert_eq!(lists.failed_segment_details(5, 1024).unwrap(), whole);
    assert_eq!(
        lists.failed_segment_details(5, 1024),
        None,
        "both reported: gone"
    );

    // An allocation length of 0 discards the details.
    lists
        .begin(6, ListIdUsage::Hold)
        .unwrap()
        .finish(Some(failure()));
    assert!(lists.failed_segment_details(6, 0).unwrap().is_empty());
    assert_eq!(lists.failed_segment_details(6, 1024).unwrap(), [0, 0, 0, 0]);
    assert_eq!(
        lists.copy_status(6, 12).unwrap()[4],
        0x02,
        "still completed with error"
    );
    assert_eq!(lists.copy_status(6, 12), None);
}

#[test]
fn results_of_discarding_lists_are_not_held() {
    let lists = Arc::new(Lists::default());
    let t = lists.begin(9, ListIdUsage::Discard).unwrap();
    assert_eq!(
        lists.copy_status(9, 12).unwrap()[4],
        0x00,
        "known while it runs"
    );
    t.finish(Some(failure()));
    assert_eq!(lists.copy_status(9, 12), None);
    assert_eq!(ListIdUsage::from_bits(0b01), None);
}
