"""Explainer / scorer back ends: an OpenAI-compatible chat endpoint and an offline N-gram one.

A back end has three methods the protocols call:

- ``explain(examples, *, logits=None, background=None) -> str``
- ``detect(explanation, windows) -> list of 0/1`` (does each window activate the latent?)
- ``fuzz(explanation, windows, highlights) -> list of 0/1`` (are the highlighted tokens the
  ones the explanation describes?)

``examples`` are dicts with ``tokens`` (strings), ``activations`` and ``marked`` (bool per
token: the tokens the protocol highlights); ``windows`` are lists of token strings.
"""

import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import numpy as np

__all__ = ["OpenAICompatibleClient", "LLMExplainer", "NGramExplainer", "BackendError"]


class BackendError(RuntimeError):
    """An explainer or scorer could not produce an answer (the latent is left unscored).

    Examples
    --------
    >>> from sklearn_sparsegap.interpret import BackendError
    >>> str(BackendError("timed out"))
    'timed out'
    """


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAICompatibleClient:
    """A small client for any OpenAI-compatible ``/chat/completions`` endpoint.

    Requests are retried with exponential backoff on timeouts, connection errors and
    HTTP 408/429/5xx; answers are cached on disk (a re-run costs nothing); tokens and
    cost are counted in :attr:`usage`. Thread-safe, so protocols run several latents at
    once (``max_workers``).

    Parameters
    ----------
    base_url : str, default=None
        Endpoint root, e.g. ``"http://127.0.0.1:8000/v1"``; else ``SPARSEGAP_LLM_BASE_URL``,
        else ``OPENAI_BASE_URL``.
    model : str, default=None
        Model name; else ``SPARSEGAP_LLM_MODEL``.
    api_key : str, default=None
        Bearer token; else ``SPARSEGAP_LLM_API_KEY``, else ``OPENAI_API_KEY`` (may be empty
        for local servers).
    timeout : float, default=60.0
        Seconds to wait for one response.
    max_retries : int, default=4
        Retries of a failed request.
    backoff : float, default=1.0
        The i-th retry waits ``backoff * 2**i`` seconds.
    max_workers : int, default=4
        Requests the protocols send at once.
    cache_dir : str or path, default=None
        Directory of the response cache; None disables caching.
    temperature : float, default=0.0
        Sampling temperature.
    max_tokens : int, default=1024
        Largest completion.
    prompt_cost, completion_cost : float, default=0.0
        Price per million prompt / completion tokens, for :attr:`usage` ``cost``.

    Attributes
    ----------
    usage : dict
        ``requests`` (sent), ``cache_hits``, ``retries``, ``failures``,
        ``prompt_tokens``, ``completion_tokens`` and ``cost``.

    Examples
    --------
    >>> from sklearn_sparsegap.interpret import OpenAICompatibleClient
    >>> client = OpenAICompatibleClient("http://127.0.0.1:9/v1", model="stub")
    >>> client.usage["requests"]
    0
    """

    def __init__(
        self,
        base_url=None,
        model=None,
        api_key=None,
        *,
        timeout=60.0,
        max_retries=4,
        backoff=1.0,
        max_workers=4,
        cache_dir=None,
        temperature=0.0,
        max_tokens=1024,
        prompt_cost=0.0,
        completion_cost=0.0,
    ):
        env = os.environ
        base_url = base_url or env.get("SPARSEGAP_LLM_BASE_URL") or env.get("OPENAI_BASE_URL")
        model = model or env.get("SPARSEGAP_LLM_MODEL")
        if not base_url:
            raise ValueError(
                "base_url is required (or set SPARSEGAP_LLM_BASE_URL / OPENAI_BASE_URL)."
            )
        if not model:
            raise ValueError("model is required (or set SPARSEGAP_LLM_MODEL).")
        for name, value in (("timeout", timeout), ("backoff", backoff)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        if int(max_retries) != max_retries or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}.")
        if int(max_workers) != max_workers or max_workers < 1:
            raise ValueError(f"max_workers must be an integer >= 1, got {max_workers!r}.")
        self.base_url = base_url.rstrip("/")
        self.model = model
        if api_key is None:
            api_key = env.get("SPARSEGAP_LLM_API_KEY", env.get("OPENAI_API_KEY", ""))
        self._api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_workers = int(max_workers)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.prompt_cost = float(prompt_cost)
        self.completion_cost = float(completion_cost)
        self._lock = threading.Lock()
        self.usage = {
            "requests": 0,
            "cache_hits": 0,
            "retries": 0,
            "failures": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost": 0.0,
        }

    def __repr__(self):
        return f"OpenAICompatibleClient({self.base_url!r}, model={self.model!r})"

    def _count(self, **increments):
        with self._lock:
            for key, value in increments.items():
                self.usage[key] += value

    def _cache_path(self, payload, attempt):
        key = json.dumps([self.base_url, payload, attempt], sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()
        return os.path.join(self.cache_dir, digest[:2], digest + ".json")

    def chat(self, messages, *, attempt=0):
        """Send one chat-completions request and return the answer's text.

        Parameters
        ----------
        messages : list of dict
            ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
        attempt : int, default=0
            Re-asking after a malformed answer: part of the cache key, so the n-th
            re-ask is cached separately from the first answer.

        Returns
        -------
        text : str
            ``choices[0].message.content``.
        """
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        path = None
        if self.cache_dir is not None:
            path = self._cache_path(payload, attempt)
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    cached = json.load(handle)
                self._count(cache_hits=1)
                return cached["content"]
        body = self._post(payload)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            self._count(failures=1)
            raise BackendError(
                f"response has no choices[0].message.content: {body!r:.200}"
            ) from exc
        if not isinstance(content, str):
            raise BackendError("choices[0].message.content is not a string.")
        usage = body.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0) or 0)
        completion_tokens = int(usage.get("completion_tokens", 0) or 0)
        self._count(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=(prompt_tokens * self.prompt_cost + completion_tokens * self.completion_cost)
            / 1e6,
        )
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.{threading.get_ident()}.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"content": content, "usage": usage}, handle)
            os.replace(temporary, path)  # atomic, so a killed run leaves no torn entry
        return content

    def _post(self, payload):
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = f"{self.base_url}/chat/completions"
        last_error = None
        for retry in range(self.max_retries + 1):
            if retry:
                self._count(retries=1)
                time.sleep(self.backoff * 2 ** (retry - 1))
            self._count(requests=1)
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}: {exc.read()[:200]!r}"
                if exc.code not in _RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            except json.JSONDecodeError as exc:
                last_error = f"response is not JSON: {exc}"
        self._count(failures=1)
        raise BackendError(f"request to {url} failed: {last_error}")


