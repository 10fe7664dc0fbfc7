use super::*;

fn port(name: &str, role: Role, address: Option<&str>, group: Option<&str>) -> Port {
    Port {
        name: name.into(),
        role,
        address: address.map(Into::into),
        group: group.map(Into::into),
    }
}

fn table() -> Ports {
    Ports::new(vec![
        port("fe0", Role::Target, Some("127.0.0.1:3260"), Some("g1")),
        port("be0", Role::Initiator, Some("127.0.0.1"), Some("g1")),
        port("be1", Role::Initiator, None, Some("g2")),
        port("be2", Role::Initiator, None, None),
    ])
    .unwrap()
}

#[test]
fn a_connection_finds_its_target_port_and_group() {
    let ports = table();
    let p = ports
        .target_port("127.0.0.1:3260".parse().unwrap())
        .unwrap();
    assert_eq!((p.name.as_str(), p.group.as_deref()), ("fe0", Some("g1")));
    assert!(
        ports
            .target_port("127.0.0.1:3261".parse().unwrap())
            .is_none()
    );
    // A portal without a [[port]] entry becomes a target port without a group.
    ports.add_portal("127.0.0.2:3261".parse().unwrap());
    let p = ports
        .target_port("127.0.0.2:3261".parse().unwrap())
        .unwrap();
    assert_eq!((p.name.as_str(), p.group), ("127.0.0.2:3261", None));
    // A configured portal is not added twice.
    ports.add_portal("127.0.0.1:3260".parse().unwrap());
    assert_eq!(ports.list().len(), 5);
}

#[test]
fn a_wildcard_portal_serves_every_local_address() {
    let ports = Ports::new(vec![port("fe", Role::Target, Some("0.0.0.0:3260"), None)]).unwrap();
    assert!(
        ports
            .target_port("10.1.2.3:3260".parse().unwrap())
            .is_some()
    );
    assert!(
        ports
            .target_port("10.1.2.3:3261".parse().unwrap())
            .is_none()
    );
}

#[test]
fn movers_search_their_ports_of_the_group_in_order() {
    let ports = table();
    let names = |v: Vec<Port>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(ports.initiators(&[], None)), ["be0", "be1", "be2"]);
    assert_eq!(names(ports.initiators(&[], Some("g1"))), ["be0"]);
    let mine = vec!["be2".to_owned(), "be1".to_owned()];
    assert_eq!(names(ports.initiators(&mine, None)), ["be2", "be1"]);
    assert_eq!(names(ports.initiators(&mine, Some("g2"))), ["be1"]);
    assert!(ports.initiators(&mine, Some("g3")).is_empty());
    // Without initiator ports a mover has one: any.
    let none = Ports::new(vec![]).unwrap();
    assert_eq!(names(none.initiators(&[], None)), [ANY_PORT]);
}

#[test]
fn run_time_changes_apply_at_once() {
    let ports = table();
    ports.set("be1", None, Some(Some("g1".into()))).unwrap();
    assert_eq!(ports.initiators(&[], Some("g1")).len(), 2);
    // A target port made an initiator port takes no logins.
    ports.set("fe0", Some(Role::Initiator), None).unwrap();
    assert!(
        ports
            .target_port("127.0.0.1:3260".parse().unwrap())
            .is_none()
    );
    ports.set("fe0", Some(Role::Target), Some(None)).unwrap();
    let p = ports
        .target_port("127.0.0.1:3260".parse().unwrap())
        .unwrap();
    assert_eq!(p.group, None);
    // An initiator port has no portal: it cannot become a target port.
    assert!(
        ports
            .set("be1", Some(Role::Target), None)
            .unwrap_err()
            .contains("portal")
    );
    assert!(
        ports
            .set("nope", None, None)
            .unwrap_err()
            .contains("no port")
    );
}

#[test]
fn bad_ports_are_refused() {
    for (p, want) in [
        (port("", Role::Target, Some("127.0.0.1:1"), None), "a name"),
        (port("t", Role::Target, None, None), "needs address"),
        (port("t", Role::Target, Some("127.0.0.1"), None), "IP:PORT"),
        (
            port("i", Role::Initiator, Some("host:1"), None),
            "an IP address",
        ),
    ] {
        let err = Ports::new(vec![p]).unwrap_err();
        assert!(err.contains(want), "{err}");
    }
    let twice = vec![
        port("a", Role::Initiator, None, None),
        port("a", Role::Initiator, None, None),
    ];
    assert!(Ports::new(twice).unwrap_err().contains("twice"));
}
