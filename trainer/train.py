"""The genesis train.py: the one file a swarm's agents edit. A small modern GPT, Muon + AdamW.

Run by the runner inside its sandbox as `python -P train.py`, in a work folder where it may write.
It reads from the environment (set by the runner, never by editing this file):
  AUTOSWARM_PROFILE  "gpu" (the reference sizes below) or "cpu" (tiny sizes, for tests and laptops)
  AUTOSWARM_BUDGET_S training seconds (default trainer.constants.TIME_BUDGET_S = 300)
  AUTOSWARM_STEPS    if set: exactly this many steps and no time budget (the verifier's replay)
  AUTOSWARM_HORIZON  with STEPS: the horizon of the run being replayed, if it stopped before it
  AUTOSWARM_SEED     seeds the weights and the data order
  AUTOSWARM_DATA     folder with train.bin and meta.json (val.bin is not there, and never will be)
It leaves model.safetensors and model_config.json for the harness, which rebuilds the model in a
fresh process through build_model(config) and computes val_bpb itself: a val_bpb printed here
would be ignored. It ends with the text contract: `---`, then `key: value` lines.

Determinism: the data order is a function of (seed, step) and the learning-rate schedule a
function of (step, horizon). A timed run measures its first steps, then fixes its horizon (the
total step count) once; a replay with AUTOSWARM_STEPS=horizon repeats the same computation.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROCESS_START_S = time.time()  # before importing torch: the runner's hard kill counts that too

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainer.constants import (ENV_BUDGET_S, ENV_DATA, ENV_HORIZON, ENV_SEED, ENV_STEPS,  # noqa: E402
                               MODEL_CONFIG_FILE, TIME_BUDGET_S, WEIGHTS_FILE, profile_from_env)

# ---------------------------------------------------------------------------------------------
# Hyperparameters (edit these). Reference size: depth 8, width 512, ~50M parameters, 2^19 tokens
# per step at sequence length 2048 (the length is the harness's: trainer.constants).
DEPTH = 8
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO
HEAD_DIM = 128
MLP_RATIO = 4
TOTAL_BATCH_TOKENS = 2**19  # tokens per optimizer step (gradient accumulation fills the gap)
DEVICE_BATCH_SIZE = 128  # sequences per forward/backward (autoresearch's; ~45 GB on an H100)
EMBEDDING_LR = 0.6  # AdamW, token and value embeddings
UNEMBEDDING_LR = 0.004  # AdamW, the untied output head
MATRIX_LR = 0.04  # Muon, every 2-D weight inside the blocks
SCALAR_LR = 0.5  # AdamW, per-layer mixing scalars
ADAM_BETAS = (0.8, 0.95)
MUON_WEIGHT_DECAY = 0.2  # decoupled, scaled by the learning rate
WARMDOWN_RATIO = 0.5  # last half of the run: learning rate decays linearly
FINAL_LR_FRAC = 0.0
LOGIT_SOFTCAP = 15.0
UNTIMED_STEPS = 10  # first steps (torch.compile) do not count against the budget
PLAN_AFTER_STEPS = 20  # steps timed before the horizon is fixed; the LR is constant until then

# The tiny CPU profile, chosen by the runner through AUTOSWARM_PROFILE=cpu.
PROFILE = profile_from_env()
if PROFILE.name == "cpu":
    DEPTH, ASPECT_RATIO, HEAD_DIM, TOTAL_BATCH_TOKENS, DEVICE_BATCH_SIZE = 2, 32, 32, 2048, 16
    UNTIMED_STEPS, PLAN_AFTER_STEPS = 2, 10

# The safety stop of a timed run whose steps slowed down (a shared machine). Its wall clock counts
# from the first timed step, so a slow cold compile is not charged: it may run STOP_SLACK_S beyond
# its budget from there. A backstop before the runner's hard kill (budget + allowance from the
# process start) keeps SAVE_RESERVE_S to save the weights: a compile of up to allowance - reserve
# (210 s on the gpu profile; the old rule cut at 120 s) costs no training time.
STOP_SLACK_S = PROFILE.startup_allowance_s / 4
SAVE_RESERVE_S = PROFILE.startup_allowance_s / 8

# Attention kernels on CUDA, in order of preference (cuDNN is the fastest on Hopper; flash next);
# the CPU keeps PyTorch's default. Names of torch.nn.attention.SDPBackend members.
CUDA_ATTENTION_BACKENDS = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")

PEAK_FLOPS = {"H100": 989.5e12, "H200": 989.5e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}  # bf16 dense


# ---------------------------------------------------------------------------------------------
# Model


@dataclass
class GPTConfig:
    sequence_len: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    mlp_ratio: int = 4
    softcap: float = 15.0


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # [1, T, 1, D/2]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def cuda_attention_context() -> contextlib.AbstractContextManager:
    """sdpa_kernel over CUDA_ATTENTION_BACKENDS, in that order where this torch honours an order."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [getattr(SDPBackend, name) for name in CUDA_ATTENTION_BACKENDS if hasattr(SDPBackend, name)]
    try:
        return sdpa_kernel(backends, set_priority=True)
    except TypeError:  # torch < 2.6: no order, the fastest available of these
        return sdpa_kernel(backends)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, has_value_embed: bool) -> None:
        super().__init__()
        d = cfg.n_embd
        self.n_head, self.head_dim = cfg.n_head, d // cfg.n_head
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, d, bias=False)
        self.c_v = nn.Linear(d, d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        # value embeddings (ResFormer-style): a per-token vector mixed into the values
        self.ve_lambda = nn.Parameter(torch.tensor(0.5)) if has_value_embed else None

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        shape = (b, t, self.n_head, self.head_dim)
        q, k, v = self.c_q(x).view(shape), self.c_k(x).view(shape), self.c_v(x).view(shape)
        if ve is not None and self.ve_lambda is not None:
            v = v + (self.ve_lambda * ve).to(v.dtype).view(shape)
        # QK-norm after the rotation; autocast may run the norm in float32, SDPA needs one dtype
        q, k = norm(apply_rotary(q, cos, sin)).to(v.dtype), norm(apply_rotary(k, cos, sin)).to(v.dtype)
        with cuda_attention_context() if q.is_cuda else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, has_value_embed: bool) -> None:
        super().__init__()
        self.attn = Attention(cfg, has_value_embed)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(norm(x), ve, cos, sin)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ve_layers = [i for i in range(cfg.n_layer) if i % 2 == (cfg.n_layer - 1) % 2]  # alternate, incl. last
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(cfg.vocab_size, cfg.n_embd) for i in self.ve_layers})
        self.blocks = nn.ModuleList([Block(cfg, i in self.ve_layers) for i in range(cfg.n_layer)])
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)  # untied from wte
        self.resid_lambdas = nn.Parameter(torch.ones(cfg.n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(cfg.n_layer))  # skip from the embedding to every layer
        cos, sin = rotary_tables(cfg.sequence_len, cfg.n_embd // cfg.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self) -> None:
        bound = 3**0.5 * self.cfg.n_embd**-0.5  # uniform with std 1/sqrt(width)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                lin.weight.uniform_(-bound, bound)
            block.attn.c_proj.weight.zero_()  # every block starts as the identity
            block.mlp.c_proj.weight.zero_()
        self.wte.weight.normal_(0.0, 1.0)
        for emb in self.value_embeds.values():
            emb.weight.uniform_(-bound, bound)
        self.lm_head.weight.normal_(0.0, 0.001)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        t = idx.size(1)
        cos, sin = self.cos[:, :t], self.sin[:, :t]
        # On CUDA the residual stream and the embeddings' outputs are bf16 (half the memory traffic
        # of fp32; the 0-d lambdas keep that dtype); the CPU path stays fp32.
        act = torch.bfloat16 if idx.is_cuda else torch.float32
        x = x0 = norm(self.wte(idx).to(act))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx).to(act) if i in self.ve_layers else None
            x = block(x, ve, cos, sin)
        logits = self.lm_head(norm(x)).float()
        logits = self.cfg.softcap * torch.tanh(logits / self.cfg.softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def build_model(config: dict) -> GPT:
    """The harness calls this in a fresh process, then loads model.safetensors into the result."""
    return GPT(GPTConfig(**config))


# ---------------------------------------------------------------------------------------------
# Optimizers


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (batched over dim 0)."""
    a, b, c = 3.4445, -4.7750, 2.0315  # quintic coefficients from the Muon write-up
    x = g.bfloat16() if g.is_cuda else g.float()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum, then orthogonalized updates; parameters of one shape are stepped as one batch."""

    def __init__(self, params: list[nn.Parameter], lr: float, momentum: float = 0.95, weight_decay: float = 0.0):
        shapes = sorted({tuple(p.shape) for p in params})
        groups = [{"params": [p for p in params if tuple(p.shape) == s]} for s in shapes]
        super().__init__(groups, {"lr": lr, "initial_lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self._ortho = torch.compile(orthogonalize) if params and params[0].is_cuda else orthogonalize

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = torch.stack([p.grad for p in params])
            state = self.state[params[0]]
            if "momentum" not in state:
                state["momentum"] = torch.zeros_like(grads)
            buf = state["momentum"]
            buf.lerp_(grads, 1 - group["momentum"])
            update = self._ortho(grads.lerp_(buf, group["momentum"]))  # Nesterov
            rows, cols = params[0].shape[-2:]
            scale = max(1.0, rows / cols) ** 0.5
            for p, u in zip(params, update.unbind(0)):
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(u, alpha=-group["lr"] * scale)


def build_optimizers(model: GPT) -> list[torch.optim.Optimizer]:
    width_scale = (model.cfg.n_embd / 768) ** -0.5  # AdamW rates were tuned at width 768
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    scalars = [model.resid_lambdas, model.x0_lambdas] + [p for p in model.blocks.parameters() if p.ndim < 2]
    embeds = [model.wte.weight] + [e.weight for e in model.value_embeds.values()]
    fused = next(model.parameters()).is_cuda
    adam = torch.optim.AdamW([
        {"params": embeds, "lr": EMBEDDING_LR * width_scale},
        {"params": [model.lm_head.weight], "lr": UNEMBEDDING_LR * width_scale},
        {"params": scalars, "lr": SCALAR_LR},
    ], betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0, fused=fused)
    for group in adam.param_groups:
        group["initial_lr"] = group["lr"]
    return [Muon(matrices, lr=MATRIX_LR, weight_decay=MUON_WEIGHT_DECAY), adam]


def lr_multiplier(step: int, horizon: int | None) -> float:
    if horizon is None or step < PLAN_AFTER_STEPS:  # constant until the horizon is known
        return 1.0
    progress = step / max(horizon, 1)
    if progress < 1 - WARMDOWN_RATIO:
        return 1.0
    left = max(0.0, (1 - progress) / WARMDOWN_RATIO)
    return left + (1 - left) * FINAL_LR_FRAC


def past_budget(training_s: float, now_s: float, timed_from_s: float | None, budget_s: float,
                started_s: float | None = None) -> bool:
    """Whether a timed run stops now: its timed steps used the budget; or the wall clock since its
    first timed step passed budget + STOP_SLACK_S; or, since the process started (`started_s`),
    budget + allowance - SAVE_RESERVE_S, the backstop before the runner's hard kill."""
    if training_s >= budget_s:
        return True
    if started_s is not None and now_s - started_s > budget_s + PROFILE.startup_allowance_s - SAVE_RESERVE_S:
        return True
    return timed_from_s is not None and now_s - timed_from_s > budget_s + STOP_SLACK_S


def muon_momentum(step: int) -> float:
    frac = min(step / 300, 1.0)
    return (1 - frac) * 0.85 + frac * 0.95


# ---------------------------------------------------------------------------------------------
# Training


def main() -> int:
    t_start = time.time()
    from trainer.dataloader import TokenBatches  # only the training process needs the data

    seed = int(os.environ.get(ENV_SEED, "0"))
    budget_s = float(os.environ.get(ENV_BUDGET_S, TIME_BUDGET_S))
    fixed_steps = int(os.environ[ENV_STEPS]) if os.environ.get(ENV_STEPS) else None
    data_dir = Path(os.environ.get(ENV_DATA, "data"))
    vocab_size = int(json.loads((data_dir / "meta.json").read_text())["vocab_size"])
    device = PROFILE.device
    if device == "cuda" and not torch.cuda.is_available():
        print("FAIL: the gpu profile needs CUDA and torch sees no GPU", flush=True)
        return 1
    torch.manual_seed(seed)
    torch.set_float32_matmul_precision("high")

    width = DEPTH * ASPECT_RATIO
    cfg = GPTConfig(sequence_len=PROFILE.seq_len, vocab_size=vocab_size, n_layer=DEPTH,
                    n_head=max(1, width // HEAD_DIM), n_embd=width, mlp_ratio=MLP_RATIO, softcap=LOGIT_SOFTCAP)
    model = GPT(cfg).to(device)
    model.init_weights()
    num_params = sum(p.numel() for p in model.parameters())
    forward = torch.compile(model, dynamic=False) if device == "cuda" else model
    optimizers = build_optimizers(model)
    seq_len = cfg.sequence_len
    grad_accum = max(1, TOTAL_BATCH_TOKENS // (DEVICE_BATCH_SIZE * seq_len))
    tokens_per_step = grad_accum * DEVICE_BATCH_SIZE * seq_len
    batches = TokenBatches(data_dir / "train.bin", batch_size=DEVICE_BATCH_SIZE, seq_len=seq_len, seed=seed,
                           device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    print(f"profile {PROFILE.name} | device {device} | params {num_params / 1e6:.2f}M | width {width} | "
          f"depth {DEPTH} | {tokens_per_step} tokens/step (accumulation {grad_accum})", flush=True)

    horizon = int(os.environ.get(ENV_HORIZON) or 0) or fixed_steps
    step, training_s, warmup_s, smooth, losses = 0, 0.0, 0.0, 0.0, []
    timed_from: float | None = None  # wall time when the first timed step began
    last_print = 0.0
    while True:
        last = fixed_steps if fixed_steps is not None else horizon  # None while a timed run still plans
        if last is not None and step >= last:
            break
        t0 = time.time()
        for micro in range(grad_accum):
            x, y = batches.batch(step * grad_accum + micro)
            with autocast:
                loss = forward(x, y)
            (loss / grad_accum).backward()
        lrm = lr_multiplier(step, horizon)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
                if isinstance(opt, Muon):
                    group["momentum"] = muon_momentum(step)
            opt.step()
        model.zero_grad(set_to_none=True)
        loss_value = loss.item()  # also synchronizes CUDA, so the step time below is real
        if not math.isfinite(loss_value):
            print(f"FAIL: loss is {loss_value} at step {step}", flush=True)
            return 1
        dt = time.time() - t0
        if step >= UNTIMED_STEPS:
            training_s += dt
            timed_from = t0 if timed_from is None else timed_from
        else:
            warmup_s += dt
        step += 1
        smooth = 0.9 * smooth + 0.1 * loss_value
        losses.append(loss_value)
        if step == 1:  # Python's GC causes long stalls on big heaps; everything live now stays
            gc.collect()
            gc.freeze()
            gc.disable()
        if fixed_steps is None and step == PLAN_AFTER_STEPS:
            per_step = training_s / max(1, step - UNTIMED_STEPS)
            horizon = step + max(0, int((budget_s - training_s) / max(per_step, 1e-9)))
            print(f"planned horizon: {horizon} steps ({per_step * 1000:.1f} ms/step)", flush=True)
        # Steps slowed down (a shared machine): stop on time, well before the runner's hard kill at
        # budget + startup allowance. A replay then needs both num_steps and planned_steps.
        if fixed_steps is None and past_budget(training_s, time.time(), timed_from, budget_s, PROCESS_START_S):
            print(f"stopping early at step {step}: budget exceeded", flush=True)
            break
        if time.time() - last_print > 1.0 or step == horizon:
            last_print = time.time()
            pct = f"{100 * step / horizon:.0f}%" if horizon else "planning"
            print(f"step {step:05d} ({pct}) | loss {smooth / (1 - 0.9**step):.4f} | lr x{lrm:.2f} | "
                  f"{dt * 1000:.0f} ms | {tokens_per_step / dt:,.0f} tok/s", flush=True)

    import safetensors.torch

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, WEIGHTS_FILE)
    Path(MODEL_CONFIG_FILE).write_text(json.dumps(asdict(cfg), sort_keys=True))

    total_tokens = step * tokens_per_step
    timed_tokens = max(0, step - UNTIMED_STEPS) * tokens_per_step
    tok_per_s = timed_tokens / training_s if training_s > 0 else 0.0
    flops_per_token = 6 * sum(p.numel() for p in model.blocks.parameters()) + 6 * cfg.n_embd * vocab_size \
        + 12 * cfg.n_layer * cfg.n_embd * seq_len
    peak_vram_mb, mfu = 0.0, 0.0
    if device == "cuda":
        peak_vram_mb = torch.cuda.max_memory_allocated() / 2**20
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        mfu = 100 * tok_per_s * flops_per_token / peak if peak else 0.0
    every = max(1, len(losses) // 64)
    curve = ",".join(f"{i}:{losses[i]:.4f}" for i in range(0, len(losses), every))
    print("---")
    print(f"training_seconds: {training_s:.2f}")
    print(f"warmup_seconds: {warmup_s:.2f}")
    print(f"total_seconds: {time.time() - t_start:.2f}")
    print(f"peak_vram_mb: {peak_vram_mb:.1f}")
    print(f"mfu_percent: {mfu:.2f}")
    print(f"total_tokens_M: {total_tokens / 1e6:.3f}")
    print(f"tokens_per_second: {tok_per_s:.0f}")
    print(f"num_steps: {step}")
    print(f"planned_steps: {horizon if horizon is not None else step}")
    print(f"num_params_M: {num_params / 1e6:.3f}")
    print(f"depth: {DEPTH}")
    print(f"seed: {seed}")
    print(f"device: {device}")
    print(f"profile: {PROFILE.name}")
    print(f"final_train_loss: {smooth / (1 - 0.9**max(step, 1)):.4f}")
    print(f"loss_curve: {curve}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
