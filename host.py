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


def usable_device(device: torch.device | str) -> torch.device:
    """`device` as a torch.device when this machine can use it, else a ValueError saying why: a name torch
    does not know, a backend this machine or this torch build lacks, or an index past the devices present."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device {str(device)!r} is not a device name: use cpu, cuda, cuda:1 (a GPU by number) or mps."
        ) from None
    if parsed.type in ("cpu", "meta"):
        if parsed.index:
            raise ValueError(f"device {str(parsed)!r}: the CPU is one device; use cpu.")
        return parsed
    backend = getattr(torch, parsed.type, None)  # torch.cuda, torch.mps, torch.xpu; others pass unchecked
    available = getattr(backend, "is_available", None)
    if available is not None and not available():
        raise ValueError(
            f"device {str(parsed)!r}: this machine has no {parsed.type} device that torch {torch.__version__} "
            "can use (no such GPU, or a torch built without it). Use cpu, or leave the device out to use what "
            "is there."
        )
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(
            f"device {str(parsed)!r}: this machine has {count} {parsed.type} device(s), numbered from 0."
        )
    return parsed


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


_memory_budget: int | None = None  # bytes the command line may use on the compute device (--vram)


def set_memory_budget(gigabytes: float | None) -> None:
    """How much of the compute device's memory models and their work may use outside ComfyUI (None: what
    is free when each model is placed)."""
    global _memory_budget
    _memory_budget = None if gigabytes is None else int(gigabytes * 1e9)


def _model_name(module: torch.nn.Module) -> str:
    config = getattr(module, "config", None)
    return getattr(config, "name", None) or type(module).__name__


@contextlib.contextmanager
def on_compute_device(module: torch.nn.Module, working_bytes: int | None = None) -> Iterator[torch.device]:
    """Run `module` on the compute device for the duration of the block and yield that device.

    `working_bytes`: the memory its work needs beside its weights (default: a third of the weights).
    Inside ComfyUI the host's model management places it (evicting other models, loading it partially
    when it does not fit) and keeps it there between runs. Outside, it is moved there whole when it fits
    the budget (`set_memory_budget`, else the free memory), its blocks are streamed when it does not,
    and `streaming.DoesNotFit` says what to change when even that cannot fit.
    """
    device, home = compute_device(), next(module.parameters()).device
    weights = model_bytes(module)
    working = int(weights * (HEADROOM - 1)) if working_bytes is None else int(working_bytes)
    mm = _comfy_module("comfy.model_management")
    if _comfy_module("comfy.model_patcher") is not None and _host_can_manage(module):
        yield _host_load(module, working)
        return
    if device == home:
        _note(module, f"on {home}")
        yield home
        return
    if mm is not None:  # a model the host cannot manage: make room for it as the host would
        mm.free_memory(weights + working, device)
    budget = _memory_budget if _memory_budget is not None else free_memory_bytes(device)
    if weights + working <= budget:
        _note(module, f"all resident on {device}")
        module.to(device)
        try:
            yield device
        finally:
            module.to(home)
        return
    with _streamed(module, device, budget, working) as streaming:
        _note(module, f"on {device}, {streaming.placement.describe()}")
        yield device


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def _note(module: torch.nn.Module, where: str) -> None:
    """The console line saying where a model runs and how much of it is resident: once, and again only
    when that changes (a long video places its models once per window)."""
    line = f"{_model_name(module)}: {_size(model_bytes(module))} {where}."
    if module.__dict__.get("_spacetime_placement") != line:
        module.__dict__["_spacetime_placement"] = line
        log.info(line)


def _casts_on_use(module: torch.nn.Module) -> bool:
    """Whether the module's layers fetch their weights on each call (ops.CastsOnUse), so the host may leave
    some in CPU memory; other modules (the VAE) are loaded whole."""
    return any(hasattr(m, "comfy_cast_weights") for m in module.modules())


def _host_can_manage(module: torch.nn.Module) -> bool:
    """The host's ModelPatcher records a model's device on it: not possible where `device` is a read-only
    property (transformers models, such as the prompt writer's language model), moved whole instead."""
    return not isinstance(getattr(type(module), "device", None), property)


def _host_patcher(module: torch.nn.Module):
    """The host's ModelPatcher for `module`, made once and kept on it (the host holds only weak references).
    Layers that cast on use get the host's default class (dynamic VRAM where the host enables it)."""
    module = module.__dict__.get("_spacetime_base", module)  # a LoRA handle shares its model's weights
    patcher = module.__dict__.get("_spacetime_patcher")
    if patcher is None:
        patchers, mm = _comfy_module("comfy.model_patcher"), _comfy_module("comfy.model_management")
        kind = getattr(patchers, "CoreModelPatcher", patchers.ModelPatcher) if _casts_on_use(module) else None
        patcher = (kind or patchers.ModelPatcher)(
            module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
        )
        module.__dict__["_spacetime_patcher"] = patcher
    return patcher


def _host_load(module: torch.nn.Module, working: int) -> torch.device:
    """Hand `module` to ComfyUI's model management and load it for use (partially when it does not fit);
    it stays loaded between runs until the host needs the room. One console line when it was (re)loaded."""
    mm = _comfy_module("comfy.model_management")
    patcher = _host_patcher(module)
    before = patcher.loaded_size() if any(m.model is patcher for m in mm.current_loaded_models) else -1
    mm.load_models_gpu([patcher], memory_required=working, force_full_load=not _casts_on_use(module))
    loaded, size = patcher.loaded_size(), patcher.model_size()
    if loaded != before:  # loaded now, or more or less of it than before
        share = "all resident" if loaded >= size else f"{_size(loaded)} resident, the rest cast on use"
        log.info("%s: %s on %s (ComfyUI), %s.", _model_name(module), _size(size), patcher.load_device, share)
    return patcher.load_device


@contextlib.contextmanager
def cast_layer(module: torch.nn.Module, like: torch.Tensor, dtype: torch.dtype | None):
    """(weight, bias) of a layer the host loaded partially, fetched for one call by the host's own cast
    (its offload streams and dynamic VRAM pages on 0.33, its weight patches), on `like`'s device."""
    ops = _comfy_module("comfy.ops")
    if hasattr(ops, "CastBiasWeightContext"):
        with ops.CastBiasWeightContext(module, like, dtype=dtype, bias_dtype=dtype, offloadable=True) as pair:
            yield pair
    else:
        yield ops.cast_bias_weight(module, like, dtype=dtype, bias_dtype=dtype)


def _streamed(module: torch.nn.Module, device: torch.device, budget: int, working: int):
    """The module's blocks streamed within what `budget` leaves beside `working`, or a clear error."""
    from .streaming import BlockStreaming, DoesNotFit

    try:
        return BlockStreaming(module, device, budget - working)
    except DoesNotFit as error:
        raise DoesNotFit(
            f"{_model_name(module)} does not fit on {device}: its work needs about {working / 1e9:.1f} GB beside "
            f"its weights ({model_bytes(module) / 1e9:.1f} GB) and {budget / 1e9:.1f} GB is available. {error} "
            "Make the video shorter or smaller, generate it in windows (Long Video), decode it in tiles, or "
            "store the weights in fp8 (weight_dtype); outside ComfyUI, --vram sets how much memory to use."
        ) from None


class Stopped(BaseException):
    """The command line was told to stop (SIGTERM, Ctrl-C): raised where the run is, and again at every later
    progress step, as ComfyUI's cancel is, so that a library's bare `except:` cannot swallow it for good and
    the run unwinds, removing its partial file."""


_stop_reason: str | None = None


def request_stop(reason: str | None) -> None:
    """Make every later throw_if_interrupted raise Stopped(reason); None withdraws the request."""
    global _stop_reason
    _stop_reason = reason


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user pressed cancel, or Stopped once the command line
    was told to stop."""
    if _stop_reason is not None:
        raise Stopped(_stop_reason)
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


# Progress ----------------------------------------------------------------------------------


_console_shown = True


def show_console(shown: bool) -> None:
    """Whether the command line's progress bars and notes are shown (off in all but one of torchrun's
    processes, which would otherwise each draw them)."""
    global _console_shown
    _console_shown = shown
    logging.getLogger("spacetime").setLevel(logging.INFO if shown else logging.ERROR)


class ConsoleProgressBar:
    """A minimal progress bar on stderr for the command line; silent when stderr is not a terminal."""

    def __init__(self, total: int, description: str = "", stream=None):
        self.total = max(int(total), 1)
        self.current = 0
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        self._last_draw = 0.0
        self._enabled = stream is not None or (
            _console_shown and getattr(self.stream, "isatty", lambda: False)()
        )

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


def temp_directory() -> Path | None:
    """ComfyUI's temp folder (previews; cleared on restart); None outside ComfyUI, where no browser
    shows a preview and nothing would clear one."""
    fp = _comfy_module("folder_paths")
    return Path(fp.get_temp_directory()) if fp is not None else None


def user_directory() -> Path:
    """ComfyUI's user folder (settings, the prompt blocklist), or $SPACETIME_USER_DIR, or ./user."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        return Path(fp.get_user_directory())
    return Path(os.environ.get(USER_DIR_ENV, "user")).absolute()


