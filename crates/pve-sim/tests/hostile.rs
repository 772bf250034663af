//! Hostile requests: an anonymous client cannot make the simulator read or parse a body,
//! multipart boundaries follow RFC 2046's 70-character limit, and bodies are capped.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// A 2 MiB multipart upload: what used to cost seconds of CPU before authentication.
fn big_upload(boundary: &str) -> Vec<u8> {
    multipart_body(
        boundary,
        &[("content", "iso")],
        "big.iso",
        &vec![b'-'; 2 << 20],
    )
}

#[tokio::test]
async fn unauthenticated_uploads_are_refused_before_the_body_is_read() {
    let sim = start("pve-ci").await;
    let boundary = "x".repeat(70);
    let answer = sim
        .post_multipart("", &boundary, big_upload(&boundary))
        .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    let wrong = "PVEAPIToken=provision@pve!ci=00000000-0000-0000-0000-000000000000";
    let answer = sim
        .post_multipart(wrong, &boundary, big_upload(&boundary))
        .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(sim.handle.request_body_bytes(), 0);

    // The same upload, authenticated, is read (and accepted).
    let body = multipart_body(&boundary, &[("content", "iso")], "small.iso", b"data");
    let length = body.len() as u64;
    let answer = sim.post_multipart(&sim.auth, &boundary, body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(sim.handle.request_body_bytes(), length);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn a_boundary_longer_than_70_characters_is_refused() {
    let sim = start("pve-ci").await;
    let long = "b".repeat(71);
    let body = multipart_body(&long, &[("content", "iso")], "seed.iso", b"data");
    let answer = sim.post_multipart(&sim.auth, &long, body).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body["errors"]["body"]
            .as_str()
            .unwrap()
            .contains("boundary")
    );
    let answer = sim.post_multipart(&sim.auth, "", b"--\r\n".to_vec()).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn a_parameter_body_over_one_mebibyte_is_refused() {
    let sim = start("pve-ci").await;
    let comment = "c".repeat((1 << 20) + 1);
    let answer = sim
        .call("POST", "/pools", &[("poolid", "p1"), ("comment", &comment)])
        .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(
        sim.call("GET", "/pools", &[])
            .await
            .ok()
            .as_array()
            .unwrap()
            .is_empty()
    );
    sim.handle.shutdown().await;
}
