//! The target's side of key negotiation in the login and in Text requests (RFC 7143 §6.2 and
//! §13): for each key an initiator offers, the stage it may come in, the rule that makes the
//! target's answer, and the agreed values, kept as [`SessionParams`] (pure; fuzzed).
//!
//! | key | rule: the target answers | default | range | stage |
//! |---|---|---|---|---|
//! | HeaderDigest, DataDigest | first offered value the [`DigestPolicy`] accepts, else Reject | None | CRC32C, None | O |
//! | MaxConnections | min | 1 | 1..=65535 | O, irrelevant in discovery |
//! | InitialR2T | OR | Yes | | O, irrelevant in discovery |
//! | ImmediateData | AND | Yes | | O, irrelevant in discovery |
//! | MaxRecvDataSegmentLength | declarative: the initiator's is what we may send; ours is declared once | 8192 | 512..=2^24-1 | O, F |
//! | MaxBurstLength | min | 262144 | 512..=2^24-1 | O, irrelevant in discovery |
//! | FirstBurstLength | min, and at most MaxBurstLength | 65536 | 512..=2^24-1 | O, irrelevant in discovery |
//! | DefaultTime2Wait | max | 2 | 0..=3600 | O |
//! | DefaultTime2Retain | min | 20 | 0..=3600 | O |
//! | MaxOutstandingR2T | min | 1 | 1..=65535 | O, irrelevant in discovery |
//! | DataPDUInOrder, DataSequenceInOrder | OR | Yes | | O, irrelevant in discovery |
//! | ErrorRecoveryLevel | min (cowd supports 0) | 0 | 0..=2 | O |
//! | iSCSIProtocolLevel | min (cowd: 1, RFC 7143) | 1 | 0..=31 | O, irrelevant in discovery |
//! | TaskReporting | RFC3720 if offered, else Reject | RFC3720 | | O, irrelevant in discovery |
//! | IFMarker, OFMarker (RFC 3720, obsolete) | AND with No: No | No | | O |
//! | IFMarkInt, OFMarkInt (obsolete) | Irrelevant | | | O |
//! | SessionType | declarative, first request only | Normal | Normal, Discovery | S, O |
//! | InitiatorName | declarative, required in the first request | | | S, O |
//! | TargetName | declarative, names a configured target (normal sessions) | | | S, O |
//! | InitiatorAlias, X#NodeArchitecture | declarative, no answer | | | any |
//! | TargetAlias, TargetPortalGroupTag | declared by the target in its first answer of a normal session | | | |
//! | TargetAddress | sent by targets only: an error from an initiator | | | |
//! | SendTargets | All (discovery), a target name, or empty (the session's target) | | | F |
//! | AuthMethod | None or CHAP as the [`AuthPolicy`] says; nothing acceptable fails the login | | | S |
//! | CHAP_A, CHAP_I, CHAP_C, CHAP_N, CHAP_R | [`super::chap`] | | | S |
//! | X-... and anything else | NotUnderstood | | | any |
//!
//! Stages: S security, O operational, F full feature (Text requests).
//!
//! Where the RFC leaves room, cowd:
//! - answers every negotiated key, also where an answer is optional (AND offered No, OR
//!   offered Yes);
//! - refuses a malformed or out-of-range value with an error (the login fails with Initiator
//!   Error, as Linux and FreeBSD's ctld do) rather than answering Reject;
//! - refuses a key negotiated twice in one login, but accepts a declarative key repeated with
//!   the same value (libiscsi repeats InitiatorName, SessionType and TargetName in the
//!   operational stage after AuthMethod=None);
//! - ignores offers of Irrelevant, Reject and NotUnderstood (answers, never offers);
//! - refuses an operational key in the security stage, and a login-only key in a Text
//!   request, with an error (Linux answers NotUnderstood, which initiators treat as fatal
//!   for standard keys anyway);
//! - never proposes a key itself: a key the initiator leaves out takes the RFC default, so
//!   [`TargetConfig::validate`] requires cowd's limits to be at least the defaults.

use std::collections::BTreeSet;

use super::chap::{Challenge, Chap, ChapError};
pub use super::config::{
    AuthPolicy, ConfigError, DEFAULT_FIRST_BURST_LENGTH, DEFAULT_MAX_BURST_LENGTH,
    DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH, DigestPolicy, MAX_DATA_LENGTH, MAX_NAME_LEN,
    MIN_DATA_LENGTH, TargetConfig, TargetEntry,
};
use super::digest::Digests;
use super::pdu::Stage;
use super::text::{IRRELEVANT, KeyValues, NOT_UNDERSTOOD, REJECT};
use super::values::{bool_str, list, parse_bool, parse_number};

