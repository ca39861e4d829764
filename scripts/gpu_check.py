#!/usr/bin/env python3
"""The GPU check behind scripts/gpu-check.sh (run that; it finds the binary, the libraries
and the Python). Standard library only, except the PyTorch timings (a subprocess running
scripts/gpu_bench_torch.py).

Steps, in this order (so that a tight time budget loses the most expensive part only):
  a. parity   every diffusers UNet2DModel and ADM fixture through `genprior predict` on the
              device (f32 and bf16) and on the CPU, against each other and against the
              reference output; and seeded pipelines on the bundled MNIST prior (DDIM
              sampling with eta = 1, a short DPnP-DDPM reconstruction) on device and CPU.
  b. bench    `genprior bench` forward, random weights, per arch x dtype x batch.
  e. loop     per-step cost of the sampling loop (`genprior sample` at two step counts)
              against the bare forward: the host-side noise and its upload.
  p. pcs      `genprior bench --pcs`: one MALA PCS call per task with the host loop (f64, CPU
              threads) and the device loop (f32 tensor ops on the GPU), ms per Langevin step
              at 32 and 256 px, and the device/host ratio.
  d. torch    the same forwards in PyTorch (scripts/gpu_bench_torch.py), for the ratio.
  c. recon    one DPnP-DDIM and one DPS reconstruction on a 256-px random-weight model at the
              reference step counts (16 outer steps x 1,000 MALA steps, 2,823 network
              evaluations; DPS 1,000 steps), each run in full only when a short pilot run
              says it fits in the remaining time budget; otherwise the pilot and the
              extrapolation are reported, marked as such.
Writes OUT/gpu-check-summary.json and OUT/gpu-check-summary.md.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
UNET_FIXTURES = ["positional_null_heads", "scale_shift_heads", "scale_shift_mid_nonorm",
                 "fourier_no_mid_attn", "rect_no_mid_gelu"]
ADM_FIXTURES = ["updown_legacy_sigma", "conv_updown_new_order"]  # class_cond needs labels

T0 = time.monotonic()


def elapsed():
    return time.monotonic() - T0


def log(msg):
    print(f"[gpu-check {elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Small file helpers (no numpy needed).

def read_npy(path):
    """(shape, flat list of floats) of a little-endian f4/f8 .npy file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not an .npy file")
    major = data[6]
    if major == 1:
        hlen = struct.unpack("<H", data[8:10])[0]
        off = 10
    else:
        hlen = struct.unpack("<I", data[8:12])[0]
        off = 12
    header = data[off:off + hlen].decode("latin1")
    descr = re.search(r"'descr':\s*'([^']+)'", header).group(1)
    shape = tuple(int(s) for s in re.search(r"'shape':\s*\(([^)]*)\)", header).group(1).split(",") if s.strip())
    if "True" in re.search(r"'fortran_order':\s*(\w+)", header).group(1):
        raise ValueError(f"{path}: Fortran order not supported")
    fmt = {"<f4": "f", "<f8": "d"}.get(descr)
    if fmt is None:
        raise ValueError(f"{path}: dtype {descr} not supported")
    n = 1
    for s in shape:
        n *= s
    body = data[off + hlen:]
    return shape, list(struct.unpack(f"<{n}{fmt}", body[:n * struct.calcsize(fmt)]))


def max_abs_diff(a, b):
    sa, va = read_npy(a)
    sb, vb = read_npy(b)
    if sa != sb:
        raise ValueError(f"shape {sa} vs {sb}")
    return max((abs(x - y) for x, y in zip(va, vb)), default=0.0), max((abs(y) for y in vb), default=0.0)


