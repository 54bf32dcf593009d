"""Block streaming: a DiT run under a budget that forces streaming gives exactly the resident output,
and what is placed on the compute device never exceeds the budget."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from spacetime.dit.wan import WanDiT
from spacetime.streaming import BlockStreaming, DoesNotFit, module_bytes, plan_placement, repeated_blocks

from wan_reference import T2V, random_wan_state_dict

CONFIG = replace(T2V, num_layers=6)


@pytest.fixture(scope="module")
def dit() -> WanDiT:
    model = WanDiT(CONFIG)
    model.load_state_dict(random_wan_state_dict(CONFIG, seed=3))
    return model.eval().requires_grad_(False)


def _inputs():
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(2, 16, 2, 4, 4, generator=generator)
    context = torch.randn(2, 7, CONFIG.text_dim, generator=generator)
    return latent, torch.tensor([900.0, 300.0]), context


def _sizes(model):
    blocks = [module_bytes(b) for b in repeated_blocks(model)]
    return module_bytes(model) - sum(blocks), blocks


def test_the_repeated_blocks_are_the_dits_blocks(dit):
    assert repeated_blocks(dit) is dit.blocks


@pytest.mark.parametrize("resident", [0, 1, 3])
def test_streamed_output_is_exactly_the_resident_output(dit, resident):
    rest, blocks = _sizes(dit)
    budget = (
        rest + sum(blocks[:resident]) + 2 * blocks[0]
    )  # blocks are equal: room for `resident` and two slots
    with torch.no_grad():
        expected = dit(*_inputs())
        streaming = BlockStreaming(dit, torch.device("cpu"), budget)
        assert streaming.placement.resident == resident
        assert streaming.placement.streamed == len(blocks) - resident
        with streaming:
            first, second = dit(*_inputs()), dit(*_inputs())  # two forwards, as two sampling steps
        after = dit(*_inputs())
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert torch.equal(after, expected)  # the model is as it was after streaming
    assert streaming.peak_bytes <= budget
    assert streaming.placed_bytes == 0


def test_placed_bytes_never_exceed_the_budget_plus_one_block(dit):
    """Counted during the forward, block by block: the resident part, the block running and the one
    arriving; and the streamed blocks really are separate copies only while they run."""
    rest, blocks = _sizes(dit)
    budget = rest + blocks[0] * 5 // 2  # no block resident: two and a half blocks of room
    streaming = BlockStreaming(dit, torch.device("cpu"), budget)
    seen, in_use = [], []
    stored = {}

    def record(module, _args):
        seen.append(streaming.placed_bytes)
        weight = module.self_attn.q.weight
        in_use.append(weight.data_ptr() != stored[id(module)])

    with torch.no_grad(), streaming:
        for block in dit.blocks:
            stored[id(block)] = block.self_attn.q.weight.data_ptr()  # the CPU copy, between uses
        hooks = [b.register_forward_pre_hook(record) for b in dit.blocks]
        try:
            dit(*_inputs())
        finally:
            for hook in hooks:
                hook.remove()
        between = [b.self_attn.q.weight.data_ptr() == stored[id(b)] for b in dit.blocks[1:]]
    assert streaming.placement.resident == 0
    assert len(seen) == len(blocks)
    assert max(seen) <= budget + blocks[0]
    assert streaming.peak_bytes <= budget
    assert min(seen) >= rest + 2 * blocks[0]  # the running block and the next one arriving
    assert all(in_use)  # each block ran on its device copy...
    assert all(between)  # ...and after its turn points at its stored copy again


def test_everything_resident_when_the_budget_allows(dit):
    placement = plan_placement(dit, module_bytes(dit))
    assert placement.resident == len(dit.blocks) and placement.describe() == "all resident"


def test_a_budget_below_two_blocks_is_a_clear_error(dit):
    rest, blocks = _sizes(dit)
    with pytest.raises(DoesNotFit, match=r"needs at least .* GB on the device even with its blocks streamed"):
        plan_placement(dit, rest + blocks[0])
