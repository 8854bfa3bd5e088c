"""The defaults and bounds of tiled detection and benchmarking, in one place (no heavy imports: the CLI reads them
at start-up)."""

OVERLAP = 200          # px between neighbouring tiles
BATCH = 8              # tiles per backend call
CONF = 0.25            # score threshold
IOU = 0.5              # class-aware NMS IoU of the merge
MAX_DET = 10_000       # detections kept per image by default: this many per MAX_DET_AREA px² of image, at least
MAX_DET_AREA = 4000 * 4000   # this many per image (a 30,000² scene: 562,500); an explicit --max-det is absolute
FORMATS = ("coco", "dota", "yolo", "geojson")    # geojson: georeferenced images only
MERGE = "nms"          # tile merge: suppress the lower-scoring box ("nmm": merge it into the kept one, SAHI's NMM)
MATCH = "iou"          # the merge's overlap measure ("ios": over the smaller box, SAHI's IOS)
DEFAULT_STRETCH = (2.0, 98.0)   # percentiles per band -> 0 and 255 (non-uint8 rasters; fss_core.raster)
MAX_INPUT_SIDE = 8192  # px: the largest network input (tile, export size); 8192² RGB float32 is 0.8 GB a tile
MAX_BATCH_BYTES = 2 * 2**30   # one batch of network input (batch × tile² × 3 float32) at most, checked up front
MAX_RUNS = 100_000     # warmup or timed runs one bench report may ask for (at 20 ms a run: 33 min)


def check_input(side: int, batch: int = 1, what: str = "--tile") -> None:
    """Refuse a network input the machine would run out of memory building (--tile 100000 reached 5 GB before
    failing, --batch 100000 3.5 GB): bounded up front, with the sizes in the message."""
    if side > MAX_INPUT_SIDE:
        raise ValueError(f"{what} {side} exceeds the largest network input, {MAX_INPUT_SIDE} px; tile the image "
                         "instead (fss detect tiles images of any size)")
    need = batch * side * side * 3 * 4
    if need > MAX_BATCH_BYTES:
        raise ValueError(f"--batch {batch} of {side} px inputs needs {need / 2**30:.1f} GB for one batch; at most "
                         f"{max(1, MAX_BATCH_BYTES // (side * side * 12))} at this size")


def max_det_for(height: int, width: int, max_det: int | None = None) -> int:
    """The per-image detection cap: ``max_det`` when given, else MAX_DET per MAX_DET_AREA px² (at least MAX_DET), so
    the default never truncates a dense large scene that a 4000 px image at the same density would keep whole."""
    if max_det:
        return max_det
    return max(MAX_DET, -(-MAX_DET * height * width // MAX_DET_AREA))


def max_det_rule() -> str:
    """The default cap in words, from the constants above (help texts and warnings)."""
    side = int(MAX_DET_AREA ** 0.5)
    area = f"{side}×{side}" if side * side == MAX_DET_AREA else f"{MAX_DET_AREA:,} square"
    return f"{MAX_DET:,} per {area} px of image, at least {MAX_DET:,}"