def write_png_rgb(path, w, h, pixel):
    raw = bytearray()
    for y in range(h):
        raw.append(0)
        for x in range(w):
            raw.extend(pixel(x, y))

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def read_png_pixels(path):
    """Flat list of 8-bit samples of a non-interlaced 8-bit gray/RGB(A) PNG (filters undone)."""
    with open(path, "rb") as f:
        data = f.read()
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        tag = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or interlace:
        raise ValueError(f"{path}: only 8-bit non-interlaced PNGs")
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = w * ch
    out, prev = [], [0] * stride
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = list(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if ft == 1:
                line[i] = (line[i] + a) & 255
            elif ft == 2:
                line[i] = (line[i] + b) & 255
            elif ft == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        out.extend(line)
        prev = line
    return out


def png_diff(a, b):
    pa, pb = read_png_pixels(a), read_png_pixels(b)
    if len(pa) != len(pb):
        raise ValueError("different image sizes")
    d = [abs(x - y) for x, y in zip(pa, pb)]
    return max(d) / 255.0, sum(d) / len(d) / 255.0


# ---------------------------------------------------------------------------------------

class Runner:
    def __init__(self, args):
        self.bin = args.bin
        self.dev = args.device
        self.out = args.out
        self.budget = args.budget_s
        self.cmd_timeout = args.cmd_timeout_s
        self.work = os.path.join(self.out, "work")
        os.makedirs(self.work, exist_ok=True)

    def left(self):
        return self.budget - elapsed()

    def run(self, argv, timeout=None):
        """(ok, stdout, stderr, seconds)."""
        timeout = min(timeout or self.cmd_timeout, max(5.0, self.left()))
        start = time.monotonic()
        try:
            p = subprocess.run([self.bin] + argv, capture_output=True, text=True, timeout=timeout)
            ok, so, se = p.returncode == 0, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            ok, so, se = False, e.stdout or "", f"timed out after {timeout:.0f} s"
            so = so.decode() if isinstance(so, bytes) else so
        return ok, so, se, time.monotonic() - start


def last_error(stderr):
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    errs = [l for l in lines if l.startswith("error")]
    return (errs or lines or ["(no message)"])[-1][:300]


def step_parity(r, args, summary):
    rows = []
    dtypes = ["f32", "bf16"] if not args.cpu_dry_run else ["f32"]
    cases = [("unet2d", n, os.path.join(FIX, "unet2d", n, "model"), os.path.join(FIX, "unet2d", n)) for n in UNET_FIXTURES]
    cases += [("adm", n, os.path.join(FIX, "adm", n, "model.pt"), os.path.join(FIX, "adm", n)) for n in ADM_FIXTURES]
    for kind, name, model, d in cases:
        ref = os.path.join(d, "output.npy")
        outs = {}
        row = dict(kind=kind, fixture=name)
        for dev, dt in [("cpu", "f32")] + [(r.dev, dt) for dt in dtypes]:
            key = f"{dev}-{dt}"
            if key in outs:
                continue
            out = os.path.join(r.work, f"parity-{name}-{key}.npy")
            ok, _, se, _ = r.run(["predict", "--device", dev, "--dtype", dt, "--model", model,
                                  "--input", os.path.join(d, "input.npy"),
                                  "--timesteps", os.path.join(d, "timesteps.npy"), "--out", out])
            if not ok:
                row[f"{key}_error"] = last_error(se)
                continue
            outs[key] = out
            err, scale = max_abs_diff(out, ref)
            row[f"{key}_vs_reference"] = err
            row["reference_max_abs"] = scale
        dk = f"{r.dev}-f32"
        if dk in outs and "cpu-f32" in outs:
            row["device_f32_vs_cpu_f32"] = max_abs_diff(outs[dk], outs["cpu-f32"])[0]
        rows.append(row)
        log(f"parity {kind}/{name}: " + ", ".join(f"{k}={v:.2e}" for k, v in row.items() if isinstance(v, float)))
    summary["parity"] = rows

    # Seeded pipelines on the bundled MNIST prior: same seed, device vs CPU.
    pipes = []
    for dev in ["cpu", r.dev] if r.dev != "cpu" else ["cpu"]:
        d = os.path.join(r.work, f"sample-{dev}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        ok, so, se, secs = r.run(["sample", "--device", dev, "--num", "4", "--steps", "20", "--sampler", "ddim",
                                  "--eta", "1.0", "--seed", "3", "--out", d + ".png", "--out-dir", d])
        pipes.append(dict(what="sample ddim eta=1 (MNIST, 4 images, 20 steps)", device=dev, ok=ok,
                          seconds=secs, error=None if ok else last_error(se)))
        d = os.path.join(r.work, f"recon-{dev}")
        shutil.rmtree(d, ignore_errors=True)
        ok, so, se, secs = r.run(["reconstruct", "--device", dev, "--task", "sr4", "--input",
                                  os.path.join(ROOT, "examples", "digit.png"), "--method", "dpnp-ddpm",
                                  "--samples", "2", "--outer-steps", "3", "--k-start", "1", "--pcs-steps", "100", "--dds-steps", "20",
                                  "--seed", "5", "--out", d])
        row = dict(what="reconstruct sr4 dpnp-ddpm (MNIST, 2 samples, 3 outer x (100 MALA + 20 DDS steps))", device=dev, ok=ok,
                   seconds=secs, error=None if ok else last_error(se))
        if ok:
            rep = json.load(open(os.path.join(d, "report.json")))
            row["psnr"] = (rep.get("reconstruction") or {}).get("psnr")
        pipes.append(row)
    if r.dev != "cpu":
        cmp = {}
        try:
            files = sorted(f for f in os.listdir(os.path.join(r.work, "sample-cpu")) if f.endswith(".png"))
            diffs = [png_diff(os.path.join(r.work, "sample-cpu", f), os.path.join(r.work, f"sample-{r.dev}", f)) for f in files]
            cmp["sample_max_pixel_diff"] = max(d[0] for d in diffs)
            cmp["sample_mean_pixel_diff"] = sum(d[1] for d in diffs) / len(diffs)
        except Exception as e:
            cmp["sample_compare_error"] = str(e)
        try:
            a = os.path.join(r.work, "recon-cpu", "reconstruction.png")
            b = os.path.join(r.work, f"recon-{r.dev}", "reconstruction.png")
            mx, mean = png_diff(a, b)
            cmp["reconstruction_max_pixel_diff"], cmp["reconstruction_mean_pixel_diff"] = mx, mean
        except Exception as e:
            cmp["reconstruction_compare_error"] = str(e)
        summary["seeded_device_vs_cpu"] = cmp
        log(f"seeded pipelines, device vs CPU: {cmp}")
    summary["seeded_pipelines"] = pipes


