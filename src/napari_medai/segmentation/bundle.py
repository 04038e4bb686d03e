"""MONAI bundles, run the way ``python -m monai.bundle run`` runs them.

A bundle folder holds ``configs/inference.json`` (or ``.yaml``/``.yml``), ``configs/metadata.json`` and
``models/model.pt`` (a state dict for ``network_def``) or ``models/model.ts`` (TorchScript). The config is
parsed with :class:`monai.bundle.ConfigParser` and the bundle's own ``preprocessing``, ``network_def``,
``inferer`` and ``postprocessing`` are instantiated, with three overrides:

- loading: the bundle's ``LoadImaged`` becomes ``Identityd``; the array arrives as the MetaTensor that
  ``LoadImaged`` would have made from the NIfTI file (voxel order (i, j, k) = napari's (z, y, x) reversed,
  float32, the RAS affine, no channel), so ``Orientationd``/``Spacingd`` act on the real geometry;
- the device (``device`` in the config is set to the one chosen here);
- saving: ``SaveImaged`` (any ``Save*`` transform) becomes ``Identityd``; the labels come back on the
  input's grid (same shape and affine) in napari order.

The batch is collated, run through the inferer and decollated as MONAI's ``SupervisedEvaluator`` does,
and the post-processing sees the same ``{"image", "pred"}`` dictionary, so ``Invertd`` finds the
pre-processing's trace. Label names come from ``metadata.json``
(``network_data_format.outputs.pred.channel_def``). Research use only, not a medical device.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import MedaiError
from ..runtime.progress import Progress, ShouldStop, callbacks, check_stop

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
SEP = "::"  # MONAI's config id separator
_REQUIRED = ("preprocessing", "inferer")
_CACHE: dict = {}
# Words that mark a value as a file path read at run time (a transform "that reads other files").
_FILE_HINTS = (".nii", ".npy", ".npz", ".csv", ".pt", ".pth", ".pkl", ".h5", ".mha", ".nrrd", ".png", ".jpg",
               ".json", ".yaml", ".dcm", "@dataset_dir", "@datalist", "@data_dir", "@bundle_root", "@output_dir")


@dataclass
class BundleModel:
    """What ran: shows in ``SegmentationResult.model`` and the CLI JSON (name, version, weights SHA-256)."""

    name: str
    version: Optional[str]
    sha256: Optional[str]
    path: str
    weights: str
    labels: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


# ------------------------------------------------------------------------------------ folder level
def is_bundle(model) -> bool:
    """A folder with ``configs/`` and no ``card.json`` (cheap: no torch, no MONAI)."""
    if model is None or not isinstance(model, (str, Path)):
        return False
    path = Path(str(model)).expanduser()
    return path.is_dir() and (path / "configs").is_dir() and not (path / "card.json").is_file()


def _label(folder: Path, meta: dict) -> str:
    return str(meta.get("name") or folder.name) if isinstance(meta, dict) else folder.name


def _config_path(folder: Path) -> Path:
    found = next((folder / "configs" / n for n in CONFIG_NAMES if (folder / "configs" / n).is_file()), None)
    if found is None:
        raise MedaiError(f"MONAI bundle {folder.name} has no configs/inference.json (or .yaml); "
                         "give a bundle with an inference config")
    return found


def _read_file(path: Path) -> Any:
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text())
        import yaml

        return yaml.safe_load(path.read_text())
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MedaiError(f"cannot read MONAI bundle file {path.name}: {first[:120]}; fix its syntax") from None


def _metadata(folder: Path) -> dict:
    path = folder / "configs" / "metadata.json"
    if not path.is_file():
        return {}
    meta = _read_file(path)
    return meta if isinstance(meta, dict) else {}


def label_names(meta: dict) -> dict:
    """``{value: name}`` (background left out) from ``network_data_format.outputs.pred.channel_def``."""
    try:
        channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        return {}
    names = {}
    if isinstance(channel_def, dict):
        for key, value in channel_def.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                continue
            if index != 0:
                names[index] = str(value)
    return dict(sorted(names.items()))


def describe_bundle(folder) -> dict:
    """What the widget's model picker shows before running: ``name, version, description, labels
    (dict int -> str), license, path`` from ``configs/metadata.json`` (and a LICENSE file)."""
    folder = Path(str(folder)).expanduser()
    if not is_bundle(folder):
        raise MedaiError(f"{folder} is not a MONAI bundle folder (configs/ with inference.json); "
                         "choose the bundle's root folder")
    meta = _metadata(folder)
    licence = meta.get("license") or meta.get("data_license")
    if not licence:
        for candidate in (folder / "LICENSE", folder / "docs" / "LICENSE", folder / "LICENSE.txt"):
            if candidate.is_file():
                lines = [ln.strip() for ln in candidate.read_text(errors="replace").splitlines() if ln.strip()]
                licence = lines[0] if lines else candidate.name
                break
    if not licence:
        licence = meta.get("copyright")
    return {
        "name": _label(folder, meta),
        "version": meta.get("version"),
        "description": meta.get("description"),
        "labels": label_names(meta),
        "license": licence,
        "path": str(folder.resolve()),
    }


# ------------------------------------------------------------------------------------ config checks
def _walk(node, prefix: str = ""):
    """(id, dict) for every dict in a raw config, with MONAI ids (``a::0::b``)."""
    if isinstance(node, dict):
        yield prefix, node
        for key, value in node.items():
            yield from _walk(value, f"{prefix}{SEP}{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{prefix}{SEP}{index}" if prefix else str(index))


def _strings(node, own: bool = False):
    """Every string in a config node; ``own``: only the node's own arguments (not nested components)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if own and (key == "_target_" or (isinstance(value, dict) and "_target_" in value)):
                continue
            yield from _strings(value, own)
    elif isinstance(node, list):
        for value in node:
            if not (own and isinstance(value, dict) and "_target_" in value):
                yield from _strings(value, own)


