//! Block size and physical block choices, provisioning, READ CAPACITY data.

use super::*;
use crate::device::{BlockSizes, MemoryDevice};
use crate::scsi::testing::CapsDevice;

fn sizes(minimum: u32, preferred: u32, maximum: u32) -> BlockSizes {
    BlockSizes {
        minimum,
        preferred,
        maximum,
    }
}

fn profile(size: u64, s: BlockSizes, caps: Capabilities) -> Result<Profile, ProfileError> {
    Profile::of(&CapsDevice::new(size, caps, s))
}

#[test]
fn block_size_is_512_when_the_device_allows_it() {
    let p = Profile::of(&MemoryDevice::new(1 << 20)).unwrap();
    assert_eq!((p.block_size, p.blocks, p.lbppbe), (512, 2048, 3));
    assert_eq!((p.max_transfer, p.max_write_same), (65536, 1 << 18));
    assert_eq!(p.unmapping, Unmapping::Zeroes);
    let caps = Capabilities::default();
    let p = profile(1 << 20, sizes(4096, 4096, 1 << 20), caps).unwrap();
    assert_eq!((p.block_size, p.blocks, p.lbppbe), (4096, 256, 0));
    assert_eq!((p.max_transfer, p.max_write_same), (8192, 1 << 15));
    let p = profile(1 << 20, sizes(512, 65536, 1 << 20), caps).unwrap();
    assert_eq!(p.lbppbe, 0, "physical blocks above 4 KiB are not reported");
    let p = profile(1 << 20, sizes(1, 3000, 1 << 20), caps).unwrap();
    assert_eq!(p.lbppbe, 0, "nor odd ones");
    let p = profile(1 << 20, sizes(1, 4096, 1000), caps).unwrap();
    assert_eq!(p.device_chunk, 512, "device requests are whole blocks");
}

#[test]
fn devices_that_fit_no_block_size() {
    let caps = Capabilities::default();
    assert_eq!(
        profile(1000, sizes(1, 4096, 1 << 20), caps),
        Err(ProfileError::NoBlockSize {
            size: 1000,
            minimum: 1
        })
    );
    assert_eq!(
        profile(1 << 20, sizes(8192, 8192, 1 << 20), caps),
        Err(ProfileError::NoBlockSize {
            size: 1 << 20,
            minimum: 8192
        })
    );
    assert_eq!(
        profile(512 * 3, sizes(4096, 4096, 1 << 20), caps),
        Err(ProfileError::NoBlockSize {
            size: 1536,
            minimum: 4096
        })
    );
    assert_eq!(Profile::of(&MemoryDevice::new(0)), Err(ProfileError::Empty));
}

#[test]
fn provisioning_follows_the_capabilities() {
    let s = sizes(1, 4096, 1 << 20);
    let with = |caps| profile(1 << 20, s, caps).unwrap().unmapping;
    let trim = Capabilities {
        trim: true,
        ..Capabilities::default()
    };
    let zero = Capabilities {
        zero: true,
        ..Capabilities::default()
    };
    assert_eq!(with(trim), Unmapping::Trim);
    assert_eq!(with(zero), Unmapping::Zeroes);
    assert_eq!(with(Capabilities::default()), Unmapping::None);
}

#[test]
fn read_capacity_data() {
    let p = Profile::of(&MemoryDevice::new(1 << 20)).unwrap();
    assert_eq!(p.read_capacity10(), [0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00]);
    let mut rc16 = vec![
        0, 0, 0, 0, 0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00, 0, 0x03, 0xC0, 0,
    ];
    rc16.resize(32, 0);
    assert_eq!(p.read_capacity16(), rc16, "LBPPBE 3, LBPME, LBPRZ");

    // 3 TiB: too many blocks for READ CAPACITY (10).
    let big = Profile::of(&MemoryDevice::new(3 << 40)).unwrap();
    assert_eq!(&big.read_capacity10()[..4], &[0xFF; 4]);
    assert_eq!(
        u64::from_be_bytes(big.read_capacity16()[..8].try_into().unwrap()),
        (3u64 << 40) / 512 - 1
    );

    let trim_only = Capabilities {
        trim: true,
        ..Capabilities::default()
    };
    let p = profile(1 << 20, sizes(1, 512, 1 << 20), trim_only).unwrap();
    assert_eq!(
        p.read_capacity16()[13..15],
        [0x00, 0x80],
        "LBPME without LBPRZ"
    );
}

#[test]
fn ranges() {
    let p = Profile::of(&MemoryDevice::new(1 << 20)).unwrap();
    assert!(p.in_range(0, 2048));
    assert!(p.in_range(2048, 0));
    assert!(!p.in_range(2048, 1));
    assert!(!p.in_range(2049, 0));
    assert!(!p.in_range(u64::MAX, 2));
}
