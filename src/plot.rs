//! Pictures of results: the training curves and the confusion matrix as a
//! heat map, drawn with `plotters`, and a model's weight templates
//! ([`weights_png`]), drawn pixel by pixel.
//!
//! Text is drawn with DejaVu Sans, bundled in the binary
//! (`assets/fonts/DejaVuSans.ttf`, Bitstream Vera licence, see
//! `assets/fonts/LICENSE-DejaVu.txt`): a PNG never depends on the fonts
//! installed where it is drawn. (An SVG names the font family and leaves it
//! to the viewer, as SVGs do.)
//!
//! The format is decided by the file name's extension, any case, before
//! anything is drawn ([`format_of`]): `.svg` gets an SVG and `.png` (or no
//! extension) a PNG, for the curves and the heat map; the weights picture
//! is a PNG only. Any other extension (`.pdf`, `.gif`, `.jpg`) is refused
//! rather than written as PNG bytes under a name that promises another
//! format; front ends call [`format_of`] before any work. Both are written
//! atomically ([`crate::fsutil::write_atomic`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::image::{write_rgb_png, ImageError, RgbImage, Size, MAX_DIM};
use crate::nn::Network;

/// Output pixels per template pixel in [`weights_png`].
pub const WEIGHTS_SCALE: usize = 4;
/// Most templates per row in [`weights_png`]; more classes wrap onto further
/// rows.
pub const WEIGHTS_PER_ROW: usize = 10;
/// Largest scale [`render_weights`] accepts.
pub const MAX_SCALE: usize = 64;
/// The colour of the gaps between templates: mid grey, distinct from the
/// white of a zero weight.
pub const GAP_RGB: [u8; 3] = [128, 128, 128];
/// The colour of the most positive weight of a template.
pub const POSITIVE_RGB: [u8; 3] = [178, 24, 43];
/// The colour of the most negative weight of a template.
pub const NEGATIVE_RGB: [u8; 3] = [33, 102, 172];

/// The bundled font.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
/// The family name the pictures ask for.
const FAMILY: &str = "sans-serif";

/// A picture that could not be drawn or written. One line, naming the
/// file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct PlotError {
    pub path: PathBuf,
    pub reason: String,
}

/// Registers the bundled font once.
fn font() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The font is a fixed, valid file: registering cannot fail.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Whether `path` asks for an SVG.
pub fn is_svg(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
}

/// A picture's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    /// The file name extension that asks for it.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Svg => "svg",
        }
    }
}

/// The formats of the training curves and the confusion heat map.
pub const CHART_FORMATS: &[Format] = &[Format::Png, Format::Svg];
/// The formats of the weights picture.
pub const WEIGHTS_FORMATS: &[Format] = &[Format::Png];

/// A picture asked for in a format it cannot be written in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", path.display(), self.reason())]
pub struct FormatError {
    pub path: PathBuf,
    /// The extension given, as given.
    pub extension: String,
    pub accepted: &'static [Format],
}

impl FormatError {
    /// What is wrong, without the path (for a front end that names the
    /// flag and the path itself).
    pub fn reason(&self) -> String {
        let names: Vec<String> = self
            .accepted
            .iter()
            .map(|f| format!(".{}", f.extension()))
            .collect();
        format!(
            ".{} is not a format this picture is written in; name the file {}",
            self.extension,
            names.join(" or ")
        )
    }
}

/// The format `path` asks for, by its extension (any case), among
/// `accepted` ([`CHART_FORMATS`], [`WEIGHTS_FORMATS`]); a name without an
/// extension gets a PNG. Any other extension is an error: nothing is drawn
/// or written.
pub fn format_of(path: &Path, accepted: &'static [Format]) -> Result<Format, FormatError> {
    let Some(ext) = path.extension() else {
        return Ok(Format::Png);
    };
    let text = ext.to_string_lossy();
    accepted
        .iter()
        .copied()
        .find(|f| text.eq_ignore_ascii_case(f.extension()))
        .ok_or_else(|| FormatError {
            path: path.to_owned(),
            extension: text.into_owned(),
            accepted,
        })
}

