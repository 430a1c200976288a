//! `idx-softmax serve` end to end: the real binary on port 0, driven by a
//! plain HTTP/1.1 client over `TcpStream`. Every endpoint, every class of
//! bad request (the server answers each with one JSON line and keeps
//! serving), batching, the queue limit, the body limit, the start-up
//! failures, and SIGTERM finishing the request in flight.
//!
//! The models are written here: random networks saved as safetensors (a
//! file from another tool, to the server: no run record), so no training
//! runs. A slow one (784-2048-2048-10) makes a request of 4000 samples
//! last long enough to signal the server, or fill its queue, meanwhile.
#![cfg(feature = "serve")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use idx_softmax::image::{self, GrayImage};
use idx_softmax::model::SavedModel;
use idx_softmax::nn::Network;

const FEATURES: usize = 784;
const CLASSES: usize = 10;

/// A random network of `sizes`, saved as `dir/name.safetensors`.
fn model(dir: &Path, name: &str, sizes: &[usize], seed: u64) -> PathBuf {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let net = Network::init(sizes, &mut rng).unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    idx_softmax::checkpoint::save(&path, &net, &[], &BTreeMap::new()).unwrap();
    path
}

/// An answer: status, headers (lower-case names), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `error` of a JSON error answer: one line.
    fn error(&self) -> String {
        assert_eq!(
            self.headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{self:?}"
        );
        let e = self.json()["error"].as_str().unwrap().to_owned();
        assert!(!e.contains('\n') && !e.is_empty(), "{e}");
        e
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
/// `raw_head` replaces the request line and headers when given.
fn send(addr: &str, head: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before it has read it all.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "{e}");
    }
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    send(addr, &head, body)
}

/// A server process.
struct Serve {
    child: Child,
    addr: String,
    first_line: String,
    log: Arc<Mutex<String>>,
    log_thread: Option<std::thread::JoinHandle<()>>,
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idx-softmax"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("IDX_SOFTMAX_") {
            c.env_remove(k);
        }
    }
    c
}

impl Serve {
    fn start(model: &Path, extra: &[&str]) -> Self {
        Self::start_in(model, extra, None)
    }

    fn start_in(model: &Path, extra: &[&str], cwd: Option<&Path>) -> Self {
        let mut cmd = bin();
        cmd.args(["serve", "--model"])
            .arg(model)
            .args(["--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(d) = cwd {
            cmd.current_dir(d)
                .env("HOME", d)
                .env("TMPDIR", d)
                .env("XDG_CACHE_HOME", d);
        }
        let mut child = cmd.spawn().unwrap();
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let log_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = first_line
            .trim()
            .rsplit_once("http://")
            .unwrap_or_else(|| panic!("first line: {first_line:?}; {}", log.lock().unwrap()))
            .1
            .to_owned();
        Self {
            child,
            addr,
            first_line,
            log,
            log_thread: Some(log_thread),
        }
    }

    fn get(&self, path: &str) -> Reply {
        request(&self.addr, "GET", path, &[], b"")
    }

    fn post(&self, path: &str, body: &[u8]) -> Reply {
        request(&self.addr, "POST", path, &[], body)
    }

    fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200);
        r.text()
    }

    /// Waits (60 s at most) until the gauge `name` reads `value`.
    fn wait_for(&self, name: &str, value: f64) {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            if metric(&m, name) == value {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name} never {value}:\n{m}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: `kill` with the pid of a child we started and have not
        // reaped; it touches no memory of ours.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0);
    }

    /// Sends `sig` and waits for the exit (at most 60 s); returns the
    /// status and everything logged on stderr.
    fn stop(mut self, sig: libc::c_int) -> (ExitStatus, String) {
        self.signal(sig);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(t) = self.log_thread.take() {
            t.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A value of a metrics line `name` (with its labels), 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

fn infer_body(rows: usize, x: &[f32]) -> Vec<u8> {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, FEATURES], "data": x}]})
        .to_string()
        .into_bytes()
}

fn random_rows(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..rows * FEATURES)
        .map(|_| f32::from(rng.random::<u8>()) / 255.0)
        .collect()
}

