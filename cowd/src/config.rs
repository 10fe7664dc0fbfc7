//! Daemon settings: one TOML file (`--config`) and the command-line flags, merged.
//!
//! Every setting can come from either; a flag wins over the file, the file over the default.
//! Sizes accept plain bytes or a suffix (`64K`, `1G`, `1GiB`); durations plain seconds or units
//! (`3`, `3s`, `500ms`, `1m 30s`), parsed by `cowd_api::units` as `cowctl` parses them. Example:
//!
//! ```toml
//! nbd = ["unix:/run/cowd/nbd.sock"]
//! iscsi = ["0.0.0.0:3260"]              # each export is target ISCSI_BASE_NAME:EXPORT, LUN 0
//! iscsi_base_name = "iqn.2026-12.com.example:storage"
//! control = "/run/cowd/control.sock"
//! state_dir = "/var/lib/cowd"
//!
//! [[export]]
//! name = "disk"
//! path = "/dev/vdb"
//!
//! [iscsi_auth]                         # CHAP; secrets only here, never as flags
//! user = "iqn.1993-08.org.debian:01:host1"
//! secret = "at least 12 bytes"
//! target_user = "cowd"                  # mutual CHAP (optional)
//! target_secret = "another secret"
//! discovery = true                      # discovery sessions authenticate too
//!
//! [backup]
//! container_size = "4G"
//! block_size = "64K"
//! on_overflow = "fail-backup"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use cowd_api::DEFAULT_SOCKET;
use cowd_api::backups::OnOverflow;
use serde::Deserialize;

use crate::backup::manager::Defaults;
use crate::daemon::{Config, CopyConfig, ExportSpec};
use crate::iscsi::chap::{ChapCredentials, ChapIdentity};
use crate::iscsi::config::{AuthPolicy, TargetConfig};
use crate::iscsi::connection::ConnectionConfig;
use crate::iscsi::server::{IscsiConfig, check_base_name, default_base_name};
use crate::jobs::etcd::EtcdConfig;
use crate::jobs::service::MoverSetting;
use crate::nbd::server::ServerConfig;
use crate::nbd::transmission::Limits;
use crate::san::copy_targets::{self, CopyTargetSetting};
use crate::san::ports::{Port, Role};

pub use cowd_api::units::{Secs, Size, parse_duration, parse_size};

/// One `[[export]]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportSetting {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// The `[backup]` table: defaults of every backup.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Default repository of backups that name no target.
    pub repo: Option<PathBuf>,
    /// Key file that unlocks `repo` at start when it is encrypted.
    pub repo_key_file: Option<PathBuf>,
    /// S3-compatible service of `s3://` repositories (default: `AWS_ENDPOINT_URL`, else AWS).
    pub s3_endpoint: Option<String>,
    /// Its region (default: `AWS_REGION`).
    pub s3_region: Option<String>,
    /// Path-style requests (default: with an endpoint given).
    pub s3_path_style: Option<bool>,
    /// How long failing S3 requests are retried (default: 180 s).
    pub s3_retry_timeout_s: Option<Secs>,
    /// How long one S3 request may take (default: 30 s).
    pub s3_timeout_s: Option<Secs>,
    /// Local cache of chunks read from object storage (default: 1G; 0: none).
    pub cache_size: Option<Size>,
    pub container_dir: Option<PathBuf>,
    pub container_size: Option<Size>,
    pub block_size: Option<Size>,
    #[serde(alias = "quiet_period")]
    pub quiet_period_s: Option<Secs>,
    #[serde(alias = "quiet_timeout")]
    pub quiet_timeout_s: Option<Secs>,
    pub high_watermark: Option<f64>,
    pub low_watermark: Option<f64>,
    #[serde(alias = "cbw_timeout")]
    pub cbw_timeout_s: Option<Secs>,
    pub on_overflow: Option<OnOverflow>,
    pub neighbours: Option<u32>,
}

/// CHAP for the iSCSI target (the `[iscsi_auth]` table).
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IscsiAuthSettings {
    /// The CHAP name initiators log in with.
    pub user: String,
    pub secret: String,
    /// Mutual CHAP: the name and secret the target answers with.
    pub target_user: Option<String>,
    pub target_secret: Option<String>,
    /// Discovery sessions authenticate too (default: yes).
    pub discovery: Option<bool>,
}

