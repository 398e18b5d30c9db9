"""The fidelity measure's bookkeeping (CPU): a calibrated classifier puts its median frame on the decision
boundary by construction, and `compare` counts a flip there as a tie, not as a disagreement."""

from __future__ import annotations

import torch

from virnucpro.bench import fidelity
from virnucpro.models.classifier import score


def _margins(classifier, features):
    with torch.inference_mode():
        logits = classifier(features)
    return logits[:, 1] - logits[:, 0]


def test_a_flip_on_the_calibrated_tie_is_a_tie_and_a_flip_elsewhere_is_not():
    torch.manual_seed(0)
    reference = torch.randn(401, 768 + 2560)
    classifier = fidelity.calibrated_classifier(reference, seed=3)
    margins = _margins(classifier, reference)
    tie = int(margins.abs().argmin())
    assert abs(float(margins[tie])) < fidelity.TIE_MARGIN  # the median frame sits on the boundary

    calls = score(classifier, reference).argmax(1) == 1  # as `compare` calls them (an exact tie: others)

    def given_features_of_the_other_call(frame: int) -> torch.Tensor:
        features = reference.clone()
        features[frame] = reference[int(torch.nonzero(calls != calls[frame])[0])]
        return features

    # the tie's call flipped: a flip, and a tie (what counts is the reference's margin)
    result = fidelity.compare(reference, given_features_of_the_other_call(tie), [classifier])
    assert result.flips == 1 and result.tied_flips == 1
    assert result.agreement < 1 and result.agreement_beyond_ties == 1.0

    # a confident frame given another frame's features with the opposite call: a flip that is no tie
    result = fidelity.compare(reference, given_features_of_the_other_call(int(margins.abs().argmax())), [classifier])
    assert result.flips == 1 and result.tied_flips == 0
    assert result.agreement_beyond_ties == 1 - 1 / 401