#[test]
fn every_endpoint_answers_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = model(dir.path(), "digits", &[FEATURES, 16, CLASSES], 1);
    let cwd = tempfile::tempdir().unwrap();
    let s = Serve::start_in(&path, &[], Some(cwd.path()));
    assert!(
        s.first_line.starts_with(&format!(
            "serving {} as digits on http://127.0.0.1:",
            path.display()
        )),
        "{}",
        s.first_line
    );

    let meta = s.get("/v2");
    assert_eq!(meta.status, 200);
    assert_eq!(meta.json()["name"], "idx-softmax");
    for p in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/digits/ready",
        "/v2/models/digits/versions/1/ready",
    ] {
        assert_eq!(s.get(p).status, 200, "{p}");
    }
    let m = s.get("/v2/models/digits").json();
    assert_eq!(m["name"], "digits");
    assert_eq!(
        m["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 784]}])
    );
    assert_eq!(
        m["outputs"][0],
        json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]})
    );
    assert_eq!(m["outputs"][1]["name"], "logits");
    assert_eq!(s.get("/v2/models/digits/versions/1").json(), m);

    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    for id in ["pad", "prediction", "clear"] {
        assert!(page.text().contains(&format!("id=\"{id}\"")), "{id}");
    }

    let x = random_rows(1, 3);
    assert_eq!(
        s.post("/v2/models/digits/infer", &infer_body(1, &x)).status,
        200
    );
    let metrics = s.metrics();
    assert!(s.get("/metrics").headers["content-type"].starts_with("text/plain; version=0.0.4"));
    for (line, want) in [
        (
            "idx_softmax_requests_total{endpoint=\"/v2\",status=\"200\"}",
            1.0,
        ),
        (
            "idx_softmax_requests_total{endpoint=\"/v2/models/{name}\",status=\"200\"}",
            1.0,
        ),
        (
            "idx_softmax_requests_total{endpoint=\"/v2/models/{name}/infer\",status=\"200\"}",
            1.0,
        ),
        (
            "idx_softmax_requests_total{endpoint=\"/\",status=\"200\"}",
            1.0,
        ),
        (
            "idx_softmax_request_duration_seconds_count{endpoint=\"/v2/models/{name}/infer\"}",
            1.0,
        ),
        ("idx_softmax_batch_rows_count", 1.0),
        ("idx_softmax_batch_rows_sum", 1.0),
    ] {
        assert_eq!(metric(&metrics, line), want, "{line}\n{metrics}");
    }

    let (status, log) = s.stop(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("received SIGINT"), "{log}");
    // One line per request: method, path, status, latency, batch.
    let line = log
        .lines()
        .find(|l| l.starts_with("POST /v2/models/digits/infer 200 "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.ends_with("ms batch=1"), "{line}");
    assert!(log.lines().any(|l| l.starts_with("GET /v2 200 ")), "{log}");
    // serve writes nothing: not in its directory, home, cache or temp.
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}

