"""How one frame of a clip is stylized: the network, then faces.

face2paint costs one full render per face per frame, which in a video is the
whole bill: a 480p frame takes the network about as long as one 512 px face.
So for video the faces are rendered at 256 px by default (a quarter of the
pixels of the photo default, 512), which still gives small faces eyes and a
mouth (see docs/FACES.md) and keeps a clip with one face under about 1.3x the
cost of the same clip without faces (bench/video.py measures it). Detection
itself (MTCNN, one thread) is cheap at video sizes.
"""

from __future__ import annotations

import time

import numpy as np

from .faces import DEFAULT_MIN_FACE, enhance_faces

VIDEO_FACE_SIZE = 256


class FrameStylizer:
    """stylize_frame for video.convert_video and animated.convert_animated:
    rgb -> rgb, timing its own stages (`timings`: stylize, faces, seconds
    summed over frames) and counting the faces it enhanced (`faces`).
    detector None: no face enhancement. budget_bytes and cancel are passed to
    every Stylizer.stylize call."""

    def __init__(self, stylizer, detector=None, *, face_size: int = VIDEO_FACE_SIZE,
                 min_face: int = DEFAULT_MIN_FACE, budget_bytes: int | None = None, cancel=None):
        self.stylizer, self.detector = stylizer, detector
        self.face_size, self.min_face = face_size, min_face
        self.budget_bytes, self.cancel = budget_bytes, cancel
        self.timings = {"stylize": 0.0}
        if detector is not None:
            self.timings["faces"] = 0.0
        self.faces = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = self.stylizer.stylize(rgb, budget_bytes=self.budget_bytes, cancel=self.cancel)
        t1 = time.perf_counter()
        self.timings["stylize"] += t1 - t
        if self.detector is not None:
            out, n = enhance_faces(self.stylizer, rgb, out, self.detector, face_size=self.face_size,
                                   min_face=self.min_face, cancel=self.cancel)
            self.faces += n
            self.timings["faces"] += time.perf_counter() - t1
        return out
