"""Objectives: each kind raises what it names more than what it does not, and the grammar.

Most tests climb an objective for a few normalized steps on the tiny random CNN (a plain loop
over :func:`objective_loss`, the module's own step) and compare the activations before and after.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_modules.backbones import Backbone
from lightning_modules.class_visualization.functional import make_optimizer
from lightning_modules.errors import UserInputError
from lightning_modules.feature_visualization.functional import activations, objective_loss
from lightning_modules.feature_visualization.objectives import (
    Channel,
    ClassLogit,
    Diversity,
    LayerL2,
    Neuron,
    Sum,
    gram_similarity,
    parse_objective,
)
from lightning_modules.image_optimization.parameterizations import PixelImage

SIZE = 32


def start_images(backbone: Backbone, batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return PixelImage(0.5).start(batch, SIZE, SIZE, backbone.pixel_min, backbone.pixel_max,
                                 generator)


def ascend(backbone: Backbone, objective, images: torch.Tensor, steps: int = 15,
           lr: float = 2.0) -> torch.Tensor:
    """``steps`` normalized steps up ``objective`` (a string or an Objective) from ``images``."""
    bound = parse_objective(objective).bind(backbone, SIZE)
    parameter = images.clone().requires_grad_(True)
    optimizer = make_optimizer("normalized", [parameter], lr)
    for _ in range(steps):
        optimizer.zero_grad()
        terms, _ = objective_loss(parameter, backbone, [bound], parameterization=PixelImage())
        torch.stack([value.sum() for value in terms.values()]).sum().backward()
        optimizer.step()
        with torch.no_grad():
            parameter.copy_(backbone.clamp_pixels(parameter))
    return parameter.detach()


def layer_output(backbone: Backbone, images: torch.Tensor, layer: int) -> torch.Tensor:
    with torch.no_grad():
        return backbone.extract(images, [layer])[0]


def channel_means(backbone: Backbone, images: torch.Tensor, layer: int) -> torch.Tensor:
    return layer_output(backbone, images, layer).mean((0, 2, 3))


# ----------------------------------------------------------------- each kind raises its target
def test_channel_raises_its_channel_more_than_any_other(tiny_backbone) -> None:
    start = start_images(tiny_backbone)
    before = channel_means(tiny_backbone, start, 2)
    after = channel_means(tiny_backbone, ascend(tiny_backbone, "channel:2:5", start), 2)
    rise = after - before
    assert rise[5] > 0
    assert rise[5] > torch.cat([rise[:5], rise[6:]]).max(), rise


def test_neuron_raises_its_position_more_than_elsewhere(tiny_backbone) -> None:
    start = start_images(tiny_backbone)
    # Layer 3 is an 8 x 8 map at 32 px; the neuron is at column 2, row 5.
    before = layer_output(tiny_backbone, start, 3)[0, 7]
    after = layer_output(tiny_backbone, ascend(tiny_backbone, "neuron:3:7:2:5", start), 3)[0, 7]
    rise = (after - before).flatten()
    target = 5 * 8 + 2
    assert rise[target] > 0
    assert rise[target] > torch.cat([rise[:target], rise[target + 1:]]).max(), rise.view(8, 8)


def test_neuron_without_a_position_is_the_centre(tiny_backbone) -> None:
    maps = layer_output(tiny_backbone, start_images(tiny_backbone, 2), 3)
    centre = Neuron(3, 7).score(activations_of(maps, 3))
    assert torch.equal(centre, maps[:, 7, 4, 4])


def activations_of(maps: torch.Tensor, layer: int):
    from lightning_modules.feature_visualization.objectives import Activations

    return Activations({layer: maps})


def test_direction_raises_its_projection_more_than_another_directions(tiny_backbone) -> None:
    generator = torch.Generator().manual_seed(3)
    direction, other = torch.randn(2, 32, generator=generator)
    text = "direction:3:" + ",".join(repr(float(v)) for v in direction)
    start = start_images(tiny_backbone)
    after = ascend(tiny_backbone, text, start)

    def projection(images: torch.Tensor, vector: torch.Tensor) -> float:
        maps = layer_output(tiny_backbone, images, 3)
        return float(torch.einsum("nchw,c->nhw", maps, vector / vector.norm()).mean())

    rise = projection(after, direction) - projection(start, direction)
    assert rise > 0
    assert rise > projection(after, other) - projection(start, other)


def test_layer_objective_raises_the_layers_mean_square(tiny_backbone) -> None:
    start = start_images(tiny_backbone)
    after = ascend(tiny_backbone, "deepdream:2", start)
    energy = [float(layer_output(tiny_backbone, images, 2).pow(2).mean())
              for images in (start, after)]
    assert energy[1] > 1.5 * energy[0], energy


def test_negation_lowers_what_the_objective_raises(tiny_backbone) -> None:
    start = start_images(tiny_backbone)
    before = channel_means(tiny_backbone, start, 2)[5]
    lowered = channel_means(tiny_backbone, ascend(tiny_backbone, "-channel:2:5", start), 2)[5]
    raised = channel_means(tiny_backbone, ascend(tiny_backbone, "channel:2:5", start), 2)[5]
    assert lowered < before < raised


def test_weighted_sum_scores_and_follows_its_weights(tiny_backbone) -> None:
    images = start_images(tiny_backbone, 2)
    summed = parse_objective("3*channel:2:5 - 0.5*layer:3 + class:7").bind(tiny_backbone)
    parts = [parse_objective(text).bind(tiny_backbone)
             for text in ("channel:2:5", "layer:3", "class:7")]
    seen = activations(images, tiny_backbone, [summed])
    expected = 3 * parts[0].score(seen) - 0.5 * parts[1].score(seen) + parts[2].score(seen)
    assert torch.allclose(summed.score(seen), expected)
    # The heavier term wins: the same two channels, weighted one way and the other.
    start = start_images(tiny_backbone)
    before = channel_means(tiny_backbone, start, 2)
    first = channel_means(tiny_backbone, ascend(tiny_backbone, "channel:2:5 + 0.05*channel:2:9",
                                                start), 2) - before
    second = channel_means(tiny_backbone, ascend(tiny_backbone, "0.05*channel:2:5 + channel:2:9",
                                                 start), 2) - before
    assert first[5] > second[5] and second[9] > first[9], (first[[5, 9]], second[[5, 9]])


def test_class_logit_is_the_logit_and_rises(tiny_backbone) -> None:
    start = start_images(tiny_backbone)
    seen = activations(start, tiny_backbone, [ClassLogit(7)])
    assert torch.equal(ClassLogit(7).score(seen), tiny_backbone(start)[:, 7])
    after = ascend(tiny_backbone, "class:7", start, steps=8)
    with torch.no_grad():
        rise = tiny_backbone(after)[0] - tiny_backbone(start)[0]
    # A random network's logits move together: the target's rises more than 99 % of the others'.
    assert rise[7] > 0 and (rise[7] > torch.cat([rise[:7], rise[8:]])).float().mean() > 0.99


def mean_pairwise_similarity(backbone: Backbone, images: torch.Tensor, layer: int) -> float:
    similarity = gram_similarity(layer_output(backbone, images, layer))
    count = similarity.shape[0]
    return float((similarity.sum() - similarity.diagonal().sum()) / (count * (count - 1)))


def test_diversity_lowers_the_batchs_gram_similarity(tiny_backbone) -> None:
    start = start_images(tiny_backbone, 3)
    alone = ascend(tiny_backbone, "channel:2:5", start, steps=12)
    diverse = ascend(tiny_backbone, "channel:2:5 + 2*diversity:2", start, steps=12)
    assert (mean_pairwise_similarity(tiny_backbone, diverse, 2)
            < mean_pairwise_similarity(tiny_backbone, alone, 2) - 0.01)
    # Lucid's value: minus the sum over ordered pairs of Gram cosine similarities, over N.
    seen = activations(diverse, tiny_backbone, [Diversity(2)])
    similarity = gram_similarity(seen.features[2])
    lucid = -(similarity.sum() - similarity.diagonal().sum()) / 3
    assert torch.allclose(Diversity(2).score(seen).sum(), lucid)
    assert float(Diversity(2).score(activations(start[:1], tiny_backbone, [Diversity(2)]))) == 0


def test_one_network_pass_serves_every_layer_and_the_logits(tiny_backbone, monkeypatch) -> None:
    calls = []
    run = tiny_backbone._run
    monkeypatch.setattr(tiny_backbone, "_run", lambda *args: calls.append(args[1:]) or run(*args))
    objective = parse_objective("channel:1:2 + neuron:3:1 - 0.1*diversity:2 + class:4")
    bound = objective.bind(tiny_backbone)
    calls.clear()  # binding probed the layers' shapes
    seen = activations(start_images(tiny_backbone, 2), tiny_backbone, [bound])
    assert calls == [((1, 2, 3), True)]
    assert sorted(seen.features) == [1, 2, 3] and seen.logits.shape == (2, 1000)


def test_real_network_channel_rises_more_than_its_neighbours() -> None:
    from lightning_modules.backbones import load_backbone

    backbone = load_backbone("efficientnet_lite0")
    generator = torch.Generator().manual_seed(0)
    start = PixelImage(0.3).start(1, 64, 64, backbone.pixel_min, backbone.pixel_max, generator)
    objective = parse_objective("channel:blocks.4:12").bind(backbone, 64)
    parameter = start.clone().requires_grad_(True)
    optimizer = make_optimizer("normalized", [parameter], 6.0)
    for _ in range(5):
        optimizer.zero_grad()
        terms, _ = objective_loss(parameter, backbone, [objective], parameterization=PixelImage(),
                                  max_jitter=4, generator=generator)
        terms["objective"].sum().backward()
        optimizer.step()
        with torch.no_grad():
            parameter.copy_(backbone.clamp_pixels(parameter))
    rise = channel_means(backbone, parameter.detach(), 5) - channel_means(backbone, start, 5)
    assert rise[12] > 0 and rise[12] > torch.cat([rise[:12], rise[13:]]).max()


# ----------------------------------------------------------------- the grammar
@pytest.mark.parametrize("text", [
    "channel:blocks.4:12",
    "channel:blocks.4:12 + 0.5*neuron:blocks.5:3 - 0.1*diversity:blocks.4",
    "-layer:3",
    "-2*neuron:3:7:2:5 + class:golden retriever",
    "direction:3:0.5,-1.0,2.0",
    "class:jack-o'-lantern - 1e-2*layer:features.2",
])
def test_strings_round_trip(text: str) -> None:
    objective = parse_objective(text)
    assert parse_objective(str(objective)) == objective


def test_parsed_strings_are_the_python_objectives() -> None:
    assert parse_objective("channel:blocks.4:12") == Channel("blocks.4", 12)
    assert parse_objective("neuron:3:1:2:5") == Neuron(3, 1, 2, 5)
    assert parse_objective("deepdream:4") == parse_objective("layer:4") == LayerL2(4)
    assert parse_objective("logit:130") == ClassLogit(130)
    built = Channel(4, 1) + 0.5 * Neuron("blocks.5", 3) - 0.1 * Diversity(4)
    assert parse_objective("channel:4:1 + 0.5*neuron:blocks.5:3 - 0.1*diversity:4") == built
    assert isinstance(-Channel(4, 1), Sum) and str(-Channel(4, 1)) == "-channel:4:1"
    assert str(2 * (Channel(4, 1) - LayerL2(3))) == "2*channel:4:1 - 2*layer:3"


def test_direction_from_files(tmp_path: Path, tiny_backbone) -> None:
    vector = np.linspace(-1, 1, 32)
    np.save(tmp_path / "v.npy", vector)
    torch.save(torch.tensor(vector)[None], tmp_path / "v.pt")
    (tmp_path / "v.txt").write_text("\n".join(map(str, vector)))
    loaded = [parse_objective(f"direction:3:{tmp_path / name}").bind(tiny_backbone)
              for name in ("v.npy", "v.pt", "v.txt")]
    for objective in loaded:
        assert np.allclose(objective.vector, vector)
    assert str(loaded[0]) == f"direction:3:{tmp_path / 'v.npy'}"


def one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.endswith("."), message
    return message


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("channel:2", "write channel:blocks.4:12"),
    ("channel:2:3-channel:2:1", "spaces around the sign"),
    ("chanel:2:3", "Unknown objective kind 'chanel'"),
    ("channel:2:x", "whole number"),
    ("x*channel:2:1", "NUMBER*KIND"),
    ("neuron:3:1:2", "neuron:blocks.4:12:3:5"),
    ("direction:3:missing.pt", "Direction file not found: missing.pt"),
    ("direction:3:0,0", "all zeros"),
])
def test_malformed_strings_are_one_sentence(text: str, words: str) -> None:
    with pytest.raises(UserInputError) as error:
        parse_objective(text)
    assert words in one_sentence(error)


@pytest.mark.parametrize("text, words", [
    ("channel:blocks.9:1", "Unknown objective layer 'blocks.9'"),
    ("layer:7", "Objective layer 7 is out of range"),
    ("channel:2:16", "Channel 16 of 'channel:2:16' is out of range: layer 2 (features.2) of "
                     "backbone 'tiny' has channels 0 to 15"),
    ("direction:3:1,2,3", "has 3 values, but layer 3 (features.3) of backbone 'tiny' has 32 "
                          "channels"),
    ("neuron:3:1:8:0", "outside layer 3 (features.3)'s 8 x 8 map at 32 px"),
    ("class:no such class", "Unknown class name"),
])
def test_what_the_backbone_lacks_is_one_sentence(text: str, words: str, tiny_backbone) -> None:
    with pytest.raises(UserInputError) as error:
        parse_objective(text).bind(tiny_backbone, SIZE)
    assert words in one_sentence(error)


def test_objectives_and_their_step_import_no_lightning() -> None:
    import subprocess
    import sys

    code = ("import sys\n"
            "import lightning_modules.feature_visualization.functional\n"
            "from lightning_modules import parse_objective\n"
            "assert not [m for m in sys.modules if m.startswith(('pytorch_lightning', "
            "'lightning_fabric'))], 'Lightning was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                   check=True)
