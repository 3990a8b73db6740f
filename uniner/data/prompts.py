"""The owner of prompt text: one class per prompt style, looked up by name in `prompt_styles`
(litgpt `prompts.py`); `prompt_style(name, tokenizer)` builds one.

Every style asks the same turns (the system line, `Text: {passage}`, the read reply, then one
question/answer per entity type) and renders them its own way as token-boundary segments:
- `uniner`: the UniversalNER recipe's template (Vicuna v1.1 separators, EOS after each reply);
- `chat`: the backbone tokenizer's own chat template (`tokenizer.apply_chat_template`), for
  instruction-tuned students such as Qwen2.5-Instruct or Llama-3.1-Instruct.
Training rows and inference queries render through the style the config's `prompt` names;
`save_prompt_style` records it beside a trained model and `load_prompt_style` reads it back, so
inference queries a model the way it was trained. The released JSON form of a conversation
(`conversation_item`) has no style: it is the turns, unrendered.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from uniner.data.records import Passage
from uniner.errors import ConfigError


@dataclass(frozen=True)
class Message:
    """One segment. `masked` segments get label -100; `eos` appends the backbone's EOS after it."""

    role: str  # "system", "user" or "assistant"
    content: str
    masked: bool
    eos: bool = False


class PromptStyle(ABC):
    """The turns every style asks; subclasses render them as segments (`segments`).

    `auto_bos`: the encoder puts the tokenizer's BOS first where it uses one (False: the style's
    text writes its own, as chat templates do).
    """

    name = ""
    system = "A virtual assistant answers questions from a user based on the provided text."
    read_reply = "I've read this text."
    eos_text = ""  # how an `eos` segment's EOS is written in rendered text
    auto_bos = True

    def __init__(self, tokenizer=None):
        # what a template style renders with and what gives the stop ids; `UniNER` renders
        # text without one
        self.tokenizer = tokenizer

    @staticmethod
    def question(type_: str) -> str:
        return f"What describes {type_} in the text?"

    @staticmethod
    def answer(items: Iterable[str]) -> str:
        return json.dumps(list(items), ensure_ascii=False)

    @abstractmethod
    def segments(self, text: str, qa: list[tuple[str, str | None]],
                 train_on_read_reply: bool = True) -> list[Message]:
        """The conversation as segments: the passage prompt, the read reply, then a question
        and its answer per (type, answer). A `None` answer leaves it open for generation."""

    def conversation(self, passage: Passage, types: Iterable[str],
                     train_on_read_reply: bool = True) -> list[Message]:
        """The training conversation of a passage asking `types` in the given order."""
        qa = [(t, self.answer(passage.answer(t))) for t in types]
        return self.segments(passage.text, qa, train_on_read_reply)

    def query(self, text: str, type_: str) -> list[Message]:
        """The inference prompt of one (text, type) query, ending where the answer starts."""
        return self.segments(text, [(type_, None)])

    def render(self, messages: list[Message]) -> str:
        return "".join(m.content + (self.eos_text if m.eos else "") for m in messages)

    def stop_ids(self) -> list[int]:
        """The token ids that end a reply at generation."""
        return [self._tokenizer().eos_token_id]

    def _tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(f"the {self.name} prompt style was built without a tokenizer, so "
                             "it has no stop ids: prompt_style(name, tokenizer)")
        return self.tokenizer


class UniNER(PromptStyle):
    """`A virtual assistant ... USER: Text: {passage} ASSISTANT: I've read this text.</s>USER: …`.

    Vicuna v1.1: a space after the system line and after each user turn, EOS after each reply.
    """

    name = "uniner"
    eos_text = "</s>"  # how the backbone's EOS is written in rendered text

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


