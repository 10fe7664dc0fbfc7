//! The pure parts of the etcd table: the key layout, the JSON the gateway takes and gives, and
//! the rules read off a snapshot of keys. The table against a real etcd is scenario
//! `movers_etcd` of the integration tests.

use serde_json::json;

use super::gateway::{self, Cmp, Kv, Op, Txn};
use super::*;
use crate::jobs::testing::spec;

fn keys() -> Keys {
    Keys::new(DEFAULT_PREFIX)
}

fn kv(key: Vec<u8>, value: &[u8]) -> Kv {
    Kv {
        key,
        value: value.to_vec(),
        version: 1,
        ..Kv::default()
    }
}

fn job_kv(id: JobId, bytes: u64) -> Kv {
    kv(keys().job(id), &json(&JobRecord { spec: spec(bytes) }))
}

fn movers(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn job_keys_sort_as_job_numbers_and_parse_back() {
    let k = keys();
    let mut ids = [9, 10, 100, 2, 1_000_000_000_000];
    let mut sorted: Vec<Vec<u8>> = ids.iter().map(|&i| k.job(i)).collect();
    sorted.sort();
    ids.sort();
    let parsed: Vec<Key> = sorted.iter().map(|key| k.parse(key).unwrap()).collect();
    assert_eq!(parsed, ids.map(Key::Job).to_vec());
    assert_eq!(k.job(7), b"/cowd/jobs/00000000000000000007".to_vec());
    assert_eq!(k.parse(&k.mark(3, "m/1")), Some(Key::Mark(3, "m/1".into())));
    assert_eq!(
        k.parse(&k.mover("host-b")),
        Some(Key::Mover("host-b".into()))
    );
    assert_eq!(k.parse(&k.next()), Some(Key::Next));
    // Every key of a job is found again by the job's number.
    for key in k.all_of(42).iter().take(7) {
        let id = match k.parse(key).unwrap() {
            Key::Job(i) | Key::Grace(i) | Key::Claim(i) | Key::Claimed(i) => i,
            Key::Progress(i) | Key::Durable(i) | Key::Outcome(i) => i,
            other => panic!("{other:?}"),
        };
        assert_eq!(id, 42);
    }
    // Keys outside the layout, or of another prefix, are not the table's.
    for other in [
        "/cowd/jobs/7",
        "/cowd/what/00000000000000000007",
        "/other/next",
        "/cowd/movers/",
    ] {
        assert_eq!(k.parse(other.as_bytes()), None, "{other}");
    }
}

#[test]
fn a_prefix_range_ends_after_the_last_key_with_the_prefix() {
    assert_eq!(gateway::prefix_end(b"/cowd/"), b"/cowd0".to_vec());
    assert_eq!(gateway::prefix_end(b"a\xff\xff"), b"b".to_vec());
    assert_eq!(gateway::prefix_end(b"\xff"), vec![0]);
}

#[test]
fn endpoints_and_prefixes_are_checked() {
    assert_eq!(
        check_endpoint("http://10.0.0.1:2379/").unwrap(),
        "http://10.0.0.1:2379"
    );
    assert_eq!(
        check_endpoint("http://[::1]:2379").unwrap(),
        "http://[::1]:2379"
    );
    for bad in [
        "https://h:2379",
        "h:2379",
        "http://h",
        "http://h:2379/v3",
        "http://[::1]",
        "http://:x",
    ] {
        assert!(check_endpoint(bad).is_err(), "{bad}");
    }
    assert_eq!(check_prefix("/cowd").unwrap(), "/cowd/");
    assert_eq!(check_prefix("/a/b/").unwrap(), "/a/b/");
    assert!(check_prefix("").is_err());
}

#[test]
fn a_transaction_is_sent_in_the_gateways_json() {
    let txn = Txn {
        when: vec![
            Cmp::Absent(b"k".to_vec()),
            Cmp::ValueIs(b"c".to_vec(), b"m1".to_vec()),
            Cmp::PrefixModBelow(b"/m/".to_vec(), 8),
        ],
        then: vec![
            Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: Some(7587869_0000000001),
            },
            Op::Delete(b"c".to_vec()),
            Op::Keys(b"/m/".to_vec()),
        ],
        otherwise: Vec::new(),
    };
    assert_eq!(
        txn.to_json(),
        json!({
            "compare": [
                { "key": "aw==", "target": "CREATE", "result": "EQUAL", "create_revision": "0" },
                { "key": "Yw==", "target": "VALUE", "result": "EQUAL", "value": "bTE=" },
                { "key": "L20v", "range_end": "L20w", "target": "MOD", "result": "LESS",
                  "mod_revision": "8" },
            ],
            "success": [
                { "request_put": { "key": "aw==", "value": "dg==", "lease": "75878690000000001" } },
                { "request_delete_range": { "key": "Yw==" } },
                { "request_range": { "key": "L20v", "range_end": "L20w", "keys_only": true } },
            ],
            "failure": [],
        })
    );
}

