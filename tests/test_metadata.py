"""--keep-metadata: what the output carries, for every output format that holds
metadata; the input's pixels are never decoded to read it."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageCms
from PIL.ExifTags import IFD
from PIL.TiffImagePlugin import IFDRational

from anime_cli.inputs import metadata

from helpers import PHOTOS, make_photo

MAKE, MODEL, ORIENTATION, DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
DATE_TAKEN, EXPOSURE, FNUMBER, ISO, LENS = 0x9003, 0x829A, 0x829D, 0x8827, 0xA434
MAKER_NOTE, COLOR_SPACE, PIXEL_X, PIXEL_Y = 0x927C, 0xA001, 0xA002, 0xA003
FORMATS = ["JPEG", "PNG", "WEBP", "TIFF"]
OUT = (64, 96)  # the output's size: the 96x64 input turned upright (orientation 6)

XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/"
 xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
 xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/"
 tiff:Orientation="6" exif:GPSLatitude="48,51.5N" exif:PixelXDimension="4000" photoshop:City="Paris"
 xmp:CreateDate="2024-05-01T09:59:58">
<exif:GPSLongitude>2,17.67E</exif:GPSLongitude><exif:PixelYDimension>3000</exif:PixelYDimension>
<xmp:Rating>4</xmp:Rating>
<xmp:Thumbnails><rdf:Alt><rdf:li rdf:parseType="Resource">
<xmpGImg:image>/9j/4AAQSkZJRg==</xmpGImg:image></rdf:li></rdf:Alt></xmp:Thumbnails>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>""".encode()


def _thumb() -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (16, 12), (250, 10, 10)).save(b, "JPEG")
    return b.getvalue()


def camera_exif(thumb: bytes) -> bytes:
    """A camera's EXIF block: camera, lens, date taken, exposure, orientation 6,
    GPS, a MakerNote, and an IFD1 thumbnail (Pillow cannot write IFD1: appended here)."""
    ex = Image.Exif()
    ex[MAKE], ex[MODEL], ex[ORIENTATION], ex[DATETIME] = "Canon", "Canon EOS R5", 6, "2024:05:01 10:00:00"
    ex[IFD.Exif] = {DATE_TAKEN: "2024:05:01 09:59:58", EXPOSURE: IFDRational(1, 250), FNUMBER: IFDRational(4, 1),
                    ISO: 400, LENS: "RF24-105mm F4 L IS USM", PIXEL_X: 4000, PIXEL_Y: 3000,
                    MAKER_NOTE: b"SERIAL 012345 and a preview"}
    r = IFDRational
    ex[IFD.GPSInfo] = {1: "N", 2: (r(48, 1), r(51, 1), r(30, 1)), 3: "E", 4: (r(2, 1), r(17, 1), r(40, 1))}
    tiff = bytearray(ex.tobytes()[6:])
    e = "<" if tiff[:2] == b"II" else ">"
    (ifd0,) = struct.unpack_from(e + "I", tiff, 4)
    (n,) = struct.unpack_from(e + "H", tiff, ifd0)
    nxt = ifd0 + 2 + 12 * n  # IFD0's "next IFD" offset: 0 as Pillow writes it
    ifd1 = len(tiff) + (len(tiff) & 1)
    tiff += b"\0" * (ifd1 - len(tiff))
    struct.pack_into(e + "I", tiff, nxt, ifd1)
    at = ifd1 + 2 + 2 * 12 + 4
    tiff += (struct.pack(e + "H", 2) + struct.pack(e + "HHII", 0x0201, 4, 1, at)
             + struct.pack(e + "HHII", 0x0202, 4, 1, len(thumb)) + struct.pack(e + "I", 0) + thumb)
    return b"Exif\0\0" + bytes(tiff)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def camera_file(path: Path, fmt: str, late: bool = False) -> Path:
    """A real (small) photo in `fmt` with the camera's EXIF and XMP. late: a PNG
    whose metadata chunks come after the image data (Pillow reads those only by decoding)."""
    raw = camera_exif(_thumb())
    make_photo(path, (96, 64), fmt=fmt)
    with Image.open(path) as im:
        im.load()
        if fmt == "PNG":
            buf = io.BytesIO()
            im.save(buf, "PNG")
            png = buf.getvalue()
            chunks = _png_chunk(b"eXIf", raw[6:]) + _png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + XMP)
            at = len(png) - 12 if late else png.index(b"IDAT") - 4
            path.write_bytes(png[:at] + chunks + png[at:])
        elif fmt == "TIFF":
            ex = Image.Exif()
            ex.load(raw)
            ex[700] = XMP
            im.save(path, "TIFF", exif=ex.tobytes())
        else:
            im.save(path, fmt, exif=raw, xmp=XMP)
    return path


@pytest.fixture(scope="module")
def jpeg_md(tmp_path_factory):
    with Image.open(camera_file(tmp_path_factory.mktemp("in") / "cam.jpg", "JPEG")) as im:
        return metadata.read(im)


