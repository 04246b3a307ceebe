"""`scratchlm serve` against the official openai client: a real server in a subprocess on a loopback port.

The texts it serves are checked against the engine run here on the same weights (greedy decoding is
deterministic), the counts against the chat format's own rendering."""

import asyncio
import json
import math
import random
import signal
import socket

import openai
import pytest
import torch
from openai import AsyncOpenAI, OpenAI
from tokenizers import pre_tokenizers, trainers

from scratchlm.chat import generation_stop_ids, load_chat_format
from scratchlm.infer.engine import Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.run import load_run
from scratchlm.tokenizer import new_bpe

from conftest import WORDS, run_cli
from live_server import make_run, start_server

KEY = "test-key"
CONTEXT = 256
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "the cat sat on"}]


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_jsonl):
    return make_run(tmp_path_factory.mktemp("serve") / "chatrun", corpus_jsonl, CONTEXT)


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    """Two running slots and two waiting: room for the n > 1 tests, and a queue small enough to fill."""
    live = start_server(run, tmp_path_factory.mktemp("log") / "serve.log", "--api-key", KEY, "--max-running", "2",
                        "--max-waiting", "2")
    yield live
    assert live.stop() == 0, live.log.read_text()


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def aclient(server):
    return AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


class Reference:
    """The engine on the same weights, in this process: what the server must answer."""

    def __init__(self, run):
        _, self.tokenizer, model = load_run(run)
        self.fmt = load_chat_format(run, self.tokenizer)
        self.engine = Engine(model, (), self.tokenizer, max_running=2)
        self.stops = generation_stop_ids(self.tokenizer, self.fmt)

    def greedy(self, ids: list[int], max_tokens: int):
        params = SamplingParams(max_new_tokens=max_tokens, temperature=0, stop_token_ids=self.stops,
                                skip_special_tokens=True, top_logprobs=3)
        return self.engine.generate([ids], params)[0]

    def chat_ids(self, messages) -> list[int]:
        return self.fmt.prompt_ids(messages)

    def text_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt, bos=self.tokenizer.add_bos)


@pytest.fixture(scope="module")
def ref(run):
    return Reference(run)


def test_models_names_the_run_directory(client, run):
    assert [m.id for m in client.models.list().data] == ["chatrun"] == [run.name]
    assert client.models.retrieve("chatrun").id == "chatrun"


def test_chat_answers_what_the_engine_generates_and_counts_exactly(client, ref):
    done = client.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=12, temperature=0)
    want = ref.greedy(ref.chat_ids(MESSAGES), 12)
    choice = done.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == want.text
    assert choice.finish_reason == want.finish_reason and done.model == "chatrun"
    assert done.usage.prompt_tokens == len(ref.chat_ids(MESSAGES))
    assert done.usage.completion_tokens == len(want.token_ids)
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_chat_stream_is_the_same_answer_in_pieces_with_usage_last(client, ref):
    whole = client.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # token by token, not at once
    *body, last = chunks
    assert body[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.usage is None for c in body) and last.choices == []
    assert last.usage.model_dump() == whole.usage.model_dump()
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)


def test_the_stream_on_the_wire_is_openai_server_sent_events(server):
    status, raw = server.post("/v1/chat/completions", {"model": "chatrun", "messages": MESSAGES, "max_tokens": 5,
                                                       "stream": True}, key=KEY)
    assert status == 200
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    for event in events[:-2]:
        assert event.startswith("data: {") and "usage" not in json.loads(event.removeprefix("data: "))


def test_completions_sync_and_async_streamed_and_not(client, aclient, ref):
    prompt = "Tom had 3 apples and"
    want = ref.greedy(ref.text_ids(prompt), 10)
    done = client.completions.create(model="chatrun", prompt=prompt, max_tokens=10, temperature=0)
    assert done.choices[0].text == want.text and done.usage.prompt_tokens == len(ref.text_ids(prompt))
    assert done.usage.completion_tokens == len(want.token_ids) and done.object == "text_completion"

    async def both():
        streamed = await aclient.completions.create(model="chatrun", prompt=prompt, max_tokens=10, temperature=0,
                                                    stream=True)
        pieces = [c.choices[0].text async for c in streamed]
        chat = await aclient.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=8, temperature=0)
        return "".join(pieces), chat.choices[0].message.content

    streamed, chat = asyncio.run(both())
    assert streamed == want.text
    assert chat == ref.greedy(ref.chat_ids(MESSAGES), 8).text


