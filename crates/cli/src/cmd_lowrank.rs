//! `genprior lowrank ...`: ScaledGD low-rank recovery from the command line. Parses,
//! loads NPY/CSV, calls genprior-lowrank, writes the estimate and a JSON report.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use genprior_lowrank::bench::{
    run_bench, run_l1_sweep, BenchConfig, BenchRow, L1Row, L1SweepConfig,
};
use genprior_lowrank::hankel::C64;
use genprior_lowrank::select::completion_rank_scan;
use genprior_lowrank::{
    synthetic, Damping, Design, HankelCompletion, L1Problem, L1Step, MatrixCompletion,
    MatrixSensing, Method, Options, PsdInit, PsdSensing, Report, RobustPca, TensorCompletion,
    TensorRpca, TrpcaParams,
};

#[derive(clap::Subcommand, Debug)]
pub enum LowrankCmd {
    /// Matrix completion from observed entries (--input Y --mask M).
    Complete(CompleteArgs),
    /// Robust PCA: low-rank plus sparse outliers.
    Rpca(RpcaArgs),
    /// Matrix sensing y = A(X) with a design matrix (m × n1·n2); --psd for
    /// overparameterised PSD sensing with ScaledGD(λ).
    Sense(SenseArgs),
    /// Tucker (3-way) tensor completion.
    Tucker(TuckerArgs),
    /// Tensor robust PCA (Tucker low rank plus sparse).
    TensorRpca(TensorRpcaArgs),
    /// Spectrally sparse 1-D signal (sum of damped complex exponentials) from a subset of
    /// its samples: low-rank Hankel completion with ScaledGD (FFT products, never the
    /// Hankel matrix); frequencies, dampings and amplitudes in the report.
    Hankel(HankelArgs),
    /// Learned (unrolled) ScaledGD for robust PCA: train the thresholds, step and decay
    /// (`train`), or run a trained model (`apply`).
    #[command(subcommand)]
    LearnedRpca(LearnedCmd),
    /// ScaledGD vs GD benchmark on the spec's reference problems.
    Bench(BenchArgs),
}

/// Options shared by every solver subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Input data (.npy or .csv).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Generate a reference problem instead: "n,r,kappa,p" (p: sampling rate for
    /// complete/tucker, outlier fraction for rpca/tensor-rpca, m/(n·r) for sense).
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Seed of the synthetic problem, randomized SVD and random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Method: scaledgd or gd.
    #[arg(long, default_value = "scaledgd", value_parser = ["scaledgd", "gd"])]
    pub method: String,
    /// Step size (default 0.5 matrix problems, 0.3 Tucker).
    #[arg(long)]
    pub eta: Option<f64>,
    #[arg(long, default_value_t = 1000)]
    pub max_iter: usize,
    /// Stop when the relative change or relative residual is below this.
    #[arg(long, default_value_t = 1e-10)]
    pub tol: f64,
    /// Preconditioner damping λ in (FᵀF + λI)⁻¹: "none", "rel:C" (λ = C·σ₁ of the
    /// initial estimate) or a number (absolute λ).
    #[arg(long, default_value = "none")]
    pub damping: String,
    /// Backtrack the step size when the data residual increases.
    #[arg(long, default_value_t = false)]
    pub backtrack: bool,
    /// Divergence threshold: relative residual above this × max(1, initial) is an error.
    #[arg(long, default_value_t = 1e3)]
    pub divergence: f64,
    /// Output estimate (.npy or .csv).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// JSON report (iterations, residuals, relative change per iteration, time).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Where to run: auto picks CUDA, then Metal, then CPU.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda", "metal"])]
    pub device: String,
    /// Precision.
    #[arg(long, default_value = "f64", value_parser = ["f64", "f32"])]
    pub dtype: String,
}

#[derive(clap::Args, Debug)]
pub struct CompleteArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Observation mask (non-zero = observed), same shape as the input.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Rank, or "auto" to pick it by held-out validation error.
    #[arg(long)]
    pub rank: String,
    /// Largest rank tried by --rank auto.
    #[arg(long, default_value_t = 15)]
    pub max_rank: usize,
    /// Fraction of observed entries held out by --rank auto and --early-stop.
    #[arg(long, default_value_t = 0.1)]
    pub holdout: f64,
    /// Early stopping: fit on the observed entries minus a --holdout fraction and stop
    /// once the held-out error has not improved for --patience iterations; the best
    /// iterate is written and the report gives best_iteration and best_heldout_error.
    #[arg(long, default_value_t = false)]
    pub early_stop: bool,
    /// Iterations without held-out improvement before --early-stop stops.
    #[arg(long, default_value_t = 20)]
    pub patience: usize,
}

/// ScaledSM (ℓ1 loss) options shared by rpca and sense.
#[derive(clap::Args, Debug, Clone)]
pub struct L1Args {
    /// Data-fit loss: l2 (ScaledGD) or l1 (ScaledSM, the scaled subgradient method, robust
    /// to outliers in the observations).
    #[arg(long, default_value = "l2", value_parser = ["l2", "l1"])]
    pub loss: String,
    /// ScaledSM step rule: geometric (λ·qᵗ along the normalised scaled subgradient) or
    /// polyak ((f − f⋆)/‖∂f‖², needs --f-star; the oracle value for --synthetic).
    #[arg(long, default_value = "geometric", value_parser = ["geometric", "polyak"])]
    pub step: String,
    /// Geometric step: initial length λ relative to ‖X₀‖_F.
    #[arg(long, default_value_t = 0.5)]
    pub step_lambda: f64,
    /// Geometric step: decay factor q in (0, 1).
    #[arg(long, default_value_t = 0.9)]
    pub step_q: f64,
    /// Polyak step: optimal loss value f⋆ = ‖outliers‖₁ (default: the oracle value for
    /// --synthetic, 0 otherwise).
    #[arg(long)]
    pub f_star: Option<f64>,
}

