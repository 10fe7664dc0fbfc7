//! Leases: complete backups in use by a reader of this process (a restore, a served export).
//!
//! A reader takes a [`Lease`] on the backup it reads; [`Repo::remove_backup`] refuses a leased
//! backup, naming the reader, so a prune never pulls chunks from under a running restore or an
//! export clients read (which would look like corruption). Dropping the lease releases it.
//! Leases live in the state shared by every handle of this process on the repository; they are
//! not written to disk (a reader does not outlive its process).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Inner, Repo, RepoError, check_id, held};

/// Who reads which backup; covered by `Inner::leases`.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    next: AtomicU64,
    held: std::sync::Mutex<HashMap<u64, Holder>>,
}

#[derive(Debug)]
struct Holder {
    backup: String,
    user: String,
}

/// A backup held in use; released on drop.
#[derive(Debug)]
#[must_use = "the backup is protected only while the lease lives"]
pub struct Lease {
    inner: Arc<Inner>,
    key: u64,
}

impl Repo {
    /// Leases complete backup `id` for `user` (shown to whoever tries to remove it, e.g.
    /// "restore restore-b1-3" or "export old-disk").
    pub fn lease(&self, id: &str, user: &str) -> Result<Lease, RepoError> {
        check_id(id)?;
        // Under the lock remove_backup holds: a lease and a removal never cross.
        let _m = held(self.inner.meta_lock.lock());
        if !self.backup_exists(id)? {
            return Err(RepoError::NoSuchBackup(id.to_owned()));
        }
        let leases = &self.inner.leases;
        let key = leases.next.fetch_add(1, Ordering::Relaxed);
        let holder = Holder {
            backup: id.to_owned(),
            user: user.to_owned(),
        };
        held(leases.held.lock()).insert(key, holder);
        Ok(Lease {
            inner: self.inner.clone(),
            key,
        })
    }

    /// The readers holding backup `id`, if any (callers hold `meta_lock`).
    pub(crate) fn leased_by(&self, id: &str) -> Option<String> {
        let held = held(self.inner.leases.held.lock());
        let mut users: Vec<&str> = held
            .values()
            .filter(|h| h.backup == id)
            .map(|h| h.user.as_str())
            .collect();
        users.sort_unstable();
        (!users.is_empty()).then(|| users.join(", "))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        held(self.inner.leases.held.lock()).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{backup, data, repo};
    use super::*;

    #[test]
    fn a_leased_backup_is_not_removed_until_released() {
        let (_d, r) = repo();
        backup(&r, "b1", None, 1, &data(1, 4));
        let restore = r.lease("b1", "restore restore-b1-1").unwrap();
        let export = r.lease("b1", "export old").unwrap();
        let e = r.remove_backup("b1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "backup \"b1\" is in use by export old, restore restore-b1-1; it is kept until they end"
        );
        drop(restore);
        let e = r.remove_backup("b1").unwrap_err();
        assert!(e.to_string().contains("in use by export old;"), "{e}");
        drop(export);
        r.remove_backup("b1").unwrap();
        assert!(matches!(
            r.lease("b1", "late"),
            Err(RepoError::NoSuchBackup(_))
        ));
    }
}
