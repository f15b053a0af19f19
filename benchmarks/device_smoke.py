"""Exercise the main code paths on an accelerator: attention, GPT, generation, trainer.

``python -m benchmarks.device_smoke --device cuda`` prints max differences against PyTorch's
kernels and the CPU, and fails loudly if a path is not device-agnostic.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from scratchformer.functional.attention import scaled_dot_product_attention
from scratchformer.generation import generate
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.training import TrainConfig, Trainer


def main() -> None:
    """Run the checks on ``--device`` and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    out: dict = {"device": str(dev), "torch": torch.__version__}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)

    g = torch.Generator(device="cpu").manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        q, k, v = (
            torch.randn(4, 8, 256, 64, generator=g, dtype=dtype).to(dev).requires_grad_()
            for _ in range(3)
        )
        ours = scaled_dot_product_attention(q, k, v, is_causal=True)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        go = torch.autograd.grad(ours.sum(), (q, k, v))
        gr = torch.autograd.grad(ref.sum(), (q, k, v))
        out[f"sdpa_max_diff_{dtype}"] = max(
            [(ours - ref).abs().max().item()]
            + [(a - b).abs().max().item() for a, b in zip(go, gr, strict=True)]
        )

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=65, context_len=64, n_layers=4, n_heads=4, d_model=128)
    cpu_model = GPT(cfg).eval()
    model = GPT(cfg).to(dev).eval()
    model.load_state_dict(cpu_model.state_dict())
    idx = torch.randint(0, 65, (12, 64))
    with torch.no_grad():
        ref_logits = cpu_model(idx)[0]
        for backend in ("scratch", "sdpa"):
            model.configure_backend(backend)
            out[f"gpt_{backend}_vs_cpu"] = (
                (model(idx.to(dev))[0].cpu() - ref_logits).abs().max().item()
            )
    a = generate(model, idx[:2, :8].to(dev), 20, greedy=True, use_cache=True)
    b = generate(model, idx[:2, :8].to(dev), 20, greedy=True, use_cache=False)
    out["kv_cache_same_tokens"] = bool(torch.equal(a, b))

    model.train()
    data = torch.randint(0, 65, (4096,))

    def batches(step: int, micro: int, gen: torch.Generator):
        starts = torch.randint(0, data.numel() - 65, (12,), generator=gen)
        rows = torch.stack([data[s : s + 65] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    tcfg = TrainConfig(
        max_steps=60, lr=1e-3, warmup_steps=5, device=str(dev), progress=False, log_interval=10
    )
    trainer = Trainer(model, tcfg, train_batches=batches, loss_fn=lambda m, b: m(*b)[1])
    t0 = time.perf_counter()
    hist = trainer.fit()
    out["train_60_steps_s"] = round(time.perf_counter() - t0, 2)
    out["train_loss_first_last"] = [hist[0]["loss"], hist[-1]["loss"]]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
