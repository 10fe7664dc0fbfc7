//! The login phase, initiator side (pure): which keys each Login Request carries, and what the
//! target's answers mean (RFC 7143 §6.3, §12, §13).
//!
//! ```text
//!  Security, T→Operational: InitiatorName SessionType=Normal TargetName AuthMethod=None
//!                           (AuthMethod=CHAP,None with credentials)
//!     target: AuthMethod=None, T ─────────────────────────────────┐
//!     target: AuthMethod=CHAP ─> CHAP_A=5 ─> CHAP_A CHAP_I CHAP_C │
//!                               ─> CHAP_N CHAP_R, T ─> target: T ─┤
//!  Operational, T→FullFeature: HeaderDigest=None DataDigest=None ─┘
//!     ImmediateData=Yes InitialR2T=No MaxRecvDataSegmentLength=262144 MaxBurstLength
//!     FirstBurstLength ... ─> target's answers and declarations ─> T: Negotiated
//! ```
//!
//! [`Negotiator`] is a step function: each Login Response's stage bits and keys (a whole
//! text: the caller joins C-bit pieces) give the next request or the outcome. Keys the target
//! offers that the initiator did not are answered NotUnderstood; answers that cannot be
//! accepted (a digest, an error recovery level above 0, a number out of range) end the login.

use std::collections::BTreeSet;

use super::super::chap;
use super::super::pdu::{LoginStage, Stage};
use super::super::text::{IRRELEVANT, KeyValues, NOT_UNDERSTOOD, REJECT};
use super::super::url::Credentials;
use super::super::values::{hex, parse_binary, parse_bool, parse_number};

/// Our MaxRecvDataSegmentLength: the largest data segment the target may send us.
pub const MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 262_144;
/// The MaxBurstLength offered (the largest multiple of 512 the key takes); the target's
/// answer is the smaller of this and its own.
pub const OFFERED_MAX_BURST_LENGTH: u32 = 16_776_704;
/// The FirstBurstLength offered.
pub const OFFERED_FIRST_BURST_LENGTH: u32 = 262_144;
/// A login that needs more round trips than this is going nowhere.
const MAX_STEPS: u32 = 16;

/// RFC 7143 §13 defaults of the values a session runs with.
const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;
const DEFAULT_MAX_BURST_LENGTH: u32 = 262_144;
const DEFAULT_FIRST_BURST_LENGTH: u32 = 65_536;

/// The range RFC 7143 gives the data length keys.
const DATA_LENGTHS: (u64, u64) = (512, (1 << 24) - 1);

/// What the login agreed on; defaults of RFC 7143 for keys the target did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The target's MaxRecvDataSegmentLength: the largest data segment we may send.
    pub max_xmit_data_segment_length: u32,
    /// Ours: the largest data segment the target may send.
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    /// At most `max_burst_length`.
    pub first_burst_length: u32,
    /// Data-Out waits for an R2T (no unsolicited Data-Out PDUs).
    pub initial_r2t: bool,
    /// The SCSI Command PDU may carry data.
    pub immediate_data: bool,
    pub max_outstanding_r2t: u16,
    pub target_portal_group_tag: Option<u16>,
    pub target_alias: Option<String>,
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated {
            max_xmit_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
            max_recv_data_segment_length: MAX_RECV_DATA_SEGMENT_LENGTH,
            max_burst_length: DEFAULT_MAX_BURST_LENGTH,
            first_burst_length: DEFAULT_FIRST_BURST_LENGTH,
            initial_r2t: true,
            immediate_data: true,
            max_outstanding_r2t: 1,
            target_portal_group_tag: None,
            target_alias: None,
        }
    }
}

