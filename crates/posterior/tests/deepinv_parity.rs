//! Parity with deepinv 0.5.0's `DiffPIR` (`deepinv/sampling/diffusion.py`) run through
//! `DiffusersDenoiserWrapper` on a tiny random-weight diffusers UNet, from the fixtures of
//! `scripts/gen_deepinv_fixtures.py` (`tests/fixtures/deepinv/`, format in its README.md).
//!
//! deepinv works in [0, 1] image units, genprior in [-1, 1]: x = 2x₀₁ − 1 and, for a linear
//! A, y = 2y₀₁ − A·1 (the measurement of the same image, noise doubled). deepinv's λ is half
//! genprior's (`diffpir-lambda`), and its start x_{t_0} = sqrt(ᾱ_{t_0})(2Aᵀy₀₁ − 1 +
//! sqrt(σ̄²_{t_0} − 4σ_n²) z) is handed to [`diffpir_from`] together with deepinv's recorded
//! re-noising draws. Checked: deepinv's timestep grid and the UNet timesteps it used equal
//! [`diffpir_timesteps`]; every step's denoiser input x_{t_i}/(2 sqrt(ᾱ_{t_i})) + 1/2 agrees,
//! and the final image agrees within 1e-4 ([0, 1] units).
//!
//! And deepinv's `DDRM` (η = η_b = 0) on the reference's 20-step grid 950, 900, …, 0 (its σ's
//! σ̄_t/2, then 0, whose denoiser call is the identity), against [`ddrm_from_noise`]: the
//! trajectory is linear in the draws with coefficients that depend on a coordinate only through
//! its singular value, so deepinv's draws, taken to the pixel domain by deepinv's V
//! (`noise_pixel.npy`), are handed over in genprior's basis as Vᵀ(noise_pixel)/sqrt(2) (deepinv
//! adds std·z/sqrt(2) at a std half genprior's). The blur kernel keeps every |k̂| above σ_n, so
//! deepinv's rule "s ≤ σ_n counts as unobserved" does not apply. deepinv's start centres the
//! coordinates the measurement does not pin (inpainting holes) at 0 in its [0, 1] units, i.e.
//! at −1 in genprior's, where genprior and the reference centre them at 0; the start draws of
//! those coordinates are shifted to reproduce that.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use genprior_inverse::physics::{Blur, Identity, Inpainting, Kernel2d, SrKernel, SuperResolution};
use genprior_inverse::{Gaussian, Operator};
use genprior_posterior::ddrm::{ddrm_from_noise, ddrm_timesteps, DdrmConfig};
use genprior_posterior::diffpir::{diffpir_from, diffpir_timesteps, DataStep, DiffpirConfig};
use genprior_posterior::method::Problem;
use genprior_prior::{load_prior, ModelSource, ModelSpec, Prior};
use serde_json::Value;

const TOL: f64 = 1e-4;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/deepinv")
}

