"""The input's metadata carried into the output, for `--keep-metadata` (off by
default: a photo's EXIF says where and when it was taken, and with what).

What is kept: EXIF's camera, lens, date taken, exposure and the rest of the
Exif sub-IFD, and the main IFD's descriptive tags (make, model, date, artist,
copyright, resolution); XMP, edited. What changes, because the output is
another picture:
- Orientation is 1 (EXIF and XMP): the pixels were turned upright.
- The embedded thumbnail (IFD1; XMP's xmp:Thumbnails) is dropped: it shows the photo, not the anime.
- The pixel dimensions (ExifImageWidth/Height, i.e. PixelX/YDimension; XMP's
  exif:PixelX/YDimension and tiff:ImageWidth/ImageLength) are the output's.
- GPS is removed unless keep_gps: the EXIF GPS IFD; and XMP is kept by an
  allow-list (_KEEP): only namespaces and properties known to carry no
  location (Dublin Core, XMP basic, rights, media management, TIFF, EXIF
  without its GPS*, aux, Photoshop without City/State/Country, a few IPTC
  properties, keywords), at every depth. A deny-list of GPS fields cannot keep
  that promise: drones (drone-dji:GpsLatitude), video tools (xmpDM:shotLocation)
  and others each write their own. With keep_gps the XMP is kept whole.
- MakerNote is dropped: a vendor blob whose internal offsets break once moved,
  which often holds a preview of the photo and serial numbers.
- The output says sRGB twice: EXIF ColorSpace = 1, and an sRGB ICC profile
  (588 bytes). The decoder converted any input profile (Display P3, Adobe RGB)
  to sRGB, so copying the input's ColorSpace (65535 "uncalibrated" on P3
  phones) or its profile would be false; the ICC profile is what colour-managed
  viewers (macOS, browsers, Photoshop) read, ColorSpace what the others read.
XMP is edited as namespaced XML; XMP that does not parse, declares a DOCTYPE or
entities, nests deeper than 64 elements or is over 1 MB is dropped whole (never
passed on unedited), decided when it is read, before any pixel is decoded.

`read(im)` is cheap (taken at probe time, no pixel decoded: a PNG's chunks
after the image data are reached by seeking over it); `save_args(md, fmt,
size, keep_gps)` gives the keyword arguments for Image.save.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from PIL import Image, ImageCms, PngImagePlugin
from PIL.ExifTags import IFD

# Main-IFD tags worth carrying; everything else there is the file's own structure
# (strip offsets, compression, bits per sample, a TIFF's own XMP/ICC/IPTC) or IFD pointers.
_IFD0_KEEP = {0x010E, 0x010F, 0x0110, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132, 0x013B, 0x8298}
_ORIENTATION, _XMP_TAG = 0x0112, 700
_MAKER_NOTE, _COLOR_SPACE, _PIXEL_X, _PIXEL_Y = 0x927C, 0xA001, 0xA002, 0xA003
_XMP_MAX = 1 << 20
_BLOB_MAX = 4096  # bytes: an Exif value longer than this is a vendor blob or a comment, not a camera fact
_JPEG_SEGMENT = 65533 - 29  # what one JPEG APP1 segment holds: longer EXIF or XMP cannot be written
_PNG_XMP_KEY = b"XML:com.adobe.xmp"


@dataclass(frozen=True)
class Metadata:
    """What an input carries: the kept main-IFD tags, the Exif and GPS sub-IFDs
    (tag -> value, as Pillow reads them), and the raw XMP packet."""

    ifd0: dict
    exif: dict
    gps: dict
    xmp: bytes | None


def read(im: Image.Image) -> Metadata | None:
    """The metadata of an opened (not decoded) image; None when it has none.
    Never raises: broken metadata is no metadata."""
    raw_exif, xmp = im.info.get("exif"), im.info.get("xmp")
    if im.format == "PNG" and (raw_exif is None or xmp is None):
        late_exif, late_xmp = _png_late_chunks(im)
        raw_exif, xmp = raw_exif or late_exif, xmp or late_xmp
    ifd0, sub, gps = {}, {}, {}
    try:
        if isinstance(raw_exif, (bytes, bytearray)) and raw_exif:
            ex = Image.Exif()
            ex.load(bytes(raw_exif))
        elif im.format == "TIFF":
            ex = im.getexif()  # from the TIFF's own IFD: tags only, no pixels
        else:
            ex = None
        if ex is not None:
            ifd0 = {k: v for k, v in ex.items() if k in _IFD0_KEEP}
            sub = {k: v for k, v in ex.get_ifd(IFD.Exif).items()
                   if k not in (_MAKER_NOTE, IFD.Interop) and not isinstance(v, dict)
                   and not (isinstance(v, (bytes, str)) and len(v) > _BLOB_MAX)}
            gps = dict(ex.get_ifd(IFD.GPSInfo))
    except Exception:  # a corrupt EXIF block: nothing to carry, the picture is fine
        ifd0, sub, gps = {}, {}, {}
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    xmp = bytes(xmp) if xmp else None
    if xmp is not None and _parse_xmp(xmp) is None:
        xmp = None  # it could not be edited safely at save time either
    if not (ifd0 or sub or gps or xmp):
        return None
    return Metadata(ifd0, sub, gps, xmp)


def save_args(md: Metadata | None, fmt: str, size: tuple[int, int], keep_gps: bool = False) -> dict:
    """Keyword arguments for Image.save(format=fmt) of the output picture, `size`
    (w, h) in pixels: {} without metadata (nothing is kept: the default) or for a
    format that holds none (BMP)."""
    if md is None or fmt not in ("JPEG", "PNG", "WEBP", "TIFF"):
        return {}
    ex = _exif(md, size, keep_gps)
    xmp = _edit_xmp(md.xmp, size, keep_gps) if md.xmp else None
    args = {"icc_profile": _srgb()}
    if fmt == "TIFF" and xmp:
        ex[_XMP_TAG] = xmp  # a TIFF holds its XMP as a tag of its own IFD (the writer merges EXIF's into it)
    args["exif"] = ex.tobytes()
    if fmt == "TIFF":
        return args
    if fmt == "JPEG" and len(args["exif"]) > _JPEG_SEGMENT:  # no room: the file matters more than its EXIF
        del args["exif"]
    if fmt == "JPEG" and xmp and len(xmp) > _JPEG_SEGMENT:
        xmp = None
    if xmp and fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(_PNG_XMP_KEY.decode(), xmp.decode("utf-8"), zip=False)
        args["pnginfo"] = info
    elif xmp:
        args["xmp"] = xmp
    return args


def _exif(md: Metadata, size: tuple[int, int], keep_gps: bool) -> Image.Exif:
    ex = Image.Exif()  # a new block: no IFD1 (thumbnail), nothing not listed here
    for k, v in md.ifd0.items():
        ex[k] = v
    ex[_ORIENTATION] = 1
    ex[IFD.Exif] = {**md.exif, _COLOR_SPACE: 1, _PIXEL_X: int(size[0]), _PIXEL_Y: int(size[1])}
    if keep_gps and md.gps:
        ex[IFD.GPSInfo] = dict(md.gps)
    return ex


_srgb_bytes: bytes | None = None


def _srgb() -> bytes:
    global _srgb_bytes
    if _srgb_bytes is None:
        _srgb_bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _srgb_bytes


def _png_late_chunks(im: Image.Image) -> tuple[bytes | None, bytes | None]:
    """eXIf and the XMP iTXt chunk of a PNG, wherever they are: Pillow reads the
    chunks before the image data at open, and the rest only by decoding it.
    Here the data chunks are skipped by seeking, never read."""
    fp = getattr(im, "fp", None)
    if fp is None:
        return None, None
    exif = xmp = None
    try:
        pos = fp.tell()
    except (OSError, ValueError):
        return None, None
    try:
        fp.seek(8)
        for _ in range(1_000_000):  # a bound, in case of a file that loops
            head = fp.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                break
            if kind == b"eXIf" and length <= _XMP_MAX:
                exif = fp.read(length)
                fp.seek(4, io.SEEK_CUR)
            elif kind == b"iTXt" and length <= _XMP_MAX:
                xmp = _itxt_xmp(fp.read(length)) or xmp
                fp.seek(4, io.SEEK_CUR)
            else:
                fp.seek(length + 4, io.SEEK_CUR)
    except (OSError, ValueError, struct.error):
        pass
    finally:
        try:
            fp.seek(pos)
        except (OSError, ValueError):
            pass
    return exif, xmp


def _itxt_xmp(data: bytes) -> bytes | None:
    key, _, rest = data.partition(b"\0")
    if key != _PNG_XMP_KEY or len(rest) < 2 or rest[0] != 0:  # compressed XMP: not ours to inflate
        return None
    _, _, rest = rest[2:].partition(b"\0")  # language tag
    _, _, text = rest.partition(b"\0")  # translated keyword
    return text


# -- XMP -----------------------------------------------------------------------
_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "x": "adobe:ns:meta/",
    "xml": "http://www.w3.org/XML/1998/namespace",
    "dc": "http://purl.org/dc/elements/1.1/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "exifEX": "http://cipa.jp/exif/1.0/",
    "aux": "http://ns.adobe.com/exif/1.0/aux/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpRights": "http://ns.adobe.com/xap/1.0/rights/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "stRef": "http://ns.adobe.com/xap/1.0/sType/ResourceRef#",
    "stVer": "http://ns.adobe.com/xap/1.0/sType/Version#",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
}
_STRUCTURE = {_NS["rdf"], _NS["x"], _NS["xml"]}
# Without keep_gps, what XMP keeps: namespace -> its properties kept (None:
# all of them, less _NOT_KEPT). Anything else is dropped, wherever it nests:
# an unknown namespace may hold a position (drone-dji, xmpDM:shotLocation,
# GPano, a vendor's own), and Camera Raw's develop settings (crs) would be
# applied again to the anime picture.
_KEEP = {
    _NS["dc"]: None, _NS["xmp"]: None, _NS["xmpRights"]: None, _NS["tiff"]: None,
    _NS["exif"]: None, _NS["exifEX"]: None, _NS["aux"]: None, _NS["photoshop"]: None,
    _NS["stEvt"]: None, _NS["stRef"]: None, _NS["stVer"]: None,
    _NS["xmpMM"]: {"DocumentID", "InstanceID", "OriginalDocumentID", "History", "DerivedFrom", "VersionID",
                   "RenditionClass"},
    _NS["lr"]: {"hierarchicalSubject"},
    _NS["Iptc4xmpCore"]: {"IntellectualGenre", "Scene", "SubjectCode", "AltTextAccessibility",
                          "ExtDescrAccessibility"},
    _NS["Iptc4xmpExt"]: {"PersonInImage", "Event", "OrganisationInImageName", "OrganisationInImageCode",
                         "DigitalSourceType"},
}
_NOT_KEPT = {(_NS["photoshop"], n) for n in ("City", "State", "Country")} | {(_NS["dc"], "coverage")}
_ALWAYS_DROP = {(_NS["xmp"], "Thumbnails")}
_XMP_DEPTH = 64  # real packets nest under 20 deep; ElementTree's writer recurses once a level
_NS_DECL = re.compile(rb"xmlns:([A-Za-z_][\w.-]*)\s*=\s*[\"']([^\"']*)[\"']")
_ns_lock = threading.Lock()  # ElementTree's prefix registry is one per process
_PACKET_HEAD = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_PACKET_TAIL = '\n<?xpacket end="w"?>'


def _parse_xmp(xmp: bytes):
    """The packet's root element, or None when it cannot be handled within
    sane bounds: over 1 MB, a DOCTYPE or entities, not XML, or nested deeper
    than _XMP_DEPTH (checked while parsing, so a deep one stops early)."""
    data = xmp.strip(b"\0 \t\r\n")
    if len(data) > _XMP_MAX or re.search(rb"<!(DOCTYPE|ENTITY)", data, re.I):
        return None
    parser = ET.XMLPullParser(events=("start", "end"))
    depth, root = 0, None
    try:
        for i in range(0, len(data), 65536):
            parser.feed(data[i:i + 65536])
            for event, el in parser.read_events():
                if event == "start":
                    depth += 1
                    root = el if root is None else root
                    if depth > _XMP_DEPTH:
                        return None
                else:
                    depth -= 1
        parser.close()
        for _ in parser.read_events():
            pass
    except (ET.ParseError, ValueError):
        return None
    return root


def _kept(ns: str, name: str, keep_gps: bool) -> bool:
    if (ns, name) in _ALWAYS_DROP:
        return False
    if keep_gps or ns in _STRUCTURE:
        return True
    if (ns in (_NS["exif"], _NS["exifEX"]) and name.startswith("GPS")) or (ns, name) in _NOT_KEPT:
        return False
    if ns not in _KEEP:
        return False
    names = _KEEP[ns]
    return names is None or name in names


def _edit_xmp(xmp: bytes, size: tuple[int, int], keep_gps: bool) -> bytes | None:
    """The packet with orientation 1, the output's size, no thumbnail, and only
    what carries no location unless keep_gps; None (dropped) when it cannot be
    edited safely."""
    root = _parse_xmp(xmp)
    if root is None or (_split(root.tag)[0] not in _STRUCTURE):
        return None
    sets = {(_NS["tiff"], "Orientation"): "1", (_NS["exif"], "PixelXDimension"): str(size[0]),
            (_NS["exif"], "PixelYDimension"): str(size[1]), (_NS["tiff"], "ImageWidth"): str(size[0]),
            (_NS["tiff"], "ImageLength"): str(size[1]), (_NS["exif"], "ColorSpace"): "1",
            (_NS["photoshop"], "ICCProfile"): "sRGB built-in"}

    for el in list(root.iter()):
        for attr in list(el.attrib):
            ns, name = _split(attr)
            if not _kept(ns, name, keep_gps):
                del el.attrib[attr]
            elif (ns, name) in sets:
                el.attrib[attr] = sets[(ns, name)]
        for child in list(el):
            ns, name = _split(child.tag)
            if not _kept(ns, name, keep_gps):
                _remove(el, child)
            elif (ns, name) in sets and len(child) == 0:
                child.text = sets[(ns, name)]
    with _ns_lock:
        for prefix, uri in _NS_DECL.findall(xmp):
            try:
                ET.register_namespace(prefix.decode(), uri.decode())
            except (ValueError, UnicodeDecodeError):
                pass  # a prefix ElementTree reserves (ns0): it picks its own, the XML is the same
        body = ET.tostring(root, encoding="unicode")
    return (_PACKET_HEAD + body + _PACKET_TAIL).encode("utf-8")


def _remove(parent, child) -> None:
    """Remove `child`, keeping the text that follows it (mixed content)."""
    if child.tail and child.tail.strip():
        i = list(parent).index(child)
        if i:
            prev = parent[i - 1]
            prev.tail = (prev.tail or "") + child.tail
        else:
            parent.text = (parent.text or "") + child.tail
    parent.remove(child)


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag
