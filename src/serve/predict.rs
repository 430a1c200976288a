//! `POST /predict`: the body is an image file (PNG, JPEG, BMP, PNM, TIFF,
//! WebP, told apart by content), classified as `idx-softmax predict`
//! classifies a file: decoded by [`crate::image::decode_bytes`] (with its
//! limits: a decompression bomb is refused from its header), prepared by
//! [`crate::preprocess::prepare`] with the model's recorded input shape and
//! background, run through the batcher, and answered with the JSON object
//! `predict --json` prints ([`crate::prediction::json`]; the image is
//! named `-`, as standard input is).
//!
//! Query parameters, all optional:
//!
//! * `top=K`: how many classes to list (default
//!   [`crate::infer::DEFAULT_TOP`], as `predict`);
//! * `probs=1`: add every class's probability (`probabilities`), as
//!   `predict --probs`;
//! * `preprocess=auto|mnist|none` and `invert=1|0`: as `predict
//!   --preprocess`, `--invert` and `--no-invert`;
//! * `preprocessed=1`: add the image the model saw, `preprocessed`:
//!   `{"width": W, "height": H, "pixels": [W × H bytes, row by row]}`.
//!
//! Images are decoded on blocking threads, as many at once as the server
//! has threads; as many as [`super::Config::queue`] may wait for one, and
//! one more is answered 503.

use std::path::Path as FsPath;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::protocol::ApiError;
use super::{body_or_error, json_response, AppState, Batched};
use crate::infer;
use crate::prediction::{self, Source};
use crate::preprocess::{self, Mode, Options, Prepared};
use crate::setting::Setting;

/// The name of the image in messages.
const IMAGE: &str = "image";
/// The query parameters `/predict` takes.
const PARAMETERS: &str = "top, probs, preprocess, invert, preprocessed";

/// Decoding slots, and the requests waiting for one.
pub(super) struct Images {
    slots: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Images {
    pub(super) fn new(workers: usize, max_waiting: usize) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(workers.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }
}

/// What the query asks for.
#[derive(Debug, PartialEq)]
struct Params {
    top: usize,
    probs: bool,
    preprocessed: bool,
    mode: Mode,
    invert: Option<bool>,
}

fn flag(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{key}: '{value}' is not 1 or 0 (true or false)"
        ))),
    }
}

fn params(pairs: &[(String, String)]) -> Result<Params, ApiError> {
    let mut p = Params {
        top: infer::DEFAULT_TOP,
        probs: false,
        preprocessed: false,
        mode: Mode::Auto,
        invert: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "top" => {
                p.top = match value.trim().parse::<usize>() {
                    Ok(k) if k >= 1 => k,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "top: '{value}' is not a whole number of at least 1"
                        )))
                    }
                }
            }
            "probs" => p.probs = flag(key, value)?,
            "preprocessed" => p.preprocessed = flag(key, value)?,
            "invert" => p.invert = Some(flag(key, value)?),
            "preprocess" => {
                p.mode = value
                    .parse()
                    .map_err(|e: String| ApiError::bad_request(format!("preprocess: {e}")))?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{other}'; /predict takes {PARAMETERS}"
                )))
            }
        }
    }
    Ok(p)
}

/// `POST /predict`.
pub(super) async fn handler(
    State(st): State<Arc<AppState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(st, query, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(
    st: Arc<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrival = st.batcher.arrival();
    let Query(pairs) = query.map_err(|e| {
        ApiError::bad_request(format!("the query string is malformed: {}", e.body_text()))
    })?;
    let p = params(&pairs)?;
    let body = body_or_error(body, st.max_body)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{IMAGE}: the request body is empty: send an image file ({})",
            crate::image::ACCEPTED
        )));
    }
    let Some((h, w)) = st.input_shape else {
        return Err(ApiError::bad_request(format!(
            "{IMAGE}: the model {} takes {} features, not a 2-D image (use /v2/models/{}/infer)",
            st.model_path, st.features, st.name
        )));
    };
    let opts = Options {
        mode: p.mode,
        invert: p.invert,
        background: st.background,
    };
    let prepared = prepare(&st, body, h, w, opts).await?;
    let x = prepared.image.features();
    if x.len() != st.features {
        return Err(ApiError {
            status: 500,
            message: format!(
                "{IMAGE}: the prepared image has {} pixels, but the model takes {} features",
                x.len(),
                st.features
            ),
        });
    }
    let (logits, batch) = st.logits(x, 1, arrival).await?;
    let probs = infer::softmax(&logits);
    let ranked = infer::ranked(&probs);
    let top = &ranked[..p.top.min(ranked.len())];
    let source = Source::Image {
        name: "-",
        prepared: &prepared,
        saved: None,
    };
    let mut v = prediction::json(&probs, top, &st.names, p.probs, &source);
    if p.preprocessed {
        let img = &prepared.image;
        v["preprocessed"] =
            json!({ "width": img.width, "height": img.height, "pixels": img.pixels });
    }
    let mut r = json_response(StatusCode::OK, v.to_string().into_bytes());
    r.extensions_mut().insert(Batched(batch));
    Ok(r)
}

/// Decodes and prepares `body` on a blocking thread, when a decoding slot
/// is free.
async fn prepare(
    st: &AppState,
    body: Bytes,
    h: usize,
    w: usize,
    opts: Options,
) -> Result<Prepared, ApiError> {
    let images = &st.images;
    if images.waiting.fetch_add(1, Ordering::SeqCst) >= images.max_waiting {
        images.waiting.fetch_sub(1, Ordering::SeqCst);
        st.metrics.queue_full();
        return Err(ApiError {
            status: 503,
            message: "the server is busy: too many images wait to be decoded; try again".into(),
        });
    }
    let slot = images.slots.acquire().await;
    images.waiting.fetch_sub(1, Ordering::SeqCst);
    let _slot = slot.map_err(|_| ApiError {
        status: 503,
        message: "the server is stopping".into(),
    })?;
    let job = tokio::task::spawn_blocking(move || {
        let decoded = crate::image::decode_bytes(FsPath::new(IMAGE), &body)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        preprocess::prepare(&decoded, h, w, &opts).map_err(|e| {
            ApiError::bad_request(format!(
                "{IMAGE}: {}",
                e.message(&|s| match s {
                    Setting::Preprocess => "preprocess".to_owned(),
                    other => other.key().to_owned(),
                })
            ))
        })
    });
    job.await.map_err(|e| ApiError {
        status: 500,
        message: format!("{IMAGE}: decoding failed: {e}"),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Params, ApiError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        params(&owned)
    }

    #[test]
    fn query_parameters() {
        let p = q(&[]).unwrap();
        assert_eq!(
            (p.top, p.probs, p.preprocessed),
            (infer::DEFAULT_TOP, false, false)
        );
        let p = q(&[
            ("top", "10"),
            ("probs", "1"),
            ("preprocessed", ""),
            ("invert", "0"),
        ])
        .unwrap();
        assert_eq!(
            (p.top, p.probs, p.preprocessed, p.invert),
            (10, true, true, Some(false))
        );
        assert_eq!(q(&[("preprocess", "none")]).unwrap().mode, Mode::None);
        assert!(q(&[("top", "0")]).unwrap_err().message.starts_with("top:"));
        assert!(q(&[("probs", "maybe")])
            .unwrap_err()
            .message
            .starts_with("probs:"));
        assert!(q(&[("preprocess", "x")])
            .unwrap_err()
            .message
            .starts_with("preprocess:"));
        assert!(q(&[("x", "1")])
            .unwrap_err()
            .message
            .contains("unknown query parameter 'x'"));
    }
}
