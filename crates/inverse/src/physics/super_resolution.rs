//! Super-resolution: y = D x + σz with D a ×s downsampling (s = 2, 4, 8).
//!
//! Bicubic kernel: MATLAB `imresize(x, 1/s, 'bicubic')` with its default antialiasing, on
//! floating-point data (no rounding): Keys' cubic with a = −0.5, stretched by s for antialiasing
//! (h(x) = cubic(x/s)/s, support 4s), output pixel i (1-based) centred at input coordinate
//! u = s·i + (1 − s)/2, weights normalised to sum 1 per output pixel, and the image extended by
//! half-sample symmetric reflection at the borders. Rows and columns are resized separably (the
//! order does not matter for this linear map). Box kernel: s × s average pooling.
//! Baseline for both: MATLAB-convention bicubic upsampling by s (no antialiasing when enlarging),
//! clipped to [-1, 1].

use std::sync::{Arc, OnceLock};

use crate::error::{InverseError, Result};
use crate::noise::NoiseModel;
use crate::operator::{clip_unit, Operator, ReferenceTask};
use crate::svd::{OperatorSvd, SeparableSvd};
use crate::task::{
    OptionDefault, OptionSpec, OptionType, TaskEntry, TaskOptions, DEFAULT_NOISE_SIGMA,
};

/// `sr2`, `sr4`, `sr8`.
pub const ENTRIES: &[TaskEntry] = &[TaskEntry {
    names: &["sr2", "sr4", "sr8"],
    summary: "bicubic ×s downsampling (MATLAB imresize convention) or s×s average pooling",
    own_options: &[OptionSpec {
        name: "kernel",
        help: "downsampling kernel.",
        kind: OptionType::Choice(&["bicubic", "box"]),
        default: OptionDefault::Choice("bicubic"),
    }],
    default_noise_sigma: DEFAULT_NOISE_SIGMA,
    build: build_sr,
}];

fn build_sr(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    let factor = match o.task() {
        "sr2" => 2,
        "sr4" => 4,
        _ => 8,
    };
    let kernel: SrKernel = o.choice("kernel")?.parse()?;
    Ok(Box::new(SuperResolution::new(
        shape,
        factor,
        kernel,
        o.intensity_noise()?,
    )?))
}

/// The downsampling kernel of `sr2|sr4|sr8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrKernel {
    /// MATLAB-convention antialiased bicubic (default).
    #[default]
    Bicubic,
    /// s × s average pooling.
    Box,
}

impl std::str::FromStr for SrKernel {
    type Err = InverseError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bicubic" => Ok(Self::Bicubic),
            "box" => Ok(Self::Box),
            other => Err(InverseError::InvalidOption {
                task: "sr".into(),
                msg: format!("unknown kernel `{other}`; expected `bicubic` or `box`"),
            }),
        }
    }
}

/// Keys' cubic convolution kernel with a = −0.5 (MATLAB's `cubic`).
fn cubic(x: f64) -> f64 {
    let a = x.abs();
    if a <= 1.0 {
        1.5 * a * a * a - 2.5 * a * a + 1.0
    } else if a <= 2.0 {
        -0.5 * a * a * a + 2.5 * a * a - 4.0 * a + 2.0
    } else {
        0.0
    }
}

/// Sparse 1-D resampling matrix: row i lists (input index, weight).
#[derive(Debug, Clone)]
pub struct ResizeMatrix {
    pub in_len: usize,
    pub rows: Vec<Vec<(usize, f64)>>,
}

impl ResizeMatrix {
    pub fn out_len(&self) -> usize {
        self.rows.len()
    }

    /// Dense row-major `out_len × in_len` copy.
    pub fn to_dense(&self) -> Vec<f64> {
        let mut d = vec![0.0; self.out_len() * self.in_len];
        for (i, r) in self.rows.iter().enumerate() {
            for &(j, v) in r {
                d[i * self.in_len + j] += v;
            }
        }
        d
    }
}