/// Something drawn on any backend.
trait Picture {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Draws `pic` on a `width × height` canvas and writes it to `path` as PNG
/// or SVG ([`CHART_FORMATS`], by [`format_of`]).
fn render(path: &Path, width: u32, height: u32, pic: &impl Picture) -> Result<Size, PlotError> {
    let fail = |reason: String| PlotError {
        path: path.to_owned(),
        reason,
    };
    let format = format_of(path, CHART_FORMATS).map_err(|e| fail(e.reason()))?;
    font();
    if format == Format::Svg {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            pic.draw(&root).map_err(fail)?;
            root.present().map_err(|e| fail(e.to_string()))?;
        }
        crate::fsutil::write_atomic(path, |f| std::io::Write::write_all(f, svg.as_bytes()))
            .map_err(|e| fail(e.to_string()))?;
    } else {
        let mut buf = vec![0u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
            pic.draw(&root).map_err(fail)?;
            root.present().map_err(|e| fail(e.to_string()))?;
        }
        let img = RgbImage {
            width: width as usize,
            height: height as usize,
            pixels: buf,
        };
        write_rgb_png(path, &img).map_err(|e| fail(e.to_string()))?;
    }
    Ok(Size {
        width: width as usize,
        height: height as usize,
    })
}

/// One epoch of the training curves; `None` where not measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochPoint {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub test_loss: f64,
    pub test_accuracy: f64,
}

/// Width and height of the training-curves picture.
pub const CURVES_SIZE: (u32, u32) = (1100, 450);

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOUR: RGBColor = RGBColor(255, 127, 14);
const TEST_COLOUR: RGBColor = RGBColor(44, 160, 44);

/// Draws loss (left) and accuracy (right) per epoch, for the training,
/// validation and test sets, and writes the picture to `path`.
pub fn training_curves(path: &Path, points: &[EpochPoint]) -> Result<Size, PlotError> {
    if points.is_empty() {
        return Err(PlotError {
            path: path.to_owned(),
            reason: "no epoch to plot".into(),
        });
    }
    let (w, h) = CURVES_SIZE;
    render(path, w, h, &Curves(points))
}

struct Curves<'a>(&'a [EpochPoint]);

impl Picture for Curves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        curves(root, self.0)
    }
}

struct Heatmap<'a> {
    confusion: &'a [u64],
    classes: usize,
    labels: Vec<String>,
    cell: u32,
    label_px: u32,
}

