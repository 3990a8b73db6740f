"""The teacher LLM: the paper's extraction prompt sent to any OpenAI-compatible endpoint.

Calls run concurrently (bounded), retry with exponential backoff and full jitter on 429, 5xx,
timeouts and connection errors (a `Retry-After` header wins over the backoff), and every answer and
failure is appended to a JSONL cache as soon as it arrives: an interrupted run resumes where it
stopped and a re-run makes no call at all. The API key is read from the environment and never
stored: it is scrubbed from every error text that is recorded.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import openai

from uniner.errors import ConfigError

log = logging.getLogger(__name__)

# The data-construction prompt of the paper, verbatim. Changing either text changes every cache key.
SYSTEM_PROMPT = "You are a helpful information extraction system."
USER_PROMPT = (
    "Given a passage, your task is to extract all entities and identify their entity types. "
    "The output should be in a list of tuples of the following format: "
    '[("entity 1", "type of entity 1"), ... ].\n\nPassage: {input_passage}'
)
PROMPT_VERSION = "uniner-v1"

# 408/409 are the transient 4xx codes OpenAI's own SDK retries as well.
RETRY_STATUS = frozenset({408, 409, 429})


def messages(passage: str) -> list[dict[str, str]]:
    """The chat messages asking the teacher about one passage."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT.format(input_passage=passage)}]


def cache_key(passage: str, model: str, temperature: float, max_tokens: int) -> str:
    """sha256 of everything that determines the answer: passage, prompt, model and sampling."""
    payload = [passage, PROMPT_VERSION, SYSTEM_PROMPT, USER_PROMPT, model, float(temperature),
               int(max_tokens)]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def parse_retry_after(headers, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


@dataclass
class Answer:
    """The outcome of asking about one passage: the teacher's text, or why there is none."""

    key: str
    content: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    error: str | None = None
    detail: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.content is not None


@dataclass
class Usage:
    """What this run spent: HTTP attempts, retries and tokens (cache hits cost nothing)."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    waits: dict[str, int] = field(default_factory=dict)


class AnswerCache:
    """Append-only JSONL of answers keyed by `cache_key`; the last successful line of a key wins.

    Failures are appended too (the record of what happened) but never count as hits, so a re-run
    asks again. A line torn by a kill mid-write is skipped on load.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path).expanduser() if path else None
        self.answers: dict[str, Answer] = {}
        self.torn_lines = 0
        self._newline = False  # a torn last line has no newline: the next append adds one first
        if self.path is None or not self.path.exists():
            return
        with open(self.path, "rb") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                self._newline = f.read(1) != b"\n"
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    answer = Answer(**{k: row[k] for k in Answer.__dataclass_fields__ if k in row})
                except (json.JSONDecodeError, TypeError, KeyError):
                    self.torn_lines += 1
                    continue
                if answer.ok:
                    answer.cached = True
                    self.answers[answer.key] = answer

    def get(self, key: str) -> Answer | None:
        return self.answers.get(key)

    def append(self, answer: Answer, **extra) -> None:
        if answer.ok:
            self.answers[answer.key] = answer
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {k: v for k, v in asdict(answer).items() if k != "cached"}
        line = json.dumps({**row, **extra, "time": round(time.time(), 3)}, ensure_ascii=False)
        # one write of one line, flushed at once: a kill can tear at most this line
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(("\n" if self._newline else "") + line + "\n")
        self._newline = False