#[test]
fn infer_returns_the_networks_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = model(dir.path(), "mlp", &[FEATURES, 32, CLASSES], 2);
    let net = SavedModel::load(&path).unwrap().network().clone();
    let s = Serve::start(&path, &["--name", "digits"]);
    let rows = 5;
    let x = random_rows(rows, 4);
    let mut want = vec![0.0f32; rows * CLASSES];
    net.forward_f32(
        idx_softmax::kernels::KernelPath::Gemm,
        &x,
        rows,
        &mut Vec::new(),
        &mut want,
    );

    // As tritonclient sends it: no Content-Type, binary outputs asked for
    // (answered as JSON), an id.
    let body = json!({
        "id": "req-7",
        "parameters": {"binary_data_output": true},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, FEATURES], "data": x}],
    });
    let r = s.post("/v2/models/digits/infer", body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["model_name"], "digits");
    assert_eq!(v["id"], "req-7");
    assert_eq!(v["outputs"][0]["name"], "probabilities");
    assert_eq!(v["outputs"][1]["name"], "logits");
    for o in v["outputs"].as_array().unwrap() {
        assert_eq!(o["datatype"], "FP32");
        assert_eq!(o["shape"], json!([rows, CLASSES]));
    }
    let got = |o: usize| -> Vec<f32> {
        v["outputs"][o]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_f64().unwrap() as f32)
            .collect()
    };
    for (a, b) in got(1).iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    let probs: Vec<f32> = want
        .chunks(CLASSES)
        .flat_map(|z| idx_softmax::infer::softmax(z).into_iter().map(|p| p as f32))
        .collect();
    for (a, b) in got(0).iter().zip(&probs) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }

    // Nested data, one output, by the versioned path.
    let nested: Vec<Vec<f32>> = x.chunks(FEATURES).map(<[f32]>::to_vec).collect();
    let body = json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, FEATURES], "data": nested}],
        "outputs": [{"name": "logits"}],
    });
    let r = s.post(
        "/v2/models/digits/versions/1/infer",
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let w = r.json();
    assert_eq!(w["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(w["outputs"][0], v["outputs"][1]);
    assert_eq!(w.get("id"), None);
}

/// A dark digit on a light 100 × 80 page: `predict` inverts, scales and
/// centres it.
fn photo() -> GrayImage {
    let (w, h) = (100, 80);
    let mut pixels = vec![230u8; w * h];
    for y in 15..65 {
        for x in 45..53 {
            pixels[y * w + x] = 20;
        }
    }
    for x in 35..53 {
        pixels[17 * w + x] = 20;
    }
    GrayImage {
        width: w,
        height: h,
        pixels,
    }
}

#[test]
fn predict_answers_what_predict_json_prints() {
    let dir = tempfile::tempdir().unwrap();
    let path = model(dir.path(), "mlp", &[FEATURES, 32, CLASSES], 5);
    let png = dir.path().join("photo.png");
    image::write_gray_png(&png, &photo()).unwrap();
    let seen = dir.path().join("seen");
    let cli = bin()
        .args(["predict", "--model"])
        .arg(&path)
        .args(["--json", "--probs", "--top", "4", "--save-preprocessed"])
        .arg(&seen)
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let mut want: Value = serde_json::from_slice(&cli.stdout).unwrap();

    let s = Serve::start(&path, &[]);
    let bytes = std::fs::read(&png).unwrap();
    let r = s.post("/predict?probs=1&top=4&preprocessed=1", &bytes);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut got = r.json();
    // The picture the model saw is the one predict saved.
    let pixels: Vec<u8> = got["preprocessed"]["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u8)
        .collect();
    let saved = image::read_gray(&seen.join("photo.png")).unwrap();
    assert_eq!(
        (
            got["preprocessed"]["width"].as_u64(),
            got["preprocessed"]["height"].as_u64()
        ),
        (Some(28), Some(28))
    );
    assert_eq!(pixels, saved.pixels);
    // Otherwise the same object, but for what names the input.
    assert_eq!(got["image"], "-");
    for v in [&mut got, &mut want] {
        let o = v.as_object_mut().unwrap();
        o.remove("image");
        o.remove("preprocessed");
        o.remove("preprocessed_png");
    }
    assert_eq!(got, want);
    assert_eq!(want["inverted"], true);
    assert_eq!(want["preprocess"], "mnist");

    // Without parameters: predict's defaults (top 3, no probabilities).
    let plain = s.post("/predict", &bytes).json();
    assert_eq!(plain["top"].as_array().unwrap().len(), 3);
    assert!(plain.get("probabilities").is_none() && plain.get("preprocessed").is_none());
}

/// A valid PNG header claiming 16384 × 16384 pixels, with a token of data.
fn bomb() -> Vec<u8> {
    let mut ihdr = 16384u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&16384u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![0u8; 16385 * 64]).unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(common::png_chunk(b"IHDR", &ihdr));
    png.extend(common::png_chunk(b"IDAT", &z.finish().unwrap()));
    png.extend(common::png_chunk(b"IEND", b""));
    png
}

#[test]
fn bad_requests_get_one_line_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = model(dir.path(), "m", &[FEATURES, 8, CLASSES], 6);
    let mut s = Serve::start(&path, &["--max-body-mib", "1"]);
    let infer = "/v2/models/m/infer";
    let good = infer_body(1, &random_rows(1, 1));
    let tensor = |shape: &str, dtype: &str, data: &str| {
        format!(
            r#"{{"inputs":[{{"name":"input","datatype":"{dtype}","shape":{shape},"data":{data}}}]}}"#
        )
    };
    let zeros = |n: usize| format!("[{}]", vec!["0"; n].join(","));
    let mut png = Vec::new();
    {
        let p = dir.path().join("d.png");
        image::write_gray_png(&p, &photo()).unwrap();
        png.extend(std::fs::read(p).unwrap());
    }
    let big = vec![b' '; (1 << 20) + 10];
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", infer, b"garbage".to_vec(), 400, "not valid JSON"),
        ("POST", infer, good[..good.len() / 2].to_vec(), 400, "not valid JSON"),
        ("POST", infer, b"".to_vec(), 400, "empty"),
        ("POST", infer, b"[1,2,3]".to_vec(), 400, "must be a JSON object"),
        ("POST", infer, vec![0xff, 0xfe, b'{'], 400, "not UTF-8"),
        ("POST", infer, tensor("[1,784]", "FP32", &zeros(783)).into_bytes(), 400, "inputs[0].data: 783 values"),
        ("POST", infer, tensor("[1,100]", "FP32", &zeros(100)).into_bytes(), 400, "inputs[0].shape: must be [n, 784]"),
        ("POST", infer, tensor("[784]", "FP32", &zeros(784)).into_bytes(), 400, "inputs[0].shape"),
        ("POST", infer, tensor("[1,784]", "INT8", &zeros(784)).into_bytes(), 400, "inputs[0].datatype: must be FP32"),
        ("POST", infer, tensor("[1,784]", "FP32", &zeros(784).replacen('0', "\"7\"", 1)).into_bytes(), 400, "inputs[0].data[0]: a string"),
        ("POST", infer, tensor("[1,784]", "FP32", &zeros(784).replacen('0', "1e300", 1)).into_bytes(), 400, "inputs[0].data[0]: 1e300 is beyond the range of FP32"),
        ("POST", infer, tensor("[1,784]", "FP32", &zeros(784).replacen('0', "1e999", 1)).into_bytes(), 400, "inputs[0].data[0]: number out of range"),
        ("POST", infer, tensor("[1,784]", "FP32", &zeros(784).replacen('0', "NaN", 1)).into_bytes(), 400, "not valid JSON"),
        ("POST", infer, tensor("[99999999999,784]", "FP32", &zeros(784)).into_bytes(), 400, "needs 78399999999216"),
        ("POST", infer, big.clone(), 413, "larger than the limit of 1 MiB"),
        ("POST", "/v2/models/other/infer", good.clone(), 404, "unknown model 'other'"),
        ("POST", "/v2/models/m/versions/3/infer", good.clone(), 404, "no version '3'"),
        ("GET", infer, Vec::new(), 405, "GET /v2/models/m/infer: method not allowed"),
        ("DELETE", "/v2", Vec::new(), 405, "method not allowed"),
        ("GET", "/nowhere", Vec::new(), 404, "GET /nowhere: no such endpoint"),
        ("POST", "/predict", b"not an image".to_vec(), 400, "image: an unknown format is not supported"),
        ("POST", "/predict", png[..png.len() / 2].to_vec(), 400, "image: corrupt or truncated PNG"),
        ("POST", "/predict", bomb(), 400, "image: the image is 16384x16384"),
        ("POST", "/predict", Vec::new(), 400, "image: the request body is empty"),
        ("POST", "/predict?preprocess=none", png.clone(), 400, "image: the image is 100x80 pixels, but the model takes 28x28 images (use preprocess mnist"),
        ("POST", "/predict?top=0", png.clone(), 400, "top: '0'"),
        ("POST", "/predict?colour=red", png.clone(), 400, "unknown query parameter 'colour'"),
        ("POST", "/predict", big, 413, "larger than the limit"),
    ];
    for (method, p, body, status, needle) in &cases {
        let r = request(&s.addr, method, p, &[], body);
        assert_eq!(r.status, *status, "{method} {p}: {}", r.text());
        let e = r.error();
        assert!(e.contains(needle), "{method} {p}: {e:?} lacks {needle:?}");
    }
    // The binary extension is refused by its header.
    let r = request(
        &s.addr,
        "POST",
        infer,
        &[("Inference-Header-Content-Length", "20")],
        &good,
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("binary tensor data is not supported"));
    // Garbage that is not HTTP, and a connection dropped mid-body.
    let mut raw = TcpStream::connect(&s.addr).unwrap();
    raw.write_all(b"\x00\x01 hello\r\n\r\n").unwrap();
    let _ = raw.read_to_end(&mut Vec::new());
    let mut cut = TcpStream::connect(&s.addr).unwrap();
    cut.write_all(
        b"POST /v2/models/m/versions/1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"inp",
    )
    .unwrap();
    drop(cut);

    // Still serving, and every answer was counted.
    assert!(s.running());
    let r = s.post(infer, &good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.post("/predict", &png).status, 200);
    let m = s.metrics();
    let count = |endpoint: &str, status: u16| {
        cases
            .iter()
            .filter(|(meth, p, _, st, _)| {
                *st == status && *meth == "POST" && endpoint_of(p) == endpoint
            })
            .count() as f64
    };
    fn endpoint_of(p: &str) -> &str {
        match p {
            p if p.starts_with("/predict") => "/predict",
            p if p.contains("/versions/") => "/v2/models/{name}/versions/{version}/infer",
            _ => "/v2/models/{name}/infer",
        }
    }
    let infer_ep = "/v2/models/{name}/infer";
    assert_eq!(
        metric(
            &m,
            &format!("idx_softmax_requests_total{{endpoint=\"{infer_ep}\",status=\"400\"}}")
        ),
        count(infer_ep, 400) + 1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            &format!("idx_softmax_requests_total{{endpoint=\"{infer_ep}\",status=\"200\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "idx_softmax_requests_total{endpoint=\"/predict\",status=\"400\"}"
        ),
        count("/predict", 400)
    );
    assert_eq!(
        metric(
            &m,
            "idx_softmax_requests_total{endpoint=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            &format!("idx_softmax_requests_total{{endpoint=\"{infer_ep}\",status=\"405\"}}")
        ),
        1.0
    );
    let errors = metric(
        &m,
        &format!("idx_softmax_request_errors_total{{endpoint=\"{infer_ep}\"}}"),
    );
    assert_eq!(
        errors,
        count(infer_ep, 400) + count(infer_ep, 413) + count(infer_ep, 404) + 2.0
    );
    let (status, log) = s.stop(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("panic"), "{log}");
}

#[test]
fn concurrent_requests_share_a_forward_pass() {
    // While a slow request holds the batcher, eight small ones queue up;
    // the next forward pass takes them all.
    let dir = tempfile::tempdir().unwrap();
    let path = slow_model(dir.path());
    let s = Serve::start(&path, &["--threads", "1"]);
    let (slow, _) = send_in_background(&s.addr, slow_request(4000));
    s.wait_for("idx_softmax_forward_rows", 4000.0);
    let n = 8;
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (addr, barrier) = (s.addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                let body = infer_body(1, &random_rows(1, i as u64));
                barrier.wait();
                request(&addr, "POST", "/v2/models/slow/infer", &[], &body).status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(parse_reply(&slow.join().unwrap()).status, 200);
    let m = s.metrics();
    assert_eq!(
        metric(&m, "idx_softmax_batch_requests_sum"),
        (n + 1) as f64,
        "{m}"
    );
    assert_eq!(
        metric(&m, "idx_softmax_batch_rows_sum"),
        (4000 + n) as f64,
        "{m}"
    );
    assert_eq!(metric(&m, "idx_softmax_batch_requests_count"), 2.0, "{m}");
    let (_, log) = s.stop(libc::SIGTERM);
    let batched = log
        .lines()
        .filter(|l| l.starts_with("POST /v2/models/slow/infer 200") && l.ends_with(" batch=8"))
        .count();
    assert_eq!(batched, n, "{log}");
}

/// Sends `body` to the slow model's infer endpoint on a thread (keep-alive,
/// so the answer ends when the server closes); the receiver hears once the
/// body is written. The thread returns the raw answer.
fn send_in_background(
    addr: &str,
    body: Vec<u8>,
) -> (
    std::thread::JoinHandle<Vec<u8>>,
    std::sync::mpsc::Receiver<()>,
) {
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let addr = addr.to_owned();
    let thread = std::thread::spawn(move || {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            c,
            "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        c.write_all(&body).unwrap();
        // The caller may not listen.
        let _ = sent_tx.send(());
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        raw
    });
    (thread, sent_rx)
}

/// A network slow enough that 4000 samples take a while.
fn slow_model(dir: &Path) -> PathBuf {
    model(dir, "slow", &[FEATURES, 2048, 2048, CLASSES], 8)
}

fn slow_request(rows: usize) -> Vec<u8> {
    let zeros = vec!["0"; rows * FEATURES].join(",");
    format!(r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[{rows},{FEATURES}],"data":[{zeros}]}}]}}"#)
        .into_bytes()
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    // A slow request runs; a small one waits in the queue of one; the
    // next is refused.
    let dir = tempfile::tempdir().unwrap();
    let path = slow_model(dir.path());
    let s = Serve::start(&path, &["--queue", "1", "--threads", "1"]);
    let (slow, _) = send_in_background(&s.addr, slow_request(4000));
    s.wait_for("idx_softmax_forward_rows", 4000.0);
    let addr = s.addr.clone();
    let queued = std::thread::spawn(move || {
        request(
            &addr,
            "POST",
            "/v2/models/slow/infer",
            &[],
            &slow_request(1),
        )
        .status
    });
    s.wait_for("idx_softmax_queue_depth", 1.0);
    let r = s.post("/v2/models/slow/infer", &slow_request(1));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
    assert!(r.error().contains("queue is full"), "{}", r.text());
    assert_eq!(parse_reply(&slow.join().unwrap()).status, 200);
    assert_eq!(queued.join().unwrap(), 200);
    let m = s.metrics();
    assert_eq!(metric(&m, "idx_softmax_queue_full_total"), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "idx_softmax_requests_total{endpoint=\"/v2/models/{name}/infer\",status=\"503\"}"
        ),
        1.0
    );
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = slow_model(dir.path());
    let s = Serve::start(&path, &["--threads", "1"]);
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let addr = s.addr.clone();
    let slow = std::thread::spawn(move || {
        let body = slow_request(4000);
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            c,
            "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        c.write_all(&body).unwrap();
        sent_tx.send(()).unwrap();
        // Keep-alive: the server closes the connection once it has
        // answered, as it stops.
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        parse_reply(&raw)
    });
    sent_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (status, log) = s.stop(libc::SIGTERM);
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["shape"], json!([4000, CLASSES]));
    assert_eq!(status.code(), Some(0), "{log}");
    let received = log
        .find("received SIGTERM")
        .unwrap_or_else(|| panic!("{log}"));
    let answered = log
        .find("POST /v2/models/slow/infer 200")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(received < answered, "{log}");
    assert!(log.contains("finishing 1 request(s) in flight"), "{log}");
}

