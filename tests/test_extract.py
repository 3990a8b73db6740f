"""The extraction engine (same answers as one-query `generate`), constrained decoding, grounded
spans, the `Extractor` API, `uniner-predict` on every input form, and `uniner-eval engine=vllm`
without vLLM."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from reference_generate import ListClosed, generate_answers
from transformers import StoppingCriteriaList

from uniner import Extractor
from uniner.cli.predict import parse_jsonl
from uniner.config import CONF_DIR
from uniner.data.answers import parse_mentions
from uniner.data.encoding import encode_prompt
from uniner.data.prompts import UniNER
from uniner.data.records import DataError
from uniner.evaluation.benchmark import Query
from uniner.inference.engine import Engine
from uniner.inference.extractor import Entity, ground_entities
from uniner.inference.grammar import SpanListGrammar
from uniner.inference.planner import closing_token_ids, encode_queries, plan_batches
from uniner.inference.query_answers import answer_queries
from uniner.model.backbone import build_backbone
from uniner.model.export import export

TEXTS = ["Ada Lovelace met Charles Babbage in London.", "Paris",
         "The quick brown fox jumps over the lazy dog near the river bank in New York City, "
         "1999, and Bob, Bob and Bob watched.", "Bob, Bob and Bob."]
TYPES = ["person", "location", "organization", "musical instrument"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the CPU is shared: with 2 OpenMP threads a tiny matmul waits milliseconds at each barrier
    # whenever another process holds a core; one thread is ~10x faster here
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(eos_scale: float = 1.0, closing_scale: float = 1.0):
    """The seeded tiny backbone; scaling the output rows of EOS and of the `]` tokens (a negative
    scale flips EOS's logits) makes the random model stop on its own, at different steps for
    different queries."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(overrides=["+backbone=tiny", "+quant=none", "+adapter=none"])
    model, tokenizer = build_backbone(cfg.backbone, cfg.quant, cfg.adapter, seed=0)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[tokenizer.eos_token_id] *= eos_scale
        head[closing_token_ids(tokenizer)] *= closing_scale
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def model_tok():
    return tiny()


def one_by_one(model, tokenizer, prompt: list[int], max_new_tokens: int) -> tuple[str, list[int]]:
    """The reference: plain `generate` on one unpadded query, as the official `hf.py`."""
    ids = torch.tensor([prompt])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         stopping_criteria=StoppingCriteriaList([ListClosed(tokenizer,
                                                                           len(prompt))]))
    new = out[0, len(prompt):].tolist()
    return tokenizer.decode(new, skip_special_tokens=True).strip(), new


# ------------------------------------------------------------------------------ the engine


@pytest.mark.parametrize("eos_scale,closing_scale,max_new,stops", [
    (1.0, 1.0, 8, {"max"}),
    (-2.2, 7.0, 16, {"eos", "]"}),
    (-1.5, 5.0, 16, {"eos", "]", "max"}),
])
def test_engine_equals_one_query_generate(eos_scale, closing_scale, max_new, stops):
    model, tok = tiny(eos_scale, closing_scale)
    queries = [(t, ty) for t in TEXTS for ty in TYPES]
    # small batches: texts split across batches and batches holding several texts
    engine = Engine(model, tok, style=UniNER(tok), max_new_tokens=max_new, batch_tokens=6 * 80,
                    batch_rows=6, refill=True)
    got = engine.answer(queries)
    closing = set(closing_token_ids(tok))
    expected, seen = [], set()
    for text, type_ in queries:
        answer, new = one_by_one(model, tok, engine.prompt(text, type_), max_new)
        expected.append(answer)
        seen.add("eos" if new[-1] == tok.eos_token_id else "]" if new[-1] in closing else "max")
    assert got == expected
    assert seen == stops  # the stop rules were exercised
    if stops != {"max"}:  # rows finishing early made room for the next queries
        assert engine.stats["refills"] > 0
    # and the same as today's batched generate
    prompts = encode_queries(queries, tok, UniNER(tok))
    assert got == generate_answers(model, tok, prompts, max_new_tokens=max_new, batch_size=5)


