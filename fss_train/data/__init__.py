"""Datasets: COCO/YOLO/DOTA formats, offline tiling, synthetic scenes, augmentation, loader."""

from fss_train.data.formats import (
    read_coco,
    read_dataset,
    read_dota,
    read_val_split,
    read_yolo,
    write_coco,
    write_dota,
    write_yolo,
)
from fss_train.data.records import DOTA_CLASSES, Dataset, ImageRecord, Problem

__all__ = ["read_dataset", "read_val_split", "read_coco", "read_yolo", "read_dota", "write_coco", "write_yolo",
           "write_dota", "Dataset", "ImageRecord", "Problem", "DOTA_CLASSES"]
