//! The Open Inference Protocol (KServe v2) over HTTP/JSON: the metadata
//! documents, and inference requests and responses with JSON tensors.
//!
//! The model has one input, [`INPUT`], FP32 of shape `[n, features]`
//! (pixels scaled as in training, u8 / 255), and two outputs, FP32 of
//! shape `[n, classes]`: [`PROBABILITIES`] (the softmax, computed in f64)
//! and [`LOGITS`]. A request's `outputs` list picks which come back, in
//! its order; without one, both do.
//!
//! A tensor's `data` may be flat or nested (row-major), as the protocol
//! allows. Every value must be a number within FP32's range: a string,
//! `null`, `true` or a number beyond ±3.4e38 is refused, naming the
//! element (its flat index: `inputs[0].data[17]`).
//!
//! The binary tensor data extension is not supported: a request with
//! binary inputs is refused with 400 (see [`binary_refused`]). Outputs
//! always come back as JSON, also when a request asks for them in binary
//! (`binary_data`, `binary_data_output`, as tritonclient does by
//! default); clients read them from the JSON as the protocol says.

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The model's input tensor.
pub const INPUT: &str = "input";
/// The output tensor of class probabilities.
pub const PROBABILITIES: &str = "probabilities";
/// The output tensor of logits.
pub const LOGITS: &str = "logits";
/// The datatype of every tensor.
pub const DATATYPE: &str = "FP32";
/// The model's one version.
pub const VERSION: &str = "1";
/// The platform the model metadata names.
pub const PLATFORM: &str = "idx-softmax";
/// The header that announces binary tensor data (the binary extension).
pub const BINARY_HEADER: &str = "inference-header-content-length";

/// An answer other than success: an HTTP status and one line, sent as
/// `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    /// 400: a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    /// 404: no such model, version or endpoint.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: message.into(),
        }
    }

    /// The JSON body, `{"error": message}`.
    pub fn body(&self) -> Vec<u8> {
        json!({ "error": self.message }).to_string().into_bytes()
    }
}

/// The 400 for a request that uses the binary tensor data extension.
pub fn binary_refused() -> ApiError {
    ApiError::bad_request(
        "binary tensor data is not supported: send the input as JSON (tritonclient: InferInput.set_data_from_numpy(x, binary_data=False))",
    )
}

/// An output tensor of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Probabilities,
    Logits,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Probabilities => PROBABILITIES,
            Self::Logits => LOGITS,
        }
    }
}

/// An inference request, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    /// The request's `id`, echoed in the response.
    pub id: Option<String>,
    /// Samples.
    pub rows: usize,
    /// `rows × features` finite values, row-major.
    pub x: Vec<f32>,
    /// The outputs to return, in order.
    pub outputs: Vec<OutputKind>,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(borrow, default)]
    inputs: Option<&'a RawValue>,
    #[serde(default)]
    outputs: Option<Value>,
}

#[derive(Deserialize)]
struct RawInput<'a> {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    shape: Option<Value>,
    #[serde(default)]
    datatype: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// serde_json's message without its ` at line L column C` (which would
/// point into a part of the body, not the body).
fn bare(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rsplit_once(" at line ") {
        Some((msg, _)) => msg.to_owned(),
        None => s,
    }
}

/// `v` shortened for a message.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// Whether a JSON text (already valid) is an object, an array, …: its
/// first non-blank byte.
fn starts_with(text: &str, c: char) -> bool {
    text.trim_start().starts_with(c)
}

