//! Computed tomography: y = R_θ x + σz, the 2-D parallel-beam Radon transform of each channel
//! over a set of angles (full, sparse-view or limited-angle), with filtered back-projection
//! (FBP) as the baseline.
//!
//! **Geometry** (scikit-image's `radon(image, theta, circle=False)`): angles θ_k = k·R/K
//! degrees, k = 0..K−1 (K = `angles`, R = `angle-range`; `np.linspace(0, R, K,
//! endpoint=False)`). The image is embedded, zero-padded, in a D × D square with
//! D = ⌈√2·max(H, W)⌉ (the image diagonal for square images), the rotation axis at pixel
//! (⌊H/2⌋, ⌊W/2⌋). There are D detector bins of unit spacing (one pixel), bin b at offset
//! s = b − ⌊D/2⌋; the ray of angle θ through bin b samples the image at the D points t ∈
//! {−⌊D/2⌋, …, D − 1 − ⌊D/2⌋} (unit steps) of
//! (col, row) = (⌊W/2⌋ + s cos θ + t sin θ, ⌊H/2⌋ − s sin θ + t cos θ),
//! by bilinear interpolation with zeros outside the image, and sums them: a ray-driven
//! bilinear projector, in pixel units (a constant image of value 1 gives chord lengths in
//! pixels). This is the discretisation scikit-image's `radon` computes by rotating the padded
//! image (`warp`, order 1) and summing its rows, so the two sinograms agree to rounding.
//! Measurement layout: `(C, K, D)` (angle-major; scikit-image returns `(D, K)`).
//!
//! **Adjoint**: the bilinear weights of every (angle, bin, sample) are computed once at
//! construction ([`Tomography::new`]) and applied in reverse for Aᵀ (bilinear splatting), so Aᵀ
//! is the exact transpose of A (up to floating-point summation order) and the likelihood
//! gradients are exact.
//!
//! **Baseline (FBP)**: scikit-image's `iradon(sinogram, theta, circle=False,
//! interpolation="linear", output_size=H)` (which takes square images; an H × W image uses the
//! same rule about the pixel (⌊H/2⌋, ⌊W/2⌋)): each projection zero-padded to
//! P = max(64, 2^⌈log₂ 2D⌉), filtered in the Fourier domain by the ramp built from the
//! discrete spatial ramp kernel (h(0) = 1/4, h(n odd) = −1/(πn)², Kak & Slaney eq. 61; filter
//! 2·Re FFT(h)), optionally times the Hann window (`fftshift(np.hanning(P))`), then
//! back-projected with linear interpolation of the filtered projection at
//! s = Δcol·cos θ − Δrow·sin θ (zero outside the detector) and scaled by π/(2K). That scale
//! reconstructs the right intensities when the angles cover 180° (and 360°, where every line is
//! seen twice); for a limited range R < 180° it compensates the missing directions on average
//! (a centred disk keeps its centre value), as scikit-image does. Clipped to [-1, 1]
//! ([`Tomography::fbp`] is the unclipped reconstruction).
//!
//! Images are used as given (in [-1, 1], so a black background is −1 and contributes to the
//! line integrals); no circular support is assumed (scikit-image's default `circle=True` would
//! crop to the inscribed disk).

use std::sync::Arc;

use num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

use crate::error::{InverseError, Result};
use crate::noise::NoiseModel;
use crate::operator::{clip_unit, Operator};
use crate::task::{
    OptionDefault, OptionSpec, OptionType, TaskEntry, TaskOptions, DEFAULT_NOISE_SIGMA,
};

/// The FBP filter choices (the `fbp-filter` option).
pub const FBP_FILTERS: &[&str] = &["ramp", "hann"];