/// The iSCSIProtocolLevel of RFC 7143.
pub const PROTOCOL_LEVEL: u8 = 1;

/// Normal (SCSI commands) or Discovery (SendTargets only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionType {
    #[default]
    Normal,
    Discovery,
}

/// The values a session runs with once the login is over: what was agreed, defaults for the
/// rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub session_type: SessionType,
    pub initiator_name: Option<String>,
    pub initiator_alias: Option<String>,
    /// The target of a normal session.
    pub target_name: Option<String>,
    /// The CHAP name the initiator authenticated as.
    pub chap_name: Option<String>,
    pub digests: Digests,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// Largest data segment the target receives (its own declaration).
    pub max_recv_data_segment_length: u32,
    /// Largest data segment the target may send (the initiator's MaxRecvDataSegmentLength).
    pub max_xmit_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
    pub protocol_level: u8,
}

impl Default for SessionParams {
    /// The defaults of RFC 7143 §13.
    fn default() -> Self {
        SessionParams {
            session_type: SessionType::Normal,
            initiator_name: None,
            initiator_alias: None,
            target_name: None,
            chap_name: None,
            digests: Digests::NONE,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_recv_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
            max_xmit_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
            max_burst_length: DEFAULT_MAX_BURST_LENGTH,
            first_burst_length: DEFAULT_FIRST_BURST_LENGTH,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            protocol_level: PROTOCOL_LEVEL,
        }
    }
}

/// Why the target refuses what the initiator sent (the login maps each to a status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    #[error("{key}={value:?} is not a valid value")]
    InvalidValue { key: String, value: String },
    #[error("{0} was negotiated twice")]
    Renegotiated(String),
    #[error("{key} may not be sent in the {stage:?} stage")]
    WrongStage { key: String, stage: Stage },
    #[error("{0} is sent by targets only")]
    NotForTarget(String),
    #[error("{key} changed from {old:?} to {new:?}")]
    Redeclared {
        key: String,
        old: String,
        new: String,
    },
    #[error("InitiatorName is missing from the first login request")]
    MissingInitiatorName,
    #[error("TargetName is missing from the first login request of a normal session")]
    MissingTargetName,
    #[error("no target named {0:?} here")]
    TargetNotFound(String),
    #[error("AuthMethod={0:?} offers no method this target accepts")]
    AuthMethodRejected(String),
    #[error("this target requires authentication")]
    AuthRequired,
    #[error("CHAP: {0}")]
    Chap(#[from] ChapError),
    #[error("CHAP was chosen but no challenge was supplied")]
    NoChallenge,
    #[error("{0}=CRC32C is required by this target")]
    DigestRequired(&'static str),
}

/// Where a key may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Security,
    Operational,
    /// Security or operational stage (the login).
    Login,
    /// Operational stage or a Text request.
    OperationalOrText,
    /// A Text request in full feature phase.
    Text,
    Any,
    /// Only targets send it.
    TargetOnly,
}

/// Every key cowd knows, and where it may come; the rest are answered NotUnderstood.
const KEYS: &[(&str, Use)] = &[
    ("AuthMethod", Use::Security),
    ("CHAP_A", Use::Security),
    ("CHAP_I", Use::Security),
    ("CHAP_C", Use::Security),
    ("CHAP_N", Use::Security),
    ("CHAP_R", Use::Security),
    ("HeaderDigest", Use::Operational),
    ("DataDigest", Use::Operational),
    ("MaxConnections", Use::Operational),
    ("InitialR2T", Use::Operational),
    ("ImmediateData", Use::Operational),
    ("MaxRecvDataSegmentLength", Use::OperationalOrText),
    ("MaxBurstLength", Use::Operational),
    ("FirstBurstLength", Use::Operational),
    ("DefaultTime2Wait", Use::Operational),
    ("DefaultTime2Retain", Use::Operational),
    ("MaxOutstandingR2T", Use::Operational),
    ("DataPDUInOrder", Use::Operational),
    ("DataSequenceInOrder", Use::Operational),
    ("ErrorRecoveryLevel", Use::Operational),
    ("iSCSIProtocolLevel", Use::Operational),
    ("TaskReporting", Use::Operational),
    ("IFMarker", Use::Operational),
    ("OFMarker", Use::Operational),
    ("IFMarkInt", Use::Operational),
    ("OFMarkInt", Use::Operational),
    ("SessionType", Use::Login),
    ("InitiatorName", Use::Login),
    ("TargetName", Use::Login),
    ("InitiatorAlias", Use::Any),
    ("X#NodeArchitecture", Use::Any),
    ("SendTargets", Use::Text),
    ("TargetAlias", Use::TargetOnly),
    ("TargetAddress", Use::TargetOnly),
    ("TargetPortalGroupTag", Use::TargetOnly),
];

