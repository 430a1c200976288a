//! `idx-softmax serve`: a saved model behind HTTP (feature `serve`), on
//! axum, tokio and hyper.
//!
//! # Endpoints
//!
//! * The **Open Inference Protocol** (KServe v2) over HTTP/JSON
//!   ([`protocol`]): `GET /v2` (the server's metadata),
//!   `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2/models/NAME`
//!   (the model's metadata: input `input` FP32 `[-1, features]`, outputs
//!   `probabilities` and `logits` FP32 `[-1, classes]`),
//!   `GET /v2/models/NAME/ready` and `POST /v2/models/NAME/infer`; the
//!   same under `/v2/models/NAME/versions/1/`. NAME is the model file's
//!   stem unless [`Config::name`] says otherwise.
//! * `POST /predict` ([`predict`]): the body is an image file of any kind
//!   `predict` reads; it is decoded and preprocessed as `predict` does it,
//!   and the answer is the JSON object `predict --json` prints
//!   ([`crate::prediction::json`]).
//! * `GET /` ([`page`]): a page to draw a digit on.
//! * `GET /metrics` ([`metrics`]): counters in the Prometheus text format.
//!
//! A request to another path is answered 404, one with another method
//! 405, both as JSON `{"error": "..."}` like every other failure.
//!
//! # Serving
//!
//! The model is loaded and checked by the caller ([`SavedModel::load`],
//! the same rules as `eval`) and runs on the `gemm` kernel path (the
//! inputs are f32). Concurrent requests are batched into one forward pass
//! ([`batcher`]): at most [`Config::max_batch`] rows, waiting at most
//! [`Config::batch_wait`] for requests on their way. Limits: a body larger than
//! [`Config::max_body`] is answered 413; a request that finds
//! [`Config::queue`] requests already waiting is answered 503 with
//! `Retry-After`; a malformed tensor or image 400, naming the field or the
//! image and what is wrong. Nothing a client sends makes the server panic
//! or stop.
//!
//! Each request is logged on stderr, one line: method, path, status,
//! latency and, for inference, the rows of the forward pass it ran in.
//! SIGINT and SIGTERM stop taking connections, finish the requests in
//! flight (for at most [`SHUTDOWN_GRACE`]; a second signal ends at once)
//! and return. The server writes nothing to disk.
//!
//! Every default and limit is stated here ([`Config::default`] and the
//! constants); the command line quotes them.

pub mod batcher;
pub mod metrics;
pub mod page;
pub mod predict;
pub mod protocol;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::model::SavedModel;
use crate::run::{SpecError, TrainError};
use batcher::{BatchError, Batcher, Policy};
use metrics::Metrics;
use protocol::ApiError;

/// The address listened on by default: this machine only.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The port listened on by default (0 picks a free one).
pub const DEFAULT_PORT: u16 = 8000;
/// Most rows (samples) in one forward pass, by default.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// How long the oldest request of a batch may wait for requests on their
/// way, by default, in microseconds.
pub const DEFAULT_BATCH_WAIT_US: u64 = 1000;
/// Requests that may wait for a forward pass, by default; one more is
/// answered 503.
pub const DEFAULT_QUEUE: usize = 1024;
/// The largest request body, by default, in MiB.
pub const DEFAULT_MAX_BODY_MIB: usize = 16;

/// The largest [`Config::max_batch`].
pub const MAX_BATCH_LIMIT: usize = 65_536;
/// The longest [`Config::batch_wait`], in microseconds.
pub const BATCH_WAIT_LIMIT_US: u64 = 1_000_000;
/// The largest [`Config::queue`].
pub const QUEUE_LIMIT: usize = 1_000_000;
/// The largest [`Config::max_body`], in MiB: the largest image `predict`
/// reads from a stream.
pub const MAX_BODY_LIMIT_MIB: usize = (crate::image::MAX_STREAM_BYTES >> 20) as usize;
/// The `Retry-After` of a 503, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// How long a stopping server waits for the requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Bodies larger than this are parsed off the HTTP threads.
const LARGE_BODY: usize = 256 << 10;

