"""Serve a trained model on Ray Serve behind an OpenAI-compatible API, with a chat page at /.

    python jobs/serve.py --model data/runs/pretrain-demo        # or an HF GPT-2 folder, s3://..., models:/webllm-demo/1
    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
        -d '{"model": "pretrain-demo", "prompt": "The best way to", "max_tokens": 32}'

It starts a local Ray, or joins the cluster that ``RAY_ADDRESS`` names, runs the application, prints
the base URL and blocks until interrupted (Ctrl-C, SIGTERM), then deletes the application. The same
application deploys from a Serve config: ``serve deploy infra/serve/webllm.yaml``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import ray
from ray import serve

from model.serve.app import APP_NAME, build_app, default_model_name
from pipeline.config import ConfigError
from pipeline.storage import absolute
from pipeline.tracking import tracking_uri

# What a replica needs from the driver's environment to find models and tokenizers.
FORWARDED_ENV = ("CORPUS_DIR", "TOKENIZERS_DIR", "TIKTOKEN_CACHE_DIR", "WEBLLM_MODEL_CACHE", "AWS_ENDPOINT_URL",
                 "AWS_DEFAULT_REGION")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="a checkpoint, training run or Hugging Face GPT-2 folder, an s3:// URL or models:/name/version")
    parser.add_argument("--model-name", help="the name clients send as 'model' (default: from --model)")
    parser.add_argument("--host", default="127.0.0.1", help="where the HTTP proxy listens (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, default=1, help="replicas, one engine each")
    parser.add_argument("--max-batch-size", type=int, default=16, help="sequences each engine decodes together")
    parser.add_argument("--prefill-tokens", type=int, default=512, help="prompt tokens prefilled per engine step")
    parser.add_argument("--api-key-env", help="environment variable holding the API key clients must send")
    parser.add_argument("--num-cpus", type=float, default=1, help="CPUs per replica (its torch threads)")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per replica")
    parser.add_argument("--torch-threads", type=int, help="torch CPU threads per replica (default: its CPUs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = absolute(args.model)
    settings = {"model": model, "model_name": args.model_name or default_model_name(args.model),
                "max_batch_size": args.max_batch_size, "prefill_tokens": args.prefill_tokens,
                "api_key_env": args.api_key_env, "torch_threads": args.torch_threads}
    env_vars = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    # The driver's store, resolved here: the default (./mlflow.db) is relative to this folder, not
    # to the replica's.
    env_vars["MLFLOW_TRACKING_URI"] = tracking_uri()
    try:
        application = build_app(settings, num_replicas=args.replicas, ray_actor_options={
            "num_cpus": args.num_cpus, "num_gpus": args.num_gpus, "runtime_env": {"env_vars": env_vars}})
    except (ConfigError, ValueError) as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2

    ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(application, name=APP_NAME, route_prefix="/")
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"serving {settings['model_name']!r} from {args.model}")
    print(f"OpenAI API: {base}/v1   chat page: {base}/", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    print("shutting down", flush=True)
    # Ctrl-C reaches a local Ray's own processes too, and a delete that waits on a dead raylet would
    # never return: give it a bounded time. Exiting stops a Ray that this process started.
    deleting = threading.Thread(target=serve.delete, args=(APP_NAME,), daemon=True)
    deleting.start()
    deleting.join(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
