"""uniner-distill against a real chat-completions server on 127.0.0.1 that misbehaves on purpose."""

import email.utils
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from uniner.cli.distill import run
from uniner.data.pieces import sentences
from uniner.data.spans import first_occurrence
from uniner.distill.annotate import ground, normalize_type, parse_answer
from uniner.distill.chunking import TokenCounter, build_passages, chunk
from uniner.distill.teacher import (
    SYSTEM_PROMPT,
    AnswerCache,
    cache_key,
    messages,
    parse_retry_after,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = "test-teacher"
KEY = "sk-sentinel-7f3c9a1e-never-write-me"


# --- a real OpenAI-compatible server -------------------------------------------------------------

def ok(content, finish="stop"):
    return ("answer", content, finish)


def status(code, headers=None, body=None):
    return ("status", code, headers or {}, body)


class FakeTeacher:
    """`/v1/chat/completions` on 127.0.0.1, scripted per passage: call n of a passage takes step
    n of its plan (the last step repeats). Counts calls per passage and records the requests."""

    def __init__(self, plans: dict[str, list], default=None, delay: float = 0.0):
        self.plans, self.default, self.delay = plans, default, delay
        self.calls: Counter = Counter()
        self.times = defaultdict(list)
        self.answered: Counter = Counter()
        self.requests, self.auth = [], set()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                passage = body["messages"][1]["content"].split("Passage: ", 1)[1]
                with outer.lock:
                    n = outer.calls[passage]
                    outer.calls[passage] += 1
                    outer.times[passage].append(time.monotonic())
                    outer.requests.append(body)
                    outer.auth.add(self.headers.get("Authorization"))
                plan = outer.plans.get(passage) or [outer.default or ok("[]")]
                step = plan[min(n, len(plan) - 1)]
                if outer.delay:
                    time.sleep(outer.delay)
                try:
                    self.respond(step, body, passage)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): that is the point
                if step[0] == "answer":
                    with outer.lock:
                        outer.answered[passage] += 1

            def respond(self, step, body, passage):
                kind = step[0]
                if kind == "sleep":
                    time.sleep(step[1])
                    step = ok("[]")
                    kind = "answer"
                if kind == "answer":
                    _, content, finish = step
                    payload = {
                        "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": len(passage.split()), "completion_tokens": 7,
                                  "total_tokens": len(passage.split()) + 7}}
                    self.send(200, payload)
                elif kind == "raw":  # a 200 that is no JSON (a proxy's error page)
                    data = step[1].encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif kind == "echo":  # an error page that quotes the request's credentials back
                    self.send(400, {"error": {"message": f"bad request from "
                                              f"{self.headers.get('Authorization')}",
                                              "type": "invalid_request_error", "code": None}})
                else:
                    _, code, headers, err = step
                    self.send(code, err or {"error": {"message": f"error {code}",
                                                      "type": "server_error", "code": None}},
                              headers)

            def send(self, code, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def overrides(server, tmp_path, inp, **extra):
    base = {"input": str(inp), "teacher.base_url": server.url, "teacher.model": MODEL,
            "teacher.timeout": 1.0, "teacher.max_retries": 2, "teacher.backoff_base": 0.01,
            "teacher.backoff_max": 2.0, "teacher.max_concurrency": 4,
            "cache": str(tmp_path / "cache" / "teacher.jsonl")}
    return [f"{k}={v}" for k, v in {**base, **extra}.items()]


def distill_cli(args, run_dir, env_key=KEY, check=True, **popen):
    env = {**os.environ, "OPENAI_API_KEY": env_key,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "uniner.cli.distill", *args, f"hydra.run.dir={run_dir}"]
    if popen.pop("background", False):
        return subprocess.Popen(cmd, env=env, cwd=run_dir.parent, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    proc = subprocess.run(cmd, env=env, cwd=run_dir.parent, capture_output=True, text=True,
                          timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def assert_no_key(root: Path, *streams: str):
    for f in root.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f"API key written to {f}"
    for s in streams:
        assert KEY not in s


def assert_pile_ner(path: Path) -> list[dict]:
    items = json.load(open(path))
    assert isinstance(items, list)
    for item in items:
        assert set(item) == {"id", "conversations"}
        conv = item["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert conv[0]["value"].startswith("Text: ") and conv[1]["value"] == "I've read this text."
        for q, a in zip(conv[2::2], conv[3::2]):
            assert q["value"].startswith("What describes ") and q["value"].endswith(" in the text?")
            answer = json.loads(a["value"])
            assert answer and all(isinstance(x, str) for x in answer)  # positive types only
    return items


# --- the end-to-end run --------------------------------------------------------------------------

P = {  # passage -> (its plan, what must come of it)
    "Alice Smith flew to Paris with Acme Corp.":
        ([ok('[("Alice Smith", "person"), ("Paris", "location"), ("Acme Corp", "organization")]')],
         [["Alice Smith", "person"], ["Paris", "location"], ["Acme Corp", "organization"]]),
    "Bob Jones met Carol King in Berlin.":  # rate limited once, with Retry-After: 1
        ([status(429, {"Retry-After": "1"}), ok('[("Bob Jones", "person"), ("Berlin", "city")]')],
         [["Bob Jones", "person"], ["Berlin", "city"]]),
    "The Louvre is in Paris.":  # two 500s, then fine
        ([status(500), status(502), ok('[["The Louvre", "museum"], ["Paris", "city"]]')],
         [["The Louvre", "museum"], ["Paris", "city"]]),
    "Dave Lee joined IBM in 1999.":  # slower than the 1 s timeout once
        ([("sleep", 2.5), ok('[("Dave Lee", "person"), ("IBM", "company")]')],
         [["Dave Lee", "person"], ["IBM", "company"]]),
    "Eve Adams wrote Moby Dick reviews.":  # prose, single quotes, odd case, trailing comma
        ([ok("Sure! Here are the entities:\n[('Eve Adams', 'Person'), ('Moby Dick', "
             "' Literary   Work'),]\nLet me know if you need more.")],
         [["Eve Adams", "person"], ["Moby Dick", "literary work"]]),
    "Frank Ocean sang at Coachella in California.":  # cut off by max_tokens
        ([ok('[("Frank Ocean", "musician"), ("Coachella", "festival"), ("Califor', "length")],
         [["Frank Ocean", "musician"], ["Coachella", "festival"]]),
    "Grace Hopper worked at Harvard.":  # an entity the passage lacks, and a duplicate
        ([ok('[("Grace Hopper", "person"), ("Zeus", "deity"), ("Harvard", "university"), '
             '("grace hopper", "person")]')],
         [["Grace Hopper", "person"], ["Harvard", "university"]]),
    "Mona Lisa hangs in the Louvre.":
        ([("raw", "<html>502 Bad Gateway</html>"),
          ok('[("Mona Lisa", "painting"), ("Louvre", "museum")]')],
         [["Mona Lisa", "painting"], ["Louvre", "museum"]]),
    "Nothing much happens here.": ([ok("[]")], []),
    "Henry Ford built cars.": ([status(500)], None),  # always 500: fails after the retries
    "Irene Curie studied radium.": ([("sleep", 2.5)], None),  # always too slow
    "Jack Ma founded Alibaba.": ([ok("I am sorry, I cannot help with that.")], None),
    "Kate Bush sang in London.": ([("echo",)], None),  # a 400 that quotes the key back
    "Liam Neeson acted in Taken.":
        ([status(429, body={"error": {"message": "You exceeded your current quota",
                                      "type": "insufficient_quota",
                                      "code": "insufficient_quota"}})], None),
}
FAILED = {"Henry Ford built cars.": "HTTP 500 (retries exhausted)",
          "Irene Curie studied radium.": "timeout (retries exhausted)",
          "Jack Ma founded Alibaba.": "unparseable answer",
          "Kate Bush sang in London.": "HTTP 400",
          "Liam Neeson acted in Taken.": "HTTP 429 insufficient_quota"}


def test_distill_end_to_end(tmp_path):
    texts = list(P) + ["Alice Smith   flew to Paris with Acme Corp."]  # a duplicate chunk
    inp = write_jsonl(tmp_path / "corpus.jsonl", texts)
    run_dir = tmp_path / "run"
    with FakeTeacher({t: plan for t, (plan, _) in P.items()}) as server:
        proc = distill_cli(overrides(server, tmp_path, inp), run_dir)
        calls, times = dict(server.calls), dict(server.times)
        assert server.auth == {f"Bearer {KEY}"}  # the key from the environment was used
        req = server.requests[0]
        assert req["model"] == MODEL and req["temperature"] == 0 and req["max_tokens"] == 1024
        assert req["messages"] == messages(req["messages"][1]["content"].split("Passage: ")[1])

    acct = json.loads((run_dir / "accounting.json").read_text())
    assert acct["documents"] == len(texts) and acct["duplicates_dropped"] == 1
    assert acct["passages"] == len(P) == acct["annotated"] + acct["failed"]
    assert acct["annotated"] == len(P) - len(FAILED) and acct["from_cache"] == 0
    assert {f["reason"] for f in acct["failures"]} == set(FAILED.values())
    assert acct["failed_reasons"] == Counter(FAILED.values())
    assert acct["dropped_ungrounded"] == 1 and acct["duplicates_merged"] == 1
    assert acct["truncated_answers"] == 1 and acct["passages_without_entities"] == 1
    assert acct["parse"] == {"ok": 7, "salvaged": 1, "empty": 1, "unparseable": 1}
    answered = [t for t in P if t not in FAILED] + ["Jack Ma founded Alibaba."]
    assert acct["tokens"] == {"prompt": sum(len(t.split()) for t in answered),
                              "completion": 7 * len(answered),
                              "total": sum(len(t.split()) + 7 for t in answered)}

    # retries: what is transient is retried, what is not is asked once
    assert calls["Bob Jones met Carol King in Berlin."] == 2
    t0, t1 = times["Bob Jones met Carol King in Berlin."]
    assert t1 - t0 >= 0.9  # Retry-After: 1 beats the 0.01 s backoff
    assert calls["The Louvre is in Paris."] == 3 and calls["Dave Lee joined IBM in 1999."] == 2
    assert calls["Mona Lisa hangs in the Louvre."] == 2
    assert acct["retry_reasons"] == {"HTTP 429": 1, "HTTP 500": 3, "HTTP 502": 1, "timeout": 3,
                                     "malformed response": 1}
    assert calls["Henry Ford built cars."] == calls["Irene Curie studied radium."] == 3
    assert calls["Kate Bush sang in London."] == calls["Liam Neeson acted in Taken."] == 1

    items = assert_pile_ner(run_dir / "conversations.json")
    got = {}
    for item in items:
        text = item["conversations"][0]["value"][len("Text: "):]
        conv = item["conversations"][2:]
        got[text] = [[e, q["value"][len("What describes "):-len(" in the text?")]]
                     for q, a in zip(conv[::2], conv[1::2]) for e in json.loads(a["value"])]
    want = {t: ents for t, (_, ents) in P.items() if t not in FAILED}
    assert {t: sorted(e) for t, e in got.items()} == {t: sorted(e) for t, e in want.items()}

    for name in ("stats.json", "stats.md", "type_frequency.png", "annotations.jsonl",
                 "distill.log", ".hydra/config.yaml"):
        assert (run_dir / name).stat().st_size > 0, name
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["passages"] == acct["annotated"] and stats["entities"] == acct["entities_kept"]
    assert (run_dir / "type_frequency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "teacher" in proc.stderr  # the progress bar
    assert_no_key(tmp_path, proc.stdout, proc.stderr)

    # a re-run costs nothing: every answer comes from the cache, failures are asked again
    with FakeTeacher({t: plan for t, (plan, _) in P.items()}) as server:
        distill_cli(overrides(server, tmp_path, inp), tmp_path / "run2")
        api_failures = {t for t, r in FAILED.items() if r != "unparseable answer"}
        assert set(server.calls) == api_failures
    acct2 = json.loads((tmp_path / "run2" / "accounting.json").read_text())
    assert acct2["from_cache"] == len(P) - len(api_failures)
    assert acct2["tokens"] == acct["tokens"] and acct2["tokens_this_run"]["total"] == 0
    assert json.load(open(tmp_path / "run2" / "conversations.json")) == items


def test_distill_resumes_after_a_kill(tmp_path):
    texts = [f"Person{i} Smith lives in City{i} near River{i}." for i in range(12)]
    plans = {t: [ok(f'[("Person{i} Smith", "person"), ("City{i}", "city")]')]
             for i, t in enumerate(texts)}
    inp = write_jsonl(tmp_path / "corpus.jsonl", texts)
    cache = tmp_path / "cache" / "teacher.jsonl"
    args = lambda server: overrides(server, tmp_path, inp, **{"teacher.max_concurrency": 2})  # noqa: E731
    with FakeTeacher(plans, delay=0.15) as server:
        proc = distill_cli(args(server), tmp_path / "run1", background=True)
        deadline = time.monotonic() + 30
        while sum(server.answered.values()) < 4 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # the worst case: no chance to clean up
        proc.communicate()
    keys = {cache_key(t, MODEL, 0.0, 1024): t for t in texts}
    cached = {keys[k] for k in AnswerCache(cache).answers}
    assert 0 < len(cached) < len(texts)
    with open(cache, "a") as f:
        f.write('{"key": "0123abc", "content": "[(\\"Per')  # a line torn by the kill

    with FakeTeacher(plans) as server:
        distill_cli(args(server), tmp_path / "run2")
        assert not set(server.calls) & cached  # nothing cached is asked again
        assert dict(server.calls) == {t: 1 for t in texts if t not in cached}
    acct = json.loads((tmp_path / "run2" / "accounting.json").read_text())
    assert acct["from_cache"] == len(cached) and acct["annotated"] == len(texts)
    assert acct["cache_torn_lines"] == 1
    assert len(assert_pile_ner(tmp_path / "run2" / "conversations.json")) == len(texts)

    with FakeTeacher(plans) as server:  # complete now: a third run makes no call at all
        distill_cli(args(server), tmp_path / "run3")
        assert not server.calls
    assert_no_key(tmp_path)


def test_missing_key_is_a_clear_error(tmp_path):
    inp = write_jsonl(tmp_path / "c.jsonl", ["Ann went home."])
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "uniner.cli.distill", f"input={inp}",
                           f"cache={tmp_path / 'c'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "$OPENAI_API_KEY is not set" in proc.stderr


# --- compose + run in process --------------------------------------------------------------------

@pytest.fixture
def distill_cfg():
    def make(*ovr, teacher="openai"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose("distill", overrides=[f"teacher={teacher}", *ovr])
    yield make
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("teacher", ["openai", "vllm", "ollama"])
def test_teacher_configs_compose(distill_cfg, teacher, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = distill_cfg("input=x", "teacher.model=m", teacher=teacher)
    t = cfg.teacher
    assert t.temperature == 0 and t.max_tokens > 0 and t.max_concurrency >= 1
    assert t.base_url.startswith("http") and "api_key" not in t
    assert cfg.chunk_tokens == 256
    built = instantiate(t, cache=None)
    assert built.model == "m" and KEY not in repr(built) + repr(vars(built).get("cache"))


def test_dry_run_on_a_directory(distill_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a dry run needs no key
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    sent = "Ada Lovelace wrote notes on the Analytical Engine in London. "
    (corpus / "a.txt").write_text(sent * 40)
    (corpus / "sub" / "b.txt").write_text("Charles Babbage lived in London.\n\n" + sent)
    (corpus / "skip.md").write_text("not read")
    cfg = distill_cfg(f"input={corpus}", "dry_run=true", "chunk_tokens=64",
                      f"cache={tmp_path / 'cache.jsonl'}")
    acct = run(cfg, tmp_path / "out")
    # a.txt: 8 chunks of 5 identical 12-token sentences, 7 of them duplicates
    assert acct["documents"] == 2 and acct["chunks"] == 9 and acct["duplicates_dropped"] == 7
    assert acct["to_send"] == acct["passages"] == 2 and acct["from_cache"] == 0
    assert acct["prompt_tokens_estimate"] > 0


def test_sample_is_seeded(tmp_path):
    docs = [("d", f"Sentence number {i} is here.") for i in range(50)]
    a = build_passages(docs, 256, TokenCounter(), sample=10, seed=1)
    b = build_passages(docs, 256, TokenCounter(), sample=10, seed=1)
    c = build_passages(docs, 256, TokenCounter(), sample=10, seed=2)
    assert [x.id for x in a] == [x.id for x in b] != [x.id for x in c]
    assert len(a) == 10 and len({x.id for x in a}) == 10


def test_bad_jsonl_names_file_and_line(distill_cfg, tmp_path):
    inp = tmp_path / "c.jsonl"
    inp.write_text('{"text": "fine."}\n{"txt": "wrong field"}\n')
    with pytest.raises(ValueError, match=r"c\.jsonl:2: "):
        run(distill_cfg(f"input={inp}", "dry_run=true", f"cache={tmp_path / 'x'}"), tmp_path)
    acct = run(distill_cfg(f"input={inp}", "dry_run=true", "on_error=skip",
                           f"cache={tmp_path / 'x'}"), tmp_path)
    assert acct["malformed_rows_skipped"] == 1 and acct["passages"] == 1


# --- the pieces ----------------------------------------------------------------------------------

def test_prompt_is_the_papers():
    m = messages("Ada went home.")
    assert m[0] == {"role": "system", "content": "You are a helpful information extraction system."}
    assert m[1]["content"] == (
        "Given a passage, your task is to extract all entities and identify their entity types. "
        "The output should be in a list of tuples of the following format: "
        '[("entity 1", "type of entity 1"), ... ].\n\nPassage: Ada went home.')
    assert SYSTEM_PROMPT == m[0]["content"]


def test_cache_key_covers_what_changes_the_answer():
    k = cache_key("text", "m", 0.0, 1024)
    assert k == cache_key("text", "m", 0, 1024)
    assert len({k, cache_key("text ", "m", 0, 1024), cache_key("text", "m2", 0, 1024),
                cache_key("text", "m", 0.7, 1024), cache_key("text", "m", 0, 512)}) == 5


def test_parse_retry_after():
    from httpx2 import Headers

    assert parse_retry_after(Headers({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(Headers({"retry-after-ms": "250", "Retry-After": "9"})) == 0.25
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(Headers({"Retry-After": date}), now=now) <= 31
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(Headers({"Retry-After": past}), now=now) == 0.0
    assert parse_retry_after(Headers({"Retry-After": "soon"})) is None
    assert parse_retry_after(Headers({})) is None


PAIRS = [("Ada Lovelace", "person"), ("London", "city")]


@pytest.mark.parametrize("answer,status", [
    ('[("Ada Lovelace", "person"), ("London", "city")]', "ok"),  # the asked-for form
    ('[["Ada Lovelace", "person"], ["London", "city"]]', "ok"),  # JSON arrays of arrays
    ("[('Ada Lovelace', 'person'), ('London', 'city')]", "ok"),  # single quotes
    ('[("Ada Lovelace", "person"), ("London", "city"),]', "ok"),  # trailing comma
    ('Here they are:\n[("Ada Lovelace", "person"), ("London", "city")]\nDone!', "ok"),  # prose
    ('```json\n[["Ada Lovelace", "person"], ["London", "city"]]\n```', "ok"),  # a code fence
    ('[{"entity": "Ada Lovelace", "type": "person"}, {"entity": "London", "type": "city"}]',
     "ok"),
    ('[("Ada Lovelace", "person"), ("London", "city"), ("Bab', "salvaged"),  # truncated
    ('[("Ada Lovelace", "person"), ("London", "city"), (', "salvaged"),
    ('Entities [see below]: ("Ada Lovelace", "person"), ("London", "city")', "salvaged"),
    ('[("Ada Lovelace", "person") ("London", "city")]', "salvaged"),  # a missing comma
])
def test_parse_malformed_forms(answer, status):
    parsed = parse_answer(answer)
    assert parsed.pairs == PAIRS and parsed.status == status


@pytest.mark.parametrize("answer,pairs,status", [
    ("[]", [], "empty"),
    ("None", [], "empty"),
    ("There are no entities in this passage.", [], "empty"),
    ("I cannot help with that.", [], "unparseable"),
    ('[("Ada", "person", "extra"), ("London", "city")]', [("London", "city")], "ok"),
    ("[('McDonald's', 'company')]", [("McDonald's", "company")], "salvaged"),
    ('[("He said \\"hi\\"", "quote")]', [('He said "hi"', "quote")], "ok"),
    ('["London", "city"]', [("London", "city")], "ok"),  # one bare pair
])
def test_parse_edge_cases(answer, pairs, status):
    parsed = parse_answer(answer)
    assert (parsed.pairs, parsed.status) == (pairs, status)


def test_ground():
    text = "Ada met ADA and Charles  Babbage in London.\nAda left."
    pairs = [("London", "City"), ("Ada", "person"), ("Charles Babbage", " person "),
             ("Zeus", "deity"), ("ada", "person"), ("Ada", "Person"), (" ", "x")]
    g = ground(text, pairs)
    assert [(m.text, m.type, m.start) for m in g.mentions] == [
        ("Ada", "person", 0), ("Charles  Babbage", "person", 16), ("London", "city", 36)]
    assert g.counts["ungrounded"] == 1 and g.counts["duplicates merged"] == 2
    assert g.counts["empty entity or type"] == 1
    kept = ground(text, pairs, keep_ungrounded=True, type_case="keep")
    assert kept.mentions[-1].text == "Zeus" and kept.mentions[-1].start is None
    assert {m.type for m in kept.mentions} == {"City", "person", "deity", "Person"}
    assert first_occurrence("a\nb c", "a b C") == (0, 5)
    assert normalize_type("  Programming \t Language ") == "programming language"
    with pytest.raises(ValueError):
        normalize_type("x", "upper")


TEXT = ("Dr. Smith went to Washington D.C. on Monday. He met J. Doe there! \"Is it fine?\" he "
        "asked. The U.S. Army came at 3 p.m. today.\n\nA new paragraph starts here. It counts "
        "3.5 million people, e.g. children. " + "Onelongsentence " * 40 + "ends here.")


def test_sentences():
    got = [TEXT[s:e] for s, e in sentences(TEXT)]
    assert got[:5] == ["Dr. Smith went to Washington D.C. on Monday.", "He met J. Doe there!",
                       '"Is it fine?" he asked.', "The U.S. Army came at 3 p.m. today.",
                       "A new paragraph starts here."]
    assert got[5].startswith("It counts 3.5 million people, e.g. children.")


@pytest.mark.parametrize("limit", [8, 16, 64, 256])
def test_chunks_respect_the_limit_and_sentences(limit):
    counter = TokenCounter()
    chunks = chunk(TEXT, limit, counter)
    assert all(0 < counter.count(c) <= limit for c in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(TEXT.split())  # nothing lost
    ends = {TEXT[s:e] for s, e in sentences(TEXT)}
    for c in chunks:  # a chunk is whole sentences, or part of one longer than the limit
        whole = any(c.startswith(s) for s in ends) or any(s in c for s in ends) or any(
            c in s and counter.count(s) > limit for s in ends)
        assert whole, c
    if limit >= 64:  # short sentences are never cut
        assert all(any(s in c for c in chunks) for s in ends if counter.count(s) <= limit)


def test_chunks_with_a_real_tokenizer(data_root):
    counter = TokenCounter(str(data_root / "tokenizer_sp32k"))
    for limit in (10, 32, 256):
        chunks = chunk(TEXT, limit, counter)
        assert all(counter.count(c) <= limit for c in chunks)
        assert " ".join(" ".join(chunks).split()) == " ".join(TEXT.split())
    # 271 tokens: the short sentences fill one passage, the 203-token sentence the next
    assert [counter.count(c) for c in chunk(TEXT, 256, counter)] == [68, 203]
