//! The Basic Header Segment of iSCSI PDUs (RFC 7143 §11): the 48 bytes every PDU starts with,
//! decoded into one typed header per opcode and encoded back (pure; fuzzed).
//!
//! ```text
//!  byte  0       1       2       3
//!     0 |.|I| opcode|F| op-specific   | op-specific  |
//!     4 |TotalAHSLen| DataSegmentLength (24 bits)    |
//!     8 | LUN or opcode-specific (8 bytes)           |
//!    16 | Initiator Task Tag                         |
//!    20 | opcode-specific fields (28 bytes) ...      |
//! ```
//!
//! Decoding follows RFC 7143 §11.2.1.1: reserved bits and reserved fields are ignored, and a
//! reserved *value* in a defined field (an unknown opcode, task attribute, TMF function, login
//! stage, logout reason, SNACK type, reject reason, both residual bits) is a [`PduError`], which
//! [`PduError::reject_reason`] maps to the Reject the session answers with. So `encode` after
//! `decode` gives back the same PDU with its reserved bits cleared, and `decode` after `encode`
//! gives back the same header. Bits whose value the RFC fixes (the F bit of PDUs that are always
//! final, the I bit of a Login Request, the ITT `0xffffffff` of Reject and Asynchronous Message)
//! are written by `encode` and not checked by `decode`. Semantic rules that need session state
//! (sequence numbers, T and C both set, a data segment on a PDU that takes none) belong to the
//! session and login layers. The per-opcode structs and coded fields live in
//! [`super::opcodes`] and are re-exported here.

/// Bytes of a BHS.
pub const BHS_LEN: usize = 48;

/// The tag value that means "no tag" (ITT of unsolicited PDUs, TTT of unsolicited NOPs).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Largest value the 24-bit DataSegmentLength field holds.
pub const MAX_DATA_SEGMENT_LEN: u32 = (1 << 24) - 1;

pub use super::opcodes::*;

/// Why a BHS (or, from [`super::frame`], a whole PDU) cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error(transparent)]
    Reserved(#[from] ReservedValue),
    #[error("malformed additional header segment: {0}")]
    Ahs(&'static str),
    #[error("header digest {received:#010x} does not match the computed {computed:#010x}")]
    HeaderDigest { computed: u32, received: u32 },
    #[error("data digest {received:#010x} does not match the computed {computed:#010x}")]
    DataDigest { computed: u32, received: u32 },
    #[error("data segment of {len} bytes exceeds MaxRecvDataSegmentLength {max}")]
    DataSegmentTooLong { len: u32, max: u32 },
}

impl PduError {
    /// The Reject reason to answer this error with, or `None` when the connection cannot go on
    /// (a header digest error: the lengths in the header cannot be trusted, so the stream cannot
    /// be resynchronised at error recovery level 0).
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            PduError::UnknownOpcode(_) => Some(RejectReason::CommandNotSupported),
            PduError::Reserved(_) => Some(RejectReason::InvalidPduField),
            PduError::Ahs(_) => Some(RejectReason::InvalidPduField),
            PduError::HeaderDigest { .. } => None,
            PduError::DataDigest { .. } => Some(RejectReason::DataDigestError),
            PduError::DataSegmentTooLong { .. } => Some(RejectReason::ProtocolError),
        }
    }
}

/// The opcode-specific part of a BHS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pdu {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskRequest(TaskRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    Snack(Snack),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskResponse(TaskResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

/// A decoded BHS: the two lengths every PDU has, and the opcode's own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// TotalAHSLength: bytes of additional header segments, in 4-byte words.
    pub ahs_words: u8,
    /// DataSegmentLength: bytes of data segment, without padding (at most
    /// [`MAX_DATA_SEGMENT_LEN`]; `encode` keeps only the low 24 bits).
    pub data_len: u32,
    pub pdu: Pdu,
}

/// Big-endian reads at fixed offsets of a BHS.
struct Fields<'a>(&'a [u8; BHS_LEN]);