#[test]
fn answers_are_read_as_etcd_3_4_writes_them() {
    // As etcd 3.4.23 answered a transaction whose compare failed, and one that succeeded.
    let failed = json!({
        "header": { "cluster_id": "7801232528081817440", "revision": "2", "raft_term": "2" },
        "responses": [{ "response_range": { "header": { "revision": "2" }, "kvs": [{
            "key": "L2Nvd2QvYQ==", "create_revision": "2", "mod_revision": "2", "version": "1",
            "value": "aGVsbG8=", "lease": "5007618236549650957"
        }], "count": "1" } }]
    });
    let r = gateway::parse_txn(&failed).unwrap();
    assert!(!r.succeeded, "a missing `succeeded` is false");
    assert_eq!(r.revision, 2);
    assert_eq!(
        r.kvs,
        vec![Kv {
            key: b"/cowd/a".to_vec(),
            value: b"hello".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease: 5007618236549650957,
        }]
    );
    let done = json!({ "header": { "revision": "3" }, "succeeded": true,
        "responses": [{ "response_delete_range": { "header": { "revision": "3" }, "deleted": "1" } }] });
    let r = gateway::parse_txn(&done).unwrap();
    assert!(r.succeeded && r.kvs.is_empty());
    // A keepalive of a live lease, then of one that expired (no TTL).
    let live = r#"{"result":{"header":{"revision":"4"},"ID":"5007618236549650957","TTL":"2"}}"#;
    assert_eq!(gateway::parse_keepalive(&format!("{live}\n")).unwrap(), 2);
    let gone = r#"{"result":{"header":{"revision":"5"},"ID":"5007618236549650957"}}"#;
    assert_eq!(gateway::parse_keepalive(gone).unwrap(), 0);
    assert!(gateway::parse_kvs(&json!({ "kvs": [{ "key": "not base64!" }] })).is_err());
}

#[test]
fn a_job_is_open_unless_ended_held_by_another_or_marked_by_the_mover() {
    let k = keys();
    let kvs = vec![
        job_kv(1, 10),
        job_kv(2, 20),
        kv(k.claim(2), b"a"),
        job_kv(3, 30),
        kv(k.outcome(3), &json(&Outcome::Done { bytes: 30 })),
        job_kv(4, 40),
        kv(k.mark(4, "b"), b"no path"),
        // A claim left of a job already pruned is not a job.
        kv(k.claim(5), b"a"),
    ];
    let snap = Snapshot::from_kvs(&k, &kvs).unwrap();
    let open = |m: &str| -> Vec<JobId> {
        snap.jobs
            .iter()
            .filter(|(_, s)| s.open_for(m))
            .map(|(&id, _)| id)
            .collect()
    };
    assert_eq!(open("a"), vec![1, 2, 4], "a's own job stays open to a");
    assert_eq!(open("b"), vec![1]);
    assert_eq!(open("c"), vec![1, 4]);
}

