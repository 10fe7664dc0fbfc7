//! The block commands through `Disk::execute`: data, ranges, residuals, limits, failures.

use std::sync::Arc;

use crate::device::{BlockDevice, BlockSizes, Capabilities, FaultDevice, MemoryDevice, OpMask};
use crate::scsi::disk::Disk;
use crate::scsi::response::{Residual, Status};
use crate::scsi::testing::*;

fn write(disk: &Disk, cdb: &[u8], data: &[u8]) -> crate::scsi::Response {
    disk.execute(cdb, data.len() as u32, data)
}

fn read(disk: &Disk, lba: u32, blocks: u16) -> Vec<u8> {
    good(disk, &read10(lba, blocks), u32::from(blocks) * 512)
}

#[test]
fn write_then_read() {
    let d = memory_disk();
    let data: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    assert_eq!(write(&d, &write10(7, 2), &data).status, Status::Good);
    assert_eq!(read(&d, 7, 2), data);
    let mut fua = write16(100, 1);
    fua[1] = 0x08;
    assert_eq!(write(&d, &fua, &[9; 512]).status, Status::Good);
    assert_eq!(good(&d, &read16(100, 1), 512), [9; 512]);
    assert_eq!(
        good(&d, &[0x08, 0, 0, 100, 1, 0], 512),
        [9; 512],
        "READ (6)"
    );
}

#[test]
fn ranges_at_the_end_of_the_disk() {
    let d = memory_disk();
    let last = (BLOCKS - 1) as u32;
    assert_eq!(read(&d, last, 1).len(), 512);
    assert_eq!(sense_of(&run(&d, &read10(last, 2), 1024)), LBA_OUT_OF_RANGE);
    assert_eq!(
        sense_of(&run(&d, &read10(u32::MAX, 1), 512)),
        LBA_OUT_OF_RANGE
    );
    assert_eq!(
        sense_of(&run(&d, &read16(u64::MAX, 2), 1024)),
        LBA_OUT_OF_RANGE
    );
    // Zero blocks: nothing happens, unless the LBA itself is beyond the end.
    assert_eq!(run(&d, &read10(BLOCKS as u32, 0), 0).status, Status::Good);
    assert_eq!(
        sense_of(&run(&d, &read10(BLOCKS as u32 + 1, 0), 0)),
        LBA_OUT_OF_RANGE
    );
    assert_eq!(
        sense_of(&run(&d, &write10(u32::MAX, 0), 0)),
        LBA_OUT_OF_RANGE
    );
}

#[test]
fn transfers_above_the_maximum_are_refused() {
    let d = disk_over(Arc::new(MemoryDevice::new(64 << 20)));
    let r = run(&d, &read16(0, 65537), 0);
    assert_eq!(sense_of(&r), INVALID_FIELD_IN_CDB);
    let s = r.sense.unwrap();
    assert_eq!(&s[15..18], &[0xC0, 0, 10], "pointing at TRANSFER LENGTH");
    assert_eq!(run(&d, &read16(0, 65536), 32 << 20).data_in.len(), 32 << 20);
}

#[test]
fn read_residuals() {
    let d = memory_disk();
    let r = run(&d, &read10(0, 1), 10000);
    assert_eq!(
        (r.data_in.len(), r.residual),
        (512, Residual::Underflow(9488))
    );
    let r = run(&d, &read10(0, 1), 200);
    assert_eq!(
        (r.data_in.len(), r.residual),
        (200, Residual::Overflow(312))
    );
    let r = run(&d, &read10(0, 1), 0);
    assert_eq!(
        (r.status, r.residual),
        (Status::Good, Residual::Overflow(512))
    );
}

