//! `cowctl copies` (copy jobs run by data movers) and `cowctl ports` (target and initiator
//! ports, their groups; `ports set` changes one while cowd runs).

use std::io::Write;

use clap::{Args, Subcommand};
use cowd_api::copies::{CopyJob, PortChange, PortInfo, PortRole};

use super::Outcome;
use super::sessions::print;
use crate::client::{self, Client, Reply};
use crate::output::{Align, Table, human_size, printable};
use crate::report::percent;

#[derive(Debug, Subcommand)]
pub enum PortsCommand {
    /// Change a port's role or group (not written back to cowd.toml).
    Set(PortSetArgs),
}

#[derive(Debug, Args)]
pub struct PortsArgs {
    #[command(subcommand)]
    pub command: Option<PortsCommand>,
}

#[derive(Debug, Args)]
pub struct PortSetArgs {
    /// The port's name, as `cowctl ports` lists it.
    pub port: String,
    /// `target` (iSCSI logins arrive here) or `initiator` (movers reach copy targets from here).
    #[arg(long, value_parser = role)]
    pub role: Option<PortRole>,
    /// The port group; an empty string clears it.
    #[arg(long)]
    pub group: Option<String>,
}

fn role(s: &str) -> Result<PortRole, String> {
    match s {
        "target" => Ok(PortRole::Target),
        "initiator" => Ok(PortRole::Initiator),
        _ => Err(format!("{s}: a role is target or initiator")),
    }
}

pub async fn copies(client: &Client, json: bool, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let reply: Reply<Vec<CopyJob>> = client.get("/v1/copies").await?;
    print(out, json, &reply, |v| copies_table(v))
}

pub async fn ports(
    client: &Client,
    args: &PortsArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    match &args.command {
        None => {
            let reply: Reply<Vec<PortInfo>> = client.get("/v1/ports").await?;
            print(out, json, &reply, |v| ports_table(v))
        }
        Some(PortsCommand::Set(a)) => {
            if a.role.is_none() && a.group.is_none() {
                anyhow::bail!("ports set {}: give --role, --group or both", a.port);
            }
            let change = PortChange {
                role: a.role,
                group: a.group.clone(),
            };
            let path = format!("/v1/ports/{}", client::encode(&a.port));
            let reply: Reply<PortInfo> = client.put(&path, &change).await?;
            print(out, json, &reply, |p| ports_table(std::slice::from_ref(p)))
        }
    }
}

fn role_name(r: PortRole) -> &'static str {
    match r {
        PortRole::Target => "target",
        PortRole::Initiator => "initiator",
    }
}

pub fn ports_table(list: &[PortInfo]) -> String {
    if list.is_empty() {
        return "no ports\n".to_owned();
    }
    let mut t = Table::new(&[
        ("PORT", Align::Left),
        ("ROLE", Align::Left),
        ("ADDRESS", Align::Left),
        ("GROUP", Align::Left),
    ]);
    for p in list {
        t.row(vec![
            printable(&p.name),
            role_name(p.role).to_owned(),
            p.address.as_deref().map_or("-".into(), printable),
            p.group.as_deref().map_or("-".into(), printable),
        ]);
    }
    t.render()
}

pub fn copies_table(list: &[CopyJob]) -> String {
    if list.is_empty() {
        return "no copy jobs\n".to_owned();
    }
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("STATE", Align::Left),
        ("MOVER", Align::Left),
        ("PATH", Align::Left),
        ("BYTES", Align::Right),
        ("WHAT", Align::Left),
    ]);
    for j in list {
        t.row(vec![
            j.id.to_string(),
            j.state.clone(),
            j.mover.as_deref().map_or("-".into(), printable),
            j.path.as_deref().map_or("-".into(), printable),
            format!(
                "{}/{} {}%",
                human_size(j.bytes),
                human_size(j.total),
                percent(j.bytes, j.total)
            ),
            printable(&j.what.join(", ")),
        ]);
    }
    t.render_with_notes(|i, out| {
        let j = &list[i];
        out.push_str(&format!("    {}\n", printable(&j.origin)));
        if let Some(reason) = &j.reason {
            let error = j.error.as_deref().unwrap_or("failed");
            out.push_str(&format!("    {}: {}\n", error, printable(reason)));
        } else {
            if j.durable > 0 && j.state != "done" {
                out.push_str(&format!(
                    "    checkpoint at {} (a takeover resumes there)\n",
                    human_size(j.durable)
                ));
            }
            for (mover, why) in &j.unavailable {
                out.push_str(&format!(
                    "    mover {} unavailable: {}\n",
                    printable(mover),
                    printable(why)
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(state: &str, durable: u64) -> CopyJob {
        CopyJob {
            id: 7,
            origin: "backup disk-1".into(),
            state: state.into(),
            what: vec!["export:s -> copy-target:vault".into()],
            group: None,
            mover: Some("m1".into()),
            path: Some("any -> /v".into()),
            bytes: 96 << 20,
            durable,
            total: 256 << 20,
            claims: 2,
            unavailable: BTreeMap::new(),
            error: None,
            reason: None,
        }
    }

    #[test]
    fn a_checkpoint_is_shown_while_the_job_runs() {
        let t = copies_table(&[job("copying", 64 << 20)]);
        assert!(
            t.contains("checkpoint at 64.0 MiB (a takeover resumes there)"),
            "{t}"
        );
        for (state, durable) in [("copying", 0), ("done", 256 << 20)] {
            let t = copies_table(&[job(state, durable)]);
            assert!(!t.contains("checkpoint"), "{t}");
        }
    }
}
