//! Key slots of an encrypted repository: its master key wrapped by keys derived from
//! passphrases (Argon2id) or key files, one JSON file per slot, and the keys this process holds
//! unlocked.
//!
//! ```text
//! ROOT/keys/<slot>.json  {"id","kind":"passphrase"|"key-file","label","created",
//!                         "kdf":{"algorithm":"argon2id","version":19,"memory_kib","iterations",
//!                                "parallelism","salt"} | {"algorithm":"blake3-derive-key","salt"},
//!                         "wrapped": base64(nonce ‖ AES-256-GCM(master key) ‖ tag)}
//! ```
//!
//! The wrapping key of a passphrase slot is Argon2id(passphrase, salt) with RFC 9106's second
//! recommended parameters (64 MiB, 3 passes, 4 lanes) by default: a guess costs an attacker
//! who holds the bucket that much memory and time. A key file holds a random secret already
//! (`cowctl` writes 32 bytes from the OS, hex); its wrapping key is BLAKE3's key derivation of
//! salt and secret. The associated data of a wrapped key names the repository and the slot, so
//! a slot file copied into another repository or renamed does not open.
//!
//! Any slot opens the repository; adding one needs the master key (an unlocked repository),
//! removing the last one is refused. A repository is unlocked for the whole process
//! ([`remember`]), as an agent holds a key: the daemon unlocks once and every later request on
//! the repository uses it, until [`forget`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::crypt::{MASTER_KEY_LEN, MasterKey, Sealer, random_bytes};
use super::{Repo, RepoError, fsync_dir, held, rfc3339, store};

/// What unlocks a slot.
pub enum Secret {
    /// A passphrase (its bytes as given, UTF-8 or not).
    Passphrase(Zeroizing<Vec<u8>>),
    /// The contents of a key file.
    KeyFile(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret::{:?}(..)", self.kind())
    }
}

impl Secret {
    fn kind(&self) -> SlotKind {
        match self {
            Secret::Passphrase(_) => SlotKind::Passphrase,
            Secret::KeyFile(_) => SlotKind::KeyFile,
        }
    }
}

/// Shortest key file accepted: its secret is not stretched, so it must be random and long.
pub const MIN_KEY_FILE_LEN: usize = 32;

/// Argon2id's cost for a new passphrase slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfCost {
    /// The most a slot may ask for: a slot file is not trusted to make the daemon allocate
    /// without bound (1 GiB, 64 passes, 64 lanes).
    pub const MAX: KdfCost = KdfCost {
        memory_kib: 1 << 20,
        iterations: 64,
        parallelism: 64,
    };

    /// RFC 9106, 4, second recommended option.
    pub const DEFAULT: KdfCost = KdfCost {
        memory_kib: 64 << 10,
        iterations: 3,
        parallelism: 4,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    Passphrase,
    KeyFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm")]
enum Kdf {
    #[serde(rename = "argon2id")]
    Argon2id {
        version: u32,
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        salt: String,
    },
    #[serde(rename = "blake3-derive-key")]
    Blake3 { salt: String },
}

/// One key slot as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slot {
    pub id: String,
    pub kind: SlotKind,
    /// Who or what it is for ("root@host", "off-site copy"): free text.
    pub label: String,
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    kdf: Kdf,
    wrapped: String,
}

/// BLAKE3 context string of key-file wrapping keys (fixed forever: changing it orphans slots).
const KEY_FILE_CONTEXT: &str = "cowd-repo 2026-12-05 key-file wrapping key";

fn aad(repo_id: &str, slot_id: &str) -> Vec<u8> {
    format!("cowd-repo key slot {repo_id} {slot_id}").into_bytes()
}

