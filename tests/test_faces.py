"""Face detection (MTCNN) and face enhancement, with the real weights and photos.

The slow parts (loading the nets, two generator runs) happen once per module;
the mechanics of enhance_faces are checked with a stub stylizer and detector.
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

from anime_cli.options import DEFAULT_MAX_FILE_SIZE
from anime_cli.weights import catalog as weights
from anime_cli.faces.enhance import (
    DEFAULT_MIN_FACE,
    CropSource,
    Face,
    crop_box,
    enhance_faces,
    feather_mask,
    match_tone,
)
from anime_cli.faces.mtcnn import ONet, PNet, RNet
from helpers import PHOTOS, invoke, psnr, read_log

# The astronaut's face, measured by eye on the photo: cheek to cheek, hairline to chin.
ASTRONAUT_FACE = (180, 72, 268, 180)


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# -----------------------------------------------------------------------------
# the three networks against a by-hand computation of the README's layer list


def conv(sd, name, x):
    return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def dense(sd, name, x):
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def prelu(sd, name, x):
    return F.prelu(x, sd[f"{name}.weight"])


def pool(x, k, s):
    return F.max_pool2d(x, k, s, ceil_mode=True)


def caffe_order(x):
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


def reference_pnet(sd, x):
    x = pool(prelu(sd, "prelu1", conv(sd, "conv1", x)), 2, 2)
    x = prelu(sd, "prelu2", conv(sd, "conv2", x))
    x = prelu(sd, "prelu3", conv(sd, "conv3", x))
    return F.softmax(conv(sd, "conv4_1", x), dim=1)[:, 1], conv(sd, "conv4_2", x)


def reference_rnet(sd, x):
    x = pool(prelu(sd, "prelu1", conv(sd, "conv1", x)), 3, 2)
    x = pool(prelu(sd, "prelu2", conv(sd, "conv2", x)), 3, 2)
    x = caffe_order(prelu(sd, "prelu3", conv(sd, "conv3", x)))
    assert x.shape[1] == 576
    x = prelu(sd, "prelu4", dense(sd, "dense4", x))
    return F.softmax(dense(sd, "dense5_1", x), dim=1)[:, 1], dense(sd, "dense5_2", x)


def reference_onet(sd, x):
    x = pool(prelu(sd, "prelu1", conv(sd, "conv1", x)), 3, 2)
    x = pool(prelu(sd, "prelu2", conv(sd, "conv2", x)), 3, 2)
    x = pool(prelu(sd, "prelu3", conv(sd, "conv3", x)), 2, 2)
    x = caffe_order(prelu(sd, "prelu4", conv(sd, "conv4", x)))
    assert x.shape[1] == 1152
    x = prelu(sd, "prelu5", dense(sd, "dense5", x))
    prob = F.softmax(dense(sd, "dense6_1", x), dim=1)[:, 1]
    return prob, dense(sd, "dense6_2", x), dense(sd, "dense6_3", x)


@pytest.mark.parametrize(
    "net, name, reference, shape",
    [
        (PNet, "mtcnn-pnet", reference_pnet, (2, 3, 31, 37)),  # odd sizes exercise ceil_mode pooling
        (RNet, "mtcnn-rnet", reference_rnet, (5, 3, 24, 24)),
        (ONet, "mtcnn-onet", reference_onet, (5, 3, 48, 48)),
    ],
)
def test_network_matches_reference_computation(net, name, reference, shape):
    sd = weights.load(name)  # sha256-checked, weights_only
    model = net()
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model(x), reference(sd, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


# -----------------------------------------------------------------------------
# detection on the sample photos


def test_astronaut_has_one_face(detector):
    faces = detector.detect(photo("astronaut.png"))
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) >= 0.5
    assert face.score > 0.9
    x0, y0, x1, y1 = face.box
    assert face.landmarks.shape == (5, 2)
    assert np.all((face.landmarks[:, 0] > x0) & (face.landmarks[:, 0] < x1))
    assert np.all((face.landmarks[:, 1] > y0) & (face.landmarks[:, 1] < y1))
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


@pytest.mark.parametrize("name", ["coffee.png", "chelsea.png", "rocket.jpg"])
def test_no_face_in_photos_without_people(detector, name):
    assert detector.detect(photo(name)) == []


def paste_head(background: Image.Image, face_px: int, at: tuple[int, int]):
    """Paste the astronaut's head, scaled so her face is face_px wide, with a soft
    oval edge; returns where her face (ASTRONAUT_FACE) lands."""
    cut = (130, 10, 320, 230)
    s = face_px / (ASTRONAUT_FACE[2] - ASTRONAUT_FACE[0])
    head = Image.fromarray(photo("astronaut.png")).crop(cut)
    head = head.resize((round(head.width * s), round(head.height * s)), Image.Resampling.LANCZOS)
    mask = Image.new("L", head.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, head.width - 1, head.height - 1), fill=255)
    background.paste(head, at, mask.filter(ImageFilter.GaussianBlur(head.width / 20)))
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    x, y = at[0] - cut[0] * s, at[1] - cut[1] * s
    return (x + fx0 * s, y + fy0 * s, x + fx1 * s, y + fy1 * s)


@pytest.fixture(scope="module")
def two_faces():
    """The coffee photo, blurred, with the astronaut's head pasted twice at two scales."""
    bg = Image.fromarray(photo("coffee.png")).filter(ImageFilter.GaussianBlur(3))
    where = [paste_head(bg, 40, (60, 60)), paste_head(bg, 70, (330, 170))]
    return np.asarray(bg), where


