//! A host that sends one SCSI command with data-out over iSCSI: enough of an initiator (login
//! without authentication, one SCSI Command PDU with immediate data, its response) for the
//! tests to send EXTENDED COPY parameter lists the real initiators here cannot send.
//!
//! ```text
//!   Login (security: AuthMethod=None) ─> Login (operational: ImmediateData=Yes, digests None)
//!   SCSI Command (W, immediate data = the list) ─> [NOP-In pings answered] ─> SCSI Response
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What came back: the SCSI status and sense data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u8,
    pub sense: Vec<u8>,
}

impl Answer {
    /// (sense key, ASC, ASCQ) of fixed or descriptor sense data.
    pub fn key_asc_ascq(&self) -> Option<(u8, u8, u8)> {
        let s = &self.sense;
        match s.first()? & 0x7F {
            0x70 | 0x71 if s.len() >= 14 => Some((s[2] & 0x0F, s[12], s[13])),
            0x72 | 0x73 if s.len() >= 4 => Some((s[1] & 0x0F, s[2], s[3])),
            _ => None,
        }
    }
}

/// A logged-in session to one target (LUN 0).
#[derive(Debug)]
pub struct Host {
    s: TcpStream,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

impl Host {
    /// Logs in to `target` at `portal` (`HOST:PORT`).
    pub fn login(portal: &str, target: &str) -> std::io::Result<Host> {
        let s = TcpStream::connect(portal)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut h = Host {
            s,
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 1,
        };
        let security = format!(
            "InitiatorName=iqn.2026-12.test.cowd:host\0SessionType=Normal\0TargetName={target}\0AuthMethod=None\0"
        );
        h.login_step(0x81, &security)?; // T, CSG 0 (security), NSG 1
        let operational = "HeaderDigest=None\0DataDigest=None\0ImmediateData=Yes\0\
                           MaxRecvDataSegmentLength=262144\0";
        h.login_step(0x87, operational)?; // T, CSG 1 (operational), NSG 3 (full feature)
        Ok(h)
    }

    fn login_step(&mut self, stages: u8, keys: &str) -> std::io::Result<()> {
        let mut bhs = [0u8; 48];
        bhs[0] = 0x43;
        bhs[1] = stages;
        put32(&mut bhs, 4, keys.len() as u32);
        bhs[8..14].copy_from_slice(&[0x80, 0, 0, 0x12, 0x34, 0x01]); // ISID
        put32(&mut bhs, 16, self.itt);
        put32(&mut bhs, 24, self.cmd_sn);
        put32(&mut bhs, 28, self.exp_stat_sn);
        self.send(&bhs, keys.as_bytes())?;
        let (r, _) = self.receive()?;
        if r[0] & 0x3F != 0x23 || r[36] != 0 {
            return Err(std::io::Error::other(format!(
                "login refused: opcode {:#x}, status {:#x}/{:#x}",
                r[0], r[36], r[37]
            )));
        }
        self.exp_stat_sn = get32(&r, 24).wrapping_add(1);
        Ok(())
    }

    fn send(&mut self, bhs: &[u8; 48], data: &[u8]) -> std::io::Result<()> {
        let mut pdu = bhs.to_vec();
        pdu.extend_from_slice(data);
        pdu.resize(48 + data.len().div_ceil(4) * 4, 0);
        self.s.write_all(&pdu)
    }

    fn receive(&mut self) -> std::io::Result<([u8; 48], Vec<u8>)> {
        let mut bhs = [0u8; 48];
        self.s.read_exact(&mut bhs)?;
        let ahs = usize::from(bhs[4]) * 4;
        let len = (get32(&bhs, 4) & 0x00FF_FFFF) as usize;
        let mut rest = vec![0u8; ahs + len.div_ceil(4) * 4];
        self.s.read_exact(&mut rest)?;
        Ok((bhs, rest[ahs..ahs + len].to_vec()))
    }

