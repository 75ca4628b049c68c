"""Continue a prompt with a trained model: one of our checkpoints or a Hugging Face GPT-2 folder.

    python jobs/generate.py --checkpoint runs/demo/checkpoint --prompt "Every effort moves you" \
        --max-new-tokens 50 --temperature 0

Prints only the generated text on stdout (not the prompt); errors go to stderr. The tokenizer is
the one the checkpoint names, and its checksum must match the one the model was trained with.
"""

from __future__ import annotations

import argparse
import sys

import torch

from model.checkpoint import load_pretrained
from model.generate import generate
from pipeline.tokenizer import load_tokenizer, tokenizer_identity

END_OF_TEXT = "<|endoftext|>"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="our checkpoint folder or a Hugging Face GPT-2 folder")
    parser.add_argument("--prompt", required=True, help="text to continue; empty starts a new document")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 means greedy decoding")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="makes sampling repeatable")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model, tokenizer = load_pretrained(args.checkpoint, device=args.device)
    encoding = load_tokenizer(tokenizer["spec"])
    expected = tokenizer.get("sha256")
    if expected is not None and tokenizer_identity(encoding)["sha256"] != expected:
        sys.exit(f"tokenizer {tokenizer['spec']!r} is not the one {args.checkpoint} was trained with (sha256 differs)")
    if encoding.n_vocab > model.config.vocab_size:
        sys.exit(
            f"tokenizer {tokenizer['spec']!r} has {encoding.n_vocab} ids, the model only {model.config.vocab_size}"
        )

    has_end_of_text = END_OF_TEXT in encoding.special_tokens_set
    prompt = encoding.encode(args.prompt, allowed_special="all")
    if not prompt and has_end_of_text:  # GPT-2's convention for "no prompt": start a new document
        prompt = [encoding.eot_token]
    if not prompt:
        sys.exit("the prompt is empty and the tokenizer has no <|endoftext|> to start from")
    [new_tokens] = generate(
        model,
        [prompt],
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_token=encoding.eot_token if has_end_of_text else None,
        seed=args.seed,
    )
    print(encoding.decode(new_tokens))


if __name__ == "__main__":
    main()
