"""deepinv 0.5.0 DiffPIR / DDRM seconds per image at 100 NFE on the bundled 32x32 MNIST prior (CPU).

A benchmark, not a test (needs torch + deepinv; never in CI). The genprior side of the comparison:
    target/release/genprior reconstruct --task sr4 --kernel box --input examples/digit.png \
        --method diffpir --diffpir-steps 101 --samples 1 --out /tmp/g-diffpir
    target/release/genprior reconstruct --task sr4 --kernel box --input examples/digit.png \
        --method ddrm --ddrm-steps 100 --samples 1 --out /tmp/g-ddrm
(seconds_per_image in each report.json).

    python scripts/bench_deepinv_speed.py [WORKDIR]
"""
import json, os, sys, tempfile, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
from PIL import Image
import deepinv as dinv
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M = os.path.join(ROOT, "models/mnist-ddpm-32")
W = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
P = os.path.join(W, "pipe")
if not os.path.isdir(P):
    os.makedirs(P + "/unet"); os.makedirs(P + "/scheduler")
    for f in ["config.json", "diffusion_pytorch_model.safetensors"]:
        os.symlink(f"{M}/{f}", f"{P}/unet/{f}")
    os.symlink(f"{M}/scheduler_config.json", f"{P}/scheduler/scheduler_config.json")
    json.dump({"_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
               "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]},
              open(P + "/model_index.json", "w"))
den = dinv.models.DiffusersDenoiserWrapper(mode_id=P, device="cpu")
x = torch.tensor(np.asarray(Image.open(os.path.join(ROOT, "examples/digit.png")).convert("L"), dtype=np.float32) / 255.0)[None, None]
print("threads", torch.get_num_threads(), "image", tuple(x.shape))
noise = dinv.physics.GaussianNoise(sigma=0.05)
f = 4
# sr4 box: DiffPIR through Downsampling (box in the top-left of a 7x7 filter, centre (3, 3))
k = torch.zeros(1, 1, 7, 7); k[..., :4, :4] = 1 / 16
ds = dinv.physics.Downsampling(img_size=(1, 32, 32), filter=k, factor=f, padding="circular", noise_model=noise)
# DDRM needs an SVD: box pooling with a per-block orthonormal Hadamard basis
Hd = torch.tensor([[1.0]])
for _ in range(4):
    Hd = torch.cat([torch.cat([Hd, Hd], 1), torch.cat([Hd, -Hd], 1)], 0)
Hd = Hd / 4  # 16x16 orthonormal, first row constant
def blocks(x):  # (B,1,32,32) -> (B,1,8,8,16)
    return x.reshape(x.shape[0], 1, 8, f, 8, f).permute(0, 1, 2, 4, 3, 5).reshape(x.shape[0], 1, 8, 8, 16)
def unblocks(b):
    return b.reshape(b.shape[0], 1, 8, 8, f, f).permute(0, 1, 2, 4, 3, 5).reshape(b.shape[0], 1, 32, 32)
class BoxSR4(dinv.physics.DecomposablePhysics):
    def __init__(self, **kw):
        m = torch.zeros(1, 1, 8, 8, 16); m[..., 0] = 1 / f
        super().__init__(mask=unblocks(m), **kw)
    def V_adjoint(self, x): return unblocks(blocks(x) @ Hd.T)
    def V(self, z): return unblocks(blocks(z) @ Hd)
    def U(self, z): return blocks(z)[..., 0]
    def U_adjoint(self, y):
        b = torch.zeros(y.shape[0], 1, 8, 8, 16); b[..., 0] = y; return unblocks(b)
sr = BoxSR4(noise_model=noise)
print("box physics agree:", (sr.A(x) - ds.A(x)).abs().max().item())
torch.manual_seed(0)
y = ds(x)
def psnr(a): return float(10 * np.log10(1 / ((a.clamp(0, 1) - x) ** 2).mean()))
res = {}
m = dinv.sampling.DiffPIR(den, dinv.optim.data_fidelity.L2(), max_iter=100, zeta=0.1, lambda_=7.0)
for name, run in [("diffpir", lambda: m(y, ds)),
                  ("ddrm", lambda: dinv.sampling.DDRM(den, sigmas=np.linspace(1, 0, 100), eta=0.85, etab=1.0)(y, sr))]:
    with torch.no_grad():
        run()  # warm-up
        t0 = time.time(); out = run(); dt = time.time() - t0
    res[name] = {"seconds": dt, "nfe": 100, "psnr": psnr(out)}
    print(name, res[name])
json.dump(res, open(os.path.join(W, "deepinv_times.json"), "w"), indent=1)
