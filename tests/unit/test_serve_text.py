"""Tokens -> the text a client sees (UTF-8 split across tokens, stop strings split across tokens),
chat messages -> a prompt, and the OpenAI request bodies."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from model.finetune.instructions import PromptTemplate
from model.serve.protocol import ChatCompletionRequest, CompletionRequest
from model.serve.text import TextStream, chat_prompt, token_text
from pipeline.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def gpt2(corpus):
    return load_tokenizer("gpt2")


def stream_text(encoding, tokens, stop=()) -> tuple[list[str], TextStream]:
    stream = TextStream(encoding, stop)
    pieces = [stream.push(token) for token in tokens]
    pieces.append(stream.finish())
    return pieces, stream


def byte_tokens(encoding, text: str) -> list[int]:
    """One token per byte: multi-byte characters are split across tokens, as BPE can split them."""
    return [encoding.encode_single_token(bytes([byte])) for byte in text.encode()]


def test_characters_split_across_tokens_come_out_whole(gpt2):
    text = "naïve café — 日本語 🙂"
    pieces, _ = stream_text(gpt2, byte_tokens(gpt2, text))
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)  # never half a character


def test_a_stop_string_split_across_tokens_ends_the_text_before_it(gpt2):
    tokens = gpt2.encode("Answer: 42\n\n### Instruction: more")
    pieces, stream = stream_text(gpt2, tokens, stop=["###"])
    assert "".join(pieces) == "Answer: 42\n\n"
    assert stream.stopped


def test_text_that_only_looks_like_a_stop_string_is_released(gpt2):
    pieces, stream = stream_text(gpt2, gpt2.encode("a ## b #"), stop=["###"])
    assert "".join(pieces) == "a ## b #" and not stream.stopped
    assert pieces[-1] == "#"  # held back until the end could no longer begin "###"


def test_the_earliest_of_several_stop_strings_wins(gpt2):
    pieces, _ = stream_text(gpt2, gpt2.encode("one two three"), stop=["three", "two"])
    assert "".join(pieces) == "one "


def test_an_incomplete_character_at_the_end_becomes_a_replacement_character(gpt2):
    tokens = byte_tokens(gpt2, "ok é")[:-1]  # the last byte of "é" never comes
    pieces, _ = stream_text(gpt2, tokens)
    assert "".join(pieces) == "ok \ufffd"
    assert token_text(gpt2, tokens[-1]) == "\ufffd"


def test_a_single_user_message_is_exactly_the_instruction_prompt():
    template = PromptTemplate()
    assert chat_prompt([{"role": "user", "content": "Name a color."}], template) == \
        template.prompt({"instruction": "Name a color.", "input": ""})


def test_system_and_earlier_turns_become_the_input():
    prompt = chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a color."}],
                         PromptTemplate())
    assert "### Instruction:\nName a color." in prompt
    assert "### Input:\nSystem: Be brief.\nUser: Hi\nAssistant: Hello." in prompt
    assert prompt.endswith("### Response:\n")


def test_requests_with_unsupported_or_bad_fields_are_refused_by_name():
    base = {"model": "m", "prompt": "x"}
    assert CompletionRequest(**base, stop="###").stop_strings() == ["###"]
    assert CompletionRequest(**base, top_k=-1).effective_top_k() is None
    assert CompletionRequest(model="m", prompt=[1, 2, 3]).prompts() == [[1, 2, 3]]
    assert CompletionRequest(model="m", prompt=["a", "b"]).prompts() == ["a", "b"]
    assert CompletionRequest(**base, presence_penalty=0).max_tokens == 16  # neutral values are accepted
    for field, value in [("temperature", 3), ("top_p", 0), ("n", 0), ("max_tokens", 0), ("logprobs", 6),
                         ("presence_penalty", 0.5), ("echo", True), ("suffix", "x"), ("frobnicate", 1),
                         ("stop", ["a", "b", "c", "d", "e"]), ("logit_bias", {"1": 5})]:
        with pytest.raises(ValidationError, match=field):
            CompletionRequest(**base, **{field: value})
    with pytest.raises(ValidationError, match="stream_options"):
        CompletionRequest(**base, stream_options={"include_usage": True})
    with pytest.raises(ValidationError, match="prompt"):
        CompletionRequest(model="m", prompt=[])
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert ChatCompletionRequest(**chat, max_completion_tokens=5).completion_limit() == 5
    for field, value in [("tools", [{"type": "function"}]), ("top_logprobs", 2)]:
        with pytest.raises(ValidationError, match=field):
            ChatCompletionRequest(**chat, **{field: value})
    with pytest.raises(ValidationError, match="last message"):
        ChatCompletionRequest(model="m", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(ValidationError, match="messages"):
        ChatCompletionRequest(model="m", messages=[])
