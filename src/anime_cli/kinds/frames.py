"""How one frame of a clip is stylized: the network, then faces.

face2paint costs one full render per face per frame, which in a video is
most of the bill. So for video the faces are rendered at 256 px by default (a
quarter of the pixels of the photo default, 512): small faces still gain eyes
and a mouth (docs/FACES.md), and the cost stays a fraction of the frame's.
bench/video.py, 2 busy cores: 480p with 2-3 faces a frame, 3.3 s a frame for
the network and 1.7 s for the faces (x1.5); 720p with a face in half the
frames, 7.6 s and 1.0 s (x1.14). Faces whose crop is already 256 px or more
(faces over ~128 px) are left as the network drew them, at no cost beyond
detection (0.2-0.6 s a frame, MTCNN on one thread).
"""

from __future__ import annotations

import time

import numpy as np

from anime_cli.faces.enhance import DEFAULT_MIN_FACE, enhance_faces

from anime_cli.options import VIDEO_FACE_SIZE  # noqa: F401  (the default's home is options)


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
        self.faces = 0  # found, summed over frames
        self.faces_enhanced = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = self.stylizer.stylize(rgb, budget_bytes=self.budget_bytes, cancel=self.cancel)
        t1 = time.perf_counter()
        self.timings["stylize"] += t1 - t
        if self.detector is not None:
            out, report = enhance_faces(self.stylizer, rgb, out, self.detector, face_size=self.face_size,
                                        min_face=self.min_face, cancel=self.cancel)
            self.faces += report.found
            self.faces_enhanced += report.enhanced
            self.timings["faces"] += time.perf_counter() - t1
        return out