/// The 1-D matrix of MATLAB's `imresize` (bicubic) from `in_len` to `out_len` samples at
/// `scale` = out/in, antialiased when shrinking (see the module docs).
pub fn imresize_matrix(in_len: usize, out_len: usize, scale: f64) -> ResizeMatrix {
    let (stretch, width) = if scale < 1.0 {
        (scale, 4.0 / scale)
    } else {
        (1.0, 4.0)
    };
    let p = width.ceil() as i64 + 2;
    let n = in_len as i64;
    let mut rows = Vec::with_capacity(out_len);
    for i in 1..=out_len {
        let u = i as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
        let left = (u - width / 2.0).floor() as i64;
        let mut taps: Vec<(usize, f64)> = Vec::with_capacity(p as usize);
        let mut sum = 0.0;
        for k in 0..p {
            let idx = left + k; // 1-based
            let wgt = stretch * cubic(stretch * (u - idx as f64));
            if wgt == 0.0 {
                continue;
            }
            sum += wgt;
            // half-sample symmetric reflection: aux = [1..n, n..1]
            let m = (idx - 1).rem_euclid(2 * n);
            let j = if m < n { m } else { 2 * n - 1 - m };
            taps.push((j as usize, wgt));
        }
        let mut row: Vec<(usize, f64)> = Vec::with_capacity(taps.len());
        for (j, w) in taps {
            match row.iter_mut().find(|(jj, _)| *jj == j) {
                Some(e) => e.1 += w / sum,
                None => row.push((j, w / sum)),
            }
        }
        rows.push(row);
    }
    ResizeMatrix { in_len, rows }
}

fn box_matrix(in_len: usize, factor: usize) -> ResizeMatrix {
    let rows = (0..in_len / factor)
        .map(|i| {
            (0..factor)
                .map(|k| (i * factor + k, 1.0 / factor as f64))
                .collect()
        })
        .collect();
    ResizeMatrix { in_len, rows }
}

/// y[c] = Mh x[c] Mwᵀ for each channel of a `c × h × w` buffer.
fn apply_separable(
    mh: &ResizeMatrix,
    mw: &ResizeMatrix,
    x: &[f64],
    c: usize,
    h: usize,
    w: usize,
) -> Vec<f64> {
    let (oh, ow) = (mh.out_len(), mw.out_len());
    let mut out = vec![0.0; c * oh * ow];
    let mut t = vec![0.0; h * ow];
    for ch in 0..c {
        let xc = &x[ch * h * w..(ch + 1) * h * w];
        t.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..h {
            for (q, row) in mw.rows.iter().enumerate() {
                t[i * ow + q] = row.iter().map(|&(j, v)| v * xc[i * w + j]).sum();
            }
        }
        let oc = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
        for (p, row) in mh.rows.iter().enumerate() {
            for &(i, v) in row {
                for q in 0..ow {
                    oc[p * ow + q] += v * t[i * ow + q];
                }
            }
        }
    }
    out
}

/// x[c] = Mhᵀ y[c] Mw for each channel (the adjoint of [`apply_separable`]).
fn apply_separable_t(mh: &ResizeMatrix, mw: &ResizeMatrix, y: &[f64], c: usize) -> Vec<f64> {
    let (oh, ow, h, w) = (mh.out_len(), mw.out_len(), mh.in_len, mw.in_len);
    let mut out = vec![0.0; c * h * w];
    let mut t = vec![0.0; h * ow];
    for ch in 0..c {
        let yc = &y[ch * oh * ow..(ch + 1) * oh * ow];
        t.iter_mut().for_each(|v| *v = 0.0);
        for (p, row) in mh.rows.iter().enumerate() {
            for &(i, v) in row {
                for q in 0..ow {
                    t[i * ow + q] += v * yc[p * ow + q];
                }
            }
        }
        let oc = &mut out[ch * h * w..(ch + 1) * h * w];
        for i in 0..h {
            for (q, row) in mw.rows.iter().enumerate() {
                let tv = t[i * ow + q];
                for &(j, v) in row {
                    oc[i * w + j] += v * tv;
                }
            }
        }
    }
    out
}

/// `sr2|sr4|sr8` (see the module docs).
#[derive(Debug, Clone)]
pub struct SuperResolution {
    name: String,
    shape: [usize; 3],
    factor: usize,
    kernel: SrKernel,
    down_h: ResizeMatrix,
    down_w: ResizeMatrix,
    up_h: ResizeMatrix,
    up_w: ResizeMatrix,
    noise: Arc<dyn NoiseModel>,
    svd: OnceLock<Option<SeparableSvd>>,
}

