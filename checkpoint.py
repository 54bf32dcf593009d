"""Reading model files safely: safetensors only (single files or shards with an index), tensors
cast one at a time as they load, and errors that say what the file looks like and what to do.

Pickle files (.ckpt, .pt, .pth, .bin) are never opened at run time: unpickling can run code.
`python -m spacetime convert` turns one into safetensors once, without executing it.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from . import host

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
_SHARD = re.compile(r"^(?P<stem>.+)-\d{5}-of-\d{5}\.safetensors$")
MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit on a header's length
MAX_INDEX_BYTES = 64 * 2**20  # a shard index lists names only: the largest released ones are a few hundred KB
FINITE_CHECK_CHUNK = 2**24  # elements looked at a time when checking weights for NaN and infinity

# Recognisable key patterns, to tell users what a wrong file actually is.
_KNOWN_MODELS = (
    ("head.modulation", "a Wan diffusion transformer"),
    ("condition_embedder.time_embedder", "a Wan transformer in diffusers format"),
    ("decoder.middle.0.residual.0.gamma", "a Wan VAE"),
    ("decoder.up_blocks.", "a VAE in diffusers format"),
    ("encoder.block.0.layer.0.SelfAttention", "a T5/UMT5 text encoder"),
    ("blocks.0.attn.q.weight", "a Wan T5 text encoder (original format)"),
    ("spiece_model", "a UMT5 text encoder"),
    ("input_blocks.0.0.weight", "a Stable Diffusion UNet"),
    ("down_blocks.0.resnets", "a UNet in diffusers format"),
    ("double_blocks.0.img_attn", "a Flux transformer"),
    ("joint_blocks.0", "an SD3 transformer"),
    ("first_stage_model.", "a full Stable Diffusion checkpoint"),
    ("vision_model.encoder", "a CLIP vision encoder"),
)


class CheckpointError(ValueError):
    """A model file that cannot be used, with what was found and how to fix it."""


def describe(keys) -> str:
    """What a set of tensor names looks like, in words."""
    keys = list(keys)
    for marker, description in _KNOWN_MODELS:
        if any(marker in key for key in keys):
            return description
    shown = ", ".join(_cut(key) for key in sorted(keys)[:4])
    return f"an unrecognised model (first tensors: {shown})" if keys else "an empty file"


def layer_count(shapes, pattern: re.Pattern, source: str, what: str, limit: int) -> int:
    """How many numbered layers a file holds (`pattern` captures the number in a tensor name), checked
    before anything is built from it: numbered from 0 without a gap, and at most `limit` of them."""
    numbers = {m.group(1) for key in shapes if (m := pattern.match(key))}
    if not numbers:
        raise CheckpointError(f"{source} has no {what}: the file is incomplete or damaged.")
    indices = {int(number) if len(number) <= 9 else limit for number in numbers}
    last = max(indices)
    if last >= limit:
        shown = max(numbers, key=lambda number: (len(number), number))
        shown = shown if len(shown) <= 20 else f"{shown[:20]}... ({len(shown)} digits)"
        raise CheckpointError(
            f"{source} has {what} numbered up to {shown}; the models this pack reads have at most {limit}. "
            "It is not a model this pack reads (the file is damaged or crafted)."
        )
    if len(indices) != last + 1:
        gaps = sorted(set(range(last + 1)) - indices)
        raise CheckpointError(
            f"{source} has {what} up to {last} but none numbered {', '.join(map(str, gaps[:4]))}: the "
            "file is damaged or was cut from several models. Download it again."
        )
    return last + 1


def check_limits(
    source: str, sizes: dict[str, int | tuple[int, ...]], limits: dict[str, tuple[int, int]], family: str
) -> None:
    """Sizes read from a file's shapes and metadata (a number, or a tuple of them), each within what `family`
    models use (with room to spare), checked before anything is built from them."""
    for name, value in sizes.items():
        low, high = limits[name]
        if not all(low <= each <= high for each in (value if isinstance(value, tuple) else (value,))):
            raise CheckpointError(
                f"{source}: {name}={value} is outside what {family} models use ({low} to {high}). It is not a "
                "model this pack reads (the file is damaged, crafted or of another architecture)."
            )


def metadata_int(metadata: dict[str, str], key: str, source: str) -> int | None:
    """A whole number from a file's metadata (None when it has none), or an error naming the entry."""
    value = metadata.get(key)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise CheckpointError(
            f"{source} has unusable metadata {key}={_cut(value)!r}: expected a whole number such as 64."
        )
    return int(value)


