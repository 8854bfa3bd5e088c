import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fss_core.boxes import batched_nms, box_iou, box_iou_aligned, nms


def test_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    iou = box_iou(a, b)
    assert torch.allclose(iou, torch.tensor([[25 / 175, 0.0, 1.0]]), atol=1e-6)
    assert torch.allclose(box_iou_aligned(a.expand(3, 4), b), iou[0], atol=1e-6)
    giou = box_iou_aligned(a, b[1:2], giou=True)
    assert torch.allclose(giou, torch.tensor([0.0 - (900 - 200) / 900]), atol=1e-6)


def _nms_reference(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(box_iou(boxes[i:i + 1], boxes[j:j + 1]).item() <= thr for j in keep):
            keep.append(i)
    return keep


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 60), st.integers(0, 10_000))
def test_nms_matches_reference(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    boxes = torch.cat((xy, xy + wh), 1)
    scores = torch.rand(n, generator=g)
    assert nms(boxes, scores, 0.5).tolist() == _nms_reference(boxes, scores, 0.5)


def test_batched_nms_is_class_aware_and_chunked_path_agrees():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat((xy, xy + 20), 1)
    scores = torch.rand(300, generator=g)
    labels = torch.randint(0, 3, (300,), generator=g)
    small = batched_nms(boxes, scores, labels, 0.5)
    chunked = batched_nms(boxes, scores, labels, 0.5, chunk=10)
    assert sorted(small.tolist()) == sorted(chunked.tolist())
    same = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    assert len(batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)) == 2
    assert len(batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.5)) == 1


def test_sparse_nms_keeps_what_opencv_keeps_on_a_dense_scene():
    """Above SPARSE_FROM boxes nms() sweeps instead of comparing all pairs: the kept set is OpenCV's, in order."""
    import cv2
    import numpy as np

    from fss_core.boxes import SPARSE_FROM, sparse_nms

    g = torch.Generator().manual_seed(3)
    n = 3 * SPARSE_FROM
    centres = torch.rand(n // 6, 2, generator=g) * 2000
    xy = centres.repeat_interleave(6, 0) + torch.randn(n, 2, generator=g) * 4        # clusters, as raw detections
    wh = torch.rand(n, 2, generator=g) * 40 + 8
    boxes = torch.cat((xy, xy + wh), 1)
    scores = torch.rand(n, generator=g)
    for thr in (0.3, 0.5, 0.7):
        b, s = boxes.numpy(), scores.numpy()
        order = np.argsort(-s, kind="stable")
        rank = np.empty(n, np.float32)
        rank[order] = np.arange(n, 0, -1)
        ref = np.asarray(cv2.dnn.NMSBoxes(np.concatenate((b[:, :2], b[:, 2:] - b[:, :2]), 1), rank, 0.0, thr))
        ref = ref.reshape(-1)[np.argsort(-rank[ref.reshape(-1)], kind="stable")]
        assert sparse_nms(b, s, thr).tolist() == ref.tolist()
        assert nms(boxes, scores, thr).tolist() == ref.tolist()                     # the path nms() takes here