/// How to serve. [`Config::default`] holds the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The address to listen on (a name or an IP address).
    pub host: String,
    /// The port to listen on; 0 picks a free one.
    pub port: u16,
    /// The model's name in URLs; `None`: the model file's stem.
    pub name: Option<String>,
    /// Most rows in one forward pass (a larger request runs alone).
    pub max_batch: usize,
    /// How long the oldest request of a batch may wait for requests on
    /// their way.
    pub batch_wait: Duration,
    /// Requests that may wait for a forward pass.
    pub queue: usize,
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// Threads for HTTP and for forward passes (each).
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            name: None,
            max_batch: DEFAULT_MAX_BATCH,
            batch_wait: Duration::from_micros(DEFAULT_BATCH_WAIT_US),
            queue: DEFAULT_QUEUE,
            max_body: DEFAULT_MAX_BODY_MIB << 20,
            threads: crate::run::spec::thread_count(None).unwrap_or(1),
        }
    }
}

/// A [`Config`] field, for messages: each front end names it its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Host,
    Name,
    MaxBatch,
    BatchWait,
    Queue,
    MaxBody,
    Threads,
}

impl Field {
    /// The field's name: `max_batch`, …
    pub fn key(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Name => "name",
            Self::MaxBatch => "max_batch",
            Self::BatchWait => "batch_wait",
            Self::Queue => "queue",
            Self::MaxBody => "max_body",
            Self::Threads => "threads",
        }
    }
}

impl Config {
    /// Checks every field; the error names the first bad one.
    pub fn check(&self) -> Result<(), ServeError> {
        let bad = |field, rule: String| Err(ServeError::Invalid { field, rule });
        if self.host.trim().is_empty() {
            return bad(Field::Host, "must not be empty".into());
        }
        if let Some(n) = &self.name {
            check_name(n)?;
        }
        if !(1..=MAX_BATCH_LIMIT).contains(&self.max_batch) {
            return bad(
                Field::MaxBatch,
                format!("must be in 1..={MAX_BATCH_LIMIT}, got {}", self.max_batch),
            );
        }
        if self.batch_wait > Duration::from_micros(BATCH_WAIT_LIMIT_US) {
            return bad(
                Field::BatchWait,
                format!(
                    "must be at most {BATCH_WAIT_LIMIT_US} µs, got {} µs",
                    self.batch_wait.as_micros()
                ),
            );
        }
        if !(1..=QUEUE_LIMIT).contains(&self.queue) {
            return bad(
                Field::Queue,
                format!("must be in 1..={QUEUE_LIMIT}, got {}", self.queue),
            );
        }
        if !(1 << 20..=MAX_BODY_LIMIT_MIB << 20).contains(&self.max_body) {
            return bad(
                Field::MaxBody,
                format!(
                    "must be 1 to {MAX_BODY_LIMIT_MIB} MiB, got {} bytes",
                    self.max_body
                ),
            );
        }
        if self.threads == 0 {
            return bad(Field::Threads, "must be at least 1".into());
        }
        Ok(())
    }
}

/// A model name fit for a URL path segment.
fn check_name(name: &str) -> Result<(), ServeError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServeError::Invalid {
            field: Field::Name,
            rule: format!(
                "must be 1 to 200 of A-Z a-z 0-9 - _ . (a URL path segment), got '{name}'"
            ),
        })
    }
}

/// The default model name: the file's stem, with any character unfit for
/// a URL path replaced by `_`.
pub fn default_name(model: &std::path::Path) -> String {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "model".to_owned()
    } else {
        name
    }
}

/// Why the server could not start or stopped early. One line.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A [`Config`] field breaks its rule.
    #[error("{} {rule}", field.key())]
    Invalid { field: Field, rule: String },
    /// The kernel path cannot run (`IDX_SOFTMAX_KERNEL`).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The inference threads could not start.
    #[error(transparent)]
    Threads(#[from] TrainError),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    /// The runtime, a thread or a signal handler could not start.
    #[error("cannot start the server: {0}")]
    Start(std::io::Error),
    /// A second signal ended the server before the requests in flight
    /// were answered.
    #[error("stopped by a second signal with {0} request(s) unanswered")]
    Interrupted(usize),
}