def _short_target(node: dict) -> str:
    target = node.get("_target_")
    return target.split(".")[-1] if isinstance(target, str) else ""


def _keys_of(node: dict) -> list:
    keys = node.get("keys", [])
    return [keys] if isinstance(keys, str) else list(keys) if isinstance(keys, (list, tuple)) else []


def _check_workflow(config: dict, name: str) -> None:
    """Refuse 2-stage workflows: several runs, extra networks, or an evaluator other than SupervisedEvaluator."""
    runs = " ".join(_strings(config.get("run", [])))
    if runs.count(".run(") > 1:
        raise MedaiError(f"MONAI bundle {name}: config key 'run' runs {runs.count('.run(')} workflows (a 2-stage "
                         "bundle); napari-medai runs one network: run it with `python -m monai.bundle run`")
    evaluator = config.get("evaluator")
    if isinstance(evaluator, dict) and _short_target(evaluator) not in ("", "SupervisedEvaluator"):
        raise MedaiError(f"MONAI bundle {name}: config key 'evaluator' is a {_short_target(evaluator)}, not a "
                         "SupervisedEvaluator (a 2-stage or custom workflow); run it with `python -m monai.bundle run`")
    extra = [k for k in config if isinstance(k, str) and k != "network_def" and k.endswith("network_def")]
    if extra:
        raise MedaiError(f"MONAI bundle {name}: config key '{extra[0]}' defines a second network (a 2-stage "
                         "bundle); napari-medai runs one network: run it with `python -m monai.bundle run`")


def _check_targets(config: dict, name: str, ids: Sequence[str]) -> None:
    """Every ``_target_`` under ``ids`` must be importable here (as MONAI would resolve it)."""
    import pydoc

    from monai.bundle import ComponentLocator

    locator = ComponentLocator()
    for top in ids:
        if top not in config:
            continue
        for node_id, node in _walk(config[top], top):
            target = node.get("_target_")
            if not isinstance(target, str) or target.startswith(("$", "@", "%")):
                continue
            module = locator.get_component_module_name(target)
            if module is None and pydoc.locate(target) is None:
                raise MedaiError(f"MONAI bundle {name}: config key '{node_id}' has _target_ '{target}', which is not "
                                 "importable here; install the package that provides it (or put the bundle's "
                                 "scripts on PYTHONPATH), or replace it with a MONAI class")


