//! Live backups end to end: a real cowd, real NBD clients overwriting the device while it is
//! backed up, and the acceptance list of the live-backup issue.
//!
//! - Point in time (invariant 1): the backup equals a copy of the image taken at T, however hard
//!   writers (`tests/scripts/overwrite.py`: libnbd handles in threads; fio) overwrite it during the
//!   backup: random, overlapping, unaligned, across block edges, FUA, WRITE_ZEROES, TRIM.
//! - No write lost (invariant 2): each writer owns a disjoint region and keeps an exact model of
//!   it; the image must equal the model afterwards.
//! - Self-checking sectors (`tests/scripts/sectors.py`, as in blksnap's tests): every 4 KiB sector
//!   of the backup is valid, at its own offset, with the sequence it had at T.
//! - Throttling and waiting with a tiny container, slow and failing targets, kill -9 and cancel
//!   (invariant 5: a clean state, a clear reason, the device untouched), prioritized ranges, a
//!   container on a loop-device partition, and a short snapshot point under heavy load.
//!
//! `--max-rate` stretches each backup over a few seconds so that the writers really overwrite
//! blocks that are still pending. The system interpreter `/usr/bin/python3` is used explicitly:
//! it is the one with the `nbd` module (python3-libnbd). Also needed: nbdcopy, fio, curl, and,
//! as root, losetup, partx and sfdisk (Debian package fdisk) for the loop-device partition.
//!
//! The runner (backups started and watched, writers with a model file) is the harness's
//! `cowd_tests::live`.

mod cancel;
mod container_place;
mod heavy_load;
mod kill_9;
mod overwrite;
mod priority;
mod sectors;
mod targets;
mod tiny_container;
