//! `xcopy`: a host sending SCSI EXTENDED COPY (LID1) through cowd's iSCSI initiator to the
//! copy manager at URL, for the tests, the benchmark and people trying it. The data moves
//! between the two named logical units inside the copy manager, never through this host.
//!
//! ```text
//! xcopy --url iscsi://HOST[:PORT]/IQN/LUN --inquiry-naa
//! xcopy --url URL [--src-naa HEX] (--dst-naa HEX [--dst-stream] | ...) --blocks N
//!       [--src-lba A] [--dst-lba B] [--block-size 512] [--segment-blocks M] [--list-id K]
//!       [--results] [--timeout SECS]
//! xcopy --url URL --legato --src-fc WWN --dst-fc WWN --blocks N [...]
//! ```
//!
//! `--inquiry-naa` prints the NAA designator of the logical unit at URL (VPD 83h), in hex.
//! Without `--src-naa` the source is that unit itself (CSCD ID FFFFh). The copy is cut into
//! block→block segments (block→stream with `--dst-stream`) and commands within the copy
//! manager's limits (RECEIVE COPY RESULTS OPERATING PARAMETERS, else the Third-party Copy VPD
//! page, else one segment per command), sent one after the other. `--results` then asks for
//! the list's COPY STATUS.
//!
//! Exit status: 0 GOOD; 1 the target could not be reached or broke the session; 2 CHECK
//! CONDITION (sense key, ASC and ASCQ printed in hex) or another status; 64 usage.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cowd::iscsi::initiator::{Reply, Session, commands};
use cowd::iscsi::url::IscsiUrl;
use cowd::xcopy::{Format, encode};
use cowd_tests::xcopy::{
    CopyLimits, CopyPlan, Endpoint, describe_copy_status, hex, lists, parse_hex,
};

const INITIATOR: &str = "iqn.2026-12.local.cowd:xcopy";
const USAGE: &str = "usage: xcopy --url iscsi://HOST[:PORT]/IQN/LUN (--inquiry-naa | \
[--src-naa HEX] --dst-naa HEX [--dst-stream] --blocks N | --legato --src-fc WWN --dst-fc WWN \
--blocks N) [--src-lba A] [--dst-lba B] [--block-size 512] [--segment-blocks M] [--list-id K] \
[--results] [--timeout SECS]";
/// RECEIVE COPY RESULTS service actions.
const SA_COPY_STATUS: u8 = 0x00;
const SA_OPERATING_PARAMETERS: u8 = 0x03;

/// How the tool ends.
enum Exit {
    Usage(String),
    /// No session, or it broke.
    Transport(String),
    /// A SCSI status other than GOOD.
    Status(String),
}

impl Exit {
    fn code(&self) -> u8 {
        match self {
            Exit::Transport(_) => 1,
            Exit::Status(_) => 2,
            Exit::Usage(_) => 64,
        }
    }
}

#[derive(Debug, Default)]
struct Args {
    url: Option<IscsiUrl>,
    inquiry_naa: bool,
    src_naa: Option<Vec<u8>>,
    dst_naa: Option<Vec<u8>>,
    dst_stream: bool,
    legato: bool,
    src_fc: Option<[u8; 8]>,
    dst_fc: Option<[u8; 8]>,
    blocks: Option<u64>,
    src_lba: u64,
    dst_lba: u64,
    block_size: u32,
    segment_blocks: u32,
    list_id: u8,
    results: bool,
    timeout: Duration,
}

fn parse_args(argv: &[String]) -> Result<Args, Exit> {
    let usage = |why: String| Exit::Usage(why);
    let mut a = Args {
        block_size: 512,
        timeout: Duration::from_secs(600),
        ..Args::default()
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--inquiry-naa" => a.inquiry_naa = true,
            "--dst-stream" => a.dst_stream = true,
            "--legato" => a.legato = true,
            "--results" => a.results = true,
            _ => {
                let value = it
                    .next()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))?;
                let number = || {
                    value
                        .parse::<u64>()
                        .map_err(|_| usage(format!("{flag} {value}: not a number")))
                };
                let designator = || {
                    parse_hex(value)
                        .filter(|v| matches!(v.len(), 8 | 16))
                        .ok_or_else(|| usage(format!("{flag} {value}: 8 or 16 bytes in hex")))
                };
                let wwn = || {
                    parse_hex(value)
                        .and_then(|v| <[u8; 8]>::try_from(v).ok())
                        .ok_or_else(|| usage(format!("{flag} {value}: a WWN of 8 bytes in hex")))
                };
                let small = |max: u64| {
                    number().and_then(|n| {
                        if n <= max {
                            Ok(n)
                        } else {
                            Err(usage(format!("{flag} {value}: at most {max}")))
                        }
                    })
                };
                match flag.as_str() {
                    "--url" => {
                        a.url = Some(value.parse().map_err(|e| usage(format!("{e}")))?);
                    }
                    "--src-naa" => a.src_naa = Some(designator()?),
                    "--dst-naa" => a.dst_naa = Some(designator()?),
                    "--src-fc" => a.src_fc = Some(wwn()?),
                    "--dst-fc" => a.dst_fc = Some(wwn()?),
                    "--blocks" => a.blocks = Some(number()?),
                    "--src-lba" => a.src_lba = number()?,
                    "--dst-lba" => a.dst_lba = number()?,
                    "--block-size" => a.block_size = small(1 << 24)? as u32,
                    "--segment-blocks" => a.segment_blocks = small(0xFFFF)? as u32,
                    "--list-id" => a.list_id = small(255)? as u8,
                    "--timeout" => a.timeout = Duration::from_secs(number()?.max(1)),
                    _ => return Err(usage(format!("unknown flag {flag}"))),
                }
            }
        }
    }
    Ok(a)
}

