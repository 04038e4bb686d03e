"""MONAI bundles run as ``python -m monai.bundle run`` runs them (issue #14).

Small bundles are written here (3-D as JSON and YAML, 2-D, TorchScript), given weights trained for a few
seconds on a real CT (TotalSegmentator example, liver label), run with MONAI's own runner (its
LoadImaged / SaveImaged) and with napari-medai, and compared: Dice and the output's shape and affine.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_medai.errors import MedaiError

CROP_LIVER = 5  # liver in TotalSegmentator's multi-label example_seg
WINDOW = {"a_min": -200, "a_max": 250, "b_min": 0.0, "b_max": 1.0, "clip": True}
NET3 = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16],
        "strides": [2, 2], "num_res_units": 0}
PIXDIM = [6.0, 6.0, 5.0]
STEPS = 20  # optimiser steps (seconds on 2 cores); enough for a liver-shaped output
NET2 = {**NET3, "spatial_dims": 2}
NAMES = {"0": "background", "1": "liver"}


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


# ---------------------------------------------------------------------------------------- bundles
def _post(save=True):
    transforms = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    if save:
        transforms.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
                           "output_postfix": "seg",
                           "resample": False, "separate_folder": False, "print_log": False})
    return {"_target_": "Compose", "transforms": transforms}


def config_3d(torchscript=False):
    config = {
        "imports": ["$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": [],
        "device": "$torch.device('cpu')",
        "network_def": NET3,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": PIXDIM, "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", **WINDOW},
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [48, 48, 16], "sw_batch_size": 4, "overlap": 0.25},
        "postprocessing": _post(),
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers"},
        "run": ["$@evaluator.run()"],
    }
    if torchscript:
        del config["network_def"]
        config["network"] = "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)"
        config["evaluator"]["val_handlers"] = []
        del config["handlers"]
    return config


def config_2d():
    config = config_3d()
    config["network_def"] = NET2
    config["preprocessing"]["transforms"] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": PIXDIM[:2], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", **WINDOW},
        {"_target_": "DivisiblePadd", "keys": "image", "k": 8},
    ]
    config["inferer"] = {"_target_": "SimpleInferer"}
    return config


def metadata(dims):
    return {"name": f"tiny liver {dims}d", "version": "0.1.0", "description": "test bundle, trained for seconds",
            "license": "Apache-2.0",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [32] * dims}},
                "outputs": {"pred": {"type": "image", "num_channels": 2, "spatial_shape": [32] * dims,
                                     "channel_def": NAMES}}}}


def write_bundle(folder, config, meta, weights=None, fmt="json"):
    import torch

    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    if fmt == "json":
        (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=1))
    else:
        import yaml

        (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    if weights is not None:
        if isinstance(weights, torch.jit.ScriptModule):
            torch.jit.save(weights, str(folder / "models" / "model.ts"))
        else:
            torch.save(weights, folder / "models" / "model.pt")
    return folder


# ---------------------------------------------------------------------------------------- data + weights
def _lps_anisotropic(src, dst):
    """The same CT stored LPS (i and j flipped) with 6 mm voxels along i (every second one)."""
    image = nib.load(str(src))
    data = np.asarray(image.dataobj)[::-1, ::-1, :][::2]
    affine = image.affine.copy()
    ni, nj = image.shape[:2]
    affine[:3, 3] = image.affine[:3, :3] @ np.array([ni - 1, nj - 1, 0]) + image.affine[:3, 3]
    affine[:3, 0] *= -2.0
    affine[:3, 1] *= -1.0
    nib.save(nib.Nifti1Image(data.astype(np.int16), affine), str(dst))
    return dst


def _train(net, x, y, steps, batch, lr=2e-2):
    import torch
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        pick = torch.randperm(len(x), generator=generator)[:batch]
        opt.zero_grad()
        loss = loss_fn(net(x[pick]), y[pick])
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Inputs (RAS 3 mm; LPS anisotropic; one 2-D slice) and tiny nets trained for a few seconds (cached)."""
    from napari_medai.data_paths import shared_data_dir

    root = shared_data_dir()
    src = root / "ct" / "totalseg-example" / "example_ct_sm.nii.gz" if root else None
    if src is None or not src.is_file():
        pytest.skip("real data not available (set NAPARI_MEDAI_DATA or provide ../shared/data)")
    import torch
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval
    from monai.networks.nets import UNet
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
        SpatialPad,
    )

    work = tmp_path_factory.mktemp("bundle-data")
    ras = work / "ct_ras.nii.gz"
    image = nib.load(str(src))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj).astype(np.int16), image.affine), str(ras))
    seg = nib.load(str(src.parent / "example_seg.nii.gz"))
    label = work / "liver.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(seg.dataobj) == CROP_LIVER).astype(np.uint8), seg.affine), str(label))
    lps = _lps_anisotropic(ras, work / "ct_lps.nii.gz")
    k = 14  # an axial slice through the liver, as a 2-D NIfTI
    slice2d = work / "ct_slice.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, k].astype(np.int16), image.affine), str(slice2d))

    prep = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"]),
                    Orientationd(["image", "label"], "RAS"),
                    Spacingd(["image", "label"], PIXDIM, mode=("bilinear", "nearest")),
                    ScaleIntensityRanged("image", **WINDOW)])
    d = prep({"image": str(ras), "label": str(label)})
    x, y = d["image"].as_tensor()[None].float(), d["label"].as_tensor()[None].float()
    # 3-D: train on the very windows the bundle's SlidingWindowInferer will see (instance norm is per window).
    roi = tuple(config_3d()["inferer"]["roi_size"])
    windows = dense_patch_slices(x.shape[2:], roi, _get_scan_interval(x.shape[2:], roi, 3, (0.25,) * 3))
    xs = torch.cat([x[(slice(None), slice(None), *w)] for w in windows])
    ys = torch.cat([y[(slice(None), slice(None), *w)] for w in windows])
    torch.manual_seed(0)
    params = {k_: v for k_, v in NET3.items() if k_ != "_target_"}
    net3 = _train(UNet(**params), xs, ys, steps=STEPS, batch=2)
    # 2-D: the liver slices, padded as the 2-D bundle's DivisiblePadd(k=8) pads them.
    zs = [z for z in range(y.shape[-1]) if y[..., z].any()]
    pad = SpatialPad((64, 56))
    x2 = torch.stack([pad(x[0, :, :, :, z]) for z in zs]).float()
    y2 = torch.stack([pad(y[0, :, :, :, z]) for z in zs]).float()
    net2 = _train(UNet(**{**params, "spatial_dims": 2}), x2, y2, steps=STEPS, batch=4)
    return {"ras": ras, "lps": lps, "slice": slice2d, "label": label, "net3": net3, "net2": net2, "work": work}