def _sections(config: dict) -> list:
    """``preprocessing``, ``postprocessing`` and the top-level keys they refer to (``"$@pre_transforms"``)."""
    import re

    found, todo = [], ["preprocessing", "postprocessing"]
    while todo:
        key = todo.pop(0)
        if key in found or key not in config or key in ("network_def", "network", "inferer", "device", "bundle_root"):
            continue
        found.append(key)
        for text in _strings(config[key]):
            todo.extend(m.split(SEP)[0].split("#")[0] for m in re.findall(r"@([A-Za-z_][\w:#]*)", text))
    return found


def _check_files(config: dict, name: str) -> tuple[str, dict]:
    """Find the one loader (its id and node) and refuse transforms that read other files."""
    loaders = []
    for top in _sections(config):
        for node_id, node in _walk(config[top], top):
            short = _short_target(node)
            if short.startswith("Load") or "Reader" in short:
                loaders.append((node_id, node))
            elif short and not short.startswith("Save") and short != "Invertd":
                for text in _strings(node, own=True):
                    if any(h in text for h in _FILE_HINTS):
                        raise MedaiError(f"MONAI bundle {name}: config key '{node_id}' ({short}) reads another file "
                                         f"({text[:60]!r}); napari-medai feeds one image: remove that transform or "
                                         "run the bundle with `python -m monai.bundle run`")
    if not loaders:
        return "", {}
    if len(loaders) > 1:
        raise MedaiError(f"MONAI bundle {name}: config key '{loaders[1][0]}' loads a second file; napari-medai feeds "
                         "one image: keep a single LoadImaged in preprocessing")
    node_id, node = loaders[0]
    if _short_target(node) not in ("LoadImaged", "LoadImageD", "LoadImageDict"):
        raise MedaiError(f"MONAI bundle {name}: config key '{node_id}' is a {_short_target(node)}; napari-medai "
                         "replaces only LoadImaged: use LoadImaged in preprocessing")
    keys = _keys_of(node)
    if len(keys) != 1:
        raise MedaiError(f"MONAI bundle {name}: config key '{node_id}' loads keys {keys}; napari-medai feeds one "
                         "image: load a single key (\"image\")")
    reader = node.get("reader")
    if node.get("as_closest_canonical") or (isinstance(reader, dict) and reader.get("as_closest_canonical")):
        raise MedaiError(f"MONAI bundle {name}: config key '{node_id}' sets as_closest_canonical; use Orientationd "
                         "in preprocessing instead")
    return node_id, node


# ------------------------------------------------------------------------------------ parsing
def _spatial_dims(config: dict, meta: dict) -> int:
    try:
        shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
        if isinstance(shape, list) and len(shape) in (2, 3):
            return len(shape)
    except (KeyError, TypeError):
        pass
    net_def = config.get("network_def")
    if isinstance(net_def, dict) and net_def.get("spatial_dims") in (2, 3):
        return int(net_def["spatial_dims"])
    inferer = config.get("inferer")
    if isinstance(inferer, dict) and isinstance(inferer.get("roi_size"), list) and len(inferer["roi_size"]) in (2, 3):
        return len(inferer["roi_size"])
    return 3


@dataclass
class _Prepared:
    parser: Any
    key: str  # the image key (LoadImaged's)
    loader: dict  # LoadImaged's raw config ({} when the bundle has none)
    dims: int
    has_post: bool
    amp: bool