impl ServeError {
    /// The message, naming a [`Config`] field by `name`.
    pub fn message(&self, name: &dyn Fn(Field) -> String) -> String {
        match self {
            Self::Invalid { field, rule } => format!("{} {rule}", name(*field)),
            other => other.to_string(),
        }
    }
}

/// What every handler shares.
struct AppState {
    name: String,
    model_path: String,
    features: usize,
    classes: usize,
    names: Vec<String>,
    input_shape: Option<(usize, usize)>,
    background: f32,
    max_body: usize,
    batcher: Batcher,
    metrics: Arc<Metrics>,
    images: predict::Images,
    in_flight: AtomicUsize,
}

/// The rows of the forward pass a request ran in, for its log line.
#[derive(Clone, Copy, Debug)]
struct Batched(usize);

/// A server bound to its address, not yet serving.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    config: Config,
}

impl Server {
    /// Checks `config`, starts the batcher and binds the address. `model`
    /// is the loaded model, `names` its class names (empty for none).
    pub fn bind(
        model: &SavedModel,
        names: Vec<String>,
        config: Config,
    ) -> Result<Self, ServeError> {
        config.check()?;
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| default_name(model.path()));
        let kernel = model.inference_kernel(None)?;
        let pool = crate::infer::thread_pool(config.threads)?;
        let metrics = Arc::new(Metrics::default());
        let net = model.network();
        let batcher = Batcher::start(
            batcher::Model {
                network: net.clone(),
                sample_shape: model.sample_shape().unwrap_or_default(),
                kernel,
            },
            Policy {
                max_batch: config.max_batch,
                batch_wait: config.batch_wait,
                queue: config.queue,
            },
            pool,
            metrics.clone(),
        )
        .map_err(ServeError::Start)?;
        let addr_text = match config.host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{}]:{}", config.host, config.port),
            Err(_) => format!("{}:{}", config.host, config.port),
        };
        let listener = std::net::TcpListener::bind((config.host.as_str(), config.port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|error| ServeError::Bind {
                addr: addr_text.clone(),
                error,
            })?;
        let addr = listener.local_addr().map_err(|error| ServeError::Bind {
            addr: addr_text,
            error,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .thread_name("idx-softmax-http")
            .enable_all()
            .build()
            .map_err(ServeError::Start)?;
        let state = Arc::new(AppState {
            name,
            model_path: model.path().display().to_string(),
            features: net.features(),
            classes: net.classes(),
            names,
            input_shape: model.input_shape(),
            background: model.background().unwrap_or(0.0),
            max_body: config.max_body,
            batcher,
            metrics,
            images: predict::Images::new(config.threads, config.queue),
            in_flight: AtomicUsize::new(0),
        });
        Ok(Self {
            runtime,
            listener,
            addr,
            state,
            config,
        })
    }

    /// The address listened on (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The model's name in URLs.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Prints `serving MODEL as NAME on http://ADDR` on stdout (the line
    /// tests and scripts read the port from) and the settings on stderr,
    /// then serves until SIGINT or SIGTERM; see the module documentation.
    pub fn run(self) -> Result<(), ServeError> {
        use std::io::Write;
        let (signals, count) = {
            let _guard = self.runtime.enter();
            signal_counter().map_err(ServeError::Start)?
        };
        self.runtime.spawn(signals);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "serving {} as {} on http://{}",
            self.state.model_path, self.state.name, self.addr
        );
        let _ = out.flush();
        drop(out);
        let c = &self.config;
        let _ = writeln!(
            std::io::stderr(),
            "model {}: {} features, {} classes; batches of up to {} rows, waiting up to {} µs; queue {} requests; bodies up to {} MiB; {} thread(s)",
            self.state.name,
            self.state.features,
            self.state.classes,
            c.max_batch,
            c.batch_wait.as_micros(),
            c.queue,
            c.max_body >> 20,
            c.threads
        );
        let first = wait_for(count.clone(), 1);
        let second = wait_for(count, 2);
        self.serve(first, second)
    }

    /// Serves until `shutdown` completes, then finishes the requests in
    /// flight (for at most [`SHUTDOWN_GRACE`]) and returns.
    pub fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        self.serve(shutdown, std::future::pending())
    }

    fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        force: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            runtime,
            listener,
            state,
            ..
        } = self;
        let app = router(state.clone());
        let batcher_owner = state.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let watched = state.clone();
        let signal = async move {
            shutdown.await;
            let n = watched.in_flight.load(Ordering::SeqCst);
            log(&format!("stopping: finishing {n} request(s) in flight"));
            let _ = started_tx.send(());
        };
        // `abandon`: requests are still unanswered and will stay so.
        let (result, abandon) = runtime.block_on(async move {
            use axum::serve::ListenerExt;
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return (Err(ServeError::Start(e)), false),
            };
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let server = axum::serve(listener, app).with_graceful_shutdown(signal);
            let grace = async move {
                if started_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            tokio::select! {
                r = server => (r.map_err(ServeError::Start), false),
                () = grace => {
                    let n = state.in_flight.load(Ordering::SeqCst);
                    log(&format!("stopped after {} s with {n} request(s) unanswered", SHUTDOWN_GRACE.as_secs()));
                    (Ok(()), true)
                }
                () = force => (Err(ServeError::Interrupted(state.in_flight.load(Ordering::SeqCst))), true),
            }
        });
        if abandon {
            // Neither the forward pass under way nor the tasks waiting
            // for it are waited for: the process is about to end.
            runtime.shutdown_background();
            std::mem::forget(batcher_owner);
            return result;
        }
        // Whatever is queued runs; then the batcher's thread ends.
        batcher_owner.batcher.stop();
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

