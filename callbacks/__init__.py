"""Callbacks that save images and track losses."""

from callbacks.image_writer import ImageWriter, make_sheet
from callbacks.loss_history import LossHistory

__all__ = ["ImageWriter", "LossHistory", "make_sheet"]
