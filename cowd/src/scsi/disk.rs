//! [`Disk`]: one logical unit, a direct access block device over a [`BlockDevice`] stack, and
//! [`Disk::execute`], which runs one command on it.
//!
//! ```text
//!   transport ── cdb, expected length, data-out ──> Disk::execute
//!                                                     │ cdb::decode (opcode, usage bits)
//!                                                     ├─ INQUIRY, MODE, capacity, RSOC, LUNs: here
//!                                                     ├─ block commands: block::Block
//!                                                     └─ EXTENDED COPY, RECEIVE COPY RESULTS: hook
//!   transport <── Response { status, data-in, sense, residual }
//! ```
//!
//! `execute` is synchronous: the transport calls it from a thread that may block on the
//! device. It never panics on any input; every failure is CHECK CONDITION with sense data in
//! the format the Control mode page's D_SENSE asks for.

use std::sync::Arc;

use crate::device::{BlockDevice, CachedRange, MAX_PAYLOAD};

use super::block::Block;
use super::cdb::{self, ByteCheck, Command};
use super::copy::{CopyCommands, Nexus};
use super::inquiry::{self, Inquiry, LunIdentity};
use super::luns::{self, LunList};
use super::mode::{ModePages, ModeState};
use super::opcodes::{self, COMMANDS, Features};
use super::profile::{Profile, ProfileError};
use super::response::{Residual, Response, cut};
use super::sense::{Sense, SenseFormat};
use super::task::Abort;

/// One logical unit.
#[derive(Debug)]
pub struct Disk {
    device: Arc<dyn BlockDevice>,
    identity: LunIdentity,
    profile: Profile,
    mode: ModeState,
    copy: Option<Arc<dyn CopyCommands>>,
    luns: LunList,
}

/// What a command produced when it succeeded.
enum Done {
    /// Data-in, already cut to the allocation length.
    DataIn(Vec<u8>),
    /// No data-in.
    Nothing,
}

impl Disk {
    /// A logical unit over `device`; its block size, capacity and limits are taken from the
    /// device now ([`Profile`]). The LUN list is LUN 0 alone until [`with_luns`](Self::with_luns).
    pub fn new(device: Arc<dyn BlockDevice>, identity: LunIdentity) -> Result<Disk, ProfileError> {
        let profile = Profile::of(device.as_ref())?;
        Ok(Disk {
            device,
            identity,
            profile,
            mode: ModeState::default(),
            copy: None,
            luns: LunList::default(),
        })
    }

    /// Serves EXTENDED COPY and RECEIVE COPY RESULTS with `copy`.
    pub fn with_copy(mut self, copy: Arc<dyn CopyCommands>) -> Disk {
        self.copy = Some(copy);
        self
    }

    /// Answers REPORT LUNS from `luns`, the target's shared list.
    pub fn with_luns(mut self, luns: LunList) -> Disk {
        self.luns = luns;
        self
    }

