"""The network, then faces: one way for a photo and for every frame of a clip.

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
from contextlib import contextmanager

import numpy as np

from anime_cli.faces.enhance import DEFAULT_MIN_FACE, enhance_faces
from anime_cli.options import VIDEO_FACE_SIZE


def network_then_faces(style, rgb: np.ndarray, detector, *, face_size: int, min_face: int | None = None,
                       budget: int | None = None, cancel=None, progress=None, source=None, timed=None):
    """(the stylized picture, the plan it ran, the faces' report or None).
    detector None: no faces. source: where face crops come from (a photo's
    original file); None, the picture itself. timed(stage): a context manager
    around each of "stylize" and "faces"."""
    timed = timed or _untimed
    with timed("stylize"):
        rendered = style.render(rgb, budget_bytes=budget, cancel=cancel, progress=progress)
    if detector is None:
        return rendered.image, rendered.plan_text, None
    with timed("faces"):
        out, report = enhance_faces(style, rgb, rendered.image, detector, source, face_size=face_size,
                                    min_face=DEFAULT_MIN_FACE if min_face is None else min_face, cancel=cancel)
    return out, rendered.plan_text, report


@contextmanager
def _untimed(stage: str):
    yield


class FrameStylizer:
    """stylize_frame for video.convert_video and animated.convert_animated:
    rgb -> rgb, timing its own stages (`timings`: stylize, faces, seconds
    summed over frames) and counting the faces it enhanced (`faces`).
    detector None: no face enhancement. budget_bytes and cancel are passed to
    every render."""

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
        out, _, report = network_then_faces(self.stylizer, rgb, self.detector, face_size=self.face_size,
                                            min_face=self.min_face, budget=self.budget_bytes, cancel=self.cancel,
                                            timed=self._timed)
        if report is not None:
            self.faces += report.found
            self.faces_enhanced += report.enhanced
        return out

    @contextmanager
    def _timed(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - t