impl Fields<'_> {
    fn bit(&self, byte: usize, mask: u8) -> bool {
        self.0[byte] & mask != 0
    }

    fn u16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.0[i], self.0[i + 1]])
    }

    fn u32(&self, i: usize) -> u32 {
        u32::from_be_bytes([self.0[i], self.0[i + 1], self.0[i + 2], self.0[i + 3]])
    }

    fn lun(&self) -> Lun {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[8..16]);
        Lun(b)
    }

    fn isid(&self) -> [u8; 6] {
        let mut b = [0u8; 6];
        b.copy_from_slice(&self.0[8..14]);
        b
    }

    fn login_stage(&self) -> Result<LoginStage, PduError> {
        let flags = self.0[1];
        let current = Stage::from_code((flags >> 2) & 3)?;
        let next = if flags & 0x80 != 0 {
            Some(Stage::from_code(flags & 3)?)
        } else {
            None
        };
        Ok(LoginStage {
            current,
            next,
            cont: flags & 0x40 != 0,
        })
    }
}

/// Big-endian writes at fixed offsets of a BHS.
struct Out([u8; BHS_LEN]);

impl Out {
    fn flag(&mut self, byte: usize, mask: u8, on: bool) {
        if on {
            self.0[byte] |= mask;
        }
    }

