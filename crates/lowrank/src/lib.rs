//! genprior-lowrank: scaled gradient descent (ScaledGD) for ill-conditioned low-rank
//! matrix and tensor estimation, on candle tensors (f32/f64, CPU or CUDA/Metal through
//! candle).
//!
//! Problems ([`MatrixCompletion`], [`RobustPca`], [`MatrixSensing`], [`PsdSensing`],
//! [`TensorCompletion`], [`TensorRpca`]) each provide a spectral (or specified)
//! initialisation and `solve(rank, &Options)` running ScaledGD or vanilla GD with a
//! common stopping rule ([`Options`], [`Report`]). Also: early stopping on held-out
//! entries ([`MatrixCompletion::solve_early_stopping`]), the scaled subgradient method
//! for the ℓ1 loss ([`L1Problem`]), Hankel completion of spectrally sparse signals
//! ([`HankelCompletion`]) and learned (unrolled) ScaledGD-RPCA ([`learned`]). See the
//! crate README for the update rules, benchmarks and the real-data demonstration.

// Index loops over the three Tucker modes read more clearly than iterator chains; the
// negated comparisons are deliberate (they also reject NaN).
#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::neg_cmp_op_on_partial_ord
)]

pub mod bench;
pub mod error;
pub mod hankel;
pub mod l1;
pub mod learned;
pub mod linalg;
pub mod matrix;
pub mod select;
pub mod solver;
pub mod synthetic;
pub mod tensor;

pub use error::{LowRankError, Result};
pub use hankel::{Component, HankelCompletion, HankelFactors};
pub use l1::{L1Problem, L1Step};
pub use matrix::{
    Design, Factors, MatrixCompletion, MatrixSensing, PsdInit, PsdSensing, RobustPca,
};
pub use solver::{Damping, Method, Options, Report, StopReason};
pub use tensor::{TensorCompletion, TensorRpca, TrpcaParams, Tucker};
