"""How a generated clip goes back together with the frames it came from: the source frames come back
exactly where they were known, the jump where they meet the new frames (the VAE's loss, any step beyond
the generated motion) is spread over the neighbouring new frames with a linearly fading weight, so no step
stands out, and the frames before and after the generated clip are joined on. Also for streams of frames
(long videos' window joins): `spread_joins`.

Axes: F pixel frames, B batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ..inputs import check_image
from .placement import ClipPlan

DEFAULT_BLEND = 4  # new frames over which the jump where known and new frames meet is spread


def assemble(
    plan: ClipPlan, decoded: torch.Tensor, blend: int = DEFAULT_BLEND
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded frames of the generated clip(s) (B·F×H×W×3) -> (the joined result, only the new frames).

    Known frames come back exactly as they were given. Where a known frame meets a new one, the step
    between them is the generated motion (the next step of the new frames) plus a jump: the VAE's loss at
    the known frame, the decoder's step between its latent frames, and whatever the model did not carry
    over. The jump is spread evenly over the join and the `blend` steps after it (an offset falling
    linearly to 0 over `blend` new frames), so no single step carries it."""
    ClipPlan.check(plan)
    check_image(decoded, "images")
    batch, count, known = plan.batch, plan.frames, plan.known
    size = None if plan.sources is None else tuple(plan.sources.shape[2:4])
    if (
        decoded.ndim != 4
        or decoded.shape[0] != batch * count
        or size not in (None, tuple(decoded.shape[1:3]))
    ):
        expected = f"{batch * count} frames" + ("" if size is None else f" of {size[1]}x{size[0]}")
        raise ValueError(
            f"frames of shape {tuple(decoded.shape)} are not this plan's decoded clip ({plan.describe()}; "
            f"expected {expected}): connect the VAE Decode of the latent that came with this plan."
        )
    if blend < 0:
        raise ValueError(f"blend={blend}: expected 0 or more frames.")
    generated = decoded.float().reshape(batch, count, *decoded.shape[1:]).clone()
    if plan.sources is not None:
        sources = plan.sources.to(generated)
        slot = torch.cumsum(known.long(), 0) - 1  # frame -> its index among the known frames
        joined = generated.clone()
        joined[:, known] = sources
        for first, step in _joins(known):  # first new frame after a known one, walking away from it
            run = _new_run(known, first, step)[: max(blend, 2)]
            joined[:, run] = spread_jump(sources[:, slot[first - step]], generated[:, run], blend)
        generated = joined.clamp(0.0, 1.0)
    new = generated[:, ~known].flatten(0, 1)
    kept = generated[:, plan.kept].flatten(0, 1)
    parts = [part for part in (plan.before, kept, plan.after) if part is not None and len(part)]
    return torch.cat([part.float() for part in parts]), new


def spread_jump(previous: torch.Tensor, run: torch.Tensor, blend: int) -> torch.Tensor:
    """New frames `run` (B×N×…, in order walking away from a join) after `previous` (B×…, the frame on the
    other side) -> the run with the jump at the join spread over `blend` frames. The jump is the step into
    the run beyond the run's own next step; frame i of the run (i < blend) gives back (blend - i)/(blend + 1)
    of it, so the join and the `blend` steps after it each carry 1/(blend + 1)."""
    after = run[:, 1] - run[:, 0] if run.shape[1] > 1 else 0.0
    jump = run[:, 0] - previous - after
    count = min(blend, run.shape[1])
    weights = 1.0 - torch.arange(1, count + 1, dtype=run.dtype) / (blend + 1)
    spread = run.clone()
    spread[:, :count] -= weights.view(1, -1, *[1] * (run.ndim - 2)) * jump.unsqueeze(1)
    return spread


def spread_joins(
    chunks: Iterable[torch.Tensor], joins: Iterable[int], blend: int = DEFAULT_BLEND
) -> Iterator[torch.Tensor]:
    """A stream of frame chunks (each N×H×W×3 in 0..1) -> the same frames with the jump at each join j (the
    step from frame j-1 to frame j) spread as `assemble` spreads it; each join holds back at most
    max(blend, 2) frames."""
    starts = set(joins)
    need = max(blend, 2)
    held: list[torch.Tensor] = []  # frames read but not yet given out; held[0] is frame `index`
    index, previous = 0, None

    def ready(final: bool) -> list[torch.Tensor]:
        nonlocal index, previous, held
        out = []
        while held:
            if index in starts and previous is not None:
                following = [j for j in starts if j > index]
                room = min(need, min(following) - index) if following else need
                if len(held) < room and not final:
                    break
                run = torch.stack(held[:room]).float()
                done = spread_jump(previous.float()[None], run[None], blend)[0].clamp(0.0, 1.0)
                done = done.to(held[0].dtype)
                out.extend(done)
                held, index = held[room:], index + room
            else:
                out.append(held.pop(0))
                index += 1
            previous = out[-1]
        return out

    for chunk in chunks:
        held.extend(chunk)
        out = ready(final=False)
        if out:
            yield torch.stack(out)
    out = ready(final=True)
    if out:
        yield torch.stack(out)


def _joins(known: torch.Tensor) -> list[tuple[int, int]]:
    """(first new frame, direction away from the known frame) at every place a known frame meets a new one."""
    flags = known.tolist()
    return [
        (frame, step)
        for frame in range(len(flags))
        if not flags[frame]
        for step in (1, -1)
        if 0 <= frame - step < len(flags) and flags[frame - step]
    ]


def _new_run(known: torch.Tensor, first: int, step: int) -> list[int]:
    """The new frames from `first` onwards in direction `step`, up to the next known frame or the end."""
    run, frame = [], first
    while 0 <= frame < len(known) and not bool(known[frame]):
        run.append(frame)
        frame += step
    return run
