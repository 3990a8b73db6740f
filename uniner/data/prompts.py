"""The conversation template of the UniversalNER recipe (Vicuna v1.1 separators).

One class per prompt style, looked up by name in `prompt_styles` (litgpt `prompts.py`). Training and
inference render through the same methods, so the text a model is trained on and the text it is
queried with cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from uniner.data.records import Passage


@dataclass(frozen=True)
class Message:
    """One turn. `masked` turns get label -100; `eos` appends the backbone's EOS after the turn."""

    role: str  # "system", "user" or "assistant"
    content: str
    masked: bool
    eos: bool = False


class UniNER:
    """`A virtual assistant ... USER: Text: {passage} ASSISTANT: I've read this text.</s>USER: …`.

    Vicuna v1.1: a space after the system line and after each user turn, EOS after each reply.
    """

    system = "A virtual assistant answers questions from a user based on the provided text."
    read_reply = "I've read this text."
    eos_text = "</s>"  # how the backbone's EOS is written in rendered text

    @staticmethod
    def question(type_: str) -> str:
        return f"What describes {type_} in the text?"

    @staticmethod
    def answer(items: Iterable[str]) -> str:
        return json.dumps(list(items), ensure_ascii=False)

    def segments(self, text: str, qa: list[tuple[str, str | None]],
                 train_on_read_reply: bool = True) -> list[Message]:
        """The conversation as token-boundary segments.

        Each user segment ends with `ASSISTANT:`; each assistant segment is the reply (the space
        before it is the tokenizer's word boundary) followed by EOS. A `None` answer leaves the
        conversation open for generation.
        """
        msgs = [Message("user", f"{self.system} USER: Text: {text} ASSISTANT:", masked=True),
                Message("assistant", f" {self.read_reply}", masked=not train_on_read_reply,
                        eos=True)]
        for type_, answer in qa:
            msgs.append(Message("user", f"USER: {self.question(type_)} ASSISTANT:", masked=True))
            if answer is not None:
                msgs.append(Message("assistant", f" {answer}", masked=False, eos=True))
        return msgs

    def conversation(self, passage: Passage, types: Iterable[str],
                     train_on_read_reply: bool = True) -> list[Message]:
        """The training conversation of a passage asking `types` in the given order."""
        qa = [(t, self.answer(passage.answer(t))) for t in types]
        return self.segments(passage.text, qa, train_on_read_reply)

    def query(self, text: str, type_: str) -> list[Message]:
        """The inference prompt of one (text, type) query, ending with `ASSISTANT:`."""
        return self.segments(text, [(type_, None)])

    def render(self, messages: list[Message]) -> str:
        return "".join(m.content + (self.eos_text if m.eos else "") for m in messages)


prompt_styles: dict[str, type[UniNER]] = {"uniner": UniNER}


def to_conversation_item(passage: Passage, types: Iterable[str]) -> dict:
    """A passage in the released Pile-NER-type JSON form, asking `types` in the given order."""
    style = UniNER()
    turns = [{"from": "human", "value": f"Text: {passage.text}"},
             {"from": "gpt", "value": style.read_reply}]
    for t in types:
        turns += [{"from": "human", "value": style.question(t)},
                  {"from": "gpt", "value": style.answer(passage.answer(t))}]
    return {"id": passage.id, "conversations": turns}
