"""The OpenAI-compatible back end against a stub chat-completions server on 127.0.0.1.

The HTTP protocol is real (urllib against http.server); the "model" is a keyword rule:
it explains every latent as the token its marked excerpts share, and detects excerpts
containing that token.
"""

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from _interpret_data import (
    DEAD_LATENT,
    FIRES_ON,
    TOKEN_LATENT,
    VOCAB,
    KnownLatents,
    make_activations,
    make_tokens,
)

from sklearn_sparsegap.interpret import (
    BackendError,
    LLMExplainer,
    OpenAICompatibleClient,
    compute_feature_statistics,
    explain_and_score,
)


def keyword_model(messages):
    system, user = messages[0]["content"], messages[1]["content"]
    if "[EXPLANATION]" in system:
        marked = Counter(re.findall(r"<<(.*?)>>", user))
        token = marked.most_common(1)[0][0]
        return f"The marked tokens are all {token!r}.\n[EXPLANATION]: the token {token}"
    explanation = re.search(r"Latent explanation: the token (.*)", user).group(1)
    examples = re.findall(r"^Example \d+: (.*)$", user, flags=re.M)
    return json.dumps([int(mentions(example, explanation)) for example in examples])


def mentions(text, token):
    """Whether ``text`` holds the whole token (" w7" but not " w70")."""
    return re.search(re.escape(token) + r"(?![0-9])", text) is not None


