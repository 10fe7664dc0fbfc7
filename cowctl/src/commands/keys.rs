//! The commands of an encrypted repository's keys: `repo unlock`, `repo lock` and
//! `repo key list|add|remove|passwd` (`/v1/repo/unlock`, `/v1/repo/lock`, `/v1/repo/keys`), and
//! how a passphrase is asked for.
//!
//! A passphrase comes from `--passphrase-file FILE` (its first line), else `$COWD_PASSPHRASE`,
//! else the terminal (no echo; a new one twice). It is never an argument: arguments are
//! visible to every user in `ps`. A key file is named by its path (absolute, on the daemon's
//! host); the daemon reads it, and writes a fresh random one when asked to create it.

use std::io::Write;
use std::path::{Path, PathBuf};

use cowd_api::repo::{
    KeyAdd, KeyChange, KeyChanged, KeySecret, KeySlot, LockRequest, LockState, UnlockRequest,
};

use super::sessions::print;
use super::{Outcome, absolute, repo_arg};
use crate::client::{self, Client, Reply};
use crate::output::printable;

/// Where the passphrase of an unlock or an old slot comes from when no file is given.
pub const PASSPHRASE_ENV: &str = "COWD_PASSPHRASE";
/// The same for a new passphrase (`repo key add`, `repo key passwd`).
pub const NEW_PASSPHRASE_ENV: &str = "COWD_NEW_PASSPHRASE";