def bench_cases(args):
    cases = []
    for spec in args.bench.split(","):
        arch, batches = spec.split(":")
        for b in batches.split("/"):
            for dt in args.dtypes.split(","):
                cases.append((arch, int(b), dt))
    return cases


def step_bench(r, args, summary):
    rows = []
    for arch, b, dt in bench_cases(args):
        if r.left() < 20:
            rows.append(dict(arch=arch, batch=b, dtype=dt, error="skipped: time budget"))
            continue
        ok, so, se, secs = r.run(["bench", "--arch", arch, "--batch", str(b), "--dtype", dt, "--device", r.dev,
                                  "--iters", str(args.iters), "--json"])
        row = dict(arch=arch, batch=b, dtype=dt, wall_seconds=secs)
        if ok:
            g = json.loads(so.strip().splitlines()[-1])
            row.update(seconds_per_pass=g["seconds_per_pass"], images_per_second=g["images_per_second"],
                       gflops_per_second=g["gflops_per_second"],
                       gflop_per_image=g["gflop_per_forward_per_image"])
            log(f"bench {arch} b{b} {dt}: {g['seconds_per_pass']:.4f} s/pass, {g['gflops_per_second']:.0f} GFLOP/s")
        else:
            row["error"] = last_error(se)
            log(f"bench {arch} b{b} {dt}: FAILED {row['error']}")
        rows.append(row)
    summary["bench"] = rows


def parse_sample_secs(stdout):
    m = re.search(r"sampled \d+ image\(s\) in ([0-9.]+) s", stdout)
    return float(m.group(1)) if m else None


def step_loop(r, args, summary):
    arch, b, dt = args.loop_case.split(":")
    res = dict(arch=arch, batch=int(b), dtype=dt)
    times = {}
    for steps in (args.loop_steps[0], args.loop_steps[1]):
        if r.left() < 30:
            res["error"] = "skipped: time budget"
            break
        ok, so, se, _ = r.run(["sample", "--random-weights", arch, "--device", r.dev, "--dtype", dt, "--num", b,
                               "--batch-size", b, "--steps", str(steps), "--sampler", "ddpm", "--seed", "0",
                               "--out", os.path.join(r.work, f"loop-{steps}.png")])
        if not ok:
            res["error"] = last_error(se)
            break
        times[steps] = parse_sample_secs(so)
    if len(times) == 2 and None not in times.values():
        s0, s1 = args.loop_steps
        per_step = (times[s1] - times[s0]) / (s1 - s0)
        res.update(sample_seconds=times, seconds_per_step=per_step)
        fwd = next((x.get("seconds_per_pass") for x in summary.get("bench", [])
                    if x["arch"] == arch and x["batch"] == int(b) and x["dtype"] == dt), None)
        if fwd:
            res["forward_seconds"] = fwd
            res["overhead_per_step_seconds"] = per_step - fwd
            res["overhead_fraction"] = (per_step - fwd) / fwd
        log(f"loop: {res}")
    summary["sampling_loop"] = res


