//! The cluster profile as written in TOML: the one description every later phase reads.
//!
//! Field by field documentation lives in `profiles/README.md`; keep the two in step.
//! Unknown keys are refused everywhere (`deny_unknown_fields`). Semantic rules live in
//! `validate/`; this file only says what can be written.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// A whole cluster profile (`profiles/<name>.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// One line shown by `provision profiles`.
    #[serde(default)]
    pub description: String,
    pub cluster: Cluster,
    pub network: Network,
    pub proxmox: Proxmox,
    pub image: Image,
    /// `[[node_groups]]` tables, servers and agents.
    pub node_groups: Vec<NodeGroup>,
    #[serde(default)]
    pub nvidia: Nvidia,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub gitops: GitOps,
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    pub detect: Detect,
    #[serde(default)]
    pub airgap: Airgap,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// DNS-1123 label; used in VM names, tags (`cluster-<name>`) and the kubeconfig context.
    pub name: String,
    /// K3s release, `v1.31.4+k3s1` form.
    pub k3s_version: String,
    /// Floating API address served by kube-vip (ARP mode); inside `network.cidr`.
    #[serde(default)]
    pub api_vip: Option<IpAddr>,
    /// Extra subject alternative names for the API certificate.
    #[serde(default)]
    pub tls_san: Vec<String>,
    #[serde(default = "default_cluster_cidr")]
    pub cluster_cidr: IpNetwork,
    #[serde(default = "default_service_cidr")]
    pub service_cidr: IpNetwork,
    #[serde(default)]
    pub flannel_backend: FlannelBackend,
    /// Packaged components k3s must not deploy (`traefik`, `servicelb`, `local-storage`, `metrics-server`, `coredns`).
    #[serde(default)]
    pub disable: Vec<String>,
    /// Time to live, e.g. `4h`: the VMs carry their expiry (`provision-exp-<unix time>`, from
    /// the cluster's creation) and `provision gc --expired` destroys them after it.
    #[serde(default)]
    pub ttl: Option<String>,
}

fn default_cluster_cidr() -> IpNetwork {
    IpNetwork::V4(
        ipnetwork::Ipv4Network::new([10, 42, 0, 0].into(), 16).expect("static /16 is valid"),
    )
}

