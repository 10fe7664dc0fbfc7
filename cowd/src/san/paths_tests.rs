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