impl L1Args {
    fn step(&self, oracle: Option<f64>) -> Result<L1Step> {
        Ok(match self.step.as_str() {
            "polyak" => L1Step::Polyak {
                f_star: self.f_star.or(oracle).unwrap_or(0.0),
            },
            _ => L1Step::Geometric {
                lambda_rel: self.step_lambda,
                q: self.step_q,
            },
        })
    }
    fn is_l1(&self) -> bool {
        self.loss == "l1"
    }
}

#[derive(clap::Args, Debug)]
pub struct RpcaArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub l1: L1Args,
    /// With --loss l1: observation mask (non-zero = observed; robust completion).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    #[arg(long)]
    pub rank: usize,
    /// Outlier fraction per row/column (with --loss l1: used by the robust spectral
    /// initialisation only).
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Also write the sparse outlier estimate here.
    #[arg(long)]
    pub out_sparse: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct SenseArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub l1: L1Args,
    /// With --loss l1: fraction of corrupted measurements (the spectral initialisation
    /// drops this fraction of the largest |y_k|; --synthetic corrupts this fraction).
    #[arg(long, default_value_t = 0.0)]
    pub outliers: f64,
    /// Design matrix A (m × n1·n2), rows are row-major vec(A_k); --input holds y (m).
    #[arg(long)]
    pub design: Option<PathBuf>,
    /// Shape of X: "n1,n2".
    #[arg(long)]
    pub shape: Option<String>,
    /// Rank (search rank r' for --psd).
    #[arg(long)]
    pub rank: usize,
    /// Overparameterised PSD sensing with ScaledGD(λ) from a small random init.
    #[arg(long, default_value_t = false)]
    pub psd: bool,
    /// Initial scale α of the random initialisation (--psd).
    #[arg(long, default_value_t = 1e-6)]
    pub init_scale: f64,
}

#[derive(clap::Args, Debug)]
pub struct TuckerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Tucker rank: "r" or "r1,r2,r3".
    #[arg(long)]
    pub rank: String,
}

#[derive(clap::Args, Debug)]
pub struct TensorRpcaArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Tucker rank: "r" or "r1,r2,r3".
    #[arg(long)]
    pub rank: String,
    /// Initial soft threshold ζ₀ (default 4 × robust scale of Y).
    #[arg(long)]
    pub zeta0: Option<f64>,
    /// Threshold ζ₁ of the decaying schedule ζ₁ρᵗ (default 2 × robust scale of Y).
    #[arg(long)]
    pub zeta1: Option<f64>,
    #[arg(long, default_value_t = 0.9)]
    pub rho: f64,
    #[arg(long)]
    pub out_sparse: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum LearnedCmd {
    /// Train on synthetic instances (--synthetic n,r,kappa,alpha: supervised, then a
    /// comparison on held-out instances) or on --input Y itself (self-supervised).
    Train(LearnedTrainArgs),
    /// Run a trained model on --input Y.
    Apply(LearnedApplyArgs),
}

#[derive(clap::Args, Debug)]
pub struct LearnedTrainArgs {
    /// Model path stem: writes STEM.safetensors and STEM.json.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub rank: usize,
    /// Synthetic training instances "n,r,kappa,alpha" (supervised).
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Number of synthetic training instances (seeds seed..seed+K).
    #[arg(long, default_value_t = 4)]
    pub instances: usize,
    /// Held-out synthetic instances for the comparison (seeds after the training ones).
    #[arg(long, default_value_t = 4)]
    pub heldout: usize,
    /// Train self-supervised on this matrix instead (.npy or .csv).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Unrolled iterations T.
    #[arg(long, default_value_t = 10)]
    pub unroll: usize,
    /// Adam steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Comparison target: relative error to reach.
    #[arg(long, default_value_t = 1e-3)]
    pub target: f64,
    /// Iteration cap of the comparison runs.
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// JSON report (training history and the held-out comparison).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda", "metal"])]
    pub device: String,
    #[arg(long, default_value = "f64", value_parser = ["f64", "f32"])]
    pub dtype: String,
}

#[derive(clap::Args, Debug)]
pub struct LearnedApplyArgs {
    /// Model path stem (STEM.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub rank: usize,
    /// Iterations of the learned schedule.
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda", "metal"])]
    pub device: String,
    #[arg(long, default_value = "f64", value_parser = ["f64", "f32"])]
    pub dtype: String,
}