/// `ct`.
pub const ENTRIES: &[TaskEntry] = &[TaskEntry {
    names: &["ct"],
    summary: "2-D parallel-beam Radon transform (ray-driven bilinear, scikit-image's radon with circle=False) over K angles in [0, R) degrees",
    own_options: &[
        OptionSpec {
            name: "angles",
            help: "number of projection angles K (evenly spaced over the angle range, endpoint excluded; fewer = sparse-view).",
            kind: OptionType::Integer,
            default: OptionDefault::Integer(DEFAULT_ANGLES as u64),
        },
        OptionSpec {
            name: "angle-range",
            help: "angular range R of the projections in degrees, in (0, 360] (less than 180 = limited-angle).",
            kind: OptionType::Float,
            default: OptionDefault::Float(180.0),
        },
        OptionSpec {
            name: "attenuation",
            help: "with --noise transmission: attenuation μ per pixel length of a white pixel (the object's attenuation is μ(x + 1)/2; default 4/D for D detector bins, so a white chord across the detector keeps e^−4 of the photons).",
            kind: OptionType::Float,
            default: OptionDefault::Derived,
        },
        OptionSpec {
            name: "fbp-filter",
            help: "filter of the filtered back-projection baseline: the ramp, or the ramp times a Hann window.",
            kind: OptionType::Choice(FBP_FILTERS),
            default: OptionDefault::Choice("ramp"),
        },
    ],
    default_noise_sigma: DEFAULT_NOISE_SIGMA,
    build: build_ct,
}];

/// Default number of angles.
pub const DEFAULT_ANGLES: usize = 60;
/// Smallest image side accepted.
pub const MIN_SIDE: usize = 4;
/// Largest number of stored ray samples (angles × about (H + 1)(W + 1)); 20 bytes each, so
/// about 670 MB.
pub const MAX_SAMPLES: usize = 1 << 25;

const TASK: &str = "ct";

fn build_ct(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    let filter = FbpFilter::parse(&o.choice("fbp-filter")?)?;
    let angles = o.size_opt("angles")?.unwrap_or(DEFAULT_ANGLES);
    let transmission = o.choice("noise")? == "transmission";
    let gaussian = if transmission {
        // Replaced below, once the chord lengths A(1) are known.
        Arc::new(crate::noise::Gaussian::with_sigma(0.0)?) as Arc<dyn NoiseModel>
    } else {
        o.gaussian_noise()?
    };
    let op = Tomography::new(shape, angles, o.float("angle-range")?, filter, gaussian)?;
    if !transmission {
        return Ok(Box::new(op));
    }
    for name in ["noise-sigma", "likelihood-sigma"] {
        if o.given(name)?.is_some() {
            return Err(invalid(format!(
                "--{name} does not apply to --noise transmission (its noise is the photon count, set by --photons)"
            )));
        }
    }
    let mu = match o.float_opt("attenuation")? {
        Some(v) => v,
        None => DEFAULT_ATTENUATION_CHORD / op.n_det as f64,
    };
    let offset = op.forward_host(&vec![1.0; op.image_len()])?;
    let noise = crate::noise::Transmission::new(o.float("photons")?, mu, offset)
        .map_err(|e| invalid(crate::task::inner_message(e)))?;
    Ok(Box::new(op.with_noise(Arc::new(noise))))
}

/// With `--noise transmission`, the default attenuation μ makes a white chord as long as the
/// detector (D pixels) attenuate by e^{−4}: μ = 4/D.
pub const DEFAULT_ATTENUATION_CHORD: f64 = 4.0;

/// The filter of the FBP baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FbpFilter {
    /// The ramp |ν| (scikit-image's `ramp`).
    Ramp,
    /// The ramp times a Hann window (scikit-image's `hann`).
    Hann,
}

impl FbpFilter {
    /// `ramp` or `hann`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "ramp" => Ok(Self::Ramp),
            "hann" => Ok(Self::Hann),
            _ => Err(invalid(format!(
                "fbp filter must be one of {}, got `{name}`",
                FBP_FILTERS.join(", ")
            ))),
        }
    }
}

fn invalid(msg: String) -> InverseError {
    InverseError::InvalidOption {
        task: TASK.into(),
        msg,
    }
}

