"""Training the case embedder (imports torch: load lazily).

The multi-scale residual CNN is trained on the case labels with cross-entropy (the paper's
approach: the penultimate layer becomes the descriptor) plus a supervised contrastive loss on the
L2-normalised descriptor (metric learning: same-label cases pulled together).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..augment import RETRIEVAL
from ..errors import MedaiError
from ..runtime.progress import check_stop
from ._net import build_net
from .embedder import descriptor_dim

DEFAULT_ARCH = {"widths": [16, 32, 64, 128, 192], "embed_dim": 128, "in_ch": 1, "dropout": 0.2}


def supcon_loss(
    z: torch.Tensor, y: torch.Tensor, t: float = 0.1, coarse: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), single view; z is L2-normalised.

    With ``coarse`` (a coarse label per item), a fine label of -1 means "type unknown within its coarse
    group": two such items of one coarse group are positives; an unknown-type item and a typed item of
    the same coarse group are neither positive nor negative (left out of each other's denominator);
    items of different coarse groups are negatives."""
    sim = z @ z.T / t
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    ignore = eye
    if coarse is not None:
        unknown = y < 0
        same_coarse = coarse[:, None] == coarse[None, :]
        ignore = eye | (same_coarse & (unknown[:, None] ^ unknown[None, :]))
    sim = sim.masked_fill(ignore, -1e9)
    logprob = sim - torch.logsumexp(sim, 1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~ignore
    if coarse is not None:
        pos &= same_coarse
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


def _class_weights(y: np.ndarray, sample_weight: np.ndarray, n_classes: int, cap: float = 3.0) -> np.ndarray:
    """Inverse class frequency as drawn (counts weighted by the sampling weights), capped at ``cap``: with
    label smoothing, a huge weight on a rare class pulls every image's prediction towards it."""
    eff = np.bincount(y, weights=sample_weight, minlength=n_classes)
    eff = eff / max(eff.sum(), 1e-12) * len(y)
    return np.minimum(len(y) / (n_classes * np.maximum(eff, 1)), cap)


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
    device: str = "auto",
    max_minutes: float = 0,
    mixed_precision: bool = True,
    augmentation: str = "standard",
    y_coarse: Optional[Sequence[int]] = None,
    coarse_weight: float = 0.5,
    sample_weight: Optional[Sequence[float]] = None,
    checkpoint: str | Path | None = None,
    progress: Optional[Callable[[int, int], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    log: Optional[Callable[[dict], None]] = None,
):
    """Train the embedder on prepared images x (n, s, s) float in [0, 1] with integer labels y.

    ``instance_weight`` > 0 adds a label-free instance-contrastive term (SimCLR's NT-Xent: two augmented
    views of each image are each other's only positive), so that the descriptor keeps appearance that the
    labels do not ask for; every batch then goes through the network twice as large.

    Multi-source training: ``y`` may hold -1 (tumour type unknown) when ``y_coarse`` (e.g. 0 no tumour,
    1 tumour) is given for every image; the class head ignores those images, a coarse head (a linear layer
    on the descriptor, used in training only and not exported) is trained on ``y_coarse`` with weight
    ``coarse_weight``, and the supervised contrastive loss uses the coarse groups (see ``supcon_loss``).
    ``augmentation``: "standard" (:func:`napari_medai.augment.mri_standard`, the shipped recipe) or "strong"
    (:func:`napari_medai.augment.mri_strong`: adds bias field, noise, blur and resolution loss for other
    scanners).
    ``sample_weight`` draws each epoch's images with replacement in proportion to it (same epoch size).
    ``checkpoint``: a file written after every epoch; when it exists, training resumes from it.

    Returns (net, arch dict, history list)."""
    from ..runtime.device import resolve_device

    if int(n_classes) < 2 and y_coarse is None:
        raise MedaiError(f"{n_classes} label(s) in the cases; training an embedder needs at least two classes "
                         "(one sub-folder per class, or a CSV label column with two or more values)")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    choice = resolve_device(device)
    dev = choice.torch
    arch = {**DEFAULT_ARCH, **(arch or {}), "n_classes": int(n_classes)}
    net = build_net(arch).to(dev).to(memory_format=torch.channels_last)
    use_bf16 = mixed_precision and _bf16_ok(dev)
    y = np.asarray(y, np.int64)
    if (y < 0).any() and y_coarse is None:
        raise ValueError("labels of -1 (type unknown) need y_coarse")
    aug = RETRIEVAL[augmentation]()  # MONAI transforms, seeded from g once per batch
    xt = torch.from_numpy(np.asarray(x, np.float32))[:, None]
    yt = torch.from_numpy(y)
    ct = None if y_coarse is None else torch.from_numpy(np.asarray(y_coarse, np.int64))
    coarse_head = None
    params = list(net.parameters())
    if ct is not None:
        coarse_head = torch.nn.Linear(int(arch["embed_dim"]), int(ct.max()) + 1).to(dev)
        params += list(coarse_head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    steps = math.ceil(len(y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps), pct_start=0.15)
    known = y >= 0
    sw_np = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    cw = torch.tensor(_class_weights(y[known], sw_np[known], n_classes), dtype=torch.float32, device=dev)
    if ct is not None:
        ccw = torch.tensor(_class_weights(ct.numpy(), sw_np, int(ct.max()) + 1), dtype=torch.float32, device=dev)
    sw = None if sample_weight is None else torch.as_tensor(sw_np)
    parts = loss.split("+")
    history = []
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=False)  # our own file, written below
        if state.get("epochs") != epochs or state.get("n") != len(y):
            raise ValueError(
                f"checkpoint {ckpt} is of another training ({state.get('epochs')} epochs, {state.get('n')} images)"
            )
        net.load_state_dict(state["net"])
        if coarse_head is not None:
            coarse_head.load_state_dict(state["coarse_head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        history, start = state["history"], len(state["history"])
    t0 = time.time() - (history[-1]["minutes"] * 60 if history else 0)
    for ep in range(start, epochs):
        net.train()
        perm = torch.randperm(len(y), generator=g) if sw is None else torch.multinomial(sw, len(y), True, generator=g)
        tl = tc = 0.0
        nb = 0
        for s in range(0, len(perm), batch_size):
            check_stop(should_stop)
            idx = perm[s : s + batch_size]
            if len(idx) < 8:
                continue
            xb = aug(xt[idx], g)
            yb = yt[idx].to(dev)
            cb = None if ct is None else ct[idx].to(dev)
            if instance_weight > 0:  # second view of the same images
                xb, yb = torch.cat([xb, aug(xt[idx], g)]), torch.cat([yb, yb])
                cb = None if cb is None else torch.cat([cb, cb])
            xb = xb.to(dev).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                z, logits = net(xb)
            z, logits = z.float(), logits.float()
            total = torch.zeros((), device=dev)
            if "ce" in parts and bool((yb >= 0).any()):
                total = total + F.cross_entropy(logits, yb, weight=cw, label_smoothing=0.1, ignore_index=-1)
            if coarse_head is not None:
                total = total + coarse_weight * F.cross_entropy(coarse_head(z), cb, weight=ccw, label_smoothing=0.1)
            if "supcon" in parts:
                total = total + supcon_weight * supcon_loss(z, yb, coarse=cb)
            if instance_weight > 0:
                views = torch.arange(len(idx), device=dev).repeat(2)
                total = total + instance_weight * supcon_loss(z, views)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            tl += float(total.detach())
            kb = yb >= 0
            tc += float((logits.argmax(1)[kb] == yb[kb]).float().mean()) if bool(kb.any()) else 0.0
            nb += 1
            if progress is not None:
                progress(ep * steps + s // batch_size + 1, epochs * steps)
        rec = {"epoch": ep + 1, "loss": tl / max(nb, 1), "train_acc": tc / max(nb, 1),
               "minutes": (time.time() - t0) / 60}
        history.append(rec)
        if log is not None:
            log(rec)
        if ckpt is not None:
            tmp = ckpt.with_name(ckpt.name + ".tmp")
            head_state = None if coarse_head is None else coarse_head.state_dict()
            torch.save({"net": net.state_dict(), "coarse_head": head_state,
                        "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": g.get_state(),
                        "torch_rng": torch.get_rng_state(), "history": history,
                        "epochs": epochs, "n": len(y)}, tmp)
            tmp.replace(ckpt)
        if max_minutes and rec["minutes"] > max_minutes and ep + 1 < epochs:
            break
    net = net.eval().cpu().to(memory_format=torch.contiguous_format)
    return net, arch, history


def export_embedder(
    net,
    arch: dict,
    out: str | Path,
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
        descriptor += (
            "; member input sizes " + "/".join(str(s) for s in arch["member_sizes"]) + " px, area-resized from size"
        )
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
        "intended_use": (
            "Research use only - not a medical device. Nearest-case retrieval (image similarity) for research."
        ),
        "weights": wfile.name,
        "sha256": sha256_of(wfile),
        "notes": notes,
    }
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return out


def merge_embedders(folders: Sequence[str | Path], out: str | Path) -> Path:
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
        raise ValueError(
            "merge needs two or more embedders with the same architecture and input (seeds and input sizes may differ)"
        )
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