def _saved(md, fmt, keep_gps=False, size=OUT) -> tuple[bytes, Image.Image]:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 90, 200)).save(buf, fmt, **metadata.save_args(md, fmt, size, keep_gps))
    data = buf.getvalue()
    im = Image.open(io.BytesIO(data))
    im.load()
    return data, im


@pytest.mark.parametrize("fmt", FORMATS)
def test_kept_and_changed(jpeg_md, fmt):
    data, im = _saved(jpeg_md, fmt)
    ex = im.getexif()
    sub = ex.get_ifd(IFD.Exif)
    assert (ex[MAKE], ex[MODEL], ex[DATETIME]) == ("Canon", "Canon EOS R5", "2024:05:01 10:00:00")
    assert sub[DATE_TAKEN] == "2024:05:01 09:59:58" and sub[LENS] == "RF24-105mm F4 L IS USM"
    assert (float(sub[EXPOSURE]), float(sub[FNUMBER]), sub[ISO]) == (1 / 250, 4.0, 400)
    assert ex[ORIENTATION] == 1
    assert (sub[PIXEL_X], sub[PIXEL_Y]) == OUT == im.size
    assert not ex.get_ifd(IFD.GPSInfo) and IFD.GPSInfo not in ex
    assert not ex.get_ifd(IFD.IFD1) and _thumb() not in data  # no thumbnail of the photo
    assert MAKER_NOTE not in sub and b"SERIAL 012345" not in data
    # sRGB, said twice: EXIF ColorSpace and an ICC profile
    assert sub[COLOR_SPACE] == 1
    prof = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
    assert "sRGB" in ImageCms.getProfileDescription(prof)
    xmp = im.info["xmp"]
    xmp = xmp.encode() if isinstance(xmp, str) else xmp
    assert b'tiff:Orientation="1"' in xmp and b'exif:PixelXDimension="64"' in xmp
    assert b"<exif:PixelYDimension>96</exif:PixelYDimension>" in xmp
    assert b"CreateDate" in xmp and b"<xmp:Rating>4" in xmp
    assert b"GPS" not in xmp and b"Paris" not in xmp and b"Thumbnails" not in xmp


@pytest.mark.parametrize("fmt", FORMATS)
def test_gps_kept_when_asked(jpeg_md, fmt):
    _, im = _saved(jpeg_md, fmt, keep_gps=True)
    gps = im.getexif().get_ifd(IFD.GPSInfo)
    assert gps[1] == "N" and [float(x) for x in gps[2]] == [48, 51, 30]
    xmp = im.info["xmp"]
    xmp = xmp.encode() if isinstance(xmp, str) else xmp
    assert b"exif:GPSLatitude" in xmp and b"Paris" in xmp and b'tiff:Orientation="1"' in xmp


@pytest.mark.parametrize("fmt", FORMATS + ["BMP"])
def test_without_the_option_nothing_is_kept(fmt):
    assert metadata.save_args(None, fmt, OUT) == {}
    buf = io.BytesIO()
    Image.new("RGB", OUT).save(buf, fmt, **metadata.save_args(None, fmt, OUT))
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.load()
        assert not (set(im.info) & {"exif", "xmp", "icc_profile"})
        assert ORIENTATION not in im.getexif() and MAKE not in im.getexif()


def test_bmp_output_holds_nothing(jpeg_md):
    assert metadata.save_args(jpeg_md, "BMP", OUT) == {}


@pytest.mark.parametrize("fmt,late", [("JPEG", False), ("PNG", False), ("PNG", True), ("WEBP", False),
                                      ("TIFF", False)])
def test_read_from_every_input_format_without_decoding(tmp_path, fmt, late):
    path = camera_file(tmp_path / f"cam.{fmt.lower()}", fmt, late)
    with Image.open(path) as im:
        md = metadata.read(im)
        assert im._im is None  # the pixels were not decoded to find the metadata
        im.load()  # and the picture still decodes after the chunks were walked
    assert md.ifd0[MODEL] == "Canon EOS R5" and md.exif[DATE_TAKEN] == "2024:05:01 09:59:58"
    assert md.gps[1] == "N" and b"photoshop:City" in md.xmp
    assert ORIENTATION not in md.ifd0 and MAKER_NOTE not in md.exif
    if fmt == "TIFF":
        assert not {0x0100, 0x0111, 0x0117, 700} & set(md.ifd0)  # the TIFF's own structure is not carried


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_big_png_is_walked_not_decoded(tmp_path):
    """A 100 MP PNG with its EXIF after the data: the metadata in milliseconds, no pixels."""
    import time

    from anime_cli.logs.telemetry import rss_bytes

    path = tmp_path / "big.png"
    Image.new("L", (10000, 10000)).save(path, "PNG", compress_level=1)
    png = path.read_bytes()
    path.write_bytes(png[:-12] + _png_chunk(b"eXIf", camera_exif(b"")[6:]) + png[-12:])
    rss, t = rss_bytes(), time.perf_counter()
    with Image.open(path) as im:
        md = metadata.read(im)
    assert md.ifd0[MAKE] == "Canon"
    assert time.perf_counter() - t < 1.0 and rss_bytes() - rss < 20e6


