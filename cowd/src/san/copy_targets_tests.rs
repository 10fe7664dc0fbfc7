use super::*;

fn setting(toml_text: &str) -> CopyTargetSetting {
    // One line per key; the cases below separate keys with `;`.
    toml::from_str(&toml_text.replace(';', "\n")).unwrap()
}

fn ports() -> Vec<String> {
    vec!["be0".into(), "be1".into()]
}

#[test]
fn a_target_with_both_kinds_of_path() {
    let t = setting(
        r#"
        name = "vault"
        naa = "3000000000000abc"
        fc_name = "50:01:43:80:12:34:56:78"
        paths = [ { via = "/srv/vault.img", port = "be1" }, "file:/srv/other.img" ]
        "#,
    )
    .check(&ports())
    .unwrap();
    assert_eq!(t.naa, Some(vec![0x30, 0, 0, 0, 0, 0, 0x0a, 0xbc]));
    assert_eq!(
        t.fc_name,
        Some([0x50, 0x01, 0x43, 0x80, 0x12, 0x34, 0x56, 0x78])
    );
    assert_eq!(t.kind, TargetKind::Block);
    assert_eq!(t.record_size, DEFAULT_RECORD_SIZE);
    assert_eq!(t.paths.len(), 2);
    assert_eq!(t.paths[0].port.as_deref(), Some("be1"));
    assert_eq!(t.paths[1].port, None);
    assert_eq!(t.paths[1].spec, PathSpec::File("/srv/other.img".into()));
}

#[test]
fn every_bad_setting_is_refused_with_its_reason() {
    let cases = [
        (
            r#"name = ""; naa = "3000000000000001"; paths = ["/x"]"#,
            "a name",
        ),
        (r#"name = "a"; paths = ["/x"]"#, "give naa or fc_name"),
        (r#"name = "a"; naa = "30"; paths = ["/x"]"#, "8 or 16"),
        (
            r#"name = "a"; naa = "7000000000000001"; paths = ["/x"]"#,
            "NAA type 7",
        ),
        (
            r#"name = "a"; naa = "3000000000000001"; paths = []"#,
            "no paths",
        ),
        (r#"name = "a"; fc_name = "50:01"; paths = ["/x"]"#, "has 8"),
        (
            r#"name = "a"; fc_name = "zz:01:43:80:12:34:56:78"; paths = ["/x"]"#,
            "not hex",
        ),
        (
            r#"name = "a"; naa = "3000000000000001"; paths = ["x"]"#,
            "expected nbd://",
        ),
        (
            r#"name = "a"; naa = "3000000000000001"; paths = [{ via = "/x", port = "fe0" }]"#,
            "not an initiator port",
        ),
        (
            r#"name = "a"; naa = "3000000000000001"; paths = ["stream:/x"]"#,
            "is a stream path",
        ),
        (
            r#"name = "a"; naa = "3000000000000001"; kind = "stream"; paths = ["/x"]"#,
            "is a block path",
        ),
        (
            r#"name = "a"; naa = "3000000000000001"; kind = "stream"; record_size = 1000; paths = ["stream:/x"]"#,
            "record_size",
        ),
    ];
    for (text, want) in cases {
        let err = setting(text).check(&ports()).unwrap_err();
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn names_and_designators_are_unique() {
    let a = setting(r#"name = "a"; naa = "3000000000000001"; paths = ["/x"]"#);
    let b = setting(r#"name = "a"; naa = "3000000000000002"; paths = ["/y"]"#);
    assert!(
        check_all(&[a.clone(), b], &[])
            .unwrap_err()
            .contains("named twice")
    );
    let c = setting(r#"name = "c"; naa = "3000000000000001"; paths = ["/y"]"#);
    assert!(
        check_all(&[a.clone(), c], &[])
            .unwrap_err()
            .contains("the same naa")
    );
    let d = setting(r#"name = "d"; naa = "3000000000000003"; paths = ["/y"]"#);
    assert_eq!(check_all(&[a, d], &[]).unwrap().len(), 2);
}

#[test]
fn designators_parse_in_the_usual_spellings() {
    assert_eq!(parse_naa("0x3000000000000001").unwrap()[7], 1);
    assert_eq!(parse_naa("30:00:00:00:00:00:00:01").unwrap()[0], 0x30);
    assert_eq!(
        parse_naa("6001405a1b2c3d4e5f60718293a4b5c6").unwrap().len(),
        16
    );
    assert!(parse_naa("5001405a1b2c3d4e5f60718293a4b5c6").is_err());
    let w = parse_wwn("5001438012345678").unwrap();
    assert_eq!(wwn_string(&w), "50:01:43:80:12:34:56:78");
}
