"""Known answers for ``loss_recovered``: a splice computed by hand, left padding, the
input scale and the interval (a wrong splice must fail these)."""

import numpy as np
import pytest
import torch

from sklearn_sparsegap.activations import loss_recovered

VOCAB, WIDTH = 11, 4


class Positionwise(torch.nn.Module):
    """Embedding -> identity (the hooked module) -> unembedding: each position's logits
    depend on its own activation only, so every loss can be written down."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.hooked = torch.nn.Identity()
        self.head = torch.nn.Linear(WIDTH, VOCAB)

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.hooked(self.embed(input_ids)))


def _by_hand(model, tokens, replace, *, exclude_first):
    """Mean next-token cross-entropy with position t's activation ``replace(h_t)``."""
    with torch.no_grad():
        total, count = 0.0, 0
        for row in tokens:
            hidden = model.embed(row)
            for t in range(len(row) - 1):
                if exclude_first and t == 0:
                    continue
                logits = model.head(replace(hidden[t]))
                total += float(torch.nn.functional.cross_entropy(logits[None], row[t + 1][None]))
                count += 1
    return total / count, count


@pytest.mark.parametrize("exclude_first", [False, True])
def test_a_partial_reconstruction_scores_as_computed_by_hand(exclude_first):
    model = Positionwise()
    tokens = torch.randint(0, VOCAB, (3, 6), generator=torch.Generator().manual_seed(1))
    shrink = lambda x: 0.3 * x  # noqa: E731
    result = loss_recovered(model, [tokens], module="hooked", reconstruct=shrink,
                            exclude_first=exclude_first)
    clean, n = _by_hand(model, tokens, lambda h: h, exclude_first=exclude_first)
    ablation, _ = _by_hand(model, tokens, torch.zeros_like, exclude_first=exclude_first)
    recon, _ = _by_hand(model, tokens, shrink, exclude_first=exclude_first)
    assert result["n_tokens"] == n == 3 * (5 - exclude_first)
    assert result["ce_clean"] == pytest.approx(clean, rel=1e-6)
    assert result["ce_ablation"] == pytest.approx(ablation, rel=1e-6)
    assert result["ce_reconstruction"] == pytest.approx(recon, rel=1e-6)
    assert result["score"] == pytest.approx((ablation - recon) / (ablation - clean), rel=1e-6)
    # Strictly between the ablation and the identity: a splice that did nothing (or
    # zeroed everything) cannot pass.
    assert 0 < result["score"] < 1


def test_left_padding_counts_and_replaces_only_real_tokens():
    model = Positionwise()
    rows = [torch.tensor([3, 1, 4, 1, 5]), torch.tensor([9, 2, 6])]
    padded = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.zeros(2, 5, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, 5 - len(row):] = row
        mask[i, 5 - len(row):] = 1
    shrink = lambda x: 0.5 * x  # noqa: E731
    together = loss_recovered(model, [{"input_ids": padded, "attention_mask": mask}],
                              module="hooked", reconstruct=shrink)
    apart = [loss_recovered(model, [row[None]], module="hooked", reconstruct=shrink,
                            n_resamples=0) for row in rows]
    # First real token left out of each sequence, padding never counted.
    assert together["n_tokens"] == (5 - 2) + (3 - 2) == sum(r["n_tokens"] for r in apart)
    n = np.array([r["n_tokens"] for r in apart])
    for key in ("ce_clean", "ce_ablation", "ce_reconstruction"):
        expected = sum(r[key] * k for r, k in zip(apart, n)) / n.sum()
        assert together[key] == pytest.approx(expected, rel=1e-6)


class _ClipCoder:
    """A reconstruction that depends on the scale of its input: clip to [-1, 1]."""

    def transform(self, X):
        return np.clip(X, -1.0, 1.0)

    def inverse_transform(self, codes):
        return codes


def test_the_input_scale_round_trips():
    model = Positionwise()
    tokens = torch.randint(0, VOCAB, (4, 6), generator=torch.Generator().manual_seed(2))
    scale = 0.25
    scaled = loss_recovered(model, [tokens], module="hooked", reconstruct=_ClipCoder(),
                            scale=scale)
    by_hand = loss_recovered(model, [tokens], module="hooked",
                             reconstruct=lambda x: torch.clamp(x * scale, -1, 1) / scale)
    assert scaled["ce_reconstruction"] == pytest.approx(by_hand["ce_reconstruction"], rel=1e-6)
    unscaled = loss_recovered(model, [tokens], module="hooked", reconstruct=_ClipCoder())
    assert unscaled["ce_reconstruction"] != pytest.approx(scaled["ce_reconstruction"], rel=1e-3)
    with pytest.raises(ValueError, match="scale"):
        loss_recovered(model, [tokens], module="hooked", reconstruct=_ClipCoder(), scale=0)


def test_interval_covers_the_score_and_narrows_with_more_sequences():
    model = Positionwise()
    generator = torch.Generator().manual_seed(3)
    shrink = lambda x: 0.5 * x  # noqa: E731
    few = loss_recovered(model, [torch.randint(0, VOCAB, (4, 8), generator=generator)],
                         module="hooked", reconstruct=shrink)
    many = loss_recovered(model, [torch.randint(0, VOCAB, (64, 8), generator=generator)],
                          module="hooked", reconstruct=shrink)
    for result in (few, many):
        low, high = result["score_interval"]
        assert low <= result["score"] <= high
    assert many["n_sequences"] == 64
    width = lambda r: r["score_interval"][1] - r["score_interval"][0]  # noqa: E731
    assert width(many) < width(few)
    one = loss_recovered(model, [torch.randint(0, VOCAB, (1, 8), generator=generator)],
                         module="hooked", reconstruct=shrink)
    assert one["score_interval"] is None  # one sequence: no interval
