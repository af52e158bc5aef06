"""An eager PyTorch re-statement of DeformPAM's reference decision path, for timing only.

Written from docs/method.md (the reference's networks and its per-decision costs), not from the
reference code; the weights are random (timing does not depend on them). What it keeps:
  - the feature network runs on the full cloud (every point gets a 240-d feature) and the
    denoiser cross-attends to every point, recomputing the keys/values in every call;
  - sampling: the backbone once, then a Python loop of DDIM steps (all N candidates together);
  - the implicit reward: for each of the two models, the feature network re-run on M copies of
    the cloud (one per Monte-Carlo sample, in chunks), one t per sample shared by the candidates,
    eps per candidate; the chosen candidate copied to the host.
What it replaces: the sparse 3D ResUNet (MinkowskiEngine is not available here) by a dense
stand-in of the same widths: a per-point MLP and two residual kNN blocks (64 channels), then the
2-layer point transformer (d = 64, attention over 16 neighbours), then the fusion MLP with a
max-pooled 1024-d global feature. A real sparse ResUNet has more layers, so this stand-in is
if anything faster than the reference, and the speed-ups measured against it are conservative.

`torch` is optional (not a dependency of pam_jax): `python benchmarks/bench.py sampler
--torch-reference` and `python benchmarks/bench.py train --torch-reference` use this module when
torch is importable; it runs on the GPU when PyTorch sees one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

WIDTH, LAYERS, HEADS, FEAT, GLOBAL, K = 240, 2, 4, 64, 1024, 16
MAX_FREQ = 64.0


def _mlp(*sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def knn(points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, 3) -> (B, N, k) indices of each point's k nearest points."""
    return torch.cdist(points, points).topk(k, dim=-1, largest=False).indices


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B, N, k) -> (B, N, k, C)."""
    b, n, k = idx.shape
    return x[torch.arange(b)[:, None, None], idx]


class PointTransformerLayer(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.pos = _mlp(3, d, d)
        self.attn = _mlp(d, d, d)
        self.out = nn.Linear(d, d)

    def forward(self, f, xyz, idx):
        q = self.q(f)[:, :, None]
        k, v = gather(self.k(f), idx), gather(self.v(f), idx)
        pos = self.pos(xyz[:, :, None] - gather(xyz, idx))
        w = torch.softmax(self.attn(q - k + pos), dim=2)        # vector attention over neighbours
        return f + self.out((w * (v + pos)).sum(2))


class Backbone(nn.Module):
    """Cloud (B, N, 3) -> per-point features (B, N, 240)."""

    def __init__(self):
        super().__init__()
        self.stem = _mlp(3, 32, FEAT)
        self.blocks = nn.ModuleList([_mlp(2 * FEAT, FEAT, FEAT) for _ in range(2)])
        self.transformer = nn.ModuleList([PointTransformerLayer(FEAT) for _ in range(2)])
        self.glob = _mlp(FEAT, GLOBAL)
        self.fuse = _mlp(FEAT + GLOBAL, WIDTH, WIDTH)

    def forward(self, xyz):
        idx = knn(xyz, K)
        f = self.stem(xyz)
        for blk in self.blocks:       # residual kNN blocks (the sparse convolutions' stand-in)
            nb = gather(f, idx)
            f = f + blk(torch.cat([nb - f[:, :, None], nb], -1)).max(2).values
        for layer in self.transformer:
            f = layer(f, xyz, idx)
        g = self.glob(f).max(1, keepdim=True).values.expand(-1, f.shape[1], -1)
        return self.fuse(torch.cat([f, g], -1))


def rotary_angles(xyz, head_dim):
    f = head_dim // 6
    freqs = MAX_FREQ ** (torch.arange(f, dtype=torch.float32) / max(f - 1, 1))
    return (xyz[..., :, None] * freqs).flatten(-2)


def apply_rotary(x, ang):
    """x (B, L, H, d), ang (B, L, 3F)."""
    n = ang.shape[-1]
    rot, rest = x[..., : 2 * n], x[..., 2 * n:]
    rot = rot.unflatten(-1, (3, 2, n // 3))
    a = ang.unflatten(-1, (3, n // 3))[:, :, None]
    x1, x2 = rot[..., 0, :], rot[..., 1, :]
    out = torch.stack([x1 * a.cos() - x2 * a.sin(), x1 * a.sin() + x2 * a.cos()], -2).flatten(-3)
    return torch.cat([out, rest], -1)


def attention(q, k, v):
    w = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1]), -1)
    return torch.einsum("bhqk,bkhd->bqhd", w, v)


class AdaLN(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH, elementwise_affine=False)
        self.mod = nn.Linear(WIDTH, 3 * WIDTH)

    def forward(self, x, temb):
        shift, scale, gate = self.mod(nn.functional.silu(temb)).chunk(3, -1)
        return self.norm(x) * (1 + scale) + shift, gate


class DenoiserLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.ctx_norm = nn.LayerNorm(WIDTH)
        self.cross_ln, self.self_ln, self.ffn_ln = AdaLN(), AdaLN(), AdaLN()
        self.cq, self.ck, self.cv, self.co = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.sq, self.sk, self.sv, self.so = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.ffn = _mlp(WIDTH, 4 * WIDTH, WIDTH)

    def forward(self, h, ang, temb, feats, ctx_ang):
        b, n, a, d = h.shape
        heads = lambda x: x.unflatten(-1, (HEADS, d // HEADS))  # noqa: E731
        c = self.ctx_norm(feats)                              # keys/values recomputed every call
        k, v = apply_rotary(heads(self.ck(c)), ctx_ang), heads(self.cv(c))
        x, gate = self.cross_ln(h, temb)
        q = apply_rotary(heads(self.cq(x)).reshape(b, n * a, HEADS, -1), ang.reshape(b, n * a, -1))
        h = h + gate * self.co(attention(q, k, v).reshape(b, n, a, d))
        x, gate = self.self_ln(h, temb)
        ang_c = ang.reshape(b * n, a, -1)
        q = apply_rotary(heads(self.sq(x)).reshape(b * n, a, HEADS, -1), ang_c)
        k = apply_rotary(heads(self.sk(x)).reshape(b * n, a, HEADS, -1), ang_c)
        y = attention(q, k, heads(self.sv(x)).reshape(b * n, a, HEADS, -1)).reshape(b, n, a, d)
        h = h + gate * self.so(y)
        x, gate = self.ffn_ln(h, temb)
        return h + gate * self.ffn(x)


class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.in_proj = nn.Linear(3, WIDTH)
        self.point_embed = nn.Parameter(0.02 * torch.randn(2, WIDTH))
        self.time = _mlp(WIDTH, WIDTH, WIDTH)
        self.layers = nn.ModuleList([DenoiserLayer() for _ in range(LAYERS)])
        self.out_ln, self.out = AdaLN(), nn.Linear(WIDTH, 3)

    def denoise(self, x, t, feats, xyz):
        """x (B, N, 2, 3), t (B, N) long, feats (B, Np, 240) at xyz (B, Np, 3) -> eps."""
        half = WIDTH // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[..., None] * freqs
        temb = self.time(torch.cat([args.cos(), args.sin()], -1))[:, :, None]
        h = self.in_proj(x) + self.point_embed
        ang, ctx_ang = rotary_angles(x, WIDTH // HEADS), rotary_angles(xyz, WIDTH // HEADS)
        for layer in self.layers:
            h = layer(h, ang, temb, feats, ctx_ang)
        y, _ = self.out_ln(h, temb)
        return self.out(y)


def cosine_alphas_cumprod(T: int = 100) -> torch.Tensor:
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float32)
    return torch.cumprod(1 - betas, 0)


@torch.no_grad()
def decide(ref: Policy, pol: Policy, points: np.ndarray, *, num_candidates=8, steps=100, samples=100,
           eta=1.0, beta=100.0, t_max=10, chunk=10, T=100) -> np.ndarray:
    """One decision per cloud (B, Np, 3) -> the chosen actions (B, 2, 3), on the host."""
    ac = cosine_alphas_cumprod(T)
    xyz = torch.as_tensor(points, device=_device(ref))
    b = xyz.shape[0]
    feats = ref.backbone(xyz)
    x = torch.randn(b, num_candidates, 2, 3)
    ratio = T // steps
    for t in range(T - ratio, -1, -ratio):                      # Python-level DDIM loop
        eps = ref.denoise(x, torch.full((b, num_candidates), t), feats, xyz)
        a_t, a_p = ac[t], (ac[t - ratio] if t - ratio >= 0 else torch.tensor(1.0))
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        std = eta * ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)).sqrt()
        x = a_p.sqrt() * x0 + (1 - a_p - std**2).clamp(min=0).sqrt() * eps + std * torch.randn_like(x)
    total = torch.zeros(b, num_candidates)
    for start in range(0, samples, chunk):                      # M copies of the cloud, in chunks
        m = min(chunk, samples - start)
        pts_m = xyz.repeat_interleave(m, 0)                     # (B*m, Np, 3)
        x_m = x.repeat_interleave(m, 0)
        t = torch.randint(0, t_max, (b * m, 1)).expand(-1, num_candidates)   # one t per sample
        eps = torch.randn_like(x_m)
        a = ac[t][..., None, None]
        x_t = a.sqrt() * x_m + (1 - a).sqrt() * eps
        err = []
        for model in (pol, ref):                                 # the feature network re-run per copy
            e = model.denoise(x_t, t, model.backbone(pts_m), pts_m)
            err.append(((e - eps) ** 2).mean((-2, -1)))
        total += (err[0] - err[1]).reshape(b, m, num_candidates).sum(1)
    scores = -beta * total / samples
    idx = scores.argmax(-1)
    return x[torch.arange(b), idx].cpu().numpy()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def default_device() -> str:
    """"cuda" when PyTorch sees a GPU, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_reference(seed: int = 0, device: str | None = None):
    """-> decide(points, steps, samples, num_candidates) with two random-weight models on `device`
    (None: :func:`default_device`). Tensors made inside the networks follow the default device,
    which this sets for the process (the reference is for timing runs only)."""
    device = device or default_device()
    torch.set_default_device(device)
    torch.manual_seed(seed)
    ref, pol = Policy().eval(), Policy().eval()
    return lambda points, **kw: decide(ref, pol, points, **kw)


def make_train_step(seed: int = 0, device: str | None = None, *, replicas: int = 8, lr: float = 1e-4, T: int = 100):
    """-> (step, to_device): the reference's supervised step in eager PyTorch, for timing.

    step(points, actions) on tensors from to_device(points (B, Np, 3), actions (B, 2, 3)): the
    feature network on the full clouds, each action replicated `replicas` times with its own t and
    noise, the epsilon MSE, backward and an AdamW update; it returns the loss as a float (which
    waits for the device)."""
    device = device or default_device()
    torch.set_default_device(device)
    torch.manual_seed(seed)
    pol = Policy().train()
    opt = torch.optim.AdamW(pol.parameters(), lr=lr)
    ac = cosine_alphas_cumprod(T)

    def to_device(points, actions):
        return torch.as_tensor(points, device=device), torch.as_tensor(actions, device=device)

    def step(xyz, x0):
        b = xyz.shape[0]
        x0 = x0[:, None].expand(-1, replicas, -1, -1)
        t = torch.randint(0, T, (b, replicas))
        eps = torch.randn_like(x0)
        a = ac[t][..., None, None]
        loss = ((pol.denoise(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, pol.backbone(xyz), xyz) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step, to_device
