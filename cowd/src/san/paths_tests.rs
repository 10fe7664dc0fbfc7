use super::*;

#[test]
fn paths_parse_and_print_back() {
    for s in ["/srv/vault.img", "tape:/dev/nst0", "stream:/run/cowd/fifo"] {
        let p: PathSpec = s.parse().unwrap();
        assert_eq!(p.to_string(), s);
    }
    assert_eq!(
        "file:/srv/x".parse::<PathSpec>().unwrap(),
        PathSpec::File("/srv/x".into())
    );
    assert!("tape:/dev/nst0".parse::<PathSpec>().unwrap().is_stream());
    assert!(!"/dev/sdb".parse::<PathSpec>().unwrap().is_stream());
    for bad in ["relative", "tape:nst0", "stream:", "ftp://x"] {
        assert!(bad.parse::<PathSpec>().is_err(), "{bad}");
    }
}

#[test]
fn a_missing_file_is_down_and_an_existing_one_opens() {
    let dir = tempfile::tempdir().unwrap();
    let missing = PathSpec::File(dir.path().join("none"));
    let e = open(&missing, None, Duration::from_secs(1)).unwrap_err();
    assert!(e.unreachable(), "{e}");
    let image = dir.path().join("image");
    std::fs::write(&image, vec![7u8; 8192]).unwrap();
    match open(&PathSpec::File(image), None, Duration::from_secs(1)).unwrap() {
        Opened::Block(dev) => assert_eq!(dev.size(), 8192),
        other => panic!("{other:?}"),
    }
    let fifo = PathSpec::Stream(dir.path().join("fifo"));
    assert!(
        open(&fifo, None, Duration::from_secs(1))
            .unwrap_err()
            .unreachable()
    );
}

#[test]
fn iscsi_paths_parse_and_hide_their_secret() {
    let p: PathSpec = "iscsi://mover%s3cret-s3cret@10.0.2.2:3261/iqn.2026-12.com.example:vault/1"
        .parse()
        .unwrap();
    let PathSpec::Iscsi(url) = &p else {
        panic!("{p:?}")
    };
    assert_eq!(
        (url.host.as_str(), url.port, url.lun),
        ("10.0.2.2", 3261, 1)
    );
    assert!(!p.is_stream());
    let shown = p.to_string();
    assert!(
        !shown.contains("s3cret") && shown.contains("10.0.2.2:3261"),
        "{shown}"
    );
    for bad in [
        "iscsi://host",
        "iscsi://host/iqn.x/99999",
        "iscsi:/host/iqn.x/0",
    ] {
        let e = bad.parse::<PathSpec>().unwrap_err();
        assert!(e.contains(bad) || e.contains("iscsi"), "{bad}: {e}");
    }
}

#[test]
fn an_iscsi_portal_nobody_listens_on_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec: PathSpec = format!("iscsi://127.0.0.1:{port}/iqn.2026-12.test:none/0")
        .parse()
        .unwrap();
    let e = open(&spec, None, Duration::from_secs(1)).unwrap_err();
    assert!(e.unreachable(), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}
