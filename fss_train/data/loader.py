"""torch Dataset over records, and the collate that pads ground truths to (B, M, ·) with a mask."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from fss_core.imageio import read_image
from fss_core.preprocess import PAD_VALUE, to_tensor
from fss_core.rbox import poly_to_rbox
from fss_train.data.records import Dataset, ImageRecord, record_polygons
from fss_train.data.transforms import (
    AugmentConfig,
    filter_boxes,
    hsv_jitter,
    letterbox_sample,
    mosaic4,
    random_affine,
    random_flip,
)

log = logging.getLogger("fss.data")
IGNORE_LABEL = -2         # gt_labels of an ignore region: assigned to nobody, its points left out of the negatives


class DetectionDataset(torch.utils.data.Dataset):
    """Items: (image (3, S, S) float RGB [0, 1], boxes (K, 4) xyxy px, labels (K,), meta dict); with ``oriented``
    the boxes are (K, 5) rotated boxes ``cx cy w h θ``: every object's polygon rides through the augmentations
    (``record_polygons``: its own, or its box's corners) and becomes its minimum-area rectangle at the end.

    With ``augment`` the training pipeline runs (mosaic, affine, HSV, flips); without it the
    image is letterboxed (meta carries the scale to map predictions back). An unreadable image
    is reported once and never stops an epoch halfway: in training it is replaced by another one; without
    ``augment`` (evaluation, BN statistics) its item is a grey image without objects marked
    ``meta["unreadable"]``, which prediction and evaluation leave out (another image in its place would be
    scored twice under one id and the unreadable one's objects counted as missed).
    """

    def __init__(self, ds: Dataset, imgsz: int, augment: bool = False, cfg: AugmentConfig | None = None,
                 seed: int = 0, oriented: bool = False, ignore_from: int = 0):
        self.records: list[ImageRecord] = ds.records
        self.oriented = oriented
        self.ignore_from = ignore_from
        self.classes = ds.classes
        self.imgsz = imgsz
        self.augment = augment
        self.cfg = cfg or AugmentConfig()
        self.seed = seed
        self.epoch = 0
        self.bad: set[int] = set()         # indices of unreadable images (found here or by a loader worker)
        self.found: list[int] = []          # those found by the item being built
        self.mosaic_enabled = True
        self.cache: list[np.ndarray | None] | None = None

    def cache_images(self, max_bytes: int, shared: DetectionDataset | None = None) -> bool:
        """Decode every image once into RAM (Ultralytics' ``cache=ram``); the loaders' worker processes,
        forked afterwards, share the pages. ``shared``: another dataset over the same records whose cache to
        reuse. Returns False (and caches nothing) when the decoded images would exceed ``max_bytes``."""
        if shared is not None and shared.cache is not None and shared.records is self.records:
            self.cache = shared.cache
            return True
        need = sum(r.height * r.width * 3 for r in self.records)
        if need > max_bytes:
            log.warning("cache=ram: the decoded images need %.1f GB, more than the %.1f GB allowed; not cached",
                        need / 1e9, max_bytes / 1e9)
            return False
        cache: list[np.ndarray | None] = []
        for rec in self.records:
            try:
                cache.append(read_image(rec.path))
            except ValueError as exc:
                cache.append(None)
                log.warning("%s; skipped", exc)
        self.bad.update(i for i, im in enumerate(cache) if im is None)
        self.cache = cache
        return True

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _read(self, i: int) -> np.ndarray | None:
        """Image ``i``, or None when it cannot be read (reported the first time; noted in ``bad`` and in
        ``found``, which the loader carries back from its worker processes)."""
        if i in self.bad:
            return None
        try:
            return self.cache[i].copy() if self.cache is not None else read_image(self.records[i].path)
        except ValueError as exc:
            self.bad.add(i)
            self.found.append(i)
            log.warning("%s; skipped", exc)
            return None

    def _load(self, i: int, rng: np.random.Generator):
        for _ in range(len(self.records)):
            image = self._read(i)
            if image is not None:
                return i, image, self.records[i].boxes.copy(), self._labels(i), self._polygons(i)
            i = int(rng.integers(len(self.records)))
        raise RuntimeError("no readable image in the dataset")

    def _labels(self, i: int) -> np.ndarray:
        """Record ``i``'s labels; objects whose difficult flag is at least ``ignore_from`` (when set) become
        ignore regions, label :data:`IGNORE_LABEL` (the splitter marks its slivers 2, DOTA its hard objects 1)."""
        rec = self.records[i]
        labels = rec.labels.astype(np.int64).copy()
        if self.ignore_from and len(rec.difficult) == len(labels):
            labels[rec.difficult >= self.ignore_from] = IGNORE_LABEL
        return labels

    def _polygons(self, i: int) -> np.ndarray | None:
        return record_polygons(self.records[i]).astype(np.float32).copy() if self.oriented else None

    def __getitem__(self, index: int):
        self.found = []
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.augment:
            index, image, boxes, labels, polys = self._load(index, rng)
        else:
            image, boxes, labels = self._read(index), self.records[index].boxes.copy(), self._labels(index)
            polys = self._polygons(index)
        rec = self.records[index]
        meta = {"index": index, "image_id": rec.image_id, "orig_size": (rec.height, rec.width), "scale": 1.0}
        if image is None:                      # evaluation: a grey stand-in (the letterbox's colour), left out
            image, boxes, labels = np.full((self.imgsz, self.imgsz, 3), PAD_VALUE, np.uint8), boxes[:0], labels[:0]
            polys = None if polys is None else polys[:0]
            meta.update(unreadable=True, scale=self.imgsz / max(rec.height, rec.width))
        elif not self.augment:
            image, boxes, scale = letterbox_sample(image, boxes, self.imgsz)
            polys = None if polys is None else polys * scale
            meta["scale"] = scale
        else:
            image, boxes, labels, polys = self._augment(image, boxes, labels, polys, rng)
        meta["found_unreadable"] = self.found
        return to_tensor([image])[0], self._targets(boxes, polys), torch.from_numpy(labels.astype(np.int64)), meta

    def _augment(self, image, boxes, labels, polys, rng: np.random.Generator):
        """The training pipeline -> image, boxes, labels, polygons (None unless oriented)."""
        cfg = self.cfg
        if self.mosaic_enabled and rng.random() < cfg.mosaic:
            samples = [(image, boxes, labels, polys)]
            for _ in range(3):
                _, im, bx, lb, pl = self._load(int(rng.integers(len(self.records))), rng)
                samples.append((im, bx, lb, pl))
            image, boxes, labels, polys = mosaic4(samples, self.imgsz, rng)
        else:
            image, boxes, scale = letterbox_sample(image, boxes, self.imgsz)
            polys = None if polys is None else polys * scale
        image, boxes, labels, polys = random_affine(image, boxes, labels, self.imgsz, self.cfg, rng, polys)
        image = hsv_jitter(image, cfg, rng)
        image, boxes, polys = random_flip(image, boxes, cfg, rng, polys)
        if polys is None:                     # polygons were cut to the output by random_affine already
            boxes, labels = filter_boxes(boxes, labels, boxes, self.imgsz, self.imgsz, cfg)
        return image, boxes, labels, polys

    @staticmethod
    def _targets(boxes: np.ndarray, polys: np.ndarray | None) -> torch.Tensor:
        """(K, 4) boxes, or (K, 5) minimum-area rectangles of the polygons."""
        if polys is None:
            return torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 4)
        return poly_to_rbox(torch.from_numpy(polys.astype(np.float64)).reshape(-1, 8)).float()


def collate(batch):
    """-> images (B, 3, S, S), gt_boxes (B, M, 4|5), gt_labels (B, M) (-1 padding, IGNORE_LABEL for ignore
    regions), gt_mask (B, M) (the objects to assign: neither padding nor ignore regions), metas."""
    images = torch.stack([b[0] for b in batch])
    m = max((len(b[2]) for b in batch), default=0)
    B = len(batch)
    gt_boxes = torch.zeros(B, m, batch[0][1].shape[-1] if batch else 4)
    gt_labels = torch.full((B, m), -1, dtype=torch.long)
    gt_mask = torch.zeros(B, m, dtype=torch.bool)
    for i, (_, boxes, labels, _) in enumerate(batch):
        k = len(labels)
        gt_boxes[i, :k] = boxes
        gt_labels[i, :k] = labels
        gt_mask[i, :k] = labels >= 0
    return images, gt_boxes, gt_labels, gt_mask, [b[3] for b in batch]


def _worker_init(_: int) -> None:
    """One thread per loader worker: parallelism comes from the workers, not from OpenCV/torch threads inside
    each (24 trainings x 16 threads on 16 cores would thrash). A forked worker inherits OpenCV's 1 thread from
    ``_Loader`` (then this call changes nothing); a spawned one starts with OpenCV's default and gets 1 here."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class _Loader(DataLoader):
    """Forks its workers while OpenCV runs single-threaded (restored in this process right after). A forked child
    that changes OpenCV's thread count while the parent's pthreads pool is running hangs for ever in
    ``cv2.setNumThreads`` (OpenCV 5.0: a GaussianBlur of a 4000² image in the parent is enough): ``fss demo``,
    which draws a 4000² scene before training, hung at its first epoch."""

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        import cv2

        before = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            batches = super().__iter__()                # the workers are forked here
        finally:
            cv2.setNumThreads(before)
        return self._note_unreadable(batches)

    def _note_unreadable(self, batches):
        """Unreadable images a worker found, into this process's dataset: the next epoch's workers (forked
        afresh) skip them without reporting them again."""
        for batch in batches:
            for meta in batch[-1]:
                self.dataset.bad.update(meta["found_unreadable"])
            yield batch


def make_loader(dataset: DetectionDataset, batch: int, shuffle: bool, workers: int = 2, distributed: bool = False,
                seed: int = 0, drop_last: bool = False) -> DataLoader:
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last) if distributed else None
    generator = torch.Generator().manual_seed(seed)
    return _Loader(dataset, batch_size=batch, shuffle=shuffle and sampler is None, sampler=sampler,
                   num_workers=workers, collate_fn=collate, drop_last=drop_last, generator=generator,
                   worker_init_fn=_worker_init if workers > 0 else None,
                   persistent_workers=False)   # workers must see set_epoch() and the mosaic switch