_EXPLAIN_SYSTEM = (
    "You are studying one latent (feature) of a sparse autoencoder trained on a language "
    "model's activations. You are shown text excerpts on which the latent fires; the "
    "tokens where it fires most are marked <<like this>>, and each excerpt is followed by "
    "its activating tokens with their activations. {logits}Find what the marked tokens "
    "have in common (the token itself, its context, or both). Reason briefly, then end "
    "with one line of the form\n[EXPLANATION]: <a short explanation, at most 20 words>"
)
_DETECT_SYSTEM = (
    "You judge whether a latent of a language model fires on text excerpts. You get the "
    "latent's explanation and {n} numbered excerpts; some of them activate the latent and "
    "some do not. Answer with only a list of {n} numbers, 1 where the excerpt activates "
    "the latent and 0 where it does not, e.g. [1, 0, 1]."
)
_FUZZ_SYSTEM = (
    "You judge explanations of a latent of a language model. You get the latent's "
    "explanation and {n} numbered excerpts, each with some tokens marked <<like this>>. "
    "For each excerpt, say whether the marked tokens are the ones the explanation "
    "describes. Answer with only a list of {n} numbers, 1 for correctly marked and 0 for "
    "incorrectly marked, e.g. [1, 0, 1]."
)


def _marked_text(tokens, marked):
    return "".join(f"<<{t}>>" if m else t for t, m in zip(tokens, marked))


def _parse_explanation(text):
    matches = re.findall(r"\[EXPLANATION\]\s*:\s*(.+)", text)
    if not matches or not matches[-1].strip():
        raise ValueError("no [EXPLANATION]: line")
    return matches[-1].strip()


def _parse_labels(text, n):
    for candidate in reversed(re.findall(r"\[[^\[\]]*\]", text)):
        try:
            values = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(values, list)
            and len(values) == n
            and all(v in (0, 1) and not isinstance(v, float) for v in values)
        ):
            return [int(v) for v in values]
    raise ValueError(f"no list of {n} zeros and ones")