def _cut(value: str, limit: int = 60) -> str:
    """A name or value from a file, cut short for a message: a file's names and metadata can be of any length."""
    return value if len(value) <= limit else value[:limit] + "..."


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path.name} is a pickle checkpoint ({path.suffix}). Spacetime loads only .safetensors files: "
            "unpickling a file can run arbitrary code. Convert it once, safely (tensors only, no code is run), with:\n"
            f"  python -m spacetime convert {path} {path.with_suffix('.safetensors')}"
        )


def shard_files(path: Path) -> list[Path]:
    """The files that make up a checkpoint: itself, or every shard named by its index json."""
    index = None
    if path.name.endswith(".index.json"):
        index = path
    elif match := _SHARD.match(path.name):
        candidate = path.with_name(f"{match['stem']}.safetensors.index.json")
        index = candidate if candidate.is_file() else None
    if index is None:
        return [path]
    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise ValueError(f"{index.stat().st_size:,} bytes, more than an index of names needs")
        weight_map = json.loads(index.read_text())["weight_map"]
        names = list(dict.fromkeys(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{index.name} is not a safetensors index (no readable weight_map): {error}"
        ) from None
    odd = [
        name
        for name in names
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..")
    ]
    if odd:
        raise CheckpointError(
            f"{index.name} names a shard {_cut(str(odd[0]))!r} that is not a file name beside it; an index "
            "lists the shards of its own folder."
        )
    files = [index.parent / name for name in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index.name} names shards that are not beside it: {', '.join(missing[:3])}")
    return files


def read_keys(path: Path | str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor names with their shapes and dtypes, without reading any data."""
    path = Path(path)
    refuse_pickle(path)
    found = {}
    for file in shard_files(path):
        with _open(file) as handle:
            for key in handle.keys():
                sliced = handle.get_slice(key)
                found[key] = (tuple(sliced.get_shape()), sliced.get_dtype())
    return found


def read_metadata(path: Path | str) -> dict[str, str]:
    """The safetensors header's string metadata (of the first shard), {} when there is none."""
    path = Path(path)
    refuse_pickle(path)
    with _open(shard_files(path)[0]) as handle:
        return dict(handle.metadata() or {})


def read_tensors(
    path: Path | str,
    keys: list[str] | None = None,
    convert: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Load tensors (all, or `keys`), passing each through `convert` as it arrives so that a cast
    never holds two full copies of the weights."""
    path = Path(path)
    refuse_pickle(path)
    host.usable_device(device)  # a device this machine lacks is said so, not blamed on the file
    wanted = None if keys is None else set(keys)
    tensors = {}
    for file in shard_files(path):
        with _open(file, device) as handle:
            for key in handle.keys():
                if wanted is not None and key not in wanted:
                    continue
                try:
                    tensor = handle.get_tensor(key)
                except (SafetensorError, OSError) as error:
                    raise _corrupt(file, error) from None
                _check_finite(tensor, file, key)
                if convert:
                    stored, tensor = tensor.dtype, convert(key, tensor)
                    if tensor.dtype != stored:
                        _check_finite(tensor, file, key, stored)
                tensors[key] = tensor
    return tensors


def _check_finite(tensor: torch.Tensor, file: Path, key: str, stored: torch.dtype | None = None) -> None:
    """Refuse NaN or infinite weights as they load: no output can come from them. `stored`: the file's
    dtype, when the tensor was cast for storage (its values overflowed the cast)."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return
    chunks = tensor.reshape(-1).split(FINITE_CHECK_CHUNK)
    bad = sum(int((~torch.isfinite(c.float())).sum()) for c in chunks if _has_nonfinite(c))
    if not bad:
        return
    if stored is not None:
        raise CheckpointError(
            f"{file.name}: {key} holds values beyond the range of {tensor.dtype} ({bad:,} of {tensor.numel():,} "
            f"became NaN or infinite when cast from the file's {stored}). Keep the weights in a wider dtype "
            "(weight_dtype default, bf16 or fp32)."
        )
    raise CheckpointError(
        f"{file.name}: {key} holds {bad:,} NaN or infinite weights (of {tensor.numel():,}). No picture can "
        "come from them: the file is damaged (a failed conversion, merge or training run, or a corrupt "
        "download). Download or convert it again."
    )


# fp8 kinds with a sign bit: the lowest magnitude bits that are NaN or infinite (e4m3fn: 0x7F is NaN; e5m2: an
# exponent of all ones). Their bytes read as int8 and uint8 show them in a maximum, at memory speed.
_FP8_SPECIALS = {torch.float8_e4m3fn: 0x7F, torch.float8_e5m2: 0x7C}


def _has_nonfinite(chunk: torch.Tensor) -> bool:
    """Whether a non-empty chunk of a floating-point tensor holds NaN or infinity: a minimum and maximum
    (NaN and infinity show in them) in one pass, fast in every dtype the files use."""
    special = _FP8_SPECIALS.get(chunk.dtype)
    if special is not None:  # positive patterns top the int8 view, negative ones the uint8 view
        return (
            int(chunk.view(torch.int8).amax()) >= special
            or int(chunk.view(torch.uint8).amax()) >= 0x80 + special
        )
    low, high = torch.aminmax(chunk.float() if chunk.element_size() == 1 else chunk)
    return not bool(torch.isfinite(low) & torch.isfinite(high))


class _open:
    """safe_open with our errors."""

    def __init__(self, file: Path, device: torch.device | str = "cpu"):
        self.file, self.device = file, str(device)

    def __enter__(self):
        if self.file.is_dir():
            raise CheckpointError(
                f"{self.file} is a folder, not a model file: give the .safetensors file in it."
            )
        if not self.file.is_file():
            raise FileNotFoundError(f"Model file not found: {self.file}")
        if self.file.suffix.lower() != ".safetensors":
            raise CheckpointError(
                f"{self.file.name} is not a .safetensors file; Spacetime loads only safetensors."
            )
        try:
            self.context = safe_open(str(self.file), framework="pt", device=self.device)
            return self.context.__enter__()
        except PermissionError:
            raise CheckpointError(
                f"{self.file} cannot be read: permission denied (the file itself may be fine). Give the user "
                "running Spacetime read access to it."
            ) from None
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise _corrupt(self.file, error) from None

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


def _corrupt(file: Path, error: Exception) -> CheckpointError:
    if _pickled(file):
        return _misnamed_pickle(file)
    try:
        size = f"{file.stat().st_size:,} bytes"
    except OSError:
        size = "no longer there"
    reason = str(error).strip().rstrip(".") or type(error).__name__
    return CheckpointError(
        f"{file.name} ({size}) is not a readable safetensors file: {reason}. "
        "It is probably truncated or corrupt (an interrupted download?): download it again."
    )


def _pickled(file: Path) -> bool:
    """Whether a file starts as torch.save's files do (a zip archive, or a pickle of protocol 2 to 5), and
    not as a safetensors file may (its first 8 bytes: the length of a header that the file holds)."""
    try:
        with file.open("rb") as handle:
            start = handle.read(8)
        size = file.stat().st_size
    except OSError:
        return False
    header = int.from_bytes(start, "little")
    if len(start) == 8 and header <= MAX_SAFETENSORS_HEADER and header + 8 <= size:
        return False
    return start[:4] == b"PK\x03\x04" or (len(start) >= 2 and start[0] == 0x80 and 2 <= start[1] <= 5)


def _misnamed_pickle(file: Path) -> CheckpointError:
    renamed = file.with_suffix(".pth")
    return CheckpointError(
        f"{file.name} is a pickle checkpoint (a torch.save file) under a .safetensors name; Spacetime loads only "
        f"safetensors (unpickling a file can run arbitrary code). Rename it to {renamed.name}, then convert it "
        f"once, safely, with:\n  python -m spacetime convert {renamed} {file}"
    )


def convert_pickle_to_safetensors(source: Path, destination: Path) -> int:
    """Convert a pickle checkpoint once, loading tensors only (`weights_only=True` runs no code). Both names
    are checked before anything is read; nothing is left behind when it fails."""
    from safetensors.torch import save_file

    _check_conversion(source, destination)
    try:
        with warnings.catch_warnings():
            # torch's note on a plain pickle's protocol would print a line of its source above our message
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            try:
                loaded = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                loaded = torch.load(source, map_location="cpu", weights_only=True)  # a pre-zip (legacy) file
    except Exception as error:  # a damaged file fails in many ways; with weights_only none of them ran code
        raise CheckpointError(
            f"{source.name} was refused: it holds objects other than tensors (or is damaged), and loading those "
            f"could run code. Nothing was written. Details: {_load_failure(error)}"
        ) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{source.name} holds a {type(loaded).__name__}, not a dictionary of tensors.")
    for key in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict) and len(loaded) <= 3:
            loaded = loaded[key]
    tensors, seen = {}, set()
    for key, value in loaded.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            if value.layout != torch.strided:
                raise CheckpointError(
                    f"{source.name}: {_cut(key)!r} is a {value.layout} tensor; safetensors stores dense tensors only."
                )
            value = value.contiguous()
            shared = value.untyped_storage().data_ptr() in seen  # tied weights: safetensors wants copies
            seen.add(value.untyped_storage().data_ptr())
            tensors[key] = value.clone() if shared else value
    if not tensors:
        raise CheckpointError(f"{source.name} holds no tensors to convert.")
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        save_file(tensors, str(partial), metadata={"converted_from": source.name})
        partial.rename(destination)
    except (SafetensorError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise OSError(f"could not write {destination}: {error}. Nothing was written.") from None
    return len(tensors)


def _check_conversion(source: Path, destination: Path) -> None:
    """What `convert` is asked, checked before the source is read: a non-empty file in, a new
    .safetensors file in an existing folder out."""
    if source.is_dir():
        raise CheckpointError(
            f"{source} is a folder; give the checkpoint file inside it (.pth, .pt, .ckpt or .bin)."
        )
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist.")
    if source.stat().st_size == 0:
        raise CheckpointError(f"{source.name} is empty (0 bytes): there is nothing in it to convert.")
    if source.suffix.lower() == ".safetensors" and _pickled(source):
        raise _misnamed_pickle(source)
    if destination.suffix.lower() != ".safetensors":
        raise ValueError(
            f"{destination.name}: the converted file's name must end in .safetensors (Spacetime loads only "
            f"safetensors, and refuses other names as pickles); e.g. {destination.with_suffix('.safetensors')}"
        )
    if destination.exists():
        raise FileExistsError(f"{destination} exists; choose another output name or remove it first.")
    if not destination.parent.is_dir():
        raise FileNotFoundError(
            f"the folder {destination.parent} does not exist: create it first, or write the file elsewhere."
        )


# Sentences of torch.load's errors that advise loading the file with its code allowed: never ours to repeat.
_UNSAFE_ADVICE = ("weights_only", "torch.load", "safe_globals", "allowlist", "trust", "still be loaded")
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _load_failure(error: Exception) -> str:
    """What torch.load found wrong (the code a pickle asks to run, or why the file is damaged), without its
    advice on how to let that code run."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # no terminal colours
    if refused := _REFUSED_GLOBAL.search(text):
        return f"the file asks to run {refused[1]}, which a load of tensors alone refuses."
    sentences = re.split(r"(?<=\.)\s+", " ".join(text.split()))
    kept = " ".join(s for s in sentences if s and not any(advice in s for advice in _UNSAFE_ADVICE))
    return (kept[:300] + "...") if len(kept) > 300 else kept or type(error).__name__
