//! ONNX export: a builder for ONNX model files (`.onnx`), independent of the
//! network types, with helpers for the layers the trainer has (Gemm, Relu,
//! Softmax, Conv, MaxPool, Flatten, Reshape).
//!
//! An ONNX file is one protobuf `ModelProto` (onnx.proto, proto2 syntax).
//! The few messages and fields an inference graph of float tensors needs are
//! encoded here by hand rather than through a protobuf crate: the crates
//! that carry ONNX's message types either pin an old protobuf runtime
//! (`onnx-pb`: prost 0.6, bytes 0.5, protoc at build time) or fail to build
//! against the runtime cargo resolves today (`onnx-protobuf` 0.2.3's code is
//! generated for `protobuf` 3.4.0 and names `protobuf::VERSION_3_4_0`, which
//! 3.7 no longer defines), and the writer below is a page of code.
//!
//! The bytes are protobuf's canonical encoding: fields in field-number
//! order, proto2's unpacked form for `repeated int64` (`TensorProto.dims`,
//! `AttributeProto.ints`), tensor data in `raw_data` (little-endian, as
//! `onnx.numpy_helper` and PyTorch's exporter write it). Python's protobuf
//! re-serialises a parsed model to the same bytes, which
//! `tests/python/onnx_check.py` checks along with the `onnx` checker, shape
//! inference and onnxruntime's outputs.
//!
//! ```
//! use idx_softmax::onnx::{Dim, ModelBuilder};
//! let mut m = ModelBuilder::new("idx-softmax", "0.1.0", 13);
//! m.input("input", &[Dim::Param("batch"), Dim::Value(784)]);
//! m.initializer("weight", &[10, 784], &vec![0.0; 7840]);
//! m.initializer("bias", &[10], &[0.0; 10]);
//! m.gemm("input", "weight", "bias", "logits");
//! m.softmax("logits", "probabilities");
//! m.output("probabilities", &[Dim::Param("batch"), Dim::Value(10)]);
//! m.output("logits", &[Dim::Param("batch"), Dim::Value(10)]);
//! m.metadata("class_names", r#"["0","1","2","3","4","5","6","7","8","9"]"#);
//! let bytes = m.to_bytes()?;
//! # Ok::<(), idx_softmax::onnx::GraphError>(())
//! ```

use std::collections::HashSet;

/// The lowest opset [`ModelBuilder::new`] accepts. Softmax changed meaning
/// at 13: Softmax-13 normalises along `axis` alone, as the trainer's softmax
/// does, where Softmax-1 and -11 flattened the input to 2-D at `axis` first
/// (and defaulted to axis 1, not -1). The two agree on the 2-D logits the
/// helpers feed it, but 13 is also where every op the helpers emit reached
/// its present form: later versions of Relu, Conv, MaxPool, Flatten and
/// Reshape only add element types, and Reshape-14's `allowzero` defaults to
/// Reshape-13's meaning.
pub const MIN_OPSET: i64 = 13;
/// The opset the exporter writes: 13 (onnx 1.8, 2020),
/// the oldest that has every op the helpers use in its present form, so
/// the widest range of runtimes reads the file.
pub const DEFAULT_OPSET: i64 = 13;

/// The IR version that goes with `opset` of the default (`ai.onnx`)
/// domain: the IR version of the onnx release that introduced that opset,
/// from `onnx.helper.VERSION_TABLE` (onnx 1.23). `None` past the table's
/// newest opset (28) or below 1.
pub fn ir_version_for_opset(opset: i64) -> Option<i64> {
    Some(match opset {
        1..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        23 => 11,
        24 => 12,
        25..=27 => 13,
        28 => 14,
        _ => return None,
    })
}

/// One dimension of a graph input's or output's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim<'a> {
    /// A symbolic dimension, fixed when the model runs (`"batch"`);
    /// `TensorShapeProto.Dimension.dim_param`.
    Param(&'a str),
    /// A fixed size; `TensorShapeProto.Dimension.dim_value`.
    Value(i64),
}

/// A node attribute: `Attr::int("axis", 1)`, `Attr::ints("pads", &[2; 4])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    name: String,
    value: AttrValue,
}

#[derive(Debug, Clone, PartialEq)]
enum AttrValue {
    Float(f32),
    Int(i64),
    String(String),
    Ints(Vec<i64>),
}

impl Attr {
    /// An `INT` attribute.
    pub fn int(name: &str, value: i64) -> Self {
        Self::new(name, AttrValue::Int(value))
    }
    /// A `FLOAT` attribute.
    pub fn float(name: &str, value: f32) -> Self {
        Self::new(name, AttrValue::Float(value))
    }
    /// A `STRING` attribute (UTF-8).
    pub fn string(name: &str, value: &str) -> Self {
        Self::new(name, AttrValue::String(value.to_owned()))
    }
    /// An `INTS` attribute.
    pub fn ints(name: &str, values: &[i64]) -> Self {
        Self::new(name, AttrValue::Ints(values.to_vec()))
    }
    fn new(name: &str, value: AttrValue) -> Self {
        Self {
            name: name.to_owned(),
            value,
        }
    }
}

