"""Tiny random-weight classifier checkpoints in the published formats (tests and `make demo`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from virnucpro.io.atomic import atomic_path
from virnucpro.testing.pickles import pickled_as

FORMS = ("pickle", "state_dict", "safetensors")


class PublishedMLPClassifier(nn.Module):
    """A replica of the training script's class; pickled as `__main__.MLPClassifier` like the published files
    (or under another script's module name, see `save_published_pickle`)."""

    def __init__(self, input_dim, hidden_dim, num_class):
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.hidden_layer(x)
        x = self.bn1(x)
        x = torch.relu(x)
        x = self.dropout(x)
        return self.output_layer(x)


def write_tiny_classifier(
    path: str | Path,
    input_dim: int,
    hidden_dim: int = 16,
    seed: int = 0,
    form: str = "pickle",
    bn_eps: float = 1e-5,
) -> Path:
    """Write a random classifier to `path` in `form` and return the path.

    `random_published_classifier(input_dim, hidden_dim, seed)` rebuilds the same module (tests compare against it).
    Only the pickle keeps a non-default `bn_eps` (state dicts carry no eps), as with the published files.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    model = random_published_classifier(input_dim, hidden_dim, seed)
    model.bn1.eps = bn_eps
    if form == "pickle":
        return save_published_pickle(model, path)
    with atomic_path(path) as tmp:
        if form == "state_dict":
            torch.save(model.state_dict(), tmp)
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return Path(path)


def save_published_pickle(model: PublishedMLPClassifier, path: str | Path, module: str = "__main__") -> Path:
    """`torch.save` of the whole module, as the published training script saved 300_model.pth / 500_model.pth;
    `module`: the module the class is pickled under (the published files say `__main__`, a retraining script
    imported as `train` says `train`)."""
    with atomic_path(path) as tmp, pickled_as(PublishedMLPClassifier, module, "MLPClassifier"):
        torch.save(model, tmp)
    return Path(path)


def random_published_classifier(input_dim: int, hidden_dim: int, seed: int) -> PublishedMLPClassifier:
    """Random weights, and BatchNorm running stats far from (0, 1) so eval mode is not the identity."""
    generator = torch.Generator().manual_seed(seed)
    model = PublishedMLPClassifier(input_dim, hidden_dim, 2)
    with torch.no_grad():
        for tensor in (model.hidden_layer.weight, model.hidden_layer.bias, model.output_layer.weight):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / input_dim**0.5)
        model.output_layer.bias.copy_(torch.randn(2, generator=generator) * 0.1)
        model.bn1.weight.copy_(1 + 0.5 * torch.randn(hidden_dim, generator=generator))
        model.bn1.bias.copy_(0.5 * torch.randn(hidden_dim, generator=generator))
        model.bn1.running_mean.copy_(0.3 * torch.randn(hidden_dim, generator=generator))
        model.bn1.running_var.copy_(0.2 + torch.rand(hidden_dim, generator=generator) * 2)
        model.bn1.num_batches_tracked.fill_(1000)
    return model.eval()