/// The parallel-beam Radon transform and its FBP (see the module docs).
pub struct Tomography {
    shape: [usize; 3],
    angles_deg: Vec<f64>,
    /// (cos θ_k, sin θ_k).
    trig: Vec<(f64, f64)>,
    n_det: usize,
    filter: FbpFilter,
    /// Samples of ray r = k·D + b are `row_ptr[r]..row_ptr[r + 1]`.
    row_ptr: Vec<usize>,
    /// Top-left corner of each sample's bilinear stencil, as an index into the image padded by
    /// one pixel on every side ((H + 2) × (W + 2)).
    base: Vec<u32>,
    /// (row, column) fractions of each sample within its stencil.
    frac: Vec<[f64; 2]>,
    /// FBP: the padded projection length P and its Fourier filter.
    pad_len: usize,
    fourier_filter: Vec<f64>,
    fft_fwd: Arc<dyn Fft<f64>>,
    fft_inv: Arc<dyn Fft<f64>>,
    noise: Arc<dyn NoiseModel>,
}

impl std::fmt::Debug for Tomography {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tomography")
            .field("shape", &self.shape)
            .field("angles", &self.angles_deg.len())
            .field("detectors", &self.n_det)
            .field("filter", &self.filter)
            .field("samples", &self.base.len())
            .finish()
    }
}

impl Tomography {
    /// `ct` on images of `shape` with `n_angles` angles evenly spaced over
    /// [0, `angle_range_deg`) degrees, the range in (0, 360].
    pub fn new(
        shape: [usize; 3],
        n_angles: usize,
        angle_range_deg: f64,
        filter: FbpFilter,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        if n_angles == 0 {
            return Err(invalid("the number of angles must be ≥ 1, got 0".into()));
        }
        if !(angle_range_deg.is_finite() && angle_range_deg > 0.0 && angle_range_deg <= 360.0) {
            return Err(invalid(format!(
                "angle range must be in (0, 360] degrees, got {angle_range_deg}"
            )));
        }
        let step = angle_range_deg / n_angles as f64;
        let angles = (0..n_angles).map(|k| k as f64 * step).collect();
        Self::with_angles(shape, angles, filter, noise)
    }

    /// The same geometry with another noise model (e.g. [`crate::noise::Transmission`], which
    /// needs the chord lengths A(1) of this operator).
    pub fn with_noise(mut self, noise: Arc<dyn NoiseModel>) -> Self {
        self.noise = noise;
        self
    }