/// Keys whose value does not matter in a discovery session.
const IRRELEVANT_IN_DISCOVERY: &[&str] = &[
    "MaxConnections",
    "InitialR2T",
    "ImmediateData",
    "MaxBurstLength",
    "FirstBurstLength",
    "MaxOutstandingR2T",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "iSCSIProtocolLevel",
    "TaskReporting",
];

/// Declarative keys, handled before the rest of an offer.
const DECLARATIVE: &[&str] = &[
    "SessionType",
    "InitiatorName",
    "TargetName",
    "InitiatorAlias",
];

fn key_use(key: &str) -> Option<Use> {
    KEYS.iter().find(|(k, _)| *k == key).map(|&(_, u)| u)
}

fn stage_allows(u: Use, stage: Stage) -> bool {
    match u {
        Use::Security => stage == Stage::Security,
        Use::Operational => stage == Stage::Operational,
        Use::Login => stage != Stage::FullFeature,
        Use::OperationalOrText => stage != Stage::Security,
        Use::Text => stage == Stage::FullFeature,
        Use::Any | Use::TargetOnly => true,
    }
}

/// Where authentication stands.
#[derive(Debug)]
enum Security {
    /// AuthMethod not agreed.
    Open,
    /// AuthMethod=None agreed.
    NoAuth,
    Chap(Chap),
}

/// The negotiation of one connection, from its first login request to its last Text request.
#[derive(Debug)]
pub struct Negotiation {
    config: TargetConfig,
    challenge: Option<Challenge>,
    stage: Stage,
    params: SessionParams,
    /// Index in `config.targets` of a normal session's target.
    target: Option<usize>,
    security: Security,
    /// Keys negotiated (not declared) in this login, to refuse a second negotiation.
    negotiated: BTreeSet<String>,
    /// The first offer has been answered (and the target's first declarations made).
    answered_first: bool,
    /// Our MaxRecvDataSegmentLength has been declared.
    declared_mrdsl: bool,
}

fn invalid(key: &str, value: &str) -> NegotiateError {
    NegotiateError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// A number in `lo..=hi`.
fn number(key: &str, value: &str, lo: u64, hi: u64) -> Result<u64, NegotiateError> {
    parse_number(value)
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| invalid(key, value))
}

fn boolean(key: &str, value: &str) -> Result<bool, NegotiateError> {
    parse_bool(value).ok_or_else(|| invalid(key, value))
}

fn pair(key: &str, value: impl Into<String>) -> KeyValues {
    vec![(key.to_owned(), value.into())]
}

impl Negotiation {
    /// A negotiation that starts in the security stage.
    pub fn new(config: TargetConfig) -> Negotiation {
        let params = SessionParams {
            max_recv_data_segment_length: config.max_recv_data_segment_length,
            ..SessionParams::default()
        };
        Negotiation {
            config,
            challenge: None,
            stage: Stage::Security,
            params,
            target: None,
            security: Security::Open,
            negotiated: BTreeSet::new(),
            answered_first: false,
            declared_mrdsl: false,
        }
    }

    /// The challenge to use if the initiator picks CHAP (drawn at random by the caller).
    pub fn with_chap_challenge(mut self, challenge: Challenge) -> Negotiation {
        self.challenge = Some(challenge);
        self
    }

    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Moves to `stage` (the login does, at each transit).
    pub fn set_stage(&mut self, stage: Stage) {
        self.stage = stage;
    }

    pub fn session_type(&self) -> SessionType {
        self.params.session_type
    }

    fn auth_policy(&self) -> &AuthPolicy {
        match self.params.session_type {
            SessionType::Normal => &self.config.auth,
            SessionType::Discovery => &self.config.discovery_auth,
        }
    }

    /// Whether this session must authenticate (known once the first request is answered).
    pub fn auth_required(&self) -> bool {
        matches!(self.auth_policy(), AuthPolicy::Chap(_))
    }