/// What libiscsi's Write10Residuals expects: a command given less data than its CDB asks for
/// writes the whole blocks it got; a partial block is refused.
#[test]
fn write_residuals() {
    let d = memory_disk();
    write(&d, &write10(0, 2), &[b'a'; 1024]);
    let r = d.execute(&write10(0, 1), 0, &[]);
    assert_eq!(
        (r.status, r.residual),
        (Status::Good, Residual::Overflow(512))
    );
    assert_eq!(read(&d, 0, 1), [b'a'; 512], "nothing written");

    let r = d.execute(&write10(0, 1), 200, &[b'b'; 200]);
    assert_eq!(sense_of(&r), (0x05, 0x0E, 0x03));
    assert_eq!(r.residual, Residual::Overflow(312));

    let r = d.execute(&write10(0, 1), 1024, &[b'b'; 1024]);
    assert_eq!(
        (r.status, r.residual),
        (Status::Good, Residual::Underflow(512))
    );
    assert_eq!(read(&d, 0, 2), [[b'b'; 512], [b'a'; 512]].concat());

    let r = d.execute(&write10(0, 2), 512, &[b'c'; 512]);
    assert_eq!(
        (r.status, r.residual),
        (Status::Good, Residual::Overflow(512))
    );
    assert_eq!(read(&d, 0, 2), [[b'c'; 512], [b'a'; 512]].concat());
}