def _prepare(folder: Path, device_name: str, meta: dict) -> _Prepared:
    from monai.bundle import ConfigParser

    name = _label(folder, meta)
    cfg_path = _config_path(folder)
    raw = _read_file(cfg_path)
    if not isinstance(raw, dict):
        raise MedaiError(f"MONAI bundle {name}: {cfg_path.name} is not a mapping of config keys; fix the file")
    for key in _REQUIRED:
        if key not in raw:
            raise MedaiError(f"MONAI bundle {name}: {cfg_path.name} has no '{key}' key; napari-medai needs "
                             "'preprocessing', 'inferer' and 'network_def' (or models/model.ts)")
    _check_workflow(raw, name)
    loader_id, loader = _check_files(raw, name)
    _check_targets(raw, name, (*_sections(raw), "inferer"))
    key = _keys_of(loader)[0] if loader else "image"

    parser = ConfigParser()
    parser.read_config(str(cfg_path))
    if meta:
        parser.read_meta(meta)
    parser["bundle_root"] = str(folder)
    parser["device"] = f"$torch.device('{device_name}')"
    if loader_id:
        parser[loader_id] = {"_target_": "Identityd", "keys": key}
    for top in _sections(raw):
        for node_id, node in list(_walk(raw[top], top)):
            if _short_target(node).startswith("Save"):
                parser[node_id] = ({"_target_": "Identityd", "keys": _keys_of(node) or key}
                                   if _short_target(node).endswith("d") else {"_target_": "Identity"})
    evaluator = raw.get("evaluator")
    amp = isinstance(evaluator, dict) and evaluator.get("amp") is True
    return _Prepared(parser, key, loader, _spatial_dims(raw, meta), "postprocessing" in raw, amp)


def _parsed(prep: _Prepared, key: str, name: str):
    try:
        return prep.parser.get_parsed_content(key)
    except MedaiError:
        raise
    except Exception as exc:  # noqa: BLE001 - MONAI raises many types for a bad config
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MedaiError(f"MONAI bundle {name}: config key '{key}' cannot be built ({first[:140]}); "
                         "fix the config (napari-medai runs it with MONAI's ConfigParser)") from None