def test_completions_take_token_ids_and_echo(client, ref):
    ids = ref.text_ids("the big red house")
    done = client.completions.create(model="chatrun", prompt=ids, max_tokens=6, temperature=0)
    assert done.choices[0].text == ref.greedy(ids, 6).text and done.usage.prompt_tokens == len(ids)
    echoed = client.completions.create(model="chatrun", prompt="the big red house", max_tokens=6, temperature=0,
                                       echo=True)
    assert echoed.choices[0].text == "the big red house" + ref.greedy(ref.text_ids("the big red house"), 6).text


def test_n_choices_share_the_prompt_blocks(client, server):
    """n = 2 samples of a fresh prompt of 40 tokens: the second takes the prompt's two full blocks (16
    tokens each) from the first instead of computing them. Streamed, the same seed gives the same texts."""
    prompt = [10 + (7 * i) % 290 for i in range(40)]
    before = server.metrics()["scratchlm_prefix_cache_hit_tokens_total"]
    done = client.completions.create(model="chatrun", prompt=prompt, max_tokens=8, temperature=1, n=2, seed=3,
                                     extra_body={"ignore_eos": True})
    hits = server.metrics()["scratchlm_prefix_cache_hit_tokens_total"] - before
    assert done.usage.prompt_tokens == 40 and hits == 32
    assert [c.index for c in done.choices] == [0, 1] and done.usage.completion_tokens == 16
    assert done.choices[0].text != done.choices[1].text
    stream = client.completions.create(model="chatrun", prompt=prompt, max_tokens=8, temperature=1, n=2, seed=3,
                                       stream=True, extra_body={"ignore_eos": True})
    texts = ["", ""]
    for chunk in stream:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert texts == [c.text for c in done.choices]


def test_chat_n_choices_streamed(client):
    chunks = list(client.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=6, n=2, seed=1,
                                                 stream=True, extra_body={"ignore_eos": True}))
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason}
    assert finished == {0: "length", 1: "length"}


def test_same_seed_same_text(client):
    def sample(seed: int) -> str:
        done = client.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=20, temperature=1,
                                              seed=seed, extra_body={"ignore_eos": True})
        return done.choices[0].message.content

    assert sample(7) == sample(7) and sample(7) != sample(8)


def test_top_k_one_leaves_only_the_greedy_token(client):
    """At a high temperature sampling wanders off the greedy path (the control); top_k 1 brings it back."""
    def text(**sampling) -> str:
        return client.completions.create(model="chatrun", prompt="the cat", max_tokens=16, seed=1,
                                         extra_body={"ignore_eos": True, **sampling}).choices[0].text

    greedy = text(temperature=0)
    assert text(temperature=5) != greedy and text(temperature=5, top_k=1) == greedy


def test_stop_strings_end_the_text_before_them(client):
    full = client.completions.create(model="chatrun", prompt="the cat", max_tokens=40, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    at = next(i for i in range(3, len(full) - 1) if full[i:i + 2].isascii() and full[i:i + 2].strip())
    stop = full[at:at + 2]
    one = client.completions.create(model="chatrun", prompt="the cat", max_tokens=40, temperature=0, stop=stop)
    assert one.choices[0].text == full[:full.index(stop)] and one.choices[0].finish_reason == "stop"
    many = client.completions.create(model="chatrun", prompt="the cat", max_tokens=40, temperature=0,
                                     stop=["\u2603never", stop])
    assert many.choices[0].text == one.choices[0].text


def test_chat_logprobs_are_the_engines(client, ref):
    done = client.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=8, temperature=0,
                                          logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    want = ref.greedy(ref.chat_ids(MESSAGES), 8)
    content = done.choices[0].logprobs.content
    assert [c.token for c in content] == [ref.tokenizer.decode([t]) for t in want.token_ids]
    assert [c.logprob for c in content] == pytest.approx(want.logprobs, abs=1e-4)
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        assert entry.bytes == list(entry.token.encode())
    plain = client.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=8, temperature=0)
    assert plain.choices[0].logprobs is None


