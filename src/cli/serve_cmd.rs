//! `serve`: a saved model behind HTTP. The flags become an
//! [`idx_softmax::serve::Config`]; the model is loaded and checked as
//! `eval` loads it ([`SavedModel::load`]), its class names found as
//! `predict` finds them; everything else is the library's
//! ([`idx_softmax::serve`]), defaults and limits included.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;

use idx_softmax::model::SavedModel;
use idx_softmax::serve::{self, Config, Field, ServeError, Server};
use idx_softmax::setting::Setting;

use super::args::parse_threads;
use super::common::{class_names, UsageError};

/// `serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The model, as written by --save (checked as eval checks it).
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_MODEL")]
    pub model: PathBuf,
    /// The address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = serve::DEFAULT_HOST, env = "IDX_SOFTMAX_HOST")]
    pub host: String,
    /// The port to listen on; 0 picks a free one (the first line printed
    /// names it).
    #[arg(long, default_value_t = serve::DEFAULT_PORT, env = "IDX_SOFTMAX_PORT")]
    pub port: u16,
    /// The model's name in URLs, /v2/models/NAME (A-Z a-z 0-9 - _ .)
    /// [default: the model file's stem].
    #[arg(long, env = "IDX_SOFTMAX_NAME")]
    pub name: Option<String>,
    /// Class names, one per line [default: the checkpoint's, else
    /// labels.txt beside the IDX files].
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_LABELS")]
    pub labels: Option<PathBuf>,
    #[arg(long, value_name = "ROWS", help = format!("Most samples in one forward pass: concurrent requests are batched up to this (a larger request runs alone); 1 to {}", serve::MAX_BATCH_LIMIT), default_value_t = serve::DEFAULT_MAX_BATCH, env = "IDX_SOFTMAX_MAX_BATCH")]
    pub max_batch: usize,
    #[arg(long, value_name = "MICROSECONDS", help = format!("How long the oldest request of a batch may wait for requests on their way; at most {}", serve::BATCH_WAIT_LIMIT_US), default_value_t = serve::DEFAULT_BATCH_WAIT_US, env = "IDX_SOFTMAX_BATCH_WAIT_US")]
    pub batch_wait_us: u64,
    #[arg(long, value_name = "REQUESTS", help = format!("Requests that may wait for a forward pass; one more is answered 503 with Retry-After; 1 to {}", serve::QUEUE_LIMIT), default_value_t = serve::DEFAULT_QUEUE, env = "IDX_SOFTMAX_QUEUE")]
    pub queue: usize,
    #[arg(long, value_name = "MIB", help = format!("The largest request body (a JSON request, an image); a larger one is answered 413; 1 to {}", serve::MAX_BODY_LIMIT_MIB), default_value_t = serve::DEFAULT_MAX_BODY_MIB, env = "IDX_SOFTMAX_MAX_BODY_MIB")]
    pub max_body_mib: usize,
    #[arg(long, help = threads_help(), value_parser = parse_threads, env = "IDX_SOFTMAX_THREADS", allow_negative_numbers = true)]
    pub threads: Option<i64>,
}

fn threads_help() -> String {
    let mut h = format!(
        "Threads for HTTP, and as many for forward passes; {}",
        Setting::Threads.rule()
    );
    if let Some(d) = Setting::Threads.default_text() {
        h += &format!(" [default: {d}]");
    }
    h
}

/// The flag that sets `field`.
fn flag(field: Field) -> String {
    match field {
        Field::BatchWait => "--batch-wait-us".into(),
        Field::MaxBody => "--max-body-mib".into(),
        other => format!("--{}", other.key().replace('_', "-")),
    }
}

fn worded(e: ServeError) -> anyhow::Error {
    match e {
        ServeError::Invalid { .. } => UsageError(e.message(&flag)).into(),
        ServeError::Spec(s) => anyhow::Error::new(s),
        ServeError::Threads(t) => anyhow::Error::new(t),
        other => anyhow!(other.message(&flag)),
    }
}

/// Runs `serve` with `args`: until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> Result<()> {
    let saved = SavedModel::load(&args.model)?;
    let names = class_names(
        args.labels.as_deref(),
        Some(&saved),
        &idx_softmax::data::default_data_dir(),
        saved.network().classes(),
    )?;
    let config = Config {
        host: args.host,
        port: args.port,
        name: args.name,
        max_batch: args.max_batch,
        batch_wait: Duration::from_micros(args.batch_wait_us),
        queue: args.queue,
        max_body: args.max_body_mib.saturating_mul(1 << 20),
        threads: idx_softmax::run::spec::thread_count(args.threads)?,
    };
    let server = Server::bind(&saved, names, config).map_err(worded)?;
    drop(saved);
    server.run().map_err(worded)
}
