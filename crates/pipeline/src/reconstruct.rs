//! One reconstruction: simulate or read a measurement, run a posterior sampler, summarise the
//! samples (posterior mean and standard deviation, the classical baseline, metrics against the
//! ground truth when it is known), and write the standard output folder.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use genprior_inverse::Operator;
use genprior_posterior::{mean_and_std, Chains, MethodProgress, PosteriorSampler, Problem};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::files::{write_json, write_npy, write_npy_complex};
use crate::images::save_image;

/// A simulated measurement of the clean images `x` (`(B, C, H, W)`), all noise from `seed`
/// (the same y for the same seed, on any device).
pub fn simulate(op: &dyn Operator, x: &Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(op.simulate(&x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?, &mut rng)?)
}

/// A measurement as read from a file, shaped `(1, ...measurement shape)` and validated by the
/// operator. `what` names the source in errors.
pub fn measurement_from(y: Tensor, op: &dyn Operator, what: &str) -> Result<Tensor> {
    let ms = op.measurement_shape();
    let d = y.dims().to_vec();
    let y = if d == ms {
        y.unsqueeze(0)?
    } else if d.len() == ms.len() + 1 && d[0] == 1 && d[1..] == ms[..] {
        y
    } else {
        bail!(
            "{what}: measurement of shape {d:?} does not fit task `{}` on these images: expected {ms:?} or [1, ...] of it",
            op.name()
        );
    };
    op.validate_measurement(&y)
        .with_context(|| what.to_string())?;
    Ok(y)
}

/// PSNR and SSIM of each image of `img` against `truth` (both in [-1, 1], same shape).
pub fn metrics(img: &Tensor, truth: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let a = genprior_inverse::to_unit_range(img)?;
    let b = genprior_inverse::to_unit_range(truth)?;
    Ok((
        genprior_inverse::psnr(&a, &b)?,
        genprior_inverse::ssim(&a, &b)?,
    ))
}

/// What a viewer shows and the metrics score: for an operator with complex images (2
/// channels = real, imaginary part; MRI) the magnitude, as one channel 2·min(|x|, 1) − 1 in
/// [-1, 1] (so [`genprior_inverse::to_unit_range`] gives |x| clipped to [0, 1]); any other
/// image as it is. Works on `(B, C, H, W)` batches.
pub fn viewable(complex: bool, x: &Tensor) -> Result<Tensor> {
    if !complex {
        return Ok(x.clone());
    }
    if x.dim(1)? != 2 {
        bail!(
            "a complex image has 2 channels (real, imaginary), got shape {:?}",
            x.dims()
        );
    }
    let mag = x.sqr()?.sum_keepdim(1)?.sqrt()?;
    Ok(mag.clamp(0.0, 1.0)?.affine(2.0, -1.0)?)
}

/// Writes a measurement `y` (`(1, ...)` or unbatched) as `.npy`: a complex measurement
/// ([`Operator::complex_measurement`]) as `complex64` of its shape without the (real,
/// imaginary) axis, any other as f32 with the batch axis.
pub fn write_measurement(op: &dyn Operator, y: &Tensor, path: &Path) -> Result<()> {
    if !op.complex_measurement() {
        return write_npy(y, path);
    }
    let y = if y.rank() == op.measurement_shape().len() + 1 {
        if y.dim(0)? != 1 {
            bail!(
                "one complex measurement per file, got a batch of {}",
                y.dim(0)?
            );
        }
        y.squeeze(0)?
    } else {
        y.clone()
    };
    write_npy_complex(&y, path)
}

