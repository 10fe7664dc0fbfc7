//! [`Lists`]: the command-level bookkeeping of one copy manager (one logical unit): which
//! lists run, and the results held for RECEIVE COPY RESULTS (COPY STATUS, FAILED SEGMENT
//! DETAILS).
//!
//! ```text
//!   EXTENDED COPY, parsed ─> begin(LIST IDENTIFIER, LIST ID USAGE)
//!        same identifier running ──────────> Refused::InProgress (OPERATION IN PROGRESS)
//!        MAX_RUNNING lists running ────────> Refused::TooMany (INSUFFICIENT RESOURCES)
//!        otherwise: a held result with that identifier is dropped, and the list runs
//!              (COPY STATUS: in progress, with the segments and bytes done so far)
//!                    │ Ticket::finish
//!     LIST ID USAGE 00b ──────────┴──────── 10b, 11b
//!              v                               v
//!            held                          forgotten
//!              │ COPY STATUS reported it, and its failure details (if it failed) went out
//!              │ whole; or HELD newer results pushed it out; or the unit's last I_T nexus
//!              v ended
//!           dropped
//! ```
//!
//! SPC-4 scopes list identifiers to an I_T nexus. The copy hook does not say which nexus a
//! command came on, so here they are scoped to the logical unit, across its nexuses: two
//! initiators using one identifier on one unit at the same time see OPERATION IN PROGRESS.
//! Held results are discarded on I_T nexus loss, which cowd can only observe for the unit as
//! a whole: when its last [`Nexus`] (an iSCSI session) ends, as FreeBSD CTL drops a lost
//! initiator's completed lists (`ctl_tpc_lun_clear`), only coarser.
//!
//! One mutex covers the state. It is held to look up or change entries, never while a list
//! runs; a list's progress is atomics shared with the thread running it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::engine::Progress;
use super::results::{self, CopyManagerStatus, CopyStatus, FailedSegmentDetails, TransferUnits};

/// Lists one unit runs at once (TOTAL CONCURRENT COPIES and MAXIMUM CONCURRENT COPIES).
pub const MAX_RUNNING: usize = 16;
/// Results held per unit; the oldest goes first.
pub const HELD: usize = 64;
/// Length of the COPY STATUS parameter data.
const COPY_STATUS_LEN: u32 = 12;

/// The LIST ID USAGE field of a parameter list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListIdUsage {
    /// 00b: the results are held for RECEIVE COPY RESULTS.
    Hold,
    /// 10b: the identifier names the list while it runs; no results are held.
    Discard,
    /// 11b: no identifier.
    Unnamed,
}

impl ListIdUsage {
    /// The usage the two-bit field states; `None` for the reserved value 01b.
    pub fn from_bits(bits: u8) -> Option<ListIdUsage> {
        match bits & 0b11 {
            0b00 => Some(ListIdUsage::Hold),
            0b10 => Some(ListIdUsage::Discard),
            0b11 => Some(ListIdUsage::Unnamed),
            _ => None,
        }
    }
}

/// Why a list may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A list with the same identifier is running.
    InProgress,
    /// [`MAX_RUNNING`] lists are running.
    TooMany,
}

/// The running lists and held results of one logical unit.
#[derive(Debug, Default)]
pub struct Lists {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// I_T nexuses open on the unit (live [`Nexus`] values).
    nexuses: usize,
    running: Vec<Running>,
    /// Oldest first; at most [`HELD`], one per identifier.
    held: VecDeque<Held>,
}

#[derive(Debug)]
struct Running {
    /// `None` for a list without identifier (11b).
    id: Option<u8>,
    progress: Arc<Progress>,
}

/// The result of a finished list with LIST ID USAGE 00b.
#[derive(Debug)]
struct Held {
    id: u8,
    segments: u32,
    bytes: u64,
    failed: bool,
    /// The failure, until FAILED SEGMENT DETAILS has transferred it whole.
    details: Option<FailedSegmentDetails>,
    /// COPY STATUS has reported the list finished.
    status_reported: bool,
}

impl Held {
    /// Everything held has been reported.
    fn spent(&self) -> bool {
        self.status_reported && self.details.is_none()
    }
}

impl Lists {
    /// Starts a list; the [`Ticket`] stands for it until it finishes (or is dropped).
    pub fn begin(self: &Arc<Self>, id: u8, usage: ListIdUsage) -> Result<Ticket, Refused> {
        let named = (usage != ListIdUsage::Unnamed).then_some(id);
        let mut s = self.lock();
        if named.is_some() && s.running.iter().any(|r| r.id == named) {
            return Err(Refused::InProgress);
        }
        if s.running.len() >= MAX_RUNNING {
            return Err(Refused::TooMany);
        }
        if named.is_some() {
            s.held.retain(|h| h.id != id);
        }
        let progress = Arc::new(Progress::default());
        s.running.push(Running {
            id: named,
            progress: progress.clone(),
        });
        Ok(Ticket {
            lists: self.clone(),
            id,
            usage,
            progress,
        })
    }

