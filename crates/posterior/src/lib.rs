//! genprior-posterior: posterior sampling with an unconditional diffusion prior.
//!
//! - [`method`]: the sampler seam — the [`PosteriorSampler`] trait, its [`Problem`] and
//!   [`Chains`], and the registry [`methods`] that the CLI, the benchmark and the tests iterate.
//!   Each method is one file that declares its options ([`options`]) and defaults.
//! - [`dds`]: the denoising diffusion sampler DDS (DDPM and DDIM variants) of p(x | x + ηw = y).
//! - [`pcs`](mod@pcs): the proximal consistency sampler of DPnP (MALA, unadjusted Langevin, exact
//!   Gaussian) of exp(L(x; y) − ‖x − x₀‖²/(2γ²)).
//! - [`dpnp`]: the diffusion plug-and-play outer loop (Xu & Chi 2024): PCS alternating with
//!   DDS under an annealing schedule of η.
//! - [`dps`]: the DPS baseline (Chung et al. 2023), gradient through the network.
//! - [`diffpir`]: DiffPIR (Zhu et al. 2023), a proximal data step on x̂₀ between partial
//!   re-noisings.
//! - [`pigdm`]: ΠGDM (Song et al. 2023), pseudoinverse guidance through the network
//!   (linear-Gaussian tasks).
//! - [`reddiff`]: RED-diff (Mardani et al. 2024), Adam on the misfit plus a denoising
//!   regulariser (a point estimate).
//! - [`ddrm`]: DDRM (Kawar et al. 2022), variational sampling in the SVD basis of A.
//! - [`ddnm`]: DDNM / DDNM⁺ (Wang et al. 2023), DDIM with a pseudo-inverse correction of x̂₀.
//! - [`daps`]: DAPS (Zhang et al. 2025), decoupled noise annealing with a Langevin x₀ step.
//! - [`lgd`]: LGD-MC (Song et al. 2023), DPS with a Monte Carlo loss.
//! - [`stats`]: posterior mean and standard deviation of the samples.
//! - [`protocol`](mod@protocol): the reference papers' protocols as presets (`--protocol`).
//!
//! Every sampler sees the network only through [`genprior_diffusion::ScoreModel`] and its
//! [`genprior_diffusion::Schedule`] (ε̂ via [`denoiser::Denoiser`]), and the physics only
//! through [`genprior_inverse::Operator`], so the analytic Gaussian prior of the exactness
//! tests plugs in exactly where a UNet does.

pub mod daps;
pub mod ddnm;
pub mod ddrm;
pub mod dds;
pub mod denoiser;
pub mod diffpir;
pub mod dpnp;
pub mod dps;
pub mod energy;
pub mod error;
pub mod lgd;
pub mod method;
pub mod options;
pub mod pcs;
pub mod pcs_device;
pub mod pigdm;
pub mod protocol;
pub mod reddiff;
pub(crate) mod seeds;
pub mod stats;

pub use dds::{
    ddpm_levels, dds, dds_ddim, dds_ddpm, dds_ddpm_on_levels, dds_nfe, dds_nfe_with_budget,
    dds_sample, dds_with_budget, DdimGrid, DdpmLevel, DdsMethod,
};
pub use denoiser::Denoiser;
pub use dpnp::{
    default_pcs_scale, dpnp, DpnpConfig, DpnpOutput, DpnpSampler, EtaSchedule, OuterStep, Progress,
    WarmStart,
};
pub use dps::{default_zeta, dps, dps_indexed, DpsConfig, DpsMisfit, DpsOutput, DpsSampler};
pub use energy::{default_energy_timesteps, denoising_energy, lowest_energy, sign_patterns};
pub use error::{PosteriorError, Result};
pub use method::{
    all_options, build_sampler, method, method_names, methods, Chains, MethodEntry, MethodProgress,
    PosteriorSampler, Problem, SamplerOutput,
};
pub use options::{MethodOptions, OptionDefault, OptionSpec, OptionType, OptionValue, Resolved};
pub use pcs::{
    device_operator, exact_gaussian_host, misfit, pcs, pcs_host, pcs_seeded, pcs_seeded_tempered,
    step_scale, PcsBackend, PcsConfig, PcsMethod, PcsOutput,
};
pub use protocol::{protocol, Protocol, PROTOCOLS};
pub use stats::mean_and_std;
