"""Datasets: COCO/YOLO/DOTA formats (one file each; formats.py the dispatch), GeoTIFFs with vector labels, offline
tiling, synthetic scenes, augmentation, loader."""

from fss_train.data.coco import read_coco, write_coco
from fss_train.data.dota import read_dota
from fss_train.data.formats import convert_dataset, read_dataset, read_val_split
from fss_train.data.records import DOTA_CLASSES, Dataset, ImageRecord, Problem
from fss_train.data.yolo import read_yolo

__all__ = ["read_dataset", "read_val_split", "read_coco", "read_yolo", "read_dota", "write_coco", "convert_dataset",
           "Dataset", "ImageRecord", "Problem", "DOTA_CLASSES"]