RUNNER = """
import json, runpy, sys
for job in json.loads(sys.argv[1]):  # `python -m monai.bundle run ...`, once per job, in one process
    sys.argv = ["monai.bundle", "run", "--config_file", job["config"], "--meta_file", job["meta"],
                "--bundle_root", job["root"], "--output_dir", job["out"], "--datalist", repr(job["inputs"])]
    try:
        runpy.run_module("monai.bundle", run_name="__main__")
    except SystemExit as exit:
        if exit.code:
            raise
"""


def monai_run(jobs):
    """MONAI's own bundle runner (its LoadImaged / SaveImaged) in a fresh process, one process for all
    ``jobs`` [(bundle, inputs, out_dir)]; returns [{input name: output file}]."""
    spec = [{"config": str(next(b.glob("configs/inference.*"))), "meta": str(b / "configs" / "metadata.json"),
             "root": str(b), "out": str(o), "inputs": [str(p) for p in inputs]} for b, inputs, o in jobs]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(spec)], capture_output=True, text=True, env=env,
                          check=False,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = []
    for _, inputs, out_dir in jobs:
        out = {}
        for p in inputs:
            out[p.name] = out_dir / f"{p.name[: -len('.nii.gz')]}_seg.nii.gz"
            assert out[p.name].is_file(), sorted(os.listdir(out_dir))
        results.append(out)
    return results