class ChatTemplate(PromptStyle):
    """The backbone tokenizer's own chat template (`tokenizer.apply_chat_template`).

    The same turns (system, user `Text: ...`, assistant read reply, one user question and
    assistant answer per type), rendered by the template. Segment boundaries come from rendering
    growing prefixes of the message list: a user segment runs up to the template's generation
    prompt (its assistant header, masked), an assistant segment is the reply and the template's
    end-of-turn token (trained on, and the token that ends a reply at generation); what the
    template writes after that token goes to the next user segment. The template writes its own
    BOS, if any (`auto_bos = False`). The boundaries are derived once per number of questions,
    on placeholder contents, so rendering a conversation is a string substitution.

    Raises:
        ValueError: the tokenizer has no chat template, the template's renders of growing
            prefixes are not prefixes of each other, or it closes a reply without a special token.
    """

    name = "chat"
    auto_bos = False
    _SLOT = re.compile("\ue000(\\d+)\ue001")  # placeholders (private-use characters)

    def __init__(self, tokenizer=None):
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", tokenizer)
            raise ConfigError("prompt=chat renders with the backbone tokenizer's chat template, "
                              f"and {name!r} has none: use "
                              "prompt=uniner (the recipe's template) or an instruction-tuned "
                              "backbone's tokenizer")
        self.tokenizer = tokenizer
        self.end_of_turn = self._end_of_turn()
        self._shape: list[tuple[bool, str]] = []  # (is a reply, text with placeholders)

    @staticmethod
    def _slot(i: int) -> str:
        return f"\ue000{i}\ue001"

    def _render(self, messages: list[dict], generation: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=generation)

    def _end_of_turn(self) -> str:
        """The special token the template writes right after an assistant reply."""
        probe = self._slot(0)
        text = self._render([{"role": "user", "content": "q"},
                             {"role": "assistant", "content": probe}], False)
        after = text[text.index(probe) + len(probe):]
        added = getattr(self.tokenizer, "added_tokens_decoder", {}).values()
        specials = set(self.tokenizer.all_special_tokens) | {t.content for t in added}
        found = max((t for t in specials if t and after.startswith(t)), key=len, default=None)
        if found is None:
            raise ConfigError(f"prompt=chat: the chat template ends a reply with {after[:20]!r}, "
                              "not a special token; generation could not stop at the end of turn")
        return found

    def _messages(self, n: int) -> list[dict]:
        """System, passage, read reply and `n` question/answer pairs, on placeholder contents."""
        roles = ["system", "user", "assistant"] + ["user", "assistant"] * n
        return [{"role": r, "content": self._slot(i)} for i, r in enumerate(roles)]

    def _segments_of(self, n: int) -> list[tuple[bool, str]]:
        """The segments of a conversation of `n` pairs (a prefix of those of more pairs)."""
        while len(self._shape) < 2 * (n + 1):
            messages = self._messages(n)
            k = len(self._shape) + 2  # the next assistant message
            done = "".join(text for _, text in self._shape)
            head = self._render(messages[:k], True)
            full = self._render(messages[: k + 1], False)
            reply = messages[k]["content"] + self.end_of_turn
            if not (head.startswith(done) and full.startswith(head)
                    and full[len(head):].startswith(reply)):
                raise ConfigError("prompt=chat: the chat template's renders of growing message "
                                  "lists are not prefixes of each other, so a conversation cannot "
                                  "be split into turns for the loss mask")
            self._shape += [(False, head[len(done):]), (True, reply)]
        return self._shape[: 2 * (n + 1)]

    def segments(self, text: str, qa: list[tuple[str, str | None]],
                 train_on_read_reply: bool = True) -> list[Message]:
        contents = [self.system, f"Text: {text}", self.read_reply]
        for type_, answer in qa:
            contents += [self.question(type_), answer]
        fill = lambda m: contents[int(m.group(1))]  # noqa: E731
        msgs = []
        for k, (reply, template) in enumerate(self._segments_of(len(qa))):
            if reply and contents[k + 1] is None:
                break  # an open question: the prompt ends with the generation prompt
            masked = not train_on_read_reply if k == 1 else not reply
            msgs.append(Message("assistant" if reply else "user", self._SLOT.sub(fill, template),
                                masked=masked))
        return msgs

    def stop_ids(self) -> list[int]:
        eot = self.tokenizer.convert_tokens_to_ids(self.end_of_turn)
        return list(dict.fromkeys([eot, self.tokenizer.eos_token_id]))


prompt_styles: dict[str, type[PromptStyle]] = {"uniner": UniNER, "chat": ChatTemplate}


def prompt_style(name: str, tokenizer=None) -> PromptStyle:
    """The style `name` (a config's `prompt`) for a backbone's tokenizer."""
    if name not in prompt_styles:
        raise ConfigError(f"prompt={name!r}: choose one of {', '.join(prompt_styles)}")
    return prompt_styles[name](tokenizer)


PROMPT_FILE = "prompt_style.json"  # beside a trained model: the style it was trained with
# exports of uniner before prompt_style.json kept the style in their export record
LEGACY_PROMPT_FILE = "uniner_export.json"


def save_prompt_style(style: PromptStyle, directory: str | Path) -> Path:
    """Record `style`'s name in `directory` (an export), for `load_prompt_style`."""
    path = Path(directory) / PROMPT_FILE
    path.write_text(json.dumps({"prompt": style.name}) + "\n")
    return path


def saved_prompt(directory: str | Path) -> str:
    """The name of the style a model directory was trained with; `uniner` (the recipe's
    template) for a directory that records none and for a hub id."""
    for name in (PROMPT_FILE, LEGACY_PROMPT_FILE):
        path = Path(directory) / name
        if path.is_file():
            prompt = json.loads(path.read_text()).get("prompt")
            if prompt is not None:
                return prompt
    return UniNER.name


def load_prompt_style(directory: str | Path, tokenizer, name: str | None = None) -> PromptStyle:
    """The style to query the model in `directory` in: `name` when given (an override), else
    the one it was trained with (`saved_prompt`), for its `tokenizer`."""
    return prompt_style(name or saved_prompt(directory), tokenizer)


def conversation_item(id_: str, text: str, qa: Iterable[tuple[str, str]]) -> dict:
    """The released Pile-NER-type JSON form of a conversation: its turns, unrendered (so the
    same in every style)."""
    turns = [{"from": "human", "value": f"Text: {text}"},
             {"from": "gpt", "value": PromptStyle.read_reply}]
    for type_, answer in qa:
        turns += [{"from": "human", "value": PromptStyle.question(type_)},
                  {"from": "gpt", "value": answer}]
    return {"id": id_, "conversations": turns}


def to_conversation_item(passage: Passage, types: Iterable[str]) -> dict:
    """A passage in the released JSON form, asking `types` in the given order."""
    return conversation_item(passage.id, passage.text,
                             [(t, PromptStyle.answer(passage.answer(t))) for t in types])
