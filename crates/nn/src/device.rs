//! `--device auto|cpu|cuda|metal`.

use candle_core::Device;

use crate::error::{NnError, Result};

/// Which device the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
    Metal,
}

impl std::str::FromStr for DeviceChoice {
    type Err = NnError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "metal" => Ok(Self::Metal),
            other => Err(NnError::Device(format!(
                "unknown device `{other}` (expected auto, cpu, cuda or metal)"
            ))),
        }
    }
}

/// Try to open CUDA device `ordinal`. candle's dynamically loaded CUDA libraries panic when the
/// driver is absent, so the attempt runs under `catch_unwind` and any failure (error
/// or panic) becomes a message.
fn try_cuda(ordinal: usize) -> std::result::Result<Device, String> {
    if !cfg!(feature = "cuda") {
        return Err("this genprior binary was built without CUDA support (rebuild with --features cuda, see scripts/build-cuda.sh)".into());
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    std::panic::set_hook(prev);
    match res {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(format!("CUDA device {ordinal} is not usable: {e}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(format!(
                "CUDA is not available on this machine: {}",
                tidy_cuda_failure(&msg)
            ))
        }
    }
}

/// cudarc's "Unable to dynamically load the "NAME" shared library - searched for library
/// names: [30 names]. Ensure ..." becomes one short sentence that says what to do.
fn tidy_cuda_failure(msg: &str) -> String {
    const PAT: &str = "Unable to dynamically load the \"";
    if let Some(rest) = msg.find(PAT).map(|i| &msg[i + PAT.len()..]) {
        let lib = rest.split('"').next().unwrap_or("");
        return match lib {
            "cuda" | "nvcuda" => {
                "no NVIDIA driver found (libcuda.so cannot be loaded)".to_string()
            }
            _ => format!(
                "the CUDA library lib{lib}.so (CUDA 13) cannot be loaded: add the folder that holds \
                 it to LD_LIBRARY_PATH (see the README's GPU section)"
            ),
        };
    }
    let first = msg.lines().next().unwrap_or(msg);
    first.chars().take(300).collect()
}

fn try_metal() -> std::result::Result<Device, String> {
    if !cfg!(feature = "metal") {
        return Err(
            "this genprior binary was built without Metal support (rebuild with --features metal)"
                .into(),
        );
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(|| Device::new_metal(0));
    std::panic::set_hook(prev);
    match res {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(format!("Metal device 0 is not usable: {e}")),
        Err(_) => Err("Metal is not available on this machine".into()),
    }
}

/// Open the requested device. Returns the device and a one-line description of the
/// choice (for `auto`, including why faster devices were skipped).
pub fn select_device(choice: DeviceChoice) -> Result<(Device, String)> {
    select_device_at(choice, 0)
}

/// [`select_device`] with CUDA device `cuda_ordinal` instead of 0 (one process per GPU).
pub fn select_device_at(choice: DeviceChoice, cuda_ordinal: usize) -> Result<(Device, String)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "cpu".into())),
        DeviceChoice::Cuda => try_cuda(cuda_ordinal)
            .map(|d| (d, format!("cuda:{cuda_ordinal}")))
            .map_err(NnError::Device),
        DeviceChoice::Metal => try_metal()
            .map(|d| (d, "metal:0".into()))
            .map_err(NnError::Device),
        DeviceChoice::Auto => {
            let mut why = Vec::new();
            if cfg!(feature = "cuda") {
                match try_cuda(cuda_ordinal) {
                    Ok(d) => return Ok((d, format!("cuda:{cuda_ordinal} (auto)"))),
                    Err(e) => why.push(e),
                }
            }
            if cfg!(feature = "metal") {
                match try_metal() {
                    Ok(d) => return Ok((d, "metal:0 (auto)".into())),
                    Err(e) => why.push(e),
                }
            }
            let desc = if why.is_empty() {
                "cpu (auto: built without GPU support)".to_string()
            } else {
                format!("cpu (auto: {})", why.join("; "))
            };
            Ok((Device::Cpu, desc))
        }
    }
}

/// Parse `f32|f16|bf16`.
pub fn parse_dtype(s: &str) -> Result<candle_core::DType> {
    match s {
        "f32" => Ok(candle_core::DType::F32),
        "f16" => Ok(candle_core::DType::F16),
        "bf16" => Ok(candle_core::DType::BF16),
        other => Err(NnError::Device(format!(
            "unknown dtype `{other}` (expected f32, f16 or bf16)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_load_failures_become_short_messages() {
        let m = r#"Unable to dynamically load the "cuda" shared library - searched for library names: ["libcuda.so", "libcuda64.so"]. Ensure that `LD_LIBRARY_PATH` has the correct path"#;
        assert_eq!(
            tidy_cuda_failure(m),
            "no NVIDIA driver found (libcuda.so cannot be loaded)"
        );
        let m = r#"Unable to dynamically load the "cublas" shared library - searched for library names: ["libcublas.so"]."#;
        let t = tidy_cuda_failure(m);
        assert!(
            t.contains("libcublas.so") && t.contains("LD_LIBRARY_PATH"),
            "{t}"
        );
        assert_eq!(tidy_cuda_failure("other\nlines"), "other");
    }

    #[test]
    fn auto_without_gpu_falls_back_to_cpu() {
        // On CI machines (no GPU): auto gives the CPU and says why.
        let (d, desc) = select_device(DeviceChoice::Auto).unwrap();
        if d.is_cpu() {
            assert!(desc.starts_with("cpu (auto"), "{desc}");
        }
        assert!(select_device(DeviceChoice::Cpu).unwrap().0.is_cpu());
    }
}