def test_engine_with_one_token_prompts():
    # prompts of one token have an empty shared prefix (a row needs a suffix token of its own),
    # mixed with longer ones in a batch, in a refill and alone
    model, tok = tiny(-1.0, 3.0)
    prompts = [[5], [6], [7], [9], [7, 8, 9], [7, 8, 10], [11, 12], [5], [13, 14, 15, 16]] * 2
    texts = ["a", "b", "c", "d", "e", "e", "f", "g", "h"] * 2
    expected = [one_by_one(model, tok, p, 12)[0] for p in prompts]
    refills = 0
    for rows in (2, 3, 20):
        engine = Engine(model, tok, style=UniNER(tok), max_new_tokens=12, batch_rows=rows,
                        refill=True)
        assert engine.answer_prompts(prompts, texts) == expected
        refills += engine.stats["refills"]
    assert refills > 0


def test_plain_forward_while_switched_is_sdpa(model_tok):
    # the engine switches the model's attention during its passes; a forward of the same model
    # from elsewhere meanwhile (a demo's other request) must still be plain attention
    from uniner.inference.attention import ATTENTION

    model, tok = model_tok
    ids = torch.tensor([encode_prompt(UniNER().query(TEXTS[0], "person"), tok)] * 2)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        before = model.config._attn_implementation_internal
        model.config._attn_implementation_internal = ATTENTION
        try:
            got = model(input_ids=ids, attention_mask=mask).logits
        finally:
            model.config._attn_implementation_internal = before
    torch.testing.assert_close(got, expected)


def test_answer_queries_goes_through_the_engine(model_tok):
    model, tok = model_tok
    queries = [Query(f"q{i}", "d", "general", t, ty, ()) for i, (t, ty) in
               enumerate((t, ty) for t in TEXTS[:2] for ty in TYPES)]
    cache: dict = {}
    got = answer_queries(model, tok, queries, max_new_tokens=6, batch_size=3, prompt_cache=cache,
                         style=UniNER(tok))
    assert set(cache) == {(q.text, q.type) for q in queries}
    assert got == [one_by_one(model, tok, cache[(q.text, q.type)], 6)[0] for q in queries]
    assert model.training is False


def test_queries_encode_as_encode_prompt(model_tok):
    _, tok = model_tok
    queries = [(t, ty) for t in TEXTS for ty in TYPES] + [("", "person")]
    style = UniNER()
    assert encode_queries(queries, tok, UniNER(tok)) == [encode_prompt(style.query(t, ty), tok)
                                            for t, ty in queries]


def test_batches_share_prefixes_within_the_budget(model_tok):
    _, tok = model_tok
    queries = [(t, ty) for t in TEXTS for ty in TYPES]
    prompts = encode_queries(queries, tok, UniNER(tok))
    texts = [t for t, _ in queries]
    batches = plan_batches(prompts, texts, max_new_tokens=10, batch_tokens=400, batch_rows=5)
    rows = [i for b in batches for c in b for i in c.rows]
    assert sorted(rows) == list(range(len(queries)))
    for batch in batches:
        n = sum(len(c.rows) for c in batch)
        assert n <= 5
        # each chunk's prefix once, the widest suffix + new tokens per row
        slots = sum(c.prefix_len for c in batch) + n * max(
            len(prompts[i]) - c.prefix_len + 10 for c in batch for i in c.rows)
        assert slots <= 400 or len(batch) == 1
        for chunk in batch:
            assert len({texts[i] for i in chunk.rows}) == 1
            shared = prompts[chunk.rows[0]][: chunk.prefix_len]
            assert all(prompts[i][: chunk.prefix_len] == shared
                       and len(prompts[i]) > chunk.prefix_len for i in chunk.rows)
    # the shared prefix reaches past `USER: What describes` when a text's types share it
    full = plan_batches(prompts, texts, max_new_tokens=10, batch_tokens=10**6, batch_rows=99)
    chunk = next(c for b in full for c in b if texts[c.rows[0]] == TEXTS[0])
    head = encode_prompt(UniNER().query(TEXTS[0], "x")[:2], tok)
    question = tok("USER: What describes", add_special_tokens=False)["input_ids"]
    assert chunk.prefix_len >= len(head) + len(question)


def test_engine_rejects_bad_options(model_tok):
    model, tok = model_tok
    with pytest.raises(ValueError, match="decoding='beam'"):
        Engine(model, tok, style=UniNER(tok), decoding="beam")
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        Engine(model, tok, style=UniNER(tok), max_new_tokens=0)


# ------------------------------------------------------------------------------ constrained


