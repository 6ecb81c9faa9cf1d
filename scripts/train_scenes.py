"""Train the scenes generator by regression on z -> render(params(z)); seeded and resumable.

    python scripts/train_scenes.py --steps 11000 --batch 32 --seed 0 --threads 1 \
        --log /tmp/scenes_train.log --ckpt /tmp/scenes_ckpt.pt

Every step draws a fresh batch of latents (from a generator seeded by (seed, step), so a resumed
run sees the same data), renders it, and regresses the network's output on the rendering with a
class-weighted L1 loss (small parts weigh more), adding squared error after the first cycle and
extra weight on class boundaries for the second half.
The learning rate follows cosine cycles with decaying peaks. An exponential moving average of
the weights is kept; at the end the BatchNorm statistics of both the raw and the averaged
weights are recomputed exactly, the better of the two on validation seeds is kept, evaluated on
500 held-out seeds and written to rewidget/models/weights/scenes.{safetensors,json}.
Same seed, steps and thread count give the same weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewidget.core.export import save_state_dict  # noqa: E402
from rewidget.models import scenes as S  # noqa: E402

# small parts weigh more, so the regression cannot trade them away for smoother sky
CLASS_WEIGHTS = {
    "sky": 1.0,
    "grass": 1.0,
    "tower": 1.5,
    "roof": 3.0,
    "window": 4.0,
    "tree": 1.5,
    "trunk": 4.0,
    "sun": 2.0,
}
CYCLES = ((0.15, 2e-3), (0.25, 1.5e-3), (0.60, 1e-3))  # (share of --steps, peak lr)
POLISH_PEAK = 3e-4  # the optional --polish cycle after --steps: L1 only, which keeps edges crisp
LR_MIN = 2e-5
# from this share of the steps on, pixels on a class boundary weigh EDGE_WEIGHT times more:
# blurred edges are what keeps generated pixels off the palette
EDGE_FROM, EDGE_WEIGHT = 0.5, 3.0
WARMUP = 100
EVAL_SEED0 = 1_000_000  # evaluate_generator's default: the reported numbers
VAL_SEED0 = 2_000_000  # picks raw vs averaged weights; disjoint from the reported seeds


def lr_and_cycle(step: int, total: int, polish: int = 0) -> tuple[float, int]:
    """Learning rate and cycle index of a step; cycle len(CYCLES) is the polish cycle."""
    if step >= total:
        t = (step - total) / max(1, polish)
        return LR_MIN + 0.5 * (POLISH_PEAK - LR_MIN) * (1 + math.cos(math.pi * t)), len(CYCLES)
    start = 0
    for i, (share, peak) in enumerate(CYCLES):
        length = round(share * total) if i < len(CYCLES) - 1 else total - start
        if step < start + length or i == len(CYCLES) - 1:
            t = min(1.0, (step - start) / max(1, length))
            lr = LR_MIN + 0.5 * (peak - LR_MIN) * (1 + math.cos(math.pi * t))
            if step < WARMUP:
                lr *= (step + 1) / WARMUP
            return lr, i
        start += length
    raise AssertionError


def edge_mask(cm: torch.Tensor) -> torch.Tensor:
    """Pixels (N, H, W) with a 4-neighbour of another class."""
    edge = torch.zeros_like(cm, dtype=torch.bool)
    dy = cm[:, 1:] != cm[:, :-1]
    dx = cm[:, :, 1:] != cm[:, :, :-1]
    edge[:, 1:] |= dy
    edge[:, :-1] |= dy
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    return edge


def batch(
    seed: int, step: int, size: int, edge_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    z = torch.randn(size, S.SCENES_NZ, 1, 1, generator=g)  # (N, nz, 1, 1)
    rgb, cm = S.render_latents(z.numpy())
    target = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, 64, 64)
    cm = torch.from_numpy(cm)
    weights = torch.tensor([CLASS_WEIGHTS[n] for n in S.CLASS_NAMES])[cm]
    if edge_weight != 1.0:
        weights = torch.where(edge_mask(cm), weights * edge_weight, weights)
    return z, target, weights[:, None]  # weights (N, 1, 64, 64)


@torch.no_grad()
def recalibrate_bn(net: torch.nn.Module, seed: int, batches: int = 100, size: int = 64) -> None:
    """Replace BN running stats by exact averages over fresh batches (for the final weights)."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    for i in range(batches):
        g = torch.Generator().manual_seed(seed * 7919 + 10_000_000 + i)
        net(torch.randn(size, S.SCENES_NZ, 1, 1, generator=g))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    net.eval()