/// A task counting SIGINTs and SIGTERMs, and the count.
#[cfg(unix)]
fn signal_counter() -> std::io::Result<(
    impl Future<Output = ()> + Send + 'static,
    tokio::sync::watch::Receiver<u32>,
)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    let task = async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tx.send_modify(|n| *n += 1);
            log(&if *tx.borrow() == 1 {
                format!("received {name} (a second signal stops at once)")
            } else {
                format!("received {name} again: stopping at once")
            });
        }
    };
    Ok((task, rx))
}

/// A task counting Ctrl-Cs, and the count.
#[cfg(not(unix))]
fn signal_counter() -> std::io::Result<(
    impl Future<Output = ()> + Send + 'static,
    tokio::sync::watch::Receiver<u32>,
)> {
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    let task = async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            tx.send_modify(|n| *n += 1);
            log("received Ctrl-C");
        }
    };
    Ok((task, rx))
}

/// Completes once `count` reaches `n`.
async fn wait_for(mut count: tokio::sync::watch::Receiver<u32>, n: u32) {
    if count.wait_for(|&c| c >= n).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One line on stderr; a closed stderr is ignored.
fn log(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn router(state: Arc<AppState>) -> Router {
    let models = Router::new()
        .route("/{name}", get(model_metadata))
        .route("/{name}/ready", get(model_ready))
        .route("/{name}/infer", post(infer))
        .route("/{name}/versions/{version}", get(model_metadata_v))
        .route("/{name}/versions/{version}/ready", get(model_ready_v))
        .route("/{name}/versions/{version}/infer", post(infer_v));
    Router::new()
        .route("/", get(|| async { html(page::INDEX_HTML) }))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(|| async { StatusCode::OK }))
        .nest("/v2/models", models)
        .route("/predict", post(predict::handler))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The status logged and counted for a request whose client went away
/// before it was answered (nginx's convention).
pub const CLIENT_GONE: u16 = 499;

/// A request being answered: counted in flight until dropped; dropped
/// unanswered (its client went away), it is logged and counted as
/// [`CLIENT_GONE`].
struct InFlight {
    state: Arc<AppState>,
    start: Instant,
    method: Method,
    uri: Uri,
    endpoint: String,
    answered: bool,
}

impl InFlight {
    fn new(state: Arc<AppState>, method: Method, uri: Uri, endpoint: String) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        Self {
            state,
            start: Instant::now(),
            method,
            uri,
            endpoint,
            answered: false,
        }
    }

    /// Counts and logs the answer: one line, `METHOD PATH STATUS LATENCY`
    /// and the rows of the forward pass, if one ran.
    fn done(&mut self, status: u16, batch: Option<usize>) {
        self.answered = true;
        let latency = self.start.elapsed();
        self.state.metrics.request(&self.endpoint, status, latency);
        let batch = batch.map_or_else(String::new, |rows| format!(" batch={rows}"));
        log(&format!(
            "{} {} {status} {:.3}ms{batch}",
            self.method,
            self.uri,
            latency.as_secs_f64() * 1e3
        ));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.answered {
            self.done(CLIENT_GONE, None);
        }
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts, times and logs every request; words a bare 405 as JSON.
async fn observe(
    State(state): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let mut flight = InFlight::new(state, req.method().clone(), req.uri().clone(), endpoint);
    let mut response = next.run(req).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        // The `Allow` header is added outside this layer.
        let e = ApiError {
            status: 405,
            message: format!(
                "{} {}: method not allowed (the Allow header lists those that are)",
                flight.method,
                flight.uri.path()
            ),
        };
        let (mut parts, _) = response.into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        response = Response::from_parts(parts, Body::from(e.body()));
    }
    let batch = response.extensions().get::<Batched>().map(|b| b.0);
    flight.done(response.status().as_u16(), batch);
    response
}

/// A JSON response.
fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = json_response(status, self.body());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        r
    }
}