/// The copy the arguments ask for.
fn plan(a: &Args) -> Result<(CopyPlan, Format), Exit> {
    let usage = |why: &str| Exit::Usage(why.to_owned());
    let blocks = a.blocks.ok_or_else(|| usage("--blocks is needed"))?;
    let (src, dst, format) = if a.legato {
        match (a.src_fc, a.dst_fc) {
            (Some(s), Some(d)) => (Endpoint::Fc(s), Endpoint::Fc(d), Format::Legato),
            _ => return Err(usage("--legato needs --src-fc and --dst-fc")),
        }
    } else {
        let dst = a
            .dst_naa
            .clone()
            .ok_or_else(|| usage("--dst-naa is needed"))?;
        let dst = if a.dst_stream {
            Endpoint::StreamNaa(dst)
        } else {
            Endpoint::Naa(dst)
        };
        let src = a.src_naa.clone().map_or(Endpoint::Local, Endpoint::Naa);
        (src, dst, Format::Spc)
    };
    Ok((
        CopyPlan {
            src,
            dst,
            blocks,
            src_lba: a.src_lba,
            dst_lba: a.dst_lba,
            block_size: a.block_size,
            segment_blocks: a.segment_blocks,
            list_id: a.list_id,
        },
        format,
    ))
}

fn send(s: &mut Session, cdb: &[u8], out: &[u8], alloc: u32) -> Result<Reply, Exit> {
    s.command(cdb, out, alloc)
        .map_err(|e| Exit::Transport(e.to_string()))
}

/// A reply that must be GOOD.
fn good(what: &str, r: Reply) -> Result<Reply, Exit> {
    if r.is_good() {
        return Ok(r);
    }
    Err(Exit::Status(match r.sense_codes() {
        Some(c) if r.status == commands::CHECK_CONDITION => {
            format!("{what}: CHECK CONDITION: {c}")
        }
        _ => format!("{what}: SCSI status {:02X}h", r.status),
    }))
}

/// The copy manager's limits: OPERATING PARAMETERS, else VPD 8Fh, else the defaults.
fn copy_limits(s: &mut Session) -> Result<CopyLimits, Exit> {
    let cdb = commands::receive_copy_results(SA_OPERATING_PARAMETERS, 0, 1024);
    let r = send(s, &cdb, &[], 1024)?;
    if let Some(l) = r
        .is_good()
        .then(|| CopyLimits::from_operating_parameters(&r.data))
        .flatten()
    {
        return Ok(l);
    }
    let r = send(s, &commands::inquiry(Some(0x8F), 4096), &[], 4096)?;
    Ok(r.is_good()
        .then(|| CopyLimits::from_third_party_copy_vpd(&r.data))
        .flatten()
        .unwrap_or_default())
}

fn run(a: &Args) -> Result<(), Exit> {
    let url = a
        .url
        .as_ref()
        .ok_or_else(|| Exit::Usage("--url is needed".into()))?;
    // Check the arguments before logging in.
    let wanted = if a.inquiry_naa { None } else { Some(plan(a)?) };
    let mut s =
        Session::login(url, INITIATOR, a.timeout).map_err(|e| Exit::Transport(e.to_string()))?;
    let Some((plan, format)) = wanted else {
        let r = send(&mut s, &commands::inquiry(Some(0x83), 1024), &[], 1024)?;
        let r = good("INQUIRY (VPD 83h)", r)?;
        return match commands::naa(&r.data) {
            Some(d) => {
                println!("{}", hex(&d.value));
                Ok(())
            }
            None => Err(Exit::Transport(format!(
                "{}: the logical unit has no NAA designator",
                url.redacted()
            ))),
        };
    };
    let limits = copy_limits(&mut s)?;
    let lists = lists(&plan, &limits, format).map_err(|e| Exit::Usage(e.to_string()))?;
    let start = Instant::now();
    for (i, list) in lists.iter().enumerate() {
        let params = encode(list);
        let r = send(
            &mut s,
            &commands::extended_copy(params.len() as u32),
            &params,
            0,
        )?;
        good(&format!("EXTENDED COPY {}/{}", i + 1, lists.len()), r)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mib = plan.blocks as f64 * f64::from(plan.block_size) / f64::from(1 << 20);
    let segments: usize = lists.iter().map(|l| l.segments.len()).sum();
    println!(
        "EXTENDED COPY: GOOD, {mib:.0} MiB in {secs:.2} s ({:.0} MiB/s), {} commands, {segments} segments",
        mib / secs.max(1e-9),
        lists.len()
    );
    if a.results {
        let cdb = commands::receive_copy_results(SA_COPY_STATUS, plan.list_id, 12);
        let r = good("RECEIVE COPY RESULTS", send(&mut s, &cdb, &[], 12)?)?;
        match describe_copy_status(&r.data) {
            Some(text) => println!("{text}"),
            None => println!("COPY STATUS: {} bytes of parameter data", r.data.len()),
        }
    }
    let _ = s.logout();
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse_args(&argv).and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                Exit::Usage(why) => eprintln!("xcopy: {why}\n{USAGE}"),
                Exit::Transport(why) | Exit::Status(why) => eprintln!("xcopy: {why}"),
            }
            ExitCode::from(e.code())
        }
    }
}
