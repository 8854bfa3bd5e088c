"""The tile grid, one rule for cutting training tiles (``fss data split``) and detection tiles (``fss detect``):
DOTA-devkit origins, the last tile flush with the edge, and the bound on the overlap."""

from __future__ import annotations


def check_overlap(tile: int, overlap: int, name: str = "--overlap") -> None:
    """Neighbouring tiles overlap by ``overlap`` px and move by at least an eighth of the tile (511 of 512 px of
    overlap made a 600 px image 7,921 tiles, a 4000 px one 12 million: a hang). One rule for detect and split."""
    most = tile - max(1, tile // 8)
    if not 0 <= overlap <= most:
        raise ValueError(f"{name} ({overlap}) must lie in 0…{most} px for a {tile} px tile (tiles move by at least "
                         "an eighth of their side)")


def tile_origins(length: int, tile: int, gap: int) -> list[int]:
    """Tile origins along one axis, DOTA-devkit semantics: 0, step, 2·step, … (step = tile − gap)
    and the last tile flush with the edge; one origin (0) when the image is not longer than a tile."""
    check_overlap(tile, gap)
    if length <= tile:
        return [0]
    step = tile - gap
    origins, pos = [], 0
    while True:
        if pos + tile >= length:
            origins.append(length - tile)
            return origins
        origins.append(pos)
        pos += step


def tile_grid(width: int, height: int, tile: int, gap: int) -> list[tuple[int, int]]:
    """(x, y) origins of every tile of a width × height image, row by row."""
    return [(x, y) for y in tile_origins(height, tile, gap) for x in tile_origins(width, tile, gap)]
