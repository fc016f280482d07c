"""MySQL/MariaDB GEOMETRY values (4-byte SRID, then WKB) as GeoJSON geometries, for ``type: json`` fields."""

from __future__ import annotations

import struct
from typing import Any

_TYPES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon",
          7: "GeometryCollection"}


def geojson(value: bytes) -> dict[str, Any]:
    """``{"type": ..., "coordinates": ..., "srid": N}``; raises ValueError on malformed input."""
    if len(value) < 9:
        raise ValueError("too short for a geometry (SRID + WKB)")
    (srid,) = struct.unpack_from("<I", value, 0)
    geometry, end = _read(value, 4)
    if end != len(value):
        raise ValueError(f"{len(value) - end} trailing bytes after the geometry")
    geometry["srid"] = srid
    return geometry


def _read(buf: bytes, at: int) -> tuple[dict[str, Any], int]:
    order = "<" if buf[at] == 1 else ">"
    (kind,) = struct.unpack_from(order + "I", buf, at + 1)
    at += 5
    name = _TYPES.get(kind)
    if name is None:
        raise ValueError(f"unknown WKB geometry type {kind}")
    if name == "Point":
        x, y = struct.unpack_from(order + "dd", buf, at)
        return {"type": name, "coordinates": [x, y]}, at + 16
    if name == "LineString":
        coords, at = _points(buf, at, order)
        return {"type": name, "coordinates": coords}, at
    if name == "Polygon":
        (rings,) = struct.unpack_from(order + "I", buf, at)
        at += 4
        coords = []
        for _ in range(rings):
            ring, at = _points(buf, at, order)
            coords.append(ring)
        return {"type": name, "coordinates": coords}, at
    (count,) = struct.unpack_from(order + "I", buf, at)
    at += 4
    parts = []
    for _ in range(count):
        part, at = _read(buf, at)
        parts.append(part)
    if name == "GeometryCollection":
        return {"type": name, "geometries": parts}, at
    return {"type": name, "coordinates": [p["coordinates"] for p in parts]}, at


def _points(buf: bytes, at: int, order: str) -> tuple[list[list[float]], int]:
    (n,) = struct.unpack_from(order + "I", buf, at)
    at += 4
    flat = struct.unpack_from(order + "d" * (2 * n), buf, at)
    return [[flat[i], flat[i + 1]] for i in range(0, 2 * n, 2)], at + 16 * n