impl Picture for Heatmap<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        heatmap(
            root,
            self.confusion,
            self.classes,
            &|c| self.labels[c].clone(),
            self.cell,
            self.label_px,
        )
    }
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[EpochPoint],
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    let series = |f: &dyn Fn(&EpochPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|p| f(p).filter(|v| v.is_finite()).map(|v| (p.epoch as f64, v)))
            .collect()
    };
    let loss: Vec<Series> = vec![
        ("train", TRAIN_COLOUR, series(&|p| Some(p.train_loss))),
        ("validation", VAL_COLOUR, series(&|p| p.val_loss)),
        ("test", TEST_COLOUR, series(&|p| Some(p.test_loss))),
    ];
    let accuracy: Vec<Series> = vec![
        ("train", TRAIN_COLOUR, series(&|p| p.train_accuracy)),
        ("validation", VAL_COLOUR, series(&|p| p.val_accuracy)),
        ("test", TEST_COLOUR, series(&|p| Some(p.test_accuracy))),
    ];
    let first = points.iter().map(|p| p.epoch).min().unwrap_or(1) as f64;
    let last = points.iter().map(|p| p.epoch).max().unwrap_or(1) as f64;
    // Losses fall and accuracies rise: keep each legend where its curves
    // are not.
    let (up, down) = (
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::LowerRight,
    );
    panel(&left, "loss", "cross-entropy", &loss, first, last, up)?;
    panel(&right, "accuracy", "accuracy", &accuracy, first, last, down)?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
    first: f64,
    last: f64,
    legend: SeriesLabelPosition,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let values = series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let (x0, x1) = if last > first {
        (first, last)
    } else {
        (first - 0.5, last + 0.5)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
        .map_err(e)?;
    let epochs = (last - first) as usize + 1;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .x_labels(epochs.min(12) + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.3}"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()
        .map_err(e)?;
    for (name, colour, pts) in series {
        if pts.is_empty() {
            continue;
        }
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
            .map_err(e)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .position(legend)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Pixels per cell of the confusion heat map (shrunk for many classes).
fn cell_size(classes: usize) -> u32 {
    match classes {
        0..=12 => 56,
        13..=30 => 28,
        31..=60 => 14,
        _ => 6,
    }
}

/// Most classes a confusion heat map is drawn for.
pub const MAX_HEATMAP_CLASSES: usize = 256;

/// Draws the `classes × classes` confusion matrix (row = true class, column
/// = predicted, counts row-major) as a heat map: each cell shaded by the
/// fraction of its row (white 0 to dark blue 1), with its count written in
/// it when the cells are large enough. `names` label the axes when given
/// (one per class), else class numbers.
pub fn confusion_heatmap(
    path: &Path,
    confusion: &[u64],
    classes: usize,
    names: &[String],
) -> Result<Size, PlotError> {
    let fail = |reason: String| PlotError {
        path: path.to_owned(),
        reason,
    };
    if classes == 0 || confusion.len() != classes * classes {
        return Err(fail(format!(
            "a confusion matrix of {} counts is not {classes} x {classes}",
            confusion.len()
        )));
    }
    if classes > MAX_HEATMAP_CLASSES {
        return Err(fail(format!(
            "{classes} classes: a heat map is drawn for at most {MAX_HEATMAP_CLASSES}"
        )));
    }
    let label = |c: usize| -> String {
        match names.get(c) {
            Some(n) if names.len() == classes => n.clone(),
            _ => c.to_string(),
        }
    };
    let longest = (0..classes)
        .map(|c| label(c).chars().count())
        .max()
        .unwrap_or(1);
    let cell = cell_size(classes);
    let label_px = (longest as u32 * 8 + 20).clamp(40, 200);
    let grid = cell * classes as u32;
    let (w, h) = (grid + label_px + 40, grid + label_px + 60);
    let pic = Heatmap {
        confusion,
        classes,
        labels: (0..classes).map(label).collect(),
        cell,
        label_px,
    };
    render(path, w, h, &pic)
}

fn heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    confusion: &[u64],
    classes: usize,
    label: &dyn Fn(usize) -> String,
    cell: u32,
    label_px: u32,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let title = (FAMILY, 20).into_font();
    root.draw(&Text::new(
        "confusion matrix (row: true class, column: predicted)",
        (10, 10),
        title,
    ))
    .map_err(e)?;
    let (gx, gy) = (label_px as i32 + 20, label_px as i32 + 40);
    let c = cell as i32;
    let small = (FAMILY, (cell as f64 * 0.3).clamp(8.0, 16.0)).into_font();
    for t in 0..classes {
        let row: u64 = confusion[t * classes..(t + 1) * classes].iter().sum();
        for p in 0..classes {
            let n = confusion[t * classes + p];
            let frac = if row > 0 { n as f64 / row as f64 } else { 0.0 };
            let shade = |white: u8, full: u8| {
                (f64::from(white) + (f64::from(full) - f64::from(white)) * frac.sqrt()).round()
                    as u8
            };
            let colour = RGBColor(shade(255, 8), shade(255, 48), shade(255, 107));
            let (x, y) = (gx + p as i32 * c, gy + t as i32 * c);
            root.draw(&Rectangle::new([(x, y), (x + c, y + c)], colour.filled()))
                .map_err(e)?;
            root.draw(&Rectangle::new(
                [(x, y), (x + c, y + c)],
                RGBColor(200, 200, 200).stroke_width(1),
            ))
            .map_err(e)?;
            if cell >= 28 && n > 0 {
                let ink = if frac.sqrt() > 0.5 { WHITE } else { BLACK };
                let style = small
                    .clone()
                    .color(&ink)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ));
                root.draw(&Text::new(n.to_string(), (x + c / 2, y + c / 2), style))
                    .map_err(e)?;
            }
        }
    }
    // Axis labels: predicted classes along the top (rotated), true classes
    // down the left.
    let font = (FAMILY, (cell as f64 * 0.3).clamp(8.0, 15.0)).into_font();
    for k in 0..classes {
        let name = label(k);
        let right = font
            .clone()
            .color(&BLACK)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Center,
            ));
        root.draw(&Text::new(
            name.clone(),
            (gx - 6, gy + k as i32 * c + c / 2),
            right,
        ))
        .map_err(e)?;
        let up = font
            .clone()
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Center,
            ));
        root.draw(&Text::new(name, (gx + k as i32 * c + c / 2, gy - 6), up))
            .map_err(e)?;
    }
    let axis = (FAMILY, 15).into_font();
    root.draw(&Text::new("predicted class", (gx, 34), axis.clone()))
        .map_err(e)?;
    let vertical = axis.transform(FontTransform::Rotate270).color(&BLACK).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ),
    );
    root.draw(&Text::new(
        "true class",
        (6, gy + (classes as i32 * c) / 2),
        vertical,
    ))
    .map_err(e)?;
    Ok(())
}
/// The diverging colour of `t` in [-1, 1]: white at 0, shading linearly to
/// [`POSITIVE_RGB`] at 1 and [`NEGATIVE_RGB`] at -1.
pub fn diverging(t: f32) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(-1.0, 1.0) };
    let end = if t >= 0.0 { POSITIVE_RGB } else { NEGATIVE_RGB };
    let a = t.abs();
    end.map(|e| (255.0 + (f32::from(e) - 255.0) * a).round() as u8)
}

