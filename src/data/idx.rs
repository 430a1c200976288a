//! The IDX file format: a pure parser, with no I/O.
//!
//! An IDX file (LeCun's format for MNIST) is a 4-byte magic, one big-endian
//! `u32` per dimension, then the payload in row-major order:
//!
//! ```text
//! offset 0   0x00 0x00            magic: two zero bytes
//! offset 2   type code            0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
//! offset 3   ndims                number of dimensions, at least 1
//! offset 4   ndims × u32 (BE)     the dimensions, outermost (the sample axis) first
//! offset 4+4·ndims                payload: product(dims) elements, big-endian
//! ```
//!
//! [`parse`] validates every field against the real length of the bytes it
//! is given before it allocates anything sized by a header value, so a 4 KB
//! file that claims four billion images fails at once, in constant memory.
//! It never panics, whatever the input (a property test and a fuzz target
//! hold it to that).

use std::fmt;

/// Gzip streams start with these two bytes (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The element type of an IDX payload, from the type code at byte 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElementType {
    U8,
    I8,
    I16,
    I32,
    F32,
    F64,
}

impl ElementType {
    /// Decodes the type code at byte 2 of the header.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => Self::U8,
            0x09 => Self::I8,
            0x0B => Self::I16,
            0x0C => Self::I32,
            0x0D => Self::F32,
            0x0E => Self::F64,
            _ => return None,
        })
    }

    /// The type code written at byte 2 of the header.
    pub fn code(self) -> u8 {
        match self {
            Self::U8 => 0x08,
            Self::I8 => 0x09,
            Self::I16 => 0x0B,
            Self::I32 => 0x0C,
            Self::F32 => 0x0D,
            Self::F64 => 0x0E,
        }
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::I16 => 2,
            Self::I32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    /// All six types, in type-code order.
    pub const ALL: [ElementType; 6] = [
        Self::U8,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::F32,
        Self::F64,
    ];
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::I16 => "i16",
            Self::I32 => "i32",
            Self::F32 => "f32",
            Self::F64 => "f64",
        })
    }
}

/// Why a byte string is not a valid IDX file. Messages are one line, name
/// the byte offset or field at fault where there is one, and say what was
/// expected; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdxError {
    #[error("empty file (0 bytes), expected an IDX header")]
    Empty,
    #[error("is a gzip stream (starts with 0x1f 0x8b); decompress it first")]
    Gzip,
    #[error("looks like an HTML/XML page, not IDX (a failed download?)")]
    Html,
    #[error("looks like a text file, not IDX: an IDX file starts with two zero bytes (a failed download?)")]
    Text,
    #[error("bad magic at offset 0: expected 0x00 0x00, found {} (not an IDX file)", show_magic(.0, .1))]
    BadMagic(u8, Option<u8>),
    #[error("unknown element type code 0x{0:02x} at offset 2 (expected 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32 or 0x0E f64)")]
    BadTypeCode(u8),
    #[error("zero dimensions at offset 3 (expected at least 1)")]
    NoDims,
    #[error("truncated header: expected {expected} bytes ({}), found {found}", show_header_need(.ndims))]
    TruncatedHeader {
        expected: usize,
        found: usize,
        /// The dimension count, once byte 3 is there.
        ndims: Option<u8>,
    },
    #[error("dimensions {dims:?} (offset 4) of {element_size}-byte elements overflow: the payload size exceeds the address space")]
    Overflow { dims: Vec<u32>, element_size: usize },
    #[error("truncated: expected {expected} bytes ({}), found {found}", .header.layout())]
    Truncated {
        expected: u64,
        found: u64,
        header: IdxHeader,
    },
    #[error("{} extra bytes at offset {expected}: expected {expected} bytes ({}), found {found}", .found - .expected, .header.layout())]
    TrailingBytes {
        expected: u64,
        found: u64,
        header: IdxHeader,
    },
}

fn show_magic(b0: &u8, b1: &Option<u8>) -> String {
    match b1 {
        Some(b1) => format!("0x{b0:02x} 0x{b1:02x}"),
        None => format!("0x{b0:02x} and then the end of the file"),
    }
}

fn show_header_need(ndims: &Option<u8>) -> String {
    match ndims {
        None => "magic, type code and dimension count".to_owned(),
        Some(n) => format!("4 + 4×{n} for {n} dimension(s)"),
    }
}

/// The largest possible header: 4 bytes, then 255 dimensions of 4 bytes.
/// A reader that has this many bytes of a file (or the whole file, if it is
/// shorter) can always run [`parse_header`] to completion.
pub const MAX_HEADER_LEN: usize = 4 + 4 * 255;

/// A validated IDX header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxHeader {
    pub element_type: ElementType,
    /// Dimensions, outermost first. For an image file: `[n, rows, cols]`.
    pub dims: Vec<usize>,
}

