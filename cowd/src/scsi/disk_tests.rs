//! Commands through `Disk::execute`: allocation lengths, residuals, sense formats, the LUN
//! list, the copy hook.

use std::sync::Mutex;

use super::*;
use crate::scsi::response::Status;
use crate::scsi::testing::*;

#[test]
fn test_unit_ready_and_request_sense() {
    let d = memory_disk();
    let r = run(&d, &[0, 0, 0, 0, 0, 0], 0);
    assert_eq!(
        (r.status, r.residual, r.sense),
        (Status::Good, Residual::None, None)
    );
    let fixed = good(&d, &[0x03, 0, 0, 0, 252, 0], 252);
    assert_eq!(fixed, Sense::no_sense().encode(SenseFormat::Fixed));
    let descriptor = good(&d, &[0x03, 0x01, 0, 0, 252, 0], 252);
    assert_eq!(descriptor, [0x72, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        good(&d, &[0x03, 0, 0, 0, 4, 0], 4).len(),
        4,
        "cut to the allocation length"
    );
}

#[test]
fn read_capacity() {
    let d = memory_disk();
    assert_eq!(
        good(&d, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8),
        [0, 0, 0x1F, 0xFF, 0, 0, 0x02, 0x00]
    );
    for alloc in 0..=40u8 {
        let mut c = [0u8; 16];
        c[0] = 0x9E;
        c[1] = 0x10;
        c[13] = alloc;
        let r = run(&d, &c, u32::from(alloc));
        assert_eq!(r.status, Status::Good);
        assert_eq!(r.data_in.len(), usize::from(alloc.min(32)));
        assert_eq!(
            r.data_in[..],
            d.profile().read_capacity16()[..usize::from(alloc.min(32))]
        );
    }
}

#[test]
fn inquiry_allocation_lengths_and_residuals() {
    let d = memory_disk();
    let r = run(&d, &inquiry(false, 0, 5), 5);
    assert_eq!((r.data_in.len(), r.residual), (5, Residual::None));
    let r = run(&d, &inquiry(false, 0, 511), 511);
    assert_eq!(
        (r.data_in.len(), r.residual),
        (96, Residual::Underflow(415))
    );
    assert_eq!(r.data_in, run(&d, &inquiry(false, 0, 512), 512).data_in);
    let r = run(&d, &inquiry(false, 0, 255), 10);
    assert_eq!((r.data_in.len(), r.residual), (10, Residual::Overflow(86)));
    let r = run(&d, &inquiry(true, 0xB0, 255), 255);
    assert_eq!(r.data_in.len(), usize::from(r.data_in[3]) + 4);
    assert_eq!(
        sense_of(&run(&d, &inquiry(false, 1, 255), 255)),
        INVALID_FIELD_IN_CDB
    );
}

#[test]
fn unknown_and_unoffered_commands() {
    let d = memory_disk();
    assert_eq!(
        sense_of(&run(&d, &[0xC0, 0, 0, 0, 0, 0], 0)),
        INVALID_OPCODE
    );
    // PERSISTENT RESERVE IN: not implemented.
    assert_eq!(
        sense_of(&run(&d, &[0x5E, 0, 0, 0, 0, 0, 0, 0x40, 0, 0], 0x40)),
        INVALID_OPCODE
    );
    let mut xcopy = [0u8; 16];
    xcopy[0] = 0x83;
    assert_eq!(
        sense_of(&run(&d, &xcopy, 0)),
        INVALID_OPCODE,
        "no copy hook"
    );
    let mut rcr = [0u8; 16];
    rcr[0] = 0x84;
    rcr[1] = 0x07;
    assert_eq!(
        sense_of(&run(&d, &rcr, 0)),
        INVALID_OPCODE,
        "whatever the service action"
    );
    let r = run(&d, &[0x28], 512);
    assert_eq!(sense_of(&r), (ILLEGAL_REQUEST, 0x0E, 0x03), "truncated CDB");
}

#[test]
fn d_sense_switches_the_sense_format() {
    let d = memory_disk();
    let mut select = vec![0, 0, 0, 0, 0x0A, 0x0A, 0x04, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
    let cdb = [0x15, 0x10, 0, 0, 16, 0];
    assert_eq!(d.execute(&cdb, 16, &select).status, Status::Good);
    let r = run(&d, &read16(u64::MAX, 1), 512);
    assert_eq!(
        r.sense.as_deref(),
        Some(&[0x72, 0x05, 0x21, 0x00, 0, 0, 0, 0][..])
    );
    select[6] = 0;
    assert_eq!(d.execute(&cdb, 16, &select).status, Status::Good);
    assert_eq!(run(&d, &read16(u64::MAX, 1), 512).sense.unwrap()[0], 0x70);
    // Saving is not supported.
    let r = d.execute(&[0x15, 0x11, 0, 0, 16, 0], 16, &select);
    assert_eq!(sense_of(&r), INVALID_FIELD_IN_CDB);
}

#[test]
fn software_write_protect() {
    let d = memory_disk();
    let mut select = vec![
        0, 0, 0, 0, 0x0A, 0x0A, 0x00, 0x10, 0x08, 0, 0, 0, 0, 0, 0, 0,
    ];
    let cdb = [0x15, 0x10, 0, 0, 16, 0];
    assert_eq!(d.execute(&cdb, 16, &select).status, Status::Good);
    assert!(d.write_protected());
    assert_eq!(
        good(&d, &mode_sense6(true, 0, 0x3F, 0, 255), 255)[2],
        0x90,
        "WP"
    );
    assert_eq!(
        sense_of(&d.execute(&write10(0, 1), 512, &[0; 512])),
        WRITE_PROTECTED
    );
    assert_eq!(run(&d, &read10(0, 1), 512).status, Status::Good);
    select[8] = 0;
    d.execute(&cdb, 16, &select);
    assert_eq!(
        d.execute(&write10(0, 1), 512, &[0; 512]).status,
        Status::Good
    );
}

#[test]
fn report_luns_reads_the_shared_list() {
    let luns = LunList::new([0, 2]);
    let d = memory_disk().with_luns(luns.clone());
    let cdb = [0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    assert_eq!(&good(&d, &cdb, 256)[..4], &[0, 0, 0, 16]);
    luns.set([0, 2, 9]);
    let list = good(&d, &cdb, 256);
    assert_eq!(list.len(), 8 + 24);
    assert_eq!(&list[24..32], &[0, 9, 0, 0, 0, 0, 0, 0]);
    let cut = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0];
    assert_eq!(good(&d, &cut, 12).len(), 12);
}

#[test]
fn report_supported_opcodes_through_execute() {
    let d = memory_disk();
    let all = [0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0];
    let data = good(&d, &all, 0xFFFF);
    let listed: Vec<u8> = data[4..].chunks(8).map(|c| c[0]).collect();
    assert!(listed.contains(&0x42), "UNMAP on a thin disk");
    assert!(!listed.contains(&0x83));
    let one = [0xA3, 0x0C, 0x01, 0x2A, 0, 0, 0, 0, 0, 0xFF, 0, 0];
    let write10_usage = good(&d, &one, 0xFF);
    assert_eq!(write10_usage[5] & 0x18, 0x18, "DPO and FUA usable");
    assert_eq!(good(&d, &all, 4).len(), 4);
}

#[test]
fn data_out_lengths_apply_the_limits() {
    let d = memory_disk();
    assert_eq!(d.data_out_len(&write10(0, 8)), Ok(4096));
    assert_eq!(d.data_out_len(&read10(0, 8)), Ok(0));
    let mut huge = write16(0, 65537);
    assert_eq!(
        d.data_out_len(&huge).map_err(|s| s.asc),
        Err(0x24),
        "above MAXIMUM TRANSFER LENGTH"
    );
    huge = write16(0, 65536);
    assert_eq!(d.data_out_len(&huge), Ok(32 << 20));
    let mut xcopy = [0u8; 16];
    xcopy[0] = 0x83;
    assert_eq!(d.data_out_len(&xcopy), Err(Sense::invalid_opcode()));
    let r = d.execute(&write16(0, 65537), 0, &[]);
    assert_eq!(sense_of(&r), INVALID_FIELD_IN_CDB);
}

/// A copy hook that records what it is given.
#[derive(Debug, Default)]
struct Recorder {
    lists: Mutex<Vec<Vec<u8>>>,
}

impl CopyCommands for Recorder {
    fn extended_copy(
        &self,
        disk: &Disk,
        _: &Nexus,
        param_list: &[u8],
        _: &crate::scsi::Abort,
    ) -> Result<(), Sense> {
        assert_eq!(disk.naa(), crate::scsi::inquiry::naa(identity().id));
        self.lists.lock().unwrap().push(param_list.to_vec());
        if param_list.first() == Some(&0xFF) {
            return Err(Sense::parameter_list_length_error());
        }
        Ok(())
    }

    fn receive_copy_results(&self, cdb: &[u8], alloc: u32) -> Result<Vec<u8>, Sense> {
        Ok(vec![cdb[1]; alloc as usize + 10])
    }

    fn third_party_copy_vpd(&self) -> Vec<u8> {
        vec![0x00, 0x01, 0x00, 0x04, 0xAA, 0xBB, 0xCC, 0xDD]
    }
}

#[test]
fn copy_commands_go_to_the_hook() {
    let hook = Arc::new(Recorder::default());
    let d = memory_disk().with_copy(hook.clone());
    let mut xcopy = [0u8; 16];
    xcopy[0] = 0x83;
    xcopy[13] = 4;
    assert_eq!(d.data_out_len(&xcopy), Ok(4));
    assert_eq!(
        d.execute(&xcopy, 8, &[1, 2, 3, 4, 5, 6, 7, 8]).status,
        Status::Good
    );
    assert_eq!(
        sense_of(&d.execute(&xcopy, 4, &[0xFF; 4])),
        (ILLEGAL_REQUEST, 0x1A, 0)
    );
    xcopy[13] = 0;
    assert_eq!(
        run(&d, &xcopy, 0).status,
        Status::Good,
        "an empty list is no copy"
    );
    assert_eq!(
        *hook.lists.lock().unwrap(),
        [vec![1, 2, 3, 4], vec![0xFF; 4]]
    );

    let mut rcr = [0u8; 16];
    rcr[0] = 0x84;
    rcr[1] = 0x03;
    rcr[13] = 20;
    assert_eq!(good(&d, &rcr, 20), [3; 20]);
    rcr[1] = 0x01;
    assert_eq!(
        sense_of(&run(&d, &rcr, 20)),
        INVALID_FIELD_IN_CDB,
        "RECEIVE DATA"
    );

    let vpd = good(&d, &inquiry(true, 0x8F, 255), 255);
    assert_eq!(
        vpd,
        [
            0, 0x8F, 0, 8, 0x00, 0x01, 0x00, 0x04, 0xAA, 0xBB, 0xCC, 0xDD
        ]
    );
    assert!(good(&d, &inquiry(true, 0, 255), 255).contains(&0x8F));
    assert_eq!(
        good(&d, &inquiry(false, 0, 255), 255)[5] & 0x08,
        0x08,
        "3PC"
    );
    let all = [0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0];
    let listed: Vec<(u8, u8)> = good(&d, &all, 0xFFFF)[4..]
        .chunks(8)
        .map(|c| (c[0], c[3]))
        .filter(|&(op, _)| op == 0x83 || op == 0x84)
        .collect();
    assert_eq!(listed, [(0x83, 0), (0x84, 0), (0x84, 3), (0x84, 4)]);
}
