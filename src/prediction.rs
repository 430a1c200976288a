//! A prediction as JSON: the one place that builds the object `predict
//! --json` prints for each input and the server's `POST /predict` answers.
//!
//! The object holds `predicted` (the most probable class), `name` (its
//! name, with class names), `top` (the listed classes, most probable first:
//! `class`, `probability`, and `name` with class names) and, when asked,
//! `probabilities` (every class's). What it was computed from follows: for
//! a picture `image` (its name), `preprocess` (`mnist` or `none`),
//! `inverted`, `empty` (only when no digit was found) and
//! `preprocessed_png` (where the image the model saw was written, if it
//! was); for a test sample `test_index`, `label` and `label_name`.

use std::path::Path;

use serde_json::{json, Value};

use crate::preprocess::Prepared;

/// What a prediction was computed from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A picture named `name` (a path, or `-` for a stream), as
    /// [`crate::preprocess::prepare`] made it; `saved` is where the image
    /// the model saw was written, if it was.
    Image {
        name: &'a str,
        prepared: &'a Prepared,
        saved: Option<&'a Path>,
    },
    /// Test sample `index`, whose label is `label`.
    Test {
        index: usize,
        label: u32,
        saved: Option<&'a Path>,
    },
}

/// The JSON object of one prediction (see the module documentation).
///
/// `probs` are every class's probabilities ([`crate::infer::softmax`]),
/// `top` the classes to list, most probable first
/// ([`crate::infer::ranked`], cut to the number asked for; its first is
/// the prediction), `names` the class names (empty for none), and
/// `with_probabilities` whether to add every class's probability.
pub fn json(
    probs: &[f64],
    top: &[usize],
    names: &[String],
    with_probabilities: bool,
    source: &Source<'_>,
) -> Value {
    let name = |class: usize| names.get(class).map(String::as_str);
    let top_json: Vec<Value> = top
        .iter()
        .map(|&c| {
            let mut v = json!({ "class": c, "probability": probs[c] });
            if let Some(n) = name(c) {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    let mut v = json!({ "top": top_json });
    if let Some(&best) = top.first() {
        v["predicted"] = json!(best);
        if let Some(n) = name(best) {
            v["name"] = json!(n);
        }
    }
    if with_probabilities {
        v["probabilities"] = json!(probs);
    }
    match *source {
        Source::Image {
            name: image,
            prepared,
            saved,
        } => {
            v["image"] = json!(image);
            v["preprocess"] = json!(if prepared.normalised { "mnist" } else { "none" });
            v["inverted"] = json!(prepared.inverted);
            if prepared.empty {
                v["empty"] = json!(true);
            }
            if let Some(s) = saved {
                v["preprocessed_png"] = json!(s.display().to_string());
            }
        }
        Source::Test {
            index,
            label,
            saved,
        } => {
            v["test_index"] = json!(index);
            v["label"] = json!(label);
            if let Some(n) = name(label as usize) {
                v["label_name"] = json!(n);
            }
            if let Some(s) = saved {
                v["preprocessed_png"] = json!(s.display().to_string());
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::GrayImage;

    #[test]
    fn image_and_test_sources() {
        let probs = crate::infer::softmax(&[0.0, 2.0, 1.0]);
        let top = &crate::infer::ranked(&probs)[..2];
        let prepared = Prepared {
            image: GrayImage {
                width: 1,
                height: 1,
                pixels: vec![0],
            },
            normalised: true,
            inverted: false,
            empty: true,
        };
        let src = Source::Image {
            name: "a.png",
            prepared: &prepared,
            saved: None,
        };
        let v = json(&probs, top, &[], false, &src);
        assert_eq!(
            v.to_string(),
            format!(
                r#"{{"empty":true,"image":"a.png","inverted":false,"predicted":1,"preprocess":"mnist","top":[{{"class":1,"probability":{}}},{{"class":2,"probability":{}}}]}}"#,
                probs[1], probs[2]
            )
        );
        let names: Vec<String> = ["zero", "one", "two"].map(String::from).to_vec();
        let src = Source::Test {
            index: 4,
            label: 2,
            saved: Some(Path::new("seen/test-4.png")),
        };
        let v = json(&probs, top, &names, true, &src);
        assert_eq!(v["name"], "one");
        assert_eq!(v["label_name"], "two");
        assert_eq!(v["top"][1]["name"], "two");
        assert_eq!(v["probabilities"].as_array().unwrap().len(), 3);
        assert_eq!(v["preprocessed_png"], "seen/test-4.png");
    }
}
