//! `nn.GroupNorm` (optionally fused with the SiLU that follows it in every UNet block) on the
//! fast CPU kernel, and a row softmax with a backward, both as candle custom ops on CPU f32.
//! Other devices and dtypes use candle's composed ops (the same formulas).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Module, Shape, Tensor, D};

use crate::kernels::norm::{
    group_norm_backward, group_norm_backward_mod, group_norm_forward_mod, GnGeom, Modulation,
};
use crate::kernels::softmax::{softmax_rows, softmax_rows_backward};
use crate::{cpu_f32, profile};

/// `nn.GroupNorm(groups, channels, eps)` with affine parameters, on `(B, C, …)` tensors.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// `weight` and `bias` have `channels` entries; `groups` must divide `channels`.
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> candle_core::Result<Self> {
        let c = weight.dim(0)?;
        if groups == 0 || c % groups != 0 {
            candle_core::bail!("group norm: {c} channels cannot be split into {groups} groups");
        }
        if bias.dims() != weight.dims() {
            candle_core::bail!(
                "group norm: weight {:?} and bias {:?} differ",
                weight.shape(),
                bias.shape()
            );
        }
        Ok(Self {
            weight,
            bias,
            groups,
            eps,
        })
    }

    /// GroupNorm then SiLU, in one pass on CPU f32.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _t = profile::scope("groupnorm+silu");
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let fast = x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && self.bias.dtype() == DType::F32;
        if fast {
            self.fused(x, silu, ModVecs::default())
        } else {
            let y = reference_group_norm(x, &self.weight, &self.bias, self.groups, self.eps)?;
            if silu {
                candle_nn::ops::silu(&y)
            } else {
                Ok(y)
            }
        }
    }

    fn check_input(&self, x: &Tensor) -> candle_core::Result<()> {
        let dims = x.dims();
        if dims.len() < 2 || dims[1] != self.weight.dim(0)? {
            candle_core::bail!(
                "group norm over {} channels applied to a tensor of shape {:?}",
                self.weight.dim(0)?,
                x.shape()
            );
        }
        Ok(())
    }

    /// The fused CPU op.
    fn fused(&self, x: &Tensor, silu: bool, modulation: ModVecs) -> candle_core::Result<Tensor> {
        let op = GnOp {
            groups: self.groups,
            eps: self.eps,
            silu,
            modulation,
        };
        x.contiguous()?.apply_op3(&self.weight, &self.bias, op)
    }
}