impl std::fmt::Debug for IscsiAuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiAuthSettings")
            .field("user", &self.user)
            .field("target_user", &self.target_user)
            .field("discovery", &self.discovery)
            .finish_non_exhaustive()
    }
}

impl IscsiAuthSettings {
    /// The policies of normal and discovery sessions.
    fn policies(&self) -> Result<(AuthPolicy, AuthPolicy), String> {
        let target = match (&self.target_user, &self.target_secret) {
            (Some(name), Some(secret)) => Some(ChapIdentity {
                name: name.clone(),
                secret: secret.as_bytes().to_vec(),
            }),
            (None, None) => None,
            _ => {
                return Err(
                    "iscsi_auth: target_user and target_secret go together (mutual CHAP)".into(),
                );
            }
        };
        let chap = AuthPolicy::Chap(ChapCredentials {
            initiator: ChapIdentity {
                name: self.user.clone(),
                secret: self.secret.as_bytes().to_vec(),
            },
            target,
        });
        let discovery = if self.discovery.unwrap_or(true) {
            chap.clone()
        } else {
            AuthPolicy::None
        };
        Ok((chap, discovery))
    }
}

/// All settings; `None` means "not given here".
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub export: Vec<ExportSetting>,
    #[serde(default)]
    pub nbd: Vec<String>,
    /// iSCSI listen addresses, `HOST[:PORT]`.
    #[serde(default)]
    pub iscsi: Vec<String>,
    pub iscsi_base_name: Option<String>,
    pub iscsi_auth: Option<IscsiAuthSettings>,
    pub control: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub direct: Option<bool>,
    #[serde(alias = "handshake_timeout")]
    pub handshake_timeout_s: Option<Secs>,
    #[serde(alias = "stop_timeout")]
    pub stop_timeout_s: Option<Secs>,
    pub max_connections: Option<usize>,
    pub io_threads: Option<usize>,
    /// Accept fault-injection requests (testing only).
    pub allow_fault_injection: Option<bool>,
    #[serde(default)]
    pub backup: BackupSettings,
    /// Backup devices the copy manager's movers reach (`[[copy_target]]`).
    #[serde(default)]
    pub copy_target: Vec<CopyTargetSetting>,
    /// Target and initiator ports and their groups (`[[port]]`).
    #[serde(default)]
    pub port: Vec<Port>,
    /// The daemon's mover threads (`[[mover]]`).
    #[serde(default)]
    pub mover: Vec<MoverSetting>,
    /// Run mover threads in the daemon (default: yes; `false`: only `cowd mover` processes).
    pub local_movers: Option<bool>,
    /// etcd's client URL (`http://HOST:2379`): the job table lives there, shared with
    /// `cowd mover` processes on other hosts.
    pub etcd: Option<String>,
    /// The job table's key prefix in etcd (default `/cowd/`).
    pub etcd_prefix: Option<String>,
}

fn secs(name: &str, v: Option<Secs>, default: f64) -> Result<Duration, String> {
    let s = v.map_or(default, |s| s.0);
    Duration::try_from_secs_f64(s).map_err(|_| format!("{name} = {s}: not a duration"))
}

macro_rules! pick {
    ($over:expr, $base:expr, $($f:ident).+) => {
        if $over.$($f).+.is_some() { $over.$($f).+ } else { $base.$($f).+ }
    };
}

