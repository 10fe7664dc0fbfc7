//! The login phase, target side (RFC 7143 §6.3, §11.12, §11.13): stages and their transit
//! rules, the C bit in both directions, and the status a failed login answers with (pure).
//!
//! ```text
//!   Security (0) ──T──> Operational (1) ──T──> FullFeature (3)
//!        └─────────────────────T────────────────────┘
//! ```
//!
//! Each Login Request must carry version 0 in its range, the ISID, TSIH and CID of the first
//! request, and CSG equal to the stage the login is in (the first request may start in the
//! security or the operational stage). T=1 needs NSG above CSG and C=0. A request with C=1 gets
//! an empty response; its text is parsed once the run ends. Answers longer than
//! [`MAX_LOGIN_DATA_LEN`] go out in several responses with C=1, each asked for by an empty
//! request, and the transit waits for the last (and for that request to ask for it again).
//!
//! The target transits when the initiator asks to and:
//! - leaving the security stage, authentication is done or not required (a CHAP exchange still
//!   running answers T=0; an initiator that asks to leave without authenticating where the
//!   policy requires it fails with Authentication Failure, and so does one that skips the
//!   security stage);
//! - entering full feature phase, [`Negotiation::check_complete`] holds.
//!
//! Every failure is a [`LoginError`]; [`LoginError::status`] is the one place that maps it to
//! the status class and detail of the final Login Response.

use super::chap::ChapError;
use super::negotiate::{NegotiateError, Negotiation, SessionParams};
use super::pdu::{Header, LoginRequest, LoginResponse, LoginStage, Pdu, Stage};
use super::text::{Accumulator, Outgoing, TextError, encode};

/// The only iSCSI version (RFC 7143 §11.12.4).
pub const VERSION: u8 = 0;
/// Largest data segment of a login PDU in either direction (the default
/// MaxRecvDataSegmentLength, which applies until the login ends).
pub const MAX_LOGIN_DATA_LEN: u32 = 8192;

/// Login Response status (RFC 7143 §11.13.5): class in the high byte, detail in the low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum LoginStatus {
    Success = 0x0000,
    TargetMovedTemporarily = 0x0101,
    TargetMovedPermanently = 0x0102,
    InitiatorError = 0x0200,
    AuthenticationFailure = 0x0201,
    AuthorizationFailure = 0x0202,
    NotFound = 0x0203,
    TargetRemoved = 0x0204,
    UnsupportedVersion = 0x0205,
    TooManyConnections = 0x0206,
    MissingParameter = 0x0207,
    CantIncludeInSession = 0x0208,
    SessionTypeNotSupported = 0x0209,
    SessionDoesNotExist = 0x020a,
    InvalidDuringLogin = 0x020b,
    TargetError = 0x0300,
    ServiceUnavailable = 0x0301,
    OutOfResources = 0x0302,
}

impl LoginStatus {
    pub const ALL: [LoginStatus; 18] = [
        LoginStatus::Success,
        LoginStatus::TargetMovedTemporarily,
        LoginStatus::TargetMovedPermanently,
        LoginStatus::InitiatorError,
        LoginStatus::AuthenticationFailure,
        LoginStatus::AuthorizationFailure,
        LoginStatus::NotFound,
        LoginStatus::TargetRemoved,
        LoginStatus::UnsupportedVersion,
        LoginStatus::TooManyConnections,
        LoginStatus::MissingParameter,
        LoginStatus::CantIncludeInSession,
        LoginStatus::SessionTypeNotSupported,
        LoginStatus::SessionDoesNotExist,
        LoginStatus::InvalidDuringLogin,
        LoginStatus::TargetError,
        LoginStatus::ServiceUnavailable,
        LoginStatus::OutOfResources,
    ];

    /// Status-Class.
    pub fn class(self) -> u8 {
        (self as u16 >> 8) as u8
    }

    /// Status-Detail.
    pub fn detail(self) -> u8 {
        self as u16 as u8
    }

    /// The status of a class and detail, if RFC 7143 defines it.
    pub fn from_wire(class: u8, detail: u8) -> Option<LoginStatus> {
        let code = u16::from(class) << 8 | u16::from(detail);
        Self::ALL.into_iter().find(|s| *s as u16 == code)
    }
}

