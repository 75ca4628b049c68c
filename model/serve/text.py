"""From tokens to the text a client sees, and from chat messages to a prompt.

``TextStream`` turns one request's tokens into text deltas. A BPE token can end in the middle of a
UTF-8 character, so bytes are decoded incrementally and only whole characters go out. Text that
could be the beginning of a stop string is held back until it is clear that it is not; when a stop
string appears, the text before it is the last delta and the stream is ``stopped``.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

from model.finetune.instructions import PromptTemplate


class TextStream:
    def __init__(self, encoding, stop: Sequence[str] = ()):
        self.encoding = encoding
        self.stop = [text for text in stop if text]
        self._bytes = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False

    def push(self, token: int) -> str:
        """The text that can go out after ``token``."""
        if self.stopped:
            return ""
        return self._release(self._bytes.decode(self.encoding.decode_single_token_bytes(token)))

    def finish(self) -> str:
        """The rest, at the end of the request: incomplete bytes become U+FFFD, held text goes out."""
        if self.stopped:
            return ""
        text = self._held + self._bytes.decode(b"", final=True)
        self._held = ""
        return text

    def _release(self, piece: str) -> str:
        text = self._held + piece
        found = [index for index in (text.find(stop) for stop in self.stop) if index >= 0]
        if found:
            self.stopped, self._held = True, ""
            return text[: min(found)]
        hold = max((_overlap(text, stop) for stop in self.stop), default=0)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that is a beginning of ``stop``."""
    for length in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-length:]):
            return length
    return 0


def token_text(encoding, token: int) -> str:
    """One token as text for logprobs; a token that is part of a character shows as U+FFFD."""
    return encoding.decode_single_token_bytes(token).decode("utf-8", errors="replace")


def chat_prompt(messages: Sequence[dict[str, Any]], template: PromptTemplate) -> str:
    """Chat messages in the instruction template the model was tuned with (Alpaca by default).

    The template holds one instruction and an optional input, so the latest user message is the
    instruction, and the system message and earlier turns, if any, are the input. A single user
    message is therefore exactly the prompt that instruction tuning trained on.
    """
    *earlier, last = messages
    if last["role"] != "user":
        raise ValueError("messages: the last message must be the user's")
    context = []
    for message in earlier:
        speaker = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}[message["role"]]
        context.append(f"{speaker}: {message['content']}")
    return template.prompt({"instruction": last["content"], "input": "\n".join(context)})