@pytest.fixture(scope="module")
def bundles(trained, tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("bundles")
    state3 = trained["net3"].state_dict()
    out = {
        "json": write_bundle(root / "liver3d_json", config_3d(), metadata(3), state3),
        "yaml": write_bundle(root / "liver3d_yaml", config_3d(), metadata(3), state3, fmt="yaml"),
        "2d": write_bundle(root / "liver2d", config_2d(), metadata(2), trained["net2"].state_dict()),
        "ts": write_bundle(root / "liver3d_ts", config_3d(torchscript=True), metadata(3),
                           torch.jit.script(copy.deepcopy(trained["net3"]))),
    }
    return out


@pytest.fixture(scope="module")
def monai_outputs(trained, bundles, tmp_path_factory):
    """MONAI's own runner: the 3-D bundle on both inputs, the 2-D one on the slice, TorchScript on RAS."""
    pytest.importorskip("ignite", reason="MONAI's bundle runner needs pytorch-ignite")
    pytest.importorskip("fire", reason="`python -m monai.bundle` needs fire")
    out = tmp_path_factory.mktemp("monai-out")
    jobs = {"json": [trained["ras"], trained["lps"]], "2d": [trained["slice"]], "ts": [trained["ras"]]}
    results = monai_run([(bundles[k], inputs, out / k) for k, inputs in jobs.items()])
    return dict(zip(jobs, results))


def _ours(bundle, source, out_path):
    """napari-medai's CLI on the file: ``segment IN -o OUT --model BUNDLE --json``."""
    import contextlib
    import io

    from napari_medai.cli.main import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["segment", str(source), "-o", str(out_path), "--model", str(bundle), "--device", "cpu",
                     "--json"]) == 0
    return json.loads(buffer.getvalue())


@pytest.mark.parametrize("kind,which", [("json", "ras"), ("json", "lps"), ("yaml", "ras"), ("yaml", "lps"),
                                        ("ts", "ras"), ("2d", "slice")])
def test_agrees_with_monai_bundle_run(trained, bundles, monai_outputs, tmp_path, kind, which):
    source = trained[which]
    reference = monai_outputs["json" if kind == "yaml" else kind][source.name]
    document = _ours(bundles[kind], source, tmp_path / "ours.nii.gz")
    ours, theirs, inp = nib.load(str(tmp_path / "ours.nii.gz")), nib.load(str(reference)), nib.load(str(source))
    a = np.asarray(ours.dataobj).reshape(inp.shape)
    b = np.asarray(theirs.dataobj).reshape(inp.shape)
    d = dice(a == 1, b == 1)
    print(f"\n{kind}/{which}: Dice {d:.4f}, ours {int((a == 1).sum())} vs MONAI {int((b == 1).sum())} voxels,"
          f" mismatched {int((a != b).sum())}")
    assert (b == 1).sum() > 500, "the trained bundle should find a liver"
    assert d >= 0.99
    assert ours.shape[: len(inp.shape)] == inp.shape == theirs.shape[: len(inp.shape)]
    np.testing.assert_allclose(ours.affine, inp.affine, atol=1e-4)
    np.testing.assert_allclose(theirs.affine, inp.affine, atol=1e-4)
    assert document["labels"] == {"1": "liver"}
    assert document["model"]["name"].startswith("tiny liver") and document["model"]["version"] == "0.1.0"
    assert len(document["model"]["sha256"]) == 64
    truth = nib.load(str(trained["label"]))
    if which == "ras":  # a real structure: the tiny net finds the liver, roughly
        assert dice(a == 1, np.asarray(truth.dataobj) == 1) > 0.5


