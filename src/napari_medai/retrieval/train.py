"""Training the case embedder (imports torch: load lazily).

The multi-scale residual CNN is trained on the case labels with cross-entropy (the paper's
approach: the penultimate layer becomes the descriptor) plus a supervised contrastive loss on the
L2-normalised descriptor (metric learning: same-label cases pulled together).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime.progress import check_stop
from ._net import build_net
from .embedder import descriptor_dim

DEFAULT_ARCH = {"widths": [16, 32, 64, 128, 192], "embed_dim": 128, "in_ch": 1, "dropout": 0.2}


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random flip, rotation +-15 deg, scale 0.85-1.15, shift +-8 %, gamma / contrast jitter."""
    n = x.shape[0]

    def r(*s):
        return torch.rand(*s, generator=g)

    ang = (r(n) * 2 - 1) * math.radians(15)
    sc = 1 / (0.85 + 0.3 * r(n))
    flip = torch.where(r(n) < 0.5, -1.0, 1.0)
    tx, ty = (r(n) * 2 - 1) * 0.08, (r(n) * 2 - 1) * 0.08
    cos, sin = torch.cos(ang) * sc, torch.sin(ang) * sc
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp((r(n) * 2 - 1) * 0.35).view(n, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    contrast = (0.8 + 0.4 * r(n)).view(n, 1, 1, 1)
    bright = ((r(n) * 2 - 1) * 0.08).view(n, 1, 1, 1)
    return (x * contrast + bright).clamp(0, 1)


def supcon_loss(z: torch.Tensor, y: torch.Tensor, t: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), single view; z is L2-normalised."""
    sim = z @ z.T / t
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    logprob = sim - torch.logsumexp(sim, 1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~eye
    npos = pos.sum(1)
    keep = npos > 0
    return (-(logprob * pos).sum(1)[keep] / npos[keep]).mean()


@torch.inference_mode()
def embed_array(net, x: np.ndarray, bs: int = 256, tta: bool = False, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Descriptors and class probabilities of prepared images (n, s, s) in [0, 1]."""
    net.eval()
    zs, ps = [], []
    for s in range(0, len(x), bs):
        xb = torch.from_numpy(np.asarray(x[s : s + bs], np.float32))[:, None].to(device)
        z, logits = net(xb)
        if tta:
            z2, l2 = net(torch.flip(xb, dims=[3]))
            z = F.normalize(z + z2, dim=1)
            logits = (logits + l2) / 2
        zs.append(z.float().cpu().numpy())
        ps.append(logits.softmax(1).float().cpu().numpy())
    return np.concatenate(zs), np.concatenate(ps)


def _bf16_ok(dev) -> bool:
    if dev.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except Exception:  # noqa: BLE001 - private API, absent on some builds
            return False
    return False


def train_embedder(
    x: np.ndarray,
    y: Sequence[int],
    *,
    n_classes: int,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    loss: str = "ce+supcon",
    supcon_weight: float = 1.0,
    instance_weight: float = 0.0,
    arch: Optional[dict] = None,
    seed: int = 0,
    threads: Optional[int] = None,
    device: str = "auto",
    max_minutes: float = 0,
    mixed_precision: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    log: Optional[Callable[[dict], None]] = None,
):
    """Train the embedder on prepared images x (n, s, s) float in [0, 1] with integer labels y.

    ``instance_weight`` > 0 adds a label-free instance-contrastive term (SimCLR's NT-Xent: two augmented
    views of each image are each other's only positive), so that the descriptor keeps appearance that the
    labels do not ask for; every batch then goes through the network twice as large.

    Returns (net, arch dict, history list)."""
    from ..runtime.device import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    choice = resolve_device(device)
    dev = choice.torch
    arch = {**DEFAULT_ARCH, **(arch or {}), "n_classes": int(n_classes)}
    net = build_net(arch).to(dev).to(memory_format=torch.channels_last)
    use_bf16 = mixed_precision and _bf16_ok(dev)
    y = np.asarray(y, np.int64)
    xt = torch.from_numpy(np.asarray(x, np.float32))[:, None]
    yt = torch.from_numpy(y)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    steps = math.ceil(len(y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps), pct_start=0.15)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    cw = torch.tensor(len(y) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32, device=dev)
    parts = loss.split("+")
    history = []
    t0 = time.time()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(y), generator=g)
        tl = tc = 0.0
        nb = 0
        for s in range(0, len(perm), batch_size):
            check_stop(should_stop)
            idx = perm[s : s + batch_size]
            if len(idx) < 8:
                continue
            xb = augment(xt[idx], g)
            yb = yt[idx].to(dev)
            if instance_weight > 0:  # second view of the same images
                xb, yb = torch.cat([xb, augment(xt[idx], g)]), torch.cat([yb, yb])
            xb = xb.to(dev).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                z, logits = net(xb)
            z, logits = z.float(), logits.float()
            total = torch.zeros((), device=dev)
            if "ce" in parts:
                total = total + F.cross_entropy(logits, yb, weight=cw, label_smoothing=0.1)
            if "supcon" in parts:
                total = total + supcon_weight * supcon_loss(z, yb)
            if instance_weight > 0:
                views = torch.arange(len(idx), device=dev).repeat(2)
                total = total + instance_weight * supcon_loss(z, views)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            tl += float(total.detach())
            tc += float((logits.argmax(1) == yb).float().mean())
            nb += 1
            if progress is not None:
                progress(ep * steps + s // batch_size + 1, epochs * steps)
        rec = {"epoch": ep + 1, "loss": tl / max(nb, 1), "train_acc": tc / max(nb, 1), "minutes": (time.time() - t0) / 60}
        history.append(rec)
        if log is not None:
            log(rec)
        if max_minutes and rec["minutes"] > max_minutes and ep + 1 < epochs:
            break
    net = net.eval().cpu().to(memory_format=torch.contiguous_format)
    return net, arch, history


def export_embedder(
    net,
    arch: dict,
    out: "str | Path",
    *,
    classes: Sequence[str],
    size: int,
    training_data: str,
    notes: str = "",
    metrics: Optional[dict] = None,
    licence: str = "",
    version: str = "1.0.0",
) -> Path:
    """Write model.safetensors + card.json (registry format, task "embedding") into ``out``."""
    from safetensors.torch import save_file

    from ..runtime.registry import sha256_of

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    descriptor = f"L2-normalised penultimate layer, {descriptor_dim(arch)}-d"
    if arch.get("members", 1) > 1:
        descriptor += f" ({arch['members']} networks' {arch['embed_dim']}-d layers concatenated)"
    if arch.get("member_sizes"):
        descriptor += "; member input sizes " + "/".join(str(s) for s in arch["member_sizes"]) + " px, area-resized from size"
    wfile = out / "model.safetensors"
    save_file(state, str(wfile), metadata={"name": out.name})
    wfile.chmod(0o644)
    card = {
        "name": out.name,
        "version": version,
        "task": "embedding",
        "architecture": "msrnet: multi-scale residual CNN (napari_medai.retrieval._net)",
        "arch_params": arch,
        "input_spec": {
            "channels": 1,
            "size": int(size),
            "preprocess": "grayscale -> percentile 0.5/99.5 to [0,1] -> pad to square -> area resize to size",
            "classes": list(classes),
            "descriptor": descriptor + "; Euclidean distance",
        },
        "training_data": training_data,
        "metrics": metrics or {},
        "licence": licence,
        "intended_use": "Research use only - not a medical device. Nearest-case retrieval (image similarity) for research.",
        "weights": wfile.name,
        "sha256": sha256_of(wfile),
        "notes": notes,
    }
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return out


def merge_embedders(folders: Sequence["str | Path"], out: "str | Path") -> Path:
    """One ensemble embedder from exported ones (same architecture; seeds and input sizes may differ):
    the merged network runs every member and concatenates their L2-normalised descriptors,
    re-normalised (arch param ``members``). With different input sizes it takes images prepared at the
    largest and area-resizes them for the others (arch param ``member_sizes``). Writes
    model.safetensors + card.json into ``out``."""
    from safetensors.torch import load_file

    from ._net import MSRNetEnsemble

    folders = [Path(f) for f in folders]
    cards = [json.loads((f / "card.json").read_text()) for f in folders]
    first = cards[0]
    arch = first["arch_params"]

    def input_except_size(card):
        return {k: v for k, v in card["input_spec"].items() if k != "size"}

    if len(cards) < 2 or any(
        c["arch_params"] != arch or input_except_size(c) != input_except_size(first) for c in cards
    ):
        raise ValueError("merge needs two or more embedders with the same architecture and input (seeds and input sizes may differ)")
    nets = []
    for folder, card in zip(folders, cards):
        net = build_net(arch)
        net.load_state_dict(load_file(str(folder / card["weights"])))
        nets.append(net.eval())
    sizes = [int(c["input_spec"]["size"]) for c in cards]
    merged_arch = {**arch, "members": len(nets)}
    how = "different seeds"
    if len(set(sizes)) > 1:
        merged_arch["member_sizes"] = sizes
        how = "different seeds or input sizes (" + ", ".join(f"{s} px" for s in sizes) + ")"
    return export_embedder(
        MSRNetEnsemble(nets, merged_arch.get("member_sizes")), merged_arch, out,
        classes=first["input_spec"]["classes"], size=max(sizes), training_data=first["training_data"],
        licence=first.get("licence", ""), version=first.get("version", "1.0.0"),
        notes=f"{len(nets)} networks trained alike with {how}, descriptors concatenated; members: "
        + " | ".join(c.get("notes", "") for c in cards),
    )
