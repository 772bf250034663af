//! Benchmark driver: provision's node-preparation steps (swap, kernel modules, sysctls) on several hosts in
//! parallel through the real nodeprep builders and the russh executor. Run by `scripts/bench-nodeprep.sh`.
//!
//! usage: bench_nodeprep KEY NAME=ADDRESS=HOST_PUBKEY_FILE...
//! Prints one line per host (step outcomes) on stderr and `elapsed_ms N` (connect + steps, all hosts) on
//! stdout; exits non-zero when any host failed.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use provision::nodeprep::steps::{K3S_MODULES, K3S_SYSCTLS};
use provision::nodeprep::{NodePrepInput, apply_steps, prepare_steps};
use provision::ssh::{ClientKey, HostKeyPolicy, RusshExec, SshOptions, SshTarget, run_bounded};

struct Host {
    name: String,
    address: String,
    public_key: russh::keys::PublicKey,
}

fn parse_host(spec: &str) -> anyhow::Result<Host> {
    let mut parts = spec.splitn(3, '=');
    let (Some(name), Some(address), Some(key_file)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("host `{spec}` must be NAME=ADDRESS=HOST_PUBKEY_FILE");
    };
    let text = std::fs::read_to_string(key_file).with_context(|| key_file.to_owned())?;
    let public_key = russh::keys::PublicKey::from_openssh(text.trim())
        .with_context(|| format!("{key_file}: not an OpenSSH public key"))?;
    Ok(Host {
        name: name.to_owned(),
        address: address.to_owned(),
        public_key,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let key = ClientKey::File {
        path: PathBuf::from(args.next().context("usage: bench_nodeprep KEY HOST...")?),
        passphrase: None,
    };
    let hosts = args
        .map(|s| parse_host(&s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let input = NodePrepInput {
        modules: K3S_MODULES.iter().map(|m| (*m).to_owned()).collect(),
        sysctls: K3S_SYSCTLS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        scratch: None,
        packages: Vec::new(),
        apt_source: None,
        nvidia_host: None,
    };
    let steps = prepare_steps(&input);
    let started = Instant::now();
    let results = run_bounded(&hosts, hosts.len(), |host| {
        let key = &key;
        let steps = &steps;
        async move {
            let exec = RusshExec::connect(
                SshTarget::new(&host.name, &host.address, 22, "root"),
                key,
                HostKeyPolicy::Expected(vec![host.public_key.clone()]),
                SshOptions::default(),
                None,
            )
            .await?;
            let connected = started.elapsed();
            let reports = apply_steps(&exec, steps).await?;
            let done = started.elapsed();
            exec.disconnect().await;
            anyhow::Ok((reports, connected, done))
        }
    })
    .await;
    let elapsed = started.elapsed();
    let mut failed = false;
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok((reports, connected, done)) => {
                let changed = reports.iter().filter(|r| r.outcome.is_change()).count();
                eprintln!(
                    "{}: connected at {} ms, {} steps done at {} ms, {changed} changed",
                    host.name,
                    connected.as_millis(),
                    reports.len(),
                    done.as_millis()
                );
            }
            Err(error) => {
                failed = true;
                eprintln!("{}: FAILED: {error:#}", host.name);
            }
        }
    }
    println!("elapsed_ms {}", elapsed.as_millis());
    if failed {
        bail!("node preparation failed on some hosts");
    }
    Ok(())
}
