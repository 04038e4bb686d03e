import pytest

from napari_medai.errors import MedaiError
from napari_medai.runtime import device as dev


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(dev, "_cuda_count", lambda: 0)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(dev, "_cuda_count", lambda: 2)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


def test_auto_falls_back_to_cpu_and_says_so(no_gpu):
    choice = dev.resolve_device("auto")
    assert choice.name == "cpu"
    assert choice.is_fallback
    assert "no CUDA or MPS" in choice.reason
    assert dev.available_devices() == ["cpu"]


def test_auto_prefers_cuda_when_present(two_gpus):
    choice = dev.resolve_device("auto")
    assert choice.name == "cuda:0" and not choice.is_fallback
    assert dev.available_devices() == ["cuda:0", "cuda:1", "cpu"]
    assert dev.resolve_device("cuda").name == "cuda:0"
    assert dev.resolve_device("cuda:1").name == "cuda:1"


def test_auto_uses_mps_without_cuda(monkeypatch):
    monkeypatch.setattr(dev, "_cuda_count", lambda: 0)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.resolve_device("auto").name == "mps"
    assert dev.available_devices() == ["mps", "cpu"]


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "mps"])
def test_missing_devices_are_refused_with_the_alternatives(no_gpu, spec):
    with pytest.raises(MedaiError, match="use one of: cpu"):
        dev.resolve_device(spec)


def test_cuda_index_out_of_range(two_gpus):
    with pytest.raises(MedaiError, match="2 CUDA GPU"):
        dev.resolve_device("cuda:5")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu"])
def test_unknown_device_strings(spec):
    with pytest.raises(MedaiError):
        dev.resolve_device(spec)


def test_autocast_is_a_no_op_on_cpu():
    import torch

    with dev.autocast("cpu"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32 and float(out[0, 0]) == 2.0


def test_oom_fallback_steps_down_then_moves_to_cpu(two_gpus):
    tried, messages = [], []

    def job(device, size):
        tried.append((device.type, size))
        if device.type == "cuda":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return size * 10

    result = dev.run_with_oom_fallback(job, dev.DeviceChoice("cuda:0", "test"), sizes=[128, 64], notify=messages.append)
    assert result == 640
    assert tried == [("cuda", 128), ("cuda", 64), ("cpu", 64)]
    assert len(messages) == 2 and "retrying on cpu" in messages[-1]


def test_oom_fallback_reraises_other_errors():
    def job(device, size):
        raise ValueError("not an OOM")

    with pytest.raises(ValueError):
        dev.run_with_oom_fallback(job, "cpu", sizes=[1])
