"""Patient-grouped stratified k-fold cross-validation, final fit on all data, reports and model export.

Used by ``napari-medai train steatosis``. Candidates compared under the same folds:

- ``glcm``: GLCM texture + first-order statistics of the liver crop, logistic regression;
- ``index``: log hepatorenal index alone, logistic regression (needs the index);
- ``index+glcm``: both (the paper's classical baseline with the index);
- ``index+echo``: log index + log mean liver grey level (liver and kidney echo levels apart);
- ``<deep>``: the texture network (``cnn`` or ``se-irv2``) on the crop alone;
- ``<deep>+index`` / ``<deep>+index+glcm``: the network fused with the index model (product of experts).

The default candidate is the one with the best mean balanced accuracy across folds (ties: AUC).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MedaiError
from . import metrics as M
from .data import SteatosisData
from .features import LinearClassifier, classical_features, feature_names

LICENCE = "CC BY 4.0 data (Byra et al. 2018, doi:10.5281/zenodo.1009146)"
INTENDED_USE = ("Research use only - not a medical device. Grades hepatic steatosis (S0-S3) from a liver ROI in a "
                "B-mode ultrasound frame, optionally with a kidney-cortex ROI for the hepatorenal index. "
                "Trained on 47 patients from one centre and one scanner; not validated elsewhere.")


def make_folds(grade, patient, n_folds: int = 5, seed: int = 0) -> list:
    """StratifiedGroupKFold over images grouped by patient; asserts no patient is in two folds."""
    from .._lazy import require

    StratifiedGroupKFold = require("sklearn.model_selection", "patient-grouped folds").StratifiedGroupKFold

    grade, patient = np.asarray(grade), np.asarray(patient)
    n_pat = len(np.unique(patient))
    if n_pat < n_folds:
        raise MedaiError(f"{n_pat} patients cannot fill {n_folds} folds; use --folds {max(2, n_pat)} or fewer")
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for tr, te in sgkf.split(np.zeros(len(grade)), grade, groups=patient):
        assert not set(patient[tr]) & set(patient[te]), "a patient is in both train and test"
        folds.append((tr, te))
    return folds


# ------------------------------------------------------------------------------------------------
# deep texture network


def train_net(crops, grade, arch: str, arch_params: dict, preprocess: str = "raw+clahe", epochs: int = 40,
              batch: int = 32, lr: float = 3e-3, seed: int = 0, should_stop=None,
              x_input: Optional[np.ndarray] = None) -> dict:
    """Train a texture network; returns its state dict (float32 CPU tensors).

    torch's thread count is left as the process has it (napari's process is shared): choose it with
    ``OMP_NUM_THREADS`` when you start your own training process.
    """
    return _train_net(crops, grade, arch, arch_params, preprocess, epochs, batch, lr, seed, should_stop, x_input)


def _train_net(crops, grade, arch, arch_params, preprocess, epochs, batch, lr, seed, should_stop, x_input):
    import torch
    import torch.nn.functional as F

    from ..augment import ultrasound_patches
    from ..runtime.progress import check_stop
    from .models import build
    from .preprocess import model_input, n_channels

    torch.manual_seed(seed)
    aug = ultrasound_patches(gain_channels=(0,) if "raw" in preprocess else None)
    rng = np.random.default_rng(seed)
    x = model_input(crops, preprocess) if x_input is None else x_input
    y = np.asarray(grade, np.int64)
    net = build(arch, in_channels=n_channels(preprocess), **dict(arch_params))
    counts = np.bincount(y, minlength=4).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / 4, 0.0)
    weight = torch.tensor(w, dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    steps = epochs * int(np.ceil(len(y) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    net.train()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch):
            check_stop(should_stop)
            idx = order[i:i + batch]
            # flip, shift up to 3 px (reflect padding), gain jitter on the raw channel (MONAI transforms)
            xb = aug(xt[idx], rng)
            loss = F.cross_entropy(net(xb), yt[idx], weight=weight, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


def net_proba(state, crops, arch, arch_params, preprocess, x_input=None) -> np.ndarray:
    """Grade probabilities ``(n, 4)`` of a texture network's state dict on ``crops``."""
    import torch

    from .models import build
    from .preprocess import model_input, n_channels

    net = build(arch, in_channels=n_channels(preprocess), **dict(arch_params))
    net.load_state_dict(state)
    net.eval()
    x = model_input(crops, preprocess) if x_input is None else x_input
    with torch.inference_mode():
        return torch.softmax(net(torch.from_numpy(x)), 1).numpy().astype(np.float64)