/// Parses and checks an inference request for a model of `features`
/// inputs a sample. Every failure is a 400 naming the field.
pub fn parse_infer(body: &[u8], features: usize) -> Result<InferRequest, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    if body.iter().all(u8::is_ascii_whitespace) {
        return bad("the request body is empty: send an inference request (JSON)".into());
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return bad("the request body is not UTF-8 text: send an inference request (JSON)".into());
    };
    // Checked first: serde would take an array for a struct.
    if !starts_with(text, '{') {
        return bad(match serde_json::from_str::<&RawValue>(text) {
            Ok(_) => "the request body must be a JSON object (an inference request)".into(),
            Err(e) => format!("the request body is not valid JSON: {e}"),
        });
    }
    let raw: RawRequest<'_> = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return bad(format!("the request body is not valid JSON: {e}"))
        }
        Err(e) => return bad(format!("the request body: {}", bare(&e))),
    };
    let id = match raw.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(v) => return bad(format!("id: must be a string, got {}", shown(&v))),
    };
    match &raw.parameters {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(v) => return bad(format!("parameters: must be an object, got {}", shown(v))),
    }
    let outputs = parse_outputs(raw.outputs.as_ref())?;
    let Some(inputs) = raw.inputs else {
        return bad(format!(
            "inputs: missing (the model takes one tensor, '{INPUT}', {DATATYPE} [n, {features}])"
        ));
    };
    let inputs: Vec<&RawValue> = match serde_json::from_str(inputs.get()) {
        Ok(v) => v,
        Err(_) => return bad("inputs: must be a list of tensors".into()),
    };
    if inputs.len() != 1 {
        return bad(format!(
            "inputs: the model takes one tensor, '{INPUT}', but the request has {}",
            inputs.len()
        ));
    }
    let (rows, x) = parse_input(inputs[0], 0, features)?;
    Ok(InferRequest {
        id,
        rows,
        x,
        outputs,
    })
}

/// Checks `inputs[i]`; returns its rows and values.
fn parse_input(raw: &RawValue, i: usize, features: usize) -> Result<(usize, Vec<f32>), ApiError> {
    let field = |f: &str| format!("inputs[{i}].{f}");
    let bad = |m: String| Err(ApiError::bad_request(m));
    if !starts_with(raw.get(), '{') {
        return bad(format!("inputs[{i}]: must be an object (a tensor)"));
    }
    let input: RawInput<'_> = match serde_json::from_str(raw.get()) {
        Ok(v) => v,
        Err(e) => return bad(format!("inputs[{i}]: {}", bare(&e))),
    };
    if let Some(Value::Object(p)) = &input.parameters {
        if p.contains_key("binary_data_size") {
            return Err(binary_refused());
        }
    }
    match &input.name {
        Some(Value::String(n)) if n == INPUT => {}
        Some(Value::String(n)) => {
            return bad(format!(
                "{}: the model's input is '{INPUT}', not '{n}'",
                field("name")
            ))
        }
        Some(v) => {
            return bad(format!(
                "{}: must be a string, got {}",
                field("name"),
                shown(v)
            ))
        }
        None => {
            return bad(format!(
                "{}: missing (the model's input is '{INPUT}')",
                field("name")
            ))
        }
    }
    match &input.datatype {
        Some(Value::String(d)) if d == DATATYPE => {}
        Some(v) => {
            return bad(format!(
                "{}: must be {DATATYPE}, got {}",
                field("datatype"),
                shown(v)
            ))
        }
        None => {
            return bad(format!(
                "{}: missing (must be {DATATYPE})",
                field("datatype")
            ))
        }
    }
    let want = format!("[n, {features}] (n samples of {features} features)");
    let shape = match &input.shape {
        Some(Value::Array(dims)) => dims,
        Some(v) => {
            return bad(format!(
                "{}: must be {want}, got {}",
                field("shape"),
                shown(v)
            ))
        }
        None => return bad(format!("{}: missing (must be {want})", field("shape"))),
    };
    let dims: Option<Vec<u64>> = shape.iter().map(Value::as_u64).collect();
    let rows = match dims.as_deref() {
        Some(&[n, k]) if k == features as u64 => n,
        _ => {
            return bad(format!(
                "{}: must be {want}, got {}",
                field("shape"),
                shown(&Value::Array(shape.clone()))
            ))
        }
    };
    if rows == 0 {
        return bad(format!(
            "{}: [0, {features}] holds no sample",
            field("shape")
        ));
    }
    let Some(data) = input.data else {
        return bad(format!("{}: missing", field("data")));
    };
    if !starts_with(data.get(), '[') {
        return bad(format!("{}: must be a list of numbers", field("data")));
    }
    let values = (rows as u128) * (features as u128);
    // Reserve by the shape only as far as the text could hold it (two
    // bytes a value at least): a lying shape allocates nothing.
    let mut x = Vec::with_capacity((values.min(data.get().len() as u128 / 2 + 1)) as usize);
    let mut de = serde_json::Deserializer::from_str(data.get());
    if let Err(e) = (Flat { out: &mut x }).deserialize(&mut de) {
        return bad(format!("{}[{}]: {}", field("data"), x.len(), bare(&e)));
    }
    if x.len() as u128 != values {
        return bad(format!(
            "{}: {} values, but the shape [{rows}, {features}] needs {values}",
            field("data"),
            x.len()
        ));
    }
    Ok((rows as usize, x))
}

