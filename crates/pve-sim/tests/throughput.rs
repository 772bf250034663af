//! Measures the simulator's overhead on loopback (requests per second over HTTPS, keep-alive),
//! so the closing note can quote it. Bounded loosely so that it still fails if a request
//! suddenly costs tens of milliseconds.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::time::Instant;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_second_on_loopback() {
    let sim = start("pve-cluster-4").await;
    sim.get("/version").await; // warm up the connection
    let count = 400;
    let started = Instant::now();
    for _ in 0..count {
        sim.get("/nodes/pve1/status").await;
    }
    let sequential = f64::from(count) / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..8 {
        let http = sim.http.clone();
        let url = sim.url(&format!("/nodes/pve{}/qemu", worker % 4 + 1));
        let auth = sim.auth.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..100 {
                let response = http
                    .get(&url)
                    .header("Authorization", &auth)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let parallel = 800.0 / started.elapsed().as_secs_f64();
    eprintln!(
        "simulator throughput: {sequential:.0} req/s sequential, {parallel:.0} req/s with 8 clients"
    );
    assert!(sequential > 50.0, "{sequential:.0} req/s");
    sim.handle.shutdown().await;
}

/// A scale run's shape: 200 VMs created and started across the 4-node cluster, in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_vms_on_the_four_node_cluster() {
    let sim = std::sync::Arc::new(start("pve-cluster-4").await);
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..8u32 {
        let sim = sim.clone();
        handles.push(tokio::spawn(async move {
            for index in 0..25u32 {
                let vmid = (1000 + worker * 25 + index).to_string();
                let node = format!("pve{}", worker % 4 + 1);
                let ip = format!("ip=10.1.{}.{}/16", worker, index + 10);
                sim.task_ok(
                    "POST",
                    &format!("/nodes/{node}/qemu"),
                    &[
                        ("vmid", &vmid),
                        ("memory", "8192"),
                        ("cores", "2"),
                        ("scsi0", "local-lvm:20"),
                        ("net0", "virtio,bridge=vmbr0"),
                        ("ipconfig0", &ip),
                        ("agent", "1"),
                    ],
                )
                .await;
                sim.task_ok(
                    "POST",
                    &format!("/nodes/{node}/qemu/{vmid}/status/start"),
                    &[],
                )
                .await;
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let vms = sim.get("/cluster/resources?type=vm").await;
    let running = vms
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| vm["status"] == "running")
        .count();
    assert_eq!(running, 200);
    eprintln!("200 VMs created and started in {:?}", started.elapsed());
}