    /// `ct` at the given angles in degrees (any finite values, in any order).
    pub fn with_angles(
        shape: [usize; 3],
        angles_deg: Vec<f64>,
        filter: FbpFilter,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        super::check_shape(TASK, shape)?;
        let [_, h, w] = shape;
        if h < MIN_SIDE || w < MIN_SIDE {
            return Err(InverseError::ImageShape {
                task: TASK.into(),
                msg: format!("images must be at least {MIN_SIDE}×{MIN_SIDE} pixels, got {h}×{w}"),
            });
        }
        if angles_deg.is_empty() {
            return Err(invalid("the number of angles must be ≥ 1, got 0".into()));
        }
        if let Some(a) = angles_deg.iter().find(|a| !a.is_finite()) {
            return Err(invalid(format!("angles must be finite, got {a}")));
        }
        let k = angles_deg.len();
        let bound = k.saturating_mul((h + 3) * (w + 3));
        if bound > MAX_SAMPLES {
            return Err(invalid(format!(
                "{k} angles on a {h}×{w} image need up to {bound} stored ray samples, more than {MAX_SAMPLES}; use fewer angles or a smaller image"
            )));
        }
        // scikit-image's padding: a D × D square, D = ⌈√2·max(H, W)⌉, centre ⌊D/2⌋, the image's
        // pixel (⌊H/2⌋, ⌊W/2⌋) on it.
        let d = (std::f64::consts::SQRT_2 * h.max(w) as f64).ceil() as usize;
        let centre = (d / 2) as f64;
        let (pad_r, pad_c) = (
            (d / 2) as i64 - (h / 2) as i64,
            (d / 2) as i64 - (w / 2) as i64,
        );
        let wp = w + 2;
        let trig: Vec<(f64, f64)> = angles_deg
            .iter()
            .map(|a| {
                let t = a.to_radians();
                (t.cos(), t.sin())
            })
            .collect();
        let mut row_ptr = Vec::with_capacity(k * d + 1);
        let mut base = Vec::new();
        let mut frac = Vec::new();
        row_ptr.push(0);
        for &(c, s) in &trig {
            // the inverse map of scikit-image's rotation: output (x, y) = (col, row) of the
            // rotated image ← input (col, row) of the padded image
            let m02 = -centre * (c + s - 1.0);
            let m12 = -centre * (c - s - 1.0);
            for x in 0..d {
                let xf = x as f64;
                for y in 0..d {
                    let yf = y as f64;
                    let in_c = c * xf + s * yf + m02;
                    let in_r = -s * xf + c * yf + m12;
                    let (fr, fc) = (in_r.floor(), in_c.floor());
                    let (r0, c0) = (fr as i64 - pad_r, fc as i64 - pad_c);
                    if r0 < -1 || r0 > h as i64 - 1 || c0 < -1 || c0 > w as i64 - 1 {
                        continue;
                    }
                    base.push(((r0 + 1) as usize * wp + (c0 + 1) as usize) as u32);
                    frac.push([in_r - fr, in_c - fc]);
                }
                row_ptr.push(base.len());
            }
        }
        let pad_len = 64usize.max((2 * d).next_power_of_two());
        let fourier_filter = fourier_filter(pad_len, filter);
        let mut planner = FftPlanner::<f64>::new();
        Ok(Self {
            shape,
            angles_deg,
            trig,
            n_det: d,
            filter,
            row_ptr,
            base,
            frac,
            pad_len,
            fft_fwd: planner.plan_fft_forward(pad_len),
            fft_inv: planner.plan_fft_inverse(pad_len),
            fourier_filter,
            noise,
        })
    }

    /// The projection angles in degrees.
    pub fn angles_deg(&self) -> &[f64] {
        &self.angles_deg
    }

    /// Number of detector bins D = ⌈√2·max(H, W)⌉.
    pub fn detectors(&self) -> usize {
        self.n_det
    }

    /// The FBP filter.
    pub fn filter(&self) -> FbpFilter {
        self.filter
    }

    /// Number of stored ray samples (each with four bilinear weights).
    pub fn samples(&self) -> usize {
        self.base.len()
    }

    /// The FBP frequency response on the P = [`Tomography::padded_len`] DFT frequencies
    /// (unshifted order).
    pub fn fourier_filter(&self) -> &[f64] {
        &self.fourier_filter
    }

    /// The padded projection length P of the FBP filtering.
    pub fn padded_len(&self) -> usize {
        self.pad_len
    }

    fn padded_len_image(&self) -> usize {
        let [_, h, w] = self.shape;
        (h + 2) * (w + 2)
    }