impl GroupNorm {
    /// `act((GN(x + offset)·γ + β)·(1 + scale) + shift)` with `offset`, `scale`, `shift` of
    /// `B × C` values (shape `(B, C)` or `(B, C, 1, …)`, each optional) and act = SiLU when
    /// `silu`: the time-embedding injections of the resnet blocks, in one pass on CPU f32
    /// when the modulation and the affine parameters are constants (the input gradient, what
    /// DPS needs, stays exact); otherwise the same formula from separate ops.
    pub fn forward_mod(
        &self,
        x: &Tensor,
        offset: Option<&Tensor>,
        scale: Option<&Tensor>,
        shift: Option<&Tensor>,
        silu: bool,
    ) -> candle_core::Result<Tensor> {
        let _t = profile::scope(if silu { "groupnorm+silu" } else { "groupnorm" });
        self.check_input(x)?;
        let dims = x.dims();
        let (b, c) = (dims[0], dims[1]);
        let mods = [offset, scale, shift];
        for m in mods.iter().flatten() {
            if m.elem_count() != b * c || m.dim(0)? != b {
                candle_core::bail!(
                    "group norm modulation of shape {:?} for input {:?}",
                    m.shape(),
                    x.shape()
                );
            }
        }
        let constant = |t: &Tensor| !t.track_op() && t.dtype() == DType::F32 && t.device().is_cpu();
        let fast = x.device().is_cpu()
            && x.dtype() == DType::F32
            && constant(&self.weight)
            && constant(&self.bias)
            && mods.iter().flatten().all(|m| constant(m));
        if fast {
            let vec = |m: Option<&Tensor>| -> candle_core::Result<Option<Vec<f32>>> {
                m.map(|t| t.flatten_all()?.to_vec1::<f32>()).transpose()
            };
            let modulation = ModVecs {
                offset: vec(offset)?,
                scale: vec(scale)?,
                shift: vec(shift)?,
            };
            return self.fused(x, silu, modulation);
        }
        let mut pshape = vec![1usize; dims.len()];
        pshape[0] = b;
        pshape[1] = c;
        let bc = |t: &Tensor| t.reshape(pshape.as_slice());
        let mut h = match offset {
            Some(o) => x.broadcast_add(&bc(o)?)?,
            None => x.clone(),
        };
        h = self.apply(&h, false)?;
        if let Some(sc) = scale {
            h = h.broadcast_mul(&(bc(sc)? + 1.0)?)?;
        }
        if let Some(sh) = shift {
            h = h.broadcast_add(&bc(sh)?)?;
        }
        if silu {
            candle_nn::ops::silu(&h)
        } else {
            Ok(h)
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _t = profile::scope("groupnorm");
        self.apply(x, false)
    }
}

/// Group norm from candle's composed ops (computed in f32 for half inputs), the reference for
/// the tests and the path on GPUs.
pub fn reference_group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let dt = x.dtype();
    let internal = match dt {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let xg = x.to_dtype(internal)?.reshape((b, groups, ()))?;
    let mean = xg.mean_keepdim(D::Minus1)?;
    let xc = xg.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .to_dtype(dt)?
        .reshape(dims.as_slice())?;
    let mut pshape = vec![1usize; dims.len()];
    pshape[1] = c;
    xn.broadcast_mul(&weight.reshape(pshape.as_slice())?)?
        .broadcast_add(&bias.reshape(pshape.as_slice())?)
}

#[derive(Debug, Clone, Default)]
struct ModVecs {
    offset: Option<Vec<f32>>,
    scale: Option<Vec<f32>>,
    shift: Option<Vec<f32>>,
}

impl ModVecs {
    fn view(&self) -> Modulation<'_> {
        Modulation {
            offset: self.offset.as_deref(),
            scale: self.scale.as_deref(),
            shift: self.shift.as_deref(),
        }
    }
}

#[derive(Debug, Clone)]
struct GnOp {
    groups: usize,
    eps: f64,
    silu: bool,
    modulation: ModVecs,
}

impl GnOp {
    fn geom(&self, shape: &Shape) -> GnGeom {
        let d = shape.dims();
        GnGeom {
            batch: d[0],
            channels: d[1],
            spatial: d[2..].iter().product(),
            groups: self.groups,
            eps: self.eps,
            silu: self.silu,
        }
    }
}

impl CustomOp3 for GnOp {
    fn name(&self) -> &'static str {
        "genprior-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, "group norm input")?;
        let gamma = cpu_f32(s2, l2, "group norm weight")?;
        let beta = cpu_f32(s3, l3, "group norm bias")?;
        let y = group_norm_forward_mod(
            &self.geom(l1.shape()),
            x,
            gamma,
            beta,
            &self.modulation.view(),
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let _t = profile::scope("groupnorm/backward");
        let dev = x.device();
        let op = GnBwdOp {
            geom: self.geom(x.shape()),
            gamma: gamma.detach().to_vec1::<f32>()?,
            beta: beta.detach().to_vec1::<f32>()?,
            modulation: self.modulation.clone(),
        };
        let x = x.detach();
        if !gamma.track_op() && !beta.track_op() {
            // The usual case (loaded weights): ∂x only, straight from the storages.
            let gx = x.apply_op2_no_bwd(&grad.contiguous()?, &op)?;
            return Ok((Some(gx), None, None));
        }
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let gz = grad.flatten_all()?.to_vec1::<f32>()?;
        let (gx, gg, gb) = group_norm_backward(&op.geom, &xv, &op.gamma, &op.beta, &gz);
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), dev)?),
            gamma
                .track_op()
                .then(|| Tensor::from_vec(gg, gamma.shape(), dev))
                .transpose()?,
            beta.track_op()
                .then(|| Tensor::from_vec(gb, beta.shape(), dev))
                .transpose()?,
        ))
    }
}