    /// Sends `cdb` (up to 16 bytes) with `data` as immediate data-out; waits for the status.
    pub fn command(&mut self, cdb: &[u8], data: &[u8]) -> std::io::Result<Answer> {
        self.itt += 1;
        let mut bhs = [0u8; 48];
        bhs[0] = 0x01;
        bhs[1] = 0x80 | if data.is_empty() { 0 } else { 0x20 } | 0x01; // F, W, simple
        put32(&mut bhs, 4, data.len() as u32);
        put32(&mut bhs, 16, self.itt);
        put32(&mut bhs, 20, data.len() as u32);
        put32(&mut bhs, 24, self.cmd_sn);
        put32(&mut bhs, 28, self.exp_stat_sn);
        bhs[32..32 + cdb.len()].copy_from_slice(cdb);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&bhs, data)?;
        loop {
            let (r, seg) = self.receive()?;
            match r[0] & 0x3F {
                0x21 => {
                    self.exp_stat_sn = get32(&r, 24).wrapping_add(1);
                    let sense = if seg.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([seg[0], seg[1]]));
                        seg[2..(2 + n).min(seg.len())].to_vec()
                    } else {
                        Vec::new()
                    };
                    return Ok(Answer {
                        status: r[3],
                        sense,
                    });
                }
                // NOP-In: a ping that wants an answer has a target transfer tag.
                0x20 if get32(&r, 20) != 0xFFFF_FFFF => {
                    let mut nop = [0u8; 48];
                    nop[0] = 0x40;
                    nop[1] = 0x80;
                    nop[8..16].copy_from_slice(&r[8..16]);
                    put32(&mut nop, 16, 0xFFFF_FFFF);
                    nop[20..24].copy_from_slice(&r[20..24]);
                    put32(&mut nop, 24, self.cmd_sn);
                    put32(&mut nop, 28, self.exp_stat_sn);
                    self.send(&nop, &[])?;
                }
                0x20 => {}
                op => {
                    return Err(std::io::Error::other(format!(
                        "unexpected PDU {op:#x} while waiting for the status"
                    )));
                }
            }
        }
    }

    /// EXTENDED COPY (LID1) with parameter list `list`.
    pub fn extended_copy(&mut self, list: &[u8]) -> std::io::Result<Answer> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x83;
        cdb[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
        self.command(&cdb, list)
    }
}

/// The NAA designator of export `name`'s logical unit (VPD 83h), as cowd computes it.
pub fn export_naa(name: &str) -> [u8; 8] {
    cowd::scsi::inquiry::naa(cowd::export::unit_id(name))
}

/// An SPC-4 parameter list copying `blocks` 512-byte blocks from LBA `src_lba` of the unit
/// that receives it to LBA `dst_lba` of the block device whose NAA designator is `dst_naa`.
pub fn list_to(dst_naa: &[u8], blocks: u32, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut target = [0u8; 32];
    target[0] = 0xE4;
    target[4] = 0x01; // binary
    target[5] = 0x03; // the LU; NAA
    target[7] = dst_naa.len() as u8;
    target[8..8 + dst_naa.len()].copy_from_slice(dst_naa);
    target[29..32].copy_from_slice(&512u32.to_be_bytes()[1..]);
    let mut segments = Vec::new();
    let (mut left, mut s, mut d) = (blocks, src_lba, dst_lba);
    while left > 0 {
        let n = left.min(0xFFFF);
        let mut seg = [0u8; 28];
        seg[0] = 0x02;
        seg[2..4].copy_from_slice(&0x18u16.to_be_bytes());
        seg[4..6].copy_from_slice(&0xFFFFu16.to_be_bytes());
        seg[6..8].copy_from_slice(&0u16.to_be_bytes());
        seg[10..12].copy_from_slice(&(n as u16).to_be_bytes());
        seg[12..20].copy_from_slice(&s.to_be_bytes());
        seg[20..28].copy_from_slice(&d.to_be_bytes());
        segments.extend_from_slice(&seg);
        left -= n;
        s += u64::from(n);
        d += u64::from(n);
    }
    let mut list = vec![0u8; 16];
    list[1] = 0x18; // LIST IDENTIFIER 0, LIST ID USAGE 11b: no identifier
    list[2..4].copy_from_slice(&32u16.to_be_bytes());
    list[8..12].copy_from_slice(&(segments.len() as u32).to_be_bytes());
    list.extend_from_slice(&target);
    list.extend_from_slice(&segments);
    list
}