    /// COPY STATUS parameter data of list `id`, cut to `alloc`; `None` when no list with
    /// that identifier runs or has a held result. A finished list's status counts as reported
    /// once all 12 bytes went out.
    pub fn copy_status(&self, id: u8, alloc: u32) -> Option<Vec<u8>> {
        let mut s = self.lock();
        if let Some(r) = s.running.iter().find(|r| r.id == Some(id)) {
            let p = &r.progress;
            let status = status(CopyManagerStatus::InProgress, p.segments(), p.bytes());
            return Some(results::copy_status(&status, alloc));
        }
        let i = s.held.iter().position(|h| h.id == id)?;
        let h = &mut s.held[i];
        let state = if h.failed {
            CopyManagerStatus::CompletedWithError
        } else {
            CopyManagerStatus::Completed
        };
        let data = results::copy_status(&status(state, h.segments, h.bytes), alloc);
        h.status_reported |= alloc >= COPY_STATUS_LEN;
        if h.spent() {
            s.held.remove(i);
        }
        Some(data)
    }

    /// FAILED SEGMENT DETAILS parameter data of list `id`, cut to `alloc`; `None` when no
    /// list with that identifier runs or has a held result. A running or successful list has
    /// no details (AVAILABLE DATA 0). Details are discarded once they went out whole, or when
    /// asked for with an allocation length of 0.
    pub fn failed_segment_details(&self, id: u8, alloc: u32) -> Option<Vec<u8>> {
        let mut s = self.lock();
        if s.running.iter().any(|r| r.id == Some(id)) {
            return Some(results::failed_segment_details(None, alloc));
        }
        let i = s.held.iter().position(|h| h.id == id)?;
        let h = &mut s.held[i];
        let mut data = results::failed_segment_details(h.details.as_ref(), u32::MAX);
        if alloc == 0 || alloc as usize >= data.len() {
            h.details = None;
        }
        if h.spent() {
            s.held.remove(i);
        }
        data.truncate(alloc as usize);
        Some(data)
    }

    /// An I_T nexus to the unit, open until dropped.
    pub fn nexus(self: &Arc<Self>) -> Nexus {
        self.lock().nexuses += 1;
        Nexus {
            lists: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Removes the running entry of `progress`, if it is still there.
    fn end(s: &mut State, progress: &Arc<Progress>) {
        s.running.retain(|r| !Arc::ptr_eq(&r.progress, progress));
    }
}

fn status(status: CopyManagerStatus, segments: u32, bytes: u64) -> CopyStatus {
    let (units, transfer_count) = TransferUnits::scale(bytes);
    CopyStatus {
        status,
        held_data_discarded: false,
        segments_processed: u16::try_from(segments).unwrap_or(u16::MAX),
        units,
        transfer_count,
    }
}

/// A running list. Dropping it without [`finish`](Self::finish) forgets the list.
#[derive(Debug)]
pub struct Ticket {
    lists: Arc<Lists>,
    id: u8,
    usage: ListIdUsage,
    progress: Arc<Progress>,
}

impl Ticket {
    /// Where the list's progress is recorded.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The list ended, with `failure` if it failed; its result is held if its LIST ID USAGE
    /// asks for it.
    pub fn finish(self, failure: Option<FailedSegmentDetails>) {
        let mut s = self.lists.lock();
        Lists::end(&mut s, &self.progress);
        if self.usage == ListIdUsage::Hold {
            s.held.push_back(Held {
                id: self.id,
                segments: self.progress.segments(),
                bytes: self.progress.bytes(),
                failed: failure.is_some(),
                details: failure,
                status_reported: false,
            });
            while s.held.len() > HELD {
                s.held.pop_front();
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // After `finish` the entry is gone already (its guard was released before this runs).
        let mut s = self.lists.lock();
        Lists::end(&mut s, &self.progress);
    }
}

/// An I_T nexus to the unit (an iSCSI session). When the unit's last one ends, its held
/// results are discarded.
#[derive(Debug)]
pub struct Nexus {
    lists: Arc<Lists>,
}

impl Drop for Nexus {
    fn drop(&mut self) {
        let mut s = self.lists.lock();
        s.nexuses = s.nexuses.saturating_sub(1);
        if s.nexuses == 0 {
            s.held.clear();
        }
    }
}

#[cfg(test)]
#[path = "lists_tests.rs"]
mod tests;