/// ∂L/∂x of the group norm from (x, ∂L/∂output).
struct GnBwdOp {
    geom: GnGeom,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    modulation: ModVecs,
}

impl candle_core::CustomOp2 for GnBwdOp {
    fn name(&self) -> &'static str {
        "genprior-group-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, "group norm input")?;
        let gz = cpu_f32(s2, l2, "group norm gradient")?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("group norm backward: {:?} vs {:?}", l1.shape(), l2.shape());
        }
        let (gx, _, _) = group_norm_backward_mod(
            &self.geom,
            x,
            &self.gamma,
            &self.beta,
            gz,
            &self.modulation.view(),
        );
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

/// Softmax over the last dimension. CPU f32: a fused, numerically stable kernel with a
/// backward; elsewhere candle's ops.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let _t = profile::scope("softmax");
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(SoftmaxOp)
    } else if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "genprior-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "softmax input")?;
        let n = *l.shape().dims().last().unwrap_or(&1);
        if n == 0 {
            return Ok((CpuStorage::F32(Vec::new()), l.shape().clone()));
        }
        Ok((CpuStorage::F32(softmax_rows(x, n)), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let n = *res.dims().last().unwrap_or(&1);
        let y = res.detach().flatten_all()?.to_vec1::<f32>()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let gx = softmax_rows_backward(&y, &g, n);
        Ok(Some(Tensor::from_vec(gx, res.shape(), res.device())?))
    }
}

/// Nearest-neighbour ×2 upsampling of `(B, C, H, W)`. CPU f32: a copy kernel whose backward
/// sums 2×2 blocks (candle's backward is a grouped convolution, one channel at a time).
pub fn upsample_nearest2x(x: &Tensor) -> candle_core::Result<Tensor> {
    let _t = profile::scope("upsample");
    let (_, _, h, w) = x.dims4()?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Upsample2x)
    } else {
        x.upsample_nearest2d(2 * h, 2 * w)
    }
}

struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "genprior-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "upsample input")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let y = crate::kernels::resample::upsample2x(x, b * c, h, w);
        Ok((CpuStorage::F32(y), Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&SumPool2x { hw: arg.dims4()? })?,
        ))
    }
}

struct SumPool2x {
    hw: (usize, usize, usize, usize),
}