def _load_network(folder: Path, prep: _Prepared, device, name: str):
    """``network_def`` + ``models/model.pt`` (weights_only) or ``models/model.ts``; cached."""
    import torch

    from ..runtime.registry import sha256_of

    pt, ts = folder / "models" / "model.pt", folder / "models" / "model.ts"
    has_def = prep.parser.get("network_def") is not None
    if pt.is_file() and (has_def or not ts.is_file()):
        if not has_def:
            raise MedaiError(f"MONAI bundle {name}: configs have no 'network_def' key for models/model.pt; add it, "
                             "or export models/model.ts (TorchScript)")
        weights = pt
    elif ts.is_file():
        weights = ts
    else:
        raise MedaiError(f"MONAI bundle {name} has neither models/model.pt nor models/model.ts; put the weights there")
    stat = weights.stat()
    cache_key = (str(weights.resolve()), stat.st_mtime_ns, stat.st_size, str(device),
                 json.dumps(prep.parser.get("network_def"), sort_keys=True, default=str))
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    if weights is ts:
        try:
            net = torch.jit.load(str(ts), map_location=device)
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MedaiError(f"MONAI bundle {name}: models/model.ts is not TorchScript ({first[:100]}); "
                             "re-export it with `python -m monai.bundle ckpt_export`") from None
    else:
        net = _parsed(prep, "network_def", name)
        if not isinstance(net, torch.nn.Module):
            raise MedaiError(f"MONAI bundle {name}: config key 'network_def' does not build a torch module; fix it")
        try:
            state = torch.load(str(pt), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickled objects fail here, by design
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MedaiError(f"MONAI bundle {name}: models/model.pt refused ({first[:100]}); only plain state "
                             "dicts load (torch.load weights_only=True): save model.state_dict(), or export "
                             "model.ts") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # CheckpointLoader's {"model": ...} layout
        if not isinstance(state, dict):
            raise MedaiError(f"MONAI bundle {name}: models/model.pt is not a state dict; save model.state_dict()")
        if state and all(str(k).startswith("module.") for k in state):
            state = {str(k)[len("module."):]: v for k, v in state.items()}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise MedaiError(f"MONAI bundle {name}: models/model.pt does not fit 'network_def' "
                             f"({str(exc).splitlines()[0][:120]}); check the config against the weights") from None
        net = net.to(device)
    net.eval()
    _CACHE[cache_key] = (net, weights, sha256_of(weights))
    return _CACHE[cache_key]


# ------------------------------------------------------------------------------------ geometry
def monai_affine(affine_zyx: np.ndarray) -> np.ndarray:
    """Napari (z, y, x) index -> RAS affine  ->  MONAI/NIfTI (i, j, k) = (x, y, z) index -> RAS affine."""
    out = np.asarray(affine_zyx, dtype=np.float64).copy()
    out[:, :3] = out[:, [2, 1, 0]]
    return out


def _default_affine(spacing: tuple) -> np.ndarray:
    """Without an affine a (z, y, x) volume is taken as displayed by napari (identity orientation)."""
    from ..io.geometry import Geometry

    return Geometry(spacing, (0.0, 0.0, 0.0), np.eye(3)).affine_ras()


def _meta_tensor(array_xyz: np.ndarray, affine: np.ndarray, name: str, dtype, channel_first: bool):
    """The MetaTensor LoadImaged (NibabelReader) makes from a file holding this array and affine."""
    import torch
    from monai.data import MetaTensor

    data = np.ascontiguousarray(array_xyz).astype(dtype or np.float32, copy=False)
    meta = {
        "affine": affine.copy(),
        "original_affine": affine.copy(),
        "as_closest_canonical": False,
        "spatial_shape": np.asarray(array_xyz.shape),
        "space": "RAS",
        "original_channel_dim": float("nan"),
        "filename_or_obj": name,
    }
    img = MetaTensor.ensure_torch_and_prune_meta(data, meta)
    if channel_first:
        from monai.transforms import EnsureChannelFirst

        img = EnsureChannelFirst()(img, meta_dict=meta)
    return img if isinstance(img, torch.Tensor) else torch.as_tensor(img)


def _to_labels(pred, notes: list):
    """(C, *spatial) post-processed prediction -> integer labels (*spatial)."""
    import torch

    pred = torch.as_tensor(pred).detach().cpu().float()
    if pred.shape[0] == 1:
        if bool(torch.all(pred == torch.round(pred))):
            return pred[0].to(torch.int64)
        cut = 0.5 if bool(torch.all((pred >= 0) & (pred <= 1))) else 0.0
        notes.append("the bundle's postprocessing leaves one channel of scores (no AsDiscreted); "
                     f"labels are score > {cut}")
        return (pred[0] > cut).to(torch.int64)
    binary = bool(torch.all((pred == 0) | (pred == 1)))
    if binary and bool(torch.all(pred.sum(0) <= 1)):
        return pred.argmax(0)
    if binary:
        notes.append("the bundle's output channels overlap; each voxel takes the highest channel that is on")
        index = torch.arange(pred.shape[0], dtype=torch.float32).view(-1, *([1] * (pred.ndim - 1)))
        return (pred * index).amax(0).to(torch.int64)
    notes.append("the bundle's postprocessing leaves class scores (no AsDiscreted); labels are their argmax")
    return pred.argmax(0)


def _onto_grid(labels, out_affine, in_affine: np.ndarray, in_shape: tuple, notes: list):
    """Labels on the input's grid: as is when the bundle inverted its resampling, else nearest resampling."""
    import torch

    if out_affine is None:
        if tuple(labels.shape) == tuple(in_shape):
            return labels.numpy()
        raise MedaiError(f"the bundle's output {tuple(labels.shape)} has no affine and not the input's shape "
                         f"{tuple(in_shape)}; add Invertd to its postprocessing")
    out_affine = np.asarray(out_affine, dtype=float)
    if tuple(labels.shape) == tuple(in_shape) and np.allclose(out_affine, in_affine, atol=1e-3):
        return labels.numpy()
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    src = MetaTensor(labels[None].float(), affine=torch.as_tensor(np.asarray(out_affine, dtype=np.float64)))
    out = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float64)(
        src, dst_affine=torch.as_tensor(in_affine), spatial_size=tuple(in_shape))
    notes.append(f"the bundle's output grid {tuple(labels.shape)} is not the input's (no Invertd in its "
                 "postprocessing); resampled (nearest) onto the input's grid")
    return torch.round(torch.as_tensor(out)[0]).to(torch.int64).numpy()