impl Settings {
    /// Reads a TOML settings file.
    pub fn load(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `self` (flags) over `base` (file).
    pub fn over(self, base: Settings) -> Settings {
        let mut export = base.export;
        export.extend(self.export);
        Settings {
            export,
            nbd: if self.nbd.is_empty() {
                base.nbd
            } else {
                self.nbd
            },
            iscsi: if self.iscsi.is_empty() {
                base.iscsi
            } else {
                self.iscsi
            },
            iscsi_base_name: pick!(self, base, iscsi_base_name),
            iscsi_auth: pick!(self, base, iscsi_auth),
            control: pick!(self, base, control),
            state_dir: pick!(self, base, state_dir),
            direct: pick!(self, base, direct),
            handshake_timeout_s: pick!(self, base, handshake_timeout_s),
            stop_timeout_s: pick!(self, base, stop_timeout_s),
            max_connections: pick!(self, base, max_connections),
            io_threads: pick!(self, base, io_threads),
            allow_fault_injection: pick!(self, base, allow_fault_injection),
            copy_target: base.copy_target,
            port: base.port,
            mover: base.mover,
            local_movers: pick!(self, base, local_movers),
            etcd: pick!(self, base, etcd),
            etcd_prefix: pick!(self, base, etcd_prefix),
            backup: BackupSettings {
                repo: pick!(self, base, backup.repo),
                repo_key_file: pick!(self, base, backup.repo_key_file),
                s3_endpoint: pick!(self, base, backup.s3_endpoint),
                s3_region: pick!(self, base, backup.s3_region),
                s3_path_style: pick!(self, base, backup.s3_path_style),
                s3_retry_timeout_s: pick!(self, base, backup.s3_retry_timeout_s),
                s3_timeout_s: pick!(self, base, backup.s3_timeout_s),
                cache_size: pick!(self, base, backup.cache_size),
                container_dir: pick!(self, base, backup.container_dir),
                container_size: pick!(self, base, backup.container_size),
                block_size: pick!(self, base, backup.block_size),
                quiet_period_s: pick!(self, base, backup.quiet_period_s),
                quiet_timeout_s: pick!(self, base, backup.quiet_timeout_s),
                high_watermark: pick!(self, base, backup.high_watermark),
                low_watermark: pick!(self, base, backup.low_watermark),
                cbw_timeout_s: pick!(self, base, backup.cbw_timeout_s),
                on_overflow: pick!(self, base, backup.on_overflow),
                neighbours: pick!(self, base, backup.neighbours),
            },
        }
    }

    /// The daemon configuration, with defaults filled in and everything checked.
    pub fn into_config(self) -> Result<Config, String> {
        let copy = self.copy_config()?;
        let nbd = self
            .nbd
            .iter()
            .map(|e| e.parse())
            .collect::<Result<Vec<_>, _>>()?;
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/cowd"));
        let mut backup = Defaults::new(&state_dir);
        let b = &self.backup;
        backup.repo = b.repo.clone();
        backup.repo_key_file = b.repo_key_file.clone();
        backup.s3 = crate::repo::S3Options {
            endpoint: b.s3_endpoint.clone(),
            region: b.s3_region.clone(),
            path_style: b.s3_path_style,
            staging_dir: Some(state_dir.join("staging")),
            retry_timeout: Some(secs(
                "s3_retry_timeout_s",
                b.s3_retry_timeout_s,
                crate::repo::S3_RETRY_TIMEOUT.as_secs_f64(),
            )?),
            request_timeout: Some(secs(
                "s3_timeout_s",
                b.s3_timeout_s,
                crate::repo::S3_REQUEST_TIMEOUT.as_secs_f64(),
            )?),
        };
        if let Some(e) = backup.s3.endpoint.as_deref()
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(format!(
                "s3_endpoint {e:?}: give a URL, http://HOST:PORT or https://HOST"
            ));
        }
        if backup.repo_key_file.is_some() && backup.repo.is_none() {
            return Err("repo_key_file needs repo (the repository it unlocks)".into());
        }
        if let Some(d) = &b.container_dir {
            backup.container_dir = d.clone();
        }
        if let Some(Size(s)) = b.container_size {
            backup.container_size = s;
        }
        if let Some(Size(s)) = b.cache_size {
            backup.cache_size = s;
        }
        if let Some(Size(s)) = b.block_size {
            if !s.is_power_of_two() || !(4096..=4 << 20).contains(&s) {
                return Err(format!(
                    "block size {s}: must be a power of two from 4 KiB to 4 MiB"
                ));
            }
            backup.block_size = s as u32;
        }
        backup.quiet_period = secs("quiet_period_s", b.quiet_period_s, 3.0)?;
        backup.quiet_timeout = secs("quiet_timeout_s", b.quiet_timeout_s, 80.0)?;
        backup.policy.cbw_timeout = secs("cbw_timeout_s", b.cbw_timeout_s, 30.0)?;
        backup.policy.high_watermark = b.high_watermark.unwrap_or(backup.policy.high_watermark);
        backup.policy.low_watermark = b.low_watermark.unwrap_or(backup.policy.low_watermark);
        backup.policy.on_overflow = b.on_overflow.unwrap_or_default();
        backup.policy.neighbours = b.neighbours.unwrap_or(0);
        backup.policy.check()?;
        backup.allow_fault_injection = self.allow_fault_injection.unwrap_or(false);
        let limits = Limits {
            io_threads: self.io_threads.unwrap_or(32).max(1),
            ..Limits::default()
        };
        let handshake_timeout = secs("handshake_timeout_s", self.handshake_timeout_s, 10.0)?;
        let max_connections = self.max_connections.unwrap_or(1024).max(1);
        let iscsi = if self.iscsi.is_empty() {
            None
        } else {
            let base_name = self
                .iscsi_base_name
                .clone()
                .unwrap_or_else(default_base_name);
            check_base_name(&base_name).map_err(|e| format!("iscsi_base_name {e}"))?;
            let (auth, discovery_auth) = match &self.iscsi_auth {
                Some(a) => a.policies()?,
                None => (AuthPolicy::None, AuthPolicy::None),
            };
            let check = TargetConfig {
                auth: auth.clone(),
                discovery_auth: discovery_auth.clone(),
                ..TargetConfig::default()
            };
            check.validate().map_err(|e| format!("iscsi_auth: {e}"))?;
            Some(IscsiConfig {
                listen: self.iscsi.clone(),
                base_name,
                auth,
                discovery_auth,
                connection: ConnectionConfig {
                    login_timeout: handshake_timeout,
                    io_threads: limits.io_threads,
                    ..ConnectionConfig::default()
                },
                max_connections,
            })
        };
        Ok(Config {
            exports: self
                .export
                .iter()
                .map(|e| ExportSpec {
                    name: e.name.clone(),
                    path: e.path.clone(),
                })
                .collect(),
            read_only: self
                .export
                .iter()
                .filter(|e| e.read_only)
                .map(|e| e.name.clone())
                .collect(),
            nbd,
            iscsi,
            control: Some(
                self.control
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            ),
            direct: self.direct.unwrap_or(false),
            server: ServerConfig {
                handshake_timeout,
                max_connections,
                limits,
            },
            stop_timeout: secs("stop_timeout_s", self.stop_timeout_s, 30.0)?,
            backup,
            copy,
        })
    }
}

