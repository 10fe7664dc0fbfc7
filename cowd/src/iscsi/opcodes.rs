//! The fields of each PDU type (RFC 7143 §11.3 to §11.19): one header struct per opcode, the
//! enums of coded fields with their reserved values, LUNs and residual counts. [`super::pdu`]
//! decodes a BHS into these and encodes them back.

/// A reserved value in a coded field (RFC 7143 §11.2.1.1 makes it a protocol error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reserved value {value:#04x} in {field}")]
pub struct ReservedValue {
    pub field: &'static str,
    pub value: u8,
}

/// Declares a field whose values are a closed set of codes: a `#[repr(u8)]` enum, its codes
/// once, and a decoder that reports any other code as reserved.
macro_rules! codes {
    ($(#[$meta:meta])* $name:ident, $field:literal {
        $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Decodes a code; codes the RFC reserves are an error.
            pub fn from_code(code: u8) -> Result<$name, ReservedValue> {
                match code {
                    $($value => Ok($name::$variant),)+
                    value => Err(ReservedValue { field: $field, value }),
                }
            }

            /// The code on the wire.
            pub fn code(self) -> u8 {
                self as u8
            }
        }
    };
}

codes! {
    /// PDU opcodes (byte 0, low 6 bits): initiator opcodes below 0x20, target opcodes above.
    Opcode, "opcode" {
        NopOut = 0x00,
        ScsiCommand = 0x01,
        TaskRequest = 0x02,
        LoginRequest = 0x03,
        TextRequest = 0x04,
        DataOut = 0x05,
        LogoutRequest = 0x06,
        Snack = 0x10,
        NopIn = 0x20,
        ScsiResponse = 0x21,
        TaskResponse = 0x22,
        LoginResponse = 0x23,
        TextResponse = 0x24,
        DataIn = 0x25,
        LogoutResponse = 0x26,
        R2t = 0x31,
        AsyncMessage = 0x32,
        Reject = 0x3f,
    }
}

codes! {
    /// Login stages (CSG and NSG; RFC 7143 §11.12.3). Value 2 is reserved.
    Stage, "login stage" {
        Security = 0,
        Operational = 1,
        FullFeature = 3,
    }
}

codes! {
    /// SCSI task attributes of a SCSI Command (ATTR, 3 bits; RFC 7143 §11.3.1).
    TaskAttr, "task attribute" {
        Untagged = 0,
        Simple = 1,
        Ordered = 2,
        HeadOfQueue = 3,
        Aca = 4,
    }
}

codes! {
    /// Task management functions (RFC 7143 §11.5.1); 9..=127 are reserved in RFC 7143.
    TaskFunction, "task management function" {
        AbortTask = 1,
        AbortTaskSet = 2,
        ClearAca = 3,
        ClearTaskSet = 4,
        LogicalUnitReset = 5,
        TargetWarmReset = 6,
        TargetColdReset = 7,
        TaskReassign = 8,
    }
}

codes! {
    /// Logout reasons (RFC 7143 §11.14.1).
    LogoutReason, "logout reason" {
        CloseSession = 0,
        CloseConnection = 1,
        RemoveConnectionForRecovery = 2,
    }
}

codes! {
    /// SNACK types (RFC 7143 §11.16.1).
    SnackKind, "SNACK type" {
        DataR2t = 0,
        Status = 1,
        DataAck = 2,
        RData = 3,
    }
}

codes! {
    /// Reject reasons (RFC 7143 §11.17.1). 0x0b is deprecated and never sent.
    RejectReason, "reject reason" {
        DataDigestError = 0x02,
        SnackReject = 0x03,
        ProtocolError = 0x04,
        CommandNotSupported = 0x05,
        ImmediateCommandReject = 0x06,
        TaskInProgress = 0x07,
        InvalidDataAck = 0x08,
        InvalidPduField = 0x09,
        LongOperationReject = 0x0a,
        NegotiationReset = 0x0b,
        WaitingForLogout = 0x0c,
    }
}

/// SCSI Response `Response` codes (RFC 7143 §11.4.3); 0x80..=0xff are vendor specific.
pub const RESPONSE_COMPLETED: u8 = 0x00;
pub const RESPONSE_TARGET_FAILURE: u8 = 0x01;

/// Task Management Function Response codes (RFC 7143 §11.6.1).
pub const TMF_COMPLETE: u8 = 0;
pub const TMF_NO_TASK: u8 = 1;
pub const TMF_NO_LUN: u8 = 2;
pub const TMF_TASK_ALLEGIANT: u8 = 3;
pub const TMF_REASSIGN_UNSUPPORTED: u8 = 4;
pub const TMF_NOT_SUPPORTED: u8 = 5;
pub const TMF_AUTHORIZATION_FAILED: u8 = 6;
pub const TMF_REJECTED: u8 = 255;

/// Logout Response codes (RFC 7143 §11.15.1).
pub const LOGOUT_CLOSED: u8 = 0;
pub const LOGOUT_CID_NOT_FOUND: u8 = 1;
pub const LOGOUT_RECOVERY_UNSUPPORTED: u8 = 2;
pub const LOGOUT_CLEANUP_FAILED: u8 = 3;

/// A logical unit number in the 8-byte SAM format.
///
/// [`Lun::single_level`] and [`Lun::to_single_level`] speak the two single-level encodings
/// initiators use (SAM-5 §4.7): peripheral device addressing (method 00b, bus 0) for LUNs below
/// 256 and flat space addressing (method 01b) for LUNs below 16384; the remaining six bytes are
/// zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lun(pub [u8; 8]);

impl Lun {
    /// LUN 0.
    pub const ZERO: Lun = Lun([0; 8]);

