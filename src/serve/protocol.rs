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
use std::cell::Cell;

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

/// An inference request as sent (`inputs` parsed, the rest kept as JSON
/// values to check).
#[derive(Default)]
struct RawRequest {
    id: Option<Value>,
    parameters: Option<Value>,
    inputs: Option<Vec<RawInput>>,
    outputs: Option<Value>,
}

/// One input tensor as sent, its `data` already parsed (the body is read
/// once).
#[derive(Default)]
struct RawInput {
    name: Option<Value>,
    shape: Option<Value>,
    datatype: Option<Value>,
    parameters: Option<Value>,
    data: Option<Vec<f32>>,
}

/// Where the parser is in a tensor's `data`, for the message of a syntax
/// error there (the parser's own errors carry no path).
#[derive(Default)]
struct Place {
    /// The input whose `data` is being read.
    input: Cell<Option<usize>>,
    /// Values read from it so far.
    index: Cell<usize>,
}

/// serde_json's message without its ` at line L column C`.
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

/// Whether a JSON text begins with `c` (after blanks).
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
    let place = Place::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = Request(&place)
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r));
    let raw = match parsed {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return bad(match place.input.get().map(|i| (i, place.index.get())) {
                Some((i, k)) if e.is_syntax() => {
                    format!("the request body is not valid JSON: inputs[{i}].data[{k}]: {e}")
                }
                _ => format!("the request body is not valid JSON: {e}"),
            });
        }
        Err(e) => {
            let msg = bare(&e);
            return bad(if msg.starts_with("inputs") {
                msg
            } else {
                format!("the request body: {msg}")
            });
        }
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
    let Some(mut inputs) = raw.inputs else {
        return bad(format!(
            "inputs: missing (the model takes one tensor, '{INPUT}', {DATATYPE} [n, {features}])"
        ));
    };
    if inputs.len() != 1 {
        return bad(format!(
            "inputs: the model takes one tensor, '{INPUT}', but the request has {}",
            inputs.len()
        ));
    }
    let (rows, x) = check_input(inputs.swap_remove(0), 0, features)?;
    Ok(InferRequest {
        id,
        rows,
        x,
        outputs,
    })
}

/// Checks `inputs[i]`; returns its rows and values.
fn check_input(input: RawInput, i: usize, features: usize) -> Result<(usize, Vec<f32>), ApiError> {
    let field = |f: &str| format!("inputs[{i}].{f}");
    let bad = |m: String| Err(ApiError::bad_request(m));
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
    let Some(x) = input.data else {
        return bad(format!("{}: missing", field("data")));
    };
    let values = (rows as u128) * (features as u128);
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

/// Visitor methods that refuse every JSON type but the ones a visitor
/// takes, with the message `$msg(&self)`.
macro_rules! refuse {
    ($msg:expr; $($method:ident($($arg:ty)?)),*) => {
        $(
            fn $method<E: de::Error>(self, $(_: $arg)?) -> Result<Self::Value, E> {
                Err(E::custom($msg(&self)))
            }
        )*
    };
}

/// The request object.
struct Request<'p>(&'p Place);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum RequestKey {
    Id,
    Parameters,
    Inputs,
    Outputs,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for Request<'_> {
    type Value = RawRequest;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<RawRequest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Request<'_> {
    type Value = RawRequest;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an inference request")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let mut r = RawRequest::default();
        while let Some(key) = map.next_key::<RequestKey>()? {
            let (slot, name) = match key {
                RequestKey::Id => (&mut r.id, "id"),
                RequestKey::Parameters => (&mut r.parameters, "parameters"),
                RequestKey::Outputs => (&mut r.outputs, "outputs"),
                RequestKey::Inputs => {
                    if r.inputs.is_some() {
                        return Err(de::Error::custom("inputs: given twice"));
                    }
                    r.inputs = map.next_value_seed(Inputs(self.0))?;
                    continue;
                }
                RequestKey::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!("{name}: given twice")));
            }
            *slot = Some(map.next_value()?);
        }
        Ok(r)
    }
}

/// `inputs`: a list of tensors (`null`: none).
struct Inputs<'p>(&'p Place);

impl Inputs<'_> {
    fn wrong(&self) -> String {
        "inputs: must be a list of tensors".to_owned()
    }
}

