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
            filled: self.filled,
            received: self.received,
            unsolicited: self.unsolicited,
            solicited_to: self.solicited_to,
            bursts: self.bursts.clone(),
            r2t_sn: self.r2t_sn,
        };
        copy.data_out(h, &vec![0; len]).err()
    }
}

#[test]
fn data_that_never_arrived_is_zeros_not_what_the_buffer_held() {
    // Leave a used buffer of the size in the pool (the collector likely reuses it).
    crate::scsi::buffers::recycle(vec![0xee; 100 << 10]);
    let c = Collect::new(limits(), &write(100 << 10, true), 100 << 10, &[1; 4096]).unwrap();
    let data = c.into_data();
    assert_eq!(data.len(), 100 << 10);
    assert!(data[..4096].iter().all(|&b| b == 1));
    assert!(data[4096..].iter().all(|&b| b == 0));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Gives `c` one Data-Out: its data written into the lent buffer when `place` and the
    /// collector lends it (as the reader does), else copied.
    fn give(c: &mut Collect, h: &DataOut, data: &[u8], place: bool) {
        if place && let Some((mut buf, at)) = c.place(h, data.len()) {
            buf[at..at + data.len()].copy_from_slice(data);
            c.placed(buf, data.len());
            return;
        }
        c.data_out(h, data).unwrap();
    }

    /// An initiator that follows the rules: immediate data, unsolicited Data-Out up to the
    /// first burst when allowed, then each R2T answered in pieces of at most `piece` bytes;
    /// with `place`, the data is placed when the collector allows.
    fn transfer(
        limits: Limits,
        expected: u32,
        wanted: u32,
        immediate: u32,
        piece: u32,
        unsolicited: bool,
        place: bool,
    ) -> Vec<u8> {
        let src: Vec<u8> = (0..expected).map(|i| (i % 251) as u8).collect();
        let first_burst = limits.first_burst_length.min(expected);
        let immediate = immediate.min(first_burst) as usize;
        let unsolicited = unsolicited && !limits.initial_r2t && immediate < first_burst as usize;
        let cmd = write(expected, !unsolicited);
        let mut c = Collect::new(limits, &cmd, wanted, &src[..immediate]).unwrap();
        let mut at = immediate as u32;
        if unsolicited {
            let mut sn = 0;
            while at < first_burst {
                let n = piece.min(first_burst - at);
                let h = data_out(RESERVED_TAG, sn, at, at + n == first_burst);
                give(&mut c, &h, &src[at as usize..(at + n) as usize], place);
                at += n;
                sn += 1;
            }
        }
        let mut tag = 0;
        loop {
            let r2ts = c.r2ts(|| {
                tag += 1;
                tag
            });
            if r2ts.is_empty() {
                break;
            }
            for r in r2ts {
                assert_eq!(r.offset, at, "R2Ts continue where the data stopped");
                let mut got = 0;
                let mut sn = 0;
                while got < r.len {
                    let n = piece.min(r.len - got);
                    let h = data_out(r.ttt, sn, at, got + n == r.len);
                    give(&mut c, &h, &src[at as usize..(at + n) as usize], place);
                    got += n;
                    at += n;
                    sn += 1;
                }
            }
        }
        assert!(c.is_complete());
        let data = c.into_data();
        assert_eq!(data, src[..wanted.min(expected) as usize]);
        data
    }

    proptest! {
        #[test]
        fn every_lawful_transfer_collects_exactly_what_the_command_uses(
            expected in 0u32..200_000,
            wanted_frac in 0u32..=100,
            immediate in 0u32..70_000,
            piece in 1u32..20_000,
            first_burst in 512u32..70_000,
            max_burst in 512u32..100_000,
            outstanding in 1u16..4,
            initial_r2t: bool,
            unsolicited: bool,
            place: bool,
        ) {
            let limits = Limits {
                first_burst_length: first_burst.min(max_burst),
                max_burst_length: max_burst,
                max_outstanding_r2t: outstanding,
                initial_r2t,
                immediate_data: true,
            };
            let wanted = (u64::from(expected) * u64::from(wanted_frac) / 100) as u32;
            transfer(limits, expected, wanted, immediate, piece, unsolicited, place);
        }

        #[test]
        fn any_data_out_is_taken_or_refused_without_panicking(
            expected in 0u32..100_000,
            wanted in 0u32..100_000,
            pdus in proptest::collection::vec(
                (any::<bool>(), 0u32..8, 0u32..8, 0u32..120_000, 0usize..30_000, any::<bool>()),
                0..20,
            ),
        ) {
            let limits = Limits { initial_r2t: false, ..limits() };
            let Ok(mut c) = Collect::new(limits, &write(expected, false), wanted, &[]) else {
                return Ok(());
            };
            let mut tags = vec![RESERVED_TAG];
            for (solicited, tag, sn, offset, len, final_) in pdus {
                tags.extend(c.r2ts(|| tags.len() as u32).iter().map(|r| r.ttt));
                let ttt = if solicited { tags[tag as usize % tags.len()] } else { RESERVED_TAG };
                let h = data_out(ttt, sn, offset, final_);
                // Placing is refused exactly where taking fails, or where the data is not
                // all the command's; where it is lent, the buffer ends as taking leaves it.
                let refused = c.clone_err(&h, len);
                match c.place(&h, len) {
                    Some((mut buf, at)) => {
                        prop_assert!(refused.is_none());
                        prop_assert!(at + len <= buf.len());
                        buf[at..at + len].fill(0);
                        c.placed(buf, len);
                    }
                    None => prop_assert_eq!(c.data_out(&h, &vec![0; len]).err(), refused),
                }
                let _ = c.is_complete();
            }
        }
    }
}