    /// The filtered back-projection of one measurement `(C, K, D)`, not clipped.
    pub fn fbp(&self, y: &[f64]) -> Result<Vec<f64>> {
        let [ch, h, w] = self.shape;
        let (k, d, p) = (self.angles_deg.len(), self.n_det, self.pad_len);
        self.check_len(y)?;
        let mut out = vec![0.0; ch * h * w];
        let mut buf = vec![Complex64::new(0.0, 0.0); p];
        let mut q = vec![0.0; d];
        let (ch0, cw0) = ((h / 2) as f64, (w / 2) as f64);
        let half = (d / 2) as f64;
        let scale = std::f64::consts::PI / (2.0 * k as f64);
        for c in 0..ch {
            let img = &mut out[c * h * w..(c + 1) * h * w];
            for (a, &(cos, sin)) in self.trig.iter().enumerate() {
                let proj = &y[(c * k + a) * d..(c * k + a + 1) * d];
                buf.iter_mut().for_each(|v| *v = Complex64::new(0.0, 0.0));
                for (b, &v) in buf.iter_mut().zip(proj) {
                    b.re = v;
                }
                self.fft_fwd.process(&mut buf);
                for (b, f) in buf.iter_mut().zip(&self.fourier_filter) {
                    *b *= *f;
                }
                self.fft_inv.process(&mut buf);
                for (qv, b) in q.iter_mut().zip(&buf) {
                    *qv = b.re / p as f64;
                }
                for i in 0..h {
                    let dr = i as f64 - ch0;
                    for j in 0..w {
                        let dc = j as f64 - cw0;
                        let u = dc * cos - dr * sin + half;
                        img[i * w + j] += interp(&q, u);
                    }
                }
            }
            img.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(out)
    }

    fn check_len(&self, y: &[f64]) -> Result<()> {
        if y.len() == self.measurement_len() {
            Ok(())
        } else {
            Err(InverseError::Measurement {
                task: TASK.into(),
                msg: format!(
                    "expected {} values (shape {:?}), got {}",
                    self.measurement_len(),
                    self.measurement_shape(),
                    y.len()
                ),
            })
        }
    }
}

/// `np.interp(u, arange(len(q)), q, left=0, right=0)`.
fn interp(q: &[f64], u: f64) -> f64 {
    let last = (q.len() - 1) as f64;
    if !(0.0..=last).contains(&u) {
        return 0.0;
    }
    let i = u.floor() as usize;
    if i + 1 >= q.len() {
        return q[q.len() - 1];
    }
    let f = u - i as f64;
    (q[i + 1] - q[i]) * f + q[i]
}

/// scikit-image's `_get_fourier_filter(size, "ramp" | "hann")` (size even).
fn fourier_filter(size: usize, filter: FbpFilter) -> Vec<f64> {
    let mut buf = vec![Complex64::new(0.0, 0.0); size];
    buf[0].re = 0.25;
    for (i, b) in buf.iter_mut().enumerate().skip(1).step_by(2) {
        let n = i.min(size - i) as f64;
        b.re = -1.0 / (std::f64::consts::PI * n).powi(2);
    }
    FftPlanner::<f64>::new()
        .plan_fft_forward(size)
        .process(&mut buf);
    let mut f: Vec<f64> = buf.iter().map(|v| 2.0 * v.re).collect();
    if filter == FbpFilter::Hann {
        // fftshift(np.hanning(size)): frequency index i takes hanning[(i + size/2) % size]
        let m = (size - 1) as f64;
        for (i, v) in f.iter_mut().enumerate() {
            let n = ((i + size / 2) % size) as f64;
            *v *= 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n / m).cos();
        }
    }
    f
}