#[derive(clap::Args, Debug)]
pub struct HankelArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Observed samples: non-zero = observed (1-D, same length as --input). Without it,
    /// NaN samples of the input are the unobserved ones.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Number of complex exponentials (a real sinusoid counts as two).
    #[arg(long)]
    pub rank: usize,
    /// Rows n1 of the n1 × (N + 1 − n1) Hankel matrix (default ⌈N/2⌉).
    #[arg(long)]
    pub n1: Option<usize>,
    /// With --synthetic n,r,kappa,p: common damping per sample of the components.
    #[arg(long, default_value_t = 0.0)]
    pub synthetic_decay: f64,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// completion, rpca, sensing, tucker or all; rpca-l1 or sensing-l1 for the ScaledSM
    /// outlier-fraction sweep.
    #[arg(long, default_value = "all")]
    pub problem: String,
    #[arg(long)]
    pub n: Option<usize>,
    #[arg(long)]
    pub r: Option<usize>,
    /// Sampling rate (completion/tucker) or outlier fraction (rpca).
    #[arg(long)]
    pub p: Option<f64>,
    /// Measurements (sensing).
    #[arg(long)]
    pub m: Option<usize>,
    #[arg(long, default_value = "1,5,10,20,100,1000")]
    pub kappas: String,
    #[arg(long, default_value_t = 1000)]
    pub max_iter: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda", "metal"])]
    pub device: String,
    #[arg(long, default_value = "f64", value_parser = ["f64", "f32"])]
    pub dtype: String,
    /// Write all rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// rpca-l1 / sensing-l1: outlier fractions to sweep (κ = the first of --kappas).
    #[arg(long, default_value = "0.05,0.1,0.2,0.3")]
    pub outliers: String,
}

pub fn run(cmd: LowrankCmd) -> Result<()> {
    match cmd {
        LowrankCmd::Complete(a) => complete(a),
        LowrankCmd::Rpca(a) => rpca(a),
        LowrankCmd::Sense(a) => sense(a),
        LowrankCmd::Tucker(a) => tucker(a),
        LowrankCmd::TensorRpca(a) => tensor_rpca(a),
        LowrankCmd::Hankel(a) => hankel(a),
        LowrankCmd::LearnedRpca(LearnedCmd::Train(a)) => learned_train(a),
        LowrankCmd::LearnedRpca(LearnedCmd::Apply(a)) => learned_apply(a),
        LowrankCmd::Bench(a) => bench(a),
    }
}

// ------------------------------------------------------------------------------ helpers

/// The shared device selection (genprior-nn): `auto` falls back to the CPU when a CUDA or
/// Metal build runs on a machine without that GPU, instead of panicking in the driver loader.
fn pick_device(s: &str) -> Result<Device> {
    let choice: genprior_nn::DeviceChoice = s.parse()?;
    Ok(genprior_nn::select_device(choice)?.0)
}

fn pick_dtype(s: &str) -> DType {
    if s == "f32" {
        DType::F32
    } else {
        DType::F64
    }
}

fn is_csv(p: &Path) -> bool {
    p.extension()
        .map(|e| e.eq_ignore_ascii_case("csv"))
        .unwrap_or(false)
}

/// Load an NPY or CSV file as a tensor of `dtype` on `dev`.
fn load(path: &Path, dtype: DType, dev: &Device) -> Result<Tensor> {
    let t = if is_csv(path) {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut rows: Vec<Vec<f64>> = vec![];
        for (ln, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let vals: std::result::Result<Vec<f64>, _> = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(|s| s.trim().parse::<f64>())
                .collect();
            match vals {
                Ok(v) => rows.push(v),
                // Tolerate one header line.
                Err(_) if rows.is_empty() && ln == 0 => continue,
                Err(e) => bail!("{}: line {}: {e}", path.display(), ln + 1),
            }
        }
        if rows.is_empty() {
            bail!("{}: no numeric rows", path.display());
        }
        let c = rows[0].len();
        if let Some((i, _)) = rows.iter().enumerate().find(|(_, r)| r.len() != c) {
            bail!(
                "{}: row {} has a different number of columns",
                path.display(),
                i + 1
            );
        }
        let r = rows.len();
        Tensor::from_vec(rows.concat(), (r, c), &Device::Cpu)?
    } else {
        Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?
    };
    Ok(t.to_dtype(dtype)?.to_device(dev)?)
}