/// Why the login fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("versions {min}..={max} do not include version 0")]
    UnsupportedVersion { max: u8, min: u8 },
    #[error("TSIH {0} names an existing session; cowd only starts new sessions")]
    SessionDoesNotExist(u16),
    #[error("ISID, TSIH or CID changed during the login")]
    IdentityChanged,
    #[error("request in stage {got:?} while the login is in {expected:?}")]
    WrongStage { expected: Stage, got: Stage },
    #[error("transit from {from:?} to {to:?} is not allowed")]
    BadTransit { from: Stage, to: Stage },
    #[error("T and C bits are both set")]
    TransitWithContinue,
    #[error("keys sent while the target's answer is still being sent")]
    UnexpectedText,
    #[error("the login is already complete")]
    AlreadyComplete,
    #[error(transparent)]
    Text(#[from] TextError),
    #[error(transparent)]
    Negotiate(#[from] NegotiateError),
}

impl LoginError {
    /// The status of the Login Response that reports this error.
    pub fn status(&self) -> LoginStatus {
        match self {
            LoginError::UnsupportedVersion { .. } => LoginStatus::UnsupportedVersion,
            LoginError::SessionDoesNotExist(_) => LoginStatus::SessionDoesNotExist,
            LoginError::IdentityChanged
            | LoginError::WrongStage { .. }
            | LoginError::BadTransit { .. }
            | LoginError::TransitWithContinue
            | LoginError::UnexpectedText
            | LoginError::AlreadyComplete
            | LoginError::Text(_) => LoginStatus::InitiatorError,
            LoginError::Negotiate(e) => negotiate_status(e),
        }
    }
}

fn negotiate_status(e: &NegotiateError) -> LoginStatus {
    match e {
        NegotiateError::InvalidValue { .. }
        | NegotiateError::Renegotiated(_)
        | NegotiateError::WrongStage { .. }
        | NegotiateError::NotForTarget(_)
        | NegotiateError::Redeclared { .. }
        | NegotiateError::DigestRequired(_) => LoginStatus::InitiatorError,
        NegotiateError::MissingInitiatorName | NegotiateError::MissingTargetName => {
            LoginStatus::MissingParameter
        }
        NegotiateError::TargetNotFound(_) => LoginStatus::NotFound,
        NegotiateError::AuthMethodRejected(_) | NegotiateError::AuthRequired => {
            LoginStatus::AuthenticationFailure
        }
        NegotiateError::Chap(ChapError::Missing(_)) => LoginStatus::MissingParameter,
        NegotiateError::Chap(
            ChapError::NoAlgorithm
            | ChapError::Unexpected(_)
            | ChapError::Malformed(_)
            | ChapError::UnknownName(_)
            | ChapError::BadResponse
            | ChapError::NoTargetIdentity
            | ChapError::Reflection
            | ChapError::AlreadyFailed,
        ) => LoginStatus::AuthenticationFailure,
        NegotiateError::NoChallenge => LoginStatus::TargetError,
    }
}

/// What the Login Response to a request says, besides the sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginReply {
    /// CSG, T/NSG and C of the response.
    pub stage: LoginStage,
    pub tsih: u16,
    /// The answer text (or a piece of it, with C=1).
    pub data: Vec<u8>,
}

/// StatSN, ExpCmdSN and MaxCmdSN of a response, which the session keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequence {
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// The login of one connection.
#[derive(Debug)]
pub struct Login {
    negotiation: Negotiation,
    /// The TSIH the session gets if the login succeeds (non-zero, from the caller).
    new_tsih: u16,
    /// ISID, TSIH and CID of the first request.
    ids: Option<([u8; 6], u16, u16)>,
    incoming: Accumulator,
    /// An answer being sent in pieces, and the transit to make after its last piece.
    outgoing: Option<(Outgoing, Option<Stage>)>,
    complete: bool,
}

impl Login {
    /// A login that will give the session `new_tsih` (must not be 0).
    pub fn new(negotiation: Negotiation, new_tsih: u16) -> Login {
        Login {
            negotiation,
            new_tsih,
            ids: None,
            incoming: Accumulator::default(),
            outgoing: None,
            complete: false,
        }
    }

