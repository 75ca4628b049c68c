import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from model.checkpoint import export_hf_gpt2, save_checkpoint
from model.config import preset
from model.generate import generate, sample_next_token
from model.gpt import GPT
from pipeline.tokenizer import load_tokenizer, tokenizer_identity

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [[5, 17, 300, 2, 9, 41, 7], [88, 3], [250, 251, 252, 253]]  # different lengths: left padding


def peaky_model(name: str = "tiny", seed: int = 0, **overrides) -> GPT:
    """A random model with larger weights than GPT-2's init, so its next-token distributions have
    clear winners and greedy decoding does not hinge on float rounding."""
    torch.manual_seed(seed)
    model = GPT(preset(name, **overrides))
    for param in model.parameters():
        if param.dim() >= 2:
            nn.init.normal_(param, std=0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["tiny", "llama-tiny"])
def test_greedy_with_cache_equals_greedy_without(name):
    model = peaky_model(name)
    cached = generate(model, PROMPTS, 30, temperature=0)
    uncached = generate(model, PROMPTS, 30, temperature=0, use_cache=False)
    assert cached == uncached
    assert all(len(row) == 30 for row in cached)


@pytest.mark.parametrize("name", ["tiny", "llama-tiny"])
def test_a_batch_continues_each_prompt_as_it_would_alone(name):
    model = peaky_model(name)
    together = generate(model, PROMPTS, 20, temperature=0)
    alone = [generate(model, [prompt], 20, temperature=0)[0] for prompt in PROMPTS]
    assert together == alone


def test_sampling_is_repeatable_with_a_seed_and_varies_without_one():
    model = peaky_model()
    first = generate(model, PROMPTS, 20, temperature=1.0, seed=7)
    assert generate(model, PROMPTS, 20, temperature=1.0, seed=7) == first
    assert generate(model, PROMPTS, 20, temperature=1.0, seed=7, use_cache=False) == first
    assert generate(model, PROMPTS, 20, temperature=1.0, seed=8) != first


def test_top_k_1_and_a_tiny_top_p_are_greedy():
    model = peaky_model()
    greedy = generate(model, PROMPTS, 15, temperature=0)
    assert generate(model, PROMPTS, 15, temperature=1.0, top_k=1, seed=0) == greedy
    assert generate(model, PROMPTS, 15, temperature=1.0, top_p=1e-6, seed=0) == greedy


def test_top_k_and_top_p_keep_only_their_tokens():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().expand(2000, 4)
    generator = torch.Generator().manual_seed(0)

    def support(**options) -> set[int]:
        return set(sample_next_token(logits, 1.0, generator=generator, **options).tolist())

    assert support() == {0, 1, 2, 3}
    assert support(top_k=2) == {0, 1}
    assert support(top_p=0.79) == {0, 1}  # 0.5 + 0.3 already holds 0.79
    assert support(top_p=0.81) == {0, 1, 2}
    assert support(top_k=3, top_p=0.6) == {0, 1}


def test_a_row_stops_at_the_stop_token():
    model = peaky_model()
    free = generate(model, PROMPTS, 25, temperature=0)
    stop = free[0][4]
    stopped = generate(model, PROMPTS, 25, temperature=0, stop_token=stop)
    for row, full in zip(stopped, free):
        assert row == (full[: full.index(stop)] if stop in full else full)
    assert len(stopped[0]) <= 4


def test_padded_vocab_is_never_sampled():
    model = peaky_model(vocab_size=500, vocab_multiple=64)
    # Make the padding rows the best match for every hidden state: the final norm outputs its bias
    # alone, and the padding embeddings point the same way, 50 times longer.
    with torch.no_grad():
        model.final_norm.weight.zero_()
        model.final_norm.bias.copy_(torch.randn(128))
        model.tok_emb.weight[500:] = 50 * model.final_norm.bias
        assert model.out_head(model.hidden_states(torch.tensor([PROMPTS[0]]))).argmax(-1).min() >= 500
    for temperature in (0, 1.0):
        for row in generate(model, PROMPTS, 20, temperature=temperature, seed=0):
            assert max(row) < 500


def test_a_long_prompt_is_cut_from_the_left():
    model = peaky_model()
    long_prompt = list(range(200))
    room = model.config.context_length - 10
    cut = generate(model, [long_prompt[-room:]], 10, temperature=0)
    assert generate(model, [long_prompt], 10, temperature=0) == cut


def test_generate_restores_training_mode():
    model = peaky_model().train()
    generate(model, PROMPTS, 3, temperature=0)
    assert model.training


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompts": [[]]}, "at least one token"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 128}, "no room"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_options_are_refused(options, message):
    arguments = {"prompts": PROMPTS, "max_new_tokens": 5} | options
    with pytest.raises(ValueError, match=message):
        generate(peaky_model(), arguments.pop("prompts"), **arguments)


def run_cli(checkpoint: Path, prompt: str, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "jobs/generate.py", "--checkpoint", str(checkpoint), "--prompt", prompt, *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cli_prints_only_the_generated_text(tmp_path, corpus):
    encoding = load_tokenizer("gpt2")
    model = peaky_model(vocab_size=encoding.n_vocab, vocab_multiple=128)
    save_checkpoint(model, tmp_path / "ours", tokenizer={"spec": "gpt2", **tokenizer_identity(encoding)})
    export_hf_gpt2(model, tmp_path / "hf", eos_token_id=encoding.eot_token)
    prompt = "Every effort moves you"
    [expected] = generate(model, [encoding.encode(prompt)], 8, temperature=0, stop_token=encoding.eot_token)

    out = run_cli(tmp_path / "ours", prompt, "--max-new-tokens", "8", "--temperature", "0")
    assert out == encoding.decode(expected) + "\n"
    assert run_cli(tmp_path / "hf", prompt, "--max-new-tokens", "8", "--temperature", "0") == out
