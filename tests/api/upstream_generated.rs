//! Whatever an upstream answers: a seeded generator writes raw HTTP answers (every status class,
//! garbage status lines, missing, duplicated and contradictory headers, empty, short, long,
//! truncated and never-ending bodies, redirect chains, 304s, bad `Content-Length`, chunked and
//! compressed bodies) from a TCP server on loopback, and every case must end the same way: a
//! bounded number of upstream requests, an image from `/avatar`, and a live process.
//!
//! `AVATAR_TEST_SEED` and `AVATAR_TEST_CASES` replay or widen a run; a failure prints the seed,
//! the case and the answers it was given.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// Upstream requests one avatar may cause: the first request and `MAX_REDIRECTS` hops.
const MAX_REQUESTS_PER_FETCH: usize = 1 + avatar_proxy::upstream::fetch::MAX_REDIRECTS;
/// The byte cap the app runs with in this test.
const CAP: usize = 256 * 1024;

/// How an answer ends after its head and body bytes.
#[derive(Clone, Debug)]
enum Tail {
    /// Close the connection.
    Close,
    /// Keep it open and say nothing more.
    Stall,
    /// Keep sending bytes until the client goes away.
    Endless,
}

#[derive(Clone)]
struct Answer {
    bytes: Vec<u8>,
    tail: Tail,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.bytes[..self.bytes.len().min(400)];
        write!(
            f,
            "{:?} ({} bytes) then {:?}",
            String::from_utf8_lossy(shown),
            self.bytes.len(),
            self.tail
        )
    }
}

/// Answers per case: the request for step `k` gets answer `k` (the last one beyond).
type Plans = Arc<Mutex<HashMap<u32, Vec<Answer>>>>;

/// A raw TCP server playing whatever upstream the plan says.
struct RawUpstream {
    addr: SocketAddr,
    plans: Plans,
    hits: Arc<Mutex<HashMap<u32, usize>>>,
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let plans: Plans = Arc::default();
        let hits: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
        let (p, h) = (plans.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, p.clone(), h.clone()));
            }
        });
        Self { addr, plans, hits }
    }

    fn hits(&self, case: u32) -> usize {
        *self.hits.lock().expect("lock").get(&case).unwrap_or(&0)
    }
}