def test_two_pasted_faces_give_two_detections(detector, two_faces):
    image, where = two_faces
    faces = detector.detect(image)
    assert len(faces) == 2
    for expected in where:
        assert max(iou(f.box, expected) for f in faces) >= 0.5


# -----------------------------------------------------------------------------
# enhancement mechanics, with stubs (no generator runs)


class NegativeStylizer:
    """Stands in for Stylizer: inverts the picture, records the sizes it was given."""

    def __init__(self):
        self.sizes = []

    def stylize(self, rgb, cancel=None):
        self.sizes.append(rgb.shape)
        return 255 - rgb


class FixedDetector:
    def __init__(self, *faces):
        self.faces = list(faces)

    def detect(self, rgb, min_face=20):
        return self.faces  # like MTCNN, min_face is only where the search starts


def face_at(x0, y0, x1, y1):
    return Face((x0, y0, x1, y1), 0.99, np.zeros((5, 2)))


def outside_crops(shape, faces):
    keep = np.ones(shape[:2], bool)
    for f in faces:
        l, t, r, b = crop_box(f)
        keep[max(t, 0) : max(b, 0), max(l, 0) : max(r, 0)] = False
    return keep


def test_enhance_pastes_only_inside_the_crops():
    rng = np.random.default_rng(1)
    working = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    stylized = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    faces = [face_at(100, 100, 140, 140), face_at(-10, 250, 30, 290), face_at(380, -5, 420, 35)]  # two past the edges
    before = stylized.copy()
    stylizer = NegativeStylizer()
    out, report = enhance_faces(stylizer, working, stylized, FixedDetector(*faces), face_size=128, min_face=30)
    assert np.array_equal(stylized, before)  # works on a copy
    assert report.found == report.enhanced == 3
    assert stylizer.sizes == [(128, 128, 3)] * 3
    assert out.shape == stylized.shape and out.dtype == np.uint8
    far = outside_crops(working.shape, faces)
    assert np.array_equal(out[far], stylized[far])
    assert not np.array_equal(out[110:130, 110:130], stylized[110:130, 110:130])