impl Settings {
    /// Copy targets, ports, movers and the job table, checked together (also what a
    /// `cowd mover` takes from its `--config`).
    pub fn copy_config(&self) -> Result<CopyConfig, String> {
        // Checked by `Ports::new` when the daemon starts; the names are needed here.
        crate::san::Ports::new(self.port.clone())?;
        let initiators: Vec<String> = self
            .port
            .iter()
            .filter(|p| p.role == Role::Initiator)
            .map(|p| p.name.clone())
            .collect();
        let targets = copy_targets::check_all(&self.copy_target, &initiators)?;
        for (i, m) in self.mover.iter().enumerate() {
            if m.name.is_empty() || self.mover[..i].iter().any(|o| o.name == m.name) {
                return Err(format!(
                    "mover {:?}: names are unique and not empty",
                    m.name
                ));
            }
            if let Some(p) = m.ports.iter().find(|p| !initiators.contains(p)) {
                return Err(format!(
                    "mover {}: port {p:?} is not an initiator port",
                    m.name
                ));
            }
        }
        let local = self.local_movers.unwrap_or(true);
        if !local && !self.mover.is_empty() {
            return Err("local_movers = false, yet [[mover]] tables are given: keep one".into());
        }
        let movers = if !local {
            Vec::new()
        } else if self.mover.is_empty() && !targets.is_empty() {
            vec![MoverSetting {
                name: "local".into(),
                ports: Vec::new(),
            }]
        } else {
            self.mover.clone()
        };
        let etcd = match &self.etcd {
            Some(url) => Some(EtcdConfig::new(url, self.etcd_prefix.as_deref())?),
            None if self.etcd_prefix.is_some() => {
                return Err("etcd_prefix is given without etcd = \"http://HOST:2379\"".into());
            }
            None => None,
        };
        Ok(CopyConfig {
            ports: self.port.clone(),
            targets,
            movers,
            etcd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_in_the_file() {
        let s: Settings = toml::from_str(
            r#"
            stop_timeout = "1m"
            handshake_timeout_s = 5
            [backup]
            quiet_period = "500ms"
            cbw_timeout_s = "2s"
            quiet_timeout_s = 60.5
            "#,
        )
        .unwrap();
        assert_eq!(s.stop_timeout_s, Some(Secs(60.0)));
        assert_eq!(s.handshake_timeout_s, Some(Secs(5.0)));
        assert_eq!(s.backup.quiet_period_s, Some(Secs(0.5)));
        assert_eq!(s.backup.cbw_timeout_s, Some(Secs(2.0)));
        assert_eq!(s.backup.quiet_timeout_s, Some(Secs(60.5)));
        let bad = toml::from_str::<Settings>("[backup]\nquiet_period = \"soon\"").unwrap_err();
        assert!(bad.to_string().contains("not a duration"), "{bad}");
    }

    #[test]
    fn the_example_settings_file_is_valid() {
        let text = include_str!("../../scripts/systemd/cowd.toml");
        let s: Settings = toml::from_str(text).unwrap();
        s.into_config().unwrap();
    }

    #[test]
    fn file_and_flags_merge_with_flags_winning() {
        let file: Settings = toml::from_str(
            r#"
            nbd = ["unix:/run/cowd/nbd.sock"]
            state_dir = "/srv/cowd"
            io_threads = 8
            [[export]]
            name = "disk"
            path = "/dev/vdb"
            read_only = true
            [backup]
            container_size = "4G"
            cache_size = "256M"
            block_size = "128K"
            on_overflow = "block-writes"
            quiet_period_s = 1.5
            "#,
        )
        .unwrap();
        let flags = Settings {
            io_threads: Some(4),
            ..Settings::default()
        };
        let c = flags.over(file).into_config().unwrap();
        assert_eq!(
            c.exports,
            vec![ExportSpec {
                name: "disk".into(),
                path: "/dev/vdb".into()
            }]
        );
        assert_eq!(c.read_only, vec!["disk".to_string()]);
        assert_eq!(c.server.limits.io_threads, 4);
        assert_eq!(c.backup.container_size, 4 << 30);
        assert_eq!(c.backup.cache_size, 256 << 20);
        assert_eq!(c.backup.block_size, 128 << 10);
        assert_eq!(
            c.backup.container_dir,
            PathBuf::from("/srv/cowd/containers")
        );
        assert_eq!(c.backup.policy.on_overflow, OnOverflow::BlockWrites);
        assert_eq!(c.backup.quiet_period, Duration::from_millis(1500));
        assert_eq!(c.control, Some(PathBuf::from(DEFAULT_SOCKET)));
    }

    #[test]
    fn the_job_table_goes_to_etcd_and_local_movers_can_be_turned_off() {
        let target =
            "[[copy_target]]\nname = \"v\"\nnaa = \"5001405000000a01\"\npaths = [\"/v\"]\n";
        let copy = |text: &str| toml::from_str::<Settings>(text).unwrap().copy_config();
        let c = copy(target).unwrap();
        assert_eq!(
            (c.movers.len(), c.etcd),
            (1, None),
            "a local mover, a local table"
        );
        let c = copy(&format!(
            "etcd = \"http://10.0.0.5:2379\"\nlocal_movers = false\n{target}"
        ))
        .unwrap();
        assert!(c.movers.is_empty());
        let etcd = c.etcd.unwrap();
        assert_eq!(
            (etcd.endpoint.as_str(), etcd.prefix.as_str()),
            ("http://10.0.0.5:2379", "/cowd/")
        );
        let c = copy("etcd = \"http://h:2379\"\netcd_prefix = \"/site-a\"").unwrap();
        assert_eq!(c.etcd.unwrap().prefix, "/site-a/");
        for (bad, why) in [
            ("etcd = \"https://h:2379\"", "https is not supported"),
            ("etcd_prefix = \"/x/\"", "without etcd"),
            ("local_movers = false\n[[mover]]\nname = \"m\"", "keep one"),
        ] {
            let e = copy(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        assert!(
            toml::from_str::<Settings>("nonsense = 1")
                .unwrap_err()
                .to_string()
                .contains("nonsense")
        );
        let s: Settings = toml::from_str("[backup]\nblock_size = 1000").unwrap();
        assert!(s.into_config().unwrap_err().contains("power of two"));
        let s = Settings {
            nbd: vec!["udp:1".into()],
            ..Settings::default()
        };
        assert!(s.into_config().unwrap_err().contains("unix:PATH"));
    }
}