# ------------------------------------------------------------------------------------------------
# cross-validation


def poe(p_a, p_b, prior):
    """Product of experts: ``p ∝ p_a · p_b / prior``, row-normalised."""
    logp = np.log(np.clip(p_a, 1e-9, 1)) + np.log(np.clip(p_b, 1e-9, 1)) - np.log(prior)
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def cross_validate(data: SteatosisData, model_type: str = "cnn", n_folds: int = 5, seed: int = 0,
                   arch_params: Optional[dict] = None, preprocess: str = "raw+clahe", epochs: int = 40,
                   n_boot: int = 1000, log=print, should_stop=None) -> dict:
    """Patient-grouped K-fold CV of every candidate: fold spreads, pooled out-of-fold metrics and
    patient-bootstrap CIs."""
    from .models import DEFAULT_PARAMS

    folds = make_folds(data.grade, data.patient, n_folds, seed)
    deep = model_type in ("cnn", "se-irv2")
    arch_params = dict(arch_params or (DEFAULT_PARAMS.get(model_type, {}) if deep else {}))
    feats_glcm = classical_features(data.crops, None, "glcm")
    logh = np.log(np.clip(data.hri, 1e-3, None)).reshape(-1, 1) if data.has_index else None
    X = {"glcm": feats_glcm}
    if logh is not None:
        X["index"] = logh
        X["index+glcm"] = np.concatenate([feats_glcm, logh], axis=1)
        X["index+echo"] = classical_features(data.crops, data.hri, "index+echo")
    x_input = None
    if deep:
        from .preprocess import model_input

        x_input = model_input(data.crops, preprocess)
    n = len(data)
    oof = {}
    fold_rows = []
    t_start = time.perf_counter()
    for f, (tr, te) in enumerate(folds):
        t0 = time.perf_counter()
        prior = np.bincount(data.grade[tr], minlength=4) / len(tr)
        preds = {}
        for use, Xu in X.items():
            clf = LinearClassifier.fit(Xu[tr], data.grade[tr], feature_names(use))
            preds[use] = clf.predict_proba(Xu[te])
        if deep:
            state = train_net(None, data.grade[tr], model_type, arch_params, preprocess, epochs=epochs, seed=seed + f,
                              x_input=x_input[tr], should_stop=should_stop)
            p = net_proba(state, None, model_type, arch_params, preprocess, x_input=x_input[te])
            preds[model_type] = p
            for use in ("index", "index+glcm", "index+echo"):
                if use in preds:
                    preds[f"{model_type}+{use}"] = poe(p, preds[use], prior)
        preds["glcm+index (fused)"] = poe(preds["glcm"], preds["index"], prior) if "index" in preds else None
        preds = {k: v for k, v in preds.items() if v is not None}
        for k, v in preds.items():
            oof.setdefault(k, np.zeros((n, 4)))[te] = v
        fold_rows.append({"fold": f, "test_patients": sorted(set(map(str, data.patient[te]))),
                          "test_grades": np.bincount(data.grade[te], minlength=4).tolist(),
                          "summaries": {k: M.summary(data.grade[te], v) for k, v in preds.items()},
                          "seconds": round(time.perf_counter() - t0, 1)})
        log(f"fold {f + 1}/{n_folds}: " + ", ".join(
            f"{k} bAcc {fold_rows[-1]['summaries'][k]['balanced_accuracy']:.2f}" for k in preds) +
            f" ({time.perf_counter() - t0:.0f} s)")
    candidates = {}
    for k, p in oof.items():
        yp, Pp, _ = M.patient_level(data.grade, p, data.patient)
        candidates[k] = {
            "pooled": M.summary(data.grade, p),
            "folds": M.fold_spread([r["summaries"][k] for r in fold_rows]),
            "ci95_patient_bootstrap": M.patient_bootstrap(data.grade, p, data.patient, n_boot=n_boot, seed=seed),
            "patient_level": M.summary(yp, Pp),
        }
    def score(k):
        f = candidates[k]["folds"]
        return (f["balanced_accuracy"]["mean"] or 0, f["steatosis_auc"]["mean"] or 0)
    selectable = [k for k in candidates if k != "glcm+index (fused)"]
    best = max(selectable, key=score)
    best_texture = max([k for k in selectable if "index" not in k], key=score)
    return {
        "data": data.describe(), "model_type": model_type, "folds": n_folds, "seed": seed,
        "arch_params": arch_params if deep else None, "preprocess": preprocess if deep else None,
        "epochs": epochs if deep else None, "fold_details": [{k: v for k,
                                                              v in r.items() if k != "summaries"} for r in fold_rows],
        "candidates": candidates, "selected": best, "selected_without_index": best_texture,
        "selection_rule": "highest mean balanced accuracy across folds (ties: steatosis AUC); selecting among "
                          "candidates on the same folds is optimistic",
        "seconds": round(time.perf_counter() - t_start, 1),
        "_oof": oof,
    }