fn default_service_cidr() -> IpNetwork {
    IpNetwork::V4(
        ipnetwork::Ipv4Network::new([10, 43, 0, 0].into(), 16).expect("static /16 is valid"),
    )
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlannelBackend {
    #[default]
    Vxlan,
    HostGw,
    WireguardNative,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The VM network, e.g. `10.0.0.0/24`.
    pub cidr: IpNetwork,
    pub gateway: IpAddr,
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    #[serde(default)]
    pub search_domain: Option<String>,
    /// Proxmox bridge the VMs' `net0` attaches to.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub mtu: Option<u16>,
}

fn default_bridge() -> String {
    "vmbr0".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxmox {
    /// Proxmox nodes VMs may be placed on.
    pub nodes: Vec<String>,
    #[serde(default)]
    pub placement: Placement,
    pub storage: ProxmoxStorage,
    #[serde(default)]
    pub pool: Option<String>,
    /// Inclusive VMID range the plan allocates from, e.g. `{ start = 7100, end = 7199 }`.
    pub vmid_range: VmidRange,
    /// Extra tags on every VM (besides `provision`, `cluster-<name>`, `role-<role>`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// How guests get their first-boot configuration.
    #[serde(default)]
    pub cloud_init: CloudInitMode,
    /// Host topology when it cannot be discovered: one entry per Proxmox node.
    #[serde(default)]
    pub topology: Vec<HostTopology>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Spread VMs of a group across nodes (fault tolerance).
    #[default]
    Spread,
    /// Fill one node before using the next (keeps GPUs together).
    Pack,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloudInitMode {
    /// A NoCloud ISO built by provision (full user-data, provision-generated SSH host keys).
    #[default]
    NocloudIso,
    /// Proxmox's built-in cloud-init drive (users, keys, network only).
    Proxmox,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxStorage {
    /// VM disks (e.g. an lvm-thin `local-lvm`).
    pub disks: String,
    /// EFI vars disk; defaults to `disks`.
    #[serde(default)]
    pub efi: Option<String>,
    /// Where cloud-init ISOs are uploaded (`content=iso`).
    pub iso: String,
    /// Where cloud images are downloaded (`content=import`).
    pub images: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmidRange {
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTopology {
    pub node: String,
    pub numa_nodes: Vec<NumaNode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaNode {
    pub id: u32,
    /// Host CPU list in Linux cpulist form, e.g. `0-31,64-95`.
    pub cpus: String,
    /// Free 1 GiB hugepages on this NUMA node (when hugepages are used).
    #[serde(default)]
    pub hugepages_1g: Option<u32>,
    /// Free 2 MiB hugepages on this NUMA node.
    #[serde(default)]
    pub hugepages_2m: Option<u32>,
    /// PCI devices local to this NUMA node: whole devices (`0000:41:00`) or bus prefixes
    /// (`0000:41`). Lets NUMA pinning pick the node local to a VM's GPUs.
    #[serde(default)]
    pub pci_devices: Vec<String>,
}

/// Exactly one of `url` (+ `sha256`), `volume` or `template_vmid`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Cloud image downloaded once per node with `download-url` (`content=import`).
    #[serde(default)]
    pub url: Option<String>,
    /// Required with `url`: 64 hex characters.
    #[serde(default)]
    pub sha256: Option<String>,
    /// File name on the storage; defaults to the URL's last segment.
    #[serde(default)]
    pub file_name: Option<String>,
    /// An existing volume, e.g. `local:import/debian-12-genericcloud-amd64.qcow2`.
    #[serde(default)]
    pub volume: Option<String>,
    /// Clone mode: an existing template VM.
    #[serde(default)]
    pub template_vmid: Option<u32>,
    /// The guest operating system the image boots; inferred from the image's name when absent
    /// (see [`Image::guest_os`]).
    #[serde(default)]
    pub os: Option<GuestOs>,
    /// How each VM gets its OS disk from the image (`url` or `volume`): `import` (each VM
    /// imports the image: independent disks), `linked-clone` (one template per Proxmox node
    /// built once from the image, each VM a linked clone of it: seconds each, for ephemeral
    /// clusters) or `full-clone` (the same template, each VM a full copy).
    #[serde(default)]
    pub strategy: ImageStrategy,
}

/// `image.strategy`: how VMs get their OS disk from the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageStrategy {
    /// Each VM imports the image (`import-from`).
    #[default]
    Import,
    /// One template per node from the image; VMs are linked clones of it.
    LinkedClone,
    /// One template per node from the image; VMs are full clones of it.
    FullClone,
}

impl ImageStrategy {
    pub fn is_import(&self) -> bool {
        *self == ImageStrategy::Import
    }

    /// The name profiles and plans use.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStrategy::Import => "import",
            ImageStrategy::LinkedClone => "linked-clone",
            ImageStrategy::FullClone => "full-clone",
        }
    }
}

impl Image {
    /// The guest OS: `os` when written, otherwise inferred from the URL, file name or volume of
    /// a known cloud image; `None` when it cannot be told (a template VM, an unknown name).
    pub fn guest_os(&self) -> Option<GuestOs> {
        self.os.or_else(|| self.inferred_os())
    }

    /// What the image's names say about the guest OS, ignoring `os`.
    pub fn inferred_os(&self) -> Option<GuestOs> {
        [&self.url, &self.file_name, &self.volume]
            .into_iter()
            .flatten()
            .find_map(|name| GuestOs::infer(name))
    }
}

/// Guest operating systems provision prepares nodes for (`image.os`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestOs {
    /// Debian 12 "bookworm".
    #[serde(rename = "debian-12")]
    Debian12,
    /// Ubuntu 24.04 LTS "noble".
    #[serde(rename = "ubuntu-24.04")]
    Ubuntu2404,
}

impl GuestOs {
    /// As written in profiles: `debian-12`, `ubuntu-24.04`.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestOs::Debian12 => "debian-12",
            GuestOs::Ubuntu2404 => "ubuntu-24.04",
        }
    }

    /// Whether NVIDIA publishes GPU Operator driver containers for this OS (it does for Ubuntu
    /// and RHEL, not for Debian: NVIDIA/gpu-operator#1212).
    pub fn has_operator_driver_images(self) -> bool {
        match self {
            GuestOs::Debian12 => false,
            GuestOs::Ubuntu2404 => true,
        }
    }

    /// The OS of a known cloud image name or URL: `debian-12…` or `…/bookworm/…` for Debian 12,
    /// `ubuntu-24.04…`, `noble-…` or `…/noble/…` for Ubuntu 24.04.
    pub fn infer(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        if name.contains("debian-12") || name.contains("/bookworm/") {
            Some(GuestOs::Debian12)
        } else if name.contains("ubuntu-24.04")
            || name.contains("/noble/")
            || name.contains("noble-server-cloudimg")
        {
            Some(GuestOs::Ubuntu2404)
        } else {
            None
        }
    }
}