fn save(path: &Path, t: &Tensor) -> Result<()> {
    let t = t.to_device(&Device::Cpu)?;
    if is_csv(path) {
        let t = t.to_dtype(DType::F64)?;
        let (r, c) = t
            .dims2()
            .context("CSV output needs a matrix; use .npy for tensors")?;
        let v: Vec<Vec<f64>> = t.to_vec2()?;
        let mut s = String::with_capacity(r * c * 12);
        for row in v {
            let line: Vec<String> = row.iter().map(|x| format!("{x:e}")).collect();
            s.push_str(&line.join(","));
            s.push('\n');
        }
        std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))?;
    } else {
        t.write_npy(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn parse_damping(s: &str) -> Result<Damping> {
    if s == "none" {
        return Ok(Damping::None);
    }
    if let Some(c) = s.strip_prefix("rel:") {
        return Ok(Damping::Relative(
            c.parse().with_context(|| format!("--damping {s}"))?,
        ));
    }
    Ok(Damping::Absolute(s.parse().with_context(|| {
        format!("--damping {s}: expected none, rel:C or a number")
    })?))
}

fn options(c: &CommonArgs) -> Result<Options> {
    Ok(Options {
        method: c.method.parse::<Method>()?,
        eta: c.eta,
        max_iter: c.max_iter,
        tol: c.tol,
        damping: parse_damping(&c.damping)?,
        backtrack: c.backtrack,
        divergence: c.divergence,
        seed: c.seed,
        ..Options::default()
    })
}

/// "n,r,kappa,p"
fn parse_synthetic(s: &str) -> Result<(usize, usize, f64, f64)> {
    let parts: Vec<&str> = s.split(',').map(|x| x.trim()).collect();
    if parts.len() != 4 {
        bail!("--synthetic expects n,r,kappa,p, got {s:?}");
    }
    Ok((
        parts[0].parse().context("--synthetic n")?,
        parts[1].parse().context("--synthetic r")?,
        parts[2].parse().context("--synthetic kappa")?,
        parts[3].parse().context("--synthetic p")?,
    ))
}

fn parse_ranks(s: &str) -> Result<[usize; 3]> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--rank {s:?}"))?;
    match v.as_slice() {
        [r] => Ok([*r, *r, *r]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => bail!("--rank expects r or r1,r2,r3, got {s:?}"),
    }
}

fn finish(
    c: &CommonArgs,
    problem: &str,
    est: &Tensor,
    report: &Report,
    truth: Option<&Tensor>,
    extra: serde_json::Value,
    dev: &Device,
) -> Result<()> {
    let truth_err = match truth {
        Some(t) => Some(genprior_lowrank::linalg::relative_error(est, t)?),
        None => None,
    };
    if let Some(out) = &c.out {
        save(out, est)?;
    }
    write_report(c, problem, report, truth_err, extra, &format!("{dev:?}"))
}

/// Print the one-line summary and write the JSON report (`--report`).
fn write_report(
    c: &CommonArgs,
    problem: &str,
    report: &Report,
    truth_err: Option<f64>,
    extra: serde_json::Value,
    dev: &str,
) -> Result<()> {
    eprintln!(
        "{problem}: {:?} stopped after {} iterations ({:?}), relative residual {:.3e}{}, {:.3}s on {dev}",
        report.method,
        report.iterations,
        report.stop_reason,
        report.final_residual,
        truth_err.map(|e| format!(", relative error to truth {e:.3e}")).unwrap_or_default(),
        report.time_s,
    );
    if let Some(path) = &c.report {
        let mut v = serde_json::to_value(report)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("problem".into(), problem.into());
            m.insert("device".into(), dev.into());
            m.insert("dtype".into(), c.dtype.clone().into());
            if let Some(e) = truth_err {
                m.insert("truth_rel_error".into(), e.into());
            }
            if let serde_json::Value::Object(x) = extra {
                m.extend(x);
            }
        }
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if c.out.is_none() && c.report.is_none() {
        eprintln!("(no --out or --report given: nothing written)");
    }
    Ok(())
}

fn need_input(c: &CommonArgs) -> Result<&PathBuf> {
    c.input
        .as_ref()
        .context("give --input FILE (or --synthetic n,r,kappa,p)")
}

// ------------------------------------------------------------------------------ commands

fn complete(a: CompleteArgs) -> Result<()> {
    let c = &a.common;
    let dev = pick_device(&c.device)?;
    let dt = pick_dtype(&c.dtype);
    let (prob, truth) = if let Some(s) = &c.synthetic {
        let (n, r, k, p) = parse_synthetic(s)?;
        let s = synthetic::completion(n, r, k, p, c.seed, dt, &dev)?;
        (s.problem, Some(s.truth))
    } else {
        let y = load(need_input(c)?, dt, &dev)?;
        let mask = a
            .mask
            .as_ref()
            .context("complete needs --mask (non-zero = observed)")?;
        let m = load(mask, dt, &dev)?;
        (MatrixCompletion::from_dense(&y, &m)?, None)
    };
    let opts = options(c)?;
    let (rank, scan) = if a.rank == "auto" {
        let (n1, n2) = prob.shape();
        let hi = a.max_rank.min(n1.min(n2) - 1);
        if hi == 0 {
            bail!("matrix {n1}×{n2} too small for rank selection");
        }
        let ranks: Vec<usize> = (1..=hi).collect();
        let patience = a.early_stop.then_some(a.patience);
        let scan = completion_rank_scan(&prob, &ranks, a.holdout, patience, &opts)?;
        eprintln!("held-out relative error by rank:");
        for s in &scan.scores {
            match s.heldout_rel_error {
                Some(e) => eprintln!(
                    "  rank {:>3}: {e:.4e} ({} iterations)",
                    s.rank, s.iterations
                ),
                None => eprintln!(
                    "  rank {:>3}: failed: {}",
                    s.rank,
                    s.error.as_deref().unwrap_or("")
                ),
            }
        }
        eprintln!("chosen rank {}", scan.best_rank);
        (scan.best_rank, Some(scan))
    } else {
        (
            a.rank
                .parse::<usize>()
                .with_context(|| format!("--rank {:?}: expected a number or auto", a.rank))?,
            None,
        )
    };
    let (f, rep) = if a.early_stop {
        prob.solve_early_stopping(rank, a.holdout, a.patience, &opts)?
    } else {
        prob.solve(rank, &opts)?
    };
    if let Some(at) = rep.diverged_at {
        eprintln!(
            "early stopping: the iteration diverged at {at}; keeping the best held-out iterate"
        );
    }
    if let (Some(it), Some(e)) = (rep.best_iteration, rep.best_heldout_error) {
        eprintln!(
            "early stopping: best held-out relative error {e:.4e} at iteration {it} (stopped at {})",
            rep.iterations
        );
    }
    let mut extra = serde_json::json!({ "rank": rank, "observed": prob.nnz(), "p": prob.p(), "rank_scan": scan });
    if a.early_stop {
        extra["holdout"] = a.holdout.into();
        extra["patience"] = a.patience.into();
    }
    finish(
        c,
        "complete",
        &f.dense()?,
        &rep,
        truth.as_ref(),
        extra,
        &dev,
    )
}

/// `rpca --loss l1`: ScaledSM on the entries (all, or --mask).
fn rpca_l1(a: &RpcaArgs) -> Result<()> {
    let c = &a.common;
    if a.out_sparse.is_some() {
        bail!("--out-sparse is only available with --loss l2 (the ℓ1 fit has no sparse estimate; use Y − X)");
    }
    let dev = pick_device(&c.device)?;
    let dt = pick_dtype(&c.dtype);
    let (prob, truth, oracle) = if let Some(s) = &c.synthetic {
        if a.mask.is_some() {
            bail!("--mask cannot be combined with --synthetic");
        }
        let (n, r, k, p) = parse_synthetic(s)?;
        let s = synthetic::rpca_l1(n, r, k, p, c.seed, dt, &dev)?;
        (s.problem, Some(s.truth), Some(s.f_star))
    } else {
        let y = load(need_input(c)?, dt, &dev)?;
        let m = match &a.mask {
            Some(p) => Some(load(p, dt, &dev)?),
            None => None,
        };
        (L1Problem::entries(&y, m.as_ref())?, None, None)
    };
    let step = a.l1.step(oracle)?;
    let (f, rep) = prob.solve(a.rank, a.alpha, step, &options(c)?)?;
    let extra = serde_json::json!({ "rank": a.rank, "alpha": a.alpha, "loss": "l1", "step": step });
    finish(c, "rpca-l1", &f.dense()?, &rep, truth.as_ref(), extra, &dev)
}

fn rpca(a: RpcaArgs) -> Result<()> {
    if a.l1.is_l1() {
        return rpca_l1(&a);
    }
    if a.mask.is_some() {
        bail!("--mask needs --loss l1 (ℓ2 robust PCA uses every entry)");
    }
    let c = &a.common;
    let dev = pick_device(&c.device)?;
    let dt = pick_dtype(&c.dtype);
    let (prob, truth) = if let Some(s) = &c.synthetic {
        let (n, r, k, p) = parse_synthetic(s)?;
        let (s, _) = synthetic::rpca(n, r, k, p, c.seed, dt, &dev)?;
        (s.problem, Some(s.truth))
    } else {
        let y = load(need_input(c)?, dt, &dev)?;
        (RobustPca::new(&y, a.alpha)?, None)
    };
    let (f, rep) = prob.solve(a.rank, &options(c)?)?;
    if let Some(p) = &a.out_sparse {
        save(p, &prob.outliers(&f)?)?;
    }
    let extra = serde_json::json!({ "rank": a.rank, "alpha": a.alpha });
    finish(c, "rpca", &f.dense()?, &rep, truth.as_ref(), extra, &dev)
}

fn sense(a: SenseArgs) -> Result<()> {
    let c = &a.common;
    let dev = pick_device(&c.device)?;
    let dt = pick_dtype(&c.dtype);
    let opts = options(c)?;
    if a.l1.is_l1() && a.psd {
        bail!("--loss l1 is not available with --psd");
    }
    let (design, y, truth) = if let Some(s) = &c.synthetic {
        let (n, r, k, f) = parse_synthetic(s)?;
        let m = (f * (n * r) as f64).round() as usize;
        if a.l1.is_l1() {
            let s = synthetic::robust_sensing(n, r, k, m, a.outliers, c.seed, dt, &dev)?;
            let step = a.l1.step(Some(s.f_star))?;
            let (f, rep) = s.problem.solve(a.rank, a.outliers, step, &opts)?;
            let extra = serde_json::json!({ "rank": a.rank, "m": m, "loss": "l1", "step": step, "outliers": a.outliers });
            return finish(
                c,
                "sense-l1",
                &f.dense()?,
                &rep,
                Some(&s.truth),
                extra,
                &dev,
            );
        }
        if a.psd {
            let s = synthetic::psd_sensing(n, r, k, m, c.seed, dt, &dev)?;
            let (x, rep) = s.problem.solve(
                PsdInit {
                    rank: a.rank,
                    alpha: a.init_scale,
                },
                &opts,
            )?;
            let extra = serde_json::json!({ "rank": a.rank, "psd": true, "m": m });
            return finish(
                c,
                "sense-psd",
                &x.matmul(&x.t()?)?,
                &rep,
                Some(&s.truth),
                extra,
                &dev,
            );
        }
        let s = synthetic::sensing(n, r, k, m, c.seed, dt, &dev)?;
        let (f, rep) = s.problem.solve(a.rank, &opts)?;
        let extra = serde_json::json!({ "rank": a.rank, "m": m });
        return finish(c, "sense", &f.dense()?, &rep, Some(&s.truth), extra, &dev);
    } else {
        let y = load(need_input(c)?, dt, &dev)?;
        let y = if y.rank() == 2 { y.flatten_all()? } else { y };
        let d = load(
            a.design
                .as_ref()
                .context("sense needs --design A.npy (m × n1·n2)")?,
            dt,
            &dev,
        )?;
        let shape = a.shape.as_ref().context("sense needs --shape n1,n2")?;
        let v: Vec<usize> = shape
            .split(',')
            .map(|x| x.trim().parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("--shape {shape:?}"))?;
        if v.len() != 2 {
            bail!("--shape expects n1,n2");
        }
        (Design::new(&d, v[0], v[1])?, y, None::<Tensor>)
    };
    let m = design.m();
    if a.l1.is_l1() {
        let prob = L1Problem::sensing(design, &y)?;
        let step = a.l1.step(None)?;
        let (f, rep) = prob.solve(a.rank, a.outliers, step, &opts)?;
        let extra = serde_json::json!({ "rank": a.rank, "m": m, "loss": "l1", "step": step, "outliers": a.outliers });
        return finish(c, "sense-l1", &f.dense()?, &rep, None, extra, &dev);
    }
    if a.psd {
        let prob = PsdSensing::new(design, &y)?;
        let (x, rep) = prob.solve(
            PsdInit {
                rank: a.rank,
                alpha: a.init_scale,
            },
            &opts,
        )?;
        let extra = serde_json::json!({ "rank": a.rank, "psd": true, "m": m });
        return finish(
            c,
            "sense-psd",
            &x.matmul(&x.t()?)?,
            &rep,
            truth.as_ref(),
            extra,
            &dev,
        );
    }
    let prob = MatrixSensing::new(design, &y)?;
    let (f, rep) = prob.solve(a.rank, &opts)?;
    let extra = serde_json::json!({ "rank": a.rank, "m": m });
    finish(c, "sense", &f.dense()?, &rep, truth.as_ref(), extra, &dev)
}

fn tucker(a: TuckerArgs) -> Result<()> {
    let c = &a.common;
    let dev = pick_device(&c.device)?;
    let dt = pick_dtype(&c.dtype);
    let ranks = parse_ranks(&a.rank)?;
    let (prob, truth) = if let Some(s) = &c.synthetic {
        let (n, r, k, p) = parse_synthetic(s)?;
        let s = synthetic::tensor_completion(n, r, k, p, c.seed, dt, &dev)?;
        (s.problem, Some(s.truth))
    } else {
        let y = load(need_input(c)?, dt, &dev)?;
        if is_csv(need_input(c)?) {
            bail!("tucker needs a 3-way .npy input (CSV holds matrices only)");
        }
        let m = load(
            a.mask
                .as_ref()
                .context("tucker needs --mask (non-zero = observed)")?,
            dt,
            &dev,
        )?;
        (TensorCompletion::from_dense(&y, &m)?, None)
    };
    let (t, rep) = prob.solve(ranks, &options(c)?)?;
    let extra = serde_json::json!({ "ranks": ranks, "p": prob.p() });
    finish(c, "tucker", &t.dense()?, &rep, truth.as_ref(), extra, &dev)
}

fn tensor_rpca(a: TensorRpcaArgs) -> Result<()> {
    let c = &a.common;
    let dev = pick_device(&c.device)?;
    let dt = pick_dtype(&c.dtype);
    let ranks = parse_ranks(&a.rank)?;
    let params = TrpcaParams {
        zeta0: a.zeta0,
        zeta1: a.zeta1,
        rho: a.rho,
    };
    let (prob, truth) = if let Some(s) = &c.synthetic {
        let (n, r, k, p) = parse_synthetic(s)?;
        let s = synthetic::tensor_rpca(n, r, k, p, params, c.seed, dt, &dev)?;
        (s.problem, Some(s.truth))
    } else {
        let y = load(need_input(c)?, dt, &dev)?;
        (TensorRpca::new(&y, params)?, None)
    };
    let (t, rep) = prob.solve(ranks, &options(c)?)?;
    if let Some(p) = &a.out_sparse {
        save(p, &prob.outliers(&t, rep.iterations)?)?;
    }
    let (z0, z1, rho) = prob.params();
    let extra = serde_json::json!({ "ranks": ranks, "zeta0": z0, "zeta1": z1, "rho": rho });
    finish(
        c,
        "tensor-rpca",
        &t.dense()?,
        &rep,
        truth.as_ref(),
        extra,
        &dev,
    )
}

// ------------------------------------------------------------------------------ hankel

/// A 1-D signal from .npy: real (f32/f64/integers through candle) or complex
/// (complex64/complex128, through the pipeline's complex reader). Returns the samples and
/// whether the file was complex.
fn read_signal(path: &Path) -> Result<(Vec<C64>, bool)> {
    if is_csv(path) {
        let t = load(path, DType::F64, &Device::Cpu)?;
        let v: Vec<f64> = t.flatten_all()?.to_vec1()?;
        return Ok((v.into_iter().map(|x| C64::new(x, 0.0)).collect(), false));
    }
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    let complex = genprior_pipeline::files::read_complex_npy(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let (t, is_complex) = match complex {
        Some(planar) => (planar, true),
        None => (
            Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?,
            false,
        ),
    };
    let shape = if is_complex { &t.dims()[1..] } else { t.dims() };
    if shape.len() > 2 || (shape.len() == 2 && shape[0] != 1 && shape[1] != 1) {
        bail!(
            "{}: a 1-D signal is needed, got shape {shape:?}",
            path.display()
        );
    }
    let v: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(if is_complex {
        let n = v.len() / 2;
        ((0..n).map(|k| C64::new(v[k], v[n + k])).collect(), true)
    } else {
        (v.into_iter().map(|x| C64::new(x, 0.0)).collect(), false)
    })
}

/// Write a 1-D complex128 NPY (temp file, then rename).
fn write_complex_npy(path: &Path, v: &[C64]) -> Result<()> {
    let planar: Vec<f64> = v
        .iter()
        .map(|c| c.re)
        .chain(v.iter().map(|c| c.im))
        .collect();
    let t = Tensor::from_vec(planar, (2, v.len()), &Device::Cpu)?;
    genprior_pipeline::files::write_npy_complex128(&t, path)
}

fn hankel(a: HankelArgs) -> Result<()> {
    let c = &a.common;
    if c.dtype == "f32" {
        bail!("hankel runs on the host in complex f64 (its FFTs are rustfft's); --dtype f32 is not supported");
    }
    if c.backtrack {
        bail!("--backtrack is not available for hankel");
    }
    let (prob, truth, complex_in, true_comps) = if let Some(s) = &c.synthetic {
        let (n, r, k, p) = parse_synthetic(s)?;
        let s = genprior_lowrank::hankel::synthetic(n, n, r, k, p, a.synthetic_decay, c.seed)?;
        let comps: Vec<serde_json::Value> = s
            .frequencies
            .iter()
            .zip(&s.amplitudes)
            .map(|(f, a)| serde_json::json!({"frequency": f, "amplitude": a}))
            .collect();
        (s.problem, Some(s.truth), true, Some(comps))
    } else {
        let (x, cplx) = read_signal(need_input(c)?)?;
        let mask: Vec<bool> = match &a.mask {
            Some(p) => {
                let (m, _) = read_signal(p)?;
                if m.len() != x.len() {
                    bail!("--mask has {} samples but --input has {}", m.len(), x.len());
                }
                m.iter().map(|v| v.re != 0.0 || v.im != 0.0).collect()
            }
            None => x
                .iter()
                .map(|v| v.re.is_finite() && v.im.is_finite())
                .collect(),
        };
        (HankelCompletion::new(&x, &mask, a.n1)?, None, cplx, None)
    };
    let opts = options(c)?;
    let (f, rep) = prob.solve(a.rank, &opts)?;
    let x = prob.signal(&f);
    let comps = prob.components(&f)?;
    let signal_err = truth.as_ref().map(|t| {
        let d: f64 = x.iter().zip(t).map(|(a, b)| (a - b).norm_sqr()).sum();
        let n: f64 = t.iter().map(|b| b.norm_sqr()).sum();
        (d / n).sqrt()
    });
    eprintln!("components (frequency in cycles/sample, damping per sample, amplitude):");
    for k in &comps {
        eprintln!(
            "  f = {:+.6}  d = {:.3e}  a = {:.4e}",
            k.frequency, k.damping, k.amplitude
        );
    }
    if let Some(out) = &c.out {
        if complex_in {
            write_complex_npy(out, &x)?;
        } else {
            let re: Vec<f64> = x.iter().map(|v| v.re).collect();
            let n = re.len();
            save(out, &Tensor::from_vec(re, n, &Device::Cpu)?)?;
        }
    }
    let (n1, n2) = prob.shape();
    let mut extra = serde_json::json!({
        "rank": a.rank, "n1": n1, "n2": n2, "samples": prob.len(), "p": prob.p(),
        "components": comps, "output": if complex_in { "complex128" } else { "float64 (real part)" },
    });
    if let Some(e) = signal_err {
        extra["truth_signal_rel_error"] = e.into();
    }
    if let Some(t) = true_comps {
        extra["true_components"] = t.into();
    }
    // The error to the truth is the Hankel-matrix (√w-weighted) relative error.
    let truth_err = match &truth {
        Some(t) => Some(genprior_lowrank::linalg::relative_error(
            &prob.weighted(&x)?,
            &prob.weighted(t)?,
        )?),
        None => None,
    };
    write_report(c, "hankel", &rep, truth_err, extra, "host (f64, rustfft)")
}

// ------------------------------------------------------------------------------ learned

fn learned_train(a: LearnedTrainArgs) -> Result<()> {
    use genprior_lowrank::learned::{apply, train, LearnLoss, LearnedParams, TrainConfig};
    let dev = pick_device(&a.device)?;
    let dt = pick_dtype(&a.dtype);
    let (instances, loss, synth) = match (&a.synthetic, &a.input) {
        (Some(_), Some(_)) => bail!("give either --synthetic or --input, not both"),
        (None, None) => {
            bail!("give --synthetic n,r,kappa,alpha (supervised) or --input Y (self-supervised)")
        }
        (Some(s), None) => {
            let (n, r, k, al) = parse_synthetic(s)?;
            if a.instances == 0 {
                bail!("--instances must be at least 1");
            }
            let mut v = vec![];
            for i in 0..a.instances as u64 {
                let (s, sp) = synthetic::rpca(n, r, k, al, a.seed + i, dt, &dev)?;
                v.push(((&s.truth + &sp)?, Some(s.truth)));
            }
            (v, LearnLoss::Supervised, Some((n, r, k, al)))
        }
        (None, Some(p)) => (
            vec![(load(p, dt, &dev)?, None)],
            LearnLoss::SelfSupervised,
            None,
        ),
    };
    let cfg = TrainConfig {
        rank: a.rank,
        unroll: a.unroll,
        steps: a.steps,
        lr: a.lr,
        loss,
        seed: a.seed,
    };
    let t0 = std::time::Instant::now();
    let model = train(&instances, LearnedParams::default(), &cfg)?;
    let train_s = t0.elapsed().as_secs_f64();
    model.save(&a.model)?;
    let p = model.params;
    eprintln!(
        "trained in {train_s:.2}s ({} steps, T = {}): loss {:.3e} -> {:.3e}; ζ₀ = {:.3}s, ζ₁ = {:.3}s, η = {:.3}, ρ = {:.3} (s = 1.4826·median|Y|)",
        a.steps,
        a.unroll,
        model.loss_history[0],
        model.loss_history.last().copied().unwrap_or(f64::NAN),
        p.zeta0_rel,
        p.zeta1_rel,
        p.eta,
        p.rho
    );
    let mut rows = vec![];
    if let Some((n, r, k, al)) = synth {
        println!("| held-out seed | learned: it→{0:e} | hand-set: it→{0:e} | ScaledGD-RPCA (T_α, η=0.5): it→{0:e} | learned s to target | ScaledGD-RPCA s to target |", a.target);
        println!("|---|---|---|---|---|---|");
        let f = |x: Option<usize>| x.map(|v| v.to_string()).unwrap_or_else(|| "–".into());
        for i in 0..a.heldout as u64 {
            let seed = a.seed + a.instances as u64 + 1000 + i;
            let (s, sp) = synthetic::rpca(n, r, k, al, seed, dt, &dev)?;
            let y = (&s.truth + &sp)?;
            let it = |e: &[f64]| e.iter().position(|&v| v <= a.target);
            let (_, el) = apply(&y, a.rank, &p, a.max_iter, Some(&s.truth), a.seed)?;
            // Time to the target: the learned schedule run for exactly that many
            // iterations, without the error monitoring.
            let tl = match it(&el) {
                Some(k) => {
                    let t1 = std::time::Instant::now();
                    apply(&y, a.rank, &p, k, None, a.seed)?;
                    Some(t1.elapsed().as_secs_f64())
                }
                None => None,
            };
            let (_, eh) = apply(
                &y,
                a.rank,
                &LearnedParams::default(),
                a.max_iter,
                Some(&s.truth),
                a.seed,
            )
            .unwrap_or((y.clone(), vec![]));
            let o = Options {
                max_iter: a.max_iter,
                tol: 0.0,
                truth: Some(s.truth.clone()),
                stop_error: Some(a.target),
                seed: a.seed,
                ..Options::default()
            };
            // ScaledGD's time excludes its error monitoring (Report::time_s).
            let base = s.problem.solve(a.rank, &o).ok().map(|x| x.1);
            let ib = base.as_ref().and_then(|r| r.iterations_to(a.target));
            let tb = base.as_ref().filter(|_| ib.is_some()).map(|r| r.time_s);
            let ft = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
            println!(
                "| {seed} | {} | {} | {} | {} | {} |",
                f(it(&el)),
                f(it(&eh)),
                f(ib),
                ft(tl),
                ft(tb)
            );
            rows.push(serde_json::json!({"seed": seed, "learned": it(&el), "hand_set": it(&eh), "scaledgd_rpca": ib,
                "learned_time_s": tl, "scaledgd_time_s": tb}));
        }
    }
    if let Some(path) = &a.report {
        let v = serde_json::json!({"model": model, "train_time_s": train_s, "heldout": rows, "target": a.target});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn learned_apply(a: LearnedApplyArgs) -> Result<()> {
    use genprior_lowrank::learned::{apply, LearnedModel};
    let dev = pick_device(&a.device)?;
    let dt = pick_dtype(&a.dtype);
    let p = LearnedModel::load_params(&a.model)?;
    let y = load(&a.input, dt, &dev)?;
    let (x, _) = apply(&y, a.rank, &p, a.iters, None, a.seed)?;
    save(&a.out, &x)?;
    eprintln!(
        "learned-rpca: {} iterations with ζ₀ = {:.3}s, ζ₁ = {:.3}s, η = {:.3}, ρ = {:.3}",
        a.iters, p.zeta0_rel, p.zeta1_rel, p.eta, p.rho
    );
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    let dev = pick_device(&a.device)?;
    let kappas: Vec<f64> = a
        .kappas
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--kappas {:?}", a.kappas))?;
    if a.problem == "rpca-l1" || a.problem == "sensing-l1" {
        let outliers: Vec<f64> = a
            .outliers
            .split(',')
            .map(|s| s.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("--outliers {:?}", a.outliers))?;
        let sensing = a.problem == "sensing-l1";
        let n = a.n.unwrap_or(if sensing { 30 } else { 200 });
        let r = a.r.unwrap_or(if sensing { 2 } else { 5 });
        let cfg = L1SweepConfig {
            problem: a.problem.clone(),
            n,
            r,
            kappa: kappas[0],
            m: a.m.unwrap_or(10 * n * r),
            outliers,
            lambda_rel: 0.5,
            q: 0.9,
            max_iter: a.max_iter,
            seed: a.seed,
            dtype: pick_dtype(&a.dtype),
            device: dev.clone(),
        };
        println!("{}", L1Row::markdown_header());
        let rows = run_l1_sweep(&cfg, |row| println!("{}", row.markdown()))?;
        if let Some(p) = &a.json {
            std::fs::write(p, serde_json::to_string_pretty(&rows)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        return Ok(());
    }
    let problems: Vec<String> = if a.problem == "all" {
        ["completion", "rpca", "sensing", "tucker"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        vec![a.problem.clone()]
    };
    println!("{}", BenchRow::markdown_header());
    let mut all = vec![];
    for problem in problems {
        let cfg = BenchConfig {
            problem,
            n: a.n,
            r: a.r,
            p: a.p,
            m: a.m,
            kappas: kappas.clone(),
            methods: vec![Method::ScaledGd, Method::Gd],
            max_iter: a.max_iter,
            seed: a.seed,
            dtype: pick_dtype(&a.dtype),
            device: dev.clone(),
        };
        all.extend(run_bench(&cfg, |row| println!("{}", row.markdown()))?);
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&all)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