# ------------------------------------------------------------------------------------ running
def _window_count(inferer, shape: Sequence[int]) -> int:
    roi = getattr(inferer, "roi_size", None)
    if roi is None:
        return 1
    roi = [int(r) if int(r) > 0 else int(s) for r, s in zip(np.broadcast_to(roi, (len(shape),)), shape)]
    overlap = getattr(inferer, "overlap", 0.25)
    overlap = np.broadcast_to(np.asarray(overlap, dtype=float), (len(shape),))
    n = 1
    for size, r, o in zip(shape, roi, overlap):
        step = max(1, int(r * (1 - o)))
        n *= 1 if size <= r else math.ceil((size - r) / step) + 1
    return max(1, math.ceil(n / max(1, int(getattr(inferer, "sw_batch_size", 1)))))


def _run_one(prep, preprocessing, inferer, postprocessing, net, device, image, progress, should_stop, done, total):
    """One image through the bundle, as SupervisedEvaluator does it (collate, infer, decollate, post)."""
    import torch
    from monai.data import decollate_batch, list_data_collate
    from monai.engines.utils import engine_apply_transform
    from monai.transforms import apply_transform

    data = apply_transform(preprocessing, {prep.key: image})
    batch = list_data_collate([data])
    inputs = batch[prep.key].to(device)
    n_calls = _window_count(inferer, inputs.shape[2:])

    def network(x, *args, **kwargs):
        check_stop(should_stop)
        out = net(x, *args, **kwargs)
        done[0] += 1.0 / n_calls
        progress(min(total * 100, int(done[0] * 100)), total * 100)
        return out

    with torch.no_grad():
        amp = torch.autocast("cuda") if prep.amp and device.type == "cuda" else _null()
        with amp:
            pred = inferer(inputs, network)
        output = {prep.key: inputs, "pred": pred}
        batch_items = decollate_batch(batch, detach=True)
        output_items = decollate_batch(output, detach=True)
        if postprocessing is None:
            return output_items[0]["pred"]
        _, out = engine_apply_transform(batch_items[0], output_items[0], postprocessing)
    return out["pred"]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def segment_bundle(
    volume,
    *,
    spacing: Sequence[float],
    affine: Optional[np.ndarray] = None,
    model,
    device="auto",
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
):
    """Run the MONAI bundle folder ``model`` on a (z, y, x) volume or (y, x) slice in napari order.

    ``affine`` is napari's index -> RAS (:meth:`Geometry.affine_ras`). A 2-D bundle on a volume runs on
    every slice along axis 0 (a volume with one slice is the 2-D image MONAI reads from a 2-D NIfTI).
    Returns a :class:`SegmentationResult` whose labels have the input's shape.
    """
    from ..runtime.device import resolve_device
    from .core import SegmentationResult, _check_input, _measure

    start = time.perf_counter()
    progress, should_stop = callbacks(progress, should_stop)
    array, spacing = _check_input(volume, spacing)
    folder = Path(str(model)).expanduser()
    meta = _metadata(folder)
    name = _label(folder, meta)
    choice = resolve_device(device)
    device_t = choice.torch
    prep = _prepare(folder, choice.name, meta)
    if array.ndim == 2 and prep.dims == 3:
        raise MedaiError(f"MONAI bundle {name} is a 3-D model; give a volume, not a single slice")
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise MedaiError(f"affine must be a finite 4x4 matrix (index -> RAS mm), got shape {affine.shape}")
    if affine is None and array.ndim == 3:
        affine = _default_affine(spacing)
    net, weights, sha = _load_network(folder, prep, device_t, name)
    preprocessing = _parsed(prep, "preprocessing", name)
    inferer = _parsed(prep, "inferer", name)
    postprocessing = _parsed(prep, "postprocessing", name) if prep.has_post else None
    notes: list = []
    if not prep.has_post:
        notes.append("the bundle has no 'postprocessing'; labels are the argmax of the network's output")
    channel_first = bool(prep.loader.get("ensure_channel_first"))
    dtype = np.float32  # LoadImaged's default dtype
    label = Path(getattr(volume, "filename", "") or "image").name

    # Images in MONAI order, one per run: (x, y, z) + affine, or (x, y) slices + their 3-D affine.
    if prep.dims == 3:
        jobs = [(np.transpose(array, (2, 1, 0)), monai_affine(affine))]
    else:
        vol = array[None] if array.ndim == 2 else array
        if affine is None:  # 2-D input without an affine: MONAI's picture affine (x, y spacing)
            base = np.diag([spacing[-1], spacing[-2], 1.0, 1.0])
        else:
            base = monai_affine(affine)
        jobs = []
        for k in range(vol.shape[0]):
            aff = base.copy()
            aff[:3, 3] = base[:3, 3] + k * base[:3, 2]
            jobs.append((np.transpose(vol[k], (1, 0)), aff))
    total = len(jobs)
    done = [0.0]
    out_slices = []
    for image_xyz, aff in jobs:
        check_stop(should_stop)
        image = _meta_tensor(image_xyz, aff, label, dtype, channel_first)
        try:
            pred = _run_one(prep, preprocessing, inferer, postprocessing, net, device_t, image, progress,
                            should_stop, done, total)
        except MedaiError:
            raise
        except Exception as exc:  # noqa: BLE001
            if type(exc).__name__ in ("JobCancelled", "Cancelled", "StopRequested"):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MedaiError(f"MONAI bundle {name} failed on this image ({type(exc).__name__}: {first[:140]}); "
                             "check that the image matches the bundle's input format") from None
        labels = _to_labels(pred, notes)
        out_affine = getattr(pred, "affine", None)
        if out_affine is not None:
            out_affine = np.asarray(out_affine.detach().cpu() if hasattr(out_affine, "detach") else out_affine,
                                    dtype=float)
        if out_affine is not None and out_affine.shape == (3, 3) and aff.shape == (4, 4):
            full = np.eye(4)
            full[:2, :2], full[:2, 3] = out_affine[:2, :2], out_affine[:2, 2]
            full[2, 2], full[2, 3] = aff[2, 2], aff[2, 3]
            out_affine = full
        out_slices.append(_onto_grid(labels, out_affine, aff, image_xyz.shape, notes))
        done[0] = float(len(out_slices))
        progress(len(out_slices) * 100, total * 100)
    if prep.dims == 3:
        labels = np.transpose(out_slices[0], (2, 1, 0))
    else:
        labels = np.stack([np.transpose(s, (1, 0)) for s in out_slices])
        if array.ndim == 2:
            labels = labels[0]
    labels = np.ascontiguousarray(labels)
    if labels.min() < 0:
        raise MedaiError(f"MONAI bundle {name} produced negative labels; its postprocessing must end in labels")
    labels = labels.astype(np.uint8 if labels.max() < 256 else np.uint16)
    names = label_names(meta)
    for value in np.unique(labels):
        if value and int(value) not in names:
            names[int(value)] = f"label {int(value)}"
    names = dict(sorted(names.items()))
    notes = list(dict.fromkeys(notes))
    volumes, areas = _measure(labels, spacing, names)
    record = BundleModel(name=name, version=meta.get("version"), sha256=sha, path=str(folder.resolve()),
                         weights=str(weights.relative_to(folder)), labels=dict(names))
    return SegmentationResult(labels=labels, names=names, volumes_ml=volumes, model=record, device=choice.name,
                              seconds=time.perf_counter() - start, spacing=spacing, areas_cm2=areas, notes=notes)