    /// Whether authentication is complete, or not required.
    pub fn security_done(&self) -> bool {
        match &self.security {
            Security::Chap(c) => c.is_done(),
            Security::Open | Security::NoAuth => !self.auth_required(),
        }
    }

    /// Whether a CHAP exchange has started and not finished.
    pub fn security_in_progress(&self) -> bool {
        matches!(&self.security, Security::Chap(c) if !c.is_done())
    }

    /// Checks that the login may enter full feature phase.
    pub fn check_complete(&self) -> Result<(), NegotiateError> {
        if !self.security_done() {
            return Err(NegotiateError::AuthRequired);
        }
        if self.params.initiator_name.is_none() {
            return Err(NegotiateError::MissingInitiatorName);
        }
        if self.params.session_type == SessionType::Normal && self.target.is_none() {
            return Err(NegotiateError::MissingTargetName);
        }
        if self.config.digests == DigestPolicy::Required {
            if !self.params.digests.header {
                return Err(NegotiateError::DigestRequired("HeaderDigest"));
            }
            if !self.params.digests.data {
                return Err(NegotiateError::DigestRequired("DataDigest"));
            }
        }
        Ok(())
    }

    /// The values agreed so far, with defaults for the rest.
    pub fn params(&self) -> SessionParams {
        let mut p = self.params.clone();
        p.first_burst_length = p.first_burst_length.min(p.max_burst_length);
        p
    }

    /// Takes the keys of one logical text (a login request's or a Text request's) and returns
    /// the target's answers.
    pub fn offer(&mut self, keys: &[(String, String)]) -> Result<KeyValues, NegotiateError> {
        let mut declared: Vec<&(String, String)> = keys
            .iter()
            .filter(|(k, _)| DECLARATIVE.contains(&k.as_str()))
            .collect();
        // SessionType first: the TargetName lookup depends on it.
        declared.sort_by_key(|(k, _)| k != "SessionType");
        for (k, v) in declared {
            self.declare(k, v)?;
        }
        let mut answers = Vec::new();
        if !self.answered_first && self.stage != Stage::FullFeature {
            self.answered_first = true;
            if self.params.initiator_name.is_none() {
                return Err(NegotiateError::MissingInitiatorName);
            }
            if self.params.session_type == SessionType::Normal {
                let Some(t) = self.target.map(|i| &self.config.targets[i]) else {
                    return Err(NegotiateError::MissingTargetName);
                };
                if let Some(alias) = &t.alias {
                    answers.push(("TargetAlias".to_owned(), alias.clone()));
                }
                let tpgt = self.config.portal_group_tag.to_string();
                answers.push(("TargetPortalGroupTag".to_owned(), tpgt));
            }
        }
        let mut rest: Vec<&(String, String)> = keys
            .iter()
            .filter(|(k, _)| !DECLARATIVE.contains(&k.as_str()) && !k.starts_with("CHAP_"))
            .collect();
        // MaxBurstLength first: FirstBurstLength is bounded by it.
        rest.sort_by_key(|(k, _)| k != "MaxBurstLength");
        for (k, v) in rest {
            answers.extend(self.answer(k, v)?);
        }
        let chap: KeyValues = keys
            .iter()
            .filter(|(k, _)| k.starts_with("CHAP_"))
            .cloned()
            .collect();
        if !chap.is_empty() {
            answers.extend(self.chap(&chap)?);
        }
        if self.stage == Stage::Operational && !self.declared_mrdsl {
            self.declared_mrdsl = true;
            let ours = self.config.max_recv_data_segment_length.to_string();
            answers.push(("MaxRecvDataSegmentLength".to_owned(), ours));
        }
        Ok(answers)
    }