    pub fn identity(&self) -> &LunIdentity {
        &self.identity
    }

    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.profile.block_size
    }

    /// The NAA designator of the device identification VPD page.
    pub fn naa(&self) -> [u8; 8] {
        inquiry::naa(self.identity.id)
    }

    /// Writes are refused (read-only device, or software write protect set by MODE SELECT).
    pub fn write_protected(&self) -> bool {
        self.mode_pages().write_protected()
    }

    /// Bytes of data-out `cdb` asks for, so that the transport knows how much to solicit:
    /// at most [`MAX_PAYLOAD`] (commands asking for more fail before any data moves).
    /// On an error, solicit nothing and call [`execute`](Self::execute), which reports it.
    pub fn data_out_len(&self, cdb: &[u8]) -> Result<u32, Sense> {
        let cmd = self.decode(cdb)?;
        self.check_data_out(cdb[0], &cmd)?;
        // Bounded by the checks above (MAX_PAYLOAD, or a 16-bit length).
        Ok(cmd.data_out_bytes(self.profile.block_size) as u32)
    }

    /// Refuses commands whose data-out would exceed a limit, before it is transferred.
    fn check_data_out(&self, opcode: u8, cmd: &Command) -> Result<(), Sense> {
        let count = match *cmd {
            Command::Write(rw) => rw.blocks.count,
            Command::Verify {
                blocks,
                check: ByteCheck::Compare,
            } => blocks.count,
            Command::ExtendedCopy { len } if len > MAX_PAYLOAD => {
                return Err(Sense::parameter_list_length_error());
            }
            _ => return Ok(()),
        };
        if count > self.profile.max_transfer {
            return Err(Sense::invalid_field_in_cdb(cdb::length_field(opcode), None));
        }
        Ok(())
    }

    /// Runs one command. `expected_len` is the initiator's expected data transfer length,
    /// `data_out` the data-out received (for a command that has none, it is ignored).
    pub fn execute(&self, cdb: &[u8], expected_len: u32, data_out: &[u8]) -> Response {
        self.execute_from(&Nexus::default(), cdb, expected_len, data_out)
    }

    /// [`execute`](Self::execute) for a command that came on `nexus`.
    pub fn execute_from(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        expected_len: u32,
        data_out: &[u8],
    ) -> Response {
        self.execute_task(nexus, Abort::never(), cdb, expected_len, data_out)
    }

    /// [`execute_from`](Self::execute_from) for a command its transport may abort while it
    /// runs: a long command stops early once `abort` is set (its answer is then of no use:
    /// the transport drops it).
    pub fn execute_task(
        &self,
        nexus: &Nexus,
        abort: &Abort,
        cdb: &[u8],
        expected_len: u32,
        data_out: &[u8],
    ) -> Response {
        self.respond(nexus, abort, cdb, expected_len, data_out, None)
            .expect("a blocking run always answers")
    }

    /// [`execute_from`](Self::execute_from) if the command can be answered without blocking:
    /// a READ or WRITE of at most `max` bytes the device serves at once (a page-cache hit), or
    /// one refused by its CDB. `None`: run `execute_from` on a thread that may block. The
    /// answer is the one `execute_from` would give.
    pub fn try_execute_from(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        expected_len: u32,
        data_out: &[u8],
        max: usize,
    ) -> Option<Response> {
        self.respond(
            nexus,
            Abort::never(),
            cdb,
            expected_len,
            data_out,
            Some(max),
        )
    }

    /// For a READ that passes every check and whose data lies whole in an open file's page
    /// cache now: its answer (GOOD, residual set, data-in left empty) and where the data-in is,
    /// cut to the expected length: the transport sends it from there with
    /// [`CachedRange::send`], no copy in memory. The answer is the one `execute_from` would
    /// give. `None`: run the command with `execute_from` (any other command, a refusal, data
    /// not all in the page cache).
    pub fn cached_read(&self, cdb: &[u8], expected_len: u32) -> Option<(Response, CachedRange)> {
        let cmd = self.decode(cdb).ok()?;
        let Command::Read(rw) = &cmd else {
            return None;
        };
        self.check_data_out(cdb[0], &cmd).ok()?;
        let mut data = self.block().cached_read(cdb[0], rw)?;
        let response = Response::good(Residual::of(data.len() as u64, expected_len));
        data.truncate(expected_len as usize);
        Some((response, data))
    }

    /// Runs a command, blocking (`nowait` None) or only if it can answer at once (`nowait`:
    /// the largest READ or WRITE that may try).
    fn respond(
        &self,
        nexus: &Nexus,
        abort: &Abort,
        cdb: &[u8],
        expected_len: u32,
        data_out: &[u8],
        nowait: Option<usize>,
    ) -> Option<Response> {
        let cmd = match self.decode(cdb) {
            Ok(cmd) => cmd,
            Err(sense) => return Some(self.fail(&sense, Residual::None)),
        };
        let wanted_out = cmd.data_out_bytes(self.profile.block_size);
        if let Err(sense) = self.check_data_out(cdb[0], &cmd) {
            return Some(self.fail(&sense, Residual::of(wanted_out, expected_len)));
        }
        // The data-out the command may use: what arrived, within the expected length and what
        // the CDB asks for.
        let usable = data_out
            .len()
            .min(expected_len as usize)
            .min(usize::try_from(wanted_out).unwrap_or(usize::MAX));
        // A failed data-out command still reports how its data compared with the expected
        // length (libiscsi's Write10Residuals checks it); a failed data-in command moved none.
        let failed_residual = if wanted_out > 0 {
            Residual::of(wanted_out, expected_len)
        } else {
            Residual::None
        };
        let data_out = &data_out[..usable];
        let ran = match nowait {
            None => self.run(nexus, abort, &cmd, cdb, expected_len, data_out),
            Some(max) => self.run_at_once(&cmd, cdb[0], data_out, max)?,
        };
        Some(match ran {
            Ok(Done::DataIn(data)) => Response::data_in(data, expected_len),
            Ok(Done::Nothing) => Response::good(Residual::of(wanted_out, expected_len)),
            Err(sense) => self.fail(&sense, failed_residual),
        })
    }

    /// The READs and WRITEs that can run without blocking; `None` for anything else.
    fn run_at_once(
        &self,
        cmd: &Command,
        opcode: u8,
        data_out: &[u8],
        max: usize,
    ) -> Option<Result<Done, Sense>> {
        match cmd {
            Command::Read(rw) => Some(self.block().try_read(opcode, rw, max)?.map(Done::DataIn)),
            Command::Write(rw) => Some(
                self.block()
                    .try_write(opcode, rw, data_out, max)?
                    .map(|()| Done::Nothing),
            ),
            _ => None,
        }
    }

    fn features(&self) -> Features {
        Features {
            copy: self.copy.is_some(),
            unmap: self.profile.thin(),
        }
    }

    /// Decodes, refusing operation codes this logical unit does not offer.
    fn decode(&self, cdb: &[u8]) -> Result<Command, Sense> {
        let features = self.features();
        let offered = cdb.first().is_some_and(|&op| {
            COMMANDS
                .iter()
                .any(|c| c.opcode == op && features.offers(c))
        });
        if !offered && !cdb.is_empty() {
            return Err(Sense::invalid_opcode());
        }
        cdb::decode(cdb)
    }

    fn fail(&self, sense: &Sense, residual: Residual) -> Response {
        Response::check_condition(sense, self.mode.sense_format(), residual)
    }

    fn mode_pages(&self) -> ModePages<'_> {
        ModePages {
            profile: &self.profile,
            state: &self.mode,
        }
    }

    fn block(&self) -> Block<'_> {
        Block {
            device: self.device.as_ref(),
            profile: &self.profile,
            write_protected: self.write_protected(),
        }
    }

    fn inquiry(&self) -> Inquiry<'_> {
        Inquiry {
            identity: &self.identity,
            profile: &self.profile,
            copy: self.copy.as_deref(),
        }
    }

    /// Runs a decoded command; `data_out` is already cut to what the command may use.
    fn run(
        &self,
        nexus: &Nexus,
        abort: &Abort,
        cmd: &Command,
        cdb: &[u8],
        expected_len: u32,
        data_out: &[u8],
    ) -> Result<Done, Sense> {
        let opcode = cdb[0];
        let nothing = |r: Result<(), Sense>| r.map(|()| Done::Nothing);
        let data = |r: Result<Vec<u8>, Sense>, alloc: u32| r.map(|d| Done::DataIn(cut(d, alloc)));
        match *cmd {
            Command::TestUnitReady => Ok(Done::Nothing),
            Command::RequestSense { descriptor, alloc } => {
                let format = if descriptor {
                    SenseFormat::Descriptor
                } else {
                    SenseFormat::Fixed
                };
                data(Ok(Sense::no_sense().encode(format)), alloc)
            }
            Command::Inquiry { evpd, page, alloc } => {
                let d = if evpd {
                    self.inquiry().vpd(page)
                } else {
                    Ok(self.inquiry().standard())
                };
                data(d, alloc)
            }
            Command::ModeSense(req) => data(self.mode_pages().sense(&req), req.alloc),
            Command::ModeSelect { ten, len, .. } => {
                if len == 0 {
                    return Ok(Done::Nothing);
                }
                nothing(self.mode_pages().select(ten, data_out))
            }
            Command::StartStopUnit {
                start, no_flush, ..
            } => {
                // There is no medium to spin: stopping only flushes what it would have.
                if !start && !no_flush {
                    return nothing(
                        self.block()
                            .synchronize_cache(cdb::Blocks { lba: 0, count: 0 }),
                    );
                }
                Ok(Done::Nothing)
            }
            Command::ReadCapacity10 => Ok(Done::DataIn(self.profile.read_capacity10())),
            Command::ReadCapacity16 { alloc } => data(Ok(self.profile.read_capacity16()), alloc),
            Command::GetLbaStatus { lba, alloc } => {
                data(self.block().get_lba_status(lba, alloc), alloc)
            }
            Command::Read(rw) => self.block().read(opcode, &rw).map(Done::DataIn),
            Command::Write(rw) => nothing(self.block().write(opcode, &rw, data_out)),
            Command::Verify { blocks, check } => {
                nothing(self.block().verify(opcode, blocks, check, data_out))
            }
            Command::WriteSame {
                blocks,
                unmap,
                ndob,
            } => nothing(self.block().write_same(
                opcode,
                blocks,
                unmap,
                ndob,
                expected_len,
                data_out,
            )),
            Command::Unmap { len } => nothing(self.block().unmap(len, data_out)),
            Command::SynchronizeCache { blocks, .. } => {
                nothing(self.block().synchronize_cache(blocks))
            }
            Command::PreFetch { blocks, .. } => nothing(self.block().pre_fetch(blocks)),
            Command::ReportLuns { select, alloc } => {
                data(luns::report(select, &self.luns.get()), alloc)
            }
            Command::ReportSupportedOpcodes { what, rctd, alloc } => {
                data(opcodes::report(what, rctd, self.features()), alloc)
            }
            Command::ExtendedCopy { len } => match &self.copy {
                None => Err(Sense::invalid_opcode()),
                Some(_) if len == 0 => Ok(Done::Nothing),
                Some(copy) => nothing(copy.extended_copy(self, nexus, data_out, abort)),
            },
            Command::ReceiveCopyResults { alloc, .. } => match &self.copy {
                None => Err(Sense::invalid_opcode()),
                Some(copy) => data(copy.receive_copy_results(cdb, alloc), alloc),
            },
        }
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "disk_props_tests.rs"]
mod props;