def test_grammar_accepts_only_lists_of_substrings():
    g = SpanListGrammar('Ada met "Bob" at C\\D.')

    def run(s):
        state = (g.START, "")
        for ch in s:
            state = g.step(state, ch)
            if state is None:
                return None
        return state

    assert run(' ["Ada", "met"]')[0] == g.DONE
    assert run("[]")[0] == g.DONE
    assert run('["Ada m')[0] == g.ITEM  # a valid prefix
    assert run('["Bob", "at C')[0] == g.ITEM
    # not in the text, separators other than `, `, blank edges, empty items, characters that
    # would need escapes, anything after the list
    for bad in ['["Adam"]', '["Ada" ]', '["Ada","met"]', '[" Ada"]', '["Ada "]', '["C\\',
                '["\\"Bob', '[""]', ' ["Ada"]]', '  [', 'x', '["Bob" at']:
        assert run(bad) is None, bad


@pytest.mark.parametrize("closing_scale, max_new", [(1.0, 24), (3.0, 10)])
def test_constrained_answers_are_lists_of_substrings(closing_scale, max_new):
    # 10 new tokens: the longer lists are cut by max_new_tokens and closed after an item
    model, tok = tiny(closing_scale=closing_scale)
    texts = TEXTS + ['He said "hi" to C:\\temp, café owner Zoë.']
    engine = Engine(model, tok, style=UniNER(tok), max_new_tokens=max_new, decoding="constrained")
    answers = engine.answer([(t, ty) for t in texts for ty in TYPES])
    n_items = 0
    for (text, _), answer in zip([(t, ty) for t in texts for ty in TYPES], answers):
        items, malformed = parse_mentions(answer)
        assert not malformed and answer == json.dumps(items, ensure_ascii=False)
        for item in items:
            assert item and item in text and item == item.strip(), (item, text)
        n_items += len(items)
    assert n_items > 0  # the test saw items, not only []


# ------------------------------------------------------------------------------ spans, API


def test_every_occurrence_is_grounded_with_overlaps():
    text = "New York is big. new york city and York; New York again."
    answer = '["New York", "New York City", "York", "Boston"]'
    got = ground_entities(text, "location", answer)
    spans = {(e.start, e.end) for e in got}
    assert all(text[e.start: e.end] == e.text and e.type == "location" for e in got)
    ny = [(m, m + 8) for m in (0, 41)]
    assert set(ny) <= spans  # repeated: both exact-case occurrences
    assert (17, 30) in spans and got[[(e.start, e.end) for e in got].index((17, 30))].text \
        == "new york city"  # a case-insensitive match keeps the text's case
    york = {(4, 8), (35, 39), (45, 49)}
    assert york <= spans  # overlapping the "New York" spans
    assert not any(e.text == "Boston" for e in got)


def test_extractor_entities_are_grounded_and_empty_inputs_give_empty(model_tok):
    model, tok = model_tok
    ex = Extractor(model, tok, max_new_tokens=12, decoding="constrained")
    found = ex.extract(TEXTS, TYPES)
    assert len(found) == len(TEXTS)
    for text, entities in zip(TEXTS, found):
        for e in entities:
            assert isinstance(e, Entity) and text[e.start: e.end] == e.text and e.type in TYPES
        assert entities == sorted(entities, key=lambda e: (e.start, e.end, e.type))
    assert ex.extract([], TYPES) == []
    assert ex.extract(["", "  "], TYPES) == [[], []]
    assert ex.extract(TEXTS[:2], []) == [[], []]
    assert ex.extract("", ["person"]) == []
    assert ex.extract(TEXTS[:2], [[], ["person"]])[0] == []
    with pytest.raises(ValueError, match="2 type lists for 1 texts"):
        ex.extract(TEXTS[:1], [["person"], ["location"]])


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model_tok):
    model, tok = model_tok
    return export(model, tok, tmp_path_factory.mktemp("ckpt") / "export", style=UniNER(tok))


def predict(overrides, monkeypatch, stdin: str | None = None):
    from uniner.cli import predict as app

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(stdin))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("predict", overrides=overrides)
    return app.run(cfg)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_rows(rows, texts, types_per_text):
    assert [r["text"] for r in rows] == texts
    for r, types in zip(rows, types_per_text):
        for e in r["entities"]:
            assert set(e) == {"text", "type", "start", "end"}
            assert r["text"][e["start"]: e["end"]] == e["text"] and e["type"] in types


