"""The defaults of tiled detection, in one place (no heavy imports: the CLI reads them at start-up)."""

OVERLAP = 200          # px between neighbouring tiles
BATCH = 8              # tiles per backend call
CONF = 0.25            # score threshold
IOU = 0.5              # class-aware NMS IoU of the merge
MAX_DET = 10_000       # detections kept per image
FORMATS = ("coco", "dota", "yolo", "geojson")    # geojson: georeferenced images only