/// Why the login cannot go on, though the target did not fail it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginProblem {
    #[error("the target requires CHAP; give USER%PASSWORD@ in the URL")]
    ChapRequired,
    #[error("the target refused authentication method {0:?}")]
    AuthMethod(String),
    #[error("CHAP: {0}")]
    Chap(&'static str),
    #[error("the target answered {key}={value}, which cannot be accepted")]
    BadAnswer { key: String, value: String },
    #[error("the target answered in stage {got:?} while the login is in {expected:?}")]
    Stage { expected: Stage, got: Stage },
    #[error("the target asked to go to stage {0:?}, which was not offered")]
    Transit(Stage),
    #[error("no agreement after {MAX_STEPS} login round trips")]
    TooManySteps,
}

/// One Login Request's stage bits and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub stage: LoginStage,
    pub keys: KeyValues,
}

/// What to do after a Login Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Send(Request),
    /// The target moved to the full feature phase with these values.
    Done(Negotiated),
}

/// Where authentication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// AuthMethod offered, not answered yet.
    Offered,
    /// CHAP_A sent; the challenge is awaited.
    AwaitChallenge,
    /// CHAP_R sent; the target's transit says it matched.
    Responded,
    /// None chosen, or CHAP accepted.
    Done,
}

/// Who logs in to what.
#[derive(Debug, Clone)]
pub struct Identity {
    pub initiator_name: String,
    pub target_name: String,
    pub credentials: Option<Credentials>,
}

/// The login of one connection, initiator side.
#[derive(Debug)]
pub struct Negotiator {
    identity: Identity,
    stage: Stage,
    auth: Auth,
    /// Operational keys offered (the target's answers to these are results).
    offered: BTreeSet<&'static str>,
    agreed: Negotiated,
    steps: u32,
}

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

fn stage(current: Stage, next: Option<Stage>) -> LoginStage {
    LoginStage {
        current,
        next,
        cont: false,
    }
}

impl Negotiator {
    pub fn new(identity: Identity) -> Negotiator {
        Negotiator {
            identity,
            stage: Stage::Security,
            auth: Auth::Offered,
            offered: BTreeSet::new(),
            agreed: Negotiated::default(),
            steps: 0,
        }
    }

    /// The first request: identities and the authentication methods.
    pub fn first(&self) -> Request {
        let methods = if self.identity.credentials.is_some() {
            "CHAP,None"
        } else {
            "None"
        };
        Request {
            stage: stage(Stage::Security, Some(Stage::Operational)),
            keys: vec![
                pair("InitiatorName", &self.identity.initiator_name),
                pair("SessionType", "Normal"),
                pair("TargetName", &self.identity.target_name),
                pair("AuthMethod", methods),
            ],
        }
    }

