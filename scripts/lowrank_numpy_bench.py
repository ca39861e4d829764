#!/usr/bin/env python3
"""Reference ScaledGD in numpy for the wall-time comparison with genprior-lowrank.

Same algorithm, same problem sizes as the spec (matrix completion n=1000, r=10,
p=0.2; RPCA n=1000, r=10, alpha=0.1), f64 on the CPU, spectral initialisation by a
dense truncated SVD (numpy/LAPACK). Completion uses the observed entries sparsely
(gather L[rows]*R[cols], scatter with np.add.at-free bincount), RPCA the row/column
top-k sparsifier with np.partition. Prints iterations to 1e-13 and ms per iteration.
Hankel completion (n1 = n2 = 1000, signal length 1999, r = 10, p = 0.2) follows the
reference MATLAB HankelMC.m: FFT Hankel products (np.fft, complex128), iterations to
1e-10 in the weighted (Hankel-matrix) error.

    python scripts/lowrank_numpy_bench.py [--kappa 10] [--iters 150] [--problems completion,rpca,hankel]
"""
import argparse
import time

import numpy as np


def low_rank(n, r, kappa, rng):
    u, _ = np.linalg.qr(rng.standard_normal((n, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    s = np.linspace(1.0, 1.0 / kappa, r)
    return (u * s) @ v.T


def scatter_rows(idx, vals, n):
    """sum of rows of vals (nnz x r) into n rows by idx."""
    out = np.empty((n, vals.shape[1]))
    for j in range(vals.shape[1]):
        out[:, j] = np.bincount(idx, weights=vals[:, j], minlength=n)
    return out


def completion(n, r, kappa, p, iters, rng):
    x = low_rank(n, r, kappa, rng)
    mask = rng.random((n, n)) < p
    rows, cols = np.nonzero(mask)
    y = x[rows, cols]
    m0 = np.zeros((n, n))
    m0[rows, cols] = y / p
    u, s, vt = np.linalg.svd(m0)
    L = u[:, :r] * np.sqrt(s[:r])
    R = vt[:r].T * np.sqrt(s[:r])
    eta = 0.5
    hit = None
    t0 = time.perf_counter()
    timed = 0.0
    for t in range(iters):
        ts = time.perf_counter()
        lg, rg = L[rows], R[cols]
        z = ((lg * rg).sum(1) - y) / p
        gl = scatter_rows(rows, rg * z[:, None], n)
        gr = scatter_rows(cols, lg * z[:, None], n)
        L, R = (L - eta * np.linalg.solve(R.T @ R, gl.T).T,
                R - eta * np.linalg.solve(L.T @ L, gr.T).T)
        timed += time.perf_counter() - ts
        err = np.linalg.norm(L @ R.T - x) / np.linalg.norm(x)
        if hit is None and err <= 1e-13:
            hit = t + 1
            break
    return hit, timed / (t + 1) * 1e3


def sparsify(z, alpha):
    n1, n2 = z.shape
    kc, kr = int(alpha * n1), int(alpha * n2)
    a = np.abs(z)
    rt = -np.partition(-a, kr - 1, axis=1)[:, kr - 1:kr]
    ct = -np.partition(-a, kc - 1, axis=0)[kc - 1:kc, :]
    return np.where((a >= rt) & (a >= ct), z, 0.0)


def rpca(n, r, kappa, alpha, iters, rng):
    x = low_rank(n, r, kappa, rng)
    s_star = sparsify(rng.standard_normal((n, n)), alpha)
    y = x + s_star
    u, s, vt = np.linalg.svd(y - sparsify(y, alpha))
    L = u[:, :r] * np.sqrt(s[:r])
    R = vt[:r].T * np.sqrt(s[:r])
    eta = 0.5
    hit = None
    timed = 0.0
    for t in range(iters):
        ts = time.perf_counter()
        X = L @ R.T
        S = sparsify(y - X, 2 * alpha)
        G = X + S - y
        L, R = (L - eta * np.linalg.solve(R.T @ R, (G @ R).T).T,
                R - eta * np.linalg.solve(L.T @ L, (G.T @ L).T).T)
        timed += time.perf_counter() - ts
        err = np.linalg.norm(L @ R.T - x) / np.linalg.norm(x)
        if hit is None and err <= 1e-13:
            hit = t + 1
            break
    return hit, timed / (t + 1) * 1e3


def hankel_ops(n1, n2):
    nd = n1 + n2 - 1
    nfft = 1 << (nd - 1).bit_length()
    w = np.array([min(k + 1, nd - k, n1, n2) for k in range(nd)], dtype=float)

    def proj(L, R):
        return np.fft.ifft(np.fft.fft(L, nfft, axis=0) * np.fft.fft(np.conj(R), nfft, axis=0), axis=0).sum(1)[:nd] / w

    def mul(x, B, adj):
        xf = np.fft.fft(np.conj(x) if adj else x, nfft)
        off = (n1 if adj else n2) - 1
        rows = n2 if adj else n1
        out = np.fft.ifft(np.fft.fft(B[::-1], nfft, axis=0) * xf[:, None], axis=0)
        return out[off:off + rows]

    return nd, w, proj, mul


def hankel(n, r, kappa, p, iters, rng):
    n1 = n2 = n
    nd, w, proj, mul = hankel_ops(n1, n2)
    freqs = rng.permutation(n1)[:r] / n1
    sig = np.linspace(1.0, 1.0 / kappa, r)
    x_star = np.exp(2j * np.pi * np.outer(np.arange(nd), freqs)) @ sig / np.sqrt(n1 * n2)
    omega = rng.random(nd) < p
    y = omega * x_star
    # Spectral init: dense SVD of the Hankel matrix of y/p (baseline only).
    idx = np.arange(n1)[:, None] + np.arange(n2)[None, :]
    u, s, vh = np.linalg.svd((y / p)[idx])
    L = u[:, :r] * np.sqrt(s[:r])
    R = vh[:r].conj().T * np.sqrt(s[:r])
    eta = 0.5
    hit = None
    timed = 0.0
    sw = np.sqrt(w)
    for t in range(iters):
        ts = time.perf_counter()
        x = proj(L, R)
        z = (omega * x - y) / p - x
        Lz = mul(z, R, False)
        Rz = mul(z, L, True)
        L, R = (L - eta * (L + np.linalg.solve((R.conj().T @ R).T, Lz.T).T),
                R - eta * (R + np.linalg.solve((L.conj().T @ L).T, Rz.T).T))
        timed += time.perf_counter() - ts
        err = np.linalg.norm((proj(L, R) - x_star) * sw) / np.linalg.norm(x_star * sw)
        if hit is None and err <= 1e-10:
            hit = t + 1
            break
    return hit, timed / (t + 1) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kappa", type=float, default=10.0)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--problems", default="completion,rpca")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    probs = a.problems.split(",")
    if "completion" in probs:
        it, ms = completion(1000, 10, a.kappa, 0.2, a.iters, rng)
        print(f"numpy completion n=1000 r=10 p=0.2 kappa={a.kappa}: iterations to 1e-13 {it}, {ms:.2f} ms/iter")
    if "rpca" in probs:
        it, ms = rpca(1000, 10, a.kappa, 0.1, a.iters, rng)
        print(f"numpy rpca n=1000 r=10 alpha=0.1 kappa={a.kappa}: iterations to 1e-13 {it}, {ms:.2f} ms/iter")
    if "hankel" in probs:
        it, ms = hankel(1000, 10, a.kappa, 0.2, a.iters, rng)
        print(f"numpy hankel n1=n2=1000 r=10 p=0.2 kappa={a.kappa}: iterations to 1e-10 {it}, {ms:.2f} ms/iter")


if __name__ == "__main__":
    main()