# Model folders the pack ships, listed beside the user's own: Tiny World's LoRA.
PACK_FOLDERS = {"loras": (Path(__file__).resolve().parent / "tiny_world" / "loras",)}


def register_pack_folders() -> None:
    """Inside ComfyUI, add the pack's own model folders to ComfyUI's lists (its loaders and ours see them)."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        for kind, folders in PACK_FOLDERS.items():
            for folder in folders:
                fp.add_model_folder_path(kind, str(folder))


def _fallback_models_dirs(kind: str) -> list[Path]:
    return [Path(os.environ.get(MODELS_DIR_ENV, "models")).absolute() / kind, *PACK_FOLDERS.get(kind, ())]


def model_filenames(kind: str) -> list[str]:
    """Model files of one kind ("diffusion_models", "text_encoders", "vae", "loras"), as ComfyUI lists them."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        return list(fp.get_filename_list(kind))
    found = {
        str(p.relative_to(folder))
        for folder in _fallback_models_dirs(kind)
        if folder.is_dir()
        for p in folder.rglob("*")
        if p.is_file()
    }
    return sorted(found)


def model_path(kind: str, filename: str) -> Path:
    """Full path of a model file picked from `model_filenames(kind)`: a name inside the kind's folders."""
    fp = _comfy_module("folder_paths")
    if fp is not None:
        return Path(fp.get_full_path_or_raise(kind, filename))
    folders = _fallback_models_dirs(kind)
    relative = _inside_name(kind, filename)
    for folder in folders:
        if (folder / relative).is_file():
            return folder / relative
    raise FileNotFoundError(
        f"Model file {filename!r} was not found in {folders[0]} (the {kind!r} folder). "
        f"Put it there, or set {MODELS_DIR_ENV} to the folder that holds '{kind}/'."
    )