/// What opens a key slot, as the commands take it.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretArgs {
    /// Read the passphrase from the first line of FILE [default: $COWD_PASSPHRASE, else ask].
    #[arg(long, value_name = "FILE", conflicts_with = "key_file")]
    pub passphrase_file: Option<PathBuf>,
    /// Use a key file instead of a passphrase (its path on the daemon's host).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeyCommand {
    /// List the key slots: any of them opens the repository.
    List(RepoOnly),
    /// Add a key slot (the daemon must hold the repository unlocked).
    Add(KeyAddArgs),
    /// Remove a key slot (never the last one).
    Remove(KeyRemoveArgs),
    /// Change a passphrase: the slot the old one opens is replaced by one the new one opens.
    Passwd(PasswdArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RepoOnly {
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UnlockArgs {
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    #[command(flatten)]
    pub secret: SecretArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct KeyAddArgs {
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Who or what the slot is for ("backup robot", "off-site restore").
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub label: String,
    /// Read the new passphrase from FILE [default: $COWD_NEW_PASSPHRASE, else ask twice].
    #[arg(long, value_name = "FILE", conflicts_with = "key_file")]
    pub new_passphrase_file: Option<PathBuf>,
    /// A key file instead of a passphrase: created (32 random bytes, mode 0600) when missing.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct KeyRemoveArgs {
    /// The slot (see `repo key list`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PasswdArgs {
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Read the current passphrase from FILE [default: $COWD_PASSPHRASE, else ask].
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from FILE [default: $COWD_NEW_PASSPHRASE, else ask twice].
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
}

/// The first line of `path` (a trailing `\n` or `\r\n` is not part of the passphrase).
fn first_line(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("passphrase file {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// A passphrase: from `file`, else `env`, else the terminal (`twice` for a new one).
pub fn passphrase(
    file: Option<&Path>,
    env: &str,
    prompt: &str,
    twice: bool,
) -> anyhow::Result<String> {
    let p = if let Some(f) = file {
        first_line(f)?
    } else if let Ok(p) = std::env::var(env) {
        p
    } else {
        let p = rpassword::prompt_password(format!("{prompt}: ")).map_err(|e| {
            anyhow::anyhow!(
                "cannot read a passphrase from the terminal ({e}); give --passphrase-file or ${env}"
            )
        })?;
        if twice && rpassword::prompt_password(format!("{prompt} again: "))? != p {
            anyhow::bail!("the two passphrases differ");
        }
        p
    };
    if p.is_empty() {
        anyhow::bail!("the passphrase is empty");
    }
    Ok(p)
}

/// The request's secret: the key file (absolute), or a passphrase got as [`passphrase`] does.
pub fn secret(
    key_file: Option<&Path>,
    passphrase_file: Option<&Path>,
    env: &str,
    prompt: &str,
    new: bool,
) -> anyhow::Result<KeySecret> {
    Ok(match key_file {
        Some(f) => KeySecret {
            key_file: Some(absolute("key file", f)?),
            create_key_file: new,
            ..KeySecret::default()
        },
        None => KeySecret {
            passphrase: Some(passphrase(passphrase_file, env, prompt, new)?),
            ..KeySecret::default()
        },
    })
}

fn repo_query(repo: Option<&Path>) -> anyhow::Result<String> {
    Ok(match repo_arg(repo)? {
        Some(r) => format!("?repo={}", client::encode(&r)),
        None => String::new(),
    })
}

fn prompt_for(repo: Option<&Path>) -> String {
    match repo {
        Some(r) => format!("Passphrase of {}", r.display()),
        None => "Passphrase of the daemon's repository".to_owned(),
    }
}

pub async fn unlock(
    client: &Client,
    a: &UnlockArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let s = &a.secret;
    let body = UnlockRequest {
        repo: repo_arg(a.repo.as_deref())?,
        secret: secret(
            s.key_file.as_deref(),
            s.passphrase_file.as_deref(),
            PASSPHRASE_ENV,
            &prompt_for(a.repo.as_deref()),
            false,
        )?,
    };
    let reply: Reply<LockState> = client.post("/v1/repo/unlock", &body).await?;
    print(out, json, &reply, |r| {
        format!(
            "repository {} unlocked (key slot {})\n",
            printable(&r.repo),
            r.slot.as_deref().unwrap_or("?")
        )
    })
}

pub async fn lock(
    client: &Client,
    a: &RepoOnly,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let body = LockRequest {
        repo: repo_arg(a.repo.as_deref())?,
    };
    let reply: Reply<LockState> = client.post("/v1/repo/lock", &body).await?;
    print(out, json, &reply, |r| {
        let was = if r.was_unlocked {
            "locked"
        } else {
            "was not unlocked"
        };
        format!("repository {} {was}\n", printable(&r.repo))
    })
}

/// `ID  KIND  CREATED  LABEL` lines.
fn slots_text(slots: &[KeySlot]) -> String {
    let mut s = format!("{:<10} {:<11} {:<21} LABEL\n", "ID", "KIND", "CREATED");
    for k in slots {
        s.push_str(&format!(
            "{:<10} {:<11} {:<21} {}\n",
            printable(&k.id),
            printable(&k.kind),
            cowd_api::units::rfc3339::format(k.created),
            printable(&k.label)
        ));
    }
    s
}

pub async fn key(
    client: &Client,
    cmd: &KeyCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    match cmd {
        KeyCommand::List(a) => {
            let path = format!("/v1/repo/keys{}", repo_query(a.repo.as_deref())?);
            let reply: Reply<Vec<KeySlot>> = client.get(&path).await?;
            print(out, json, &reply, |s| slots_text(s))
        }
        KeyCommand::Add(a) => {
            let body = KeyAdd {
                repo: repo_arg(a.repo.as_deref())?,
                secret: secret(
                    a.key_file.as_deref(),
                    a.new_passphrase_file.as_deref(),
                    NEW_PASSPHRASE_ENV,
                    "New passphrase",
                    true,
                )?,
                label: a.label.clone(),
            };
            let reply: Reply<KeySlot> = client.post("/v1/repo/keys", &body).await?;
            print(out, json, &reply, |k| {
                format!("key slot {} added ({})\n", printable(&k.id), k.kind)
            })
        }
        KeyCommand::Remove(a) => {
            let path = format!(
                "/v1/repo/keys/{}{}",
                client::encode(&a.id),
                repo_query(a.repo.as_deref())?
            );
            let reply: Reply<Vec<KeySlot>> = client.delete(&path).await?;
            let id = a.id.clone();
            print(out, json, &reply, |s| {
                format!("key slot {} removed; {} left\n", printable(&id), s.len())
            })
        }
        KeyCommand::Passwd(a) => {
            let body = KeyChange {
                repo: repo_arg(a.repo.as_deref())?,
                old: secret(
                    None,
                    a.passphrase_file.as_deref(),
                    PASSPHRASE_ENV,
                    "Current passphrase",
                    false,
                )?,
                new: secret(
                    None,
                    a.new_passphrase_file.as_deref(),
                    NEW_PASSPHRASE_ENV,
                    "New passphrase",
                    true,
                )?,
            };
            let reply: Reply<KeyChanged> = client.post("/v1/repo/keys/passwd", &body).await?;
            print(out, json, &reply, |k| {
                format!(
                    "passphrase changed: key slot {} replaces {}\n",
                    printable(&k.added.id),
                    printable(&k.removed)
                )
            })
        }
    }
}