impl std::fmt::Display for GuestOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    /// `server` or `agent`, as written in profiles and used in tags (`role-<role>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    /// Group name, unique in the profile.
    pub name: String,
    pub role: Role,
    pub count: u32,
    /// VM name pattern; `{cluster}`, `{group}` and `{index}` (1-based) are replaced.
    #[serde(default = "default_name_pattern")]
    pub name_pattern: String,
    pub cores: u32,
    #[serde(default = "default_sockets")]
    pub sockets: u32,
    pub memory_mib: u64,
    /// Proxmox CPU type; GPU and AVX-512 nodes want `host`.
    #[serde(default = "default_cpu_type")]
    pub cpu_type: String,
    /// Extra CPU flags, each `+flag` or `-flag` (Proxmox `cpu: …,flags=`).
    #[serde(default)]
    pub cpu_flags: Vec<String>,
    #[serde(default = "default_machine")]
    pub machine: String,
    #[serde(default)]
    pub bios: Bios,
    /// Explicit static addresses, one per VM.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// Or: allocate from this inclusive range, `10.0.0.21-10.0.0.29`.
    #[serde(default)]
    pub address_range: Option<String>,
    pub disks: Disks,
    #[serde(default)]
    pub gpus: Option<Gpus>,
    /// Hugepage size in MiB backing guest memory: 2 or 1024; absent = none.
    #[serde(default)]
    pub hugepages: Option<u32>,
    /// Pin vCPUs and guest memory to the host NUMA node local to the VM's GPUs.
    #[serde(default)]
    pub numa_pinning: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `key[=value]:Effect`.
    #[serde(default)]
    pub taints: Vec<String>,
    /// Restrict this group to some of `proxmox.nodes`.
    #[serde(default)]
    pub proxmox_nodes: Vec<String>,
}

fn default_name_pattern() -> String {
    "{cluster}-{group}-{index}".to_owned()
}
fn default_sockets() -> u32 {
    1
}
fn default_cpu_type() -> String {
    "host".to_owned()
}
fn default_machine() -> String {
    "q35".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bios {
    #[default]
    Ovmf,
    Seabios,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disks {
    pub os_gb: u32,
    #[serde(default)]
    pub scratch_gb: Option<u32>,
    /// Where the scratch disk is mounted in the guest.
    #[serde(default)]
    pub scratch_mount: Option<String>,
    /// Storage for the scratch disk; defaults to `proxmox.storage.disks`.
    #[serde(default)]
    pub scratch_storage: Option<String>,
}

/// GPUs passed through to each VM of a group: `filter` or `mapping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpus {
    pub count: u32,
    /// `vendor:device` in hex, e.g. `10de:20b5`, `10de:*` for any NVIDIA GPU, or a list of
    /// them (any matches): `["10de:20f1", "10de:20b5"]`.
    #[serde(default)]
    pub filter: Option<GpuFilter>,
    /// An existing Proxmox PCI resource mapping (`/cluster/mapping/pci`).
    #[serde(default)]
    pub mapping: Option<String>,
}

/// `gpus.filter`: one `vendor:device` or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GpuFilter {
    One(String),
    AnyOf(Vec<String>),
}

impl GpuFilter {
    /// Every `vendor:device` the filter accepts.
    pub fn ids(&self) -> &[String] {
        match self {
            GpuFilter::One(id) => std::slice::from_ref(id),
            GpuFilter::AnyOf(ids) => ids,
        }
    }
}

