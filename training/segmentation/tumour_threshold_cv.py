"""Tumour threshold study on the CV folds (cascade organ v1 + tumour v3): tumour where the tumour
network's share q = p(tumour) / (p(liver) + p(tumour)) exceeds tau inside the organ region (shipped: 0.5),
with tau chosen per fold on the other three folds.

  PYTHONPATH=src python training/segmentation/tumour_threshold_cv.py
"""
import json, sys
from pathlib import Path
import numpy as np, torch
HERE = Path(__file__).resolve().parent; sys.path.insert(0, str(HERE))
from train2d import dice
from safetensors.torch import load_file
from napari_medai.segmentation.networks import build_network
torch.set_num_threads(1)
d = np.load(HERE / "cache" / "lits_128.npz"); x, y, vol = d["x"], d["y"], d["vol"]
unet = {"arch": "unet2d", "in_channels": 1, "out_channels": 3, "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}
taus = [0.2, 0.3, 0.4, 0.5, 0.6]
tab = {}
for k in range(4):
    run = HERE / "runs" / f"v3_fold{k}"; meta = json.loads((run / "result.json").read_text())
    va = np.isin(vol, meta["val_volumes"])
    net = build_network({"arch": "cascade2d", "organ": unet, "tumour": unet, "region": "organ"})
    net.organ.load_state_dict(load_file(str(HERE / "runs" / f"v1_fold{k}" / "weights.safetensors")))
    net.tumour.load_state_dict(load_file(str(run / "weights.safetensors"))); net.eval()
    with torch.no_grad():
        s = torch.cat([net(torch.from_numpy(x[va][i:i+32, None])) for i in range(0, int(va.sum()), 32)])
    p = torch.softmax(s, 1).numpy(); organ = p[:, 0] < 0.5; q = p[:, 2] / (p[:, 1] + p[:, 2] + 1e-9)
    gt = y[va]
    for t in taus:
        tab[(k, t)] = dice(organ & (q > t), gt == 2)
    print(k, [round(tab[(k, t)], 3) for t in taus], flush=True)
print("mean", [round(np.mean([tab[(k, t)] for k in range(4)]), 4) for t in taus])
for k in range(4):
    best = max(taus, key=lambda t: np.mean([tab[(j, t)] for j in range(4) if j != k]))
    print("fold", k, "tau chosen on the others", best, "dice", round(tab[(k, best)], 3))
