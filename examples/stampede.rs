//! Cold stampede client for `benches/load.sh`: N concurrent GETs of one uncached avatar URL,
//! released together, each timed on its own.
//!
//! Usage: `cargo run --release --example stampede -- URL [N]` (N defaults to 200).
//! Prints one `key=value` line: `requests ok statuses min_ms p50_ms max_ms`, where `statuses`
//! counts the `x-cache` values seen (`miss:200` when every waiter shared the one fetch).
//!
//! Connections are opened (and kept alive) before the stampede, with a round of `/healthz`
//! requests, so the figures measure waiting on the shared fetch and render, not 200 TCP
//! handshakes. The client runs on one thread, so it takes one core from the server at most.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: stampede URL [N]");
        std::process::exit(2);
    };
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut health = url::Url::parse(&url).expect("a valid URL");
    health.set_path("/healthz");
    health.set_query(None);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");

    // Open n keep-alive connections first: n concurrent requests need n connections.
    let warm: Vec<_> = (0..n)
        .map(|_| {
            let (client, health) = (client.clone(), health.clone());
            tokio::spawn(async move {
                let r = client.get(health).send().await.expect("healthz");
                let _ = r.bytes().await;
            })
        })
        .collect();
    for w in warm {
        w.await.expect("warm-up task");
    }

    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, barrier) = (client.clone(), url.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let response = client.get(&url).send().await.expect("request sent");
                let ok = response.status() == 200;
                let cache = response
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                let _ = response.bytes().await.expect("body read");
                (started.elapsed(), ok, cache)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut ok = 0;
    for t in tasks {
        let (elapsed, was_ok, cache) = t.await.expect("request task");
        latencies.push(elapsed);
        ok += usize::from(was_ok);
        *statuses.entry(cache).or_default() += 1;
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "requests={n} ok={ok} statuses={} min_ms={:.1} p50_ms={:.1} max_ms={:.1}",
        statuses.join(","),
        ms(latencies[0]),
        ms(latencies[n / 2]),
        ms(latencies[n - 1]),
    );
}
