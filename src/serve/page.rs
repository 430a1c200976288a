//! `GET /`: a page where a person draws a digit with a mouse, a pen or a
//! finger and sees what the model makes of it.
//!
//! The page (`assets/serve/index.html`, compiled into the binary) is plain
//! HTML, CSS and JavaScript: no external file, no build step. The drawing
//! pad (`#pad`, a canvas) takes pointer events with pointer capture, so
//! mouse, pen and touch all draw; the ink is white on black, as MNIST's.
//! After each stroke the page posts the canvas as a PNG to
//! `/predict?probs=1&preprocessed=1`, which preprocesses it as `predict`
//! does, and shows the most probable class (`#prediction`), the 28 × 28
//! image the model saw, and every class's probability as a bar. `#clear`
//! starts again.

/// The page.
pub const INDEX_HTML: &str = include_str!("../../assets/serve/index.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_has_its_elements() {
        for id in ["pad", "prediction", "clear", "seen", "bars"] {
            assert!(INDEX_HTML.contains(&format!("id=\"{id}\"")), "#{id}");
        }
        assert!(INDEX_HTML.contains("setPointerCapture"));
        // Nothing is fetched from elsewhere: no external script, style,
        // font or image.
        for needle in ["src=", "href=", "@import", "url(", "//cdn", "https:"] {
            assert!(!INDEX_HTML.contains(needle), "{needle}");
        }
    }
}
