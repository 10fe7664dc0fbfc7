//! The shipped example settings file and systemd unit stay valid.

use cowd::config::Settings;

#[test]
fn the_example_config_parses_into_a_daemon_config() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/systemd/cowd.toml");
    let c = Settings::load(p.as_ref()).unwrap().into_config().unwrap();
    assert_eq!(c.exports.len(), 1);
    assert_eq!(c.backup.container_size, 4 << 30);
    assert_eq!(c.backup.block_size, 64 << 10);
}

#[test]
fn the_unit_starts_the_daemon_with_that_file_and_waits_for_readiness() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/systemd/cowd.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify"));
    assert!(unit.contains("ExecStart=/usr/local/bin/cowd serve --config /etc/cowd/cowd.toml"));
    for key in [
        "RuntimeDirectory=cowd",
        "StateDirectory=cowd",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(key), "missing {key}");
    }
}
