//! What a client can make the server hold: slow headers, idle connections, connection count,
//! and streams at shutdown. Time is paused (tokio's test clock) once the app runs, so the
//! timeouts pass without waiting for them.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Read until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    out
}

#[tokio::test]
async fn a_client_trickling_headers_is_closed_at_the_header_read_timeout() {
    let app = spawn_app(&[("AVATAR_HEADER_READ_TIMEOUT", "10s".into())]).await;
    let mut stream = TcpStream::connect(address(&app)).await.expect("connect");
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: avatar\r\nX-Slow: ")
        .await
        .expect("write");
    let closed = tokio::time::timeout(Duration::from_secs(120), read_to_close(&mut stream)).await;
    assert!(closed.is_ok(), "the connection was still open after 120 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(60),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_closed_at_the_header_read_timeout() {
    let app = spawn_app(&[("AVATAR_HEADER_READ_TIMEOUT", "10s".into())]).await;
    let mut silent = TcpStream::connect(address(&app)).await.expect("connect");
    // The start of the HTTP/2 preface, then nothing: a protocol sniff would wait for ever.
    let mut half_preface = TcpStream::connect(address(&app)).await.expect("connect");
    half_preface.write_all(b"PRI * HT").await.expect("write");
    tokio::time::pause();
    for stream in [&mut silent, &mut half_preface] {
        let closed = tokio::time::timeout(Duration::from_secs(120), read_to_close(stream)).await;
        assert!(
            closed.is_ok(),
            "a connection that said nothing stayed open for 120 s"
        );
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_same_timeout() {
    let app = spawn_app(&[("AVATAR_HEADER_READ_TIMEOUT", "10s".into())]).await;
    let mut stream = TcpStream::connect(address(&app)).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: avatar\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.expect("answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    tokio::time::pause();
    let closed = tokio::time::timeout(Duration::from_secs(120), read_to_close(&mut stream)).await;
    assert!(closed.is_ok(), "an idle connection stayed open for 120 s");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let app = spawn_app(&[
        ("AVATAR_MAX_CONNECTIONS", "2".into()),
        ("AVATAR_HEADER_READ_TIMEOUT", "600s".into()),
    ])
    .await;
    let idle_one = TcpStream::connect(address(&app)).await.expect("connect");
    let _idle_two = TcpStream::connect(address(&app)).await.expect("connect");
    let mut third = TcpStream::connect(address(&app)).await.expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: avatar\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    tokio::time::pause();
    let mut head = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_secs(30), third.read_exact(&mut head)).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond the cap of 2"
    );
    drop(idle_one);
    tokio::time::timeout(Duration::from_secs(30), third.read_exact(&mut head))
        .await
        .expect("served once a slot was free")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 200");
}

#[tokio::test]
async fn shutdown_completes_within_its_deadline_while_an_event_stream_is_open() {
    let app = spawn_app(&[
        ("AVATAR_JWT_SECRET", crate::upload_flows::JWT_SECRET.into()),
        ("AVATAR_SHUTDOWN_TIMEOUT", "10s".into()),
    ])
    .await;
    let events = app
        .client
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(crate::upload_flows::token("streaming", 600))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sent");
    assert_eq!(events.status(), 200);
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(300), app.stop()).await;
    assert!(
        stopped.is_ok(),
        "an open event stream kept the server alive"
    );
    assert!(
        started.elapsed() <= Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(events);
}