impl SuperResolution {
    pub fn new(
        shape: [usize; 3],
        factor: usize,
        kernel: SrKernel,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        let name = format!("sr{factor}");
        super::check_shape(&name, shape)?;
        let [_, h, w] = shape;
        if factor < 2 || h % factor != 0 || w % factor != 0 {
            return Err(InverseError::ImageShape {
                task: name,
                msg: format!("image {h}×{w} must be divisible by the factor {factor} (≥ 2)"),
            });
        }
        let (oh, ow) = (h / factor, w / factor);
        let s = 1.0 / factor as f64;
        let (down_h, down_w) = match kernel {
            SrKernel::Bicubic => (imresize_matrix(h, oh, s), imresize_matrix(w, ow, s)),
            SrKernel::Box => (box_matrix(h, factor), box_matrix(w, factor)),
        };
        let up_h = imresize_matrix(oh, h, factor as f64);
        let up_w = imresize_matrix(ow, w, factor as f64);
        Ok(Self {
            name,
            shape,
            factor,
            kernel,
            down_h,
            down_w,
            up_h,
            up_w,
            noise,
            svd: OnceLock::new(),
        })
    }

    pub fn factor(&self) -> usize {
        self.factor
    }

    pub fn kernel(&self) -> SrKernel {
        self.kernel
    }
}

impl Operator for SuperResolution {
    /// X ↦ D_h X D_wᵀ per channel with the dense 1-D downsampling matrices.
    fn device_map(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> Result<Option<Box<dyn crate::device::DeviceMap>>> {
        use crate::device::{Mat, Separable};
        let (h, w) = (self.down_h.in_len, self.down_w.in_len);
        let (oh, ow) = (self.down_h.out_len(), self.down_w.out_len());
        Ok(Some(Box::new(SeparableMap(Separable {
            l: Mat::new(&self.down_h.to_dense(), oh, h, device, dtype)?,
            r: Mat::new(&self.down_w.to_dense(), ow, w, device, dtype)?,
        }))))
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn measurement_shape(&self) -> Vec<usize> {
        vec![
            self.shape[0],
            self.shape[1] / self.factor,
            self.shape[2] / self.factor,
        ]
    }
    fn noise(&self) -> &dyn NoiseModel {
        self.noise.as_ref()
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn reference_task(&self) -> Option<ReferenceTask> {
        Some(ReferenceTask::SuperResolution)
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        let [c, h, w] = self.shape;
        Ok(apply_separable(&self.down_h, &self.down_w, x, c, h, w))
    }
    /// Separable, box or bicubic: the Kronecker product of the dense SVDs of the 1-D
    /// downsampling matrices (computed on first use; `None` only if the dense SVD fails).
    fn svd(&self) -> Option<&dyn OperatorSvd> {
        self.svd
            .get_or_init(|| {
                let (h, w) = (self.down_h.in_len, self.down_w.in_len);
                let (oh, ow) = (self.down_h.out_len(), self.down_w.out_len());
                SeparableSvd::new(
                    self.shape[0],
                    &self.down_h.to_dense(),
                    (oh, h),
                    &self.down_w.to_dense(),
                    (ow, w),
                )
                .ok()
            })
            .as_ref()
            .map(|s| s as &dyn OperatorSvd)
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        Ok(apply_separable_t(
            &self.down_h,
            &self.down_w,
            y,
            self.shape[0],
        ))
    }
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        let [c, h, w] = self.shape;
        let mut out = apply_separable(
            &self.up_h,
            &self.up_w,
            y,
            c,
            h / self.factor,
            w / self.factor,
        );
        clip_unit(&mut out);
        Ok(out)
    }
}

/// [`crate::device::Separable`] as a linear device map.
struct SeparableMap(crate::device::Separable);

impl crate::device::DeviceMap for SeparableMap {
    fn forward(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        self.0.apply(x)
    }
    fn vjp(
        &self,
        _x: &candle_core::Tensor,
        v: &candle_core::Tensor,
    ) -> Result<candle_core::Tensor> {
        self.0.adjoint(v)
    }
}