    /// Takes a Login Response (status Success) and its keys.
    pub fn on_response(
        &mut self,
        response: LoginStage,
        keys: &KeyValues,
    ) -> Result<Step, LoginProblem> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(LoginProblem::TooManySteps);
        }
        if response.current != self.stage {
            return Err(LoginProblem::Stage {
                expected: self.stage,
                got: response.current,
            });
        }
        match self.stage {
            Stage::Security => self.security(response.next, keys),
            _ => self.operational(response.next, keys),
        }
    }

    fn security(&mut self, next: Option<Stage>, keys: &KeyValues) -> Result<Step, LoginProblem> {
        let mut answers = KeyValues::new();
        let mut challenge = (None, None);
        for (k, v) in keys {
            match k.as_str() {
                "AuthMethod" => self.auth_method(v, &mut answers)?,
                "CHAP_A" if self.auth == Auth::AwaitChallenge => {
                    if parse_number(v) != Some(chap::CHAP_MD5) {
                        return Err(LoginProblem::Chap("the target chose an algorithm not MD5"));
                    }
                }
                "CHAP_I" if self.auth == Auth::AwaitChallenge => challenge.0 = Some(v),
                "CHAP_C" if self.auth == Auth::AwaitChallenge => challenge.1 = Some(v),
                key if key.starts_with("CHAP_") => {
                    return Err(LoginProblem::Chap("a CHAP key out of turn"));
                }
                _ => self.declaration(k, v, &mut answers),
            }
        }
        if let (Some(id), Some(c)) = challenge {
            answers.extend(self.chap_response(id, c)?);
            self.auth = Auth::Responded;
        } else if self.auth == Auth::AwaitChallenge && !answers.iter().any(|(k, _)| k == "CHAP_A") {
            return Err(LoginProblem::Chap("no CHAP_I and CHAP_C in the challenge"));
        }
        match next {
            Some(Stage::Operational) => {
                if matches!(self.auth, Auth::Offered | Auth::AwaitChallenge) {
                    return Err(LoginProblem::Chap(
                        "the target left the security stage before authentication ended",
                    ));
                }
                self.auth = Auth::Done;
                self.stage = Stage::Operational;
                Ok(Step::Send(self.operational_offer()))
            }
            Some(other) => Err(LoginProblem::Transit(other)),
            None => {
                // Ask to move on unless CHAP_A is still to be answered.
                let transit = self.auth != Auth::AwaitChallenge;
                let next = transit.then_some(Stage::Operational);
                Ok(Step::Send(Request {
                    stage: stage(Stage::Security, next),
                    keys: answers,
                }))
            }
        }
    }

    fn auth_method(&mut self, v: &str, answers: &mut KeyValues) -> Result<(), LoginProblem> {
        if self.auth != Auth::Offered {
            return Ok(());
        }
        match v {
            "None" => self.auth = Auth::Done,
            "CHAP" if self.identity.credentials.is_some() => {
                answers.push(pair("CHAP_A", chap::CHAP_MD5.to_string()));
                self.auth = Auth::AwaitChallenge;
            }
            "CHAP" => return Err(LoginProblem::ChapRequired),
            other => return Err(LoginProblem::AuthMethod(other.to_owned())),
        }
        Ok(())
    }

    fn chap_response(&self, id: &str, c: &str) -> Result<KeyValues, LoginProblem> {
        let id = parse_number(id)
            .and_then(|n| u8::try_from(n).ok())
            .ok_or(LoginProblem::Chap("CHAP_I is not a number below 256"))?;
        let c = parse_binary(c).ok_or(LoginProblem::Chap("CHAP_C is not a binary value"))?;
        let credentials = self
            .identity
            .credentials
            .as_ref()
            .ok_or(LoginProblem::ChapRequired)?;
        let r = chap::response(id, credentials.password.as_bytes(), &c);
        Ok(vec![
            pair("CHAP_N", &credentials.user),
            pair("CHAP_R", hex(&r)),
        ])
    }

    /// The keys of the operational stage, all in one request that asks for the full feature
    /// phase.
    fn operational_offer(&mut self) -> Request {
        let keys = [
            ("HeaderDigest", "None".to_owned()),
            ("DataDigest", "None".to_owned()),
            ("ImmediateData", "Yes".to_owned()),
            ("InitialR2T", "No".to_owned()),
            (
                "MaxRecvDataSegmentLength",
                MAX_RECV_DATA_SEGMENT_LENGTH.to_string(),
            ),
            ("MaxBurstLength", OFFERED_MAX_BURST_LENGTH.to_string()),
            ("FirstBurstLength", OFFERED_FIRST_BURST_LENGTH.to_string()),
            ("MaxConnections", "1".to_owned()),
            ("ErrorRecoveryLevel", "0".to_owned()),
            ("MaxOutstandingR2T", "1".to_owned()),
            ("DataPDUInOrder", "Yes".to_owned()),
            ("DataSequenceInOrder", "Yes".to_owned()),
            ("DefaultTime2Wait", "0".to_owned()),
            ("DefaultTime2Retain", "0".to_owned()),
        ];
        // MaxRecvDataSegmentLength is declarative: the target's is not an answer to ours.
        self.offered = keys
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| *k != "MaxRecvDataSegmentLength")
            .collect();
        Request {
            stage: stage(Stage::Operational, Some(Stage::FullFeature)),
            keys: keys.into_iter().map(|(k, v)| pair(k, v)).collect(),
        }
    }

    fn operational(&mut self, next: Option<Stage>, keys: &KeyValues) -> Result<Step, LoginProblem> {
        let mut answers = KeyValues::new();
        for (k, v) in keys {
            if self.offered.contains(k.as_str()) {
                self.result(k, v)?;
            } else {
                self.declaration(k, v, &mut answers);
            }
        }
        match next {
            Some(Stage::FullFeature) => {
                let mut agreed = self.agreed.clone();
                agreed.first_burst_length = agreed.first_burst_length.min(agreed.max_burst_length);
                Ok(Step::Done(agreed))
            }
            Some(other) => Err(LoginProblem::Transit(other)),
            None => Ok(Step::Send(Request {
                stage: stage(Stage::Operational, Some(Stage::FullFeature)),
                keys: answers,
            })),
        }
    }

    /// A key the target declares or offers on its own: recorded, or answered NotUnderstood.
    fn declaration(&mut self, k: &str, v: &str, answers: &mut KeyValues) {
        let a = &mut self.agreed;
        match k {
            "MaxRecvDataSegmentLength" => {
                if let Some(n) = number(v, DATA_LENGTHS) {
                    a.max_xmit_data_segment_length = n as u32;
                }
            }
            "TargetPortalGroupTag" => a.target_portal_group_tag = v.parse().ok(),
            "TargetAlias" => a.target_alias = Some(v.to_owned()),
            // Redirection and addresses are not followed; the status says if it matters.
            "TargetAddress" => {}
            _ if [IRRELEVANT, REJECT, NOT_UNDERSTOOD].contains(&v) => {}
            _ => answers.push(pair(k, NOT_UNDERSTOOD)),
        }
    }

    /// The target's answer to a key we offered: the negotiated value.
    fn result(&mut self, k: &str, v: &str) -> Result<(), LoginProblem> {
        if [IRRELEVANT, REJECT, NOT_UNDERSTOOD].contains(&v) {
            // The default stands; a refused digest of None cannot be.
            if k.ends_with("Digest") && v == REJECT {
                return Err(bad(k, v));
            }
            return Ok(());
        }
        let a = &mut self.agreed;
        match k {
            "HeaderDigest" | "DataDigest" if v == "None" => {}
            "ImmediateData" => a.immediate_data = parse_bool(v).ok_or_else(|| bad(k, v))?,
            "InitialR2T" => a.initial_r2t = parse_bool(v).ok_or_else(|| bad(k, v))?,
            // The result is the smaller value; a target that answers more than was offered
            // gets what was offered.
            "MaxBurstLength" => {
                let n = number(v, DATA_LENGTHS).ok_or_else(|| bad(k, v))?;
                a.max_burst_length = n.min(u64::from(OFFERED_MAX_BURST_LENGTH)) as u32;
            }
            "FirstBurstLength" => {
                let n = number(v, DATA_LENGTHS).ok_or_else(|| bad(k, v))?;
                a.first_burst_length = n.min(u64::from(OFFERED_FIRST_BURST_LENGTH)) as u32;
            }
            "MaxOutstandingR2T" => {
                a.max_outstanding_r2t = number(v, (1, 1)).ok_or_else(|| bad(k, v))? as u16;
            }
            "ErrorRecoveryLevel" if v == "0" => {}
            "MaxConnections" if v == "1" => {}
            "DataPDUInOrder" | "DataSequenceInOrder" if parse_bool(v).is_some() => {}
            "DefaultTime2Wait" | "DefaultTime2Retain" if parse_number(v).is_some() => {}
            _ => return Err(bad(k, v)),
        }
        Ok(())
    }
}

fn bad(k: &str, v: &str) -> LoginProblem {
    LoginProblem::BadAnswer {
        key: k.to_owned(),
        value: v.to_owned(),
    }
}

/// A number within `range` (inclusive).
fn number(v: &str, (lo, hi): (u64, u64)) -> Option<u64> {
    parse_number(v).filter(|n| (lo..=hi).contains(n))
}