def test_enhance_skips_small_and_oversized_faces():
    working = np.full((600, 600, 3), 128, np.uint8)
    stylized = np.full((600, 600, 3), 90, np.uint8)
    faces = FixedDetector(face_at(10, 10, 30, 30), face_at(200, 200, 500, 500))
    out, report = enhance_faces(NegativeStylizer(), working, stylized, faces, min_face=24, face_size=512)
    assert report.enhanced == 0 and np.array_equal(out, stylized)
    assert report.found == 1 and report.kept == {"already >= face size": 1}  # the 20 px one is under min_face


def test_enhance_takes_pixels_from_the_source():
    class Recorder:
        def __init__(self):
            self.calls = []

        def region(self, box, size):
            self.calls.append((box, size))
            return np.zeros((size, size, 3), np.uint8)

    source = Recorder()
    face = face_at(50, 60, 90, 100)
    working = np.full((200, 200, 3), 200, np.uint8)
    enhance_faces(NegativeStylizer(), working, working.copy(), FixedDetector(face), source, face_size=96, min_face=30)
    assert source.calls == [(crop_box(face), 96)]


def test_array_source_resamples_and_mirrors_past_the_edges():
    a = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    src = CropSource(a)
    assert np.array_equal(src.region((10, 5, 42, 37), 32), a[5:37, 10:42])  # same size: a plain crop
    mirrored = np.pad(a, ((20, 0), (20, 0), (0, 0)), mode="reflect")
    assert np.array_equal(src.region((-20, -20, 44, 44), 64), mirrored[:64, :64])
    small = src.region((-100.5, 3.25, 150.5, 47.0), 17)
    assert small.shape == (17, 17, 3) and small.dtype == np.uint8


def test_feather_mask_is_zero_at_the_crop_edge_and_one_in_the_middle():
    m = feather_mask(101)
    assert m[50, 50] == 1.0
    assert np.all(m[0] == 0) and np.all(m[-1] == 0) and np.all(m[:, 0] == 0) and np.all(m[:, -1] == 0)
    assert m.min() >= 0 and m.max() <= 1


def test_match_tone_matches_weighted_mean_and_std():
    rng = np.random.default_rng(3)
    render = rng.integers(100, 256, (40, 40, 3)).astype(np.uint8)
    target = rng.integers(0, 120, (40, 40, 3)).astype(np.uint8)
    w = feather_mask(40)
    out = match_tone(render, target, w)
    wt = w[..., None] / w.sum()

    def mean_std(x):
        m = (x * wt).sum((0, 1))
        return m, np.sqrt(((x - m) ** 2 * wt).sum((0, 1)))

    (m_out, s_out), (m_target, s_target) = mean_std(out), mean_std(target.astype(np.float32))
    np.testing.assert_allclose(m_out, m_target, atol=1e-2)
    np.testing.assert_allclose(s_out, s_target, rtol=1e-3)


# -----------------------------------------------------------------------------
# enhancement with the real generator (two runs: the plain picture, one face)


def test_enhance_changes_the_face_and_nothing_far_from_it(detector, stylizer):
    # the astronaut at half size: her face is ~43 px, where the plain rendering smudges it
    working = np.asarray(Image.fromarray(photo("astronaut.png")).resize((256, 256), Image.Resampling.LANCZOS))
    stylized = stylizer.stylize(working)
    out, report = enhance_faces(stylizer, working, stylized, detector)
    assert report.found == report.enhanced == 1
    [face] = detector.detect(working, min_face=DEFAULT_MIN_FACE)
    x0, y0, x1, y1 = (round(v) for v in face.box)
    changed = np.abs(out[y0:y1, x0:x1].astype(int) - stylized[y0:y1, x0:x1]).mean()
    assert changed > 5
    far = outside_crops(working.shape, [face])
    assert far.sum() > 0.5 * far.size
    assert np.array_equal(out[far], stylized[far])
    # tone matching: the pasted crop keeps the brightness of the picture around it
    l, t, r, b = crop_box(face)
    region = (slice(max(t, 0), b), slice(max(l, 0), r))
    assert np.abs(out[region].mean((0, 1)) - stylized[region].mean((0, 1))).max() < 6