class Teacher:
    """An OpenAI-compatible chat-completions teacher with bounded concurrency, retries and a cache.

    Args:
        base_url: the endpoint, e.g. `https://api.openai.com/v1` or `http://localhost:8000/v1`.
        model: the model name the endpoint serves.
        api_key_env: the environment variable holding the key; None for servers that need none.
        timeout: seconds for one HTTP attempt.
        max_concurrency: requests in flight at once.
        temperature: sampling temperature (0: greedy, as reproducible as the endpoint allows).
        max_tokens: the longest answer; a longer one is cut and its complete tuples salvaged.
        max_retries: retries after the first attempt of a passage.
        backoff_base: seconds of the first backoff; doubled each retry, with full jitter.
        backoff_max: the longest single wait, `Retry-After` included.
        cache: the JSONL cache file; None keeps answers in memory only.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_concurrency: int = 8, temperature: float = 0.0,
                 max_tokens: int = 1024, max_retries: int = 6, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, cache: str | Path | None = None):
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ConfigError("teacher: need max_concurrency >= 1, max_retries >= 0, timeout > 0")
        if api_key_env is None:
            self._key = "EMPTY"  # local servers (vLLM, Ollama) accept any key
        elif not os.environ.get(api_key_env):
            raise ConfigError(f"teacher: the API key variable ${api_key_env} is not set "
                              "(or set teacher.api_key_env=null for a server without keys)")
        else:
            self._key = os.environ[api_key_env]
        self.base_url, self.model = base_url, model
        self.timeout, self.max_concurrency = float(timeout), int(max_concurrency)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.max_retries = int(max_retries)
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.cache = AnswerCache(cache)
        self.usage = Usage()
        self._not_before = 0.0  # a 429's Retry-After pauses every worker, not just the one hit

    def __repr__(self) -> str:  # the key stays out of reprs and tracebacks
        return f"Teacher(base_url={self.base_url!r}, model={self.model!r})"

    def key(self, passage: str) -> str:
        return cache_key(passage, self.model, self.temperature, self.max_tokens)

    def scrub(self, text: str) -> str:
        """`text` with the API key replaced, for anything that is logged or written."""
        return text.replace(self._key, "<redacted>") if self._key != "EMPTY" else text

    def annotate(self, passages: Sequence[str],
                 on_answer: Callable[[int, Answer], None] | None = None) -> list[Answer]:
        """Answers for `passages`, in order: from the cache where there, else from the teacher.

        `on_answer(index, answer)` is called as each answer arrives (cached ones first).
        """
        return asyncio.run(self.aannotate(passages, on_answer))

    async def aannotate(self, passages: Sequence[str],
                        on_answer: Callable[[int, Answer], None] | None = None) -> list[Answer]:
        results: list[Answer | None] = [None] * len(passages)
        todo = []
        for i, text in enumerate(passages):
            hit = self.cache.get(self.key(text))
            if hit is not None:
                results[i] = hit
                if on_answer:
                    on_answer(i, hit)
            else:
                todo.append(i)
        if not todo:
            return results  # a full cache: not even a client is built
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key,
                                    timeout=self.timeout, max_retries=0)
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(i: int) -> None:
            async with gate:
                try:
                    answer = await self._ask(client, passages[i])
                except Exception as e:  # whatever it is: record it and go on
                    answer = Answer(self.key(passages[i]), attempts=1,
                                    error=f"unexpected {type(e).__name__}",
                                    detail=self.scrub(str(e))[:300])
            self.cache.append(answer, model=self.model, prompt=PROMPT_VERSION)
            results[i] = answer
            if on_answer:
                on_answer(i, answer)

        try:
            await asyncio.gather(*(one(i) for i in todo))
        finally:
            await client.close()
        return results

    async def _ask(self, client: openai.AsyncOpenAI, passage: str) -> Answer:
        answer = Answer(key=self.key(passage))
        loop = asyncio.get_running_loop()
        for attempt in range(self.max_retries + 1):
            if (pause := self._not_before - loop.time()) > 0:
                await asyncio.sleep(pause)
            answer.attempts += 1
            self.usage.requests += 1
            status, retry_after = None, None
            try:
                resp = await client.chat.completions.create(
                    model=self.model, messages=messages(passage), temperature=self.temperature,
                    max_tokens=self.max_tokens)
            except openai.APIStatusError as e:
                status = e.status_code
                reason = f"HTTP {status}"
                retriable = status in RETRY_STATUS or status >= 500
                if e.code == "insufficient_quota":  # a 429 that no wait will cure
                    retriable, reason = False, "HTTP 429 insufficient_quota"
                retry_after = parse_retry_after(e.response.headers)
                detail = self.scrub(str(getattr(e, "message", e)))[:300]
            except openai.APITimeoutError:
                reason, retriable, detail = "timeout", True, f"no answer within {self.timeout}s"
            except openai.APIConnectionError as e:
                reason, retriable, detail = "connection error", True, self.scrub(str(e))[:300]
            else:
                choices = getattr(resp, "choices", None)  # a non-JSON 200 comes back as a str
                if choices:
                    return self._answer(answer, resp, choices[0])
                # a proxy's error page or a half-written body: worth another try
                reason, retriable = "malformed response", True
                detail = self.scrub(repr(resp))[:300]
            if not retriable or attempt == self.max_retries:
                answer.error = reason if not retriable else f"{reason} (retries exhausted)"
                answer.detail = detail
                log.debug("teacher gave up on %s after %d attempt(s): %s: %s", answer.key[:12],
                          answer.attempts, reason, detail)
                return answer
            self.usage.retries += 1
            self.usage.waits[reason] = self.usage.waits.get(reason, 0) + 1
            if retry_after is not None:
                delay = min(retry_after, self.backoff_max)
                if status == 429:
                    self._not_before = max(self._not_before, loop.time() + delay)
            else:  # exponential backoff with full jitter (AWS architecture blog)
                delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** attempt))
            log.debug("teacher retry %d on %s in %.2fs: %s", attempt + 1, answer.key[:12], delay,
                      reason)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _answer(self, answer: Answer, resp, choice) -> Answer:
        if resp.usage is not None:
            answer.prompt_tokens = resp.usage.prompt_tokens or 0
            answer.completion_tokens = resp.usage.completion_tokens or 0
            self.usage.prompt_tokens += answer.prompt_tokens
            self.usage.completion_tokens += answer.completion_tokens
        content = choice.message.content if choice.message is not None else None
        if content is None:  # a refusal or a filtered answer
            answer.error = "empty response"
        else:
            answer.content, answer.finish_reason = content, choice.finish_reason
        return answer
