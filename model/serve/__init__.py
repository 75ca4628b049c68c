"""Serving a trained model: continuous batching in plain PyTorch, an OpenAI-compatible API around it.

    engine.py, decode_batch.py   the batching engine (no Ray, no HTTP): requests join and leave one
                                 running decode batch at token boundaries
    runner.py                    the engine on a thread, for asyncio servers
    text.py                      tokens -> text deltas and stop strings; chat messages -> a prompt
    protocol.py, api.py          the OpenAI API (FastAPI), chat.html the chat page at /
    app.py                       the Ray Serve deployment around it (jobs/serve.py, `serve deploy`)
    pyfunc.py                    the same engine as an MLflow model (`mlflow models serve`)
    batch.py, scoring.py         batch generation and scoring over Ray Data (jobs/generate_batch.py)
"""