def step_pcs(r, args, summary):
    if r.left() < 60:
        summary["pcs"] = dict(error="skipped: time budget")
        return
    sizes = "16" if args.cpu_dry_run else "32,256"
    ok, so, se, secs = r.run(["bench", "--pcs", "--device", r.dev, "--pcs-sizes", sizes, "--batch", "2",
                              "--iters", "40", "--json"])
    if ok:
        rows = json.loads(so.strip().splitlines()[-1])
        summary["pcs"] = dict(rows=rows, wall_seconds=secs)
        for row in rows:
            log(f"pcs {row['task']} {row['size']}: host {row['host_ms_per_step']:.3f} ms/step, "
                f"device {row['device_ms_per_step']:.3f} ms/step")
    else:
        summary["pcs"] = dict(error=last_error(se))
        log(f"pcs: FAILED {summary['pcs']['error']}")


def step_torch(r, args, summary):
    py = args.torch_python
    if not py:
        summary["torch"] = dict(error="no PyTorch interpreter")
        return
    cases = ",".join(f"{a}:{b}:{dt}" for a, b, dt in bench_cases(args))
    cmd = [py, os.path.join(HERE, "gpu_bench_torch.py"), "--device", "cuda" if r.dev == "cuda" else "cpu",
           "--cases", cases, "--iters", str(args.iters)]
    if args.pysite:
        cmd += ["--pysite", args.pysite]
    timeout = max(10.0, min(args.torch_timeout_s, r.left() - args.recon_reserve_s))
    log(f"torch: {len(cases.split(','))} cases (timeout {timeout:.0f} s)")
    rows, env = [], {}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, err = p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = f"timed out after {timeout:.0f} s"
    for line in out.splitlines():
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if "env" in o:
            env = o["env"]
        else:
            rows.append(o)
    if not rows:
        env["error"] = last_error(err)
    summary["torch"] = dict(env=env, rows=rows)
    for o in rows:
        log(f"torch {o['arch']} b{o['batch']} {o['dtype']}: {o.get('seconds_per_pass', o.get('error'))}")
    if args.cpu_dry_run:  # the ADM reference is too slow on a CPU: build it, count its parameters
        try:
            p = subprocess.run([py, os.path.join(HERE, "gpu_bench_torch.py"), "--check-adm"]
                               + (["--pysite", args.pysite] if args.pysite else []),
                               capture_output=True, text=True, timeout=120)
            summary["torch"]["adm_check"] = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 \
                else dict(error=last_error(p.stderr))
        except Exception as e:
            summary["torch"]["adm_check"] = dict(error=str(e))


def recon_report(d):
    rep = json.load(open(os.path.join(d, "report.json")))
    return dict(seconds=rep.get("seconds"), nfe=rep.get("nfe"))