/// Read one request head, find its case and step, write the planned answer.
async fn answer(
    mut socket: tokio::net::TcpStream,
    plans: Plans,
    hits: Arc<Mutex<HashMap<u32, usize>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let mut parts = path.trim_start_matches('/').split('/');
    let (Some("case"), Some(case), step) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(case) = case.parse::<u32>() else {
        return;
    };
    let step: usize = step
        .and_then(|s| {
            s.trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or(0);
    *hits.lock().expect("lock").entry(case).or_default() += 1;
    let planned = plans
        .lock()
        .expect("lock")
        .get(&case)
        .and_then(|p| p.get(step).or(p.last()).cloned());
    let Some(planned) = planned else {
        return;
    };
    if socket.write_all(&planned.bytes).await.is_err() {
        return;
    }
    match planned.tail {
        Tail::Close => {
            let _ = socket.shutdown().await;
        }
        Tail::Stall => {
            // Say nothing; the client's timeout ends it (or the test does).
            let _ = socket.read(&mut buf).await;
        }
        Tail::Endless => {
            let chunk = vec![0u8; 16 * 1024];
            while socket.write_all(&chunk).await.is_ok() {}
        }
    }
}

fn jpeg_bytes(rng: &mut StdRng) -> Vec<u8> {
    let side = rng.random_range(8..64);
    let c = [rng.random(), rng.random(), rng.random()];
    jpeg(c, side).to_vec()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// A number in `0..n`; the last one (each match's ordinary arm) when the answer is sane.
fn roll(rng: &mut StdRng, sane: bool, n: u32) -> u32 {
    if sane { n - 1 } else { rng.random_range(0..n) }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// One generated answer for `step` of `case`.
fn generate(rng: &mut StdRng, addr: SocketAddr, case: u32, step: usize) -> Answer {
    const CODES: &[u16] = &[
        100, 103, 199, 200, 200, 200, 200, 201, 203, 204, 206, 299, 300, 301, 302, 302, 303, 304,
        304, 307, 308, 399, 400, 401, 403, 404, 410, 418, 429, 451, 499, 500, 502, 503, 504, 599,
    ];
    // A quarter of the answers are sane (a 200 with an image) unless a rare fault strikes, so
    // the run covers success as well as every way to fail.
    let sane = rng.random_bool(0.25);
    let mut out = Vec::new();
    let mut code = if sane { 200 } else { *pick(rng, CODES) };
    if (100..200).contains(&code) {
        // An informational answer first, then (usually) the real one.
        out.extend_from_slice(format!("HTTP/1.1 {code} Info\r\n\r\n").as_bytes());
        if rng.random_bool(0.8) {
            code = *pick(rng, &CODES[3..]);
        } else {
            return Answer {
                bytes: out,
                tail: if rng.random_bool(0.5) {
                    Tail::Close
                } else {
                    Tail::Stall
                },
            };
        }
    }
    match roll(rng, sane, 24) {
        0 => out.extend_from_slice(b"HTTP/1.1 abc Bogus\r\n"),
        1 => out.extend_from_slice(b"garbage\r\n"),
        2 => out.extend_from_slice(b"HTTP/1.1 2000 Huge\r\n"),
        3 => {} // no status line at all
        4 => {
            let junk: Vec<u8> = (0..rng.random_range(1..40)).map(|_| rng.random()).collect();
            out.extend_from_slice(&junk);
            out.extend_from_slice(b"\r\n");
        }
        5 => out.extend_from_slice(format!("HTTP/1.0 {code} Old\r\n").as_bytes()),
        _ => out.extend_from_slice(format!("HTTP/1.1 {code} Whatever\r\n").as_bytes()),
    }

    // The body first: headers may describe it truthfully or not.
    let image = jpeg_bytes(rng);
    let mut tail = Tail::Close;
    let mut body: Vec<u8> = match roll(rng, sane, 12) {
        0 => Vec::new(),
        1 => (0..rng.random_range(1..100))
            .map(|_| rng.random())
            .collect(),
        2 => image[..image.len() / 2].to_vec(),
        3 => b"<!DOCTYPE html><html><body>Sign in</body></html>".to_vec(),
        4 => {
            let mut long = image.clone();
            long.resize(CAP + rng.random_range(1..CAP), 7);
            long
        }
        5 => {
            tail = Tail::Endless;
            image.clone()
        }
        6 => {
            tail = Tail::Stall;
            image[..image.len() / 3].to_vec()
        }
        7 => {
            let mut png = png_header(rng.random_range(1..100_000), rng.random_range(1..100_000));
            png.truncate(rng.random_range(8..png.len()));
            png
        }
        _ => image.clone(),
    };
    // Raw bytes: a header may hold anything.
    let mut headers: Vec<Vec<u8>> = Vec::new();
    match roll(rng, sane, 8) {
        0 => {}
        1 => headers.push("Content-Type: text/html".into()),
        2 => {
            headers.push("Content-Type: image/jpeg".into());
            headers.push("Content-Type: text/html".into());
        }
        3 => headers.push("Content-Type: application/octet-stream".into()),
        4 => headers.push("Content-Type: image/png; charset=\u{00e9}".into()),
        _ => headers.push("Content-Type: image/jpeg".into()),
    }
    match roll(rng, sane, 6) {
        0 => {
            body = gzip(&body);
            headers.push("Content-Encoding: gzip".into());
        }
        1 => headers.push(
            (*pick(
                rng,
                &[
                    "Content-Encoding: gzip",
                    "Content-Encoding: br",
                    "Content-Encoding: deflate",
                    "Content-Encoding: compress",
                    "Content-Encoding: gzip, br",
                ],
            ))
            .into(),
        ),
        _ => {}
    }
    let chunked = !sane && rng.random_bool(0.15);
    if chunked {
        headers.push("Transfer-Encoding: chunked".into());
        let mut framed = Vec::new();
        for piece in body.chunks(rng.random_range(1..8192)) {
            framed.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            framed.extend_from_slice(piece);
            framed.extend_from_slice(b"\r\n");
        }
        if rng.random_bool(0.8) {
            framed.extend_from_slice(b"0\r\n\r\n");
        } else {
            framed.extend_from_slice(b"zz\r\n");
        }
        body = framed;
    }
    let len = body.len();
    match roll(rng, sane, 9) {
        0 => {}
        1 => headers.push(format!("Content-Length: {}", len + rng.random_range(1..1000)).into()),
        2 => headers.push(
            format!(
                "Content-Length: {}",
                len.saturating_sub(rng.random_range(1..50))
            )
            .into(),
        ),
        3 => headers.push("Content-Length: abc".into()),
        4 => headers.push("Content-Length: -1".into()),
        5 => {
            headers.push(format!("Content-Length: {len}").into());
            headers.push(format!("Content-Length: {}", len + 5).into());
        }
        6 => headers.push("Content-Length: 99999999999999999999999".into()),
        _ => headers.push(format!("Content-Length: {len}").into()),
    }
    if (300..400).contains(&code) || rng.random_bool(0.1) {
        let next = step + 1;
        let raw: Vec<u8> = match rng.random_range(0..10) {
            0 => format!("http://{addr}/case/{case}/0").into_bytes(),
            1 => b"http://127.0.0.2:9/elsewhere".to_vec(),
            2 => Vec::new(),
            3 => b"http://[::1".to_vec(),
            4 => format!("/case/{case}/\u{00fc}{next}").into_bytes(),
            5 => [
                format!("/case/{case}/").as_bytes(),
                b"\xff",
                next.to_string().as_bytes(),
            ]
            .concat(),
            6 => b"https://login.example.com/signin?returnUrl=/x".to_vec(),
            7 => format!("//{addr}/case/{case}/{next}").into_bytes(),
            _ => format!("http://{addr}/case/{case}/{next}").into_bytes(),
        };
        headers.push([b"Location: ".as_slice(), &raw].concat());
        if rng.random_bool(0.1) {
            headers.push(format!("Location: /case/{case}/{}", next + 1).into());
        }
    }
    if matches!(code, 429 | 503) || rng.random_bool(0.05) {
        let after = *pick(
            rng,
            &[
                "0",
                "1",
                "120",
                "99999999999999",
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "soon",
                "-3",
            ],
        );
        headers.push(format!("Retry-After: {after}").into());
    }
    if rng.random_bool(0.3) {
        headers.push("ETag: \"v1\"".into());
    }
    if rng.random_bool(0.2) {
        headers.push("Last-Modified: not a date".into());
    }
    if rng.random_bool(0.05) {
        headers.push(format!("X-Long: {}", "a".repeat(rng.random_range(1000..70_000))).into());
    }
    for h in headers {
        out.extend_from_slice(&h);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !sane && rng.random_bool(0.05) {
        // Headers that never finish.
        out.truncate(out.len() - 2);
        return Answer {
            bytes: out,
            tail: Tail::Stall,
        };
    }
    out.extend_from_slice(&body);
    Answer { bytes: out, tail }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn whatever_an_upstream_answers_one_get_makes_bounded_requests_and_gets_an_image() {
    let seed = env_number("AVATAR_TEST_SEED", 0x0005_eed7);
    let cases = u32::try_from(env_number("AVATAR_TEST_CASES", 300)).unwrap_or(300);
    let upstream = RawUpstream::start().await;
    let mut env = public_upstream_env("RAW", upstream.addr);
    env.push(("AVATAR_UPSTREAM_TIMEOUT", "250ms".into()));
    env.push(("AVATAR_UPSTREAM_CONNECT_TIMEOUT", "250ms".into()));
    env.push(("AVATAR_MAX_IMAGE_BYTES", CAP.to_string()));
    env.push(("AVATAR_REQUEST_TIMEOUT", "5s".into()));
    let app = spawn_app(&env).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sources: HashMap<String, u32> = HashMap::new();
    for case in 0..cases {
        let plan: Vec<Answer> = (0..=MAX_REQUESTS_PER_FETCH)
            .map(|step| generate(&mut rng, upstream.addr, case, step))
            .collect();
        upstream
            .plans
            .lock()
            .expect("lock")
            .insert(case, plan.clone());
        let context = || format!("seed {seed:#x}, case {case}: {plan:#?}");
        let key = app
            .register(
                &format!("case{case}"),
                &format!("http://{}/case/{case}/0", upstream.addr),
            )
            .await;
        for size in [64, 32] {
            let r = app.get(&format!("/avatar/{key}?s={size}")).await;
            assert_eq!(r.status(), 200, "{}", context());
            let content_type = header_of(&r, "content-type");
            assert!(
                content_type.starts_with("image/"),
                "{content_type}: {}",
                context()
            );
            *sources.entry(header_of(&r, "x-avatar-source")).or_default() += 1;
            let body = r.bytes().await.expect("body");
            let (_, w, _) = centre(&body);
            assert_eq!(w, size, "{}", context());
        }
        assert!(
            upstream.hits(case) <= MAX_REQUESTS_PER_FETCH,
            "{} requests: {}",
            upstream.hits(case),
            context()
        );
        // Every backoff ends before the next case: each case meets a rested upstream.
        app.clock.advance(Duration::from_secs(3600));
    }
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200, "the process is alive");
    // The generator reaches both ends: usable images and faults.
    let upstream_images = sources.get("upstream").copied().unwrap_or(0);
    let defaults = sources.get("default").copied().unwrap_or(0);
    assert!(
        upstream_images >= cases / 20 && defaults >= cases / 2,
        "seed {seed:#x}: {sources:?}"
    );
}