impl IdxHeader {
    /// Header length in bytes: 4 + 4·ndims.
    pub fn header_len(&self) -> usize {
        4 + 4 * self.dims.len()
    }

    /// Number of elements in the payload.
    pub fn element_count(&self) -> usize {
        // Checked in `parse`; a header built by hand saturates instead of wrapping.
        self.dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Byte offset of element `i` in the file (header included), saturating.
    pub fn offset_of(&self, i: usize) -> u64 {
        (i as u64)
            .saturating_mul(self.element_type.size() as u64)
            .saturating_add(self.header_len() as u64)
    }

    /// `16-byte header + 60000×28×28 u8`, for messages.
    pub fn layout(&self) -> String {
        format!("{}-byte header + {self}", self.header_len())
    }

    /// Serialises the header (for writers and tests).
    ///
    /// # Panics
    /// If there are more than 255 dimensions or a dimension exceeds
    /// `u32::MAX`: such a header cannot be written as IDX.
    pub fn to_bytes(&self) -> Vec<u8> {
        let ndims = u8::try_from(self.dims.len()).expect("IDX allows at most 255 dimensions");
        let mut out = Vec::with_capacity(self.header_len());
        out.extend_from_slice(&[0, 0, self.element_type.code(), ndims]);
        for &d in &self.dims {
            let d = u32::try_from(d).expect("IDX dimensions are u32");
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }
}

impl fmt::Display for IdxHeader {
    /// `60000×28×28 u8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str("×")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, " {}", self.element_type)
    }
}

/// A validated IDX file: its header and a borrowed payload of exactly
/// `element_count × element size` bytes.
#[derive(Debug, Clone)]
pub struct IdxView<'a> {
    pub header: IdxHeader,
    pub payload: &'a [u8],
}

impl IdxView<'_> {
    pub fn element_type(&self) -> ElementType {
        self.header.element_type
    }
    pub fn dims(&self) -> &[usize] {
        &self.header.dims
    }
    /// Reads element `i` as f64 (big-endian decoding for multi-byte types).
    /// Returns `None` when `i` is out of range.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        let size = self.header.element_type.size();
        let start = i.checked_mul(size)?;
        let bytes = self.payload.get(start..start.checked_add(size)?)?;
        Some(decode_f64(self.header.element_type, bytes))
    }
}

/// Decodes one big-endian element of type `ty` from `bytes` as f64. Every
/// type round-trips exactly (f32 widens losslessly).
///
/// # Panics
/// If `bytes` is shorter than `ty.size()`.
pub fn decode_f64(ty: ElementType, bytes: &[u8]) -> f64 {
    match ty {
        ElementType::U8 => bytes[0] as f64,
        ElementType::I8 => bytes[0] as i8 as f64,
        ElementType::I16 => i16::from_be_bytes([bytes[0], bytes[1]]) as f64,
        ElementType::I32 => i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f64,
        ElementType::F32 => f32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f64,
        ElementType::F64 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[..8]);
            f64::from_be_bytes(b)
        }
    }
}

/// Skips a UTF-8 byte-order mark and leading ASCII whitespace.
fn skip_bom_and_space(bytes: &[u8]) -> &[u8] {
    let mut rest = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    while let [first, tail @ ..] = rest {
        if first.is_ascii_whitespace() {
            rest = tail;
        } else {
            break;
        }
    }
    rest
}

/// A markup document: `<!DOCTYPE`, `<html`, `<?xml`, `<!--`, or any tag
/// (`<` then a letter, `!`, `?` or `/`). An IDX file starts with a zero
/// byte, so no valid file is ever mistaken for one.
fn looks_like_markup(bytes: &[u8]) -> bool {
    match skip_bom_and_space(bytes) {
        [b'<', next, ..] => next.is_ascii_alphabetic() || matches!(next, b'!' | b'?' | b'/'),
        _ => false,
    }
}

/// Plain text: the first bytes (up to 512) are all printable ASCII or
/// whitespace. Only consulted once the magic is known to be wrong.
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    head.len() >= 2
        && head
            .iter()
            .all(|&b| b.is_ascii_graphic() || b == b' ' || matches!(b, b'\t' | b'\n' | b'\r'))
}