fn bad_slot(path: &Path, problem: impl Into<String>) -> RepoError {
    RepoError::Corrupt {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

impl Kdf {
    fn new(kind: SlotKind, cost: KdfCost) -> Kdf {
        let salt = B64.encode(random_bytes::<32>());
        match kind {
            SlotKind::Passphrase => Kdf::Argon2id {
                version: 0x13,
                memory_kib: cost.memory_kib,
                iterations: cost.iterations,
                parallelism: cost.parallelism,
                salt,
            },
            SlotKind::KeyFile => Kdf::Blake3 { salt },
        }
    }

    /// The wrapping key `secret` gives under this derivation.
    fn derive(&self, secret: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
        let mut kek = Zeroizing::new([0u8; 32]);
        match self {
            Kdf::Argon2id {
                version,
                memory_kib,
                iterations,
                parallelism,
                salt,
            } => {
                if *version != 0x13 {
                    return Err(format!("Argon2 version {version:#x} is not supported"));
                }
                let max = KdfCost::MAX;
                if *memory_kib > max.memory_kib
                    || *iterations > max.iterations
                    || *parallelism > max.parallelism
                {
                    return Err(format!(
                        "Argon2id cost {memory_kib} KiB, {iterations} passes, {parallelism} \
                         lanes is beyond {} KiB, {}, {}",
                        max.memory_kib, max.iterations, max.parallelism
                    ));
                }
                let salt = B64.decode(salt).map_err(|e| format!("salt: {e}"))?;
                let params = argon2::Params::new(*memory_kib, *iterations, *parallelism, Some(32))
                    .map_err(|e| format!("Argon2 parameters: {e}"))?;
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(secret, &salt, kek.as_mut())
                    .map_err(|e| format!("Argon2id: {e}"))?;
            }
            Kdf::Blake3 { salt } => {
                let salt = B64.decode(salt).map_err(|e| format!("salt: {e}"))?;
                let mut h = blake3::Hasher::new_derive_key(KEY_FILE_CONTEXT);
                h.update(&salt).update(secret);
                kek.copy_from_slice(h.finalize().as_bytes());
            }
        }
        Ok(kek)
    }
}

fn secret_bytes(secret: &Secret) -> Result<&[u8], RepoError> {
    match secret {
        Secret::Passphrase(p) if p.is_empty() => {
            Err(RepoError::Invalid("the passphrase is empty".into()))
        }
        Secret::Passphrase(p) => Ok(p),
        Secret::KeyFile(k) if k.len() < MIN_KEY_FILE_LEN => Err(RepoError::Invalid(format!(
            "a key file must hold at least {MIN_KEY_FILE_LEN} bytes of random data; this one \
             has {}",
            k.len()
        ))),
        Secret::KeyFile(k) => Ok(k),
    }
}

pub(crate) fn keys_dir(root: &Path) -> PathBuf {
    root.join("keys")
}

/// Wraps `key` under `secret` as a new slot of repository `repo_id` at `root`.
pub(crate) fn add_slot(
    root: &Path,
    repo_id: &str,
    key: &MasterKey,
    secret: &Secret,
    label: &str,
    cost: KdfCost,
) -> Result<Slot, RepoError> {
    let bytes = secret_bytes(secret)?;
    let kdf = Kdf::new(secret.kind(), cost);
    let kek = kdf.derive(bytes).map_err(RepoError::Invalid)?;
    let id = super::digest::to_hex(&random_bytes::<4>());
    let mut wrapped = Vec::new();
    Sealer::new(&kek).seal(&aad(repo_id, &id), key.bytes(), &mut wrapped);
    let slot = Slot {
        id,
        kind: secret.kind(),
        label: label.to_owned(),
        created: SystemTime::now(),
        kdf,
        wrapped: B64.encode(&wrapped),
    };
    let dir = keys_dir(root);
    if !store::is_remote(&dir) {
        super::mkdir(&dir).map_err(RepoError::io(&dir, "create directory"))?;
    }
    let path = dir.join(format!("{}.json", slot.id));
    let tmp = dir.join(format!(".{}.tmp", slot.id));
    let json = serde_json::to_vec_pretty(&slot).expect("slot to json");
    store::write(&path, &tmp, &json).map_err(RepoError::io(&path, "write key slot"))?;
    Ok(slot)
}

/// Every key slot of the repository at `root`, by id.
pub(crate) fn slots(root: &Path) -> Result<Vec<Slot>, RepoError> {
    let dir = keys_dir(root);
    let mut out = Vec::new();
    for e in store::list(&dir).map_err(RepoError::io(&dir, "read directory"))? {
        let name = e.name;
        let Some(id) = name
            .strip_suffix(".json")
            .filter(|_| !name.starts_with('.'))
        else {
            continue;
        };
        let path = dir.join(&name);
        let text = store::read(&path).map_err(RepoError::io(&path, "read"))?;
        let slot: Slot =
            serde_json::from_slice(&text).map_err(|e| bad_slot(&path, format!("key slot: {e}")))?;
        if slot.id != id {
            return Err(bad_slot(
                &path,
                format!("key slot names itself {:?}", slot.id),
            ));
        }
        out.push(slot);
    }
    out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(out)
}

/// The master key `secret` unwraps from one of the slots, and that slot's id.
pub(crate) fn unwrap_key(
    root: &Path,
    repo_id: &str,
    secret: &Secret,
) -> Result<(MasterKey, String), RepoError> {
    let bytes = secret_bytes(secret)?;
    let all = slots(root)?;
    let mut tried = 0;
    for slot in all.iter().filter(|s| s.kind == secret.kind()) {
        tried += 1;
        let path = keys_dir(root).join(format!("{}.json", slot.id));
        let kek = slot.kdf.derive(bytes).map_err(|p| bad_slot(&path, p))?;
        let wrapped = B64
            .decode(&slot.wrapped)
            .map_err(|e| bad_slot(&path, format!("wrapped key: {e}")))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(MASTER_KEY_LEN));
        if Sealer::new(&kek)
            .open(&aad(repo_id, &slot.id), &wrapped, &mut plain)
            .is_ok()
        {
            let key: &[u8; MASTER_KEY_LEN] = plain[..]
                .try_into()
                .map_err(|_| bad_slot(&path, "wrapped key has the wrong length"))?;
            return Ok((MasterKey::from_bytes(key), slot.id.clone()));
        }
    }
    let what = match secret.kind() {
        SlotKind::Passphrase => "passphrase",
        SlotKind::KeyFile => "key file",
    };
    Err(RepoError::WrongKey(format!(
        "{}: no key slot opens with this {what} ({tried} {what} slot{} of {} tried)",
        root.display(),
        if tried == 1 { "" } else { "s" },
        all.len()
    )))
}

/// Removes slot `id`; the last slot stays (without one the repository is lost).
pub(crate) fn remove_slot(root: &Path, id: &str) -> Result<(), RepoError> {
    let all = slots(root)?;
    if !all.iter().any(|s| s.id == id) {
        return Err(RepoError::Invalid(format!("no key slot {id:?}")));
    }
    if all.len() == 1 {
        return Err(RepoError::Invalid(format!(
            "key slot {id} is the repository's last: add another first (without a key the \
             backups cannot be read)"
        )));
    }
    let dir = keys_dir(root);
    let path = dir.join(format!("{id}.json"));
    store::remove(&path)
        .and_then(|()| {
            if store::is_remote(&dir) {
                Ok(())
            } else {
                fsync_dir(&dir)
            }
        })
        .map_err(RepoError::io(&path, "remove key slot"))
}

impl Repo {
    /// The repository's key slots, oldest first (none when it is not encrypted).
    pub fn key_slots(&self) -> Result<Vec<Slot>, RepoError> {
        slots(self.root())
    }

    /// The master key (to share with a new repository); an error when not encrypted.
    pub fn master_key(&self) -> Result<&MasterKey, RepoError> {
        self.key().ok_or_else(|| {
            RepoError::Invalid(format!(
                "repository {} is not encrypted: it has no keys",
                self.root().display()
            ))
        })
    }

    /// Adds a slot that `secret` opens.
    pub fn add_key(&self, secret: &Secret, label: &str, cost: KdfCost) -> Result<Slot, RepoError> {
        add_slot(
            self.root(),
            self.id(),
            self.master_key()?,
            secret,
            label,
            cost,
        )
    }

    /// Removes slot `id` (never the last).
    pub fn remove_key(&self, id: &str) -> Result<(), RepoError> {
        self.master_key()?;
        remove_slot(self.root(), id)
    }

    /// Replaces the slot `old` opens by one `new` opens, with the same label: the new slot is
    /// written before the old one goes, so a crash leaves both, never neither. Returns the
    /// new slot and the id of the one removed.
    pub fn change_key(
        &self,
        old: &Secret,
        new: &Secret,
        cost: KdfCost,
    ) -> Result<(Slot, String), RepoError> {
        self.master_key()?;
        let (_, old_id) = unwrap_key(self.root(), self.id(), old)?;
        let label = slots(self.root())?
            .into_iter()
            .find(|s| s.id == old_id)
            .map(|s| s.label)
            .unwrap_or_default();
        let slot = self.add_key(new, &label, cost)?;
        remove_slot(self.root(), &old_id)?;
        Ok((slot, old_id))
    }
}

/// Master keys unlocked in this process, by repository id.
static UNLOCKED: Mutex<Vec<(String, MasterKey)>> = Mutex::new(Vec::new());

/// Keeps `key` for repository `repo_id` for the life of the process (or until [`forget`]).
pub(crate) fn remember(repo_id: &str, key: MasterKey) {
    let mut u = held(UNLOCKED.lock());
    u.retain(|(id, _)| id != repo_id);
    u.push((repo_id.to_owned(), key));
}

/// The key of repository `repo_id` if this process holds it.
pub(crate) fn unlocked(repo_id: &str) -> Option<MasterKey> {
    held(UNLOCKED.lock())
        .iter()
        .find(|(id, _)| id == repo_id)
        .map(|(_, k)| k.clone())
}

/// Drops the key of repository `repo_id`; true when it was held.
pub(crate) fn forget(repo_id: &str) -> bool {
    let mut u = held(UNLOCKED.lock());
    let before = u.len();
    u.retain(|(id, _)| id != repo_id);
    u.len() != before
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
