//! `xcopy-send`: a host asking a cowd iSCSI target for a server-free copy. Sends one SCSI
//! EXTENDED COPY (SPC-4, LID1) to the logical unit of TARGET: BLOCKS 512-byte blocks from
//! that unit (from --src-lba) to the block device named by its NAA designator (an export of
//! the same cowd, or a copy target of its cowd.toml), at --dst-lba. The data never passes
//! through this host. For the benchmark, the demo and people trying it.
//!
//! ```text
//! xcopy-send --portal 127.0.0.1:3260 --target iqn.2026-12.local.cowd:disk \
//!            (--to-export NAME | --to-naa HEX) --blocks N [--src-lba A] [--dst-lba B]
//! ```
//!
//! Exit status: 0 GOOD; 1 CHECK CONDITION (sense key/ASC/ASCQ printed); 2 usage or
//! connection errors.

use std::process::ExitCode;
use std::time::Instant;

use cowd_tests::scsi_host::{Host, export_naa, list_to};

fn usage(why: &str) -> ExitCode {
    eprintln!("xcopy-send: {why}");
    eprintln!(
        "usage: xcopy-send --portal HOST:PORT --target IQN (--to-export NAME | --to-naa HEX) \
         --blocks N [--src-lba A] [--dst-lba B]"
    );
    ExitCode::from(2)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| *c != ':').collect();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut portal, mut target, mut naa, mut blocks) = (None, None, None, None);
    let (mut src_lba, mut dst_lba) = (0u64, 0u64);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            return usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--portal" => portal = Some(value.clone()),
            "--target" => target = Some(value.clone()),
            "--to-export" => naa = Some(export_naa(value).to_vec()),
            "--to-naa" => match hex(value) {
                Some(v) if v.len() == 8 || v.len() == 16 => naa = Some(v),
                _ => return usage(&format!("--to-naa {value}: 8 or 16 bytes in hex")),
            },
            "--blocks" | "--src-lba" | "--dst-lba" => {
                let Ok(n) = value.parse::<u64>() else {
                    return usage(&format!("{flag} {value}: not a number"));
                };
                match flag.as_str() {
                    "--blocks" => blocks = Some(n),
                    "--src-lba" => src_lba = n,
                    _ => dst_lba = n,
                }
            }
            _ => return usage(&format!("unknown flag {flag}")),
        }
    }
    let (Some(portal), Some(target), Some(naa), Some(blocks)) = (portal, target, naa, blocks)
    else {
        return usage("--portal, --target, a destination and --blocks are needed");
    };
    let Ok(blocks) = u32::try_from(blocks) else {
        return usage("--blocks: at most 2^32 - 1");
    };
    let mut host = match Host::login(&portal, &target) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("xcopy-send: {portal} {target}: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    // At most 64 segments of 65535 blocks per command: the copy manager takes 64 per list.
    let per_command = 64 * 0xFFFF;
    let mut done = 0u32;
    while done < blocks {
        let n = (blocks - done).min(per_command);
        let list = list_to(
            &naa,
            n,
            src_lba + u64::from(done),
            dst_lba + u64::from(done),
        );
        match host.extended_copy(&list) {
            Ok(a) if a.status == 0 => {}
            Ok(a) => {
                match a.key_asc_ascq() {
                    Some((k, asc, ascq)) => eprintln!(
                        "xcopy-send: CHECK CONDITION: sense key {k:02X}h, ASC/ASCQ {asc:02X}h/{ascq:02X}h"
                    ),
                    None => eprintln!("xcopy-send: status {:02X}h", a.status),
                }
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("xcopy-send: {e}");
                return ExitCode::from(2);
            }
        }
        done += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let mib = f64::from(blocks) * 512.0 / f64::from(1 << 20);
    println!(
        "EXTENDED COPY: GOOD, {mib:.0} MiB in {secs:.2} s ({:.0} MiB/s)",
        mib / secs
    );
    ExitCode::SUCCESS
}