/// Validates the header at the start of `prefix` without looking at the
/// payload, and returns it with the exact total file length it implies.
///
/// `prefix` may be the whole file or only its first bytes (a streaming
/// reader, such as the gzip cache builder, uses it to learn how many bytes
/// to expect before it writes any; [`MAX_HEADER_LEN`] bytes always suffice).
/// Checks, in order: non-empty; not gzip; not an HTML/XML page; the magic
/// (or else: is it text?); the type code; ndims ≥ 1; the header is all
/// there; the payload size, computed with checked arithmetic.
///
/// The only allocation is the dimension list, and only once the whole
/// header is known to be present (so at most 255 entries).
pub fn parse_header(prefix: &[u8]) -> Result<(IdxHeader, u64), IdxError> {
    if prefix.is_empty() {
        return Err(IdxError::Empty);
    }
    if prefix.starts_with(&GZIP_MAGIC) {
        return Err(IdxError::Gzip);
    }
    if looks_like_markup(prefix) {
        return Err(IdxError::Html);
    }
    // Judge each field on what there is, so a short file says what is wrong
    // with the bytes it has rather than only "too short".
    if prefix.iter().take(2).any(|&b| b != 0) {
        if looks_like_text(prefix) {
            return Err(IdxError::Text);
        }
        return Err(IdxError::BadMagic(prefix[0], prefix.get(1).copied()));
    }
    if let Some(&code) = prefix.get(2) {
        if ElementType::from_code(code).is_none() {
            return Err(IdxError::BadTypeCode(code));
        }
    }
    let (Some(&code), Some(&ndims)) = (prefix.get(2), prefix.get(3)) else {
        return Err(IdxError::TruncatedHeader {
            expected: 4,
            found: prefix.len(),
            ndims: None,
        });
    };
    let element_type = ElementType::from_code(code).ok_or(IdxError::BadTypeCode(code))?;
    if ndims == 0 {
        return Err(IdxError::NoDims);
    }
    let header_len = 4 + 4 * ndims as usize; // ≤ MAX_HEADER_LEN: cannot overflow
    let Some(dim_bytes) = prefix.get(4..header_len) else {
        return Err(IdxError::TruncatedHeader {
            expected: header_len,
            found: prefix.len(),
            ndims: Some(ndims),
        });
    };
    // Total size in u64 with checked arithmetic, before any allocation:
    // 255 dims of u32::MAX overflow u64 long before they reach memory.
    let be = |c: &[u8]| u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    let total = dim_bytes
        .chunks_exact(4)
        .try_fold(element_type.size() as u64, |acc, c| {
            acc.checked_mul(be(c) as u64)
        })
        .and_then(|p| p.checked_add(header_len as u64))
        .filter(|&t| t <= isize::MAX as u64);
    let Some(total) = total else {
        return Err(IdxError::Overflow {
            dims: dim_bytes.chunks_exact(4).map(be).collect(),
            element_size: element_type.size(),
        });
    };
    // total ≤ isize::MAX, so every dim and their product fit in usize.
    let dims = dim_bytes.chunks_exact(4).map(|c| be(c) as usize).collect();
    Ok((IdxHeader { element_type, dims }, total))
}

/// Checks a file length against the exact length its header implies.
pub fn check_len(header: &IdxHeader, expected: u64, found: u64) -> Result<(), IdxError> {
    if found < expected {
        return Err(IdxError::Truncated {
            expected,
            found,
            header: header.clone(),
        });
    }
    if found > expected {
        return Err(IdxError::TrailingBytes {
            expected,
            found,
            header: header.clone(),
        });
    }
    Ok(())
}

/// Validates `bytes` as one complete IDX file and returns a view of it:
/// [`parse_header`], then the exact total length (no short file, no extra
/// bytes). Never panics, and allocates nothing sized by the payload.
pub fn parse(bytes: &[u8]) -> Result<IdxView<'_>, IdxError> {
    let (header, expected) = parse_header(bytes)?;
    check_len(&header, expected, bytes.len() as u64)?;
    let payload = &bytes[header.header_len()..];
    Ok(IdxView { header, payload })
}

/// Serialises a complete IDX file from a header and its payload bytes
/// (already big-endian). Used by tests, benches and the perf scripts'
/// dataset generator.
///
/// # Panics
/// As [`IdxHeader::to_bytes`].
pub fn write(header: &IdxHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = header.to_bytes();
    out.extend_from_slice(payload);
    out
}

