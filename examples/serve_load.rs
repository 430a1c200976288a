//! A bounded load generator for `idx-softmax serve` (perf/serve_load.py
//! runs it; the numbers are in perf/README.md).
//!
//! `cargo run --release --example serve_load -- ADDR MODEL [--clients 64]
//! [--requests 20000] [--rows 1] [--warmup 1000]`
//!
//! Each of `--clients` clients keeps one HTTP/1.1 connection open and sends
//! `POST /v2/models/MODEL/infer` requests one after the other, until
//! `--requests` have been answered in all (after `--warmup` uncounted
//! ones). A request holds `--rows` MNIST test images, as tritonclient
//! sends them (JSON, FP32 values u8/255 written as Python writes a float32
//! widened to a double: `0.0`, `0.9921568632125854`), cycling through the
//! test set. Every answer must be a 200 whose `probabilities` have the
//! right shape; anything else counts as an error.
//!
//! The clients are tasks on ONE thread (a current-thread tokio runtime),
//! so that the generator takes at most one of the machine's cores from
//! the server, and formats nothing while it runs (the request bodies are
//! made beforehand). Prints one JSON object: requests, errors, seconds,
//! throughput, latency percentiles in milliseconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use idx_softmax::data::{GzCache, LoadOptions};

struct Options {
    addr: String,
    model: String,
    clients: usize,
    requests: usize,
    rows: usize,
    warmup: usize,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or(
        "usage: serve_load ADDR MODEL [--clients N] [--requests N] [--rows N] [--warmup N]",
    )?;
    let model = args.next().ok_or("MODEL is missing")?;
    let mut o = Options {
        addr: addr.trim_start_matches("http://").to_owned(),
        model,
        clients: 64,
        requests: 20_000,
        rows: 1,
        warmup: 1000,
    };
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a whole number"))?;
        match flag.as_str() {
            "--clients" => o.clients = value.max(1),
            "--requests" => o.requests = value,
            "--rows" => o.rows = value.max(1),
            "--warmup" => o.warmup = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(o)
}

/// Request bodies: `rows` test images each, 64 different bodies.
fn bodies(rows: usize) -> Result<Vec<Vec<u8>>, String> {
    let dir = idx_softmax::data::default_data_dir();
    let data = idx_softmax::data::Dataset::load(
        &dir,
        &LoadOptions {
            cache: GzCache::default_dirs(),
            classes: None,
        },
    )
    .map_err(|e| e.to_string())?;
    let images = &data.test.images;
    let px = images.as_u8().ok_or("the test images are not u8")?;
    let k = images.features();
    let n = px.len() / k;
    let value = |p: u8| -> String {
        if p == 0 {
            "0.0".to_owned()
        } else {
            format!("{:?}", f64::from(f32::from(p) / 255.0))
        }
    };
    Ok((0..64)
        .map(|b| {
            let data: Vec<String> = (0..rows)
                .flat_map(|r| {
                    let i = (b * rows + r) % n;
                    px[i * k..(i + 1) * k].iter().map(|&p| value(p))
                })
                .collect();
            format!(
                r#"{{"inputs": [{{"name": "input", "shape": [{rows}, {k}], "datatype": "FP32", "data": [{}]}}], "outputs": [{{"name": "probabilities", "parameters": {{"binary_data": false}}}}]}}"#,
                data.join(", ")
            )
            .into_bytes()
        })
        .collect())
}

/// Reads one answer: its status and body.
async fn answer(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    buf.clear();
    let mut chunk = [0u8; 16 << 10];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[head_end..head_end + length].to_vec()))
}

struct Counts {
    next: AtomicUsize,
    errors: AtomicUsize,
}

/// One client's measured requests: (start, end) of each.
async fn client(
    o: Arc<Options>,
    bodies: Arc<Vec<Vec<u8>>>,
    counts: Arc<Counts>,
) -> (Vec<(Instant, Instant)>, Option<String>) {
    let total = o.warmup + o.requests;
    let mut timed = Vec::new();
    let mut first_error = None;
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    let path = format!("/v2/models/{}/infer", o.model);
    let want = format!("\"shape\":[{},", o.rows);
    loop {
        let i = counts.next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return (timed, first_error);
        }
        let body = &bodies[i % bodies.len()];
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            o.addr,
            body.len()
        );
        let start = Instant::now();
        let result = async {
            if conn.is_none() {
                let c = TcpStream::connect(&o.addr).await?;
                c.set_nodelay(true)?;
                conn = Some(c);
            }
            let c = conn.as_mut().ok_or(std::io::ErrorKind::NotConnected)?;
            c.write_all(head.as_bytes()).await?;
            c.write_all(body).await?;
            answer(c, &mut buf).await
        }
        .await;
        let end = Instant::now();
        let ok = match &result {
            Ok((200, b)) => {
                let text = String::from_utf8_lossy(b);
                text.contains("\"probabilities\"") && text.contains(&want)
            }
            _ => false,
        };
        if !ok {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            if first_error.is_none() {
                first_error = Some(match result {
                    Ok((s, b)) => format!("{s}: {}", String::from_utf8_lossy(&b)),
                    Err(e) => e.to_string(),
                });
            }
            conn = None;
        }
        if i >= o.warmup {
            timed.push((start, end));
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let o = match options() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let bodies = match bodies(o.rows) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let counts = Arc::new(Counts {
        next: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
    });
    let (timed, first_error) = runtime.block_on(async {
        let tasks: Vec<_> = (0..o.clients)
            .map(|_| tokio::spawn(client(o.clone(), bodies.clone(), counts.clone())))
            .collect();
        let mut all = Vec::new();
        let mut first = None;
        for t in tasks {
            match t.await {
                Ok((timed, err)) => {
                    all.extend(timed);
                    first = first.or(err);
                }
                Err(e) => first = first.or(Some(e.to_string())),
            }
        }
        (all, first)
    });
    let begin = timed.iter().map(|t| t.0).min();
    let end = timed.iter().map(|t| t.1).max();
    let seconds = match (begin, end) {
        (Some(b), Some(e)) => (e - b).as_secs_f64(),
        _ => f64::NAN,
    };
    let mut ms: Vec<f64> = timed
        .iter()
        .map(|(s, e)| (*e - *s).as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let summary = serde_json::json!({
        "clients": o.clients,
        "rows": o.rows,
        "warmup": o.warmup,
        "requests": ms.len(),
        "errors": counts.errors.load(Ordering::Relaxed),
        "first_error": first_error,
        "request_bytes": bodies[0].len(),
        "seconds": seconds,
        "requests_per_second": ms.len() as f64 / seconds,
        "samples_per_second": (ms.len() * o.rows) as f64 / seconds,
        "latency_ms": {
            "mean": ms.iter().sum::<f64>() / ms.len().max(1) as f64,
            "p50": percentile(&ms, 0.50),
            "p90": percentile(&ms, 0.90),
            "p99": percentile(&ms, 0.99),
            "p999": percentile(&ms, 0.999),
            "max": ms.last().copied().unwrap_or(f64::NAN),
        },
    });
    println!("{summary}");
}
