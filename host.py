"""The one place that touches ComfyUI (`comfy.*`, `folder_paths`), with fallbacks outside it.

Inside ComfyUI these functions defer to the host: its progress bars (which also carry the
cancel button), its device and memory management, its model, output and user folders.
Outside ComfyUI (command line, tests, benchmarks) they fall back to a console progress bar,
`./output`, `./models/<kind>`, `./user` and CPU or CUDA by availability.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger("spacetime")
HEADROOM = 1.3  # weights x this must fit: activations need room too

MODELS_DIR_ENV = "SPACETIME_MODELS_DIR"
OUTPUT_DIR_ENV = "SPACETIME_OUTPUT_DIR"
USER_DIR_ENV = "SPACETIME_USER_DIR"


@functools.cache
def _comfy_module(name: str) -> ModuleType | None:
    """Import a ComfyUI module when running inside ComfyUI, else None (no side effects outside)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def in_comfyui() -> bool:
    return _comfy_module("folder_paths") is not None and _comfy_module("comfy.model_management") is not None


# Devices and memory ------------------------------------------------------------------------


def compute_device() -> torch.device:
    """The device models run on: ComfyUI's choice inside ComfyUI, else CUDA when present, else CPU."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where idle weights wait (ComfyUI's offload device; the CPU outside)."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        return mm.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE, LATENT, CONDITIONING) are kept between nodes (ComfyUI's choice; the CPU)."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        return mm.intermediate_device()
    return torch.device("cpu")


def free_memory_bytes(device: torch.device | None = None) -> int:
    """Free memory on a device, as ComfyUI counts it (its cache included) or as torch reports it."""
    device = device or compute_device()
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        return int(mm.get_free_memory(device))
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return int(psutil.virtual_memory().available)


def model_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))


@contextlib.contextmanager
def on_compute_device(module: torch.nn.Module) -> Iterator[torch.device]:
    """Run `module` on the compute device for the duration of the block when it fits there (inside
    ComfyUI, idle models are evicted first), then move it back; otherwise run it where it is."""
    device, home = compute_device(), next(module.parameters()).device
    if device == home:
        yield home
        return
    needed = int(model_bytes(module) * HEADROOM)
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        mm.free_memory(needed, device)
    if free_memory_bytes(device) < needed:
        log.warning("Not enough free memory on %s for %.1f GB of weights: running on %s instead (slower).",
                    device, needed / 1e9, home)  # fmt: skip
        yield home
        return
    module.to(device)
    try:
        yield device
    finally:
        module.to(home)
        if mm is not None:
            mm.soft_empty_cache()


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user pressed cancel; a no-op outside."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


# Progress ----------------------------------------------------------------------------------


class ConsoleProgressBar:
    """A minimal progress bar on stderr for the command line; silent when stderr is not a terminal."""

    def __init__(self, total: int, description: str = "", stream=None):
        self.total = max(int(total), 1)
        self.current = 0
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        self._last_draw = 0.0
        self._enabled = stream is not None or getattr(self.stream, "isatty", lambda: False)()

    def update(self, steps: int = 1) -> None:
        self.update_absolute(self.current + steps)

    def update_absolute(self, value: int, total: int | None = None) -> None:
        if total is not None:
            self.total = max(int(total), 1)
        self.current = min(int(value), self.total)
        now = time.monotonic()
        if self._enabled and (self.current == self.total or now - self._last_draw > 0.1):
            self._last_draw = now
            filled = int(30 * self.current / self.total)
            bar = "#" * filled + "-" * (30 - filled)
            end = "\n" if self.current == self.total else ""
            self.stream.write(f"\r{self.description} [{bar}] {self.current}/{self.total}{end}")
            self.stream.flush()


class ProgressBar:
    """ComfyUI's progress bar (shown on the node; checks cancel on every update) or the console's."""

    def __init__(self, total: int, description: str = "", node_id: str | None = None):
        utils = _comfy_module("comfy.utils")
        self._bar = (
            utils.ProgressBar(total, node_id=node_id)
            if utils is not None
            else ConsoleProgressBar(total, description)
        )

    def update(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def update_absolute(self, value: int, total: int | None = None) -> None:
        self._bar.update_absolute(value, total)


def progress_ticker(total: int, description: str = "", node_id: str | None = None):
    """A callback for one finished step: advances the progress bar, and raises if the user cancelled."""
    bar = ProgressBar(total, description, node_id=node_id)

    def tick() -> None:
        bar.update(1)
        throw_if_interrupted()

    return tick


Progress = Callable[[str, int], Callable[[], None]]  # (description, total) -> a tick per unit of work


def progress_bars(node_id: str | None = None) -> Progress:
    """Progress bars as the library asks for them, each with the total it knows: ComfyUI's, on node
    `node_id`, or the console's."""
    return lambda description, total: progress_ticker(total, description, node_id)


# Folders -----------------------------------------------------------------------------------


def output_directory() -> Path:
    """ComfyUI's output folder, or $SPACETIME_OUTPUT_DIR, or ./output."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        return Path(fp.get_output_directory())
    return Path(os.environ.get(OUTPUT_DIR_ENV, "output")).absolute()


def temp_directory() -> Path:
    """ComfyUI's temp folder (previews; cleared on restart), or a `.temp` folder beside ./output."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        return Path(fp.get_temp_directory())
    return output_directory().parent / ".spacetime-temp"


def user_directory() -> Path:
    """ComfyUI's user folder (settings, the prompt blocklist), or $SPACETIME_USER_DIR, or ./user."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        return Path(fp.get_user_directory())
    return Path(os.environ.get(USER_DIR_ENV, "user")).absolute()


def _fallback_models_dir(kind: str) -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV, "models")).absolute() / kind


def model_filenames(kind: str) -> list[str]:
    """Model files of one kind ("diffusion_models", "text_encoders", "vae"), as ComfyUI lists them."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        return list(fp.get_filename_list(kind))
    folder = _fallback_models_dir(kind)
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def model_path(kind: str, filename: str) -> Path:
    """Full path of a model file picked from `model_filenames(kind)`."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        return Path(fp.get_full_path_or_raise(kind, filename))
    path = _fallback_models_dir(kind) / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"Model file {filename!r} was not found in {path.parent} (the {kind!r} folder). "
            f"Put it there, or set {MODELS_DIR_ENV} to the folder that holds '{kind}/'."
        )
    return path


def metadata_disabled() -> bool:
    """True when ComfyUI runs with --disable-metadata (files must then carry no prompt or workflow)."""
    cli_args = _comfy_module("comfy.cli_args")
    return bool(cli_args is not None and getattr(cli_args.args, "disable_metadata", False))