# ------------------------------------------------------------------------------------------------
# reports


#: how every report and model card states its figures (one SD convention: sample SD, ddof=1)
CELLS = ("fold mean ± SD across folds (sample SD, ddof=1) · pooled out-of-fold value [95 % CI, patient bootstrap "
         "of the pooled out-of-fold predictions]")


def _fmt(folds, ci, key, pooled=None):
    """``mean ± SD · pooled [CI]`` of one metric (see :data:`CELLS`)."""
    f = folds[key]
    lo, hi = ci.get(key, [None, None])
    if f["mean"] is None:
        return "n/a"
    sd = f"{f['sd']:.3f}" if f["sd"] is not None else "-"
    text = f"{f['mean']:.3f} ± {sd}"
    if pooled is not None and pooled.get(key) is not None:
        text += f" · {pooled[key]:.3f}"
    return f"{text} [{lo:.3f}, {hi:.3f}]" if lo is not None else text


def write_report(result: dict, out: Path, data: SteatosisData) -> dict:
    """Write ``report.json``, ``report.md`` and ``confusion.png`` of a :func:`cross_validate` result into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.pop("_oof", None)  # out-of-fold predictions are not part of the JSON report
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    lines = ["# Steatosis grading: patient-grouped cross-validation", "",
             "Research use only - not a medical device.", "",
             f"Data: {result['data']['images']} images of {result['data']['patients']} patients "
             f"({result['data']['patients_per_grade']}), source `{result['data']['source']}`.",
             f"{result['folds']}-fold StratifiedGroupKFold by patient (seed {result['seed']}); "
             "no patient in two folds.",
             f"Cells: {CELLS}. "
             "Image level (every frame counts); ACC/SE/SP one-vs-rest, macro over grades.", "",
             "| candidate | balanced acc | steatosis AUC (S>=1) | macro ACC | macro SE | macro SP "
             "| patient-level bAcc |",
             "|---|---|---|---|---|---|---|"]
    for k, c in result["candidates"].items():
        mark = " **(selected)**" if k == result["selected"] else ""
        cells = [_fmt(c["folds"], c["ci95_patient_bootstrap"], key, c["pooled"])
                 for key in ("balanced_accuracy", "steatosis_auc", "macro_acc", "macro_se", "macro_sp")]
        lines.append(f"| {k}{mark} | {' | '.join(cells)} | "
                     f"{c['patient_level']['balanced_accuracy']:.3f} |")
    sel = result["candidates"][result["selected"]]
    lines += ["", f"Selected: `{result['selected']}` ({result['selection_rule']}). "
              f"Without a kidney ROI the best is `{result['selected_without_index']}`.", "",
              "Per grade (selected, pooled out-of-fold, one-vs-rest):", "", "| grade | ACC | SE | SP |",
              "|---|---|---|---|"]
    for g, v in sel["pooled"]["per_class"].items():
        lines.append(f"| {g} | {v['acc']:.3f} | {v['se']:.3f} | {v['sp']:.3f} |")
    lines += ["", "Confusion matrix (rows true S0..S3, columns predicted):", "", "```"]
    lines += [" ".join(f"{v:4d}" for v in row) for row in sel["pooled"]["confusion"]]
    lines += ["```", "", "![confusion](confusion.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    _confusion_png(sel["pooled"]["confusion"], out / "confusion.png", result["selected"])
    return result


def _confusion_png(cm, path, title):
    from .._lazy import require

    # a Figure of its own, no pyplot: matplotlib's backend and pyplot state stay as the user set them
    Figure = require("matplotlib.figure", "the confusion-matrix figure").Figure

    cm = np.asarray(cm)
    fig = Figure(figsize=(4, 3.6), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    for i in range(4):
        for j in range(4):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black" if cm[i,
                                                                                       j] < cm.max() / 2 else "white")
    ax.set_xticks(range(4), [f"S{i}" for i in range(4)])
    ax.set_yticks(range(4), [f"S{i}" for i in range(4)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (out-of-fold)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


# ------------------------------------------------------------------------------------------------
# final model


def fit_final(data: SteatosisData, candidate: str, texture_candidate: str, arch_params: dict, preprocess: str,
              epochs: int, seed: int = 0):
    """Fit on all data -> (spec dict, tensors dict or None).

    ``candidate``: the CV winner when a kidney ROI (index) is available; ``texture_candidate``: the CV
    winner on the liver crop alone, used when no kidney ROI is drawn. ``cnn+index`` style candidates fuse
    the network with the index model (product of experts); ``index`` / ``index+glcm`` replace it.
    """
    prior = (np.bincount(data.grade, minlength=4) / len(data)).tolist()
    spec = {"prior": prior, "texture": None, "index": None, "combine": "poe"}
    tensors = None
    tex = texture_candidate
    index_use = None
    if "index" in candidate:
        head, _, rest = candidate.partition("+")
        if head in ("cnn", "se-irv2"):
            tex, index_use, spec["combine"] = head, rest, "poe"
        else:
            index_use, spec["combine"] = candidate, "replace"
    if tex in ("cnn", "se-irv2"):
        state = train_net(data.crops, data.grade, tex, arch_params, preprocess, epochs=epochs, seed=seed)
        spec["texture"] = {"kind": tex, "arch_params": arch_params, "preprocess": preprocess}
        tensors = {f"texture.{k}": v for k, v in state.items()}
    else:
        clf = LinearClassifier.fit(classical_features(data.crops, None, "glcm"), data.grade, feature_names("glcm"))
        spec["texture"] = {"kind": "linear", "use": "glcm", "classifier": clf.to_dict()}
    if index_use:
        if not data.has_index:
            raise MedaiError("the candidate needs the hepatorenal index but the data have none")
        clf = LinearClassifier.fit(classical_features(data.crops, data.hri, index_use), data.grade,
                                   feature_names(index_use))
        spec["index"] = {"use": index_use, "classifier": clf.to_dict()}
    return spec, tensors


def _headline(c: dict) -> dict:
    keys = ("balanced_accuracy", "steatosis_auc", "macro_acc", "macro_se", "macro_sp", "accuracy")
    return {k: {"mean": c["folds"][k]["mean"], "sd": c["folds"][k]["sd"], "pooled": c["pooled"][k],
                "ci95": c["ci95_patient_bootstrap"][k]} for k in keys}


def export_model(out_dir: Path, name: str, spec: dict, tensors: Optional[dict], result: dict, candidate: str,
                 texture_candidate: Optional[str] = None, version: str = "1.0") -> Path:
    """Write card.json + weights (safetensors, or model.json for classical) + MODEL_CARD.md."""
    from ..runtime.registry import sha256_of

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tensors is not None:
        from safetensors.torch import save_file

        weights = "weights.safetensors"
        save_file(tensors, str(out_dir / weights), metadata={"name": name})
        arch_params = spec
    else:
        weights = "model.json"
        (out_dir / weights).write_text(json.dumps(spec, indent=1))
        arch_params = {"prior": spec["prior"], "combine": spec["combine"],
                       "texture": {"kind": spec["texture"]["kind"], "use": spec["texture"].get("use")},
                       "index": {"use": spec["index"]["use"]} if spec["index"] else None,
                       "coefficients": "in model.json"}
    cands = result["candidates"]
    metrics = {"protocol": f"{result['folds']}-fold StratifiedGroupKFold by patient, image level, mean/SD across folds "
                           "(sample SD, ddof=1), pooled = the metric on all out-of-fold predictions together, "
                           "95% CI by patient bootstrap (1000 resamples) of pooled out-of-fold predictions",
               "with_kidney_roi": {"candidate": candidate, **_headline(cands[candidate])},
               "without_kidney_roi": {"candidate": texture_candidate or candidate,
                                      **_headline(cands[texture_candidate or candidate])},
               "all_candidates_and_baselines": {k: _headline(v) for k, v in cands.items()}}
    texture_kind = spec["texture"]["kind"] if spec["texture"] else None
    arch = {"se-irv2": "SE-Inception-ResNet-v2 (multi-level fusion A+SE-B+SE-C)", "cnn": "compact CNN",
            "linear": "GLCM texture + logistic regression"}.get(texture_kind, "hepatorenal index logistic regression")
    if spec.get("index") and spec["combine"] == "poe":
        arch += f" fused (product of experts) with logistic regression on {spec['index']['use']}"
    elif spec.get("index"):
        arch = (f"logistic regression on {spec['index']['use']} (hepatorenal index) when a kidney ROI is given; "
                f"{arch} on the liver crop alone otherwise")
    card = {
        "name": name, "version": version, "task": "steatosis", "architecture": arch, "arch_params": arch_params,
        "input_spec": {"crop": [28, 28], "grey_levels": "0-255 B-mode (RGB -> luminance)",
                       "preprocess": spec["texture"].get("preprocess", "glcm") if spec["texture"] else None,
                       "roi": "liver parenchyma ROI (x, y, w, h) or mask; "
                       "optional kidney-cortex ROI for the hepatorenal index",
                       "patches": "28x28 tiles (stride 14) over the ROI, probabilities averaged"},
        "training_data": {"source": "Byra et al. 2018 liver B-mode data set (shared 28x28 liver ROI crops)",
                          **result["data"]},
        "metrics": metrics, "licence": LICENCE, "intended_use": INTENDED_USE, "weights": weights,
        "sha256": sha256_of(out_dir / weights),
        "notes": "Paper figures (ACC 0.979, SE 0.976, SP 0.937; SE-Inception-ResNet-v2, 550 images) are the paper's, "
                 "on the paper's data with image-level splits; the numbers here are patient-level CV on 47 patients.",
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2, default=float))
    (out_dir / "MODEL_CARD.md").write_text(model_card_md(card, result, candidate))
    return out_dir


def model_card_md(card: dict, result: dict, candidate: str) -> str:
    """The ``MODEL_CARD.md`` text of an exported model (fold means beside pooled figures)."""
    rows = ["| model | balanced acc | steatosis AUC | macro ACC | macro SE | macro SP |", "|---|---|---|---|---|---|"]
    for k, c in result["candidates"].items():
        ci = c["ci95_patient_bootstrap"]
        without = card["metrics"]["without_kidney_roi"]["candidate"]
        tag = (" (this model, with kidney ROI)" if k == candidate
               else " (this model, liver ROI only)" if k == without else "")
        rows.append(f"| {k}{tag} | " + " | ".join(
            _fmt(c["folds"], ci, key, c["pooled"]) for key in ("balanced_accuracy", "steatosis_auc", "macro_acc",
                                                               "macro_se", "macro_sp")) + " |")
    return "\n".join([
        f"# {card['name']} (v{card['version']})", "",
        "**Research use only - not a medical device.**", "",
        "Task: hepatic steatosis grade S0 normal / S1 mild / S2 moderate / S3 severe from B-mode ultrasound.", "",
        f"Architecture: {card['architecture']}.", "",
        f"Training data: {card['training_data']['images']} liver ROI crops of "
        f"{card['training_data']['patients']} patients "
        f"({card['training_data']['patients_per_grade']}), Byra et al. 2018. Licence: {card['licence']}.", "",
        "## Cross-validated performance (patient-grouped, image level)", "",
        f"Cells: {CELLS}. Read both: the pooled figure can be below the fold mean.", "", *rows, "",
        "The method paper's figures (ACC 0.979, SE 0.976, SP 0.937) are the paper's, on its 550 images with "
        "image-level splits, which leak frames of one patient into train and test; "
        "they are not comparable with the numbers above.", "",
        "## Intended use and limits", "", card["intended_use"], "",
        "- Needs a liver-parenchyma ROI; without one, the whole sector is tiled and the grade is unreliable.",
        "- S2 (6 patients) and S3 (8) are rare in training; mild/moderate/severe are often confused.",
        "- Intensity-based: scanner gain and depth change the grey levels; the hepatorenal index (kidney ROI) "
        "is the more robust signal.", ""])