/// Draws weight templates: row `c` of `wt` (`templates` rows: a class, or
/// a hidden unit) reshaped to `height × width`, in order, left to right, in
/// one row of up to [`WEIGHTS_PER_ROW`], or a near-square grid of
/// `⌈√templates⌉` columns beyond that, each template pixel drawn as a
/// `scale × scale` block, with a gap one template pixel wide (`scale` output
/// pixels) of [`GAP_RGB`] between templates.
///
/// Colours use [`diverging`] with a symmetric scale per template: a weight
/// `w` of template `c` is drawn at `w / max|w_c|`, so each template's
/// strongest weight is fully saturated (an all-zero template is white). The
/// bias is not drawn.
///
/// The image is `cols × width × scale + (cols − 1) × scale` pixels wide
/// and `rows × height × scale + (rows − 1) × scale` high, with
/// `cols` as above and `rows = ⌈templates / cols⌉`:
/// 1156 × 112 for MNIST's 10 templates of 28 × 28 at scale 4.
///
/// `path` only names the destination in errors. Fails if `height × width`
/// is not the model's feature count, `scale` is not in `1..=MAX_SCALE`, the
/// model is inconsistent or holds non-finite weights, or the picture would
/// be more than `4 × MAX_DIM` (65536) pixels wide or high.
pub fn render_weights(
    wt: &[f32],
    templates: usize,
    height: usize,
    width: usize,
    scale: usize,
    path: &Path,
) -> Result<RgbImage, ImageError> {
    let invalid = |reason: String| ImageError::InvalidInput {
        path: path.to_owned(),
        reason,
    };
    let c = templates;
    let k = wt.len().checked_div(c).unwrap_or(0);
    if height.checked_mul(width) != Some(k) || k == 0 {
        return Err(invalid(format!(
            "the model has {k} features, which is not {height} x {width}"
        )));
    }
    if c == 0 || c.checked_mul(k) != Some(wt.len()) {
        return Err(invalid(format!(
            "the weight holds {} values, not templates x features = {c} x {k}",
            wt.len()
        )));
    }
    if !(1..=MAX_SCALE).contains(&scale) {
        return Err(invalid(format!("scale {scale} is outside 1..={MAX_SCALE}")));
    }
    if let Some(i) = wt.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "weight {} of template {} is {}",
            i % k,
            i / k,
            wt[i]
        )));
    }
    // A row of up to ten templates (softmax regression's classes), or a
    // near-square grid for an MLP's hundreds of hidden units.
    let cols = if c <= WEIGHTS_PER_ROW {
        c
    } else {
        (c as f64).sqrt().ceil() as usize
    };
    let rows = c.div_ceil(cols);
    let extent = |n: usize, len: usize| {
        n.checked_mul(len)?
            .checked_mul(scale)?
            .checked_add((n - 1).checked_mul(scale)?)
    };
    const LIMIT: usize = 4 * MAX_DIM;
    let (out_w, out_h) = match (extent(cols, width), extent(rows, height)) {
        (Some(w), Some(h)) if w <= LIMIT && h <= LIMIT => (w, h),
        _ => {
            return Err(invalid(format!(
                "{c} templates of {height} x {width} at scale {scale} would exceed {LIMIT} pixels a side"
            )))
        }
    };
    let mut pixels = GAP_RGB.repeat(out_w * out_h);
    for (class, template) in wt.chunks_exact(k).enumerate() {
        let m = template.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let x0 = (class % cols) * (width + 1) * scale;
        let y0 = (class / cols) * (height + 1) * scale;
        for (i, &w) in template.iter().enumerate() {
            let rgb = diverging(if m > 0.0 { w / m } else { 0.0 });
            let (ty, tx) = (i / width, i % width);
            for dy in 0..scale {
                let y = y0 + ty * scale + dy;
                let x = x0 + tx * scale;
                let start = (y * out_w + x) * 3;
                for px in pixels[start..start + 3 * scale].chunks_exact_mut(3) {
                    px.copy_from_slice(&rgb);
                }
            }
        }
    }
    Ok(RgbImage {
        width: out_w,
        height: out_h,
        pixels,
    })
}

/// Output pixels per filter pixel in [`weights_png`] for a CNN's first
/// conv layer (its K × K filters are small).
pub const FILTER_SCALE: usize = 16;

