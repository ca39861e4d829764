//! The run's `loss.csv` (one row per step) and its loss-curve PNG.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};
use crate::trainer::StepStats;

const HEADER: &str = "step,loss,grad_norm,lr,ema_decay,sec_per_step";

/// Appends one row per step to `loss.csv`; flushed after every row.
pub struct LossLog {
    path: PathBuf,
    file: std::fs::File,
}

impl LossLog {
    /// A fresh log (`resume_step = None`: the file is replaced) or the log of a resumed run,
    /// cut back to the rows of steps ≤ `resume_step` (rows written after the checkpoint are
    /// done again by the resumed run).
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        let kept: Vec<String> = match resume_step {
            Some(s) if path.exists() => std::fs::read_to_string(path)
                .map_err(io_err(path))?
                .lines()
                .skip(1)
                .filter(|l| {
                    l.split(',')
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(|v| v <= s)
                })
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        };
        let mut text = String::from(HEADER);
        text.push('\n');
        for l in &kept {
            text.push_str(l);
            text.push('\n');
        }
        crate::checkpoint::write_atomic(path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn append(&mut self, s: &StepStats, sec_per_step: f64) -> Result<()> {
        writeln!(
            self.file,
            "{},{:.6},{:.6},{:.6e},{:.6},{:.4}",
            s.step, s.loss, s.grad_norm, s.lr, s.ema_decay, sec_per_step
        )
        .and_then(|_| self.file.flush())
        .map_err(io_err(&self.path))
    }

    /// `(step, loss)` of every row so far.
    pub fn read(&self) -> Result<Vec<(u64, f64)>> {
        read_losses(&self.path)
    }
}

/// `(step, loss)` rows of a `loss.csv`.
pub fn read_losses(path: &Path) -> Result<Vec<(u64, f64)>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect())
}

/// 3×5 bitmap glyphs for axis labels.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [7, 5, 7, 4, 7],
        _ => [0; 5],
    }
}

fn text(img: &mut image::RgbImage, x: i64, y: i64, s: &str, scale: i64) {
    for (k, c) in s.chars().enumerate() {
        let g = glyph(c);
        for (r, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                img,
                                x + (k as i64 * 4 + col) * scale + dx,
                                y + r as i64 * scale + dy,
                                [0, 0, 0],
                            );
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut image::RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, image::Rgb(c));
    }
}

fn line(img: &mut image::RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let f = i as f64 / n as f64;
        let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        put(img, x.round() as i64, y.round() as i64, c);
        put(img, x.round() as i64, y.round() as i64 + 1, c);
    }
}

/// The loss curve on a log scale: every step in light blue, a running mean over
/// `max(1, steps/50)` steps in dark blue; the y axis is labelled with its range, the x axis
/// with the last step.
pub fn plot_losses(rows: &[(u64, f64)], path: &Path) -> Result<()> {
    let (w, h) = (800u32, 480u32);
    let (left, right, top, bottom) = (70.0, 20.0, 20.0, 40.0);
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter(|(_, l)| l.is_finite() && *l > 0.0)
        .map(|&(s, l)| (s as f64, l.log10()))
        .collect();
    let (pw, ph) = (w as f64 - left - right, h as f64 - top - bottom);
    for (a, b) in [
        ((left, top), (left, top + ph)),
        ((left, top + ph), (left + pw, top + ph)),
    ] {
        line(&mut img, a, b, [0, 0, 0]);
    }
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        let (x0, x1) = (first.0.min(0.0), last.0.max(first.0 + 1.0));
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if hi - lo < 1e-9 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        let map = |(x, y): (f64, f64)| {
            (
                left + (x - x0) / (x1 - x0) * pw,
                top + (hi - y) / (hi - lo) * ph,
            )
        };
        for p in &pts {
            let (x, y) = map(*p);
            put(&mut img, x as i64, y as i64, [150, 190, 240]);
        }
        let win = (pts.len() / 50).max(1);
        let mut smooth = Vec::with_capacity(pts.len());
        let mut acc = 0.0;
        for (i, p) in pts.iter().enumerate() {
            acc += 10f64.powf(p.1);
            if i >= win {
                acc -= 10f64.powf(pts[i - win].1);
            }
            let n = (i + 1).min(win) as f64;
            smooth.push((p.0, (acc / n).log10()));
        }
        for pair in smooth.windows(2) {
            line(&mut img, map(pair[0]), map(pair[1]), [20, 60, 160]);
        }
        text(
            &mut img,
            4,
            top as i64,
            &format!("{:.3}", 10f64.powf(hi)),
            2,
        );
        text(
            &mut img,
            4,
            (top + ph) as i64 - 10,
            &format!("{:.3}", 10f64.powf(lo)),
            2,
        );
        text(
            &mut img,
            (left + pw) as i64 - 60,
            (top + ph) as i64 + 10,
            &format!("{}", last.0),
            2,
        );
        text(
            &mut img,
            left as i64,
            (top + ph) as i64 + 10,
            &format!("{x0}"),
            2,
        );
    }
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| crate::TrainError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    crate::checkpoint::write_atomic(path, &bytes)
}