fn finite_or_null(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// Pearson correlation of `a` and `b` (None when either is constant).
fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// What a reconstruction produced (host tensors, f32).
pub struct Reconstruction {
    /// `(K, C, H, W)` posterior samples.
    pub samples: Tensor,
    /// `(1, C, H, W)` posterior mean.
    pub mean: Tensor,
    /// `(1, C, H, W)` per-pixel posterior standard deviation.
    pub std: Tensor,
    /// The classical baseline `(1, C, H, W)`.
    pub baseline: Tensor,
    pub nfe: usize,
    pub seconds: f64,
    pub mean_acceptance: Option<f64>,
    /// The sampler's per-step record.
    pub trace: Value,
    /// Whether the images are complex (see [`viewable`]): PNGs and scores use the magnitude.
    pub complex_image: bool,
}

/// Runs `sampler` on `problem` for `chains`, and summarises the samples.
pub fn reconstruct(
    problem: &Problem,
    sampler: &dyn PosteriorSampler,
    chains: &Chains,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<Reconstruction> {
    let mut v = reconstruct_many(problem, sampler, chains, 1, progress)?;
    Ok(v.remove(0))
}

/// Several reconstructions in one sampler call: `problem.y` holds `items` measurements, each
/// repeated `chains.count / items` times (one per chain, item-major), or one measurement when
/// `items` is 1. Item j gets chains j·K .. (j+1)·K − 1 of the call; the call's wall time is
/// shared equally between the items, and each reports the call's network evaluations (a
/// batched evaluation serves every item).
pub fn reconstruct_many(
    problem: &Problem,
    sampler: &dyn PosteriorSampler,
    chains: &Chains,
    items: usize,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<Vec<Reconstruction>> {
    if items == 0 || !chains.count.is_multiple_of(items) {
        bail!(
            "{} chains cannot be split evenly between {items} items",
            chains.count
        );
    }
    let k = chains.count / items;
    let by = problem.y.dim(0)?;
    if !(by == chains.count || (by == 1 && items == 1)) {
        bail!("measurement batch {by} does not match {items} item(s) × {k} chains",);
    }
    let start = Instant::now();
    let out = sampler.sample(problem, chains, progress)?;
    let seconds = start.elapsed().as_secs_f64() / items as f64;
    let all = out.samples.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    genprior_nn::check_finite(&all, "the posterior samples")?;
    (0..items)
        .map(|j| {
            let y = problem.y.narrow(0, if by == 1 { 0 } else { j * k }, 1)?;
            let baseline = problem.op.baseline(&y)?.to_dtype(DType::F32)?;
            let samples = all.narrow(0, j * k, k)?;
            let (mean, std) = mean_and_std(&samples)?;
            Ok(Reconstruction {
                samples,
                mean,
                std,
                baseline: baseline.to_device(&Device::Cpu)?,
                nfe: out.nfe,
                seconds,
                mean_acceptance: out.mean_acceptance,
                trace: out.trace.clone(),
                complex_image: problem.op.complex_image(),
            })
        })
        .collect()
}

/// Image-like measurement to write as PNG: `(1, C, h, w)` with the image's channel count, or
/// for complex k-space a 1-channel log-magnitude image.
/// Measurements of nonlinear operators (phase-retrieval magnitudes, ≥ 0) are scaled by their
/// maximum to [-1, 1]; linear ones far outside the image range (a CT sinogram's line
/// integrals) are divided by their maximum absolute value; the rest are shown as they are.
fn measurement_image(op: &dyn Operator, y: &Tensor, c: usize) -> Result<Option<Tensor>> {
    let ms = op.measurement_shape();
    if op.complex_measurement() && ms.len() >= 3 {
        // k-space: log(1 + |y|) (root-sum-of-squares over coils), scaled by its maximum.
        let (h, w) = (ms[ms.len() - 2], ms[ms.len() - 1]);
        let y = y.to_dtype(DType::F32)?.reshape((2, (), h, w))?;
        let mag = y.sqr()?.sum(0)?.sum_keepdim(0)?.sqrt()?;
        let logm = (mag + 1.0)?.log()?;
        let mx = logm.max_all()?.to_scalar::<f32>()?.max(1e-12) as f64;
        return Ok(Some(logm.affine(2.0 / mx, -1.0)?.unsqueeze(0)?));
    }
    if ms.len() != 3 || ms[0] != c || !(c == 1 || c == 3) {
        return Ok(None);
    }
    let y = y.to_dtype(DType::F32)?;
    let mx = y.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-12) as f64;
    if !op.is_linear() {
        return Ok(Some(y.affine(2.0 / mx, -1.0)?));
    }
    if mx > 2.0 {
        return Ok(Some(y.affine(1.0 / mx, 0.0)?));
    }
    Ok(Some(y))
}

impl Reconstruction {
    /// PSNR/SSIM of the posterior mean and of the baseline against `truth` (nulls without it).
    pub fn scores(&self, truth: Option<&Tensor>) -> Result<(Value, Value)> {
        let Some(x) = truth else {
            return Ok((Value::Null, Value::Null));
        };
        let b = genprior_inverse::to_unit_range(&viewable(self.complex_image, x)?)?;
        let score = |img: &Tensor| -> Result<Value> {
            let a = genprior_inverse::to_unit_range(&viewable(self.complex_image, img)?)?;
            let p = genprior_inverse::psnr(&a, &b)?[0];
            let s = genprior_inverse::ssim(&a, &b).ok().map(|v| v[0]);
            Ok(json!({"psnr": finite_or_null(p), "ssim": s}))
        };
        Ok((score(&self.mean)?, score(&self.baseline)?))
    }

    /// How far one sample and the posterior's spread can be trusted against `truth`: the
    /// PSNR/SSIM of the first sample alone (what papers report), the fraction of ground-truth
    /// pixels inside the per-pixel 90 % interval mean ± 1.645·std (a Gaussian interval: with
    /// few samples empirical quantiles are too coarse), and the correlation over pixels between
    /// the error |mean − truth| and the std. Null without a ground truth or with one sample.
    pub fn calibration(&self, truth: Option<&Tensor>) -> Result<Value> {
        let (Some(x), true) = (truth, self.samples.dim(0)? >= 2) else {
            return Ok(Value::Null);
        };
        let b = genprior_inverse::to_unit_range(&viewable(self.complex_image, x)?)?;
        let first = genprior_inverse::to_unit_range(&viewable(
            self.complex_image,
            &self.samples.narrow(0, 0, 1)?,
        )?)?;
        let psnr = genprior_inverse::psnr(&first, &b)?[0];
        let ssim = genprior_inverse::ssim(&first, &b).ok().map(|v| v[0]);
        let flat = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
        };
        let (m, sd, t) = (flat(&self.mean)?, flat(&self.std)?, flat(x)?);
        let err: Vec<f64> = m.iter().zip(&t).map(|(a, b)| (a - b).abs()).collect();
        let inside = err
            .iter()
            .zip(&sd)
            .filter(|(e, s)| **e <= 1.645 * **s)
            .count();
        Ok(json!({
            "single_sample": {"psnr": finite_or_null(psnr), "ssim": ssim},
            "interval_90_coverage": inside as f64 / err.len() as f64,
            "error_std_correlation": pearson(&err, &sd).map_or(Value::Null, finite_or_null),
            "interval": "per pixel, posterior mean ± 1.645 × posterior std (Gaussian 90 %)",
        }))
    }

    /// Writes the output folder `dir` (which must exist, with a `samples/` subfolder):
    /// `reconstruction.png` (posterior mean), `samples/NNN.png` and `samples.npy` (f32, `(K, C, H,
    /// W)` in [-1, 1]), `std.png`, `baseline.png`,
    /// `measurement.npy` (+ `measurement.png` where image-like) and `report.json`, which is
    /// `report` with the run's results added. Returns the full report.
    pub fn write(
        &self,
        dir: &Path,
        op: &dyn Operator,
        y: &Tensor,
        truth: Option<&Tensor>,
        mut report: Value,
    ) -> Result<Value> {
        let k = self.samples.dim(0)?;
        let c = op.image_shape()[0];
        let cx = self.complex_image;
        // A complex image's std is the root-sum-of-squares of its two channels' std.
        let std = if cx {
            self.std.sqr()?.sum_keepdim(1)?.sqrt()?
        } else {
            self.std.clone()
        };
        let std_max = std.max_all()?.to_scalar::<f32>()? as f64;
        let std_scale = if std_max > 0.0 { std_max } else { 1.0 };
        save_image(&viewable(cx, &self.mean)?, dir.join("reconstruction.png"))?;
        for i in 0..k {
            save_image(
                &viewable(cx, &self.samples.narrow(0, i, 1)?)?,
                dir.join("samples").join(format!("{i:03}.png")),
            )?;
        }
        // std / scale ∈ [0, 1] shown as black → white.
        save_image(&std.affine(2.0 / std_scale, -1.0)?, dir.join("std.png"))?;
        save_image(
            &viewable(cx, &self.baseline.clamp(-1.0, 1.0)?)?,
            dir.join("baseline.png"),
        )?;
        if cx {
            // (K, 2, H, W) → planar (2, K, H, W) → complex64 (K, H, W).
            write_npy_complex(
                &self.samples.transpose(0, 1)?.contiguous()?,
                &dir.join("samples.npy"),
            )?;
        } else {
            write_npy(&self.samples, &dir.join("samples.npy"))?;
        }
        write_measurement(op, y, &dir.join("measurement.npy"))?;
        let wrote_measurement_png = match measurement_image(op, y, c)? {
            Some(img) => {
                save_image(&img, dir.join("measurement.png"))?;
                true
            }
            None => false,
        };
        let (rec, base) = self.scores(truth)?;
        let results = json!({
            "samples": k,
            "nfe": self.nfe,
            "nfe_per_image": self.nfe,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds / k as f64,
            "std_scale": std_scale,
            "std_png": "per-pixel posterior standard deviation / std_scale, black = 0, white = std_scale (images in [-1, 1])",
            "mean_pcs_acceptance": self.mean_acceptance,
            "outer_steps": self.trace,
            "reconstruction": rec,
            "baseline": base,
            "calibration": self.calibration(truth)?,
            "measurement_png": wrote_measurement_png,
            "complex_image": cx,
            "complex_measurement": op.complex_measurement(),
            "image_shape": op.image_shape(),
            "measurement_shape": y.dims()[1..].to_vec(),
        });
        if let (Some(r), Value::Object(add)) = (report.as_object_mut(), results) {
            r.extend(add);
        }
        write_json(&dir.join("report.json"), &report)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::{Distribution, Normal};

    /// Samples drawn exactly from N(truth, s²) with a per-pixel s: the 90 % interval covers
    /// ~90 % of the pixels and the error grows with the std.
    #[test]
    fn calibration_of_exact_samples() {
        let (k, n) = (400usize, 32 * 32);
        let mut rng = StdRng::seed_from_u64(5);
        let truth: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect();
        let sd: Vec<f32> = (0..n).map(|i| 0.01 + 0.1 * (i % 7) as f32 / 6.0).collect();
        let mut v = Vec::with_capacity(k * n);
        for _ in 0..k {
            for i in 0..n {
                v.push(truth[i] + Normal::new(0.0, sd[i]).unwrap().sample(&mut rng));
            }
        }
        let samples = Tensor::from_vec(v, (k, 1, 32, 32), &Device::Cpu).unwrap();
        // The truth drawn once more from the same law, so that the posterior mean is not it.
        let t2: Vec<f32> = (0..n)
            .map(|i| truth[i] + Normal::new(0.0, sd[i]).unwrap().sample(&mut rng))
            .collect();
        let truth = Tensor::from_vec(t2, (1, 1, 32, 32), &Device::Cpu).unwrap();
        let (mean, std) = mean_and_std(&samples).unwrap();
        let rec = Reconstruction {
            baseline: mean.clone(),
            samples,
            mean,
            std,
            nfe: 0,
            seconds: 0.0,
            mean_acceptance: None,
            trace: Value::Null,
            complex_image: false,
        };
        let c = rec.calibration(Some(&truth)).unwrap();
        let cov = c["interval_90_coverage"].as_f64().unwrap();
        // 1,024 pixels: the binomial standard error of 0.9 is 0.0094.
        assert!((cov - 0.9).abs() < 0.04, "{c}");
        assert!(c["error_std_correlation"].as_f64().unwrap() > 0.3, "{c}");
        assert!(c["single_sample"]["psnr"].as_f64().is_some(), "{c}");
        // Overconfident samples (std shrunk ten times) cover far fewer pixels.
        let narrow = Reconstruction {
            std: rec.std.affine(0.1, 0.0).unwrap(),
            ..rec
        };
        let c = narrow.calibration(Some(&truth)).unwrap();
        assert!(c["interval_90_coverage"].as_f64().unwrap() < 0.3, "{c}");
        assert!(narrow.calibration(None).unwrap().is_null());
    }
}