def model_folder(kind: str, name: str) -> Path:
    """A model kept as a folder (a transformers language model) named inside models/<kind>: ComfyUI's
    models folder, or $SPACETIME_MODELS_DIR, or ./models. Nothing outside it is looked at."""
    relative = _inside_name(kind, name)
    fp = _comfy_module("folder_paths")
    if fp is not None:
        known = kind in getattr(fp, "folder_names_and_paths", {})
        folders = [Path(f) for f in fp.get_folder_paths(kind)] if known else [Path(fp.models_dir) / kind]
    else:
        folders = _fallback_models_dirs(kind)
    for folder in folders:
        if (folder / relative).is_dir():
            return folder / relative
    raise FileNotFoundError(
        f"There is no folder {name!r} in {folders[0]} (the {kind!r} folder). Put the model's folder there, "
        f"or set {MODELS_DIR_ENV} to the folder that holds '{kind}/'."
    )


def _inside_name(kind: str, name: str) -> Path:
    """A name picked from a model folder's list, as a path relative to it: never absolute, never with '..'
    (which would reach outside the models folder), whether or not such a file exists."""
    relative = Path(name)
    if not name or "\0" in name or relative.is_absolute() or relative.anchor or ".." in relative.parts:
        raise ValueError(
            f"{kind} name {name!r} must name something inside the {kind!r} models folder (a name such as "
            "'model.safetensors' or 'wan/model.safetensors'; no absolute path, no '..')."
        )
    return relative


def metadata_disabled() -> bool:
    """True when ComfyUI runs with --disable-metadata (files must then carry no prompt or workflow)."""
    cli_args = _comfy_module("comfy.cli_args")
    return bool(cli_args is not None and getattr(cli_args.args, "disable_metadata", False))
