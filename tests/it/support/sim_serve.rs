//! `provision sim serve` as a child process, and what its banner printed (endpoint, certificate
//! fingerprint, tokens, the export lines), for tests that drive provision or other clients against
//! a simulator over real HTTPS.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::thread::JoinHandle;

use super::cli::{BinaryWorkspace, Provision, Run};

/// A running `provision sim serve`; killed when dropped.
pub struct SimServer {
    child: Child,
    /// Every banner line, up to and including `press Ctrl-C ...`.
    pub banner: Vec<String>,
    /// `PROXMOX_VE_ENDPOINT` as exported by the banner.
    pub endpoint: String,
    /// `PROXMOX_VE_FINGERPRINT` as exported by the banner.
    pub fingerprint: String,
    /// `tokenid=secret` per token the banner lists.
    pub tokens: Vec<String>,
    /// The server's stderr, read until it exits.
    stderr: Option<JoinHandle<String>>,
}

impl SimServer {
    /// `provision sim serve --listen LISTEN --inventory INVENTORY`, with the simulator's secrets
    /// generated (not taken from the environment); returns once the banner is printed.
    pub fn start(listen: &str, inventory: &str) -> Self {
        Self::start_with(listen, inventory, &[])
    }

    /// [`SimServer::start`] with more `sim serve` options (`--time-scale 0.01` …).
    pub fn start_with(listen: &str, inventory: &str, options: &[&str]) -> Self {
        let mut command = Provision::new(
            &[
                &["sim", "serve", "--listen", listen, "--inventory", inventory][..],
                options,
            ]
            .concat(),
        )
        .command();
        let mut child = command
            .env_remove("PVE_SIM_TOKEN_SECRET")
            .env_remove("PVE_SIM_ROOT_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut server_stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = server_stderr.read_to_string(&mut text);
            text
        });
        let mut banner = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let last = line.starts_with("press Ctrl-C");
            banner.push(line);
            if last {
                break;
            }
        }
        let value = |prefix: &str| {
            banner
                .iter()
                .find_map(|line| line.strip_prefix(prefix))
                .map(|rest| rest.trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("no `{prefix}` in {banner:?}"))
        };
        Self {
            endpoint: value("export PROXMOX_VE_ENDPOINT="),
            fingerprint: value("export PROXMOX_VE_FINGERPRINT="),
            tokens: banner
                .iter()
                .filter_map(|line| line.strip_prefix("token: PVEAPIToken="))
                .map(str::to_owned)
                .collect(),
            banner,
            child,
            stderr: Some(stderr),
        }
    }

    /// `tokenid=secret` of the token `id` (like `provision@pve!ci`).
    pub fn token(&self, id: &str) -> &str {
        self.tokens
            .iter()
            .find(|token| token.starts_with(&format!("{id}=")))
            .unwrap()
    }

    /// The banner's `export ...` lines, as printed.
    pub fn exports(&self) -> Vec<&str> {
        self.banner
            .iter()
            .map(String::as_str)
            .filter(|line| line.starts_with("export "))
            .collect()
    }

    /// `provision ARGS` in `workspace` against this server, logged in with `token`
    /// (`tokenid=secret`) and trusting `fingerprint`: exit code, stdout, stderr.
    pub fn provision(
        &self,
        workspace: &BinaryWorkspace,
        token: &str,
        fingerprint: &str,
        args: &[&str],
    ) -> (i32, String, String) {
        workspace.user_key();
        let Run {
            code,
            stdout,
            stderr,
        } = workspace
            .provision(args)
            .env("PROXMOX_VE_ENDPOINT", &self.endpoint)
            .env("PROXMOX_VE_API_TOKEN", token)
            .env("PROXMOX_VE_FINGERPRINT", fingerprint)
            .run();
        (code, stdout, stderr)
    }

    /// Stop the server and return what it wrote to stderr.
    pub fn stop(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stderr.take().unwrap().join().unwrap()
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