def test_predict_literal_text_file_and_jsonl(tmp_path, monkeypatch, checkpoint):
    common = [f"checkpoint={checkpoint}", "max_new_tokens=8", "decoding=constrained",
              "progress=false"]
    out = tmp_path / "literal.jsonl"
    # a literal text with a comma and a colon, quoted for Hydra
    predict([*common, "input='Ada Lovelace, a writer: London.'", "types=[person,location]",
             f"output={out}"], monkeypatch)
    check_rows(read_lines(out), ["Ada Lovelace, a writer: London."], [["person", "location"]])

    txt = tmp_path / "texts.txt"
    txt.write_text(f"{TEXTS[0]}\n\n{TEXTS[2]}\n", encoding="utf-8")
    out = tmp_path / "txt.jsonl"
    assert predict([*common, f"input={txt}", "types=[person]", f"output={out}"],
                   monkeypatch) == 3
    check_rows(read_lines(out), [TEXTS[0], "", TEXTS[2]], [["person"]] * 3)
    assert read_lines(out)[1]["entities"] == []  # the blank line keeps its place

    jsonl = tmp_path / "queries.jsonl"
    jsonl.write_text(json.dumps({"id": 7, "text": TEXTS[0], "types": ["person"]}) + "\n\n"
                     + json.dumps({"text": TEXTS[3]}) + "\n", encoding="utf-8")
    out = tmp_path / "jsonl.jsonl"
    predict([*common, f"input={jsonl}", "types=[organization]", f"output={out}",
             "chunk=1"], monkeypatch)
    rows = read_lines(out)
    assert rows[0]["id"] == 7 and "id" not in rows[1]
    check_rows(rows, [TEXTS[0], TEXTS[3]], [["person"], ["organization"]])


def test_predict_stdin_both_forms(monkeypatch, capsys, checkpoint):
    common = [f"checkpoint={checkpoint}", "max_new_tokens=6", "progress=false", "input=-"]
    predict([*common, "types=[person]"], monkeypatch, stdin=f"{TEXTS[0]}\n{TEXTS[1]}\n")
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    check_rows(rows, TEXTS[:2], [["person"]] * 2)
    predict(common, monkeypatch, stdin=json.dumps({"text": TEXTS[1], "types": ["city"]}) + "\n")
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    check_rows(rows, TEXTS[1:2], [["city"]])


def test_predict_console_script_reads_stdin(tmp_path, checkpoint):
    proc = subprocess.run([sys.executable, "-m", "uniner.cli.predict", f"checkpoint={checkpoint}",
                           "input=-", "types=[person,location]", "max_new_tokens=4",
                           f"hydra.run.dir={tmp_path}"], input=f"{TEXTS[0]}\n",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]  # nothing else on stdout
    check_rows(rows, TEXTS[:1], [["person", "location"]])
    # stderr is a pipe: the progress as plain lines; no run directory without output=
    assert "predict: 2/2 queries (100%)" in proc.stderr
    assert "run directory" not in proc.stderr


@pytest.mark.parametrize("line,message", [
    ("{not json", "queries.jsonl:2: not valid JSON"),
    ('["a list"]', 'queries.jsonl:2: expected an object {"text"'),
    ('{"text": "x", "types": "person"}', 'queries.jsonl:2: "types" must be a list of strings'),
    ('{"text": "x"}', 'queries.jsonl:2: no entity types'),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, monkeypatch, line, message):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"text": "ok", "types": ["a"]}\n' + line + "\n")
    with pytest.raises(DataError, match=str(path).replace("\\", "\\\\")) as err:
        predict([f"checkpoint={tmp_path}/never-loaded", f"input={path}"], monkeypatch)
    assert message.split(":", 2)[2].strip() in str(err.value) and ":2:" in str(err.value)
    assert parse_jsonl(['{"text": "x"}'], "f", ["a"])[0].types == ["a"]


def test_predict_input_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="input=missing.txt: no such file"):
        predict(["checkpoint=x", "input=missing.txt", "types=[a]"], monkeypatch)
    with pytest.raises(ValueError, match="no entity types: give types="):
        predict(["checkpoint=x", "input='some text'"], monkeypatch)


# ------------------------------------------------------------------------------ uniner-eval