/// Encodes `values` as big-endian elements of type `ty` (casting with `as`),
/// for writers and tests.
pub fn encode_f64(ty: ElementType, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * ty.size());
    for &v in values {
        match ty {
            ElementType::U8 => out.push(v as u8),
            ElementType::I8 => out.push(v as i8 as u8),
            ElementType::I16 => out.extend_from_slice(&(v as i16).to_be_bytes()),
            ElementType::I32 => out.extend_from_slice(&(v as i32).to_be_bytes()),
            ElementType::F32 => out.extend_from_slice(&(v as f32).to_be_bytes()),
            ElementType::F64 => out.extend_from_slice(&v.to_be_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u8_file(dims: &[usize], payload: &[u8]) -> Vec<u8> {
        write(
            &IdxHeader {
                element_type: ElementType::U8,
                dims: dims.to_vec(),
            },
            payload,
        )
    }

    #[test]
    fn parses_a_small_u8_file() {
        let bytes = u8_file(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let v = parse(&bytes).unwrap();
        assert_eq!(v.dims(), &[2, 3]);
        assert_eq!(v.element_type(), ElementType::U8);
        assert_eq!(v.payload, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(v.get_f64(5), Some(6.0));
        assert_eq!(v.get_f64(6), None);
        assert_eq!(v.get_f64(usize::MAX), None);
        assert_eq!(v.header.to_string(), "2×3 u8");
        assert_eq!(v.header.offset_of(4), 12 + 4);
    }

    #[test]
    fn wrong_magic() {
        let mut bytes = u8_file(&[1], &[7]);
        bytes[1] = 0x03;
        assert_eq!(parse(&bytes).unwrap_err(), IdxError::BadMagic(0, Some(3)));
        assert_eq!(parse(&[0x80]).unwrap_err(), IdxError::BadMagic(0x80, None));
        assert_eq!(
            parse(&[0x80]).unwrap_err().to_string(),
            "bad magic at offset 0: expected 0x00 0x00, found 0x80 and then the end of the file (not an IDX file)"
        );
    }

    #[test]
    fn truncated_header() {
        let bytes = u8_file(&[2, 3], &[0; 6]);
        let e = parse(&bytes[..9]).unwrap_err();
        assert_eq!(
            e,
            IdxError::TruncatedHeader {
                expected: 12,
                found: 9,
                ndims: Some(2),
            }
        );
        assert_eq!(
            e.to_string(),
            "truncated header: expected 12 bytes (4 + 4×2 for 2 dimension(s)), found 9"
        );
    }

    #[test]
    fn truncated_payload_and_trailing_bytes() {
        let bytes = u8_file(&[2, 3], &[0; 6]);
        let e = parse(&bytes[..15]).unwrap_err();
        assert!(matches!(
            e,
            IdxError::Truncated {
                expected: 18,
                found: 15,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "truncated: expected 18 bytes (12-byte header + 2×3 u8), found 15"
        );
        let mut long = bytes.clone();
        long.push(0);
        let e = parse(&long).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 extra bytes at offset 18: expected 18 bytes (12-byte header + 2×3 u8), found 19"
        );
    }

    #[test]
    fn huge_claim_fails_without_allocating() {
        // 4 billion 28×28 images in a 16-byte file.
        let mut bytes = vec![0, 0, 0x08, 3];
        for d in [4_000_000_000u32, 28, 28] {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        assert!(matches!(
            parse(&bytes).unwrap_err(),
            IdxError::Truncated {
                expected: 3_136_000_000_016,
                found: 16,
                ..
            }
        ));
        let mut overflow = vec![0, 0, 0x0E, 4];
        for _ in 0..4 {
            overflow.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        assert_eq!(
            parse(&overflow).unwrap_err(),
            IdxError::Overflow {
                dims: vec![u32::MAX; 4],
                element_size: 8
            }
        );
    }

    #[test]
    fn foreign_files() {
        assert_eq!(parse(b"").unwrap_err(), IdxError::Empty);
        assert_eq!(parse(&[0x1f, 0x8b, 8, 0]).unwrap_err(), IdxError::Gzip);
        assert_eq!(
            parse(b"\n  <!DOCTYPE html><html>404</html>").unwrap_err(),
            IdxError::Html
        );
        assert_eq!(
            parse(b"\xEF\xBB\xBF<?xml version=\"1.0\"?>").unwrap_err(),
            IdxError::Html
        );
        assert_eq!(parse(b"404 Not Found\n").unwrap_err(), IdxError::Text);
        assert_eq!(
            parse(&[0, 0, 0x42, 1]).unwrap_err(),
            IdxError::BadTypeCode(0x42)
        );
        // The type code is judged as soon as it is there.
        assert_eq!(
            parse(&[0, 0, 0x42]).unwrap_err(),
            IdxError::BadTypeCode(0x42)
        );
        assert_eq!(parse(&[0, 0, 0x08, 0]).unwrap_err(), IdxError::NoDims);
    }

    #[test]
    fn big_endian_types_decode() {
        let h = IdxHeader {
            element_type: ElementType::I16,
            dims: vec![2],
        };
        let bytes = write(&h, &[0xFF, 0xFE, 0x01, 0x00]);
        let v = parse(&bytes).unwrap();
        assert_eq!(v.get_f64(0), Some(-2.0));
        assert_eq!(v.get_f64(1), Some(256.0));
        let h = IdxHeader {
            element_type: ElementType::F32,
            dims: vec![1],
        };
        let bytes = write(&h, &1.5f32.to_be_bytes());
        assert_eq!(parse(&bytes).unwrap().get_f64(0), Some(1.5));
        assert_eq!(
            encode_f64(ElementType::I32, &[-2.0, 7.0]),
            [0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 0, 7]
        );
    }
}
