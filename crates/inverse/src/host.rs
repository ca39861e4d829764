//! Moving tensors to and from host `f64` buffers.
//!
//! All operators of this crate compute on the host in `f64` (see the crate README): a tensor on
//! any device is copied to the CPU, converted to `f64`, processed, and copied back with its
//! original dtype and device.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Flattened `f64` copy of a tensor (row-major).
pub fn to_host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// Tensor of `shape` with the given dtype and device from a row-major `f64` buffer.
pub fn from_host(v: Vec<f64>, shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}