def test_eval_engine_vllm_without_vllm_is_a_clear_error(monkeypatch, data_root, checkpoint):
    from uniner.cli import eval as evaluate

    monkeypatch.setitem(sys.modules, "vllm", None)  # as where vLLM is not installed
    monkeypatch.setenv("UNINER_DATA", str(data_root))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[f"checkpoint={checkpoint}", "engine=vllm",
                                         "benchmark=sample", "benchmark.max_sentences=1"])
    queries = [Query("q", "d", "general", TEXTS[0], "person", ())]
    with pytest.raises(ImportError, match=r"pip install 'uniner\[vllm\]'"):
        evaluate.generate_outputs(cfg, queries)
    cfg.engine = "tgi"
    with pytest.raises(ValueError, match="engine='tgi': choose one of hf, vllm"):
        evaluate.generate_outputs(cfg, queries)
    cfg.engine, cfg.max_new_tokens = "hf", 6
    model, tok = tiny()
    assert evaluate.generate_outputs(cfg, queries) == [
        one_by_one(model, tok, encode_queries([(TEXTS[0], "person")], tok, UniNER(tok))[0], 6)[0]]


# ------------------------------------------------------------------------------ bf16, peaked

GOLD = {TEXTS[0]: {"person": ["Ada Lovelace", "Charles Babbage"], "location": ["London"]},
        TEXTS[1]: {"location": ["Paris"]},
        TEXTS[2]: {"person": ["Bob"], "location": ["New York City"]},
        TEXTS[3]: {"person": ["Bob"]}}


@pytest.fixture(scope="module")
def memorised():
    """The tiny model full-finetuned to answer the (text, type) questions of `GOLD` by heart
    (every type of `TYPES`, `[]` where none): its next-token distributions are peaked, so bf16
    rounding cannot flip a greedy choice. ~90 steps: about 40 s on one CPU thread under load."""
    model, tok = tiny()
    style = UniNER()
    rows, starts = [], []
    for text in TEXTS:
        for type_ in TYPES:
            prompt = encode_prompt(style.query(text, type_), tok)
            answer = tok(" " + style.answer(GOLD[text].get(type_, [])),
                         add_special_tokens=False)["input_ids"]
            rows.append(prompt + answer + [tok.eos_token_id])
            starts.append(len(prompt))
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    labels = torch.full_like(ids, -100)
    for k, (r, s) in enumerate(zip(rows, starts)):
        labels[k, s - 1: len(r) - 1] = ids[k, s: len(r)]  # next tokens of the answers only
    answer = labels != -100
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(200):  # ~90 steps
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[answer]), labels[answer])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.01, loss.item()
    return model.eval(), tok


def test_engine_equals_one_query_generate_in_bf16(memorised):
    model, tok = memorised
    model = model.to(torch.bfloat16)
    try:
        queries = [(t, ty) for t in TEXTS for ty in TYPES]
        # small batches: texts split across batches, batches of several texts, refills
        engine = Engine(model, tok, style=UniNER(tok), max_new_tokens=24, batch_tokens=6 * 40,
                        batch_rows=6, refill=True)
        got = engine.answer(queries)
        expected = [one_by_one(model, tok, engine.prompt(t, ty), 24)[0] for t, ty in queries]
        assert got == expected
        assert engine.stats["refills"] > 0  # `[]` rows finished first and made room
        gold = [UniNER.answer(GOLD[t].get(ty, [])) for t, ty in queries]
        assert sum(a == g for a, g in zip(got, gold)) >= 0.9 * len(gold)  # learnt by heart
        assert {len(a) for a in got} >= {2, len('["London"]')}  # answers of different lengths
    finally:
        model.float()


def test_shared_prefix_attention_refuses_softcapping():
    """A model with logit softcapping would be answered wrongly by the in-place prefix attention:
    a one-line config error instead."""
    from uniner.errors import ConfigError
    from uniner.inference.attention import shared_prefix_attention

    q = torch.zeros(1, 2, 1, 4)
    with pytest.raises(ConfigError, match="softcapping"):
        shared_prefix_attention(None, q, q, q, None, shared_prefix=object(), softcap=30.0)


def test_a_prompt_style_must_write_its_segments():
    from uniner.data.prompts import PromptStyle

    with pytest.raises(TypeError, match="segments"):
        PromptStyle()