/// A graph the builder will not write: it would fail the `onnx` checker or
/// not run. One line, naming the value or node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ONNX graph: {0}")]
pub struct GraphError(String);

/// Builds one ONNX model: graph inputs and outputs (float32), initializers,
/// nodes in execution order, metadata. Nothing is checked until
/// [`to_bytes`](Self::to_bytes).
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    producer: String,
    version: String,
    opset: i64,
    ir_version: i64,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
    initializers: Vec<Tensor>,
    nodes: Vec<Node>,
    metadata: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct ValueInfo {
    name: String,
    dims: Vec<StoredDim>,
}

/// [`Dim`], owned.
#[derive(Debug, Clone)]
enum StoredDim {
    Param(String),
    Value(i64),
}

#[derive(Debug, Clone)]
struct Tensor {
    name: String,
    dims: Vec<i64>,
    data: TensorData,
}

#[derive(Debug, Clone)]
enum TensorData {
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

#[derive(Debug, Clone)]
struct Node {
    op_type: String,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: Vec<Attr>,
}

impl ModelBuilder {
    /// A model produced by `producer` `version` (`ModelProto.producer_name`,
    /// `.producer_version`; the graph is named after the producer) importing
    /// `opset` of the default domain, with the IR version that goes with it
    /// ([`ir_version_for_opset`]).
    ///
    /// # Panics
    ///
    /// If `opset` is below [`MIN_OPSET`] or newer than the IR table knows:
    /// the exporter names its opset as a constant, so either is a bug.
    pub fn new(producer: &str, version: &str, opset: i64) -> Self {
        assert!(
            opset >= MIN_OPSET,
            "ONNX opset {opset}: the helpers need opset {MIN_OPSET} or newer"
        );
        let ir_version = ir_version_for_opset(opset)
            .unwrap_or_else(|| panic!("ONNX opset {opset}: no IR version known for it"));
        Self {
            producer: producer.to_owned(),
            version: version.to_owned(),
            opset,
            ir_version,
            inputs: Vec::new(),
            outputs: Vec::new(),
            initializers: Vec::new(),
            nodes: Vec::new(),
            metadata: Vec::new(),
        }
    }

    /// The opset imported.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// The IR version written (`ModelProto.ir_version`).
    pub fn ir_version(&self) -> i64 {
        self.ir_version
    }

    /// A float32 graph input of shape `dims`.
    pub fn input(&mut self, name: &str, dims: &[Dim]) {
        self.inputs.push(ValueInfo::new(name, dims));
    }

    /// A float32 graph output of shape `dims`, in the order added.
    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        self.outputs.push(ValueInfo::new(name, dims));
    }