#[test]
fn a_second_signal_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = slow_model(dir.path());
    let s = Serve::start(&path, &["--threads", "1"]);
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let addr = s.addr.clone();
    let slow = std::thread::spawn(move || {
        let body = slow_request(8000);
        let mut c = TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        c.write_all(&body).unwrap();
        sent_tx.send(()).unwrap();
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        raw
    });
    sent_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let (status, log) = s.stop(libc::SIGINT);
    assert!(start.elapsed() < Duration::from_secs(5), "{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("error: stopped by a second signal with 1 request(s) unanswered"),
        "{log}"
    );
    // The client sees its connection closed, with no answer.
    assert!(slow.join().unwrap().is_empty());
}

#[test]
fn a_client_that_leaves_is_counted_as_499() {
    let dir = tempfile::tempdir().unwrap();
    let path = slow_model(dir.path());
    let s = Serve::start(&path, &["--threads", "1"]);
    let mut c = TcpStream::connect(&s.addr).unwrap();
    let body = slow_request(4000);
    write!(
        c,
        "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(&body).unwrap();
    s.wait_for("idx_softmax_forward_rows", 4000.0);
    drop(c);
    let start = Instant::now();
    let gone = "idx_softmax_requests_total{endpoint=\"/v2/models/{name}/infer\",status=\"499\"}";
    while metric(&s.metrics(), gone) != 1.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", s.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = s.metrics();
    assert_eq!(metric(&m, "idx_softmax_requests_in_flight"), 0.0, "{m}");
    let (status, log) = s.stop(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("POST /v2/models/slow/infer 499 "), "{log}");
    assert!(log.contains("finishing 0 request(s) in flight"), "{log}");
}

#[test]
fn start_failures_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = model(dir.path(), "m", &[FEATURES, CLASSES], 9);
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let run = |model: &Path, extra: &[&str]| {
        let out = bin()
            .args(["serve", "--model"])
            .arg(model)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.stdout,
        )
    };
    for (model, extra, code, needle) in [
        (&bad, &[][..], Some(1), "bad.safetensors"),
        (
            &dir.path().join("none.safetensors"),
            &[][..],
            Some(1),
            "none.safetensors",
        ),
        (
            &good,
            &["--port", &port][..],
            Some(1),
            "cannot listen on 127.0.0.1:",
        ),
    ] {
        let (got, err, stdout) = run(model, extra);
        assert_eq!(got, code, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
        assert!(stdout.is_empty());
    }
    for (extra, needle) in [
        (
            &["--max-batch", "0"][..],
            "--max-batch must be in 1..=65536, got 0",
        ),
        (&["--queue", "0"][..], "--queue must be in"),
        (
            &["--batch-wait-us", "2000000"][..],
            "--batch-wait-us must be at most",
        ),
        (
            &["--max-body-mib", "0"][..],
            "--max-body-mib must be 1 to 256 MiB",
        ),
        (&["--name", "a/b"][..], "--name must be"),
        (&["--threads", "0"][..], "--threads"),
        (&["--port", "70000"][..], "--port"),
    ] {
        let mut args = vec!["--port", "0"];
        args.extend_from_slice(extra);
        let (got, err, _) = run(&good, &args);
        assert_eq!(got, Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    drop(busy);
}