fn html(page: &'static str) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "{method} {}: no such endpoint (see /v2, /v2/models/NAME, /predict, /metrics)",
        uri.path()
    ))
}

async fn server_metadata() -> Response {
    json_response(
        StatusCode::OK,
        protocol::server_metadata().to_string().into_bytes(),
    )
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(metrics::Gauges {
            // Not counting this request.
            in_flight: state.in_flight.load(Ordering::SeqCst).saturating_sub(1),
            arriving: state.batcher.arriving(),
            queued: state.batcher.queued(),
            running: state.batcher.running(),
        }),
    )
        .into_response()
}

impl AppState {
    /// Checks that `name` (and `version`, if given) is this model.
    fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
        if name != self.name {
            return Err(ApiError::not_found(format!(
                "unknown model '{name}': this server serves '{}'",
                self.name
            )));
        }
        match version {
            Some(v) if v != protocol::VERSION => Err(ApiError::not_found(format!(
                "model '{name}' has one version, {}; there is no version '{v}'",
                protocol::VERSION
            ))),
            _ => Ok(()),
        }
    }

    /// The forward pass of `x` (`rows × features`): its logits and the
    /// rows of the batch it ran in.
    /// `arrival` announced the request when its handler started.
    async fn logits(
        &self,
        x: Vec<f32>,
        rows: usize,
        arrival: batcher::Arrival,
    ) -> Result<(Vec<f32>, usize), ApiError> {
        let unavailable = |m: &str| ApiError {
            status: 503,
            message: m.to_owned(),
        };
        let rx = match self.batcher.submit(x, rows, Some(arrival)) {
            Ok(rx) => rx,
            Err(BatchError::Full) => {
                self.metrics.queue_full();
                return Err(unavailable(
                    "the server is busy: its queue is full; try again",
                ));
            }
            Err(_) => return Err(unavailable("the server is stopping")),
        };
        match rx.await {
            Ok(Ok(out)) => Ok((out.logits, out.batch_rows)),
            Ok(Err(BatchError::Failed(m))) => Err(ApiError {
                status: 500,
                message: format!("inference failed: {m}"),
            }),
            Ok(Err(_)) | Err(_) => Err(unavailable("the server is stopping")),
        }
    }
}