/// The `outputs` list: the outputs asked for, in order; both without one.
fn parse_outputs(outputs: Option<&Value>) -> Result<Vec<OutputKind>, ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    let list = match outputs {
        None | Some(Value::Null) => return Ok(vec![OutputKind::Probabilities, OutputKind::Logits]),
        Some(Value::Array(l)) if l.is_empty() => {
            return Ok(vec![OutputKind::Probabilities, OutputKind::Logits])
        }
        Some(Value::Array(l)) => l,
        Some(v) => return bad(format!("outputs: must be a list, got {}", shown(v))),
    };
    let mut kinds = Vec::new();
    for (j, o) in list.iter().enumerate() {
        let kind = match o.get("name") {
            Some(Value::String(n)) if n == PROBABILITIES => OutputKind::Probabilities,
            Some(Value::String(n)) if n == LOGITS => OutputKind::Logits,
            Some(Value::String(n)) => {
                return bad(format!(
                    "outputs[{j}].name: the model's outputs are '{PROBABILITIES}' and '{LOGITS}', not '{n}'"
                ))
            }
            Some(v) => return bad(format!("outputs[{j}].name: must be a string, got {}", shown(v))),
            None if o.is_object() => return bad(format!("outputs[{j}].name: missing")),
            None => return bad(format!("outputs[{j}]: must be an object")),
        };
        if o.pointer("/parameters/classification").is_some() {
            return bad(format!(
                "outputs[{j}].parameters.classification: the classification extension is not supported"
            ));
        }
        if kinds.contains(&kind) {
            return bad(format!(
                "outputs[{j}]: '{}' is asked for twice",
                kind.name()
            ));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// A tensor's values, flat or nested, appended to `out` in row-major
/// order.
struct Flat<'v> {
    out: &'v mut Vec<f32>,
}

impl<'de> DeserializeSeed<'de> for Flat<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Flat<'_> {
    fn push<E: de::Error>(self, v: f64) -> Result<(), E> {
        let f = v as f32;
        if !f.is_finite() {
            return Err(E::custom(format!(
                "{v:e} is beyond the range of {DATATYPE}"
            )));
        }
        self.out.push(f);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Flat<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.out;
        while seq.next_element_seed(Flat { out: &mut *out })?.is_some() {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(v as f64)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom("a string, not a number"))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        Err(E::custom(format!("{v}, not a number")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom("null, not a number"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom("an object, not a number"))
    }
}

#[derive(Serialize)]
struct OutTensor<'a> {
    name: &'static str,
    datatype: &'static str,
    shape: [usize; 2],
    data: &'a [f32],
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutTensor<'a>>,
}

/// The response to `request` for model `model`, given its `rows × classes`
/// logits.
pub fn infer_response(
    model: &str,
    request: &InferRequest,
    logits: &[f32],
    classes: usize,
) -> Vec<u8> {
    let probs: Vec<f32> = if request.outputs.contains(&OutputKind::Probabilities) {
        logits
            .chunks_exact(classes)
            .flat_map(|z| crate::infer::softmax(z).into_iter().map(|p| p as f32))
            .collect()
    } else {
        Vec::new()
    };
    let shape = [request.rows, classes];
    let outputs = request
        .outputs
        .iter()
        .map(|&k| OutTensor {
            name: k.name(),
            datatype: DATATYPE,
            shape,
            data: match k {
                OutputKind::Probabilities => &probs,
                OutputKind::Logits => logits,
            },
        })
        .collect();
    let response = InferResponse {
        model_name: model,
        model_version: VERSION,
        id: request.id.as_deref(),
        outputs,
    };
    // Serialising plain strings and finite floats cannot fail.
    serde_json::to_vec(&response).unwrap_or_default()
}

/// `GET /v2`: the server's metadata.
pub fn server_metadata() -> Value {
    json!({
        "name": "idx-softmax",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    })
}

/// `GET /v2/models/NAME`: the model's metadata.
pub fn model_metadata(name: &str, features: usize, classes: usize) -> Value {
    let tensor = |n: &str, width: usize| json!({ "name": n, "datatype": DATATYPE, "shape": [-1, width as i64] });
    json!({
        "name": name,
        "versions": [VERSION],
        "platform": PLATFORM,
        "inputs": [tensor(INPUT, features)],
        "outputs": [tensor(PROBABILITIES, classes), tensor(LOGITS, classes)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        let e = parse_infer(body.as_bytes(), 2).unwrap_err();
        assert_eq!(e.status, 400, "{}", e.message);
        e.message
    }

    fn req(shape: &str, data: &str) -> String {
        format!(
            r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":{shape},"data":{data}}}]}}"#
        )
    }

    #[test]
    fn good_requests_flat_and_nested() {
        let r = parse_infer(req("[2,2]", "[1, 2.5, -3e2, 0]").as_bytes(), 2).unwrap();
        assert_eq!((r.rows, r.x.clone()), (2, vec![1.0, 2.5, -300.0, 0.0]));
        assert_eq!(r.outputs, [OutputKind::Probabilities, OutputKind::Logits]);
        assert_eq!(r.id, None);
        let nested = parse_infer(req("[2,2]", "[[1, 2.5], [-3e2, 0]]").as_bytes(), 2).unwrap();
        assert_eq!(nested.x, r.x);
        let body = r#"{"id":"a","parameters":{"binary_data_output":true},"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[0.5,1]}],"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}"#;
        let r = parse_infer(body.as_bytes(), 2).unwrap();
        assert_eq!(r.id.as_deref(), Some("a"));
        assert_eq!(r.outputs, [OutputKind::Logits]);
        let out = infer_response("m", &r, &[0.0, 1.0], 2);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["model_name"], "m");
        assert_eq!(v["outputs"][0]["name"], "logits");
        assert_eq!(v["outputs"][0]["shape"], json!([1, 2]));
        assert_eq!(v["outputs"][0]["data"], json!([0.0, 1.0]));
        assert!(v["outputs"].as_array().unwrap().len() == 1);
    }

    #[test]
    fn probabilities_are_the_f64_softmax_in_f32() {
        let r = parse_infer(req("[1,2]", "[0,0]").as_bytes(), 2).unwrap();
        let out = infer_response("m", &r, &[0.1, 0.3], 2);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let p = crate::infer::softmax(&[0.1, 0.3]);
        assert_eq!(
            v["outputs"][0]["data"][1].as_f64().unwrap() as f32,
            p[1] as f32
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .contains(r#""data":[0.1,0.3]"#));
    }

    #[test]
    fn every_bad_field_is_named() {
        assert!(err("").contains("empty"));
        assert!(err("{\"inputs\": [").contains("not valid JSON"));
        assert!(err("[1, 2]").contains("must be a JSON object"));
        assert!(err("{}").starts_with("inputs: missing"));
        assert!(err(r#"{"inputs": 3}"#).starts_with("inputs: must be a list"));
        assert!(err(r#"{"inputs": []}"#).contains("the request has 0"));
        assert!(err(r#"{"inputs": [1]}"#).starts_with("inputs[0]: must be an object"));
        assert!(err(r#"{"id": 3, "inputs": []}"#).starts_with("id: must be a string"));
        let named = |name: &str| {
            format!(
                r#"{{"inputs":[{{"name":{name},"datatype":"FP32","shape":[1,2],"data":[1,2]}}]}}"#
            )
        };
        assert!(err(&named("\"x\"")).starts_with("inputs[0].name: the model's input is 'input'"));
        assert!(err(&named("7")).starts_with("inputs[0].name: must be a string"));
        let typed =
            r#"{"inputs":[{"name":"input","datatype":"INT64","shape":[1,2],"data":[1,2]}]}"#;
        assert!(err(typed).starts_with("inputs[0].datatype: must be FP32"));
        assert!(err(&req("[1,3]", "[1,2,3]")).starts_with("inputs[0].shape: must be [n, 2]"));
        assert!(err(&req("[2]", "[1,2]")).starts_with("inputs[0].shape"));
        assert!(err(&req("[-1,2]", "[1,2]")).starts_with("inputs[0].shape"));
        assert!(err(&req("\"x\"", "[1,2]")).starts_with("inputs[0].shape"));
        assert!(err(&req("[0,2]", "[]")).contains("no sample"));
        assert_eq!(
            err(&req("[2,2]", "[1,2,3]")),
            "inputs[0].data: 3 values, but the shape [2, 2] needs 4"
        );
        assert_eq!(
            err(&req("[1,2]", "[1,\"2\"]")),
            "inputs[0].data[1]: a string, not a number"
        );
        assert_eq!(
            err(&req("[1,2]", "[1,null]")),
            "inputs[0].data[1]: null, not a number"
        );
        assert_eq!(
            err(&req("[1,2]", "[true,1]")),
            "inputs[0].data[0]: true, not a number"
        );
        assert_eq!(
            err(&req("[1,2]", "[1,{}]")),
            "inputs[0].data[1]: an object, not a number"
        );
        assert_eq!(
            err(&req("[1,2]", "[1,1e39]")),
            "inputs[0].data[1]: 1e39 is beyond the range of FP32"
        );
        assert!(
            err(&req("[1,2]", "[1,1e999]")).starts_with("inputs[0].data[1]: number out of range")
        );
        assert!(err(&req("[1,2]", "3")).starts_with("inputs[0].data: must be a list"));
        // A shape that lies about its size allocates nothing.
        assert!(err(&req("[1000000000000,2]", "[1,2]")).contains("needs 2000000000000"));
        let deep = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
        assert!(err(&req("[1,2]", &deep)).contains("recursion limit exceeded"));
        let outs = |o: &str| {
            format!(
                r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,2],"data":[1,2]}}],"outputs":{o}}}"#
            )
        };
        assert!(err(&outs(r#"[{"name":"x"}]"#)).starts_with("outputs[0].name: the model's outputs"));
        assert!(err(&outs(r#"[{"name":"logits"},{"name":"logits"}]"#)).contains("twice"));
        assert!(err(&outs(
            r#"[{"name":"logits","parameters":{"classification":2}}]"#
        ))
        .contains("classification"));
        assert!(err(&outs("{}")).starts_with("outputs: must be a list"));
        let binary = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}"#;
        assert!(err(binary).contains("binary tensor data is not supported"));
    }

    #[test]
    fn metadata() {
        let m = model_metadata("mnist", 784, 10);
        assert_eq!(m["inputs"][0]["shape"], json!([-1, 784]));
        assert_eq!(m["outputs"][0]["name"], "probabilities");
        assert_eq!(m["outputs"][1]["name"], "logits");
        assert_eq!(server_metadata()["name"], "idx-softmax");
    }
}
