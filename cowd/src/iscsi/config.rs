//! What an iSCSI target offers initiators (pure): the targets of its portal group, how
//! initiators authenticate, which digests it accepts and its limits, checked against the
//! ranges of RFC 7143 §13 by [`TargetConfig::validate`].
//!
//! cowd never proposes a key in a login (see [`super::negotiate`]): a key the initiator leaves
//! out takes the RFC default. So every limit must be at least its default, or an initiator
//! that negotiates nothing would be allowed more than the target can take.

use std::collections::BTreeSet;

use super::chap::{ChapCredentials, MIN_SECRET_LEN};

/// RFC defaults of the data lengths.
pub const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;
pub const DEFAULT_MAX_BURST_LENGTH: u32 = 262_144;
pub const DEFAULT_FIRST_BURST_LENGTH: u32 = 65_536;
/// Range of MaxRecvDataSegmentLength, MaxBurstLength and FirstBurstLength.
pub const MIN_DATA_LENGTH: u32 = 512;
pub const MAX_DATA_LENGTH: u32 = (1 << 24) - 1;
/// Longest iSCSI name (RFC 7143 §4.2.7.1).
pub const MAX_NAME_LEN: usize = 223;

/// Which digests the target accepts (both HeaderDigest and DataDigest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestPolicy {
    /// None only.
    Off,
    /// CRC32C or None, in the initiator's order of preference.
    #[default]
    Allowed,
    /// CRC32C only; a login that does not agree to it fails.
    Required,
}

/// How initiators authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthPolicy {
    #[default]
    None,
    Chap(ChapCredentials),
}

/// One target this portal group serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    /// iSCSI name (`iqn....`).
    pub name: String,
    pub alias: Option<String>,
    /// `host:port` of each portal, for SendTargets (the portal group tag is appended). Empty:
    /// SendTargets lists the name only, and initiators use the address they reached.
    pub addresses: Vec<String>,
}

/// What the target offers: its targets, authentication and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub targets: Vec<TargetEntry>,
    pub portal_group_tag: u16,
    /// Authentication of normal sessions.
    pub auth: AuthPolicy,
    /// Authentication of discovery sessions.
    pub discovery_auth: AuthPolicy,
    pub digests: DigestPolicy,
    /// Largest data segment we receive.
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub max_outstanding_r2t: u16,
    pub max_connections: u16,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    /// Our side of the OR: `false` lets initiators send unsolicited data if they want.
    pub initial_r2t: bool,
    /// Our side of the AND.
    pub immediate_data: bool,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            targets: Vec::new(),
            portal_group_tag: 1,
            auth: AuthPolicy::None,
            discovery_auth: AuthPolicy::None,
            digests: DigestPolicy::Allowed,
            max_recv_data_segment_length: 256 << 10,
            max_burst_length: 1 << 20,
            first_burst_length: DEFAULT_FIRST_BURST_LENGTH,
            max_outstanding_r2t: 1,
            max_connections: 1,
            default_time2wait: 2,
            default_time2retain: 0,
            initial_r2t: true,
            immediate_data: true,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
        }
    }
}

/// Why a [`TargetConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} = {value} is outside {lo}..={hi}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        lo: u64,
        hi: u64,
    },
    #[error(
        "{field} = {value} is below the RFC default {default}, which applies when the initiator \
         does not negotiate it; raise it to at least {default}"
    )]
    BelowDefault {
        field: &'static str,
        value: u64,
        default: u64,
    },
    #[error("first_burst_length is above max_burst_length")]
    FirstBurstAboveMax,
    #[error("the CHAP secret of {0:?} is shorter than {MIN_SECRET_LEN} bytes")]
    ShortSecret(String),
    #[error("the initiator and target CHAP secrets are the same (RFC 7143 §12.1.3 forbids it)")]
    SameSecret,
    #[error("target {0:?} is listed twice or its name is not a valid iSCSI name")]
    BadTargetName(String),
}

fn check_range(field: &'static str, value: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            lo,
            hi,
        })
    }
}

fn check_default(field: &'static str, value: u64, default: u64) -> Result<(), ConfigError> {
    if value >= default {
        Ok(())
    } else {
        Err(ConfigError::BelowDefault {
            field,
            value,
            default,
        })
    }
}

fn check_auth(auth: &AuthPolicy) -> Result<(), ConfigError> {
    let AuthPolicy::Chap(c) = auth else {
        return Ok(());
    };
    for id in std::iter::once(&c.initiator).chain(&c.target) {
        if id.secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::ShortSecret(id.name.clone()));
        }
    }
    match &c.target {
        Some(t) if t.secret == c.initiator.secret => Err(ConfigError::SameSecret),
        _ => Ok(()),
    }
}

impl TargetConfig {
    /// Checks the ranges of RFC 7143 §13 and that every limit is at least the default that
    /// applies when an initiator does not negotiate the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let data = (u64::from(MIN_DATA_LENGTH), u64::from(MAX_DATA_LENGTH));
        let mrdsl = u64::from(self.max_recv_data_segment_length);
        check_range("max_recv_data_segment_length", mrdsl, data.0, data.1)?;
        let max_burst = u64::from(self.max_burst_length);
        check_range("max_burst_length", max_burst, data.0, data.1)?;
        let first_burst = u64::from(self.first_burst_length);
        check_range("first_burst_length", first_burst, data.0, data.1)?;
        let r2t = u64::from(self.max_outstanding_r2t);
        check_range("max_outstanding_r2t", r2t, 1, 65535)?;
        check_range("max_connections", u64::from(self.max_connections), 1, 65535)?;
        check_range(
            "default_time2wait",
            u64::from(self.default_time2wait),
            0,
            3600,
        )?;
        check_range(
            "default_time2retain",
            u64::from(self.default_time2retain),
            0,
            3600,
        )?;
        let default_max = u64::from(DEFAULT_MAX_BURST_LENGTH);
        check_default("max_burst_length", max_burst, default_max)?;
        let default_first = u64::from(DEFAULT_FIRST_BURST_LENGTH);
        check_default("first_burst_length", first_burst, default_first)?;
        if first_burst > max_burst {
            return Err(ConfigError::FirstBurstAboveMax);
        }
        check_auth(&self.auth)?;
        check_auth(&self.discovery_auth)?;
        let mut names = BTreeSet::new();
        for t in &self.targets {
            let valid = !t.name.is_empty() && t.name.len() <= MAX_NAME_LEN;
            if !valid || !names.insert(t.name.as_str()) {
                return Err(ConfigError::BadTargetName(t.name.clone()));
            }
        }
        Ok(())
    }
}
