"""The judge: the book's scoring prompt, sent to an OpenAI-compatible endpoint, an integer read back."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from model.finetune.judge import JudgeConfig, parse_score, score


@pytest.fixture
def endpoint():
    """A chat-completions endpoint on loopback that records requests and replies with a fixed text."""
    received, reply = [], {"text": "Score: 85"}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply["text"]}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1", received, reply
    server.shutdown()


def test_the_judge_is_asked_for_an_integer_and_its_reply_is_read(endpoint):
    url, received, reply = endpoint
    config = JudgeConfig(url=url, model="llama3", timeout_s=10)
    assert score(config, "Name a color.", "Red.", "Blue.") == 85
    [(path, body)] = received
    assert path == "/v1/chat/completions" and body["model"] == "llama3" and body["temperature"] == 0
    prompt = body["messages"][0]["content"]
    assert "`Name a color.`" in prompt and "`Red.`" in prompt and "`Blue.`" in prompt
    assert "Respond with the integer number only." in prompt
    reply["text"] = "I cannot score this."
    assert score(config, "Name a color.", "Red.", "Blue.") is None


def test_scores_are_capped_at_100():
    assert parse_score("150") == 100 and parse_score("0") == 0