def big_astronaut(tmp_path):
    """A 2048 px JPEG of the astronaut, probed and decoded to a 512 px working
    image: (path, probe, working image)."""
    from anime_cli.inputs import probe, read
    from anime_cli.inputs.decode import decode

    path = tmp_path / "big.jpg"
    with Image.open(PHOTOS / "astronaut.png") as im:
        im.convert("RGB").resize((2048, 2048), Image.Resampling.LANCZOS).save(path, quality=95)
    src, n = read.read_source(path, DEFAULT_MAX_FILE_SIZE)
    im, pr = probe.open_image(src, n, "big.jpg", probe.DEFAULT_MAX_PIXELS)
    with im:
        return path, pr, decode(im, pr, 512, "big.jpg").rgb


def test_file_source_cuts_faces_from_the_original_resolution(tmp_path):
    from anime_cli.faces.enhance import FileSource

    path, pr, working = big_astronaut(tmp_path)
    box = (150.0, 60.0, 290.0, 200.0)  # the face, in working-image pixels
    source = FileSource(lambda: Image.open(path), pr, working, 10**9)
    got = source.region(box, 256)
    with Image.open(path) as full:
        ref = CropSource(np.asarray(full.convert("RGB"))).region(tuple(v * 4 for v in box), 256)
    assert got.shape == (256, 256, 3)
    assert psnr(got, ref) > 35
    assert source._cache.shape[1] == 1024  # re-decoded at 1/2 scale, not cut from the 512 px working image


def test_cli_enhances_the_astronauts_face(tmp_path):
    code, _, err = invoke("convert", PHOTOS / "astronaut.png", "-o", tmp_path, "--log-file", tmp_path / "log.jsonl")
    assert code == 0, err
    (rec,) = read_log(tmp_path / "log.jsonl")
    assert rec["faces"] == 1 and rec["timings"]["faces"] > 0
    assert "faces 1" in err


def test_faces_are_found_on_a_copy_no_larger_than_detection_needs(detector, monkeypatch):
    """A full-resolution picture (--max-side 0) is not run through MTCNN whole: its
    pyramid over a 24 MP photo held ~1 GB. The boxes come back in the picture's pixels."""
    from anime_cli.faces.enhance import DETECT_SIDE

    big = np.asarray(Image.fromarray(photo("astronaut.png")).resize((2048, 2048), Image.Resampling.LANCZOS))
    seen = []
    real = detector.mtcnn.detect
    monkeypatch.setattr(detector.mtcnn, "detect", lambda rgb, min_face: seen.append(rgb.shape) or real(rgb, min_face=min_face))
    [face] = detector.detect(big, min_face=4 * DEFAULT_MIN_FACE)
    assert max(seen[0][:2]) <= DETECT_SIDE
    assert iou(face.box, tuple(4 * v for v in ASTRONAUT_FACE)) > 0.5


def test_a_file_replaced_mid_conversion_is_not_read_for_faces(tmp_path):
    """The crop would come from another picture (a coffee cup pasted on the face):
    a file whose device, inode, size or mtime changed since the probe is not
    re-read; the working image serves."""
    from anime_cli.faces.enhance import FileSource, file_identity

    path, pr, working = big_astronaut(tmp_path)
    identity = file_identity(path)
    with Image.open(PHOTOS / "coffee.png") as cup:  # the file is replaced under the same name
        cup.convert("RGB").resize((2048, 2048)).save(tmp_path / "new.jpg", quality=95)
    os.replace(tmp_path / "new.jpg", path)
    box = (150.0, 60.0, 290.0, 200.0)
    got = FileSource(lambda: Image.open(path), pr, working, 10**9, identity=identity, path=path).region(box, 256)
    assert np.array_equal(got, CropSource(working).region(box, 256))