    /// Whether the last response moved the connection to full feature phase.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn negotiation(&self) -> &Negotiation {
        &self.negotiation
    }

    /// The negotiation, to go on with Text requests in full feature phase.
    pub fn into_negotiation(self) -> Negotiation {
        self.negotiation
    }

    pub fn params(&self) -> SessionParams {
        self.negotiation.params()
    }

    /// Handles one Login Request and its data segment.
    pub fn step(&mut self, req: &LoginRequest, data: &[u8]) -> Result<LoginReply, LoginError> {
        if self.complete {
            return Err(LoginError::AlreadyComplete);
        }
        if req.version_min > VERSION || req.version_max < req.version_min {
            return Err(LoginError::UnsupportedVersion {
                max: req.version_max,
                min: req.version_min,
            });
        }
        let current = req.stage.current;
        let first = self.ids.is_none();
        match self.ids {
            None if req.tsih != 0 => return Err(LoginError::SessionDoesNotExist(req.tsih)),
            None => {
                if current == Stage::FullFeature {
                    return Err(LoginError::WrongStage {
                        expected: Stage::Security,
                        got: current,
                    });
                }
                self.ids = Some((req.isid, req.tsih, req.cid));
                self.negotiation.set_stage(current);
            }
            Some(ids) if ids != (req.isid, req.tsih, req.cid) => {
                return Err(LoginError::IdentityChanged);
            }
            Some(_) if current != self.negotiation.stage() => {
                return Err(LoginError::WrongStage {
                    expected: self.negotiation.stage(),
                    got: current,
                });
            }
            Some(_) => {}
        }
        if let Some(next) = req.stage.next {
            if req.stage.cont {
                return Err(LoginError::TransitWithContinue);
            }
            if next.code() <= current.code() {
                return Err(LoginError::BadTransit {
                    from: current,
                    to: next,
                });
            }
        }
        if self.outgoing.is_some() {
            if !data.is_empty() || req.stage.cont {
                return Err(LoginError::UnexpectedText);
            }
            return Ok(self.next_piece(req));
        }
        let Some(keys) = self.incoming.push(data, req.stage.cont)? else {
            return Ok(self.reply(req, None, false, Vec::new()));
        };
        let answers = self.negotiation.offer(&keys)?;
        if first && current == Stage::Operational && self.negotiation.auth_required() {
            return Err(NegotiateError::AuthRequired.into());
        }
        let transit = match req.stage.next {
            None => None,
            Some(_) if current == Stage::Security && !self.negotiation.security_done() => {
                if !self.negotiation.security_in_progress() {
                    return Err(NegotiateError::AuthRequired.into());
                }
                None
            }
            Some(next) => {
                if next == Stage::FullFeature {
                    self.negotiation.check_complete()?;
                }
                Some(next)
            }
        };
        let text = encode(&answers);
        if text.len() > MAX_LOGIN_DATA_LEN as usize {
            self.outgoing = Some((Outgoing::new(text), transit));
            return Ok(self.next_piece(req));
        }
        Ok(self.reply(req, transit, false, text))
    }

    /// The next piece of an answer sent with C=1.
    fn next_piece(&mut self, req: &LoginRequest) -> LoginReply {
        let Some((out, transit)) = &mut self.outgoing else {
            return self.reply(req, None, false, Vec::new());
        };
        let (data, more) = out.next_chunk(MAX_LOGIN_DATA_LEN as usize);
        if more {
            return self.reply(req, None, true, data);
        }
        // A response may transit only when its request asks to (RFC 7143 §11.13.3).
        let transit = transit.filter(|_| req.stage.next == *transit);
        self.outgoing = None;
        self.reply(req, transit, false, data)
    }

    /// A reply in the request's stage; a transit moves the login to the next stage.
    fn reply(
        &mut self,
        req: &LoginRequest,
        transit: Option<Stage>,
        cont: bool,
        data: Vec<u8>,
    ) -> LoginReply {
        let mut tsih = req.tsih;
        if let Some(next) = transit {
            self.negotiation.set_stage(next);
            if next == Stage::FullFeature {
                self.complete = true;
                tsih = self.new_tsih;
            }
        }
        LoginReply {
            stage: LoginStage {
                current: req.stage.current,
                next: transit,
                cont,
            },
            tsih,
            data,
        }
    }
}

/// The Login Response header for a reply.
pub fn response(req: &LoginRequest, reply: &LoginReply, seq: Sequence) -> Header {
    Header {
        ahs_words: 0,
        data_len: reply.data.len() as u32,
        pdu: Pdu::LoginResponse(LoginResponse {
            stage: reply.stage,
            version_max: VERSION,
            version_active: VERSION,
            isid: req.isid,
            tsih: reply.tsih,
            itt: req.itt,
            stat_sn: seq.stat_sn,
            exp_cmd_sn: seq.exp_cmd_sn,
            max_cmd_sn: seq.max_cmd_sn,
            status_class: 0,
            status_detail: 0,
        }),
    }
}

/// The Login Response header that ends a failed login.
pub fn failure(req: &LoginRequest, status: LoginStatus, seq: Sequence) -> Header {
    Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::LoginResponse(LoginResponse {
            stage: LoginStage {
                current: req.stage.current,
                next: None,
                cont: false,
            },
            version_max: VERSION,
            version_active: VERSION,
            isid: req.isid,
            tsih: req.tsih,
            itt: req.itt,
            stat_sn: seq.stat_sn,
            exp_cmd_sn: seq.exp_cmd_sn,
            max_cmd_sn: seq.max_cmd_sn,
            status_class: status.class(),
            status_detail: status.detail(),
        }),
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