def test_input_is_what_loadimaged_reads(trained):
    """The MetaTensor fed to the bundle equals LoadImaged's from the file: voxels, affine, and after the
    bundle's Orientationd + Spacingd the same grid (RAS and LPS-anisotropic inputs)."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    from napari_medai.io.readers import load_image
    from napari_medai.segmentation.bundle import _meta_tensor, monai_affine

    for which in ("ras", "lps"):
        theirs = LoadImaged("image")({"image": str(trained[which])})["image"]
        loaded = load_image(trained[which])
        ours = _meta_tensor(np.transpose(loaded.data, (2, 1, 0)), monai_affine(loaded.geometry.affine_ras()),
                            "x", np.float32, False)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert np.array_equal(ours.numpy(), theirs.numpy())
        np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-6)
        geo = Compose([EnsureChannelFirstd("image"), Orientationd("image", "RAS"), Spacingd("image", PIXDIM)])
        a, b = geo({"image": ours})["image"], geo({"image": theirs})["image"]
        assert a.shape == b.shape
        np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-6)
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3)


def test_dicom_series_matches_monai_after_orientation(shared_data):
    """A DICOM series: MONAI's PydicomReader stacks the slices in the opposite z order, so the raw tensors
    differ by a z flip; after the bundle's Orientationd they are the same voxels on the same grid."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    from napari_medai.io.readers import load_image
    from napari_medai.segmentation.bundle import _meta_tensor, monai_affine

    folder = shared_data / "ct" / "totalseg-example" / "example_ct_dicom"
    theirs = LoadImaged("image", reader="PydicomReader")({"image": str(folder)})["image"]
    loaded = load_image(folder)
    ours = _meta_tensor(np.transpose(loaded.data, (2, 1, 0)), monai_affine(loaded.geometry.affine_ras()),
                        "x", np.float32, False)
    assert ours.shape == theirs.shape
    geo = Compose([EnsureChannelFirstd("image"), Orientationd("image", "RAS")])
    a, b = geo({"image": ours})["image"], geo({"image": theirs})["image"]
    assert a.shape == b.shape and np.array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)


def test_api_names_and_describe(trained, bundles):
    from napari_medai import segment
    from napari_medai.io.readers import load_image
    from napari_medai.segmentation.bundle import describe_bundle

    info = describe_bundle(bundles["yaml"])
    assert info["name"] == "tiny liver 3d" and info["version"] == "0.1.0" and info["labels"] == {1: "liver"}
    assert info["license"] == "Apache-2.0" and info["path"].endswith("liver3d_yaml")
    loaded = load_image(trained["ras"])
    calls = []
    result = segment(loaded.data, spacing=loaded.geometry.spacing, affine=loaded.geometry.affine_ras(),
                     model=str(bundles["yaml"]), device="cpu", progress=lambda i, n: calls.append((i, n)))
    assert result.labels.shape == loaded.data.shape and result.labels.dtype == np.uint8
    assert result.names == {1: "liver"} and result.volumes_ml["liver"] > 50
    assert calls and calls[-1][0] == calls[-1][1]
    assert result.model.name == "tiny liver 3d" and result.model.weights == "models/model.pt"


def test_2d_bundle_on_a_volume_runs_per_slice(trained, bundles, monai_outputs):
    """A 2-D bundle on a (z, y, x) volume runs on each axial slice; slice 14 equals MONAI on the 2-D file."""
    from napari_medai import segment
    from napari_medai.io.readers import load_image

    loaded = load_image(trained["ras"])
    affine = loaded.geometry.affine_ras()
    affine[:3, 3] += 12 * affine[:3, 0]  # slices 12-16 (napari axis 0 is z)
    result = segment(loaded.data[12:17], spacing=loaded.geometry.spacing, affine=affine,
                     model=str(bundles["2d"]), device="cpu")
    assert result.labels.shape == (5, *loaded.data.shape[1:])
    theirs = np.asarray(nib.load(str(monai_outputs["2d"][trained["slice"].name])).dataobj).squeeze()
    assert (theirs == 1).sum() > 200 and np.array_equal(result.labels[2], theirs.T)
    # a plain (y, x) array with its spacing: MONAI's picture affine, positive x and y (as this RAS slice)
    flat = segment(loaded.data[14], spacing=loaded.geometry.spacing[1:], model=str(bundles["2d"]), device="cpu")
    assert flat.labels.shape == loaded.data.shape[1:] and np.array_equal(flat.labels, theirs.T)