    /// A float32 constant tensor (weights), `data` in row-major order.
    pub fn initializer(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        self.initializers.push(Tensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            data: TensorData::Float(data.to_vec()),
        });
    }

    /// An int64 constant tensor (the shape operand of a Reshape).
    pub fn initializer_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) {
        self.initializers.push(Tensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            data: TensorData::Int64(data.to_vec()),
        });
    }

    /// A node of the default domain, after those already added (ONNX
    /// requires nodes in topological order). An empty input name stands
    /// for an omitted optional input. The node is named `{op}_{index}`.
    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Attr]) {
        let owned = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        self.nodes.push(Node {
            op_type: op.to_owned(),
            name: format!("{op}_{}", self.nodes.len()),
            inputs: owned(inputs),
            outputs: owned(outputs),
            attrs: attrs.to_vec(),
        });
    }

    /// A `metadata_props` entry (keys must be unique).
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.metadata.push((key.to_owned(), value.to_owned()));
    }

    /// `out = x · wᵀ + b` (Gemm with `transB = 1`): `w` is `[out, in]`, as
    /// the trainer's and PyTorch's Linear weights are, `b` is `[out]`
    /// broadcast over the rows of the 2-D `x`.
    pub fn gemm(&mut self, x: &str, w: &str, b: &str, out: &str) {
        self.node("Gemm", &[x, w, b], &[out], &[Attr::int("transB", 1)]);
    }

    /// `out = max(x, 0)`.
    pub fn relu(&mut self, x: &str, out: &str) {
        self.node("Relu", &[x], &[out], &[]);
    }

    /// Softmax over axis 1, the classes of `[batch, classes]` logits. The
    /// axis is written out: the default is -1 since opset 13 (1 before),
    /// the same axis for 2-D logits, but naming it leaves nothing to the
    /// opset. See [`MIN_OPSET`] for what else changed at 13.
    pub fn softmax(&mut self, x: &str, out: &str) {
        self.node("Softmax", &[x], &[out], &[Attr::int("axis", 1)]);
    }

    /// A 2-D convolution of NCHW `x` by `w` `[out_channels, in_channels,
    /// kernel[0], kernel[1]]` plus `b` `[out_channels]`: stride 1, no
    /// dilation, one group, `pad` zeros on every side (`pads = [p, p, p,
    /// p]`: begin H, begin W, end H, end W).
    pub fn conv(&mut self, x: &str, w: &str, b: &str, out: &str, kernel: [i64; 2], pad: i64) {
        let attrs = [
            Attr::ints("kernel_shape", &kernel),
            Attr::ints("pads", &[pad; 4]),
            Attr::ints("strides", &[1, 1]),
        ];
        self.node("Conv", &[x, w, b], &[out], &attrs);
    }

    /// Max pooling of NCHW `x` over `size × size` windows with stride
    /// `size`, no padding: an odd edge row or column is dropped
    /// (`ceil_mode = 0`, the default).
    pub fn max_pool(&mut self, x: &str, out: &str, size: i64) {
        let attrs = [
            Attr::ints("kernel_shape", &[size, size]),
            Attr::ints("strides", &[size, size]),
        ];
        self.node("MaxPool", &[x], &[out], &attrs);
    }

    /// `x` as `[batch, everything else]` in row-major order (Flatten with
    /// `axis = 1`): NCHW features become the C·H·W vector a Linear layer
    /// after a CNN's last pooling reads.
    pub fn flatten(&mut self, x: &str, out: &str) {
        self.node("Flatten", &[x], &[out], &[Attr::int("axis", 1)]);
    }

    /// `x` reshaped to `shape` (`-1`: the size that the element count
    /// leaves; `0`: the input's size there). The shape becomes an int64
    /// initializer named `{out}_shape`.
    ///
    /// For a CNN's `[batch, C·H·W]` input, `[0, C, H, W]` keeps the batch
    /// dimension's name through shape inference and refuses an input of the
    /// wrong width; `[-1, C, H, W]` leaves the batch unnamed after the
    /// Reshape and would read a `[batch, 2·C·H·W]` input as `2·batch`
    /// images.
    pub fn reshape(&mut self, x: &str, out: &str, shape: &[i64]) {
        let shape_name = format!("{out}_shape");
        self.initializer_i64(&shape_name, &[shape.len() as i64], shape);
        self.node("Reshape", &[x, &shape_name], &[out], &[]);
    }

    /// The model file's bytes, after checking that the graph is one the
    /// `onnx` checker accepts: every value named and defined once (graph
    /// input, initializer or node output), every node input defined by an
    /// earlier node or the graph, every graph output defined, initializer
    /// data matching its dims, metadata keys unique.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GraphError> {
        self.validate()?;
        Ok(self.encode())
    }

    fn validate(&self) -> Result<(), GraphError> {
        let mut values = Values::default();
        for v in &self.inputs {
            values.define(&v.name, || "a graph input".into())?;
        }
        for t in &self.initializers {
            values.define(&t.name, || "an initializer".into())?;
            t.validate()?;
        }
        for node in &self.nodes {
            let what = || format!("node {} ({})", node.name, node.op_type);
            for input in node.inputs.iter().filter(|i| !i.is_empty()) {
                if !values.is_defined(input) {
                    return Err(GraphError(format!(
                        "{} reads `{input}`, which no graph input, initializer or \
                         earlier node defines",
                        what()
                    )));
                }
            }
            for output in &node.outputs {
                values.define(output, what)?;
            }
        }
        let mut outputs = HashSet::new();
        for v in &self.outputs {
            if !values.is_defined(&v.name) {
                return Err(GraphError(format!(
                    "graph output `{}` is not defined by the graph",
                    v.name
                )));
            }
            if !outputs.insert(v.name.as_str()) {
                return Err(GraphError(format!(
                    "graph output `{}` is listed twice",
                    v.name
                )));
            }
        }
        let mut keys = HashSet::new();
        for (key, _) in &self.metadata {
            if !keys.insert(key.as_str()) {
                return Err(GraphError(format!("metadata key `{key}` is set twice")));
            }
        }
        Ok(())
    }

    /// `ModelProto`, its fields in field-number order.
    fn encode(&self) -> Vec<u8> {
        use field::model as f;
        let mut buf = Vec::new();
        wire::int(&mut buf, f::IR_VERSION, self.ir_version);
        wire::string(&mut buf, f::PRODUCER_NAME, &self.producer);
        wire::string(&mut buf, f::PRODUCER_VERSION, &self.version);
        wire::message(&mut buf, f::GRAPH, |b| self.encode_graph(b));
        wire::message(&mut buf, f::OPSET_IMPORT, |b| {
            // OperatorSetIdProto; the empty domain is the default `ai.onnx`.
            wire::string(b, field::opset_id::DOMAIN, "");
            wire::int(b, field::opset_id::VERSION, self.opset);
        });
        for (key, value) in &self.metadata {
            wire::message(&mut buf, f::METADATA_PROPS, |b| {
                // StringStringEntryProto
                wire::string(b, field::string_entry::KEY, key);
                wire::string(b, field::string_entry::VALUE, value);
            });
        }
        buf
    }

    /// `GraphProto`.
    fn encode_graph(&self, buf: &mut Vec<u8>) {
        use field::graph as f;
        for node in &self.nodes {
            wire::message(buf, f::NODE, |b| node.encode(b));
        }
        wire::string(buf, f::NAME, &self.producer);
        for t in &self.initializers {
            wire::message(buf, f::INITIALIZER, |b| t.encode(b));
        }
        for v in &self.inputs {
            wire::message(buf, f::INPUT, |b| v.encode(b));
        }
        for v in &self.outputs {
            wire::message(buf, f::OUTPUT, |b| v.encode(b));
        }
    }
}

