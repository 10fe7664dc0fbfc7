//! `cowctl attach` and `cowctl detach`: kernel NBD devices (`/dev/nbdN`) served by cowd
//! itself through the NBD ioctls (needs the `nbd` kernel module).

use std::io::Write;

use cowd_api::exports::{Device, Resolved};

use super::sessions::print;
use super::{Outcome, export_path};
use crate::client::{Client, Reply};

#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// The export to attach.
    #[arg(value_name = "EXPORT")]
    pub export: String,
    /// The kernel NBD device, e.g. /dev/nbd0.
    #[arg(value_name = "/dev/nbdN")]
    pub device: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DetachArgs {
    /// The kernel NBD device cowd attached, e.g. /dev/nbd0.
    #[arg(value_name = "/dev/nbdN")]
    pub device: String,
}

pub async fn attach(
    client: &Client,
    a: &AttachArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let body = Device {
        device: a.device.clone(),
    };
    let reply: Reply<Resolved> = client
        .post(&export_path(&a.export, "/attach"), &body)
        .await?;
    print(out, json, &reply, |r| {
        format!("{} attached to export {}\n", r.device, r.export)
    })
}

pub async fn detach(
    client: &Client,
    a: &DetachArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let body = Device {
        device: a.device.clone(),
    };
    let reply: Reply<Resolved> = client.post("/v1/detach", &body).await?;
    print(out, json, &reply, |r| {
        format!("{} detached from export {}\n", r.device, r.export)
    })
}
