"""The one device resolver: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

``auto`` picks CUDA, then Apple MPS, then the CPU, and says why. torch is imported lazily so that
napari starts fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import MedaiError

T = TypeVar("T")

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


@dataclass(frozen=True)
class DeviceChoice:
    """A resolved device: its torch name, why it was chosen, and whether it is a fallback."""

    name: str
    reason: str
    is_fallback: bool = False

    @property
    def kind(self) -> str:
        """``cpu``, ``cuda`` or ``mps`` (without the device index)."""
        return self.name.split(":")[0]

    @property
    def torch(self):
        """The ``torch.device`` (imports torch)."""
        import torch

        return torch.device(self.name)

    def __str__(self) -> str:
        return self.name


def gpu_possible() -> bool:
    """Cheap check, before paying ~2 s for ``import torch``, that this machine could have a GPU."""
    if "torch" in sys.modules or sys.platform == "darwin":
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))


def _cuda_count() -> int:
    if not gpu_possible():
        return 0
    import torch

    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver must not crash device listing
        return 0


def _mps_available() -> bool:
    if sys.platform != "darwin":
        return False
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Devices that really exist here, best first; ``cpu`` is always last."""
    devices = [f"cuda:{i}" for i in range(_cuda_count())]
    if _mps_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def resolve_device(spec: str | DeviceChoice | None = "auto") -> DeviceChoice:
    """Turn a user's device string into a :class:`DeviceChoice`.

    Raises :class:`MedaiError` for a device that does not exist here, with the list of ones that do.
    """
    if isinstance(spec, DeviceChoice):
        return spec
    text = (str(spec) if spec is not None else "auto").strip().lower()
    if text in ("", "auto"):
        n_cuda = _cuda_count()
        if n_cuda:
            return DeviceChoice("cuda:0", f"auto: CUDA GPU found ({n_cuda} device(s))")
        if _mps_available():
            return DeviceChoice("mps", "auto: Apple MPS found")
        return DeviceChoice("cpu", "auto: no CUDA or MPS device found, running on the CPU", True)
    if text == "cpu":
        return DeviceChoice("cpu", "requested")
    if text == "mps":
        if not _mps_available():
            raise MedaiError(
                f"device 'mps' is not available here; use one of: {', '.join(available_devices())}"
            )
        return DeviceChoice("mps", "requested")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise MedaiError(f"bad device '{spec}'; write cuda or cuda:N with N a GPU index")
        index, count = int(index_text), _cuda_count()
        if index >= count:
            have = ", ".join(available_devices())
            raise MedaiError(f"device '{spec}' is not available here ({count} CUDA GPU(s)); use one of: {have}")
        return DeviceChoice(f"cuda:{index}", "requested")
    raise MedaiError(f"unknown device '{spec}'; use auto, cpu, cuda, cuda:N or mps")


def autocast(choice: DeviceChoice | str) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); a no-op elsewhere."""
    choice = resolve_device(choice)
    if choice.kind != "cuda":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors (which torch raises under several types)."""
    import torch

    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_oom_fallback(
    fn: Callable[[Any, Any], T],
    choice: DeviceChoice | str,
    sizes: Sequence[Any],
    notify: Callable[[str], None] = print,
) -> T:
    """Run ``fn(torch_device, size)``, stepping down ``sizes`` on out-of-memory, then to the CPU.

    ``sizes`` runs from the preferred (largest) window or batch to the smallest acceptable one.
    Each step down is announced through ``notify`` so the user sees why the job slowed.
    """
    choice = resolve_device(choice)
    if not sizes:
        raise ValueError("sizes must not be empty")
    attempts: list[tuple[str, Any]] = [(choice.name, s) for s in sizes]
    if choice.kind != "cpu":
        attempts.append(("cpu", sizes[-1]))
    import torch

    last: BaseException | None = None
    for n, (device_name, size) in enumerate(attempts):
        try:
            return fn(torch.device(device_name), size)
        except Exception as exc:  # noqa: BLE001 - only OOM is retried
            if not is_out_of_memory(exc):
                raise
            last = exc
            if device_name.startswith("cuda"):
                torch.cuda.empty_cache()
            if n + 1 < len(attempts):
                nxt_dev, nxt_size = attempts[n + 1]
                notify(f"out of memory on {device_name} with size {size}; retrying on {nxt_dev} with size {nxt_size}")
    raise MedaiError(f"out of memory even on the CPU with the smallest size ({last}); use a smaller input or crop it")


@contextlib.contextmanager
def inference_mode() -> Iterator[None]:
    """``torch.inference_mode()``: without it a 3D UNet can exhaust all memory on big volumes."""
    import torch

    with torch.inference_mode():
        yield