def brief(report: dict) -> str:
    rules = " ".join(f"{k}={v['rate']:.3f}" for k, v in report["rules"].items())
    return (
        f"share={report['palette_share']:.4f} acc={report['pixel_accuracy']:.4f} "
        f"towers_agree={report['towers']['agree']:.3f} min_rule={report['min_rule_rate']:.3f} | {rules}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=11000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument(
        "--polish", type=int, default=0, help="extra L1-only cosine cycle after --steps"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--log", default="/tmp/scenes_train.log")
    ap.add_argument("--ckpt", default="/tmp/scenes_ckpt.pt")
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--out", default=str(S.WEIGHTS_PATH))
    ap.add_argument(
        "--finish-only",
        action="store_true",
        help="skip training: redo the final step (BN, choice, evaluation, export) from --ckpt",
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net = S.build_scenes_network()
    ema = copy.deepcopy(net).eval()
    opt = torch.optim.Adam(net.parameters(), lr=CYCLES[0][1])
    step, wall_before = 0, 0.0
    if os.path.exists(args.ckpt):
        ck = torch.load(args.ckpt, weights_only=True)
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step, wall_before = ck["step"], ck["wall"]
    n_params = sum(p.numel() for p in net.parameters())
    end = args.steps + args.polish
    if args.finish_only:
        if step != end:
            raise SystemExit(f"checkpoint is at step {step}, not the final step {end}")
        finish(net, ema, args, wall_before, n_params)
        return
    log = open(args.log, "a", buffering=1)
    print(f"start step={step} params={n_params} threads={args.threads} args={vars(args)}", file=log)

    t0 = time.time()
    run_l1 = run_total = 0.0
    net.train()
    while step < end:
        lr, cycle = lr_and_cycle(step, args.steps, args.polish)
        for group in opt.param_groups:
            group["lr"] = lr
        edge_weight = EDGE_WEIGHT if step >= EDGE_FROM * args.steps else 1.0
        z, target, w = batch(args.seed, step, args.batch, edge_weight)
        out = net(z)
        err = out - target
        l1 = (w * err.abs()).sum() / (w.sum() * 3)
        with_mse = 0 < cycle < len(CYCLES)
        loss = l1 + ((w * err.square()).sum() / (w.sum() * 3) if with_mse else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1 - args.ema)
            for be, b in zip(ema.buffers(), net.buffers(), strict=True):
                be.copy_(b)
        step += 1
        run_l1 += float(l1.detach())
        run_total += float(loss.detach())
        if step % 50 == 0:
            wall = wall_before + time.time() - t0
            print(
                f"step {step} lr {lr:.2e} l1 {run_l1 / 50:.4f} loss {run_total / 50:.4f} "
                f"wall {wall:.0f}s ({wall / step:.3f}s/step)",
                file=log,
            )
            run_l1 = run_total = 0.0
        if step % args.ckpt_every == 0 or step in (args.steps, end):
            wall = wall_before + time.time() - t0
            state = {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}
            torch.save({**state, "step": step, "wall": wall}, args.ckpt + ".tmp")
            os.replace(args.ckpt + ".tmp", args.ckpt)
        if step % args.eval_every == 0 and step < end:
            print(
                f"eval@{step} raw: {brief(S.evaluate_generator(net, n=100, seed0=VAL_SEED0))}",
                file=log,
            )
            net.train()
    train_wall = wall_before + time.time() - t0
    log.close()
    finish(net, ema, args, train_wall, n_params)


def finish(net, ema, args, train_wall: float, n_params: int) -> None:
    """Exact BN statistics; keep the better of raw and averaged weights on validation seeds;
    evaluate on the reported seeds; write weights and metadata."""
    log = open(args.log, "a", buffering=1)
    t_finish = time.time()
    candidates = {}
    for name, model in (("raw", net), ("ema", ema)):
        recalibrate_bn(model, args.seed)
        rep = S.evaluate_generator(model, n=200, seed0=VAL_SEED0)
        print(f"val {name}: {brief(rep)}", file=log)
        candidates[name] = (rep["min_rule_rate"] + rep["palette_share"], model)
    chosen = max(candidates, key=lambda k: candidates[k][0])
    final = candidates[chosen][1].eval()
    t_eval = time.time()
    report = S.evaluate_generator(final, n=500, seed0=EVAL_SEED0)
    print(f"final ({chosen}) eval n=500: {brief(report)} ({time.time() - t_eval:.0f}s)", file=log)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_state_dict(final, out)
    meta = {
        "model": "scenes",
        "nz": S.SCENES_NZ,
        "widths": list(S.WIDTHS),
        "params": n_params,
        "steps": args.steps,
        "polish_steps": args.polish,
        "polish_peak_lr": POLISH_PEAK,
        "batch": args.batch,
        "seed": args.seed,
        "threads": args.threads,
        "weights": chosen,
        "ema_decay": args.ema,
        "cycles": [list(c) for c in CYCLES],
        "class_weights": CLASS_WEIGHTS,
        "edge_weight": {"from_share": EDGE_FROM, "weight": EDGE_WEIGHT},
        "train_wall_s": round(train_wall, 1),
        "finish_wall_s": round(time.time() - t_finish, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "final_eval": report,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"saved {out} ({out.stat().st_size} bytes), train wall {train_wall:.0f}s", file=log)


if __name__ == "__main__":
    main()