class LLMExplainer:
    """Explainer and scorers that ask a chat model (prompts of the paper and of delphi).

    Parameters
    ----------
    client : OpenAICompatibleClient
        The endpoint.
    max_parse_retries : int, default=2
        Re-asks after an answer that cannot be parsed; then :class:`BackendError`.
    max_prompt_tokens : int, default=None
        The model's context budget for a prompt. Longer prompts have their excerpts
        trimmed around the marked token until they fit (tokens estimated as
        characters / 4); a prompt that cannot fit raises :class:`BackendError`.

    Examples
    --------
    >>> from sklearn_sparsegap.interpret import LLMExplainer, OpenAICompatibleClient
    >>> client = OpenAICompatibleClient("http://127.0.0.1:9/v1", model="stub")
    >>> LLMExplainer(client).name
    'llm:stub'
    """

    def __init__(self, client, *, max_parse_retries=2, max_prompt_tokens=None):
        if not hasattr(client, "chat"):
            raise ValueError("client must have a chat(messages, attempt=) method.")
        self.client = client
        self.max_parse_retries = int(max_parse_retries)
        self.max_prompt_tokens = max_prompt_tokens
        self.name = f"llm:{getattr(client, 'model', 'unknown')}"
        self.max_workers = getattr(client, "max_workers", 1)

    def _ask(self, messages, parse):
        for attempt in range(self.max_parse_retries + 1):
            text = self.client.chat(messages, attempt=attempt)
            try:
                return parse(text)
            except ValueError as exc:
                error = exc
        raise BackendError(
            f"malformed answer after {self.max_parse_retries + 1} tries ({error})"
        )

    def _fit(self, build, examples):
        """Build messages, trimming every example around its marked tokens to fit."""
        examples = [dict(example) for example in examples]
        while True:
            messages = build(examples)
            size = sum(len(m["content"]) for m in messages) / 4
            if self.max_prompt_tokens is None or size <= self.max_prompt_tokens:
                return messages
            longest = max(len(example["tokens"]) for example in examples)
            if longest <= 1:
                raise BackendError(
                    f"prompt of ~{size:.0f} tokens does not fit max_prompt_tokens="
                    f"{self.max_prompt_tokens} even with one-token excerpts"
                )
            examples = [_trim(example, longest - 1) for example in examples]

    def explain(self, examples, *, logits=None, background=None):
        """Return a short explanation of a latent from its activating examples.

        Parameters
        ----------
        examples : list of dict
            ``tokens``, ``activations`` and ``marked`` per excerpt.
        logits : dict, default=None
            ``top`` / ``bottom`` lists of (token, value): what the atom promotes and
            suppresses through the unembedding.
        background : list, default=None
            Ignored (the model is not shown non-activating text).

        Returns
        -------
        explanation : str
            The explanation.
        """
        logit_text = ""
        if logits:
            logit_text = (
                "You also get the tokens whose logits the latent raises and lowers most. "
            )

        def build(examples):
            parts = []
            for index, example in enumerate(examples, 1):
                firing = [
                    f"{t!r} ({a:.2f})"
                    for t, a in zip(example["tokens"], example["activations"])
                    if a > 0
                ]
                parts.append(
                    f"Example {index}: {_marked_text(example['tokens'], example['marked'])}\n"
                    f"Activations: {', '.join(firing)}"
                )
            if logits:
                parts.append(
                    "Top logits: " + ", ".join(repr(t) for t, _ in logits["top"])
                )
                parts.append(
                    "Bottom logits: " + ", ".join(repr(t) for t, _ in logits["bottom"])
                )
            return [
                {"role": "system", "content": _EXPLAIN_SYSTEM.format(logits=logit_text)},
                {"role": "user", "content": "\n\n".join(parts)},
            ]

        return self._ask(self._fit(build, examples), _parse_explanation)

    def _judge(self, system, explanation, examples):
        def build(examples):
            lines = [f"Latent explanation: {explanation}", "", "Text examples:"]
            for index, example in enumerate(examples, 1):
                lines.append(
                    f"Example {index}: {_marked_text(example['tokens'], example['marked'])}"
                )
            return [
                {"role": "system", "content": system.format(n=len(examples))},
                {"role": "user", "content": "\n".join(lines)},
            ]

        n = len(examples)
        return self._ask(self._fit(build, examples), lambda text: _parse_labels(text, n))

    def detect(self, explanation, windows):
        """Predict which windows activate the latent the explanation describes.

        Parameters
        ----------
        explanation : str
            The latent's explanation.
        windows : list of list of str
            Token strings of each excerpt.

        Returns
        -------
        labels : list of int
            1 where the model says the excerpt activates the latent.
        """
        examples = [
            {"tokens": list(w), "marked": [False] * len(w), "centre": len(w) // 2}
            for w in windows
        ]
        return self._judge(_DETECT_SYSTEM, explanation, examples)

    def fuzz(self, explanation, windows, highlights):
        """Judge whether the highlighted tokens of each window match the explanation.

        Parameters
        ----------
        explanation : str
            The latent's explanation.
        windows : list of list of str
            Token strings of each excerpt.
        highlights : list of array of bool
            The highlighted tokens of each excerpt.

        Returns
        -------
        labels : list of int
            1 where the model says the highlighting is correct.
        """
        examples = [
            {
                "tokens": list(w),
                "marked": list(map(bool, h)),
                "centre": int(np.argmax(h)) if np.any(h) else len(w) // 2,
            }
            for w, h in zip(windows, highlights)
        ]
        return self._judge(_FUZZ_SYSTEM, explanation, examples)


def _trim(example, length):
    """Keep ``length`` tokens of an example, centred on its marked token."""
    tokens = example["tokens"]
    if len(tokens) <= length:
        return example
    centre = example.get("centre", len(tokens) // 2)
    start = min(max(0, centre - length // 2), len(tokens) - length)
    trimmed = dict(example)
    for key in ("tokens", "activations", "marked"):
        if key in example:
            trimmed[key] = list(example[key])[start : start + length]
    trimmed["centre"] = centre - start
    return trimmed


_NGRAM_PREFIX = "N-gram explanation: "


def _occurrences(pattern, tokens):
    """End positions where the token sequence ``pattern`` occurs in ``tokens``."""
    n = len(pattern)
    return [
        i
        for i in range(n - 1, len(tokens))
        if tuple(tokens[i - n + 1 : i + 1]) == pattern
    ]


class NGramExplainer:
    """An offline explainer and scorer in the spirit of Neuron-to-Graph (N2G).

    The explanation is the set of single tokens and (previous token, token) bigrams at
    which the latent reaches ``activation_fraction`` of its largest activation in the
    explain set, kept when their precision (matches on firing tokens / all matches, over
    the explain set and the non-activating ``background`` windows) is at least
    ``min_precision`` and seen at ``min_count`` or more such tokens; a bigram is tried
    where its last token alone is not precise enough. The scorer reads only the
    explanation text: detection predicts a window activates when any pattern occurs in
    it; fuzzing says a highlighting is right when most highlighted tokens end a pattern.

    Parameters
    ----------
    activation_fraction : float, default=0.3
        Tokens at or above this fraction of the largest activation are explained.
    min_precision : float, default=0.7
        Smallest precision of a kept pattern.
    min_count : int, default=2
        Fewest strongly activating tokens a kept pattern must explain (a pattern seen
        once is as likely chance as meaning).
    max_patterns : int, default=8
        Largest number of patterns in an explanation.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_sparsegap.interpret import NGramExplainer
    >>> explainer = NGramExplainer()
    >>> examples = [{"tokens": ["a", "cat", "sat"], "activations": np.array([0, 1.0, 0])},
    ...             {"tokens": ["my", "cat"], "activations": np.array([0, 0.8])}]
    >>> explanation = explainer.explain(examples, background=[["a", "dog", "sat"]])
    >>> explanation
    'N-gram explanation: [["cat"]]'
    >>> explainer.detect(explanation, [["the", "cat"], ["a", "dog"]])
    [1, 0]
    """

    name = "ngram"
    max_workers = 1

    def __init__(self, activation_fraction=0.3, min_precision=0.7, min_count=2,
                 max_patterns=8):
        if not 0 < activation_fraction <= 1:
            raise ValueError(
                f"activation_fraction must be in (0, 1], got {activation_fraction!r}."
            )
        if not 0 <= min_precision <= 1:
            raise ValueError(f"min_precision must be in [0, 1], got {min_precision!r}.")
        if int(min_count) != min_count or min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}.")
        if int(max_patterns) != max_patterns or max_patterns < 1:
            raise ValueError(f"max_patterns must be an integer >= 1, got {max_patterns!r}.")
        self.activation_fraction = activation_fraction
        self.min_precision = min_precision
        self.min_count = int(min_count)
        self.max_patterns = int(max_patterns)

    def __repr__(self):
        return (
            f"NGramExplainer(activation_fraction={self.activation_fraction}, "
            f"min_precision={self.min_precision}, min_count={self.min_count}, "
            f"max_patterns={self.max_patterns})"
        )

    def explain(self, examples, *, logits=None, background=None):
        """Return the N-gram explanation of a latent from its activating examples.

        Parameters
        ----------
        examples : list of dict
            ``tokens`` and ``activations`` per excerpt.
        logits : dict, default=None
            Ignored.
        background : list of list of str, default=None
            Windows on which the latent does not fire (for the precision of patterns).

        Returns
        -------
        explanation : str
            ``'N-gram explanation: [[...], ...]'`` (JSON list of token sequences).
        """
        background = background or []
        peak = max(
            (float(np.max(e["activations"])) for e in examples if len(e["activations"])),
            default=0.0,
        )
        if peak <= 0:
            return _NGRAM_PREFIX + "[]"
        cutoff = self.activation_fraction * peak
        coverage = Counter()
        for example in examples:
            tokens, acts = list(example["tokens"]), np.asarray(example["activations"])
            for i in np.flatnonzero(acts >= cutoff):
                coverage[(tokens[i],)] += 1
                if i > 0:
                    coverage[(tokens[i - 1], tokens[i])] += 1

        def precision(pattern):
            hits = total = 0
            for example in examples:
                acts = np.asarray(example["activations"])
                ends = _occurrences(pattern, list(example["tokens"]))
                total += len(ends)
                hits += int(np.count_nonzero(acts[ends] > 0)) if ends else 0
            for window in background:
                total += len(_occurrences(pattern, list(window)))
            return hits / total if total else 0.0

        accepted = []
        # Most-covering first; unigrams before bigrams at equal coverage; then by text,
        # so the explanation is deterministic.
        for pattern, count in sorted(
            coverage.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0])
        ):
            if len(accepted) >= self.max_patterns or count < self.min_count:
                break
            if len(pattern) == 2 and (pattern[1],) in accepted:
                continue
            if precision(pattern) >= self.min_precision:
                accepted.append(pattern)
        return _NGRAM_PREFIX + json.dumps([list(p) for p in accepted])

    @staticmethod
    def _patterns(explanation):
        if not isinstance(explanation, str) or not explanation.startswith(_NGRAM_PREFIX):
            raise BackendError(
                "NGramExplainer scores only its own explanations "
                f"('{_NGRAM_PREFIX}[...]'), got {explanation!r:.80}"
            )
        return [tuple(p) for p in json.loads(explanation[len(_NGRAM_PREFIX) :])]

    def detect(self, explanation, windows):
        """Predict 1 for each window in which a pattern of the explanation occurs.

        Parameters
        ----------
        explanation : str
            An explanation made by :meth:`explain`.
        windows : list of list of str
            Token strings of each excerpt.

        Returns
        -------
        labels : list of int
            The predictions.
        """
        patterns = self._patterns(explanation)
        return [
            int(any(_occurrences(p, list(window)) for p in patterns)) for window in windows
        ]

    def fuzz(self, explanation, windows, highlights):
        """Predict 1 where most highlighted tokens end a pattern of the explanation.

        Parameters
        ----------
        explanation : str
            An explanation made by :meth:`explain`.
        windows : list of list of str
            Token strings of each excerpt.
        highlights : list of array of bool
            The highlighted tokens of each excerpt.

        Returns
        -------
        labels : list of int
            The predictions.
        """
        patterns = self._patterns(explanation)
        labels = []
        for window, highlight in zip(windows, highlights):
            highlighted = set(np.flatnonzero(highlight).tolist())
            ends = {e for p in patterns for e in _occurrences(p, list(window))}
            matched = len(highlighted & ends)
            labels.append(int(bool(highlighted) and matched >= 0.5 * len(highlighted)))
        return labels