def test_output_left_on_the_bundle_grid_is_resampled(trained, bundles, tmp_path):
    """Without Invertd the prediction stays on the 6x6x5 mm grid; it comes back on the input's grid (nearest),
    with a note, close to the inverted result."""
    import shutil

    from napari_medai import segment
    from napari_medai.io.readers import load_image

    folder = tmp_path / "no_invert"
    shutil.copytree(bundles["json"], folder)
    config = config_3d()
    config["postprocessing"]["transforms"] = [t for t in config["postprocessing"]["transforms"]
                                              if t["_target_"] != "Invertd"]
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    loaded = load_image(trained["lps"])
    kwargs = dict(spacing=loaded.geometry.spacing, affine=loaded.geometry.affine_ras(), device="cpu")
    plain = segment(loaded.data, model=str(folder), **kwargs)
    inverted = segment(loaded.data, model=str(bundles["json"]), **kwargs)
    assert plain.labels.shape == loaded.data.shape
    assert any("resampled (nearest)" in n for n in plain.notes) and not inverted.notes
    assert 0.85 < dice(plain.labels == 1, inverted.labels == 1) < 1.0


# ---------------------------------------------------------------------------------------- refusals
def _refused(tmp_path, config, match, weights="random", meta=None, volume=None, spacing=(5.0, 2.0, 2.0)):
    import torch
    from monai.networks.nets import UNet

    from napari_medai import segment

    state = UNet(**{k: v for k, v in NET3.items() if k != "_target_"}).state_dict() if weights == "random" else weights
    folder = write_bundle(tmp_path / "b", config, meta or metadata(3), state)
    volume = np.zeros((20, 24, 24), np.int16) - 1000 if volume is None else volume
    with pytest.raises(MedaiError, match=match) as info:
        segment(volume, spacing=spacing, model=str(folder), device="cpu")
    assert "\n" not in str(info.value)
    del torch
    return str(info.value)


def test_refuses_custom_target(tmp_path):
    config = config_3d()
    config["preprocessing"]["transforms"].insert(2, {"_target_": "my_lab.transforms.Denoised", "keys": "image"})
    message = _refused(tmp_path, config, "not importable")
    assert "preprocessing::transforms::2" in message and "my_lab.transforms.Denoised" in message


def test_refuses_transforms_reading_other_files(tmp_path):
    config = config_3d()
    config["preprocessing"]["transforms"][0]["keys"] = ["image", "label"]
    assert "preprocessing::transforms::0" in _refused(tmp_path / "a", config, "loads keys")
    config = config_3d()
    config["preprocessing"]["transforms"].append(
        {"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x * np.load(@bundle_root + '/prior.npy')"})
    assert "preprocessing::transforms::6" in _refused(tmp_path / "b", config, "reads another file")


def test_refuses_two_stage_and_missing_keys(tmp_path):
    config = config_3d()
    config["run"] = ["$@evaluator.run()", "$@evaluator.run()"]
    assert "'run'" in _refused(tmp_path / "a", config, "2-stage")
    config = config_3d()
    config["stage2_network_def"] = dict(NET3)
    assert "stage2_network_def" in _refused(tmp_path / "b", config, "2-stage")
    config = config_3d()
    del config["inferer"]
    assert "'inferer'" in _refused(tmp_path / "c", config, "no 'inferer' key")
    config = config_3d()
    config["network_def"] = {**NET3, "channels": "@chans"}  # a reference to a key the config lacks
    assert "chans" in _refused(tmp_path / "d", config, "config key 'network_def' cannot be built")


def test_refuses_pickles_bad_yaml_and_slices(tmp_path):
    from monai.networks.nets import UNet

    whole = UNet(**{k: v for k, v in NET3.items() if k != "_target_"})  # a pickled module, not a state dict
    _refused(tmp_path / "a", config_3d(), "model.pt refused", weights=whole)
    folder = write_bundle(tmp_path / "b", config_3d(), metadata(3), None, fmt="yaml")
    (folder / "configs" / "inference.yaml").write_text("preprocessing: [unclosed\n")
    from napari_medai import segment

    with pytest.raises(MedaiError, match="cannot read MONAI bundle file inference.yaml"):
        segment(np.zeros((8, 8, 8)), spacing=(1, 1, 1), model=str(folder), device="cpu")
    _refused(tmp_path / "c", config_3d(), "3-D model; give a volume", volume=np.zeros((24, 24), np.int16),
             spacing=(2.0, 2.0))