    fn u16(&mut self, i: usize, v: u16) {
        self.0[i..i + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, i: usize, v: u32) {
        self.0[i..i + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn lun(&mut self, lun: Lun) {
        self.0[8..16].copy_from_slice(&lun.0);
    }

    fn isid(&mut self, isid: [u8; 6]) {
        self.0[8..14].copy_from_slice(&isid);
    }

    fn login_stage(&mut self, s: LoginStage) {
        self.0[1] = s.current.code() << 2;
        self.flag(1, 0x40, s.cont);
        if let Some(next) = s.next {
            self.0[1] |= 0x80 | next.code();
        }
    }

    /// StatSN, ExpCmdSN, MaxCmdSN at 24, 28, 32: the trio of most target PDUs.
    fn sequence(&mut self, stat_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) {
        self.u32(24, stat_sn);
        self.u32(28, exp_cmd_sn);
        self.u32(32, max_cmd_sn);
    }
}

impl Header {
    /// The opcode of this header.
    pub fn opcode(&self) -> Opcode {
        match self.pdu {
            Pdu::NopOut(_) => Opcode::NopOut,
            Pdu::ScsiCommand(_) => Opcode::ScsiCommand,
            Pdu::TaskRequest(_) => Opcode::TaskRequest,
            Pdu::LoginRequest(_) => Opcode::LoginRequest,
            Pdu::TextRequest(_) => Opcode::TextRequest,
            Pdu::DataOut(_) => Opcode::DataOut,
            Pdu::LogoutRequest(_) => Opcode::LogoutRequest,
            Pdu::Snack(_) => Opcode::Snack,
            Pdu::NopIn(_) => Opcode::NopIn,
            Pdu::ScsiResponse(_) => Opcode::ScsiResponse,
            Pdu::TaskResponse(_) => Opcode::TaskResponse,
            Pdu::LoginResponse(_) => Opcode::LoginResponse,
            Pdu::TextResponse(_) => Opcode::TextResponse,
            Pdu::DataIn(_) => Opcode::DataIn,
            Pdu::LogoutResponse(_) => Opcode::LogoutResponse,
            Pdu::R2t(_) => Opcode::R2t,
            Pdu::AsyncMessage(_) => Opcode::AsyncMessage,
            Pdu::Reject(_) => Opcode::Reject,
        }
    }

    /// Bytes of additional header segments.
    pub fn ahs_len(&self) -> usize {
        usize::from(self.ahs_words) * 4
    }

    /// Decodes a BHS.
    pub fn decode(b: &[u8; BHS_LEN]) -> Result<Header, PduError> {
        let r = Fields(b);
        let opcode = b[0] & 0x3f;
        let opcode = Opcode::from_code(opcode).map_err(|_| PduError::UnknownOpcode(opcode))?;
        let immediate = r.bit(0, 0x40);
        let final_ = r.bit(1, 0x80);
        let pdu = match opcode {
            Opcode::NopOut => Pdu::NopOut(NopOut {
                immediate,
                lun: r.lun(),
                itt: r.u32(16),
                ttt: r.u32(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
            }),
            Opcode::ScsiCommand => {
                let mut cdb = [0u8; 16];
                cdb.copy_from_slice(&b[32..48]);
                Pdu::ScsiCommand(ScsiCommand {
                    immediate,
                    final_,
                    read: r.bit(1, 0x40),
                    write: r.bit(1, 0x20),
                    attr: TaskAttr::from_code(b[1] & 0x07)?,
                    lun: r.lun(),
                    itt: r.u32(16),
                    expected_len: r.u32(20),
                    cmd_sn: r.u32(24),
                    exp_stat_sn: r.u32(28),
                    cdb,
                })
            }
            Opcode::TaskRequest => Pdu::TaskRequest(TaskRequest {
                immediate,
                function: TaskFunction::from_code(b[1] & 0x7f)?,
                lun: r.lun(),
                itt: r.u32(16),
                referenced_tag: r.u32(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
                ref_cmd_sn: r.u32(32),
                exp_data_sn: r.u32(36),
            }),
            Opcode::LoginRequest => Pdu::LoginRequest(LoginRequest {
                stage: r.login_stage()?,
                version_max: b[2],
                version_min: b[3],
                isid: r.isid(),
                tsih: r.u16(14),
                itt: r.u32(16),
                cid: r.u16(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
            }),
            Opcode::TextRequest => Pdu::TextRequest(TextRequest {
                immediate,
                final_,
                cont: r.bit(1, 0x40),
                lun: r.lun(),
                itt: r.u32(16),
                ttt: r.u32(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
            }),
            Opcode::DataOut => Pdu::DataOut(DataOut {
                final_,
                lun: r.lun(),
                itt: r.u32(16),
                ttt: r.u32(20),
                exp_stat_sn: r.u32(28),
                data_sn: r.u32(36),
                buffer_offset: r.u32(40),
            }),
            Opcode::LogoutRequest => Pdu::LogoutRequest(LogoutRequest {
                immediate,
                reason: LogoutReason::from_code(b[1] & 0x7f)?,
                itt: r.u32(16),
                cid: r.u16(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
            }),
            Opcode::Snack => Pdu::Snack(Snack {
                kind: SnackKind::from_code(b[1] & 0x0f)?,
                lun: r.lun(),
                itt: r.u32(16),
                ttt: r.u32(20),
                exp_stat_sn: r.u32(28),
                beg_run: r.u32(40),
                run_length: r.u32(44),
            }),
            Opcode::NopIn => Pdu::NopIn(NopIn {
                lun: r.lun(),
                itt: r.u32(16),
                ttt: r.u32(20),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
            }),
            Opcode::ScsiResponse => Pdu::ScsiResponse(ScsiResponse {
                bidi_residual: Residual::decode(r.bit(1, 0x10), r.bit(1, 0x08), r.u32(40))?,
                residual: Residual::decode(r.bit(1, 0x04), r.bit(1, 0x02), r.u32(44))?,
                response: b[2],
                status: b[3],
                itt: r.u32(16),
                snack_tag: r.u32(20),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                exp_data_sn: r.u32(36),
            }),
            Opcode::TaskResponse => Pdu::TaskResponse(TaskResponse {
                response: b[2],
                itt: r.u32(16),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
            }),
            Opcode::LoginResponse => Pdu::LoginResponse(LoginResponse {
                stage: r.login_stage()?,
                version_max: b[2],
                version_active: b[3],
                isid: r.isid(),
                tsih: r.u16(14),
                itt: r.u32(16),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                status_class: b[36],
                status_detail: b[37],
            }),
            Opcode::TextResponse => Pdu::TextResponse(TextResponse {
                final_,
                cont: r.bit(1, 0x40),
                lun: r.lun(),
                itt: r.u32(16),
                ttt: r.u32(20),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
            }),
            Opcode::DataIn => {
                let status = if r.bit(1, 0x01) {
                    Some(DataInStatus {
                        status: b[3],
                        stat_sn: r.u32(24),
                        residual: Residual::decode(r.bit(1, 0x04), r.bit(1, 0x02), r.u32(44))?,
                    })
                } else {
                    None
                };
                Pdu::DataIn(DataIn {
                    final_,
                    ack: r.bit(1, 0x40),
                    status,
                    lun: r.lun(),
                    itt: r.u32(16),
                    ttt: r.u32(20),
                    exp_cmd_sn: r.u32(28),
                    max_cmd_sn: r.u32(32),
                    data_sn: r.u32(36),
                    buffer_offset: r.u32(40),
                })
            }
            Opcode::LogoutResponse => Pdu::LogoutResponse(LogoutResponse {
                response: b[2],
                itt: r.u32(16),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                time2wait: r.u16(40),
                time2retain: r.u16(42),
            }),
            Opcode::R2t => Pdu::R2t(R2t {
                lun: r.lun(),
                itt: r.u32(16),
                ttt: r.u32(20),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                r2t_sn: r.u32(36),
                buffer_offset: r.u32(40),
                desired_len: r.u32(44),
            }),
            Opcode::AsyncMessage => Pdu::AsyncMessage(AsyncMessage {
                lun: r.lun(),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                event: b[36],
                vcode: b[37],
                parameters: [r.u16(38), r.u16(40), r.u16(42)],
            }),
            Opcode::Reject => Pdu::Reject(Reject {
                reason: RejectReason::from_code(b[2])?,
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                data_sn: r.u32(36),
            }),
        };
        Ok(Header {
            ahs_words: b[4],
            data_len: u32::from_be_bytes([0, b[5], b[6], b[7]]),
            pdu,
        })
    }

    /// Encodes the header; reserved fields are zero.
    pub fn encode(&self) -> [u8; BHS_LEN] {
        let mut w = Out([0u8; BHS_LEN]);
        w.0[0] = self.opcode().code();
        w.0[4] = self.ahs_words;
        w.0[5..8].copy_from_slice(&self.data_len.to_be_bytes()[1..]);
        match &self.pdu {
            Pdu::NopOut(p) => {
                w.flag(0, 0x40, p.immediate);
                w.0[1] = 0x80;
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.ttt);
                w.u32(24, p.cmd_sn);
                w.u32(28, p.exp_stat_sn);
            }
            Pdu::ScsiCommand(p) => {
                w.flag(0, 0x40, p.immediate);
                w.flag(1, 0x80, p.final_);
                w.flag(1, 0x40, p.read);
                w.flag(1, 0x20, p.write);
                w.0[1] |= p.attr.code();
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.expected_len);
                w.u32(24, p.cmd_sn);
                w.u32(28, p.exp_stat_sn);
                w.0[32..48].copy_from_slice(&p.cdb);
            }
            Pdu::TaskRequest(p) => {
                w.flag(0, 0x40, p.immediate);
                w.0[1] = 0x80 | p.function.code();
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.referenced_tag);
                w.u32(24, p.cmd_sn);
                w.u32(28, p.exp_stat_sn);
                w.u32(32, p.ref_cmd_sn);
                w.u32(36, p.exp_data_sn);
            }
            Pdu::LoginRequest(p) => {
                w.0[0] |= 0x40;
                w.login_stage(p.stage);
                w.0[2] = p.version_max;
                w.0[3] = p.version_min;
                w.isid(p.isid);
                w.u16(14, p.tsih);
                w.u32(16, p.itt);
                w.u16(20, p.cid);
                w.u32(24, p.cmd_sn);
                w.u32(28, p.exp_stat_sn);
            }
            Pdu::TextRequest(p) => {
                w.flag(0, 0x40, p.immediate);
                w.flag(1, 0x80, p.final_);
                w.flag(1, 0x40, p.cont);
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.ttt);
                w.u32(24, p.cmd_sn);
                w.u32(28, p.exp_stat_sn);
            }
            Pdu::DataOut(p) => {
                w.flag(1, 0x80, p.final_);
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.ttt);
                w.u32(28, p.exp_stat_sn);
                w.u32(36, p.data_sn);
                w.u32(40, p.buffer_offset);
            }
            Pdu::LogoutRequest(p) => {
                w.flag(0, 0x40, p.immediate);
                w.0[1] = 0x80 | p.reason.code();
                w.u32(16, p.itt);
                w.u16(20, p.cid);
                w.u32(24, p.cmd_sn);
                w.u32(28, p.exp_stat_sn);
            }
            Pdu::Snack(p) => {
                w.0[1] = 0x80 | p.kind.code();
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.ttt);
                w.u32(28, p.exp_stat_sn);
                w.u32(40, p.beg_run);
                w.u32(44, p.run_length);
            }
            Pdu::NopIn(p) => {
                w.0[1] = 0x80;
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.ttt);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
            }
            Pdu::ScsiResponse(p) => {
                let (bo, bu, bidi) = p.bidi_residual.encode();
                let (o, u, count) = p.residual.encode();
                w.0[1] = 0x80;
                w.flag(1, 0x10, bo);
                w.flag(1, 0x08, bu);
                w.flag(1, 0x04, o);
                w.flag(1, 0x02, u);
                w.0[2] = p.response;
                w.0[3] = p.status;
                w.u32(16, p.itt);
                w.u32(20, p.snack_tag);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                w.u32(36, p.exp_data_sn);
                w.u32(40, bidi);
                w.u32(44, count);
            }
            Pdu::TaskResponse(p) => {
                w.0[1] = 0x80;
                w.0[2] = p.response;
                w.u32(16, p.itt);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
            }
            Pdu::LoginResponse(p) => {
                w.login_stage(p.stage);
                w.0[2] = p.version_max;
                w.0[3] = p.version_active;
                w.isid(p.isid);
                w.u16(14, p.tsih);
                w.u32(16, p.itt);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                w.0[36] = p.status_class;
                w.0[37] = p.status_detail;
            }
            Pdu::TextResponse(p) => {
                w.flag(1, 0x80, p.final_);
                w.flag(1, 0x40, p.cont);
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.ttt);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
            }
            Pdu::DataIn(p) => {
                w.flag(1, 0x80, p.final_);
                w.flag(1, 0x40, p.ack);
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.ttt);
                w.u32(28, p.exp_cmd_sn);
                w.u32(32, p.max_cmd_sn);
                w.u32(36, p.data_sn);
                w.u32(40, p.buffer_offset);
                if let Some(s) = p.status {
                    let (o, u, count) = s.residual.encode();
                    w.0[1] |= 0x01;
                    w.flag(1, 0x04, o);
                    w.flag(1, 0x02, u);
                    w.0[3] = s.status;
                    w.u32(24, s.stat_sn);
                    w.u32(44, count);
                }
            }
            Pdu::LogoutResponse(p) => {
                w.0[1] = 0x80;
                w.0[2] = p.response;
                w.u32(16, p.itt);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                w.u16(40, p.time2wait);
                w.u16(42, p.time2retain);
            }
            Pdu::R2t(p) => {
                w.0[1] = 0x80;
                w.lun(p.lun);
                w.u32(16, p.itt);
                w.u32(20, p.ttt);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                w.u32(36, p.r2t_sn);
                w.u32(40, p.buffer_offset);
                w.u32(44, p.desired_len);
            }
            Pdu::AsyncMessage(p) => {
                w.0[1] = 0x80;
                w.lun(p.lun);
                w.u32(16, RESERVED_TAG);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                w.0[36] = p.event;
                w.0[37] = p.vcode;
                w.u16(38, p.parameters[0]);
                w.u16(40, p.parameters[1]);
                w.u16(42, p.parameters[2]);
            }
            Pdu::Reject(p) => {
                w.0[1] = 0x80;
                w.0[2] = p.reason.code();
                w.u32(16, RESERVED_TAG);
                w.sequence(p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
                w.u32(36, p.data_sn);
            }
        }
        w.0
    }
}

#[cfg(test)]
#[path = "pdu_tests.rs"]
pub(crate) mod tests;