impl<'de> DeserializeSeed<'de> for Inputs<'_> {
    type Value = Option<Vec<RawInput>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Inputs<'_> {
    type Value = Option<Vec<RawInput>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of tensors")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut all = Vec::new();
        while let Some(input) = seq.next_element_seed(Input(all.len(), self.0))? {
            all.push(input);
        }
        Ok(Some(all))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(self.wrong()))
    }

    refuse!(Self::wrong; visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str));
}

/// `inputs[i]`: one tensor.
struct Input<'p>(usize, &'p Place);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum InputKey {
    Name,
    Shape,
    Datatype,
    Parameters,
    Data,
    #[serde(other)]
    Other,
}

impl Input<'_> {
    fn wrong(&self) -> String {
        format!("inputs[{}]: must be an object (a tensor)", self.0)
    }
}

impl<'de> DeserializeSeed<'de> for Input<'_> {
    type Value = RawInput;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<RawInput, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Input<'_> {
    type Value = RawInput;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a tensor")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawInput, A::Error> {
        let (i, place) = (self.0, self.1);
        let mut t = RawInput::default();
        let twice = |key: &str| de::Error::custom(format!("inputs[{i}].{key}: given twice"));
        while let Some(key) = map.next_key::<InputKey>()? {
            let (slot, name) = match key {
                InputKey::Name => (&mut t.name, "name"),
                InputKey::Shape => (&mut t.shape, "shape"),
                InputKey::Datatype => (&mut t.datatype, "datatype"),
                InputKey::Parameters => (&mut t.parameters, "parameters"),
                InputKey::Data => {
                    if t.data.is_some() {
                        return Err(twice("data"));
                    }
                    let mut x = Vec::new();
                    place.input.set(Some(i));
                    place.index.set(0);
                    map.next_value_seed(Flat {
                        out: &mut x,
                        input: i,
                        depth: 0,
                        place,
                    })?;
                    place.input.set(None);
                    t.data = Some(x);
                    continue;
                }
                InputKey::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(twice(name));
            }
            *slot = Some(map.next_value()?);
        }
        Ok(t)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawInput, A::Error> {
        Err(de::Error::custom(self.wrong()))
    }

    refuse!(Self::wrong; visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_unit());
}

/// A tensor's values, flat or nested, appended to `out` in row-major
/// order.
struct Flat<'v> {
    out: &'v mut Vec<f32>,
    input: usize,
    /// Lists entered (0: `data` itself, which must be a list).
    depth: usize,
    place: &'v Place,
}

impl<'de> DeserializeSeed<'de> for Flat<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Flat<'_> {
    /// `inputs[i].data[k]: why`, for the value about to be read.
    fn wrong(&self, why: &str) -> String {
        if self.depth == 0 {
            format!("inputs[{}].data: must be a list of numbers", self.input)
        } else {
            format!("inputs[{}].data[{}]: {why}", self.input, self.out.len())
        }
    }

    fn push<E: de::Error>(self, v: f64) -> Result<(), E> {
        if self.depth == 0 {
            return Err(E::custom(self.wrong("")));
        }
        let f = v as f32;
        if !f.is_finite() {
            return Err(E::custom(
                self.wrong(&format!("{v:e} is beyond the range of {DATATYPE}")),
            ));
        }
        self.out.push(f);
        self.place.index.set(self.out.len());
        Ok(())
    }
}

impl<'de> Visitor<'de> for Flat<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, input, depth, place) = (self.out, self.input, self.depth + 1, self.place);
        while seq
            .next_element_seed(Flat {
                out: &mut *out,
                input,
                depth,
                place,
            })?
            .is_some()
        {}
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
        Err(E::custom(self.wrong("a string, not a number")))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        Err(E::custom(self.wrong(&format!("{v}, not a number"))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(self.wrong("null, not a number")))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.wrong("an object, not a number")))
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
        assert!(err(&req("[1,2]", "[1,1e999]")).starts_with(
            "the request body is not valid JSON: inputs[0].data[1]: number out of range"
        ));
        assert!(err(&req("[1,2]", "[1,2")).contains("not valid JSON"));
        let twice = r#"{"inputs":[{"name":"input","name":"input","datatype":"FP32","shape":[1,2],"data":[1,2]}]}"#;
        assert_eq!(err(twice), "inputs[0].name: given twice");
        assert_eq!(err(r#"{"inputs":[],"inputs":[]}"#), "inputs: given twice");
        assert!(err(r#"{"inputs":[]} x"#).contains("trailing characters"));
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
