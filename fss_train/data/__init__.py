"""Datasets: COCO/YOLO/DOTA formats, offline tiling, synthetic scenes, augmentation, loader."""

from fss_train.data.formats import (
    convert_dataset,
    read_coco,
    read_dataset,
    read_dota,
    read_val_split,
    read_yolo,
    write_coco,
)
from fss_train.data.records import DOTA_CLASSES, Dataset, ImageRecord, Problem

__all__ = ["read_dataset", "read_val_split", "read_coco", "read_yolo", "read_dota", "write_coco", "convert_dataset",
           "Dataset", "ImageRecord", "Problem", "DOTA_CLASSES"]