#[test]
fn write_same_fills_zeroes_and_unmaps() {
    let d = memory_disk();
    let block: Vec<u8> = (0..512u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(
        write(&d, &write_same10(10, 3, false), &block).status,
        Status::Good
    );
    assert_eq!(read(&d, 10, 3), block.repeat(3));
    assert_eq!(
        write(&d, &write_same10(11, 1, false), &[0; 512]).status,
        Status::Good
    );
    assert_eq!(
        read(&d, 10, 3),
        [block.clone(), vec![0; 512], block.clone()].concat()
    );
    // UNMAP unmaps whatever the block holds; LBPRZ: unmapped blocks read as zeroes.
    assert_eq!(
        write(&d, &write_same16(10, 3, true, false), &[0xFF; 512]).status,
        Status::Good
    );
    assert_eq!(read(&d, 10, 3), [0; 1536]);
    // NDOB: no data-out, zeroes.
    write(&d, &write10(20, 1), &[5; 512]);
    assert_eq!(
        run(&d, &write_same16(20, 1, false, true), 0).status,
        Status::Good
    );
    assert_eq!(read(&d, 20, 1), [0; 512]);
}

#[test]
fn write_same_of_zero_blocks_runs_to_the_end() {
    let d = memory_disk();
    let last = BLOCKS as u32 - 2;
    assert_eq!(
        write(&d, &write_same10(last, 0, false), &[3; 512]).status,
        Status::Good
    );
    assert_eq!(read(&d, last, 2), [3; 1024]);
    assert_eq!(
        write(&d, &write_same10(BLOCKS as u32, 0, false), &[3; 512]).status,
        Status::Good
    );
    let r = write(&d, &write_same10(BLOCKS as u32 + 1, 0, false), &[3; 512]);
    assert_eq!(sense_of(&r), LBA_OUT_OF_RANGE);

    // Above MAXIMUM WRITE SAME LENGTH (128 MiB, 2^18 blocks).
    let big = disk_over(Arc::new(MemoryDevice::new(1 << 30)));
    let r = write(&big, &write_same16(0, 0, false, false), &[0; 512]);
    assert_eq!(sense_of(&r), INVALID_FIELD_IN_CDB);
    let r = write(
        &big,
        &write_same16((1 << 21) - (1 << 18), 0, false, false),
        &[0; 512],
    );
    assert_eq!(r.status, Status::Good);
}

#[test]
fn write_same_refusals() {
    let d = memory_disk();
    let cdb = write_same10(0, 1, true);
    let r = d.execute(&cdb, 256, &[0; 256]);
    assert_eq!(sense_of(&r).0, ILLEGAL_REQUEST, "half a block of data-out");
    let r = d.execute(&cdb, 1024, &[0; 1024]);
    assert_eq!(sense_of(&r).0, ILLEGAL_REQUEST, "two blocks of data-out");
    let mut anchor = write_same10(0, 1, true);
    anchor[1] |= 0x10;
    assert_eq!(
        sense_of(&write(&d, &anchor, &[0; 512])),
        INVALID_FIELD_IN_CDB
    );
    let mut protect = write_same10(0, 1, false);
    protect[1] |= 0x20;
    assert_eq!(
        sense_of(&write(&d, &protect, &[0; 512])),
        INVALID_FIELD_IN_CDB
    );

    let full = CapsDevice::new(SIZE, Capabilities::default(), BlockSizes::default());
    let full = disk_over(Arc::new(full));
    let r = write(&full, &write_same10(0, 1, true), &[0; 512]);
    assert_eq!(
        sense_of(&r),
        INVALID_FIELD_IN_CDB,
        "UNMAP on a fully provisioned disk"
    );
    assert_eq!(
        write(&full, &write_same10(0, 4, false), &[0; 512]).status,
        Status::Good
    );
}

#[test]
fn unmap_deallocates_ranges() {
    let d = memory_disk();
    write(&d, &write10(0, 8), &[1; 4096]);
    let (cdb, params) = unmap(&[(1, 2), (5, 1), (7, 0)]);
    assert_eq!(write(&d, &cdb, &params).status, Status::Good);
    let expect = [
        [1; 512], [0; 512], [0; 512], [1; 512], [1; 512], [0; 512], [1; 512], [1; 512],
    ];
    assert_eq!(read(&d, 0, 8), expect.concat());
    let (cdb, params) = unmap(&[]);
    assert_eq!(
        write(&d, &cdb, &params).status,
        Status::Good,
        "no descriptors"
    );
    let (cdb, params) = unmap(&[(BLOCKS, 0)]);
    assert_eq!(
        write(&d, &cdb, &params).status,
        Status::Good,
        "zero blocks at the end"
    );
    assert_eq!(
        run(&d, &[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0).status,
        Status::Good
    );
}

#[test]
fn unmap_refusals() {
    let d = memory_disk();
    let (cdb, params) = unmap(&[(0, 1), (BLOCKS - 1, 2)]);
    assert_eq!(sense_of(&write(&d, &cdb, &params)), LBA_OUT_OF_RANGE);
    let (_, params) = unmap(&[(0, 1)]);
    let short = [0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0];
    assert_eq!(
        sense_of(&d.execute(&short, 4, &params[..4])),
        (0x05, 0x1A, 0x00)
    );
    let (mut cdb, mut params) = unmap(&[(0, 1)]);
    params[3] = 32;
    assert_eq!(
        sense_of(&write(&d, &cdb, &params)),
        (0x05, 0x1A, 0x00),
        "descriptors beyond the list"
    );
    let many: Vec<(u64, u32)> = (0..257).map(|i| (i, 1)).collect();
    let (c, p) = unmap(&many);
    assert_eq!(sense_of(&write(&d, &c, &p)), (0x05, 0x26, 0x00));
    let (c, p) = unmap(&[(0, 1 << 20), (0, 1)]);
    let big = disk_over(Arc::new(MemoryDevice::new(1 << 30)));
    let r = write(&big, &c, &p);
    assert_eq!(
        sense_of(&r),
        (0x05, 0x26, 0x00),
        "more than MAXIMUM UNMAP LBA COUNT"
    );
    assert_eq!(
        &r.sense.unwrap()[15..18],
        &[0x80, 0, 32],
        "the second descriptor's count"
    );
    cdb[1] = 0x01;
    assert_eq!(
        sense_of(&d.execute(&cdb, 24, &params)),
        INVALID_FIELD_IN_CDB,
        "ANCHOR"
    );
    let full = CapsDevice::new(SIZE, Capabilities::default(), BlockSizes::default());
    let full = disk_over(Arc::new(full));
    let (c, p) = unmap(&[(0, 1)]);
    assert_eq!(sense_of(&write(&full, &c, &p)), INVALID_OPCODE);
}

#[test]
fn verify_compares() {
    let d = memory_disk();
    let data: Vec<u8> = (0..1536u32).map(|i| (i % 251) as u8).collect();
    write(&d, &write10(3, 3), &data);
    let verify = |bytchk: u8| [0x2F, bytchk << 1, 0, 0, 0, 3, 0, 0, 3, 0];
    assert_eq!(run(&d, &verify(0), 0).status, Status::Good);
    assert_eq!(write(&d, &verify(1), &data).status, Status::Good);
    let mut wrong = data.clone();
    wrong[700] ^= b'X';
    let r = write(&d, &verify(1), &wrong);
    assert_eq!(sense_of(&r), (0x0E, 0x1D, 0x00));
    assert_eq!(
        &r.sense.unwrap()[3..7],
        &700u32.to_be_bytes(),
        "offset of the miscompare"
    );
    write(&d, &write_same10(3, 3, false), &data[..512]);
    assert_eq!(write(&d, &verify(3), &data[..512]).status, Status::Good);
    assert_eq!(sense_of(&write(&d, &verify(3), &wrong[512..1024])).0, 0x0E);
    let mut dpo = verify(0);
    dpo[1] |= 0x10;
    assert_eq!(run(&d, &dpo, 0).status, Status::Good, "DPO accepted");
    assert_eq!(
        sense_of(&run(&d, &[0x2F, 0, 0xFF, 0, 0, 0, 0, 0, 1, 0], 0)),
        LBA_OUT_OF_RANGE
    );
}

#[test]
fn synchronize_cache_and_prefetch() {
    let dev = Arc::new(CapsDevice::new(
        SIZE,
        Capabilities::default(),
        BlockSizes::default(),
    ));
    let d = disk_over(dev.clone());
    let sync10 = |lba: u32, n: u16| {
        let mut c = read10(lba, n);
        c[0] = 0x35;
        c
    };
    assert_eq!(run(&d, &sync10(0, 0), 0).status, Status::Good);
    assert_eq!(dev.flushes(), 1);
    assert_eq!(
        sense_of(&run(&d, &sync10(BLOCKS as u32 - 1, 2), 0)),
        LBA_OUT_OF_RANGE
    );
    let mut prefetch = read16(0, 0);
    prefetch[0] = 0x90;
    assert_eq!(run(&d, &prefetch, 0).status, Status::Good);
    prefetch[2..10].copy_from_slice(&(BLOCKS + 1).to_be_bytes());
    assert_eq!(sense_of(&run(&d, &prefetch, 0)), LBA_OUT_OF_RANGE);
}

/// Devices without FUA or efficient zeroing, with a small maximum request: FUA becomes a
/// flush, zeroes become writes, requests are cut (CapsDevice asserts each rule).
#[test]
fn fallbacks_for_limited_devices() {
    let caps = Capabilities {
        flush: true,
        trim: true,
        ..Capabilities::default()
    };
    let sizes = BlockSizes {
        minimum: 512,
        preferred: 512,
        maximum: 4096,
    };
    let dev = Arc::new(CapsDevice::new(SIZE, caps, sizes));
    let d = disk_over(dev.clone());
    let data: Vec<u8> = (0..20480u32).map(|i| (i / 512) as u8).collect();
    let mut fua = write10(0, 40);
    fua[1] = 0x08;
    assert_eq!(write(&d, &fua, &data).status, Status::Good);
    assert_eq!(dev.flushes(), 1, "FUA emulated by a flush");
    assert_eq!(read(&d, 0, 40), data);
    assert_eq!(
        write(&d, &write_same10(0, 20, false), &[0; 512]).status,
        Status::Good
    );
    assert_eq!(read(&d, 0, 20), vec![0; 10240]);
    // Trim only: UNMAP deallocates, contents unspecified (LBPRZ clear).
    let (c, p) = unmap(&[(30, 2)]);
    assert_eq!(write(&d, &c, &p).status, Status::Good);
    assert_eq!(
        good(
            &d,
            &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            32
        )[14],
        0x80
    );
}

#[test]
fn device_failures_become_medium_errors() {
    let inner: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(SIZE));
    let (fault, control) = FaultDevice::new(inner);
    let d = disk_over(Arc::new(fault));
    control.fail_next(OpMask::READ, 1);
    let r = run(&d, &read10(9, 1), 512);
    assert_eq!(sense_of(&r), (0x03, 0x11, 0x00));
    assert_eq!(&r.sense.unwrap()[3..7], &9u32.to_be_bytes(), "the LBA");
    control.fail_next(OpMask::WRITE, 1);
    assert_eq!(
        sense_of(&write(&d, &write10(2, 1), &[1; 512])),
        (0x03, 0x0C, 0x00)
    );
    control.fail_next(OpMask::FLUSH, 1);
    assert_eq!(
        sense_of(&run(&d, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0)),
        (0x03, 0x0C, 0x00)
    );
    control.fail_next(OpMask::HINT, 1);
    let mut prefetch = read10(0, 1);
    prefetch[0] = 0x34;
    assert_eq!(
        run(&d, &prefetch, 0).status,
        Status::Good,
        "a failed hint is no failure"
    );
}

#[test]
fn read_only_disks_refuse_every_write() {
    let d = read_only_disk();
    assert_eq!(read(&d, 0, 1).len(), 512);
    assert_eq!(
        sense_of(&write(&d, &write10(0, 1), &[1; 512])),
        WRITE_PROTECTED
    );
    assert_eq!(
        sense_of(&write(&d, &write16(0, 1), &[1; 512])),
        WRITE_PROTECTED
    );
    assert_eq!(
        sense_of(&write(&d, &[0x0A, 0, 0, 0, 1, 0], &[1; 512])),
        WRITE_PROTECTED
    );
    assert_eq!(
        sense_of(&write(&d, &write_same10(0, 1, false), &[0; 512])),
        WRITE_PROTECTED
    );
    assert_eq!(
        sense_of(&write(&d, &write_same16(0, 1, true, false), &[0; 512])),
        WRITE_PROTECTED
    );
    let (c, p) = unmap(&[(0, 8)]);
    assert_eq!(sense_of(&write(&d, &c, &p)), WRITE_PROTECTED);
    assert_eq!(
        sense_of(&write(&d, &write10(u32::MAX, 1), &[1; 512])),
        LBA_OUT_OF_RANGE
    );
}

fn get_lba_status(lba: u64, alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x12;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// (first block, blocks, provisioning status) of each descriptor.
fn lba_status(d: &Disk, lba: u64, alloc: u32) -> Vec<(u64, u32, u8)> {
    let data = good(d, &get_lba_status(lba, alloc), alloc);
    let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
    assert_eq!((len - 4) % 16, 0);
    data[8..4 + len.min(data.len() - 4)]
        .chunks_exact(16)
        .map(|c| {
            let lba = u64::from_be_bytes(c[..8].try_into().unwrap());
            let n = u32::from_be_bytes(c[8..12].try_into().unwrap());
            (lba, n, c[12])
        })
        .collect()
}

#[test]
fn get_lba_status_reports_mapped_and_deallocated_runs() {
    let d = memory_disk();
    let blocks = BLOCKS;
    // Nothing written: one deallocated run to the end.
    assert_eq!(lba_status(&d, 0, 4096), vec![(0, blocks as u32, 1)]);
    // One block written maps the memory device's page around it (64 KiB = 128 blocks).
    assert_eq!(write(&d, &write10(300, 1), &[1; 512]).status, Status::Good);
    assert_eq!(
        lba_status(&d, 0, 4096),
        vec![(0, 256, 1), (256, 128, 0), (384, blocks as u32 - 384, 1)]
    );
    assert_eq!(
        lba_status(&d, 300, 4096)[0],
        (300, 84, 0),
        "from inside a run"
    );
    // Room for one descriptor: the first only.
    assert_eq!(lba_status(&d, 0, 24), vec![(0, 256, 1)]);
    assert_eq!(
        sense_of(&run(&d, &get_lba_status(blocks, 64), 64)),
        LBA_OUT_OF_RANGE
    );
}