def test_sample_photos_without_metadata_give_none():
    for name in ("rocket.jpg", "astronaut.png"):
        with Image.open(PHOTOS / name) as im:
            assert metadata.read(im) is None


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("bad", [
    b"Exif\0\0MM\0*\0\0\0\x08\xff\xff",  # an IFD that claims 65535 entries
    b"Exif\0\0garbage",
    b"\0" * 40,
])
def test_broken_exif_is_no_exif(tmp_path, bad):
    path = make_photo(tmp_path / "b.jpg", (32, 32), fmt="JPEG", exif=bad)
    with Image.open(path) as im:
        md = metadata.read(im)
    assert md is None or not (md.ifd0 or md.exif or md.gps)


@pytest.mark.parametrize("xmp", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>',
    b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><unclosed>",
    b"not xml at all",
    b"<x>" + b"a" * (2 << 20) + b"</x>",
])
def test_xmp_that_cannot_be_edited_safely_is_dropped(xmp):
    md = metadata.Metadata({MAKE: "Canon"}, {}, {}, xmp)
    for fmt in FORMATS:
        args = metadata.save_args(md, fmt, OUT)
        assert "xmp" not in args and "pnginfo" not in args and args["exif"]


def test_xmp_elements_and_other_prefixes_are_edited():
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:t="http://ns.adobe.com/tiff/1.0/" xmlns:e="http://ns.adobe.com/exif/1.0/">'
           b"<t:Orientation>8</t:Orientation><e:GPSAltitude>100/1</e:GPSAltitude>"
           b"</rdf:Description></rdf:RDF></x:xmpmeta>\0\0")
    out = metadata._edit_xmp(xmp, (10, 20), keep_gps=False)
    assert b"<t:Orientation>1</t:Orientation>" in out and b"GPSAltitude" not in out
    assert b"<t:Orientation>1</t:Orientation>" in out and b"100/1" in metadata._edit_xmp(xmp, (10, 20), True)


# -- through the CLI: these pass once the CLI has --keep-metadata (the lead's integration) --


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_cli_keep_metadata(tmp_path, fmt):
    from helpers import invoke

    src = camera_file(tmp_path / "cam.jpg", "JPEG")  # 96x64 stored, orientation 6
    for opts, out in (((), "plain"), (("--keep-metadata",), "kept"), (("--keep-metadata", "--keep-gps"), "gps")):
        code, _, err = invoke("convert", src, "-o", tmp_path / out, "--format", fmt, "--no-face-enhance", *opts)
        assert code == 0, err
    suffix = {"jpg": ".jpg", "png": ".png", "webp": ".webp"}[fmt]
    with Image.open(tmp_path / "plain" / f"cam{suffix}") as im:
        im.load()
        assert im.size == OUT and not (set(im.info) & {"exif", "xmp"}) and MAKE not in im.getexif()
    for out in ("kept", "gps"):
        with Image.open(tmp_path / out / f"cam{suffix}") as im:
            im.load()
            ex = im.getexif()
            sub = ex.get_ifd(IFD.Exif)
            assert im.size == OUT == (sub[PIXEL_X], sub[PIXEL_Y])
            assert ex[MODEL] == "Canon EOS R5" and sub[DATE_TAKEN] == "2024:05:01 09:59:58"
            assert ex[ORIENTATION] == 1 and not ex.get_ifd(IFD.IFD1)
            assert bool(ex.get_ifd(IFD.GPSInfo)) == (out == "gps")


def test_what_a_jpeg_cannot_hold_is_left_out_not_fatal():
    md = metadata.Metadata({MAKE: "Canon", 0x010E: "d" * 70_000}, {DATE_TAKEN: "2024:05:01 09:59:58"}, {},
                           b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + b" " * 70_000 + b"<y/></x:xmpmeta>")
    data, im = _saved(md, "JPEG")  # Pillow refuses EXIF or XMP over one 64 KB segment
    assert "xmp" not in im.info and MAKE not in im.getexif() and "icc_profile" in im.info
    data, im = _saved(md, "PNG")  # a PNG holds both
    assert im.getexif()[MAKE] == "Canon" and "xmp" in im.info


def test_big_blobs_in_the_exif_ifd_are_not_carried(tmp_path):
    ex = Image.Exif()
    ex[MODEL] = "Canon EOS R5"
    ex[IFD.Exif] = {DATE_TAKEN: "2024:05:01 09:59:58", 0x9286: b"ASCII\0\0\0" + b"c" * 10_000}
    path = make_photo(tmp_path / "b.jpg", (32, 32), fmt="JPEG", exif=ex.tobytes())
    with Image.open(path) as im:
        md = metadata.read(im)
    assert md.exif == {DATE_TAKEN: "2024:05:01 09:59:58"}