#[test]
fn keys_read_without_values_count_by_their_presence() {
    let k = keys();
    let kvs = vec![
        kv(k.job(1), b""),
        kv(k.job(2), b""),
        kv(k.outcome(2), b""),
        kv(k.mark(1, "b"), b""),
    ];
    let snap = Snapshot::from_kvs(&k, &kvs).unwrap();
    assert!(snap.jobs[&1].exists && snap.jobs[&1].spec.is_none());
    assert!(snap.jobs[&1].open_for("a") && !snap.jobs[&1].open_for("b"));
    assert!(snap.jobs[&2].ended && !snap.jobs[&2].open_for("a"));
    // A value that is there is read whole, or refused with its key.
    let bad = Snapshot::from_kvs(&k, &[kv(k.job(3), b"{not json")]).unwrap_err();
    assert!(bad.contains("/cowd/jobs/00000000000000000003"), "{bad}");
}

#[test]
fn a_job_is_stranded_when_every_live_mover_marked_it_and_nobody_holds_it() {
    let k = keys();
    let mut kvs = vec![
        job_kv(1, 10),
        kv(k.mark(1, "a"), b"no path"),
        kv(k.grace(1), b""),
    ];
    let stored = |kvs: &[Kv]| {
        Snapshot::from_kvs(&k, kvs)
            .unwrap()
            .jobs
            .remove(&1)
            .unwrap()
    };
    assert!(stored(&kvs).stranded(&movers(&["a"])));
    assert!(
        !stored(&kvs).stranded(&movers(&["a", "b"])),
        "b may still try"
    );
    // In its grace period a job waits for a mover to come.
    assert!(!stored(&kvs).stranded(&movers(&[])));
    kvs.retain(|kv| kv.key != k.grace(1));
    assert!(stored(&kvs).stranded(&movers(&[])));
    kvs.push(kv(k.claim(1), b"b"));
    assert!(
        !stored(&kvs).stranded(&movers(&["a"])),
        "held by b (alive while its claim is)"
    );
}

#[test]
fn a_view_shows_holder_progress_claims_and_outcome() {
    let k = keys();
    let progress = Progress {
        bytes: 7,
        path: "be0 -> nbd://v/vault".into(),
        mover: "a".into(),
    };
    let kvs = vec![
        job_kv(1, 20),
        kv(k.claim(1), b"a"),
        Kv {
            version: 2,
            ..kv(k.claimed(1), b"a")
        },
        kv(k.progress(1), &json(&progress)),
        kv(k.durable(1), b"4"),
        kv(k.mark(1, "b"), b"no path"),
        job_kv(2, 30),
        kv(k.outcome(2), &json(&Outcome::Done { bytes: 30 })),
    ];
    let views: Vec<JobView> = Snapshot::from_kvs(&k, &kvs)
        .unwrap()
        .jobs
        .into_iter()
        .filter_map(|(id, s)| s.view(id))
        .collect();
    let row = |v: &JobView| (v.id, v.state(), v.mover.clone(), v.bytes, v.claims);
    assert_eq!(
        views.iter().map(row).collect::<Vec<_>>(),
        vec![
            (1, "copying", Some("a".into()), 7, 2),
            (2, "done", None, 30, 0)
        ]
    );
    assert_eq!(views[0].path.as_deref(), Some("be0 -> nbd://v/vault"));
    assert_eq!(
        views[0].unavailable.get("b").map(String::as_str),
        Some("no path")
    );
    assert_eq!(views[1].spec, spec(30));
    assert_eq!((views[0].durable, views[1].durable), (4, 0));
    let bad = [job_kv(3, 1), kv(k.durable(3), b"many")];
    assert!(
        Snapshot::from_kvs(&k, &bad).is_err(),
        "a checkpoint not a number"
    );
}
