//! iSCSI URL tests: the forms libiscsi and QEMU accept, each refusal, and the round trip
//! through `Display`.

use proptest::prelude::*;

use super::*;

fn url(s: &str) -> IscsiUrl {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn problem(s: &str) -> UrlProblem {
    s.parse::<IscsiUrl>().unwrap_err().problem
}

#[test]
fn the_forms_libiscsi_takes() {
    let u = url("iscsi://127.0.0.1/iqn.2026-12.test.cowd:disk/0");
    assert_eq!(
        u,
        IscsiUrl::new("127.0.0.1", 3260, "iqn.2026-12.test.cowd:disk", 0)
    );
    assert_eq!(u.portal(), "127.0.0.1:3260");

    let u = url("iscsi://alice%s3cr%t:x@storage.example:3261/iqn.2001-04.com.example:t1/7");
    let c = u.credentials.as_ref().unwrap();
    assert_eq!(
        (c.user.as_str(), c.password.as_str()),
        ("alice", "s3cr%t:x")
    );
    assert_eq!(
        (u.host.as_str(), u.port, u.lun),
        ("storage.example", 3261, 7)
    );

    let u = url("iscsi://bob:pw@h/t/1");
    assert_eq!(
        u.credentials.unwrap().password,
        "pw",
        "libiscsi also splits at ':'"
    );

    let u = url("iscsi://[fd00::1]:3262/iqn.x:y/16383");
    assert_eq!((u.host.as_str(), u.port, u.lun), ("fd00::1", 3262, 16383));
    assert_eq!(u.portal(), "[fd00::1]:3262");
    assert_eq!(u.lun_field(), Lun::single_level(16383).unwrap());
    assert_eq!(url("iscsi://[::1]/t/0").host, "::1");
}

#[test]
fn refusals_say_what_is_wrong() {
    assert_eq!(problem("nbd://h/t/0"), UrlProblem::Scheme);
    assert_eq!(problem("iscsi:///t/0"), UrlProblem::NoHost);
    assert_eq!(problem("iscsi://:3260/t/0"), UrlProblem::NoHost);
    assert_eq!(problem("iscsi://h"), UrlProblem::NoTarget);
    assert_eq!(problem("iscsi://h//0"), UrlProblem::NoTarget);
    assert_eq!(problem("iscsi://h/t"), UrlProblem::NoLun);
    assert_eq!(problem("iscsi://h/t/"), UrlProblem::NoLun);
    assert_eq!(problem("iscsi://h/t/x"), UrlProblem::BadLun("x".into()));
    assert_eq!(
        problem("iscsi://h/t/16384"),
        UrlProblem::BadLun("16384".into())
    );
    assert_eq!(problem("iscsi://h/t/+1"), UrlProblem::BadLun("+1".into()));
    assert_eq!(problem("iscsi://h/t/0/"), UrlProblem::BadLun("0/".into()));
    assert_eq!(problem("iscsi://h:0/t/0"), UrlProblem::BadPort("0".into()));
    assert_eq!(
        problem("iscsi://h:99999/t/0"),
        UrlProblem::BadPort("99999".into())
    );
    assert_eq!(problem("iscsi://h:/t/0"), UrlProblem::BadPort("".into()));
    assert_eq!(
        problem("iscsi://fd00::1/t/0"),
        UrlProblem::BadPort(":1".into())
    );
    assert_eq!(
        problem("iscsi://[fd00::g]/t/0"),
        UrlProblem::BadHost("fd00::g".into())
    );
    assert_eq!(
        problem("iscsi://[::1]x/t/0"),
        UrlProblem::BadHost("[::1]x".into())
    );
    assert_eq!(
        problem("iscsi://h st/t/0"),
        UrlProblem::BadHost("h st".into())
    );
    assert_eq!(problem("iscsi://@h/t/0"), UrlProblem::BadUser);
    assert_eq!(problem("iscsi://%pw@h/t/0"), UrlProblem::BadUser);
    assert_eq!(
        problem("iscsi://u%p@w@h/t/0"),
        UrlProblem::BadHost("w@h".into())
    );
    assert_eq!(
        problem("iscsi://h/t x/0"),
        UrlProblem::BadTarget("t x".into())
    );
    let long = format!("iscsi://h/{}/0", "t".repeat(224));
    assert!(matches!(problem(&long), UrlProblem::BadTarget(_)));
}

#[test]
fn messages_show_the_format_and_hide_the_password() {
    let e = "iscsi://alice%secret@h/t".parse::<IscsiUrl>().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("no LUN"), "{msg}");
    assert!(msg.contains(FORMAT), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");

    let u = url("iscsi://alice%secret@h/t/0");
    assert_eq!(u.redacted(), "iscsi://alice%***@h/t/0");
    assert!(!format!("{u:?}").contains("secret"));
    assert_eq!(u.to_string(), "iscsi://alice%secret@h/t/0");
}

#[test]
fn display_writes_the_port_only_when_it_is_not_the_default() {
    assert_eq!(url("iscsi://h:3260/t/0").to_string(), "iscsi://h/t/0");
    assert_eq!(url("iscsi://h:3261/t/0").to_string(), "iscsi://h:3261/t/0");
    assert_eq!(
        url("iscsi://[::1]:3260/t/0").to_string(),
        "iscsi://[::1]/t/0"
    );
    assert_eq!(url("iscsi://u%@h/t/0").to_string(), "iscsi://u@h/t/0");
}

fn any_url() -> impl Strategy<Value = IscsiUrl> {
    let host = prop_oneof![
        "[a-z0-9][a-z0-9.-]{0,20}",
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u16; 8]>().prop_map(|b| Ipv6Addr::from(b).to_string()),
    ];
    let credentials = proptest::option::of(("[A-Za-z0-9._-]{1,12}", "[!-.0-?A-~]{0,12}"));
    (
        credentials,
        host,
        1u16..,
        "[a-z]{3}\\.[0-9]{4}-[0-9]{2}\\.[a-z.]{1,20}:[!-.0-~]{0,30}",
        0..=MAX_LUN,
    )
        .prop_map(|(credentials, host, port, target, lun)| IscsiUrl {
            credentials: credentials.map(|(user, password)| Credentials { user, password }),
            host,
            port,
            target,
            lun,
        })
}

proptest! {
    /// Invariant: `Display` writes a URL that `parse` reads back to the same value.
    #[test]
    fn display_parses_back(u in any_url()) {
        let written = u.to_string();
        let back: IscsiUrl = written.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(back, u);
    }

    /// Invariant: parsing never panics, and what parses writes back to a URL that parses
    /// to the same value.
    #[test]
    fn parse_is_total(s in "iscsi://[ -~]{0,40}") {
        if let Ok(u) = s.parse::<IscsiUrl>() {
            prop_assert_eq!(u.to_string().parse::<IscsiUrl>().ok(), Some(u));
        }
    }
}
