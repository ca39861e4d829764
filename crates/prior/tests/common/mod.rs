//! Helpers shared by the prior crate's tests (fixtures, temporary folders, comparisons).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use genprior_prior::{load_prior, ModelSource, ModelSpec, Prior, PriorError};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn unet(name: &str) -> PathBuf {
    fixtures().join("unet2d").join(name)
}

pub fn adm(name: &str) -> PathBuf {
    fixtures().join("adm").join(name)
}

/// A fresh, empty temporary folder unique to this test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "genprior-prior-test-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn local(path: impl Into<PathBuf>) -> ModelSpec {
    ModelSpec::new(ModelSource::Local(path.into()))
}

pub fn load(spec: &ModelSpec) -> Prior {
    load_prior(spec, &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{spec:?}: {}", chain(&e)))
}

pub fn load_err(spec: &ModelSpec) -> String {
    match load_prior(spec, &Device::Cpu, DType::F32) {
        Ok(p) => panic!("{spec:?}: expected an error, loaded {}", p.info.source),
        Err(e) => chain(&e),
    }
}

/// An error with its causes, joined by ": " (as the CLI prints it).
pub fn chain(e: &PriorError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

pub fn assert_contains(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "`{n}` not in: {text}");
    }
}

/// Input batch, timesteps and expected output of a fixture folder.
pub fn case(dir: &Path) -> (Tensor, Tensor, Tensor) {
    let r = |f: &str| Tensor::read_npy(dir.join(f)).unwrap();
    (r("input.npy"), r("timesteps.npy"), r("output.npy"))
}

pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Whether two tensors hold exactly the same f32 values.
pub fn bit_equal(a: &Tensor, b: &Tensor) -> bool {
    let v = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    };
    a.dims() == b.dims() && v(a) == v(b)
}

/// Link `src` into `dir` under `name` (a copy where symlinks are unavailable).
pub fn link(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    #[cfg(unix)]
    std::os::unix::fs::symlink(src, &dst).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(src, &dst).unwrap();
    dst
}