/// A fixture array: its shape and values.
fn npy(rel: &str) -> (Vec<usize>, Vec<f64>) {
    let t = Tensor::read_npy(dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let shape = t.dims().to_vec();
    let v = t
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    (shape, v)
}

fn meta(rel: &str) -> Value {
    let s = std::fs::read_to_string(dir().join(rel)).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn prior() -> Prior {
    let spec = ModelSpec::new(ModelSource::Local(dir().join("model")));
    load_prior(&spec, &Device::Cpu, DType::F32).unwrap()
}

fn tensor(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(
        v.iter().map(|&a| a as f32).collect::<Vec<_>>(),
        shape,
        &Device::Cpu,
    )
    .unwrap()
}

fn host(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
}

/// genprior's operator for the fixture task, σ_y = 2σ_n.
fn operator(task: &str, shape: [usize; 3], sigma_n: f64) -> Box<dyn Operator> {
    let noise = Arc::new(Gaussian::with_sigma(2.0 * sigma_n).unwrap());
    match task {
        "denoise" => Box::new(Identity::denoise(shape, noise).unwrap()),
        "inpaint" => {
            let (_, mask) = npy("inpaint/mask.npy");
            Box::new(Inpainting::from_mask("inpaint-mask", shape, &mask, noise).unwrap())
        }
        "blur" => {
            let (ks, k) = npy("blur/kernel.npy");
            let kernel = Kernel2d::new(ks[0], ks[1], k).unwrap();
            Box::new(Blur::new("deblur-gauss", shape, kernel, noise).unwrap())
        }
        "sr2" => Box::new(SuperResolution::new(shape, 2, SrKernel::Box, noise).unwrap()),
        other => panic!("unknown fixture task {other}"),
    }
}

/// Runs genprior's DiffPIR on one fixture case; returns (max per-step error of the denoiser
/// inputs, final error), both in [0, 1] units.
fn diffpir_case(case: &str) -> (f64, f64) {
    let m = meta(&format!("{case}/meta.json"));
    let task = m["task"].as_str().unwrap();
    let steps = m["steps"].as_u64().unwrap() as usize;
    let sigma_n = m["sigma_n_01"].as_f64().unwrap();
    let zeta = m["zeta"].as_f64().unwrap();
    let lambda = 2.0 * m["lambda_deepinv"].as_f64().unwrap();

    let p = prior();
    let (xs, _) = npy("x_true.npy");
    let shape = [xs[1], xs[2], xs[3]];
    let op = operator(task, shape, sigma_n);

    // The timestep grid and the timesteps deepinv's wrapper gave the UNet.
    let ts = diffpir_timesteps(p.schedule.num_train_timesteps(), steps).unwrap();
    let grid: Vec<usize> = m["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(grid, ts, "{case}: deepinv's timestep grid");
    let calls = m["calls"].as_array().unwrap();
    assert_eq!(calls.len(), steps, "{case}: deepinv's network evaluations");
    for (c, &t) in calls.iter().zip(&ts) {
        assert_eq!(
            c["timestep"].as_u64().unwrap() as usize,
            t,
            "{case}: UNet timestep"
        );
    }

    // Measurement in both unit systems.
    let (ys, y01) = npy(&format!("{task}/y.npy"));
    let ones = op.forward_host(&vec![1.0; op.image_len()]).unwrap();
    let y: Vec<f64> = y01.iter().zip(&ones).map(|(a, o)| 2.0 * a - o).collect();
    let mut yshape = vec![1];
    yshape.extend_from_slice(&ys);
    let y = tensor(&y, &yshape);

    // deepinv's start from its first draw.
    let (ns, noise) = npy(&format!("{case}/noise.npy"));
    let n = op.image_len();
    assert_eq!(
        ns[0], steps,
        "{case}: one start draw and one per non-final step"
    );
    let ab0 = p.schedule.alpha_bar(ts[0]).unwrap();
    let sbar2 = (1.0 - ab0) / ab0;
    let aty01 = op.adjoint_host(&y01).unwrap();
    let start: Vec<f64> = aty01
        .iter()
        .zip(&noise[..n])
        .map(|(a, z)| ab0.sqrt() * (2.0 * a - 1.0 + (sbar2 - 4.0 * sigma_n * sigma_n).sqrt() * z))
        .collect();
    let img = [1, shape[0], shape[1], shape[2]];

    let cfg = DiffpirConfig {
        steps,
        lambda,
        zeta,
        grad_steps: 5,
        data_step: DataStep::for_operator(op.as_ref()),
    };
    let problem = Problem {
        model: p.net.as_ref(),
        schedule: &p.schedule,
        op: op.as_ref(),
        y: &y,
    };
    let (_, den_in) = npy(&format!("{case}/den_in.npy"));
    let mut step_err = 0.0f64;
    let (x, nfe) = diffpir_from(
        &problem,
        &cfg,
        tensor(&start, &img),
        &mut |i, _| Ok(tensor(&noise[(i + 1) * n..(i + 2) * n], &img)),
        &mut |i, x| {
            let ab = p.schedule.alpha_bar(ts[i]).unwrap();
            let got: Vec<f64> = host(x)
                .iter()
                .map(|v| v / (2.0 * ab.sqrt()) + 0.5)
                .collect();
            let e = max_abs(&got, &den_in[i * n..(i + 1) * n]);
            step_err = step_err.max(e);
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(nfe, steps - 1, "{case}: genprior skips the last evaluation");
    let got: Vec<f64> = host(&x).iter().map(|v| v / 2.0 + 0.5).collect();
    let (_, want) = npy(&format!("{case}/out.npy"));
    let final_err = max_abs(&got, &want);
    println!("{case}: max step error {step_err:.2e}, final error {final_err:.2e}");
    (step_err, final_err)
}

fn check_diffpir(case: &str) {
    let (step, fin) = diffpir_case(case);
    assert!(
        step <= TOL,
        "{case}: a step's state differs from deepinv's by {step}"
    );
    assert!(
        fin <= TOL,
        "{case}: the result differs from deepinv's by {fin}"
    );
}

#[test]
fn diffpir_denoise_matches_deepinv() {
    check_diffpir("diffpir_denoise");
}

#[test]
fn diffpir_inpaint_matches_deepinv() {
    check_diffpir("diffpir_inpaint");
}

#[test]
fn diffpir_inpaint_with_renoising_matches_deepinv() {
    check_diffpir("diffpir_inpaint_zeta");
}

#[test]
fn diffpir_blur_matches_deepinv() {
    check_diffpir("diffpir_blur");
}

#[test]
fn diffpir_box_sr_matches_deepinv() {
    check_diffpir("diffpir_sr2");
}

/// Runs genprior's DDRM on one fixture task; returns the final error in [0, 1] units.
fn ddrm_case(task: &str) -> f64 {
    let case = format!("ddrm_{task}");
    let m = meta(&format!("{case}/meta.json"));
    let steps = m["steps"].as_u64().unwrap() as usize;
    let sigma_n = m["sigma_n_01"].as_f64().unwrap();
    let cfg = DdrmConfig {
        steps,
        eta: m["eta"].as_f64().unwrap(),
        eta_b: m["eta_b"].as_f64().unwrap(),
    };
    let p = prior();
    let (xs, _) = npy("x_true.npy");
    let shape = [xs[1], xs[2], xs[3]];
    let op = operator(task, shape, sigma_n);
    let svd = op.svd().expect("the fixture tasks have an SVD");

    // The grid, and deepinv's σ's and UNet timesteps on it (plus the final σ = 0 call).
    let ts = ddrm_timesteps(p.schedule.num_train_timesteps(), steps).unwrap();
    let grid: Vec<usize> = m["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(grid, ts, "{case}: the reference grid");
    let calls = m["calls"].as_array().unwrap();
    assert_eq!(calls.len(), steps + 1, "{case}: deepinv's calls");
    for (i, c) in calls.iter().enumerate() {
        let t = ts.get(i).copied().unwrap_or(0);
        assert_eq!(
            c["timestep"].as_u64().unwrap() as usize,
            t,
            "{case}: call {i}"
        );
        let want = if i < steps {
            let ab = p.schedule.alpha_bar(t).unwrap();
            ((1.0 - ab) / ab).sqrt() / 2.0
        } else {
            0.0
        };
        let got = c["sigma"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-5 * want.max(1.0),
            "{case}: σ of call {i}"
        );
    }

    let (ys, y01) = npy(&format!("{task}/y.npy"));
    let ones = op.forward_host(&vec![1.0; op.image_len()]).unwrap();
    let y: Vec<f64> = y01.iter().zip(&ones).map(|(a, o)| 2.0 * a - o).collect();
    let mut yshape = vec![1];
    yshape.extend_from_slice(&ys);
    let y = tensor(&y, &yshape);

    let (ns, pix) = npy(&format!("{case}/noise_pixel.npy"));
    let n = op.image_len();
    assert_eq!(ns[0], steps + 1, "{case}: deepinv's draws");
    let img = [1, shape[0], shape[1], shape[2]];
    let spectral = |k: usize| {
        let z: Vec<f64> = svd
            .v_adjoint(&pix[k * n..(k + 1) * n])
            .unwrap()
            .iter()
            .map(|v| v / std::f64::consts::SQRT_2)
            .collect();
        tensor(&z, &img)
    };
    // deepinv's last draw (at σ = 0) has weight 0; genprior takes none there.
    let z_steps: Vec<Tensor> = (1..steps).map(spectral).collect();
    // deepinv starts the coordinates the measurement does not pin (s σ_{t_0} ≤ σ_0) at mean 0
    // in its [0, 1] units, i.e. at −Vᵀ1 in genprior's (black), where genprior and the
    // reference start them at 0: shift those start draws by −(Vᵀ1)_i/σ_{t_0}.
    let sig0 = {
        let ab = p.schedule.alpha_bar(ts[0]).unwrap();
        ((1.0 - ab) / ab).sqrt()
    };
    let vt1 = svd.v_adjoint(&vec![1.0; n]).unwrap();
    let z_init: Vec<f64> = host(&spectral(0))
        .iter()
        .zip(svd.singular_values())
        .zip(&vt1)
        .map(|((z, &si), o)| {
            if si * sig0 > op.temperature() {
                *z
            } else {
                z - o / sig0
            }
        })
        .collect();
    let problem = Problem {
        model: p.net.as_ref(),
        schedule: &p.schedule,
        op: op.as_ref(),
        y: &y,
    };
    let x = ddrm_from_noise(&problem, &cfg, &tensor(&z_init, &img), &z_steps).unwrap();
    let got: Vec<f64> = host(&x).iter().map(|v| v / 2.0 + 0.5).collect();
    let (_, want) = npy(&format!("{case}/out.npy"));
    let err = max_abs(&got, &want);
    println!("{case}: final error {err:.2e}");
    err
}

fn check_ddrm(task: &str) {
    let err = ddrm_case(task);
    assert!(
        err <= TOL,
        "ddrm_{task}: the result differs from deepinv's by {err}"
    );
}

#[test]
fn ddrm_denoise_matches_deepinv() {
    check_ddrm("denoise");
}

#[test]
fn ddrm_inpaint_matches_deepinv() {
    check_ddrm("inpaint");
}

#[test]
fn ddrm_blur_matches_deepinv() {
    check_ddrm("blur");
}

#[test]
fn ddrm_box_sr_matches_deepinv() {
    check_ddrm("sr2");
}
