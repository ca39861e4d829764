//! Fast CPU f32 kernels beneath the networks: convolution forward and input gradient on a
//! SIMD GEMM (the `gemm` crate, AVX-512 when the CPU has it) — Winograd F(2×2, 3×3) for 3×3
//! stride-1 layers, im2col otherwise —, group norm fused with its time-embedding modulation
//! and SiLU, with its backward, a numerically stable row softmax with its backward, and ×2
//! nearest upsampling with its backward.
//!
//! These are plain functions on slices; [`crate::conv`], [`crate::layers`] and the attention
//! blocks wrap them as candle custom ops on CPU f32 tensors and keep candle's own ops on
//! CUDA/Metal and other dtypes. Every kernel is tested against candle's reference ops.

#[macro_use]
pub mod simd;
pub mod conv;
pub mod norm;
pub mod resample;
pub mod softmax;
pub mod winograd;

/// Threads the kernels split work across (rayon's pool, as candle's CPU ops use).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}
