//! URI parser tests: the forms libnbd and QEMU write, the refusals with their reasons, and the
//! property that `Display` writes back what parses to the same URI.

use proptest::prelude::*;

use super::*;

fn ok(s: &str) -> NbdUri {
    s.parse()
        .unwrap_or_else(|e: UriError| panic!("{s} should parse: {e}"))
}

/// The reason `s` is refused (the message also names the URI).
fn refused(s: &str) -> String {
    let e = s.parse::<NbdUri>().expect_err(s);
    assert!(
        e.to_string().starts_with(s),
        "the message names the URI: {e}"
    );
    e.reason
}

#[test]
fn the_forms_libnbd_and_qemu_write() {
    let table = [
        (
            "nbd://example.com/disk",
            NbdUri::tcp("example.com", 10809, "disk"),
        ),
        (
            "nbd://10.0.1.2:10810/vault",
            NbdUri::tcp("10.0.1.2", 10810, "vault"),
        ),
        ("nbd://host", NbdUri::tcp("host", 10809, "")),
        ("nbd://host/", NbdUri::tcp("host", 10809, "")),
        ("nbd:///disk", NbdUri::tcp("localhost", 10809, "disk")),
        ("nbd://[::1]:10809/x", NbdUri::tcp("::1", 10809, "x")),
        ("nbd://[fe80::1]/x", NbdUri::tcp("fe80::1", 10809, "x")),
        ("NBD://h/a/b", NbdUri::tcp("h", 10809, "a/b")),
        ("nbd://h//lead", NbdUri::tcp("h", 10809, "/lead")),
        (
            "nbd://h/with%20space%3F%23",
            NbdUri::tcp("h", 10809, "with space?#"),
        ),
        ("nbd://h/caf%C3%A9", NbdUri::tcp("h", 10809, "café")),
        (
            "nbd+unix:///disk?socket=/run/cowd/nbd.sock",
            NbdUri::unix("/run/cowd/nbd.sock", "disk"),
        ),
        ("nbd+unix://?socket=/s", NbdUri::unix("/s", "")),
        ("nbd+unix:///?socket=/s", NbdUri::unix("/s", "")),
        (
            "nbd+unix:///x?socket=/a%20b%26c",
            NbdUri::unix("/a b&c", "x"),
        ),
        (
            "nbd+unix:///x?socket=rel.sock&",
            NbdUri::unix("rel.sock", "x"),
        ),
    ];
    for (s, want) in table {
        assert_eq!(ok(s), want, "{s}");
    }
}

#[test]
fn display_writes_the_uri_back() {
    for (s, shown) in [
        ("nbd://example.com/disk", "nbd://example.com/disk"),
        ("nbd://example.com:10809/disk", "nbd://example.com/disk"),
        ("nbd://h:1234", "nbd://h:1234"),
        ("nbd://[::1]:10810/x", "nbd://[::1]:10810/x"),
        ("nbd://h/a%20b/c", "nbd://h/a%20b/c"),
        (
            "nbd+unix:///disk?socket=/run/x.sock",
            "nbd+unix:///disk?socket=/run/x.sock",
        ),
        ("nbd+unix://?socket=/s", "nbd+unix:///?socket=/s"),
    ] {
        assert_eq!(ok(s).to_string(), shown, "{s}");
    }
}

#[test]
fn tls_is_refused_with_a_reason() {
    for s in [
        "nbds://h/x",
        "nbds+unix:///x?socket=/s",
        "nbd+unix:///x?socket=/s&tls-certificates=/etc/pki",
    ] {
        let why = refused(s);
        assert!(
            why.contains("TLS") && why.contains("not support"),
            "{s}: {why}"
        );
    }
}

#[test]
fn what_cowd_cannot_honour_is_refused() {
    let table = [
        ("http://h/x", "unknown scheme"),
        ("nbd+vsock:///x", "unknown scheme"),
        ("/dev/nbd0", "expected nbd://"),
        ("nbd://h/x?socket=/s", "unknown query parameter"),
        (
            "nbd+unix:///x?socket=/s&sockett=/t",
            "unknown query parameter",
        ),
        ("nbd+unix:///x?socket=/s&socket=/t", "twice"),
        ("nbd+unix:///x", "needs ?socket="),
        ("nbd+unix:///x?socket=", "needs ?socket="),
        ("nbd+unix://host/x?socket=/s", "takes no host"),
        ("nbd://h:0/x", "port"),
        ("nbd://h:65536/x", "port"),
        ("nbd://h:+80/x", "port"),
        ("nbd://h:/x", "port"),
        ("nbd://::1/x", "port"),
        ("nbd://[::1/x", "]"),
        ("nbd://[1.2.3.4]/x", "not an IPv6 address"),
        ("nbd://user@h/x", "user name"),
        ("nbd://h/x#frag", "fragment"),
        ("nbd://h/bad%zz", "percent escape"),
        ("nbd://h/bad%4", "percent escape"),
        ("nbd://h/%FF", "not UTF-8"),
        ("nbd://h%20x/e", "not a host name"),
    ];
    for (s, why) in table {
        let got = refused(s);
        assert!(got.contains(why), "{s}: {got:?} should say {why:?}");
    }
    let long = format!("nbd://h/{}", "x".repeat(4097));
    assert!(refused(&long).contains("4096"));
    ok(&format!("nbd://h/{}", "x".repeat(4096)));
}

fn any_uri() -> impl Strategy<Value = NbdUri> {
    let host = prop_oneof![
        "[a-zA-Z0-9._~-]{1,20}",
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
    ];
    let tcp = (host, 1..=u16::MAX).prop_map(|(host, port)| Address::Tcp { host, port });
    let unix = proptest::collection::vec(1..=255u8, 1..40)
        .prop_map(|b| Address::Unix(PathBuf::from(OsString::from_vec(b))));
    let export = proptest::string::string_regex("(?s).{0,30}").unwrap();
    (prop_oneof![tcp, unix], export).prop_map(|(address, export)| NbdUri { address, export })
}

proptest! {
    /// parse(display(u)) == u: every URI cowd shows (in logs, errors, configuration it writes)
    /// reads back as the same address and export.
    #[test]
    fn display_then_parse_is_the_identity(u in any_uri()) {
        let shown = u.to_string();
        prop_assert_eq!(shown.parse::<NbdUri>(), Ok(u), "{}", shown);
    }

    /// The parser never panics, and what it accepts it shows in a form it accepts again.
    #[test]
    fn parse_any_string(s in "(?s)(nbd|nbd\\+unix)://.{0,40}") {
        if let Ok(u) = s.parse::<NbdUri>() {
            prop_assert_eq!(u.to_string().parse::<NbdUri>(), Ok(u));
        }
    }
}
