//! Summaries of a set of posterior samples.

use candle_core::{DType, Device, Tensor};

use crate::error::{invalid, Result};

/// Per-pixel posterior mean and standard deviation of `(K, C, H, W)` samples, on the host in
/// f32: the mean `(1, C, H, W)`, and the unbiased (K − 1) standard deviation, zero when K = 1.
pub fn mean_and_std(samples: &Tensor) -> Result<(Tensor, Tensor)> {
    let samples = samples.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let k = samples.dim(0)?;
    if k == 0 || samples.rank() != 4 {
        return invalid(format!(
            "posterior statistics need a (K, C, H, W) batch with K ≥ 1, got {:?}",
            samples.dims()
        ));
    }
    let mean = samples.mean_keepdim(0)?;
    let std = if k > 1 {
        samples
            .broadcast_sub(&mean)?
            .sqr()?
            .sum_keepdim(0)?
            .affine(1.0 / (k - 1) as f64, 0.0)?
            .sqrt()?
    } else {
        mean.zeros_like()?
    };
    Ok((mean, std))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_unbiased_std() {
        let x = Tensor::new(
            &[[[[1f32, 2.0]]], [[[3.0, 2.0]]], [[[5.0, 2.0]]]],
            &Device::Cpu,
        )
        .unwrap();
        let (m, s) = mean_and_std(&x).unwrap();
        assert_eq!(
            m.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 2.0]
        );
        assert_eq!(
            s.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![2.0, 0.0]
        );
        let (_, s1) = mean_and_std(&x.narrow(0, 0, 1).unwrap()).unwrap();
        assert_eq!(
            s1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 0.0]
        );
        assert!(mean_and_std(&x.flatten_all().unwrap()).is_err());
    }
}