def test_completion_logprobs(client):
    done = client.completions.create(model="chatrun", prompt="the cat", max_tokens=6, temperature=0, logprobs=2,
                                     extra_body={"ignore_eos": True})
    lp = done.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6 == done.usage.completion_tokens
    assert "".join(lp.tokens) == done.choices[0].text or "\ufffd" in done.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    assert all(len(top) <= 2 and max(top.values()) == pytest.approx(lp_) for top, lp_ in
               zip(lp.top_logprobs, lp.token_logprobs, strict=True))


def test_max_completion_tokens_and_unknown_fields(client):
    done = client.chat.completions.create(model="chatrun", messages=MESSAGES, max_completion_tokens=3,
                                          presence_penalty=0.5, user="someone",
                                          extra_body={"ignore_eos": True, "best_of": 1, "no_such_field": [1]})
    assert done.usage.completion_tokens == 3 and done.choices[0].finish_reason == "length"


@pytest.mark.parametrize("call,words", [
    (dict(messages=[{"role": "user", "content": "the cat sat " * 200}]), "context is 256"),
    (dict(messages=MESSAGES, max_tokens=CONTEXT), "ask for at most"),
    (dict(messages=MESSAGES, temperature=-1), "temperature"),
    (dict(messages=MESSAGES, top_p=0), "top_p"),
    (dict(messages=MESSAGES, n=0), "n"),
    (dict(messages=MESSAGES, n=5), "lower n"),
    (dict(messages=MESSAGES, logprobs=True, top_logprobs=21), "top_logprobs"),
    (dict(messages=MESSAGES, top_logprobs=2), "top_logprobs needs logprobs"),
    (dict(messages=[{"role": "robot", "content": "hi"}]), "role"),
    (dict(messages=[]), "conversation"),
    (dict(messages=MESSAGES, stop=[""]), "stop"),
])
def test_bad_requests_are_400_in_openai_shape(client, call, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chatrun", **call)
    error = caught.value.body
    assert caught.value.status_code == 400 and words in error["message"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


def test_a_missing_field_is_400_not_422(server):
    status, body = server.post("/v1/chat/completions", {"model": "chatrun"}, key=KEY)
    assert status == 400 and json.loads(body)["error"]["param"] == "messages"
    status, body = server.post("/v1/completions", {"prompt": "hi", "suffix": "x"}, key=KEY)
    assert status == 400 and "suffix" in json.loads(body)["error"]["message"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert caught.value.status_code == 404 and "chatrun" in caught.value.body["message"]


def test_a_missing_or_wrong_key_is_401_and_health_needs_none(server):
    with pytest.raises(openai.AuthenticationError) as caught:
        OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert caught.value.status_code == 401
    status, body = server.get("/v1/models")  # no key at all (the client refuses to send none)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert server.health()["status"] == "ok"


def test_a_full_queue_is_429_and_the_server_goes_on(client, server):
    """Four sequences fill two running slots and two waiting places; one more is refused until they end."""
    stream = client.completions.create(model="chatrun", prompt="the", max_tokens=200, n=4, stream=True,
                                       extra_body={"ignore_eos": True})
    next(iter(stream))
    with pytest.raises(openai.RateLimitError) as caught:
        client.completions.create(model="chatrun", prompt="the", max_tokens=2)
    assert caught.value.status_code == 429
    stream.close()
    server.wait_idle()
    assert client.completions.create(model="chatrun", prompt="the", max_tokens=2).choices[0].text is not None


def test_a_client_that_leaves_mid_stream_frees_its_sequence(client, server):
    before = server.metrics()["scratchlm_generation_tokens_total"]
    stream = client.completions.create(model="chatrun", prompt="the cat", max_tokens=200, stream=True,
                                       extra_body={"ignore_eos": True})
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()
    server.wait_idle()
    assert server.metrics()["scratchlm_generation_tokens_total"] - before < 100  # not the 200 asked for


def test_a_client_that_leaves_before_the_answer_frees_its_sequence(server):
    before = server.metrics()["scratchlm_generation_tokens_total"]
    body = json.dumps({"prompt": "the cat", "max_tokens": 200, "ignore_eos": True}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    server.wait_idle()
    assert server.metrics()["scratchlm_generation_tokens_total"] - before < 100


def test_health_and_metrics(client, server):
    health = server.health()
    assert {"status", "running", "waiting", "kv_blocks_in_use", "kv_blocks_total"} <= set(health)
    before = server.metrics()
    client.chat.completions.create(model="chatrun", messages=MESSAGES, max_tokens=4, extra_body={"ignore_eos": True})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=MESSAGES)
    after = server.metrics()
    for name in ("scratchlm_num_requests_running", "scratchlm_num_requests_waiting", "scratchlm_kv_blocks_in_use",
                 "scratchlm_kv_blocks_total"):
        assert name in after
    def grew(name: str) -> float:
        return after[name] - before.get(name, 0)

    assert grew("scratchlm_generation_tokens_total") == 4
    assert grew("scratchlm_time_to_first_token_seconds_count") == 1
    assert grew('scratchlm_requests_total{endpoint="/v1/chat/completions",status="200"}') == 1
    assert grew('scratchlm_requests_total{endpoint="/v1/chat/completions",status="404"}') == 1


def test_sigterm_finishes_what_runs_and_exits_0(run, tmp_path):
    """The key may come from SCRATCHLM_API_KEY, the model id from --model-name; a stream in flight when
    SIGTERM comes still ends well."""
    live = start_server(run, tmp_path / "serve.log", "--model-name", "tiny-chat", env={"SCRATCHLM_API_KEY": "env-key"})
    try:
        assert live.get("/v1/models")[0] == 401
        status, body = live.get("/v1/models", key="env-key")
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["tiny-chat"]
        assert "127.0.0.1" in live.url
        client = OpenAI(base_url=live.url + "/v1", api_key="env-key", max_retries=0)
        stream = client.completions.create(model="tiny-chat", prompt="the", max_tokens=150, stream=True,
                                           extra_body={"ignore_eos": True})
        chunks = [next(iter(stream))]
        live.proc.send_signal(signal.SIGTERM)
        chunks += list(stream)
        assert chunks[-1].choices[0].finish_reason in ("length", "abort")
        assert live.proc.wait(60) == 0, live.log.read_text()
    finally:
        live.kill()
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=5)


def test_a_taken_port_and_a_missing_run_are_one_line(server, tmp_path):
    port = server.url.rsplit(":", 1)[1]
    proc = run_cli("serve", str(tmp_path), "--port", port, check=False)
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("serve", str(tmp_path / "nope"), "--port", "0", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------ an imported model, its own template

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] }}<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    """A random transformers Llama with a Llama 3 style chat template (turns end at <|eot_id|>), saved as
    save_pretrained writes it, imported with scratchlm import-hf, and served."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("llama3")
    rng = random.Random(0)
    tok = new_bpe()
    tok.train_from_iterator([" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(300)],
                            trainers.BpeTrainer(vocab_size=330, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                show_progress=False))
    tok.add_special_tokens(LLAMA3_SPECIALS)
    begin, end, eot = (tok.token_to_id(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"))
    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, bos_token_id=begin, eos_token_id=[end, eot])
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # logits of unit scale: greedy tokens far from ties
        for p in model.parameters():
            p.normal_(1, 0.3) if p.ndim == 1 else p.normal_(0, 1 / math.sqrt(p.shape[-1]))
    model.save_pretrained(root / "hf")
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                                  eos_token="<|eot_id|>", chat_template=LLAMA3_TEMPLATE)
    hf_tok.save_pretrained(root / "hf")
    run_cli("import-hf", str(root / "hf"), str(root / "llama3"))
    live = start_server(root / "llama3", root / "serve.log")
    yield model.eval(), hf_tok, live
    assert live.stop() == 0, live.log.read_text()


def test_an_imported_model_chats_in_its_own_template_as_transformers_does(llama3):
    model, hf_tok, live = llama3
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat sat on the mat"}]
    client = OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    done = client.chat.completions.create(model="llama3", messages=messages, max_tokens=12, temperature=0)
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert done.usage.prompt_tokens == len(ids)
    stops = [hf_tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eot_id|>")]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12, eos_token_id=stops,
                             pad_token_id=stops[0])[0, len(ids):].tolist()
    assert done.usage.completion_tokens == len(out) > 3
    assert done.choices[0].message.content == hf_tok.decode(out, skip_special_tokens=True)
    assert done.choices[0].finish_reason == ("stop" if out[-1] in stops else "length")