    /// The single-level encoding of `lun`, or `None` if it needs more than 14 bits.
    pub fn single_level(lun: u16) -> Option<Lun> {
        let mut b = [0u8; 8];
        match lun {
            0..=255 => b[1] = lun as u8,
            256..=0x3fff => {
                b[0] = 0x40 | (lun >> 8) as u8;
                b[1] = lun as u8;
            }
            _ => return None,
        }
        Some(Lun(b))
    }

    /// The LUN of a single-level peripheral (bus 0) or flat space encoding; `None` for any
    /// other addressing method or a hierarchical LUN.
    pub fn to_single_level(&self) -> Option<u16> {
        let b = self.0;
        if b[2..].iter().any(|&x| x != 0) {
            return None;
        }
        match b[0] >> 6 {
            0b00 if b[0] == 0 => Some(u16::from(b[1])),
            0b01 => Some(u16::from(b[0] & 0x3f) << 8 | u16::from(b[1])),
            _ => None,
        }
    }
}

/// A residual count and whether it is an overflow or an underflow (the O/U or o/u bit pairs;
/// both set is a reserved combination). With neither bit set the count field is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residual {
    #[default]
    None,
    Overflow(u32),
    Underflow(u32),
}

impl Residual {
    pub(super) fn decode(
        overflow: bool,
        underflow: bool,
        count: u32,
    ) -> Result<Residual, ReservedValue> {
        match (overflow, underflow) {
            (false, false) => Ok(Residual::None),
            (true, false) => Ok(Residual::Overflow(count)),
            (false, true) => Ok(Residual::Underflow(count)),
            (true, true) => Err(ReservedValue {
                field: "residual overflow and underflow bits",
                value: 3,
            }),
        }
    }

    /// (overflow bit, underflow bit, count).
    pub(super) fn encode(self) -> (bool, bool, u32) {
        match self {
            Residual::None => (false, false, 0),
            Residual::Overflow(n) => (true, false, n),
            Residual::Underflow(n) => (false, true, n),
        }
    }
}

/// The stage fields of Login requests and responses: T, C, CSG and NSG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStage {
    /// CSG.
    pub current: Stage,
    /// NSG when the T (transit) bit is set; `None` when it is clear (NSG is then reserved).
    pub next: Option<Stage>,
    /// C: the text in this PDU continues in the next.
    pub cont: bool,
}

/// NOP-Out (0x00, RFC 7143 §11.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SCSI Command (0x01, RFC 7143 §11.3). CDBs longer than 16 bytes continue in an extended CDB
/// AHS (see [`super::frame::Ahs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    /// F: no unsolicited Data-Out follows.
    pub final_: bool,
    /// R: data flows to the initiator.
    pub read: bool,
    /// W: data flows to the target.
    pub write: bool,
    pub attr: TaskAttr,
    pub lun: Lun,
    pub itt: u32,
    pub expected_len: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub cdb: [u8; 16],
}

/// Task Management Function Request (0x02, RFC 7143 §11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskRequest {
    pub immediate: bool,
    pub function: TaskFunction,
    pub lun: Lun,
    pub itt: u32,
    pub referenced_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

/// Login Request (0x03, RFC 7143 §11.12). Always immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    pub stage: LoginStage,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Text Request (0x04, RFC 7143 §11.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SCSI Data-Out (0x05, RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOut {
    pub final_: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

/// Logout Request (0x06, RFC 7143 §11.14). `cid` is meaningful unless the reason is
/// [`LogoutReason::CloseSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: LogoutReason,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SNACK Request (0x10, RFC 7143 §11.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snack {
    pub kind: SnackKind,
    pub lun: Lun,
    pub itt: u32,
    /// Target Transfer Tag or SNACK Tag.
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

/// NOP-In (0x20, RFC 7143 §11.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopIn {
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// SCSI Response (0x21, RFC 7143 §11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiResponse {
    /// Bidirectional read residual (o/u bits).
    pub bidi_residual: Residual,
    /// Residual (O/U bits).
    pub residual: Residual,
    /// [`RESPONSE_COMPLETED`], [`RESPONSE_TARGET_FAILURE`] or vendor specific.
    pub response: u8,
    /// SAM status.
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
}

/// Task Management Function Response (0x22, RFC 7143 §11.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskResponse {
    /// `TMF_*`.
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// Login Response (0x23, RFC 7143 §11.13). The status is class and detail as on the wire; see
/// `super::login::LoginStatus` for the typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    pub stage: LoginStage,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

/// Text Response (0x24, RFC 7143 §11.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextResponse {
    pub final_: bool,
    pub cont: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// The status a Data-In carries when its S bit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataInStatus {
    /// SAM status.
    pub status: u8,
    pub stat_sn: u32,
    pub residual: Residual,
}

/// SCSI Data-In (0x25, RFC 7143 §11.7). StatSN, Status and the residual fields are defined
/// only with the S bit, so they live in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataIn {
    pub final_: bool,
    /// A: the target asks for a DataACK SNACK (error recovery level > 0 only).
    pub ack: bool,
    pub status: Option<DataInStatus>,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

/// Logout Response (0x26, RFC 7143 §11.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutResponse {
    /// `LOGOUT_*`.
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

/// Ready To Transfer (0x31, RFC 7143 §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_len: u32,
}

/// Asynchronous Message (0x32, RFC 7143 §11.9). Its ITT is always [`super::pdu::RESERVED_TAG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: Lun,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub event: u8,
    pub vcode: u8,
    pub parameters: [u16; 3],
}

/// Reject (0x3f, RFC 7143 §11.17). Its data segment is the BHS of the rejected PDU; its ITT is
/// always [`super::pdu::RESERVED_TAG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// DataSN or R2TSN of the rejected PDU, where the reason needs one.
    pub data_sn: u32,
}
