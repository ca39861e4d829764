//! PSNR / SSIM against scikit-image values (tests/fixtures/operators/reference.json).

use candle_core::{Device, Tensor};
use genprior_inverse::metrics::{psnr, ssim, to_unit_range};

fn fixture() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/operators/reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn arr(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_f64().unwrap())
        .collect()
}

#[test]
fn ssim_and_psnr_match_scikit_image() {
    let f = &fixture()["metrics"];
    let a = Tensor::from_vec(arr(&f["a"]), (1, 3, 24, 24), &Device::Cpu).unwrap();
    let b = Tensor::from_vec(arr(&f["b"]), (1, 3, 24, 24), &Device::Cpu).unwrap();
    let s = ssim(&a, &b).unwrap()[0];
    let p = psnr(&a, &b).unwrap()[0];
    let (rs, rp) = (f["ssim"].as_f64().unwrap(), f["psnr"].as_f64().unwrap());
    assert!((s - rs).abs() < 1e-10, "ssim {s} vs skimage {rs}");
    assert!((p - rp).abs() < 1e-10, "psnr {p} vs skimage {rp}");
}

#[test]
fn metrics_edge_cases() {
    let f = &fixture()["metrics"];
    let a = Tensor::from_vec(arr(&f["a"]), (1, 3, 24, 24), &Device::Cpu).unwrap();
    let two = Tensor::cat(&[&a, &a], 0).unwrap();
    assert!(ssim(&two, &two)
        .unwrap()
        .iter()
        .all(|v| (v - 1.0).abs() < 1e-12));
    assert!(psnr(&two, &two).unwrap().iter().all(|v| v.is_infinite()));
    let small = Tensor::zeros((1, 1, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(ssim(&small, &small).is_err());
    assert!(psnr(&a, &small).is_err());
    let m = Tensor::new(&[[[[-1.0f32, 0.0, 1.0, 3.0]]]], &Device::Cpu).unwrap();
    let u = to_unit_range(&m)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(u, vec![0.0, 0.5, 1.0, 1.0]);
}
