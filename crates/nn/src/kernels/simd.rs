//! Vectorisation helpers for the elementwise kernels: a run-time dispatch macro that compiles
//! a loop body for AVX-512, AVX2+FMA and the baseline (LLVM auto-vectorises each copy), a
//! branch-free `exp` that vectorises, and lane-parallel sums (plain `f32` folds are serial
//! dependency chains that LLVM may not reorder).

/// Defines `fn $name(args) -> ret` running `$body` compiled three times (x86-64 AVX-512,
/// AVX2+FMA, baseline) and picks the best the CPU supports at run time.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($a: $t),*) $(-> $r)? { body($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($a: $t),*) $(-> $r)? { body($($a),*) }
                if $crate::kernels::simd::has_avx512() {
                    // SAFETY: the CPU supports the enabled features (checked at run time).
                    return unsafe { v4($($a),*) };
                }
                if $crate::kernels::simd::has_avx2_fma() {
                    // SAFETY: as above.
                    return unsafe { v3($($a),*) };
                }
            }
            body($($a),*)
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && has_avx2_fma()
}

#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `eˣ` with relative error below 2e-7 on [−87, 88] (0 below, clamped at e^88 above):
/// x = n·ln2 + r with |r| ≤ ln2/2, a degree-7 Taylor polynomial for eʳ, and 2ⁿ built from
/// the exponent bits. Branch-free, so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer.
    let under = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    // k = n + MAGIC holds the integer n in its low mantissa bits.
    let k = x * LOG2E + MAGIC;
    let n = k - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2ⁿ from the exponent field: (n + 127) << 23, with n read from k's bits (no float→int
    // conversion, which would not vectorise well).
    let scale = f32::from_bits(k.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23);
    if under {
        0.0
    } else {
        p * scale
    }
}

/// `1 / (1 + e^{−y})`.
#[inline(always)]
pub fn sigmoid(y: f32) -> f32 {
    1.0 / (1.0 + exp(-y))
}

/// Lanes for the vectorised reductions (two AVX-512 registers).
pub const LANES: usize = 32;
/// Elements summed in f32 lanes before the lanes are added into f64.
const BLOCK: usize = 1024;

/// `Σ f(a[i], b[i])`: f32 lane sums over blocks of [`BLOCK`] elements, folded into f64.
/// (`b` may be `a` itself for one-slice sums.)
#[inline(always)]
pub fn sum2_f64(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut total = 0f64;
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut acc = [0f32; LANES];
        let (ac, bc) = (ab.chunks_exact(LANES), bb.chunks_exact(LANES));
        let (ar, br) = (ac.remainder(), bc.remainder());
        for (x, y) in ac.zip(bc) {
            for l in 0..LANES {
                acc[l] += f(x[l], y[l]);
            }
        }
        let tail: f64 = ar.iter().zip(br).map(|(&x, &y)| f(x, y) as f64).sum();
        total += acc.iter().map(|&v| v as f64).sum::<f64>() + tail;
    }
    total
}

/// Two sums `(Σ f(a[i]), Σ g(a[i]))` in one pass, like [`sum2_f64`].
#[inline(always)]
pub fn sums_f64(a: &[f32], f: impl Fn(f32) -> f32, g: impl Fn(f32) -> f32) -> (f64, f64) {
    let (mut t1, mut t2) = (0f64, 0f64);
    for ab in a.chunks(BLOCK) {
        let mut acc1 = [0f32; LANES];
        let mut acc2 = [0f32; LANES];
        let ac = ab.chunks_exact(LANES);
        let ar = ac.remainder();
        for x in ac {
            for l in 0..LANES {
                acc1[l] += f(x[l]);
                acc2[l] += g(x[l]);
            }
        }
        t1 += acc1.iter().map(|&v| v as f64).sum::<f64>()
            + ar.iter().map(|&x| f(x) as f64).sum::<f64>();
        t2 += acc2.iter().map(|&v| v as f64).sum::<f64>()
            + ar.iter().map(|&x| g(x) as f64).sum::<f64>();
    }
    (t1, t2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_and_sigmoid_saturates() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = (exp(x) as f64 - (x as f64).exp()).abs() / (x as f64).exp();
            worst = worst.max(e);
            x += 0.013;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(200.0).is_finite());
        assert!(sigmoid(-1e4) < 1e-37);
        assert_eq!(sigmoid(1e4), 1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn lane_sums_match_f64() {
        for n in [0usize, 1, 31, 32, 33, 1023, 1024, 5000] {
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 * 0.001 - 0.3)
                .collect();
            let want: f64 = v.iter().map(|&a| a as f64).sum();
            let got = sum2_f64(&v, &v, |a, b| a * b);
            let want2: f64 = v.iter().map(|&a| (a as f64).powi(2)).sum();
            assert!(
                (got - want2).abs() < 1e-4 * (1.0 + want2),
                "n={n}: {got} vs {want2}"
            );
            let (s1, s2) = sums_f64(&v, |a| a, |a| a * a);
            assert!((s1 - want).abs() < 1e-4, "n={n}: {s1} vs {want}");
            assert!(
                (s2 - want2).abs() < 1e-4 * (1.0 + want2),
                "n={n}: {s2} vs {want2}"
            );
        }
    }
}
