"""Pipeline parallelism: the split, the stages' names, and training that matches the unsplit GPT.

The pipelined runs start two CPU processes (gloo) that talk through a file store in ``tmp_path``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
import torch.nn.functional as F

from model.config import GPTConfig
from model.gpt import GPT
from model.optim import parameter_groups
from model.stages import LocalStages, PipelinedGPT, Stage, split_blocks

# 4 blocks, so that interleaved 1F1B on 2 ranks has 4 one-block stages; a padded vocabulary (96 -> 128).
# No query/key/value bias: the key bias's gradient is zero in exact arithmetic (a softmax ignores a
# shift shared by all keys), and AdamW would turn two runs' different rounding noise into full steps.
CONFIGS = {
    "learned": GPTConfig(vocab_size=96, vocab_multiple=64, context_length=16, emb_dim=32, n_heads=2, n_layers=4,
                         qkv_bias=False),
    "rope": GPTConfig(vocab_size=96, vocab_multiple=64, context_length=16, emb_dim=32, n_heads=2, n_layers=4,
                      pos_embedding="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False),
}
BATCH, N_MICROBATCHES, STEPS = 4, 4, 3
MAX_NORM = 0.5  # below the gradient norm: clipping acts on every step


def test_even_split_gives_the_extra_blocks_to_the_first_stages():
    assert split_blocks(8, 2) == [range(0, 4), range(4, 8)]
    assert split_blocks(10, 4) == [range(0, 3), range(3, 6), range(6, 8), range(8, 10)]
    assert split_blocks(3, 1) == [range(0, 3)]


def test_sizes_by_hand():
    assert split_blocks(16, 2, [8, 8]) == [range(0, 8), range(8, 16)]
    assert split_blocks(10, 3, [4, 4, 2]) == [range(0, 4), range(4, 8), range(8, 10)]


@pytest.mark.parametrize(
    ("n_layers", "n_stages", "sizes", "message"),
    [
        (4, 5, None, "n_stages"),
        (4, 0, None, "n_stages"),
        (8, 2, [8], "1 entries for 2 stages"),
        (8, 2, [8, 0], "at least one block"),
        (8, 2, [4, 5], "add up to 9"),
    ],
)
def test_bad_splits_are_refused(n_layers, n_stages, sizes, message):
    with pytest.raises(ValueError, match=message):
        split_blocks(n_layers, n_stages, sizes)


@pytest.mark.parametrize("name", CONFIGS)
def test_stages_together_have_the_gpt_state_dict(name):
    model = GPT(CONFIGS[name])
    stages = [Stage(model, blocks) for blocks in split_blocks(4, 3)]
    keys = [key for stage in stages for key in stage.state_dict()]
    assert sorted(keys) == sorted(model.state_dict())
    assert "out_head.weight" in stages[-1].state_dict() and "tok_emb.weight" in stages[0].state_dict()
    # Shared, not copied, and loadable into an unsplit GPT.
    assert stages[1].blocks["2"] is model.blocks[2]  # blocks 0-1, 2, 3
    GPT(CONFIGS[name]).load_state_dict({key: value for stage in stages for key, value in stage.state_dict().items()})
    # The last stage's rank groups the head with the embeddings (no weight decay by default), as
    # the first stage's rank groups tok_emb: both copies of the tied matrix get the same update.
    last_rank = LocalStages([stages[-1]])
    assert [id(p) for p in parameter_groups(last_rank)["embeddings"]] == [id(model.out_head.weight)]
    assert sorted(LocalStages(stages).state_dict()) == sorted(model.state_dict())


@pytest.mark.parametrize("name", CONFIGS)
def test_stages_in_a_row_compute_the_gpt_logits(name):
    torch.manual_seed(0)
    model = GPT(CONFIGS[name])
    input_ids, _ = batches(CONFIGS[name])[0]
    x = input_ids
    for blocks in split_blocks(4, 2, [1, 3]):
        x = Stage(model, blocks)(x)
    torch.testing.assert_close(x[..., : CONFIGS[name].vocab_size], model(input_ids)[0])


def test_interleaving_needs_several_chunks_per_rank():
    with pytest.raises(ValueError, match="chunks_per_rank: interleaved_1f1b needs 2 or more"):
        PipelinedGPT(GPT(CONFIGS["learned"]), pp_rank=0, pp_size=2, pp_group=None, device=torch.device("cpu"),
                     schedule="interleaved_1f1b", n_microbatches=4, chunks_per_rank=1, loss_fn=loss_fn)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A micro-batch's summed cross-entropy, scaled to the mean over the whole batch (as train.py does)."""
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
    return loss / targets.numel() / N_MICROBATCHES


