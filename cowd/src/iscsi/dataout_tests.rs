use super::*;
use crate::iscsi::pdu::{Lun, TaskAttr};

fn limits() -> Limits {
    Limits {
        first_burst_length: 8192,
        max_burst_length: 16384,
        max_outstanding_r2t: 1,
        initial_r2t: true,
        immediate_data: true,
    }
}

fn write(expected_len: u32, final_: bool) -> ScsiCommand {
    ScsiCommand {
        immediate: false,
        final_,
        read: false,
        write: true,
        attr: TaskAttr::Simple,
        lun: Lun::ZERO,
        itt: 7,
        expected_len,
        cmd_sn: 1,
        exp_stat_sn: 1,
        cdb: [0; 16],
    }
}

fn data_out(ttt: u32, data_sn: u32, offset: u32, final_: bool) -> DataOut {
    DataOut {
        final_,
        lun: Lun::ZERO,
        itt: 7,
        ttt,
        exp_stat_sn: 1,
        data_sn,
        buffer_offset: offset,
    }
}

#[test]
fn immediate_data_then_r2ts_for_the_rest() {
    let mut c = Collect::new(limits(), &write(40_000, true), 40_000, &[1; 4096]).unwrap();
    assert!(!c.is_complete());
    let mut tag = 100;
    let r = c.r2ts(|| {
        tag += 1;
        tag
    });
    assert_eq!(
        r,
        vec![R2tRequest {
            ttt: 101,
            r2t_sn: 0,
            offset: 4096,
            len: 16384
        }]
    );
    c.data_out(&data_out(101, 0, 4096, false), &[2; 8192])
        .unwrap();
    c.data_out(&data_out(101, 1, 12288, true), &[3; 8192])
        .unwrap();
    let r = c.r2ts(|| 102);
    assert_eq!(
        r,
        vec![R2tRequest {
            ttt: 102,
            r2t_sn: 1,
            offset: 20480,
            len: 16384
        }]
    );
    c.data_out(&data_out(102, 0, 20480, true), &[4; 16384])
        .unwrap();
    let r = c.r2ts(|| 103);
    assert_eq!(r[0].len, 40_000 - 36_864);
    assert!(!c.is_complete());
    c.data_out(&data_out(103, 0, 36_864, true), &[5; 3136])
        .unwrap();
    assert!(c.is_complete());
    let d = c.into_data();
    assert_eq!(d.len(), 40_000);
    assert_eq!(
        (d[0], d[4096], d[12288], d[20480], d[39_999]),
        (1, 2, 3, 4, 5)
    );
}

#[test]
fn wrong_data_sn_offset_or_tag_is_an_error() {
    let mk = || {
        let mut c = Collect::new(limits(), &write(1024, true), 1024, &[]).unwrap();
        assert_eq!(c.r2ts(|| 9).len(), 1);
        c
    };
    assert_eq!(
        mk().data_out(&data_out(9, 1, 0, true), &[0; 1024]),
        Err(DataOutError::DataSn {
            got: 1,
            expected: 0
        })
    );
    assert_eq!(
        mk().data_out(&data_out(9, 0, 512, true), &[0; 512]),
        Err(DataOutError::Offset {
            got: 512,
            expected: 0
        })
    );
    assert_eq!(
        mk().data_out(&data_out(8, 0, 0, true), &[0; 1024]),
        Err(DataOutError::UnknownTtt(8))
    );
    assert_eq!(
        mk().data_out(&data_out(9, 0, 0, true), &[0; 512]),
        Err(DataOutError::ShortBurst { missing: 512 })
    );
    let mut c = mk();
    c.data_out(&data_out(9, 0, 0, false), &[0; 512]).unwrap();
    assert_eq!(
        c.data_out(&data_out(9, 0, 512, true), &[0; 512]),
        Err(DataOutError::DataSn {
            got: 0,
            expected: 1
        })
    );
}

#[test]
fn unsolicited_data_when_initial_r2t_is_off() {
    let l = Limits {
        initial_r2t: false,
        ..limits()
    };
    assert_eq!(
        Collect::new(limits(), &write(1024, false), 1024, &[]).unwrap_err(),
        DataOutError::UnsolicitedNotAllowed
    );
    let mut c = Collect::new(l, &write(20_000, false), 20_000, &[1; 1000]).unwrap();
    assert!(
        c.r2ts(|| 1).is_empty(),
        "no R2T while unsolicited data may come"
    );
    c.data_out(&data_out(RESERVED_TAG, 0, 1000, false), &[2; 4000])
        .unwrap();
    assert_eq!(
        c.clone_err(&data_out(RESERVED_TAG, 1, 5000, true), 4000),
        Some(DataOutError::FirstBurst {
            got: 9000,
            limit: 8192
        })
    );
    c.data_out(&data_out(RESERVED_TAG, 1, 5000, true), &[3; 3192])
        .unwrap();
    let r = c.r2ts(|| 5);
    assert_eq!(
        r,
        vec![R2tRequest {
            ttt: 5,
            r2t_sn: 0,
            offset: 8192,
            len: 11_808
        }]
    );
}

#[test]
fn the_target_keeps_only_what_the_command_uses() {
    // The CDB wants 1024 bytes, the initiator expects to send 4096 (immediate data).
    let c = Collect::new(limits(), &write(4096, true), 1024, &[9; 4096]).unwrap();
    assert!(c.is_complete());
    assert_eq!(c.into_data(), vec![9; 1024]);
    assert_eq!(
        Collect::new(limits(), &write(100, true), 100, &[0; 200]).unwrap_err(),
        DataOutError::BeyondExpected {
            got: 200,
            expected: 100
        }
    );
    let no_immediate = Limits {
        immediate_data: false,
        ..limits()
    };
    assert_eq!(
        Collect::new(no_immediate, &write(100, true), 100, &[0; 10]).unwrap_err(),
        DataOutError::ImmediateNotAllowed
    );
}

impl Collect {
    /// The error `data_out` would give, without changing `self` on success.
    fn clone_err(&self, h: &DataOut, len: usize) -> Option<DataOutError> {
        let mut copy = Collect {
            limits: self.limits,
            expected: self.expected,
            wanted: self.wanted,
            buf: self.buf.clone(),
            received: self.received,
            unsolicited: self.unsolicited,
            solicited_to: self.solicited_to,
            bursts: self.bursts.clone(),
            r2t_sn: self.r2t_sn,
        };
        copy.data_out(h, &vec![0; len]).err()
    }
}
