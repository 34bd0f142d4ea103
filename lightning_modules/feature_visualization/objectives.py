"""Objectives: what a feature visualization maximizes, built in Python or written as a string.

Each objective gives one score per image (``[N]``, to be *raised*) from the network's
activations: the logits and the feature maps of the layers it names. Objectives compose as
Lucid/Lucent's do: ``a + b``, ``a - b``, ``-a`` and ``0.5 * a`` are objectives too (a
:class:`Sum` of weighted terms).

The kinds (``L`` is a layer, by index as in every technique or by the network's own name, see
``python cli.py layers``):

==================================  ===========================================================
``class:C``                         the raw logit of class ``C`` (index or ImageNet name): the
                                    class visualization's objective
``channel:L:C``                     the mean activation of channel ``C`` of layer ``L``
``neuron:L:C`` / ``neuron:L:C:X:Y`` channel ``C`` at the centre of layer ``L``'s map, or at
                                    column ``X``, row ``Y`` of it
``direction:L:V``                   the mean over positions of the projection of layer ``L``'s
                                    activation vector on the unit vector ``V``: numbers
                                    (``0.5,-1,2``) or a file of them (``.pt``, ``.npy``, text)
``layer:L`` (also ``deepdream:L``)  the mean square of layer ``L``'s activations (DeepDream)
``diversity:L``                     minus the mean cosine similarity of each image's Gram
                                    matrix at ``L`` to those of the other images of its batch
                                    (Lucid's diversity): raising it makes the batch differ
==================================  ===========================================================

The grammar of a string (:func:`parse_objective`)::

    objective := term (" + " term | " - " term)*     the signs have spaces around them
    term      := ["-"] [weight "*"] kind ":" arguments
    weight    := a number: 2, 0.5, 1e-2

e.g. ``"channel:blocks.4:12 + 0.5*neuron:blocks.5:3 - 0.1*layer:blocks.2"``. Because the signs
that join terms need spaces around them, a class name (``class:jack-o'-lantern``), a file path
(``direction:4:my-vectors/v.pt``) or a weight (``1e-2``) keeps its own hyphens. ``str()`` of
an objective writes it back in this grammar (``parse_objective(str(o)) == o``).

A parsed objective names layers as written; :meth:`Objective.bind` resolves them against a
backbone and checks every channel, position and direction length, each error one sentence.
No Lightning here.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from lightning_modules.errors import UserInputError

LayerSpec = Union[int, str]

#: The kinds a string may name, and an example of each for error messages.
KINDS = {"class": "class:130", "channel": "channel:blocks.4:12",
         "neuron": "neuron:blocks.4:12 or neuron:blocks.4:12:3:5",
         "direction": "direction:blocks.4:vector.pt", "layer": "layer:blocks.4",
         "diversity": "diversity:blocks.4"}
#: Other names of kinds.
ALIASES = {"logit": "class", "deepdream": "layer"}

# The side of the probe image that reads the layers' shapes when no image size is given.
PROBE_SIZE = 64


@dataclass
class Activations:
    """What objectives read: feature maps by layer index, and the logits when one asks.

    Attributes:
        features: Layer index to its output ``[N, C, ...]``.
        logits: ``[N, classes]``, or None when no objective needs them.
    """

    features: dict[int, torch.Tensor]
    logits: Optional[torch.Tensor] = None


class Objective:
    """A score per image to raise; see the module docstring. Subclasses are frozen dataclasses."""

    def score(self, activations: Activations) -> torch.Tensor:
        """The score of each image, ``[N]`` (differentiable)."""
        raise NotImplementedError

    def layer_specs(self) -> list[LayerSpec]:
        """The layers this objective reads, as written (indices once bound)."""
        return []

    @property
    def needs_logits(self) -> bool:
        """Whether :meth:`score` reads the logits."""
        return False

    @property
    def terms(self) -> tuple[tuple[float, "Objective"], ...]:
        """The weighted leaves this objective sums (a leaf: itself with weight 1)."""
        return ((1.0, self),)

    def bind(self, backbone, image_size: Optional[int] = None) -> "Objective":
        """This objective with its layers resolved to indices of ``backbone``, checked.

        Args:
            backbone: A :class:`~lightning_modules.backbones.Backbone`.
            image_size: The side of the images it will see, for checking a neuron's position;
                None: positions are checked when the images arrive.

        Raises:
            UserInputError: An unknown layer or class, a channel out of range, a direction of
                the wrong length, a position outside the map, a layer that is not a map where
                one is needed.
        """
        leaves = [leaf for _, leaf in self.terms]
        indices = {}
        for leaf in leaves:
            for spec in leaf.layer_specs():
                indices[spec] = backbone.layer_index(spec, "objective layer")
        shapes = layer_shapes(backbone, sorted(set(indices.values())), image_size)
        bound = [leaf._bound(backbone, indices, shapes, image_size) for leaf in leaves]
        if isinstance(self, Sum):
            return Sum(tuple((weight, leaf) for (weight, _), leaf in zip(self.terms, bound)))
        return bound[0]

    def _bound(self, backbone, indices: dict[LayerSpec, int],
               shapes: dict[int, tuple[int, ...]], image_size: Optional[int]) -> "Objective":
        return self

    # ----------------------------------------------------------------- composition
    def __add__(self, other: "Objective") -> "Sum":
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum(self.terms + other.terms)

    def __sub__(self, other: "Objective") -> "Sum":
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-1.0) * other

    def __neg__(self) -> "Sum":
        return (-1.0) * self

    def __mul__(self, weight: float) -> "Sum":
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return Sum(tuple((float(weight) * w, leaf) for w, leaf in self.terms))

    __rmul__ = __mul__


@dataclass(frozen=True)
class Sum(Objective):
    """The weighted sum of leaf objectives: ``sum(weight * leaf.score)``."""

    parts: tuple[tuple[float, Objective], ...]

    @property
    def terms(self) -> tuple[tuple[float, Objective], ...]:
        return self.parts

    @property
    def needs_logits(self) -> bool:
        return any(leaf.needs_logits for _, leaf in self.parts)

    def layer_specs(self) -> list[LayerSpec]:
        return [spec for _, leaf in self.parts for spec in leaf.layer_specs()]

    def score(self, activations: Activations) -> torch.Tensor:
        return sum(weight * leaf.score(activations) for weight, leaf in self.parts)

    def __str__(self) -> str:
        text = ""
        for position, (weight, leaf) in enumerate(self.parts):
            sign = "-" if weight < 0 else "+"
            size = abs(weight)
            term = str(leaf) if size == 1 else f"{_number(size)}*{leaf}"
            if position == 0:
                text = ("-" if sign == "-" else "") + term
            else:
                text += f" {sign} {term}"
        return text


@dataclass(frozen=True)
class ClassLogit(Objective):
    """The raw logit of a class (by index, or by a name the backbone resolves)."""

    class_: Union[int, str]

    @property
    def needs_logits(self) -> bool:
        return True

    def _bound(self, backbone, indices, shapes, image_size) -> "ClassLogit":
        return ClassLogit(backbone.class_index(self.class_))

    def score(self, activations: Activations) -> torch.Tensor:
        return activations.logits[:, _resolved(self.class_, self)]

    def __str__(self) -> str:
        return f"class:{self.class_}"


@dataclass(frozen=True)
class Channel(Objective):
    """The mean activation of one channel of a layer, over its positions."""

    layer: LayerSpec
    channel: int

    def layer_specs(self) -> list[LayerSpec]:
        return [self.layer]

    def _bound(self, backbone, indices, shapes, image_size) -> "Channel":
        index = indices[self.layer]
        _check_channel(self, backbone, index, shapes, self.channel)
        return Channel(index, self.channel)

    def score(self, activations: Activations) -> torch.Tensor:
        values = activations.features[_resolved(self.layer, self)][:, self.channel]
        return values.flatten(1).mean(1) if values.dim() > 1 else values

    def __str__(self) -> str:
        return f"channel:{self.layer}:{self.channel}"


@dataclass(frozen=True)
class Neuron(Objective):
    """One channel at one position of a layer's map: the centre, or column ``x``, row ``y``."""

    layer: LayerSpec
    channel: int
    x: Optional[int] = None
    y: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.x is None) != (self.y is None):
            raise UserInputError(f"A neuron needs both x and y, or neither (the centre), got "
                                 f"x={self.x}, y={self.y}.")

    def layer_specs(self) -> list[LayerSpec]:
        return [self.layer]

    def _bound(self, backbone, indices, shapes, image_size) -> "Neuron":
        index = indices[self.layer]
        _check_map(self, backbone, index, shapes)
        _check_channel(self, backbone, index, shapes, self.channel)
        if image_size is not None and index in shapes and self.x is not None:
            self._check_position(backbone.layer_names[index], index, shapes[index][-2:],
                                 f" at {image_size} px")
        return Neuron(index, self.channel, self.x, self.y)

    def _check_position(self, name: str, index: int, size: Sequence[int], where: str) -> None:
        height, width = size
        if not (0 <= self.x < width and 0 <= self.y < height):
            raise UserInputError(
                f"Neuron position x={self.x}, y={self.y} is outside layer {index} ({name})'s "
                f"{width} x {height} map{where}; give x from 0 to {width - 1} and y from 0 to "
                f"{height - 1}, or leave them out for the centre.")

    def score(self, activations: Activations) -> torch.Tensor:
        layer = _resolved(self.layer, self)
        features = activations.features[layer]
        height, width = features.shape[-2:]
        if self.x is None:
            return features[:, self.channel, height // 2, width // 2]
        if not (0 <= self.x < width and 0 <= self.y < height):  # a smaller octave's map
            self._check_position(f"layer {layer}", layer, (height, width), " of these images")
        return features[:, self.channel, self.y, self.x]

    def __str__(self) -> str:
        position = "" if self.x is None else f":{self.x}:{self.y}"
        return f"neuron:{self.layer}:{self.channel}{position}"


@dataclass(frozen=True)
class Direction(Objective):
    """The projection of a layer's activation vectors on a direction in its channel space.

    ``score = mean over positions of <a(x, y), v / |v|>``. ``source`` is the file the vector
    came from, if any (what ``str()`` writes instead of the numbers).
    """

    layer: LayerSpec
    vector: tuple[float, ...]
    source: Optional[str] = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        values = torch.as_tensor(self.vector, dtype=torch.float64).flatten()
        if values.numel() == 0 or not bool(torch.isfinite(values).all()):
            raise UserInputError(f"The direction of '{self}' must be finite numbers, at least one.")
        if float(values.norm()) == 0:
            raise UserInputError(f"The direction of '{self}' is all zeros; it points nowhere.")
        object.__setattr__(self, "vector", tuple(float(v) for v in values))

    def layer_specs(self) -> list[LayerSpec]:
        return [self.layer]

    def _bound(self, backbone, indices, shapes, image_size) -> "Direction":
        index = indices[self.layer]
        if index in shapes and shapes[index][0] != len(self.vector):
            raise UserInputError(
                f"The direction of '{self}' has {len(self.vector)} values, but layer {index} "
                f"({backbone.layer_names[index]}) of backbone '{backbone.name}' has "
                f"{shapes[index][0]} channels.")
        return Direction(index, self.vector, self.source)

    def score(self, activations: Activations) -> torch.Tensor:
        features = activations.features[_resolved(self.layer, self)]
        unit = features.new_tensor(self.vector)
        unit = unit / unit.norm()
        projection = torch.einsum("nc...,c->n...", features, unit)
        return projection.flatten(1).mean(1) if projection.dim() > 1 else projection

    def __str__(self) -> str:
        if self.source is not None:
            return f"direction:{self.layer}:{self.source}"
        return f"direction:{self.layer}:" + ",".join(repr(v) for v in self.vector)


@dataclass(frozen=True)
class LayerL2(Objective):
    """DeepDream's objective: the mean square of a layer's activations."""

    layer: LayerSpec

    def layer_specs(self) -> list[LayerSpec]:
        return [self.layer]

    def _bound(self, backbone, indices, shapes, image_size) -> "LayerL2":
        return LayerL2(indices[self.layer])

    def score(self, activations: Activations) -> torch.Tensor:
        return activations.features[_resolved(self.layer, self)].pow(2).flatten(1).mean(1)

    def __str__(self) -> str:
        return f"layer:{self.layer}"


@dataclass(frozen=True)
class Diversity(Objective):
    """Lucid's diversity over the batch, to raise: minus each image's mean Gram similarity.

    Each image's Gram matrix at the layer (channels x channels, over positions) is scaled to
    unit norm; image ``i`` scores ``-sum_{j != i} <G_i, G_j> / N``, so the batch's total is
    Lucid's value. One image alone scores 0.
    """

    layer: LayerSpec

    def layer_specs(self) -> list[LayerSpec]:
        return [self.layer]

    def _bound(self, backbone, indices, shapes, image_size) -> "Diversity":
        index = indices[self.layer]
        _check_map(self, backbone, index, shapes)
        return Diversity(index)

    def score(self, activations: Activations) -> torch.Tensor:
        similarity = gram_similarity(activations.features[_resolved(self.layer, self)])
        others = similarity - torch.diag_embed(similarity.diagonal())
        return -others.sum(1) / similarity.shape[0]

    def __str__(self) -> str:
        return f"diversity:{self.layer}"



@dataclass(frozen=True)
class ChannelAtlas:
    """Every channel of a layer (or the chosen ones): one ``channel:L:C`` objective each.

    Not an objective itself but a shorthand that a technique expands against its backbone
    (:meth:`channel_objectives`), since ``"all"`` needs the layer's channel count.

    Attributes:
        layer: The layer, by index or name, as written.
        channels: ``"all"`` or the channel numbers, in the order their pictures come.
    """

    layer: LayerSpec
    channels: Union[str, tuple[int, ...]] = "all"

    def texts(self, count: int) -> list[str]:
        """The objective strings of the chosen channels, for a layer of ``count`` channels."""
        chosen = range(count) if self.channels == "all" else self.channels
        return [f"channel:{self.layer}:{channel}" for channel in chosen]

    def channel_objectives(self, backbone, image_size: Optional[int] = None
                           ) -> list[tuple[str, "Channel"]]:
        """Each chosen channel's objective string and its :class:`Channel`, bound to ``backbone``.

        One probe pass reads the layer's channel count for all of them (binding each channel
        on its own would run one per channel).

        Args:
            backbone: A :class:`~lightning_modules.backbones.Backbone`.
            image_size: The side of the images the objectives will see (for the probe).

        Raises:
            UserInputError: An unknown layer, a channel out of range, or a layer whose
                channels cannot be read.
        """
        index = backbone.layer_index(self.layer, "atlas layer")
        shapes = layer_shapes(backbone, [index], image_size)
        if index not in shapes:
            raise UserInputError(
                f"Cannot read the channel count of layer {index} ({backbone.layer_names[index]}) "
                f"of backbone '{backbone.name}' from a {image_size or PROBE_SIZE} px image; give "
                "another image size or layer.")
        count = shapes[index][0]
        outside = [channel for channel in (() if self.channels == "all" else self.channels)
                   if not 0 <= channel < count]
        if outside:
            raise UserInputError(
                f"Atlas channel {outside[0]} is out of range: layer {index} "
                f"({backbone.layer_names[index]}) of backbone '{backbone.name}' has channels 0 "
                f"to {count - 1}.")
        return [(text, Channel(index, int(text.rsplit(":", 1)[1])))
                for text in self.texts(count)]


def gram_similarity(features: torch.Tensor) -> torch.Tensor:
    """The cosine similarity of every pair of images' Gram matrices, ``[N, N]``.

    Args:
        features: A layer's maps ``[N, C, H, W]``.
    """
    flat = features.flatten(2).float()
    grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
    return grams @ grams.T


def layer_shapes(backbone, layers: Sequence[int], image_size: Optional[int]
                 ) -> dict[int, tuple[int, ...]]:
    """Each layer's output shape per image (``(C, H, W)``), from one probe image.

    A network that will not take the probe's size gives no shapes (the run itself will tell).
    """
    if not layers:
        return {}
    side = image_size or PROBE_SIZE
    try:
        with torch.no_grad():
            probe = torch.zeros(1, 3, side, side, device=backbone.mean.device)
            outputs = backbone.extract(probe, list(layers))
    except RuntimeError:
        return {}
    return {index: tuple(output.shape[1:]) for index, output in zip(layers, outputs)}


def _resolved(value: LayerSpec, objective: Objective) -> int:
    if isinstance(value, str):
        raise RuntimeError(f"Objective '{objective}' is not bound to a backbone: call "
                           ".bind(backbone) first.")
    return value


def _check_channel(objective: Objective, backbone, index: int,
                   shapes: dict[int, tuple[int, ...]], channel: int) -> None:
    if index not in shapes:
        return
    count = shapes[index][0]
    if not 0 <= channel < count:
        raise UserInputError(
            f"Channel {channel} of '{objective}' is out of range: layer {index} "
            f"({backbone.layer_names[index]}) of backbone '{backbone.name}' has channels 0 to "
            f"{count - 1}.")


def _check_map(objective: Objective, backbone, index: int,
               shapes: dict[int, tuple[int, ...]]) -> None:
    if index in shapes and len(shapes[index]) != 3:
        raise UserInputError(
            f"'{objective}' needs a spatial map, but layer {index} ({backbone.layer_names[index]}) "
            f"of backbone '{backbone.name}' outputs {list(shapes[index])} per image; choose "
            "another layer (python cli.py layers lists them).")


def _number(value: float) -> str:
    """A weight as the shortest text that reads back as the same float."""
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


# ----------------------------------------------------------------- the string grammar
_JOIN = re.compile(r"\s+([+-])\s+")
_WEIGHT = re.compile(r"(?P<weight>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.)\s*\*\s*(?P<rest>.*)",
                     re.DOTALL)
_INTEGER = re.compile(r"-?[0-9]+")


def parse_objective(text: Union[str, Objective]) -> Objective:
    """An objective from its string (see the module docstring for the grammar).

    Args:
        text: E.g. ``"channel:blocks.4:12 + 0.5*neuron:blocks.5:3 - 0.1*layer:2"``; an
            :class:`Objective` is returned as it is.

    Returns:
        The objective, its layers as written (see :meth:`Objective.bind`).

    Raises:
        UserInputError: A malformed string, an unknown kind, a bad number, or a direction file
            that is missing or holds no vector.
    """
    if isinstance(text, Objective):
        return text
    if not isinstance(text, str):
        raise UserInputError(f"An objective must be a string such as channel:blocks.4:12, got "
                             f"{text!r}.")
    stripped = text.strip()
    if not stripped:
        raise UserInputError("The objective is empty; give one such as channel:blocks.4:12.")
    pieces = _JOIN.split(stripped)
    signs = [1.0] + [1.0 if sign == "+" else -1.0 for sign in pieces[1::2]]
    objective: Optional[Objective] = None
    for sign, term in zip(signs, pieces[0::2]):
        part = _parse_term(term, stripped)
        part = part if sign == 1.0 else sign * part
        objective = part if objective is None else objective + part
    return objective


def _parse_term(term: str, whole: str) -> Objective:
    term = term.strip()
    weight = 1.0
    if term.startswith("-"):
        weight, term = -1.0, term[1:].strip()
    elif term.startswith("+"):
        term = term[1:].strip()
    match = _WEIGHT.fullmatch(term)
    if match:
        weight *= float(match.group("weight"))
        term = match.group("rest").strip()
    if "*" in term:
        raise UserInputError(f"Malformed term {_where(term, whole)}: write a weight as "
                             f"NUMBER*KIND:ARGUMENTS, e.g. 0.5*channel:blocks.4:12.")
    if not math.isfinite(weight):
        raise UserInputError(f"The weight in objective '{whole}' must be a finite number.")
    kind, colon, arguments = term.partition(":")
    kind = ALIASES.get(kind.strip().lower(), kind.strip().lower())
    if not colon or not kind or not arguments.strip():
        raise UserInputError(
            f"Malformed term {_where(term, whole)}: write KIND:ARGUMENTS (e.g. "
            f"channel:blocks.4:12), and join terms with ' + ' or ' - ' (spaces around the sign).")
    if kind not in KINDS:
        raise UserInputError(f"Unknown objective kind '{kind}' in '{whole}'; choose "
                             + ", ".join(list(KINDS)[:-1]) + f" or {list(KINDS)[-1]}.")
    leaf = _parse_leaf(kind, arguments.strip(), term, whole)
    return leaf if weight == 1.0 else weight * leaf


def _parse_leaf(kind: str, arguments: str, term: str, whole: str) -> Objective:
    if kind == "class":
        value = arguments.strip()
        return ClassLogit(int(value) if _INTEGER.fullmatch(value) else value)
    if kind == "direction":
        layer, colon, vector = arguments.partition(":")
        if not colon or not vector.strip():
            _wrong_count(kind, term, whole)
        return direction_from_text(_layer(layer), vector.strip())
    parts = [part.strip() for part in arguments.split(":")]
    counts = {"channel": (2,), "neuron": (2, 4), "layer": (1,), "diversity": (1,)}[kind]
    if len(parts) not in counts or not all(parts):
        _wrong_count(kind, term, whole)
    layer = _layer(parts[0])
    if kind == "layer":
        return LayerL2(layer)
    if kind == "diversity":
        return Diversity(layer)
    numbers = [_whole_number(part, name, term) for part, name in
               zip(parts[1:], ("channel", "x", "y"))]
    if kind == "channel":
        return Channel(layer, numbers[0])
    return Neuron(layer, *numbers)


def _wrong_count(kind: str, term: str, whole: str) -> None:
    raise UserInputError(f"Malformed term {_where(term, whole)}: write {KINDS[kind]}, "
                         f"and join terms with ' + ' or ' - ' (spaces around the sign).")


def _where(term: str, whole: str) -> str:
    """``'term'``, and ``in objective 'whole'`` when the objective has more than that term."""
    return f"'{term}'" if term == whole else f"'{term}' in objective '{whole}'"


def _layer(text: str) -> LayerSpec:
    text = text.strip()
    return int(text) if _INTEGER.fullmatch(text) else text


def _whole_number(text: str, name: str, term: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise UserInputError(f"The {name} in '{term}' must be a whole number, got '{text}'.")
    value = int(text)
    if value < 0:
        raise UserInputError(f"The {name} in '{term}' must be zero or more, got {value}.")
    return value


def direction_from_text(layer: LayerSpec, text: str) -> Direction:
    """A :class:`Direction` from numbers (``"0.5,-1,2"``) or a file of them.

    Files: ``.pt``/``.pth`` (a tensor, read with ``weights_only``), ``.npy``, or text with
    numbers separated by commas or white space. A ``[1, C]`` array counts as ``[C]``.

    Raises:
        UserInputError: The file is missing or unreadable, or holds no vector of numbers.
    """
    numbers = _numbers(text)
    if numbers is not None:
        return Direction(layer, tuple(numbers))
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserInputError(f"Direction file not found: {text} (give a .pt, .npy or text file "
                             "of numbers, or the numbers themselves, e.g. 0.5,-1,2).")
    try:
        if path.suffix.lower() in (".pt", ".pth"):
            values = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix.lower() == ".npy":
            import numpy as np

            values = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            values = _numbers(path.read_text().replace("\n", ",").replace("\t", ","), spaces=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserInputError(f"Cannot read the direction file {text} "
                             f"({type(error).__name__}: {' '.join(str(error).split())[:120]})."
                             ) from None
    if not isinstance(values, (torch.Tensor, list)):
        raise UserInputError(f"The direction file {text} holds no vector of numbers.")
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.dim() == 0 or sum(size > 1 for size in values.shape) > 1:
        raise UserInputError(f"The direction file {text} holds an array of shape "
                             f"{list(values.shape)}, not one vector (one value per channel).")
    return Direction(layer, tuple(values.flatten().tolist()), source=text)


def _numbers(text: str, spaces: bool = False) -> Optional[list[float]]:
    """The numbers of ``"0.5,-1,2"`` (and white space, with ``spaces``), or None if not numbers."""
    parts = re.split(r"[,\s]+" if spaces else r"\s*,\s*", text.strip().strip(","))
    try:
        return [float(part) for part in parts if part] or None
    except ValueError:
        return None