def batches(config: GPTConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    tokens = [torch.randint(0, config.vocab_size, (BATCH, config.context_length + 1), generator=generator)
              for _ in range(STEPS)]
    return [(t[:, :-1], t[:, 1:]) for t in tokens]


def train_unsplit(config: GPTConfig) -> tuple[list[tuple[float, float]], dict[str, torch.Tensor]]:
    """The reference: one process, micro-batch by micro-batch, the same optimizer and clipping."""
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = []
    for input_ids, targets in batches(config):
        loss = 0.0
        for ids, tgt in zip(input_ids.chunk(N_MICROBATCHES), targets.chunk(N_MICROBATCHES)):
            micro_loss = loss_fn(model(ids)[0], tgt)
            micro_loss.backward()
            loss += micro_loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        optimizer.step()
        optimizer.zero_grad()
        history.append((loss, float(norm)))
    return history, model.state_dict()


def start_worker(rank: int, world_size: int, tmp_path) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(str(tmp_path / "store"), world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=60))


def pipelined(rank: int, world_size: int, config: GPTConfig, schedule: str, chunks: int) -> PipelinedGPT:
    torch.manual_seed(0)  # every rank builds the same full model, then keeps its stages
    return PipelinedGPT(GPT(config), pp_rank=rank, pp_size=world_size, pp_group=None, device=torch.device("cpu"),
                        schedule=schedule, n_microbatches=N_MICROBATCHES, chunks_per_rank=chunks, loss_fn=loss_fn)


def train_pipelined(rank: int, world_size: int, tmp_path, config: GPTConfig, schedule: str, chunks: int) -> None:
    start_worker(rank, world_size, tmp_path)
    try:
        pipe = pipelined(rank, world_size, config, schedule, chunks)
        optimizer = torch.optim.AdamW(pipe.parameters(), lr=1e-2)
        history = []
        for input_ids, targets in batches(config):
            loss = pipe.step(input_ids if pipe.holds_first else None, targets if pipe.holds_last else None)
            pipe.sync_tied_gradients()
            norm = pipe.clip_gradients(MAX_NORM)
            optimizer.step()
            optimizer.zero_grad()
            history.append((None if loss is None else float(loss), norm))
        torch.save({"history": history, "state": pipe.state_dict()}, tmp_path / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# Each schedule once, the two architectures between them (each spawn costs seconds on 2 cores).
@pytest.mark.parametrize(("schedule", "chunks", "name"),
                         [("gpipe", 1, "learned"), ("1f1b", 1, "rope"), ("interleaved_1f1b", 2, "learned"),
                          ("interleaved_1f1b", 2, "rope")])
def test_pipelined_training_matches_the_unsplit_gpt(tmp_path, name, schedule, chunks):
    config = CONFIGS[name]
    mp.spawn(train_pipelined, args=(2, tmp_path, config, schedule, chunks), nprocs=2)
    first, last = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    history, state = train_unsplit(config)

    losses, norms = zip(*history)
    assert [loss for loss, _ in last["history"]] == pytest.approx(losses, abs=1e-5)
    # The global gradient norm (the tied matrix counted once) on every rank, before clipping.
    for rank in (first, last):
        assert [norm for _, norm in rank["history"]] == pytest.approx(norms, abs=1e-5)
    # Each rank has its stages' parameters, under the GPT's names; both copies of the tied matrix.
    assert sorted(first["state"].keys() | last["state"].keys()) == sorted(state)
    for rank in (first, last):
        for key, value in rank["state"].items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=1e-5, msg=key)
    assert torch.equal(first["state"]["tok_emb.weight"], last["state"]["out_head.weight"])


def reload_pipelined(rank: int, world_size: int, tmp_path, config: GPTConfig) -> None:
    """Load an unsplit GPT's checkpoint into the stages, and save them as a pipelined run would."""
    start_worker(rank, world_size, tmp_path)
    try:
        pipe = pipelined(rank, world_size, config, "interleaved_1f1b", 2)
        dcp.load(pipe.state_dict(), checkpoint_id=tmp_path / "unsplit")
        dcp.save(pipe.state_dict(), checkpoint_id=tmp_path / "pipelined")
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # torch 2.13 warns even with no_dist=True
def test_checkpoints_move_between_pipelined_and_unsplit_runs(tmp_path):
    config = CONFIGS["rope"]
    torch.manual_seed(1)
    written = GPT(config)
    dcp.save(written.state_dict(), checkpoint_id=tmp_path / "unsplit", no_dist=True)
    mp.spawn(reload_pipelined, args=(2, tmp_path, config), nprocs=2)
    torch.manual_seed(2)
    read = GPT(config)
    dcp.load(read.state_dict(), checkpoint_id=tmp_path / "pipelined", no_dist=True)
    for key, value in written.state_dict().items():
        assert torch.equal(read.state_dict()[key], value), key
