//! Shared helpers of the simulator's HTTP tests: a reqwest client that pins the simulator's
//! certificate fingerprint, token/ticket requests, and task waiting.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use pve_sim::{Inventory, SimConfig, SimHandle, SimMode, Simulator};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const TOKEN: &str = "PVEAPIToken=provision@pve!ci=5f1c3a6e-8d2b-4c71-9e0a-2b7d4f6a9c13";
pub const LIMITED: &str = "PVEAPIToken=ci@pve!limited=0b9e7d45-3a21-4f8c-b6d2-7c1e5a9f3d80";

#[derive(Debug)]
struct Pin(String);

impl ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual: Vec<String> = Sha256::digest(end_entity.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        if actual.join(":") == self.0 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("fingerprint mismatch".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub fn client(fingerprint: &str) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pin(fingerprint.to_owned())))
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub struct Sim {
    pub handle: SimHandle,
    pub http: reqwest::Client,
    pub auth: String,
}

/// The answer of one request: status, reason phrase, JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub body: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "unexpected answer {self:?}");
        self.body["data"].clone()
    }
}

pub fn config(inventory: &str) -> SimConfig {
    let mut config = SimConfig::new(Inventory::builtin(inventory).unwrap());
    config.time_scale = 0.001;
    config
}

pub async fn start(inventory: &str) -> Sim {
    start_with(config(inventory)).await
}

pub async fn start_explicit(inventory: &str) -> Sim {
    let mut config = config(inventory);
    config.mode = SimMode::Explicit;
    start_with(config).await
}

pub async fn start_with(config: SimConfig) -> Sim {
    let handle = Simulator::start(config).await.unwrap();
    let http = client(&handle.fingerprint());
    Sim {
        handle,
        http,
        auth: TOKEN.to_owned(),
    }
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("{}/api2/json{path}", self.handle.base_url())
    }

    pub async fn call(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Answer {
        self.call_as(&self.auth, method, path, params).await
    }

    pub async fn call_as(
        &self,
        auth: &str,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method.clone(), self.url(path));
        if !auth.is_empty() {
            request = request.header("Authorization", auth);
        }
        request = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            request.query(params)
        } else {
            request.form(params)
        };
        answer(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call("GET", path, &[]).await.ok()
    }

    /// Waits for a task to stop; returns its status.
    pub async fn wait(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).unwrap();
        for _ in 0..2000 {
            let status = self
                .get(&format!("/nodes/{node}/tasks/{}/status", encode(upid)))
                .await;
            if status["status"] == "stopped" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("task {upid} did not finish");
    }

    /// Runs a task-returning call and expects exitstatus OK.
    pub async fn task_ok(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Value {
        let upid = self.call(method, path, params).await.ok();
        let status = self.wait(upid.as_str().unwrap()).await;
        assert_eq!(status["exitstatus"], "OK", "{method} {path}: {status}");
        status
    }

    /// A task's whole log (up to 5000 lines; Proxmox's default `limit` is 50).
    pub async fn task_log(&self, upid: &str) -> Vec<String> {
        let node = upid.split(':').nth(1).unwrap();
        let path = format!("/nodes/{node}/tasks/{}/log", encode(upid));
        self.call("GET", &path, &[("limit", "5000")])
            .await
            .ok()
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["t"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until the guest agent answers.
    pub async fn wait_agent(&self, node: &str, vmid: u32) {
        for _ in 0..2000 {
            let answer = self
                .call(
                    "POST",
                    &format!("/nodes/{node}/qemu/{vmid}/agent/ping"),
                    &[],
                )
                .await;
            if answer.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("agent of {vmid} never answered");
    }
}

pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let reason = response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Answer {
        status: status.as_u16(),
        reason,
        body,
    }
}

/// A small GPU VM: q35/OVMF, hostpci by mapping or raw, cloud-init ipconfig. No hugepages: only
/// root@pam may set them (qemu-server `check_vm_modify_config_perm`), and these VMs are also
/// created with tokens.
pub fn gpu_vm<'a>(vmid: &'a str, hostpci: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("vmid", vmid),
        ("name", "gpu-worker-1"),
        ("machine", "q35"),
        ("bios", "ovmf"),
        ("cpu", "host"),
        ("cores", "8"),
        ("sockets", "1"),
        ("memory", "16384"),
        ("balloon", "0"),
        ("numa", "1"),
        ("efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=0"),
        ("scsihw", "virtio-scsi-single"),
        ("scsi0", "local-lvm:32,discard=on,ssd=1,iothread=1"),
        ("net0", "virtio,bridge=vmbr0"),
        ("ide2", "local-lvm:cloudinit"),
        ("ipconfig0", "ip=10.0.0.21/24,gw=10.0.0.1"),
        ("agent", "enabled=1"),
        ("hostpci0", hostpci),
    ]
}

/// A `multipart/form-data` body: `fields`, then `data` as the file `filename`.
pub fn multipart_body(
    boundary: &str,
    fields: &[(&str, &str)],
    filename: &str,
    data: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

impl Sim {
    /// POSTs `body` as multipart with `boundary` to the `local` storage's upload route, with
    /// `auth` (empty: no Authorization header).
    pub async fn post_multipart(&self, auth: &str, boundary: &str, body: Vec<u8>) -> Answer {
        let mut request = self
            .http
            .post(self.url("/nodes/pve1/storage/local/upload"))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        if !auth.is_empty() {
            request = request.header("Authorization", auth);
        }
        answer(request.send().await.unwrap()).await
    }
}

/// A request as `root@pam` with a ticket (the only identity that is root).
pub async fn as_root(sim: &Sim, method: &str, path: &str, params: &[(&str, &str)]) -> Answer {
    let login = sim
        .call_as(
            "",
            "POST",
            "/access/ticket",
            &[("username", "root@pam"), ("password", "sim-root-password")],
        )
        .await
        .ok();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = sim
        .http
        .request(method.clone(), sim.url(path))
        .header(
            "Cookie",
            format!(
                "PVEAuthCookie={}",
                encode(login["ticket"].as_str().unwrap())
            ),
        )
        .header(
            "CSRFPreventionToken",
            login["CSRFPreventionToken"].as_str().unwrap(),
        );
    request = if method == reqwest::Method::GET {
        request.query(params)
    } else {
        request.form(params)
    };
    answer(request.send().await.unwrap()).await
}

/// A 2 GiB VM with one 8 GiB disk on `pve1`.
pub async fn small_vm(sim: &Sim, vmid: &str) {
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[("vmid", vmid), ("memory", "2048"), ("scsi0", "local-lvm:8")],
    )
    .await;
}
