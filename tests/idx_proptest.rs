//! Property tests for the pure IDX parser: a writer → parser round trip for
//! every type code and random dims, and arbitrary (or lightly corrupted)
//! bytes never panic it.

use idx_softmax::data::idx::{self, ElementType, IdxError, IdxHeader};
use proptest::prelude::*;

fn element_type() -> impl Strategy<Value = ElementType> {
    prop::sample::select(ElementType::ALL.to_vec())
}

/// A header of 1 to 4 dims, each 0 to 5, with random payload bytes of the
/// right length.
fn valid_file() -> impl Strategy<Value = (IdxHeader, Vec<u8>)> {
    (element_type(), prop::collection::vec(0usize..=5, 1..=4)).prop_flat_map(|(ty, dims)| {
        let header = IdxHeader {
            element_type: ty,
            dims,
        };
        let len = header.element_count() * ty.size();
        (Just(header), prop::collection::vec(any::<u8>(), len))
    })
}

/// Values that every type represents exactly, so that encode → write →
/// parse → get_f64 gives them back.
fn values_for(ty: ElementType, n: usize) -> BoxedStrategy<Vec<f64>> {
    let one: BoxedStrategy<f64> = match ty {
        ElementType::U8 => any::<u8>().prop_map(f64::from).boxed(),
        ElementType::I8 => any::<i8>().prop_map(f64::from).boxed(),
        ElementType::I16 => any::<i16>().prop_map(f64::from).boxed(),
        ElementType::I32 => any::<i32>().prop_map(f64::from).boxed(),
        ElementType::F32 => any::<f32>()
            .prop_filter("not NaN", |v| !v.is_nan())
            .prop_map(f64::from)
            .boxed(),
        ElementType::F64 => any::<f64>().prop_filter("not NaN", |v| !v.is_nan()).boxed(),
    };
    prop::collection::vec(one, n).boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// write → parse gives back the header and the payload bytes exactly.
    #[test]
    fn round_trip_bytes((header, payload) in valid_file()) {
        let bytes = idx::write(&header, &payload);
        prop_assert_eq!(bytes.len(), header.header_len() + payload.len());
        let v = idx::parse(&bytes).unwrap();
        prop_assert_eq!(&v.header, &header);
        prop_assert_eq!(v.payload, &payload[..]);
        let (h, total) = idx::parse_header(&bytes).unwrap();
        prop_assert_eq!(h, header);
        prop_assert_eq!(total, bytes.len() as u64);
    }

    /// Typed values survive encode → write → parse → get_f64, big-endian.
    #[test]
    fn round_trip_values(
        (ty, dims, values) in (element_type(), prop::collection::vec(1usize..=4, 1..=3))
            .prop_flat_map(|(ty, dims)| {
                let n = dims.iter().product();
                (Just(ty), Just(dims), values_for(ty, n))
            })
    ) {
        let header = IdxHeader { element_type: ty, dims };
        let payload = idx::encode_f64(ty, &values);
        prop_assert_eq!(payload.len(), values.len() * ty.size());
        let bytes = idx::write(&header, &payload);
        let v = idx::parse(&bytes).unwrap();
        prop_assert_eq!(v.element_type(), ty);
        for (i, &want) in values.iter().enumerate() {
            let got = v.get_f64(i).unwrap();
            prop_assert!(got == want, "{} element {}: {} != {}", ty, i, got, want);
            // Big-endian on disk: the most significant byte comes first.
            let at = i * ty.size();
            prop_assert_eq!(idx::decode_f64(ty, &v.payload[at..at + ty.size()]), want);
        }
        prop_assert!(v.get_f64(values.len()).is_none());
    }

    /// Arbitrary bytes never panic the parser, and what it accepts is
    /// consistent.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_consistent(&bytes)?;
    }

    /// Bytes that start like IDX (zero magic, a valid type code, a small
    /// dimension count) reach the deeper checks.
    #[test]
    fn idx_like_bytes_never_panic(
        code in prop::sample::select(vec![0x08u8, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]),
        ndims in 0u8..=6,
        rest in prop::collection::vec(
            prop_oneof![Just(0u8), Just(0xFF), Just(1), any::<u8>()], 0..64),
    ) {
        let mut bytes = vec![0, 0, code, ndims];
        bytes.extend_from_slice(&rest);
        check_consistent(&bytes)?;
    }

    /// Cutting a valid file anywhere gives the truncation error for that
    /// length; appending to it gives the extra-bytes error.
    #[test]
    fn cut_or_extended_files(
        (header, payload) in valid_file(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let bytes = idx::write(&header, &payload);
        let total = bytes.len();
        let len = cut.index(total); // 0 ..= total - 1
        let err = idx::parse(&bytes[..len]).unwrap_err();
        let hl = header.header_len();
        match err {
            IdxError::Empty => prop_assert_eq!(len, 0),
            IdxError::TruncatedHeader { expected, found, .. } => {
                prop_assert!(len < hl);
                prop_assert_eq!(found, len);
                prop_assert!(expected == 4 || expected == hl);
            }
            IdxError::Truncated { expected, found, header: h } => {
                prop_assert!(len >= hl);
                prop_assert_eq!(expected, total as u64);
                prop_assert_eq!(found, len as u64);
                prop_assert_eq!(h, header.clone());
            }
            other => prop_assert!(false, "cut at {}: {:?}", len, other),
        }
        let mut long = bytes.clone();
        long.extend_from_slice(&extra);
        prop_assert_eq!(
            idx::parse(&long).unwrap_err(),
            IdxError::TrailingBytes {
                expected: total as u64,
                found: (total + extra.len()) as u64,
                header,
            }
        );
    }

    /// Flipping one byte of a valid file either leaves it valid (a payload
    /// byte, or a type code with the same element size) or gives an error;
    /// never a panic.
    #[test]
    fn one_corrupted_byte((header, payload) in valid_file(), at in any::<prop::sample::Index>(), x in 1u8..) {
        let mut bytes = idx::write(&header, &payload);
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        let res = idx::parse(&bytes);
        if i >= header.header_len() {
            prop_assert!(res.is_ok(), "payload byte {} changed: {:?}", i, res.err());
        } else if i < 2 {
            prop_assert!(res.is_err());
        }
        check_consistent(&bytes)?;
    }
}

fn check_consistent(bytes: &[u8]) -> Result<(), TestCaseError> {
    let head = idx::parse_header(bytes);
    match idx::parse(bytes) {
        Ok(v) => {
            let (h, total) = head.expect("parse accepted what parse_header rejected");
            prop_assert_eq!(total, bytes.len() as u64);
            prop_assert_eq!(&v.header, &h);
            prop_assert_eq!(v.payload.len(), h.element_count() * h.element_type.size());
            prop_assert_eq!(idx::write(&v.header, v.payload), bytes);
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.is_empty() && !msg.contains('\n'), "{:?}", msg);
            if let Err(he) = head {
                prop_assert_eq!(he, e);
            }
        }
    }
    Ok(())
}