impl Operator for Tomography {
    /// The projector as a sparse matrix: every sample's bilinear stencil, merged per
    /// (ray, pixel), the zero padding dropped (see [`crate::device::SparseRows`]).
    /// The host projector (exact nonzeros, f64 loops) beats the padded gathers on the CPU.
    fn host_faster_on_cpu(&self) -> bool {
        true
    }
    fn device_map(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> Result<Option<Box<dyn crate::device::DeviceMap>>> {
        let [_, h, w] = self.shape;
        let wp = w + 2;
        let rays = self.row_ptr.len() - 1;
        // One triplet per stencil corner inside the image; SparseRows sums the duplicates.
        let mut triplets: Vec<(u32, u32, f64)> = Vec::new();
        for r in 0..rays {
            for s in self.row_ptr[r]..self.row_ptr[r + 1] {
                let b = self.base[s] as usize;
                let [dr, dc] = self.frac[s];
                for (p, wgt) in [
                    (b, (1.0 - dr) * (1.0 - dc)),
                    (b + 1, (1.0 - dr) * dc),
                    (b + wp, dr * (1.0 - dc)),
                    (b + wp + 1, dr * dc),
                ] {
                    let (i, j) = (p / wp, p % wp);
                    if wgt != 0.0 && (1..=h).contains(&i) && (1..=w).contains(&j) {
                        triplets.push((r as u32, ((i - 1) * w + j - 1) as u32, wgt));
                    }
                }
            }
        }
        Ok(Some(Box::new(ProjectorMap {
            sparse: crate::device::SparseRows::new(rays, h * w, &triplets, device, dtype)?,
            shape: self.shape,
            sino: [self.angles_deg.len(), self.n_det],
        })))
    }
    fn name(&self) -> &str {
        TASK
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn measurement_shape(&self) -> Vec<usize> {
        vec![self.shape[0], self.angles_deg.len(), self.n_det]
    }
    fn noise(&self) -> &dyn NoiseModel {
        self.noise.as_ref()
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        let [ch, h, w] = self.shape;
        let wp = w + 2;
        let rays = self.row_ptr.len() - 1;
        let mut padded = vec![0.0; self.padded_len_image()];
        let mut out = Vec::with_capacity(ch * rays);
        for c in 0..ch {
            for i in 0..h {
                padded[(i + 1) * wp + 1..(i + 1) * wp + 1 + w]
                    .copy_from_slice(&x[(c * h + i) * w..(c * h + i + 1) * w]);
            }
            for r in 0..rays {
                let mut acc = 0.0;
                for s in self.row_ptr[r]..self.row_ptr[r + 1] {
                    let b = self.base[s] as usize;
                    let [dr, dc] = self.frac[s];
                    let top = (1.0 - dc) * padded[b] + dc * padded[b + 1];
                    let bottom = (1.0 - dc) * padded[b + wp] + dc * padded[b + wp + 1];
                    acc += (1.0 - dr) * top + dr * bottom;
                }
                out.push(acc);
            }
        }
        Ok(out)
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        self.check_len(y)?;
        let [ch, h, w] = self.shape;
        let wp = w + 2;
        let rays = self.row_ptr.len() - 1;
        let mut out = Vec::with_capacity(ch * h * w);
        let mut padded = vec![0.0; self.padded_len_image()];
        for c in 0..ch {
            padded.iter_mut().for_each(|v| *v = 0.0);
            for r in 0..rays {
                let v = y[c * rays + r];
                if v == 0.0 {
                    continue;
                }
                for s in self.row_ptr[r]..self.row_ptr[r + 1] {
                    let b = self.base[s] as usize;
                    let [dr, dc] = self.frac[s];
                    let (top, bottom) = ((1.0 - dr) * v, dr * v);
                    padded[b] += (1.0 - dc) * top;
                    padded[b + 1] += dc * top;
                    padded[b + wp] += (1.0 - dc) * bottom;
                    padded[b + wp + 1] += dc * bottom;
                }
            }
            for i in 0..h {
                out.extend_from_slice(&padded[(i + 1) * wp + 1..(i + 1) * wp + 1 + w]);
            }
        }
        Ok(out)
    }
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        let mut out = self.fbp(&self.noise.linearized(y))?;
        clip_unit(&mut out);
        Ok(out)
    }
}

/// [`Tomography`]'s projector on a device, channel by channel.
struct ProjectorMap {
    sparse: crate::device::SparseRows,
    shape: [usize; 3],
    /// (angles K, detector bins D).
    sino: [usize; 2],
}

impl crate::device::DeviceMap for ProjectorMap {
    fn forward(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        let [c, h, w] = self.shape;
        let b = x.dim(0)?;
        let flat = x.contiguous()?.reshape((b * c, h * w))?;
        Ok(self
            .sparse
            .apply(&flat)?
            .reshape((b, c, self.sino[0], self.sino[1]))?)
    }
    fn vjp(
        &self,
        _x: &candle_core::Tensor,
        v: &candle_core::Tensor,
    ) -> Result<candle_core::Tensor> {
        let [c, h, w] = self.shape;
        let b = v.dim(0)?;
        let flat = v
            .contiguous()?
            .reshape((b * c, self.sino[0] * self.sino[1]))?;
        Ok(self.sparse.adjoint(&flat)?.reshape((b, c, h, w))?)
    }
}
