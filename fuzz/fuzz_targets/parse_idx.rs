//! Fuzzes the pure IDX parser: arbitrary bytes must never panic it, and
//! whatever it accepts must obey the format's invariants.

#![no_main]

use idx_softmax::idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = idx::parse_header(data);
    match idx::parse(data) {
        Ok(view) => {
            let (h, total) = header.expect("parse accepted what parse_header rejected");
            assert_eq!(
                total,
                data.len() as u64,
                "accepted a file of the wrong length"
            );
            assert_eq!(view.header, h);
            let size = h.element_type.size();
            assert_eq!(view.payload.len(), h.element_count() * size);
            assert_eq!(h.header_len() + view.payload.len(), data.len());
            // Writing the view back gives the same bytes.
            assert_eq!(idx::write(&view.header, view.payload), data);
            let n = h.element_count();
            if n > 0 {
                assert!(view.get_f64(0).is_some());
                assert!(view.get_f64(n - 1).is_some());
            }
            assert!(view.get_f64(n).is_none());
            let _ = h.to_string();
        }
        Err(e) => {
            // Messages are one line.
            assert!(!e.to_string().contains('\n'));
            // A header error is the same error from both entry points.
            if let Err(he) = header {
                assert_eq!(he, e);
            }
        }
    }
    // A prefix of any length may be handed to parse_header by a streaming
    // reader: it must not panic either.
    for len in [0, 1, 3, 4, 7, 8, 16] {
        let _ = idx::parse_header(&data[..data.len().min(len)]);
    }
});