/// The values a graph has defined so far, for [`ModelBuilder::validate`].
#[derive(Default)]
struct Values<'a>(HashSet<&'a str>);

impl<'a> Values<'a> {
    fn define(&mut self, name: &'a str, what: impl FnOnce() -> String) -> Result<(), GraphError> {
        if name.is_empty() {
            return Err(GraphError(format!(
                "{} defines a value with no name",
                what()
            )));
        }
        if !self.0.insert(name) {
            return Err(GraphError(format!(
                "value `{name}` is defined twice (again by {})",
                what()
            )));
        }
        Ok(())
    }

    fn is_defined(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

impl ValueInfo {
    fn new(name: &str, dims: &[Dim]) -> Self {
        let dims = dims
            .iter()
            .map(|d| match *d {
                Dim::Param(p) => StoredDim::Param(p.to_owned()),
                Dim::Value(v) => StoredDim::Value(v),
            })
            .collect();
        Self {
            name: name.to_owned(),
            dims,
        }
    }

    /// `ValueInfoProto` of a float tensor.
    fn encode(&self, buf: &mut Vec<u8>) {
        wire::string(buf, field::value_info::NAME, &self.name);
        wire::message(buf, field::value_info::TYPE, |b| {
            wire::message(b, field::type_proto::TENSOR_TYPE, |b| {
                wire::int(b, field::type_tensor::ELEM_TYPE, data_type::FLOAT);
                wire::message(b, field::type_tensor::SHAPE, |b| {
                    for d in &self.dims {
                        wire::message(b, field::shape::DIM, |b| match d {
                            StoredDim::Value(v) => wire::int(b, field::dimension::DIM_VALUE, *v),
                            StoredDim::Param(p) => wire::string(b, field::dimension::DIM_PARAM, p),
                        });
                    }
                });
            });
        });
    }
}

impl Tensor {
    fn validate(&self) -> Result<(), GraphError> {
        if let Some(d) = self.dims.iter().find(|&&d| d < 0) {
            return Err(GraphError(format!(
                "initializer `{}` has a negative dimension ({d})",
                self.name
            )));
        }
        let expected = self.dims.iter().product::<i64>();
        let len = match &self.data {
            TensorData::Float(v) => v.len(),
            TensorData::Int64(v) => v.len(),
        };
        if i64::try_from(len) != Ok(expected) {
            return Err(GraphError(format!(
                "initializer `{}` has {len} elements for dims {:?} ({expected})",
                self.name, self.dims
            )));
        }
        Ok(())
    }

    /// `TensorProto`, the data in `raw_data`: little-endian whatever the
    /// host, as the format specifies.
    fn encode(&self, buf: &mut Vec<u8>) {
        use field::tensor as f;
        for &d in &self.dims {
            wire::int(buf, f::DIMS, d);
        }
        let (ty, raw) = match &self.data {
            TensorData::Float(v) => (data_type::FLOAT, le_bytes(v, |x| x.to_le_bytes())),
            TensorData::Int64(v) => (data_type::INT64, le_bytes(v, |x| x.to_le_bytes())),
        };
        wire::int(buf, f::DATA_TYPE, ty);
        wire::string(buf, f::NAME, &self.name);
        wire::bytes(buf, f::RAW_DATA, &raw);
    }
}

/// The concatenated little-endian bytes of `values`.
fn le_bytes<T: Copy, const N: usize>(values: &[T], to_le: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

impl Node {
    /// `NodeProto`.
    fn encode(&self, buf: &mut Vec<u8>) {
        use field::node as f;
        for input in &self.inputs {
            wire::string(buf, f::INPUT, input);
        }
        for output in &self.outputs {
            wire::string(buf, f::OUTPUT, output);
        }
        wire::string(buf, f::NAME, &self.name);
        wire::string(buf, f::OP_TYPE, &self.op_type);
        for attr in &self.attrs {
            wire::message(buf, f::ATTRIBUTE, |b| attr.encode(b));
        }
    }
}

impl Attr {
    /// `AttributeProto`: the name, the one value field in use, and `type`,
    /// which names that field (required since IR version 2, and written
    /// last because its field number, 20, is the highest).
    fn encode(&self, buf: &mut Vec<u8>) {
        use field::attribute as f;
        wire::string(buf, f::NAME, &self.name);
        let ty = match &self.value {
            AttrValue::Float(v) => {
                wire::float(buf, f::F, *v);
                attribute_type::FLOAT
            }
            AttrValue::Int(v) => {
                wire::int(buf, f::I, *v);
                attribute_type::INT
            }
            AttrValue::String(s) => {
                wire::string(buf, f::S, s);
                attribute_type::STRING
            }
            AttrValue::Ints(v) => {
                for &i in v {
                    wire::int(buf, f::INTS, i);
                }
                attribute_type::INTS
            }
        };
        wire::int(buf, f::TYPE, ty);
    }
}

/// Field numbers of the messages written, by message and field name as in
/// onnx.proto (onnx 1.23, whose `onnx/onnx.proto` is the authority; field
/// numbers never change between versions).
mod field {
    /// `ModelProto`.
    pub mod model {
        pub const IR_VERSION: u32 = 1;
        pub const PRODUCER_NAME: u32 = 2;
        pub const PRODUCER_VERSION: u32 = 3;
        pub const GRAPH: u32 = 7;
        pub const OPSET_IMPORT: u32 = 8;
        pub const METADATA_PROPS: u32 = 14;
    }
    /// `OperatorSetIdProto`.
    pub mod opset_id {
        pub const DOMAIN: u32 = 1;
        pub const VERSION: u32 = 2;
    }
    /// `StringStringEntryProto`.
    pub mod string_entry {
        pub const KEY: u32 = 1;
        pub const VALUE: u32 = 2;
    }
    /// `GraphProto`.
    pub mod graph {
        pub const NODE: u32 = 1;
        pub const NAME: u32 = 2;
        pub const INITIALIZER: u32 = 5;
        pub const INPUT: u32 = 11;
        pub const OUTPUT: u32 = 12;
    }
    /// `NodeProto`.
    pub mod node {
        pub const INPUT: u32 = 1;
        pub const OUTPUT: u32 = 2;
        pub const NAME: u32 = 3;
        pub const OP_TYPE: u32 = 4;
        pub const ATTRIBUTE: u32 = 5;
    }
    /// `AttributeProto`.
    pub mod attribute {
        pub const NAME: u32 = 1;
        pub const F: u32 = 2;
        pub const I: u32 = 3;
        pub const S: u32 = 4;
        pub const INTS: u32 = 8;
        pub const TYPE: u32 = 20;
    }
    /// `TensorProto`.
    pub mod tensor {
        pub const DIMS: u32 = 1;
        pub const DATA_TYPE: u32 = 2;
        pub const NAME: u32 = 8;
        pub const RAW_DATA: u32 = 9;
    }
    /// `ValueInfoProto`.
    pub mod value_info {
        pub const NAME: u32 = 1;
        pub const TYPE: u32 = 2;
    }
    /// `TypeProto` (the `value` oneof's tensor case).
    pub mod type_proto {
        pub const TENSOR_TYPE: u32 = 1;
    }
    /// `TypeProto.Tensor`.
    pub mod type_tensor {
        pub const ELEM_TYPE: u32 = 1;
        pub const SHAPE: u32 = 2;
    }
    /// `TensorShapeProto`.
    pub mod shape {
        pub const DIM: u32 = 1;
    }
    /// `TensorShapeProto.Dimension` (the `value` oneof).
    pub mod dimension {
        pub const DIM_VALUE: u32 = 1;
        pub const DIM_PARAM: u32 = 2;
    }
}

/// `TensorProto.DataType` values (also `TypeProto.Tensor.elem_type`).
mod data_type {
    pub const FLOAT: i64 = 1;
    pub const INT64: i64 = 7;
}

/// `AttributeProto.AttributeType` values.
mod attribute_type {
    pub const FLOAT: i64 = 1;
    pub const INT: i64 = 2;
    pub const STRING: i64 = 3;
    pub const INTS: i64 = 7;
}

/// The protobuf wire format (protobuf.dev/programming-guides/encoding):
/// every field is a key, `field_number << 3 | wire_type` as a varint, then
/// its value.
mod wire {
    /// Wire type of int32, int64 and enum values (`VARINT`).
    const VARINT: u32 = 0;
    /// Wire type of strings, bytes, sub-messages and packed repeats (`LEN`).
    const LEN: u32 = 2;
    /// Wire type of float (`I32`).
    const I32: u32 = 5;

    /// Base 128, least significant group first, the high bit of each byte
    /// set while more follow.
    pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            buf.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    }

    pub fn key(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
        varint(buf, u64::from(field) << 3 | u64::from(wire_type));
    }

    /// An int64, int32 or enum field. These are not zigzag-encoded
    /// (sint64 is): a negative value is its 64-bit two's complement, ten
    /// bytes long.
    pub fn int(buf: &mut Vec<u8>, field: u32, v: i64) {
        key(buf, field, VARINT);
        varint(buf, v as u64);
    }

    /// A float field: four little-endian bytes.
    pub fn float(buf: &mut Vec<u8>, field: u32, v: f32) {
        key(buf, field, I32);
        buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A length-delimited field: the length in bytes as a varint, then
    /// the bytes.
    pub fn bytes(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
        key(buf, field, LEN);
        varint(buf, data.len() as u64);
        buf.extend_from_slice(data);
    }

    /// A string field: its UTF-8 bytes.
    pub fn string(buf: &mut Vec<u8>, field: u32, s: &str) {
        bytes(buf, field, s.as_bytes());
    }

    /// A sub-message field: `body` encodes the message into a buffer of its
    /// own, since its length comes first. (Each level of nesting copies
    /// the bytes below it once; a model is a few levels deep and a few
    /// megabytes at most.)
    pub fn message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
        let mut inner = Vec::new();
        body(&mut inner);
        bytes(buf, field, &inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut buf = Vec::new();
        f(&mut buf);
        buf
    }

    #[test]
    fn varints_are_base_128_least_significant_group_first() {
        let cases: [(u64, &[u8]); 7] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            // The protobuf encoding guide's examples.
            (150, &[0x96, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, bytes) in cases {
            assert_eq!(encoded(|b| wire::varint(b, v)), bytes, "{v}");
        }
    }

    #[test]
    fn fields_carry_their_key() {
        // The encoding guide's `Test1 { a: 150 }` and `Test2 { b: "testing" }`.
        assert_eq!(encoded(|b| wire::int(b, 1, 150)), [0x08, 0x96, 0x01]);
        assert_eq!(
            encoded(|b| wire::string(b, 2, "testing")),
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        // int64 is not zigzag-encoded: -1 is ten bytes of two's complement.
        let mut minus_one = vec![0x08];
        minus_one.extend([0xff; 9]);
        minus_one.push(0x01);
        assert_eq!(encoded(|b| wire::int(b, 1, -1)), minus_one);
        // A float is wire type 5, four little-endian bytes; field 2 is
        // AttributeProto.f.
        assert_eq!(
            encoded(|b| wire::float(b, 2, 1.0)),
            [0x15, 0x00, 0x00, 0x80, 0x3f]
        );
        // AttributeProto.type is field 20: a two-byte key.
        assert_eq!(encoded(|b| wire::int(b, 20, 7)), [0xa0, 0x01, 0x07]);
        // A sub-message is length-delimited.
        assert_eq!(
            encoded(|b| wire::message(b, 3, |b| wire::int(b, 1, 150))),
            [0x1a, 0x03, 0x08, 0x96, 0x01]
        );
    }

    #[test]
    fn tensor_data_is_little_endian_raw_data() {
        let t = Tensor {
            name: "w".into(),
            dims: vec![2],
            data: TensorData::Float(vec![1.0, -2.0]),
        };
        assert_eq!(
            encoded(|b| t.encode(b)),
            [
                0x08, 0x02, // dims: 2
                0x10, 0x01, // data_type: FLOAT
                0x42, 0x01, b'w', // name
                0x4a, 0x08, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, // raw_data
            ]
        );
        let t = Tensor {
            name: "s".into(),
            dims: vec![2],
            data: TensorData::Int64(vec![-1, 784]),
        };
        let mut raw = (-1i64).to_le_bytes().to_vec();
        raw.extend(784i64.to_le_bytes());
        let mut expected = vec![0x08, 0x02, 0x10, 0x07, 0x42, 0x01, b's', 0x4a, 0x10];
        expected.extend(raw);
        assert_eq!(encoded(|b| t.encode(b)), expected);
    }

    #[test]
    fn repeated_ints_are_unpacked_as_proto2_writes_them() {
        assert_eq!(
            encoded(|b| Attr::ints("pads", &[2, 2]).encode(b)),
            [0x0a, 0x04, b'p', b'a', b'd', b's', 0x40, 0x02, 0x40, 0x02, 0xa0, 0x01, 0x07]
        );
        assert_eq!(
            encoded(|b| Attr::float("alpha", 0.5).encode(b)),
            [
                0x0a, 0x05, b'a', b'l', b'p', b'h', b'a', 0x15, 0x00, 0x00, 0x00, 0x3f, 0xa0, 0x01,
                0x01
            ]
        );
        assert_eq!(
            encoded(|b| Attr::string("mode", "x").encode(b)),
            [0x0a, 0x04, b'm', b'o', b'd', b'e', 0x22, 0x01, b'x', 0xa0, 0x01, 0x03]
        );
    }

    fn tiny() -> ModelBuilder {
        let mut m = ModelBuilder::new("t", "1", 13);
        m.input("x", &[Dim::Param("N"), Dim::Value(2)]);
        m.initializer("w", &[2], &[1.0, -2.0]);
        m.node("Mul", &["x", "w"], &["y"], &[]);
        m.softmax("y", "z");
        m.output("z", &[Dim::Param("N"), Dim::Value(2)]);
        m.metadata("k", "v");
        m
    }

    /// The bytes of a small model are fixed. They equal, byte for byte,
    /// what onnx 1.23 (Python protobuf) serialises for the model built
    /// with `onnx.helper.make_model(make_graph([make_node("Mul", ["x",
    /// "w"], ["y"], name="Mul_0"), make_node("Softmax", ["y"], ["z"],
    /// name="Softmax_1", axis=1)], "t", [make_tensor_value_info("x",
    /// FLOAT, ["N", 2])], [make_tensor_value_info("z", FLOAT, ["N", 2])],
    /// [numpy_helper.from_array(np.array([1, -2], np.float32), "w")]),
    /// producer_name="t", producer_version="1", opset_imports=
    /// [make_opsetid("", 13)], ir_version=7)` with `set_model_props(m,
    /// {"k": "v"})`, which also passes `check_model(full_check=True)`.
    #[test]
    fn a_tiny_models_bytes_are_stable() {
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x08, 0x07, // ir_version 7
            0x12, 0x01, b't', // producer_name
            0x1a, 0x01, b'1', // producer_version
            0x3a, 0x82, 0x01, // graph, 130 bytes
                0x0a, 0x15, // node
                    0x0a, 0x01, b'x', 0x0a, 0x01, b'w', 0x12, 0x01, b'y',
                    0x1a, 0x05, b'M', b'u', b'l', b'_', b'0', 0x22, 0x03, b'M', b'u', b'l',
                0x0a, 0x27, // node
                    0x0a, 0x01, b'y', 0x12, 0x01, b'z',
                    0x1a, 0x09, b'S', b'o', b'f', b't', b'm', b'a', b'x', b'_', b'1',
                    0x22, 0x07, b'S', b'o', b'f', b't', b'm', b'a', b'x',
                    0x2a, 0x0b, 0x0a, 0x04, b'a', b'x', b'i', b's', 0x18, 0x01, 0xa0, 0x01, 0x02,
                0x12, 0x01, b't', // name
                0x2a, 0x11, // initializer
                    0x08, 0x02, 0x10, 0x01, 0x42, 0x01, b'w',
                    0x4a, 0x08, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0,
                0x5a, 0x14, // input
                    0x0a, 0x01, b'x', 0x12, 0x0f, 0x0a, 0x0d, 0x08, 0x01, 0x12, 0x09,
                    0x0a, 0x03, 0x12, 0x01, b'N', 0x0a, 0x02, 0x08, 0x02,
                0x62, 0x14, // output
                    0x0a, 0x01, b'z', 0x12, 0x0f, 0x0a, 0x0d, 0x08, 0x01, 0x12, 0x09,
                    0x0a, 0x03, 0x12, 0x01, b'N', 0x0a, 0x02, 0x08, 0x02,
            0x42, 0x04, 0x0a, 0x00, 0x10, 0x0d, // opset_import: "" 13
            0x72, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', // metadata_props
        ];
        assert_eq!(tiny().to_bytes().unwrap(), expected);
    }

    #[test]
    fn ir_version_follows_the_opset() {
        assert_eq!(ir_version_for_opset(13), Some(7));
        assert_eq!(ir_version_for_opset(17), Some(8));
        assert_eq!(ir_version_for_opset(21), Some(10));
        assert_eq!(ir_version_for_opset(29), None);
        let m = ModelBuilder::new("t", "1", DEFAULT_OPSET);
        assert_eq!((m.opset(), m.ir_version()), (13, 7));
    }

    #[test]
    #[should_panic(expected = "opset 12")]
    fn opsets_before_13_are_refused() {
        ModelBuilder::new("t", "1", 12);
    }

    #[test]
    fn graphs_the_checker_would_reject_are_refused() {
        let err = |m: ModelBuilder| m.to_bytes().unwrap_err().to_string();

        let mut m = tiny();
        m.relu("missing", "r");
        assert!(err(m).contains("node Relu_2 (Relu) reads `missing`"));

        let mut m = tiny();
        m.relu("x", "y");
        assert!(err(m).contains("value `y` is defined twice (again by node Relu_2"));

        let mut m = tiny();
        m.initializer("x", &[1], &[0.0]);
        assert!(err(m).contains("value `x` is defined twice (again by an initializer)"));

        let mut m = tiny();
        m.initializer("v", &[2, 3], &[0.0; 5]);
        assert!(err(m).contains("`v` has 5 elements for dims [2, 3] (6)"));

        let mut m = tiny();
        m.initializer_i64("n", &[-1], &[]);
        assert!(err(m).contains("negative dimension"));

        let mut m = tiny();
        m.output("nowhere", &[]);
        assert!(err(m).contains("`nowhere` is not defined"));

        let mut m = tiny();
        m.output("z", &[]);
        assert!(err(m).contains("`z` is listed twice"));

        let mut m = tiny();
        m.metadata("k", "again");
        assert!(err(m).contains("metadata key `k` is set twice"));

        let mut m = tiny();
        m.node("Relu", &["x"], &[""], &[]);
        assert!(err(m).contains("defines a value with no name"));

        // An empty input is an omitted optional one, not an error.
        let mut m = tiny();
        m.node("Conv", &["x", "w", ""], &["c"], &[]);
        m.to_bytes().unwrap();
    }

    #[test]
    fn helpers_write_the_attributes_the_layers_mean() {
        let mut m = ModelBuilder::new("t", "1", 13);
        m.gemm("x", "w", "b", "y");
        m.conv("x", "w", "b", "c", [5, 3], 2);
        m.max_pool("c", "p", 2);
        m.flatten("p", "f");
        m.reshape("x", "r", &[-1, 1, 28, 28]);
        let attrs: Vec<_> = m
            .nodes
            .iter()
            .map(|n| (n.op_type.as_str(), &n.attrs))
            .collect();
        assert_eq!(attrs[0], ("Gemm", &vec![Attr::int("transB", 1)]));
        assert_eq!(
            attrs[1],
            (
                "Conv",
                &vec![
                    Attr::ints("kernel_shape", &[5, 3]),
                    Attr::ints("pads", &[2, 2, 2, 2]),
                    Attr::ints("strides", &[1, 1])
                ]
            )
        );
        assert_eq!(
            attrs[2],
            (
                "MaxPool",
                &vec![
                    Attr::ints("kernel_shape", &[2, 2]),
                    Attr::ints("strides", &[2, 2])
                ]
            )
        );
        assert_eq!(attrs[3], ("Flatten", &vec![Attr::int("axis", 1)]));
        assert_eq!(m.nodes[4].inputs, ["x", "r_shape"]);
        let shape = &m.initializers[0];
        assert_eq!((shape.name.as_str(), &shape.dims), ("r_shape", &vec![4]));
        assert!(matches!(&shape.data, TensorData::Int64(v) if v == &[-1, 1, 28, 28]));
    }
}

/// The ONNX model of `net`: one input `input`, float32 `[batch,
/// features]`, holding pixels scaled as in training (u8 / 255); two
/// outputs, `probabilities` (softmax over the classes) and `logits`, both
/// `[batch, classes]`. The layers are the network's, in order: a CNN's
/// input is reshaped to `[batch, C, H, W]`, each conv block is Conv →
/// Relu → MaxPool, then Flatten, and each linear layer a Gemm (→ Relu).
/// The initializers carry the checkpoint's tensor names (`0.weight`, …).
/// `metadata` goes into `metadata_props` (class names, the run's record).
pub fn export(
    net: &crate::nn::Network,
    metadata: &[(String, String)],
) -> Result<Vec<u8>, GraphError> {
    use crate::nn::Layer;
    let mut m = ModelBuilder::new("idx-softmax", env!("CARGO_PKG_VERSION"), DEFAULT_OPSET);
    let (k, c) = (net.features() as i64, net.classes() as i64);
    m.input("input", &[Dim::Param("batch"), Dim::Value(k)]);
    let params = net.params();
    for (i, t) in params.tensors().iter().enumerate() {
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        m.initializer(&t.name, &dims, params.get(i));
    }
    let name = |i: usize| params.tensors()[i].name.as_str();
    let mut x = "input".to_owned();
    let mut step = 0;
    let mut next = |what: &str| {
        step += 1;
        format!("{what}_{step}")
    };
    if let Some(image) = net.arch().image.filter(|_| !net.arch().conv.is_empty()) {
        let out = next("image");
        m.reshape(
            &x,
            &out,
            &[
                0,
                image.channels as i64,
                image.height as i64,
                image.width as i64,
            ],
        );
        x = out;
    }
    let last = net.layers().len() - 1;
    for (i, layer) in net.layers().iter().enumerate() {
        match layer {
            Layer::Conv(cv) => {
                let out = next("conv");
                let kk = cv.geom.k as i64;
                m.conv(&x, name(cv.weight), name(cv.bias), &out, [kk, kk], kk / 2);
                x = out;
            }
            Layer::Pool(_) => {
                let out = next("pool");
                m.max_pool(&x, &out, 2);
                x = out;
            }
            Layer::Linear(l) => {
                if matches!(net.layers()[i.saturating_sub(1)], Layer::Pool(_)) && i > 0 {
                    let out = next("flat");
                    m.flatten(&x, &out);
                    x = out;
                }
                let out = if i == last {
                    "logits".to_owned()
                } else {
                    next("linear")
                };
                m.gemm(&x, name(l.weight), name(l.bias), &out);
                x = out;
            }
        }
        if layer.relu() {
            let out = next("relu");
            m.relu(&x, &out);
            x = out;
        }
    }
    m.softmax(&x, "probabilities");
    m.output("probabilities", &[Dim::Param("batch"), Dim::Value(c)]);
    m.output("logits", &[Dim::Param("batch"), Dim::Value(c)]);
    for (key, value) in metadata {
        m.metadata(key, value);
    }
    m.to_bytes()
}

/// The `metadata_props` of an exported model: the checkpoint's metadata
/// (`record`: the run's settings and results, the layers), with
/// `class_names` always present, as JSON: the recorded names, else the
/// class indices.
pub fn metadata(
    record: &std::collections::BTreeMap<String, String>,
    class_names: Option<Vec<String>>,
    classes: usize,
) -> Vec<(String, String)> {
    let mut md = record.clone();
    let names = class_names.unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect());
    md.insert(
        crate::labels::METADATA_KEY.to_owned(),
        crate::labels::to_metadata(&names),
    );
    md.into_iter().collect()
}

/// Writes `bytes` to `path` atomically (a failure leaves `path` as it was).
pub fn write(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    crate::fsutil::write_atomic(path, |f| f.write_all(bytes))
}