def step_recon(r, args, summary):
    img = os.path.join(r.work, "input256.png")
    size = args.recon_size
    summary["recon_setup"] = dict(arch=args.recon_arch, size=size, task="sr4")
    write_png_rgb(img, size, size, lambda x, y: (x * 255 // (size - 1), y * 255 // (size - 1), (x + y) * 255 // (2 * size - 2)))
    common = ["reconstruct", "--random-weights", args.recon_arch, "--device", r.dev, "--dtype", args.recon_dtype,
              "--task", "sr4", "--input", img, "--samples", str(args.recon_samples), "--seed", "0"]
    out = []
    # DPnP-DDIM: pilot = 1 outer step at eta = 0.4 (1,000 MALA steps + the DDS-DDIM grid at
    # the largest eta, 203 evaluations); the reference run has 16 outer steps at eta <= 0.4,
    # so it costs at most 16x the pilot.
    # DPS: pilot = 10 steps of 1,000.
    specs = [
        ("dpnp-ddim", ["--method", "dpnp-ddim"] + args.dpnp_full, ["--method", "dpnp-ddim", "--outer-steps", "1", "--eta-min", "0.4"] + args.dpnp_pilot_extra, args.dpnp_scale),
        ("dps", ["--method", "dps"] + args.dps_full, ["--method", "dps", "--dps-steps", str(args.dps_pilot_steps)], args.dps_scale),
    ]
    for name, full, pilot, scale in specs:
        row = dict(method=name, arch=args.recon_arch, dtype=args.recon_dtype, samples=args.recon_samples,
                   full_args=" ".join(full))
        if r.left() < 15:
            row["error"] = "skipped: time budget"
            out.append(row)
            continue
        d = os.path.join(r.work, f"recon256-{name}-pilot")
        ok, so, se, wall = r.run(common + pilot + ["--out", d])
        if not ok:
            row["error"] = "pilot: " + last_error(se)
            out.append(row)
            log(f"recon {name}: pilot FAILED {row['error']}")
            continue
        p = recon_report(d)
        row.update(pilot_args=" ".join(pilot), pilot_seconds=p["seconds"], pilot_nfe=p["nfe"],
                   pilot_wall_seconds=wall, estimated_full_seconds=p["seconds"] * scale)
        log(f"recon {name}: pilot {p['seconds']:.1f} s (nfe {p['nfe']}); full run estimated <= {p['seconds'] * scale:.0f} s; {r.left():.0f} s left")
        other_pending = 1 if name == "dpnp-ddim" else 0
        reserve = other_pending * 30
        if p["seconds"] * scale + wall - p["seconds"] + 10 < r.left() - reserve:
            d = os.path.join(r.work, f"recon256-{name}-full")
            ok, so, se, wall = r.run(common + full + ["--out", d], timeout=r.left())
            if ok:
                f = recon_report(d)
                row.update(seconds=f["seconds"], nfe=f["nfe"], wall_seconds=wall, measured="full run")
                log(f"recon {name}: full {f['seconds']:.1f} s, nfe {f['nfe']}")
            else:
                row.update(error="full run: " + last_error(se), measured="pilot only")
        else:
            row["measured"] = "pilot only (the full run does not fit the time budget); estimated_full_seconds is an upper-bound extrapolation"
        out.append(row)
    summary["reconstruction"] = out


# ---------------------------------------------------------------------------------------

def fmt(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{nd}f}"
    return str(v)


def write_markdown(summary, path):
    L = []
    env = summary["env"]
    L.append(f"# genprior GPU check — {env.get('gpu_name', env.get('device'))}")
    L.append("")
    L.append(f"- date: {env['date']}; mode: {env['mode']}; genprior device `{env['device']}`; commit {env.get('commit')}")
    for k in ["gpu_name", "driver", "gpu_memory", "cpu", "torch", "total_seconds"]:
        if env.get(k) is not None:
            L.append(f"- {k}: {fmt(env[k], 1)}")
    L.append("")
    L.append("## a. Parity (max abs error)")
    L.append("")
    L.append("| fixture | device f32 vs reference | device bf16 vs reference | CPU f32 vs reference | device f32 vs CPU f32 | errors |")
    L.append("|---|---|---|---|---|---|")
    dev = env["device"]
    for row in summary.get("parity", []):
        errs = "; ".join(f"{k}: {v}" for k, v in row.items() if k.endswith("_error"))
        L.append(f"| {row['kind']}/{row['fixture']} | {fmt(row.get(f'{dev}-f32_vs_reference'))} | "
                 f"{fmt(row.get(f'{dev}-bf16_vs_reference'))} | {fmt(row.get('cpu-f32_vs_reference'))} | "
                 f"{fmt(row.get('device_f32_vs_cpu_f32'))} | {errs} |")
    if summary.get("seeded_device_vs_cpu"):
        L.append("")
        L.append("Same seed on device and CPU (bundled MNIST prior; pixel differences on [0, 1]): "
                 + ", ".join(f"{k} {fmt(v, 4)}" for k, v in summary["seeded_device_vs_cpu"].items()))
    for p in summary.get("seeded_pipelines", []):
        L.append(f"- {p['what']} on {p['device']}: {'ok' if p['ok'] else 'FAILED ' + str(p['error'])}, "
                 f"{fmt(p['seconds'], 1)} s" + (f", PSNR {fmt(p.get('psnr'), 2)}" if p.get("psnr") is not None else ""))
    L.append("")
    L.append("## b/d. UNet forward, random weights (seconds per pass; ratio > 1: genprior slower)")
    L.append("")
    L.append("| arch | batch | dtype | genprior s | genprior img/s | genprior GFLOP/s | PyTorch s | PyTorch peak GPU MiB | ratio |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    trows = {(t["arch"], t["batch"], t["dtype"]): t for t in summary.get("torch", {}).get("rows", [])}
    for b in summary.get("bench", []):
        t = trows.get((b["arch"], b["batch"], b["dtype"]), {})
        g, ts = b.get("seconds_per_pass"), t.get("seconds_per_pass")
        ratio = g / ts if g and ts else None
        gcell = fmt(g, 4) if g else "error: " + str(b.get("error"))
        tcell = fmt(ts, 4) if ts else ("error: " + str(t.get("error")) if t else "–")
        L.append(f"| {b['arch']} | {b['batch']} | {b['dtype']} | {gcell} | {fmt(b.get('images_per_second'), 1)} | "
                 f"{fmt(b.get('gflops_per_second'), 0)} | {tcell} | {fmt(t.get('peak_gpu_mib'), 0)} | {fmt(ratio, 2)} |")
    tenv = summary.get("torch", {}).get("env", {})
    if tenv:
        L.append("")
        L.append("PyTorch: " + ", ".join(f"{k} {v}" for k, v in tenv.items()) + " (f32 with TF32 off)")
    if summary.get("torch", {}).get("adm_check"):
        L.append(f"PyTorch ADM FFHQ-256 build check: {summary['torch']['adm_check']}")
    lp = summary.get("sampling_loop")
    if lp:
        L.append("")
        L.append("## Sampling loop cost per step")
        L.append("")
        if lp.get("seconds_per_step") is not None:
            L.append(f"`genprior sample --random-weights {lp['arch']}` (DDPM, batch {lp['batch']}, {lp['dtype']}): "
                     f"{fmt(lp['seconds_per_step'], 4)} s per step against {fmt(lp.get('forward_seconds'), 4)} s "
                     f"per bare forward: overhead {fmt(lp.get('overhead_per_step_seconds'), 4)} s per step "
                     f"({fmt(100 * lp['overhead_fraction'] if lp.get('overhead_fraction') is not None else None, 1)} %), "
                     "which is the host-drawn seeded noise and its upload plus the scheduler step.")
        else:
            L.append(f"not measured: {lp.get('error')}")
    pc = summary.get("pcs")
    if pc:
        L.append("")
        L.append("## p. PCS per Langevin step: host loop (f64, CPU) vs device loop (f32, GPU)")
        L.append("")
        if pc.get("rows"):
            L.append("| task | image | host ms/step | device ms/step | device/host |")
            L.append("|---|---|---|---|---|")
            for row in pc["rows"]:
                L.append(f"| {row['task']} | {row['channels']}×{row['size']}² | {fmt(row['host_ms_per_step'])} | "
                         f"{fmt(row['device_ms_per_step'])} | {fmt(row['device_over_host'], 2)} |")
        else:
            L.append(f"not measured: {pc.get('error')}")
    L.append("")
    if "reconstruction" not in summary:
        L.append("## c. Reconstructions: not run")
        with open(path, "w") as f:
            f.write("\n".join(L) + "\n")
        return
    rc = summary.get("recon_setup", {})
    L.append(f"## c. Reconstructions on a random-weight {rc.get('size', '?')}-px model ({rc.get('arch', '?')}, sr4)")
    L.append("")
    L.append("| method | dtype | samples | measured | seconds | NFE | pilot s (NFE) | estimated full s |")
    L.append("|---|---|---|---|---|---|---|---|")
    for row in summary.get("reconstruction", []):
        L.append(f"| {row['method']} | {row['dtype']} | {row['samples']} | {row.get('measured', row.get('error'))} | "
                 f"{fmt(row.get('seconds'), 1)} | {fmt(row.get('nfe'))} | {fmt(row.get('pilot_seconds'), 1)} ({fmt(row.get('pilot_nfe'))}) | "
                 f"{fmt(row.get('estimated_full_seconds'), 0)} |")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", help="genprior --device for the device side")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU: checks the pipeline only")
    ap.add_argument("--torch-python", default=None)
    ap.add_argument("--pysite", default=None)
    ap.add_argument("--budget-s", type=float, default=265.0,
                    help="wall-clock budget of this script (gpu-check.sh needs ~20 s more: unpacking, the GPU probe)")
    ap.add_argument("--cmd-timeout-s", type=float, default=240.0)
    ap.add_argument("--torch-timeout-s", type=float, default=120.0)
    ap.add_argument("--recon-reserve-s", type=float, default=60.0,
                    help="seconds kept for the reconstructions when the torch step starts")
    ap.add_argument("--bench", default="ddpm-cifar10-32:1/256,ddpm-256:1/16,adm-ffhq-256:1/16",
                    help="arch:batch/batch,... for steps b and d")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--loop-case", default="ddpm-256:16:bf16")
    ap.add_argument("--recon-arch", default="ddpm-256")
    ap.add_argument("--recon-size", type=int, default=256)
    ap.add_argument("--recon-dtype", default="bf16")
    ap.add_argument("--recon-samples", type=int, default=4)
    ap.add_argument("--skip", default="", help="comma list of steps to skip: parity,bench,loop,pcs,torch,recon")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    os.makedirs(args.out, exist_ok=True)
    args.loop_steps = (5, 25)
    args.dpnp_full, args.dpnp_pilot_extra, args.dpnp_scale = [], [], 16.0
    args.dps_full, args.dps_pilot_steps, args.dps_scale = [], 10, 100.0
    if args.cpu_dry_run:
        args.device = "cpu"
        args.bench = "ddpm-cifar10-32:1/2"
        args.dtypes = "f32"
        args.iters = 1
        args.loop_case = "ddpm-cifar10-32:2:f32"
        args.loop_steps = (2, 4)
        args.recon_arch, args.recon_size, args.recon_dtype, args.recon_samples = "ddpm-cifar10-32", 32, "f32", 2
        # Tiny stand-ins for the reference settings: same code path, same pilot logic.
        args.dpnp_full = ["--outer-steps", "2", "--k-start", "1", "--pcs-steps", "20", "--dds-steps", "4"]
        args.dpnp_pilot_extra = ["--pcs-steps", "20", "--dds-steps", "4"]
        args.dpnp_scale = 2.0
        args.dps_full, args.dps_pilot_steps, args.dps_scale = ["--dps-steps", "20"], 5, 4.0
    skip = set(s for s in args.skip.split(",") if s)

    env = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               mode="cpu-dry-run (tiny sizes, CPU: checks the pipeline, not the GPU)" if args.cpu_dry_run else "gpu",
               device=args.device, binary=args.bin, host=platform.node(),
               commit=sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
               genprior_version=sh([args.bin, "--version"]))
    smi = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if smi:
        parts = [p.strip() for p in smi.splitlines()[0].split(",")]
        env.update(gpu_name=parts[0], driver=parts[1] if len(parts) > 1 else None,
                   gpu_memory=parts[2] if len(parts) > 2 else None)
    try:
        env["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        pass
    summary = dict(env=env)
    r = Runner(args)
    steps = [("parity", step_parity), ("bench", step_bench), ("loop", step_loop), ("pcs", step_pcs),
             ("torch", step_torch),
             ("recon", step_recon)]
    for name, fn in steps:
        if name in skip:
            continue
        log(f"step {name} ({r.left():.0f} s of budget left)")
        try:
            fn(r, args, summary)
        except Exception as e:  # one broken step must not lose the others
            summary[f"{name}_error"] = f"{type(e).__name__}: {e}"
            log(f"step {name} failed: {e}")
        json.dump(summary, open(os.path.join(args.out, "gpu-check-summary.json"), "w"), indent=1)
    env["total_seconds"] = elapsed()
    if summary.get("torch", {}).get("env", {}).get("torch"):
        env["torch"] = summary["torch"]["env"]["torch"]
    json.dump(summary, open(os.path.join(args.out, "gpu-check-summary.json"), "w"), indent=1)
    write_markdown(summary, os.path.join(args.out, "gpu-check-summary.md"))
    log(f"wrote {args.out}/gpu-check-summary.json and .md")
    # Exit status: 0 when every parity row ran on the device and agrees with the CPU.
    bad = [row for row in summary.get("parity", [])
           if row.get("device_f32_vs_cpu_f32") is None and args.device != "cpu"
           or (row.get("device_f32_vs_cpu_f32") or 0) > args_tol(row)]
    if bad:
        log(f"parity problems in {len(bad)} fixture(s): see the summary")
        sys.exit(3)


def args_tol(row):
    # f32 on a GPU differs from the CPU by summation order only: relative 1e-4 of the output scale.
    return max(1e-4, 1e-4 * (row.get("reference_max_abs") or 1.0))


if __name__ == "__main__":
    main()
