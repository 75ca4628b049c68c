"""Continue a prompt with a trained model: any model reference (see ``model/reference.py``).

    python jobs/generate.py --checkpoint data/runs/pretrain-demo --prompt "Every effort moves you" \
        --max-new-tokens 50 --temperature 0
    python jobs/generate.py --checkpoint models:/webllm-demo/1 --prompt "..."   # from the MLflow registry

Prints only the generated text on stdout (not the prompt); errors go to stderr. The tokenizer is
the one the checkpoint names, and its checksum must match the one the model was trained with.
"""

from __future__ import annotations

import argparse
import sys

import torch

from model.generate import generate
from model.inference import load_inference_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", "--model", required=True,
                        help="a checkpoint, training run, Hugging Face GPT-2 folder, s3:// URL or models:/ URI")
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
    try:
        loaded = load_inference_model(args.checkpoint, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(str(error))
    prompt = loaded.encode(args.prompt)
    if not prompt:
        sys.exit("the prompt is empty and the tokenizer has no <|endoftext|> to start from")
    [new_tokens] = generate(
        loaded.model,
        [prompt],
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_token=loaded.end_of_text,
        seed=args.seed,
    )
    print(loaded.encoding.decode(new_tokens))


if __name__ == "__main__":
    main()
