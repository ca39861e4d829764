//! Helpers shared by the CLI integration tests (run the real `genprior` binary).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `genprior` binary under test: `$GENPRIOR_TEST_BIN` when set (e.g. the CUDA build
/// from `scripts/build-cuda.sh`, to run this suite against it), else the one cargo built.
pub fn bin() -> Command {
    match std::env::var_os("GENPRIOR_TEST_BIN") {
        Some(p) if !p.is_empty() => Command::new(p),
        _ => Command::new(env!("CARGO_BIN_EXE_genprior")),
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// A fresh, empty temporary folder unique to this test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "genprior-test-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert a run failed cleanly: non-zero exit, an `error:` line mentioning every
/// needle, no panic, no backtrace.
pub fn assert_clean_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr:\n{err}"
    );
    assert_eq!(o.status.code(), Some(1), "exit code; stderr:\n{err}");
    assert!(!err.contains("panicked"), "panic:\n{err}");
    assert!(
        !err.to_lowercase().contains("backtrace"),
        "backtrace:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no `error:` line in:\n{err}"));
    for n in needles {
        assert!(line.contains(n), "error line lacks `{n}`: {line}");
    }
}

pub fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "command failed ({:?}); stderr:\n{}",
        o.status,
        stderr(o)
    );
}

/// Largest absolute elementwise difference of two tensors of the same shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
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

/// Tiny-step options: every method reads the flags it declares and ignores the others.
/// Cheap settings for every method: each `*-steps` budget of the registry at 3 (DPnP's outer
/// steps at 2), and η small enough that DDS takes few network evaluations.
pub fn tiny_budgets() -> Vec<String> {
    let mut v: Vec<String> = ["--k-start", "1", "--eta-max", "0.03", "--eta-min", "0.02"]
        .map(String::from)
        .to_vec();
    for o in genprior_posterior::all_options() {
        if o.name.ends_with("-steps") {
            v.push(format!("--{}", o.name));
            v.push(if o.name == "outer-steps" { "2" } else { "3" }.into());
        }
    }
    v
}