impl std::fmt::Display for GpuFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.ids().join(" or "))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NvidiaMode {
    /// NVIDIA GPU Operator (HelmChart) installs driver + toolkit.
    Operator,
    /// Driver and nvidia-container-toolkit installed on the host by provision.
    Host,
    #[default]
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nvidia {
    #[serde(default)]
    pub mode: NvidiaMode,
    /// GPU time-slicing: each GPU is advertised this many times.
    #[serde(default)]
    pub time_slicing_replicas: Option<u32>,
    #[serde(default)]
    pub operator_version: Option<String>,
    /// Who provides the kernel driver; absent = [`NvidiaDriver::Install`].
    #[serde(default)]
    pub driver: Option<NvidiaDriver>,
    /// Host mode: a local file with NVIDIA's apt signing key for the nvidia-container-toolkit
    /// repository; pushed to the nodes as a file (never fetched there).
    #[serde(default)]
    pub repo_key: Option<String>,
    /// Make `nvidia` containerd's default runtime on GPU nodes (the GPU Operator toolkit's
    /// `CONTAINERD_SET_AS_DEFAULT`). Off by default: pods opt in with `runtimeClassName: nvidia`.
    #[serde(default)]
    pub default_runtime: bool,
}

impl Nvidia {
    /// Whether the image already carries the driver (`driver = "preinstalled"`).
    pub fn driver_preinstalled(&self) -> bool {
        self.driver == Some(NvidiaDriver::Preinstalled)
    }
}

/// `nvidia.driver`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NvidiaDriver {
    /// The GPU Operator's driver container (operator mode) or apt (host mode) installs it.
    #[default]
    Install,
    /// The image already has it: the operator runs with `driver.enabled=false`, host mode
    /// installs only the container toolkit.
    Preinstalled,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    #[serde(default)]
    pub nfs: Option<Nfs>,
    #[serde(default)]
    pub fast_scratch: Option<FastScratch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nfs {
    pub server: IpAddr,
    /// Absolute export path.
    pub path: String,
    /// Make the NFS class the cluster's default StorageClass.
    #[serde(default = "default_true")]
    pub default_class: bool,
    #[serde(default = "default_nfs_class")]
    pub class_name: String,
}

fn default_true() -> bool {
    true
}
fn default_nfs_class() -> String {
    "nfs-client".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastScratch {
    /// Host path local-path-provisioner uses (normally the scratch disk mount).
    pub path: String,
    #[serde(default = "default_scratch_class")]
    pub class_name: String,
}

fn default_scratch_class() -> String {
    "fast-scratch".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GitOpsEngine {
    Flux,
    Argocd,
    Fleet,
    #[default]
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitOps {
    #[serde(default)]
    pub engine: GitOpsEngine,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// How the engine authenticates to a private repository; `None` = a public HTTPS repository.
    /// Only file references: the key material itself never sits in a profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GitOpsCredentials>,
}

/// What kind of credentials [`GitOpsCredentials::file`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GitCredentialsKind {
    /// `file` is an unencrypted SSH private key; the host is pinned by `known_hosts[_file]`.
    Ssh,
    /// `file` holds `username=…` and `password=…` lines (a password or an access token).
    Https,
}

/// `[gitops.credentials]`: references to local files (relative to the workspace, absolute, or `~/…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitOpsCredentials {
    pub kind: GitCredentialsKind,
    /// The private key (`ssh`) or the `username=` / `password=` file (`https`).
    pub file: String,
    /// `ssh` only: a known_hosts file pinning the Git host's key (this or `known_hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<String>,
    /// `ssh` only: known_hosts lines inline (public host keys, not secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default = "default_ssh_user")]
    pub user: String,
    /// Private key; `~` is expanded. The public key (`<path>.pub`) goes into cloud-init.
    #[serde(default = "default_ssh_key")]
    pub private_key: String,
    /// Optional jump host, `user@host[:port]` (Proxmox host or bastion).
    #[serde(default)]
    pub jump_host: Option<String>,
}

impl Default for Ssh {
    fn default() -> Self {
        Self {
            user: default_ssh_user(),
            private_key: default_ssh_key(),
            jump_host: None,
        }
    }
}

fn default_ssh_user() -> String {
    "provision".to_owned()
}
fn default_ssh_key() -> String {
    "~/.ssh/id_ed25519".to_owned()
}

/// Node labels derived from hardware found in the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    /// Label set to `nvidia` when an NVIDIA device is present (plus `<key>.count`).
    #[serde(default = "default_gpu_label")]
    pub gpu_label: String,
    /// Label set to `avx512` when `/proc/cpuinfo` shows `avx512f`.
    #[serde(default = "default_cpu_label")]
    pub cpu_label: String,
}

impl Default for Detect {
    fn default() -> Self {
        Self {
            gpu_label: default_gpu_label(),
            cpu_label: default_cpu_label(),
        }
    }
}

fn default_gpu_label() -> String {
    "special.gpu".to_owned()
}
fn default_cpu_label() -> String {
    "special.cpu".to_owned()
}

/// Offline sources for air-gapped installs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Airgap {
    /// Local k3s binary used instead of the GitHub release.
    #[serde(default)]
    pub k3s_binary: Option<String>,
    /// Required with `k3s_binary`.
    #[serde(default)]
    pub k3s_sha256: Option<String>,
    /// Optional `k3s-airgap-images-amd64.tar.zst`.
    #[serde(default)]
    pub images: Option<String>,
    #[serde(default)]
    pub images_sha256: Option<String>,
    /// An apt source line for packages (e.g. a local mirror) used instead of the distribution's.
    #[serde(default)]
    pub apt_source: Option<String>,
}