impl CustomOp1 for SumPool2x {
    fn name(&self) -> &'static str {
        "genprior-sum-pool2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = cpu_f32(s, l, "upsample gradient")?;
        let (b, c, h, w) = self.hw;
        if l.shape().dims() != [b, c, 2 * h, 2 * w] {
            candle_core::bail!("upsample backward: gradient shape {:?}", l.shape());
        }
        let out = crate::kernels::resample::sum_pool2x(g, b * c, h, w);
        Ok((CpuStorage::F32(out), Shape::from((b, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{grads, max_rel, rand};
    use candle_core::{Device, Var};

    /// Forward, fused SiLU and all three gradients against candle's composed ops and autograd,
    /// on shapes with 1 and many groups, one spatial position, (B, C, N) and (B, C, H, W)
    /// inputs, and an offset/scale that a one-pass variance would get wrong.
    #[test]
    fn group_norm_matches_candle_ops_and_autograd() {
        let cases: [(&[usize], usize); 7] = [
            (&[1, 4, 5, 5], 1),
            (&[2, 6, 3, 7], 3),
            (&[3, 64, 4, 4], 32),
            (&[2, 8, 1, 1], 4),
            (&[2, 12, 9], 4),
            (&[1, 32, 16, 16], 32),
            (&[5, 10, 3, 2], 5),
        ];
        for (i, &(shape, groups)) in cases.iter().enumerate() {
            let c = shape[1];
            // Values with a large common offset: the centred two-pass statistics must hold.
            let x = (rand(shape, 1 + i as u64, 2.0) + 50.0).unwrap();
            let x = Var::from_tensor(&x).unwrap();
            let gamma = Var::from_tensor(&rand(&[c], 100 + i as u64, 1.5)).unwrap();
            let beta = Var::from_tensor(&rand(&[c], 200 + i as u64, 1.0)).unwrap();
            let up = rand(shape, 300 + i as u64, 1.0);
            for silu in [false, true] {
                let gn = GroupNorm::new(
                    gamma.as_tensor().clone(),
                    beta.as_tensor().clone(),
                    groups,
                    1e-5,
                )
                .unwrap();
                let ours = if silu {
                    gn.forward_silu(x.as_tensor()).unwrap()
                } else {
                    gn.forward(x.as_tensor()).unwrap()
                };
                let mut theirs = reference_group_norm(
                    x.as_tensor(),
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    groups,
                    1e-5,
                )
                .unwrap();
                if silu {
                    theirs = candle_nn::ops::silu(&theirs).unwrap();
                }
                let e = max_rel(&ours, &theirs);
                assert!(e < 2e-5, "case {i} silu {silu}: forward off by {e}");
                let g1 = grads(&ours, &up);
                let g2 = grads(&theirs, &up);
                for (what, v) in [
                    ("x", x.as_tensor()),
                    ("gamma", gamma.as_tensor()),
                    ("beta", beta.as_tensor()),
                ] {
                    let e = max_rel(g1.get(v).unwrap(), g2.get(v).unwrap());
                    assert!(e < 1e-4, "case {i} silu {silu}: ∂{what} off by {e}");
                }
            }
        }
    }

    #[test]
    fn group_norm_rejects_bad_shapes() {
        assert!(GroupNorm::new(rand(&[6], 1, 1.0), rand(&[6], 2, 1.0), 4, 1e-5).is_err());
        assert!(GroupNorm::new(rand(&[6], 1, 1.0), rand(&[5], 2, 1.0), 3, 1e-5).is_err());
        let gn = GroupNorm::new(rand(&[6], 1, 1.0), rand(&[6], 2, 1.0), 3, 1e-5).unwrap();
        assert!(gn.forward(&rand(&[2, 4, 3, 3], 3, 1.0)).is_err());
    }

    /// Softmax equals candle's (including rows with huge logits) and its gradient equals
    /// autograd through candle's composed softmax.
    #[test]
    fn softmax_matches_candle_and_autograd() {
        for (i, shape) in [[2usize, 3, 5], [1, 7, 1], [4, 16, 64], [3, 300, 9]]
            .iter()
            .enumerate()
        {
            let x = Var::from_tensor(&rand(shape, 10 + i as u64, 8.0)).unwrap();
            let up = rand(shape, 20 + i as u64, 1.0);
            let ours = softmax_last_dim(x.as_tensor()).unwrap();
            let theirs = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
            assert!(max_rel(&ours, &theirs) < 1e-6, "case {i}");
            let g1 = grads(&ours, &up);
            let g2 = grads(&theirs, &up);
            let e = max_rel(
                g1.get(x.as_tensor()).unwrap(),
                g2.get(x.as_tensor()).unwrap(),
            );
            assert!(e < 1e-5, "case {i}: gradient off by {e}");
        }
        let big = Tensor::new(
            &[[1000f32, 999.0, -1000.0], [-5e4, -5e4, -5e4]],
            &Device::Cpu,
        )
        .unwrap();
        let y = softmax_last_dim(&big).unwrap().to_vec2::<f32>().unwrap();
        assert!(y.iter().flatten().all(|v| v.is_finite()));
        assert!((y[0][0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
        assert!((y[1][0] - 1.0 / 3.0).abs() < 1e-6);
    }

    /// ×2 nearest upsampling and its backward equal candle's.
    #[test]
    fn upsample_matches_candle() {
        for (i, shape) in [[1usize, 1, 1, 1], [2, 3, 4, 5], [1, 8, 7, 3]]
            .iter()
            .enumerate()
        {
            let x = Var::from_tensor(&rand(shape, 50 + i as u64, 1.0)).unwrap();
            let (h, w) = (shape[2], shape[3]);
            let up = rand(&[shape[0], shape[1], 2 * h, 2 * w], 60 + i as u64, 1.0);
            let ours = upsample_nearest2x(x.as_tensor()).unwrap();
            let theirs = x.as_tensor().upsample_nearest2d(2 * h, 2 * w).unwrap();
            assert!(max_rel(&ours, &theirs) == 0.0, "case {i}");
            let g1 = grads(&ours, &up);
            let g2 = grads(&theirs, &up);
            let e = max_rel(
                g1.get(x.as_tensor()).unwrap(),
                g2.get(x.as_tensor()).unwrap(),
            );
            assert!(e < 1e-6, "case {i}: gradient off by {e}");
        }
    }

    /// The modulated norm (input offset; output scale and shift; with and without SiLU)
    /// equals the composed reference ops, and so does its input gradient; tracked
    /// modulations take the composed path and get gradients too.
    #[test]
    fn modulated_group_norm_matches_composed_ops() {
        let (b, c, h, w, groups) = (3usize, 8usize, 5usize, 4usize, 4usize);
        let x = Var::from_tensor(&rand(&[b, c, h, w], 1, 2.0)).unwrap();
        let gamma = rand(&[c], 2, 1.0);
        let beta = rand(&[c], 3, 1.0);
        let off = rand(&[b, c, 1, 1], 4, 3.0);
        let sc = rand(&[b, c], 5, 0.5);
        let sh = rand(&[b, c], 6, 1.0);
        let up = rand(&[b, c, h, w], 7, 1.0);
        let gn = GroupNorm::new(gamma.clone(), beta.clone(), groups, 1e-5).unwrap();
        let cases: [(Option<&Tensor>, Option<&Tensor>, Option<&Tensor>); 4] = [
            (Some(&off), None, None),
            (None, Some(&sc), Some(&sh)),
            (Some(&off), Some(&sc), None),
            (None, None, Some(&sh)),
        ];
        for (i, &(o, s1, s2)) in cases.iter().enumerate() {
            for silu in [false, true] {
                let ours = gn.forward_mod(x.as_tensor(), o, s1, s2, silu).unwrap();
                let mut r = x.as_tensor().clone();
                if let Some(o) = o {
                    r = r.broadcast_add(o).unwrap();
                }
                r = reference_group_norm(&r, &gamma, &beta, groups, 1e-5).unwrap();
                if let Some(s1) = s1 {
                    r = r
                        .broadcast_mul(&(s1.reshape((b, c, 1, 1)).unwrap() + 1.0).unwrap())
                        .unwrap();
                }
                if let Some(s2) = s2 {
                    r = r.broadcast_add(&s2.reshape((b, c, 1, 1)).unwrap()).unwrap();
                }
                if silu {
                    r = candle_nn::ops::silu(&r).unwrap();
                }
                let e = max_rel(&ours, &r);
                assert!(e < 2e-5, "case {i} silu {silu}: forward off by {e}");
                let g1 = grads(&ours, &up);
                let g2 = grads(&r, &up);
                let e = max_rel(
                    g1.get(x.as_tensor()).unwrap(),
                    g2.get(x.as_tensor()).unwrap(),
                );
                assert!(e < 1e-4, "case {i} silu {silu}: input gradient off by {e}");
            }
        }
        // Tracked modulation: composed path, gradient reaches the shift.
        let shv = Var::from_tensor(&sh).unwrap();
        let y = gn
            .forward_mod(x.as_tensor(), None, None, Some(shv.as_tensor()), true)
            .unwrap();
        let g = grads(&y, &up);
        assert!(g.get(shv.as_tensor()).is_some());
        // Wrong modulation size is an error.
        assert!(gn
            .forward_mod(
                x.as_tensor(),
                Some(&rand(&[b, c - 1], 8, 1.0)),
                None,
                None,
                false
            )
            .is_err());
    }
}