/// The body, or the answer to a body that could not be read (413 when it
/// is larger than the limit).
fn body_or_error(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    use axum::extract::rejection::FailedToBufferBody;
    match body {
        Ok(b) => Ok(b),
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            Err(ApiError {
                status: 413,
                message: format!(
                    "the request body is larger than the limit of {} MiB",
                    limit >> 20
                ),
            })
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {}",
            e.body_text()
        ))),
    }
}

async fn model_metadata(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    metadata(&st, &name, None)
}

async fn model_metadata_v(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&st, &name, Some(&version))
}

fn metadata(st: &AppState, name: &str, version: Option<&str>) -> Response {
    match st.check_model(name, version) {
        Ok(()) => json_response(
            StatusCode::OK,
            protocol::model_metadata(&st.name, st.features, st.classes)
                .to_string()
                .into_bytes(),
        ),
        Err(e) => e.into_response(),
    }
}

async fn model_ready(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match st.check_model(&name, None) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn model_ready_v(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match st.check_model(&name, Some(&version)) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn infer(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(st, &name, None, &headers, body).await
}

async fn infer_v(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(st, &name, Some(&version), &headers, body).await
}

async fn run_infer(
    st: Arc<AppState>,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrival = st.batcher.arrival();
    let answer = async {
        st.check_model(name, version)?;
        let body = body_or_error(body, st.max_body)?;
        if headers.contains_key(protocol::BINARY_HEADER) {
            return Err(protocol::binary_refused());
        }
        let features = st.features;
        let request = if body.len() > LARGE_BODY {
            tokio::task::spawn_blocking(move || protocol::parse_infer(&body, features))
                .await
                .map_err(|e| ApiError {
                    status: 500,
                    message: format!("parsing the request failed: {e}"),
                })??
        } else {
            protocol::parse_infer(&body, features)?
        };
        let mut request = request;
        let x = std::mem::take(&mut request.x);
        let (logits, batch) = st.logits(x, request.rows, arrival).await?;
        let body = protocol::infer_response(&st.name, &request, &logits, st.classes);
        let mut r = json_response(StatusCode::OK, body);
        r.extensions_mut().insert(Batched(batch));
        Ok::<_, ApiError>(r)
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn defaults_check_and_names() {
        assert!(Config::default().check().is_ok());
        let bad = Config {
            max_batch: 0,
            ..Config::default()
        };
        let e = bad.check().unwrap_err();
        assert_eq!(
            e.message(&|f| format!("--{}", f.key())),
            format!("--max_batch must be in 1..={MAX_BATCH_LIMIT}, got 0")
        );
        assert!(Config {
            name: Some("a b".into()),
            ..Config::default()
        }
        .check()
        .is_err());
        assert_eq!(
            default_name(std::path::Path::new("/m/my model.v2.safetensors")),
            "my_model.v2"
        );
        assert_eq!(default_name(std::path::Path::new("/")), "model");
    }

    /// The library's own entry point: bind on port 0, serve in this
    /// process until told to stop.
    #[test]
    fn in_process_server_answers_and_stops() {
        use rand::SeedableRng;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.safetensors");
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let net = crate::nn::Network::init(&[4, 3], &mut rng).unwrap();
        crate::checkpoint::save(&path, &net, &[], &Default::default()).unwrap();
        let model = SavedModel::load(&path).unwrap();
        let config = Config {
            port: 0,
            threads: 1,
            ..Config::default()
        };
        let server = Server::bind(&model, vec![], config).unwrap();
        assert_eq!(server.name(), "tiny");
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            server.run_until(async move {
                let _ = stopped.await;
            })
        });
        let body = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,0,0,1]}],"outputs":[{"name":"logits"}]}"#;
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(
            c,
            "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        let mut want = vec![0.0; 3];
        net.forward_f32(
            crate::kernels::KernelPath::Gemm,
            &[1.0, 0.0, 0.0, 1.0],
            1,
            &mut Vec::new(),
            &mut want,
        );
        let json: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let got: Vec<f32> = json["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, want);
        stop.send(()).unwrap();
        thread.join().unwrap().unwrap();
    }
}