/// Draws the network's first-layer weight templates (one per class for
/// softmax regression, one per hidden unit for an MLP, of the samples'
/// `height × width`; for a CNN, its first conv layer's filters, K × K each,
/// one per output and input channel) as [`render_weights`] does, and writes
/// them to `path` as an RGB PNG, atomically. Returns the picture's size.
pub fn weights_png(
    network: &Network,
    height: usize,
    width: usize,
    path: &Path,
) -> Result<Size, ImageError> {
    format_of(path, WEIGHTS_FORMATS).map_err(|e| ImageError::InvalidInput {
        path: path.to_owned(),
        reason: e.reason(),
    })?;
    let (templates, h, w, scale) = match network.layers()[0] {
        crate::nn::Layer::Conv(c) => {
            let g = c.geom;
            (g.c_out * g.c_in, g.k, g.k, FILTER_SCALE)
        }
        _ => (network.sizes()[1], height, width, WEIGHTS_SCALE),
    };
    let image = render_weights(network.params().get(0), templates, h, w, scale, path)?;
    write_rgb_png(path, &image)?;
    Ok(Size {
        width: image.width,
        height: image.height,
    })
}

/// Samples in the augmentation picture ([`augmented_png`]).
pub const AUGMENTED_SAMPLES: usize = 8;
/// Deformations of each sample in the picture (epochs 1, 2, …).
pub const AUGMENTED_VARIANTS: usize = 5;
/// Output pixels per sample pixel in the augmentation picture.
pub const AUGMENTED_SCALE: usize = 4;

/// Draws the first [`AUGMENTED_SAMPLES`] training samples (`images`, u8
/// rows of `augmenter`'s shape, the first channel of each) next to their
/// deformations in epochs 1 … [`AUGMENTED_VARIANTS`], as the network sees
/// them (`seed` is the run's): one row per sample, the original first,
/// each pixel a [`AUGMENTED_SCALE`]-pixel square, a 1-sample-pixel grey gap
/// between tiles. Written to `path` as a grayscale PNG, atomically.
pub fn augmented_png(
    path: &Path,
    images: &[u8],
    augmenter: &crate::data::augment::Augmenter,
    seed: u64,
) -> Result<Size, ImageError> {
    format_of(path, WEIGHTS_FORMATS).map_err(|e| ImageError::InvalidInput {
        path: path.to_owned(),
        reason: e.reason(),
    })?;
    let shape = augmenter.shape();
    let (h, w, k) = (shape.height, shape.width, shape.len());
    let n = (images.len() / k.max(1)).min(AUGMENTED_SAMPLES);
    let cols = 1 + AUGMENTED_VARIANTS;
    let sc = AUGMENTED_SCALE;
    let (tile_w, tile_h) = ((w + 1) * sc, (h + 1) * sc);
    let (width, height) = (cols * tile_w - sc, n.max(1) * tile_h - sc);
    let mut pixels = vec![128u8; width * height];
    let mut scratch = augmenter.scratch();
    let mut out = vec![0u8; k];
    for i in 0..n {
        let src = &images[i * k..(i + 1) * k];
        for col in 0..cols {
            let tile: &[u8] = if col == 0 {
                src
            } else {
                augmenter.apply(
                    seed,
                    (col - 1) as u64,
                    i as u64,
                    src,
                    &mut out,
                    &mut scratch,
                );
                &out
            };
            for y in 0..h * sc {
                for x in 0..w * sc {
                    let v = tile[(y / sc) * w + x / sc];
                    pixels[(i * tile_h + y) * width + col * tile_w + x] = v;
                }
            }
        }
    }
    let image = crate::image::GrayImage {
        width,
        height,
        pixels,
    };
    crate::image::write_gray_png(path, &image)?;
    Ok(Size { width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_the_extension() {
        let f = |p: &str, a| format_of(Path::new(p), a);
        assert_eq!(f("c.png", CHART_FORMATS), Ok(Format::Png));
        assert_eq!(f("c.SVG", CHART_FORMATS), Ok(Format::Svg));
        assert_eq!(f("dir.d/curves", CHART_FORMATS), Ok(Format::Png));
        assert_eq!(f("w.Png", WEIGHTS_FORMATS), Ok(Format::Png));
        let e = f("c.pdf", CHART_FORMATS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.pdf: .pdf is not a format this picture is written in; name the file .png or .svg"
        );
        let e = f("w.svg", WEIGHTS_FORMATS).unwrap_err();
        assert_eq!(e.extension, "svg");
        assert!(e.reason().ends_with("name the file .png"), "{e}");
        // Nothing is written for a format that cannot be.
        let dir = tempfile::tempdir().unwrap();
        let pdf = dir.path().join("c.pdf");
        let p = EpochPoint {
            epoch: 1,
            ..EpochPoint::default()
        };
        assert!(training_curves(&pdf, &[p]).is_err());
        assert!(confusion_heatmap(&pdf, &[1, 0, 0, 1], 2, &[]).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
