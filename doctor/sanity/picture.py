"""Draws the default image shipped as ``doctor/data/default_image.png``.

A 336x336 picture (CLIP-336's input size) of four shapes in clear colours on white: a red circle
(top left), a blue square (top right), a green triangle (bottom left) and a yellow star (bottom
right). Deterministic: PIL's drawing primitives only, no fonts, no randomness, so the committed
file can be regenerated bit for bit (``python -m doctor.sanity.picture OUT.png``).
"""

from __future__ import annotations

import math
import sys
from typing import Any

SIZE = 336
SHAPES = {"red circle": "top left", "blue square": "top right", "green triangle": "bottom left",
          "yellow star": "bottom right"}


def draw_default_image() -> Any:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.ellipse((24, 24, 144, 144), fill=(220, 30, 30), outline=(0, 0, 0), width=3)
    d.rectangle((192, 24, 312, 144), fill=(30, 70, 220), outline=(0, 0, 0), width=3)
    d.polygon([(84, 192), (24, 312), (144, 312)], fill=(30, 160, 60), outline=(0, 0, 0))
    cx, cy, outer, inner = 252, 252, 62, 26
    points = []
    for i in range(10):
        r = outer if i % 2 == 0 else inner
        a = -math.pi / 2 + i * math.pi / 5
        points.append((round(cx + r * math.cos(a)), round(cy + r * math.sin(a))))
    d.polygon(points, fill=(250, 210, 20), outline=(0, 0, 0))
    d.line((0, SIZE // 2, SIZE, SIZE // 2), fill=(200, 200, 200), width=1)
    d.line((SIZE // 2, 0, SIZE // 2, SIZE), fill=(200, 200, 200), width=1)
    return img


if __name__ == "__main__":
    draw_default_image().save(sys.argv[1] if len(sys.argv) > 1 else "default_image.png", optimize=True)
