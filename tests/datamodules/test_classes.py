"""Tests for datamodules.classes: class lists for class visualization."""

from __future__ import annotations

import itertools

import pytest
from torch import nn

from datamodules.classes import DEFAULT_CLASSES, ClassListData, parse_classes
from lightning_modules.backbones import Backbone, imagenet_categories
from lightning_modules.errors import UserInputError


def test_default_is_the_ten_acceptance_classes() -> None:
    assert ClassListData().classes == [76, 78, 113, 130, 207, 366, 417, 604, 683, 948]
    assert DEFAULT_CLASSES == ClassListData().classes


@pytest.mark.parametrize("given, expected", [
    ([130, "flamingo", " Granny Smith "], [130, "flamingo", "Granny Smith"]),
    (["76", 78], [76, 78]),
    ("flamingo", ["flamingo"]),
    ("76, flamingo ,948", [76, "flamingo", 948]),
    ("130", [130]),
])
def test_indices_and_names_are_kept_in_order(given: object, expected: list) -> None:
    assert parse_classes(given) == expected


def test_all_is_every_imagenet_class() -> None:
    assert parse_classes("all") == list(range(1000))
    assert parse_classes(" ALL ") == list(range(1000))


@pytest.mark.parametrize("given, message", [
    ([], "empty"),
    ([-1], "negative"),
    (["76", ""], "empty"),
    ([True], "index or a name"),
    ([1.5], "index or a name"),
    (3, "list of class indices or names"),
])
def test_bad_input_is_one_sentence(given: object, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as error:
        ClassListData(given)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)


def test_names_resolve_with_the_backbone() -> None:
    # The module resolves names with Backbone.class_index: check the names this datamodule keeps.
    backbone = Backbone("names", [], nn.Identity(), (0.5,) * 3, (0.5,) * 3, imagenet_categories())
    resolved = [backbone.class_index(c) for c in parse_classes("tarantula, golden retriever, 948")]
    assert resolved == [76, 207, 948]
    with pytest.raises(UserInputError, match="ambiguous"):
        backbone.class_index(parse_classes("retriever")[0])
    with pytest.raises(UserInputError, match="out of range"):
        backbone.class_index(parse_classes([1000])[0])


def test_train_dataloader_yields_step_indices() -> None:
    loader = ClassListData([1]).train_dataloader()
    assert list(itertools.islice(iter(loader), 4)) == [0, 1, 2, 3]