    /// Records a declarative key of the initiator.
    fn declare(&mut self, key: &str, value: &str) -> Result<(), NegotiateError> {
        if !stage_allows(key_use(key).unwrap_or(Use::Any), self.stage) {
            return Err(NegotiateError::WrongStage {
                key: key.to_owned(),
                stage: self.stage,
            });
        }
        let old = match key {
            "SessionType" => {
                let t = match value {
                    "Normal" => SessionType::Normal,
                    "Discovery" => SessionType::Discovery,
                    _ => return Err(invalid(key, value)),
                };
                let before = self.params.session_type;
                if !self.answered_first {
                    self.params.session_type = t;
                    return Ok(());
                }
                (before != t).then(|| format!("{before:?}"))
            }
            "InitiatorName" => {
                if value.is_empty() || value.len() > MAX_NAME_LEN {
                    return Err(invalid(key, value));
                }
                let old = self.params.initiator_name.replace(value.to_owned());
                old.filter(|o| o != value)
            }
            "TargetName" => {
                if value.is_empty() || value.len() > MAX_NAME_LEN {
                    return Err(invalid(key, value));
                }
                let old = self.params.target_name.replace(value.to_owned());
                if self.params.session_type == SessionType::Normal {
                    let found = self.config.targets.iter().position(|t| t.name == value);
                    self.target = Some(
                        found.ok_or_else(|| NegotiateError::TargetNotFound(value.to_owned()))?,
                    );
                }
                old.filter(|o| o != value)
            }
            _ => {
                self.params.initiator_alias = Some(value.to_owned());
                None
            }
        };
        match old {
            Some(old) => Err(NegotiateError::Redeclared {
                key: key.to_owned(),
                old,
                new: value.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The answers to one non-declarative, non-CHAP key.
    fn answer(&mut self, key: &str, value: &str) -> Result<KeyValues, NegotiateError> {
        let Some(u) = key_use(key) else {
            return Ok(pair(key, NOT_UNDERSTOOD));
        };
        if u == Use::TargetOnly {
            return Err(NegotiateError::NotForTarget(key.to_owned()));
        }
        if !stage_allows(u, self.stage) {
            return Err(NegotiateError::WrongStage {
                key: key.to_owned(),
                stage: self.stage,
            });
        }
        if [IRRELEVANT, REJECT, NOT_UNDERSTOOD].contains(&value) {
            return Ok(Vec::new());
        }
        let negotiated = matches!(u, Use::Security | Use::Operational);
        if negotiated && self.stage != Stage::FullFeature && !self.negotiated.insert(key.into()) {
            return Err(NegotiateError::Renegotiated(key.to_owned()));
        }
        if self.params.session_type == SessionType::Discovery
            && IRRELEVANT_IN_DISCOVERY.contains(&key)
        {
            return Ok(pair(key, IRRELEVANT));
        }
        self.compute(key, value)
    }

    /// Applies the key's rule (see the table in the module doc).
    fn compute(&mut self, key: &str, value: &str) -> Result<KeyValues, NegotiateError> {
        let cfg = &self.config;
        let p = &mut self.params;
        let data = (u64::from(MIN_DATA_LENGTH), u64::from(MAX_DATA_LENGTH));
        let answer = match key {
            "AuthMethod" => return self.auth_method(value),
            "SendTargets" => return Ok(self.send_targets(value)),
            "HeaderDigest" | "DataDigest" => {
                let crc = match list(value).find_map(|v| digest_choice(v, cfg.digests)) {
                    Some(crc) => crc,
                    None => return Ok(pair(key, REJECT)),
                };
                if key == "HeaderDigest" {
                    p.digests.header = crc;
                } else {
                    p.digests.data = crc;
                }
                (if crc { "CRC32C" } else { "None" }).to_owned()
            }
            "MaxConnections" => {
                let n = number(key, value, 1, 65535)?.min(u64::from(cfg.max_connections));
                p.max_connections = n as u16;
                n.to_string()
            }
            "InitialR2T" => {
                p.initial_r2t = boolean(key, value)? || cfg.initial_r2t;
                bool_str(p.initial_r2t).to_owned()
            }
            "ImmediateData" => {
                p.immediate_data = boolean(key, value)? && cfg.immediate_data;
                bool_str(p.immediate_data).to_owned()
            }
            "MaxRecvDataSegmentLength" => {
                p.max_xmit_data_segment_length = number(key, value, data.0, data.1)? as u32;
                return Ok(Vec::new());
            }
            "MaxBurstLength" => {
                let n = number(key, value, data.0, data.1)?.min(u64::from(cfg.max_burst_length));
                p.max_burst_length = n as u32;
                n.to_string()
            }
            "FirstBurstLength" => {
                let n = number(key, value, data.0, data.1)?
                    .min(u64::from(cfg.first_burst_length))
                    .min(u64::from(p.max_burst_length));
                p.first_burst_length = n as u32;
                n.to_string()
            }
            "DefaultTime2Wait" => {
                let n = number(key, value, 0, 3600)?.max(u64::from(cfg.default_time2wait));
                p.default_time2wait = n as u16;
                n.to_string()
            }
            "DefaultTime2Retain" => {
                let n = number(key, value, 0, 3600)?.min(u64::from(cfg.default_time2retain));
                p.default_time2retain = n as u16;
                n.to_string()
            }
            "MaxOutstandingR2T" => {
                let ours = u64::from(cfg.max_outstanding_r2t);
                let n = number(key, value, 1, 65535)?.min(ours);
                p.max_outstanding_r2t = n as u16;
                n.to_string()
            }
            "DataPDUInOrder" => {
                p.data_pdu_in_order = boolean(key, value)? || cfg.data_pdu_in_order;
                bool_str(p.data_pdu_in_order).to_owned()
            }
            "DataSequenceInOrder" => {
                p.data_sequence_in_order = boolean(key, value)? || cfg.data_sequence_in_order;
                bool_str(p.data_sequence_in_order).to_owned()
            }
            "ErrorRecoveryLevel" => {
                // min(offer, 0): cowd recovers from nothing but by a new session.
                number(key, value, 0, 2)?;
                p.error_recovery_level = 0;
                "0".to_owned()
            }
            "iSCSIProtocolLevel" => {
                let n = number(key, value, 0, 31)?.min(u64::from(PROTOCOL_LEVEL));
                p.protocol_level = n as u8;
                n.to_string()
            }
            "TaskReporting" => {
                let ours = "RFC3720";
                (if list(value).any(|v| v == ours) {
                    ours
                } else {
                    REJECT
                })
                .to_owned()
            }
            "IFMarker" | "OFMarker" => {
                boolean(key, value)?;
                "No".to_owned()
            }
            "IFMarkInt" | "OFMarkInt" => IRRELEVANT.to_owned(),
            // X#NodeArchitecture: declarative, nothing to answer.
            _ => return Ok(Vec::new()),
        };
        Ok(pair(key, answer))
    }

    fn auth_method(&mut self, value: &str) -> Result<KeyValues, NegotiateError> {
        let chosen = match self.auth_policy() {
            AuthPolicy::None => list(value).find(|&m| m == "None"),
            AuthPolicy::Chap(_) => list(value).find(|&m| m == "CHAP"),
        };
        let Some(chosen) = chosen else {
            return Err(NegotiateError::AuthMethodRejected(value.to_owned()));
        };
        self.security = match self.auth_policy() {
            AuthPolicy::None => Security::NoAuth,
            AuthPolicy::Chap(credentials) => {
                let challenge = self.challenge.clone().ok_or(NegotiateError::NoChallenge)?;
                Security::Chap(Chap::new(credentials.clone(), challenge))
            }
        };
        Ok(pair("AuthMethod", chosen))
    }

    fn chap(&mut self, keys: &[(String, String)]) -> Result<KeyValues, NegotiateError> {
        if self.stage != Stage::Security {
            return Err(NegotiateError::WrongStage {
                key: keys[0].0.clone(),
                stage: self.stage,
            });
        }
        let Security::Chap(chap) = &mut self.security else {
            return Err(ChapError::Unexpected(keys[0].0.clone()).into());
        };
        let answers = chap.step(keys)?;
        if chap.is_done() {
            if let AuthPolicy::Chap(c) = self.auth_policy() {
                self.params.chap_name = Some(c.initiator.name.clone());
            }
        }
        Ok(answers)
    }

    /// TargetName and TargetAddress pairs for SendTargets (RFC 7143 Appendix C).
    fn send_targets(&self, value: &str) -> KeyValues {
        let normal = self.params.session_type == SessionType::Normal;
        let own = self.target.map(|i| &self.config.targets[i]);
        let selected: Vec<&TargetEntry> = match value {
            "All" if !normal => self.config.targets.iter().collect(),
            "" if normal => own.into_iter().collect(),
            "All" | "" => return pair("SendTargets", REJECT),
            name if normal => own.filter(|t| t.name == name).into_iter().collect(),
            name => self
                .config
                .targets
                .iter()
                .filter(|t| t.name == name)
                .collect(),
        };
        let tpgt = self.config.portal_group_tag;
        let mut out = Vec::new();
        for t in selected {
            out.push(("TargetName".to_owned(), t.name.clone()));
            for a in &t.addresses {
                out.push(("TargetAddress".to_owned(), format!("{a},{tpgt}")));
            }
        }
        out
    }
}

/// Whether a digest value is acceptable, and if so whether it means CRC32C.
fn digest_choice(value: &str, policy: DigestPolicy) -> Option<bool> {
    match (value, policy) {
        ("CRC32C", DigestPolicy::Allowed | DigestPolicy::Required) => Some(true),
        ("None", DigestPolicy::Allowed | DigestPolicy::Off) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
#[path = "negotiate_tests.rs"]
mod tests;