class Stub:
    """Starts a chat-completions server; ``behaviour`` can fail or garble answers."""

    def __init__(self, behaviour=None):
        self.behaviour = behaviour or (lambda stub, payload, number: None)
        self.requests = []
        self.headers = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append(payload)
                    stub.headers.append(dict(self.headers))
                    number = len(stub.requests)
                override = stub.behaviour(stub, payload, number)
                if isinstance(override, int):
                    self.send_response(override)
                    self.end_headers()
                    return
                content = override if isinstance(override, str) else keyword_model(
                    payload["messages"]
                )
                body = json.dumps({
                    "choices": [{"message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that timed out closed the socket: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_factory():
    stubs = []

    def make(behaviour=None):
        stub = Stub(behaviour and (lambda s, p, n: behaviour(s, p, n)))
        stubs.append(stub)
        return stub

    yield make
    for stub in stubs:
        stub.close()


@pytest.fixture(scope="module")
def stats():
    metadata = make_tokens(n_documents=60)
    X = make_activations(metadata)
    return compute_feature_statistics(KnownLatents(), X, metadata, vocabulary=VOCAB,
                                      n_top=10, n_random=20)


def client_for(stub, **kwargs):
    kwargs.setdefault("backoff", 0.01)
    return OpenAICompatibleClient(stub.url, model="stub-model", api_key="secret", **kwargs)


def test_explains_and_scores_over_http_with_cache_and_accounting(stub_factory, stats,
                                                                 tmp_path):
    stub = stub_factory()
    client = client_for(stub, cache_dir=tmp_path / "cache", prompt_cost=2.0,
                        completion_cost=10.0)
    backend = LLMExplainer(client)
    latents = [TOKEN_LATENT, DEAD_LATENT]
    results = explain_and_score(stats, backend, protocol="paper", latents=latents)
    row = results["latent"].index(TOKEN_LATENT)
    assert results["explanation"][row] == f"the token {VOCAB[FIRES_ON]}"
    assert results["backend"][row] == "llm:stub-model"
    assert results["tp"][row] == 5 and results["fn"][row] == 0
    assert results["status"][results["latent"].index(DEAD_LATENT)] == "dead: never fires"
    n_requests = len(stub.requests)
    assert n_requests == 2  # one explanation, one detection batch of 10
    assert stub.headers[0]["Authorization"] == "Bearer secret"
    assert stub.requests[0]["model"] == "stub-model"
    assert client.usage["prompt_tokens"] == 100 * n_requests
    assert client.usage["cost"] == pytest.approx(n_requests * (100 * 2 + 10 * 10) / 1e6)
    # A re-run is answered from the cache: no request reaches the server.
    again_client = client_for(stub, cache_dir=tmp_path / "cache")
    again = explain_and_score(stats, LLMExplainer(again_client), protocol="paper",
                              latents=latents)
    assert len(stub.requests) == n_requests
    assert again_client.usage["cache_hits"] == n_requests
    assert again["f1"][row] == results["f1"][row]


def test_delphi_protocol_over_http_batches_of_five(stub_factory, stats):
    stub = stub_factory()
    backend = LLMExplainer(client_for(stub, max_workers=2))
    results = explain_and_score(stats, backend, protocol="delphi", min_firing=10,
                                latents=[TOKEN_LATENT], scorers=("detection",))
    assert results["status"] == ["scored"]
    n = results["n_positive"][0] + results["n_negative"][0]
    detection = [r for r in stub.requests if "[EXPLANATION]" not in r["messages"][0]["content"]]
    assert len(detection) == -(-n // 5)
    assert all(r["messages"][1]["content"].count("\nExample ") <= 5 for r in detection)
    assert results["f1"][0] == 1.0


def test_server_errors_are_retried_with_backoff(stub_factory, stats):
    stub = stub_factory(lambda s, payload, number: 503 if number <= 2 else None)
    client = client_for(stub, max_retries=3)
    results = explain_and_score(stats, LLMExplainer(client), protocol="paper",
                                latents=[TOKEN_LATENT])
    assert results["status"] == ["scored"]
    assert client.usage["retries"] == 2 and client.usage["failures"] == 0


def test_timeouts_leave_the_latent_unscored_and_the_run_goes_on(stub_factory, stats):
    import time

    def slow_for_token_latent(stub, payload, number):
        text = payload["messages"][-1]["content"]
        explaining = "[EXPLANATION]" in payload["messages"][0]["content"]
        if explaining and mentions(text, f"<<{VOCAB[FIRES_ON]}>>"):
            time.sleep(0.5)
        return None

    stub = stub_factory(slow_for_token_latent)
    client = client_for(stub, timeout=0.1, max_retries=1)
    results = explain_and_score(stats, LLMExplainer(client), protocol="paper",
                                latents=[TOKEN_LATENT, 4], n_jobs=1)
    assert results["status"][0].startswith("unscored: request to")
    assert np.isnan(results["f1"][0])
    assert results["status"][1] == "scored"
    assert client.usage["failures"] == 1


def test_malformed_answers_are_reasked_then_unscored(stub_factory, stats, tmp_path):
    stub = stub_factory(lambda s, payload, number: "I cannot decide.")
    client = client_for(stub, cache_dir=tmp_path)
    backend = LLMExplainer(client, max_parse_retries=2)
    results = explain_and_score(stats, backend, protocol="paper", latents=[TOKEN_LATENT])
    assert results["status"][0].startswith("unscored: malformed answer after 3 tries")
    assert len(stub.requests) == 3
    # The re-asks are distinct requests in the cache, so a re-run sends none.
    explain_and_score(stats, LLMExplainer(client_for(stub, cache_dir=tmp_path)),
                      protocol="paper", latents=[TOKEN_LATENT])
    assert len(stub.requests) == 3


def test_garbled_detection_answer_is_reasked(stub_factory, stats):
    def wrong_length_once(stub, payload, number):
        is_detection = "[EXPLANATION]" not in payload["messages"][0]["content"]
        return "[1, 0]" if is_detection and number == 2 else None

    stub = stub_factory(wrong_length_once)
    results = explain_and_score(stats, LLMExplainer(client_for(stub)), protocol="paper",
                                latents=[TOKEN_LATENT])
    assert results["status"] == ["scored"] and len(stub.requests) == 3


def test_contexts_longer_than_the_model_window_are_trimmed(stub_factory, stats):
    stub = stub_factory()
    budget = 260
    backend = LLMExplainer(client_for(stub), max_prompt_tokens=budget)
    results = explain_and_score(stats, backend, protocol="paper", latents=[TOKEN_LATENT])
    assert results["status"] == ["scored"]
    for request in stub.requests:
        assert sum(len(m["content"]) for m in request["messages"]) / 4 <= budget
    # The marked token survives trimming, so the explanation is still right.
    assert results["explanation"] == [f"the token {VOCAB[FIRES_ON]}"]
    tiny = LLMExplainer(client_for(stub), max_prompt_tokens=20)
    results = explain_and_score(stats, tiny, protocol="paper", latents=[TOKEN_LATENT])
    assert "does not fit max_prompt_tokens=20" in results["status"][0]


def test_client_configuration_from_environment_and_validation(monkeypatch):
    monkeypatch.setenv("SPARSEGAP_LLM_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("SPARSEGAP_LLM_MODEL", "env-model")
    monkeypatch.setenv("SPARSEGAP_LLM_API_KEY", "env-key")
    client = OpenAICompatibleClient()
    assert client.base_url == "http://127.0.0.1:9/v1" and client.model == "env-model"
    assert client._api_key == "env-key"
    monkeypatch.delenv("SPARSEGAP_LLM_MODEL")
    with pytest.raises(ValueError, match="model"):
        OpenAICompatibleClient()
    with pytest.raises(ValueError, match="max_retries"):
        OpenAICompatibleClient(model="m", max_retries=-1)
    with pytest.raises(BackendError, match="failed"):
        # Nothing listens on port 9 of the loopback interface: refused at once.
        OpenAICompatibleClient(model="m", max_retries=0).chat(
            [{"role": "user", "content": "hi"}]
        )
