"""The generator against a straightforward computation of the layers in
../shared/weights/README.md, and loading state dicts in the port's layout."""

import torch
import torch.nn.functional as F

from anime_cli.weights import catalog as weights
from anime_cli.models.animeganv2 import Generator, load_generator
from helpers import invoke, make_photo


def reference(sd, x):
    """AnimeGANv2 written out layer by layer from the weights README."""

    def cnl(x, p, pad=1, stride=1, groups=1, bias=None):
        if isinstance(pad, int):
            pad = (pad,) * 4
        x = F.pad(x, pad, mode="reflect")
        x = F.conv2d(x, sd[p + ".1.weight"], sd.get(p + ".1.bias"), stride=stride, groups=groups)
        x = group_norm(x, sd[p + ".2.weight"], sd[p + ".2.bias"])
        return torch.where(x > 0, x, 0.2 * x)

    def group_norm(x, w, b):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + 1e-5) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)

    def irb(x, p):
        hidden = sd[p + ".layers.0.1.weight"].shape[0]
        y = cnl(x, p + ".layers.0", pad=0)
        y = cnl(y, p + ".layers.1", groups=hidden)
        y = F.conv2d(y, sd[p + ".layers.2.weight"])
        y = group_norm(y, sd[p + ".layers.3.weight"], sd[p + ".layers.3.bias"])
        return x + y if x.shape == y.shape else y

    h, w = x.shape[-2:]
    x = cnl(x, "block_a.0", pad=3)
    x = cnl(x, "block_a.1", pad=(0, 1, 0, 1), stride=2)
    x = cnl(x, "block_a.2")
    x = cnl(x, "block_b.0", pad=(0, 1, 0, 1), stride=2)
    x = cnl(x, "block_b.1")
    x = cnl(x, "block_c.0")
    for i in range(1, 5):
        x = irb(x, f"block_c.{i}")
    x = cnl(x, "block_c.5")
    x = F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", align_corners=False)
    x = cnl(x, "block_d.0")
    x = cnl(x, "block_d.1")
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = cnl(x, "block_e.0")
    x = cnl(x, "block_e.1")
    x = cnl(x, "block_e.2", pad=3)
    return torch.tanh(F.conv2d(x, sd["out_layer.0.weight"]))


def test_generator_matches_reference_computation():
    sd = weights.load("hayao")
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        ours = load_generator(sd)(x)
        ref = reference(sd, x)
    assert ours.shape == (1, 3, 40, 56)
    assert torch.allclose(ours, ref, atol=2e-5), (ours - ref).abs().max()


def test_state_dict_keys_are_the_ports():
    sd = weights.load("hayao")
    assert set(Generator().state_dict()) == set(sd)
    assert sum(v.numel() for v in sd.values()) == 2_143_552


def test_weights_option_loads_a_port_layout_file(tmp_path):
    # Re-save the weights as a plain state dict in the port's key order, as
    # face_paint_512_v2.pt / paprika.pt are, and run it through --weights.
    sd = weights.load("hayao")
    port = {k: sd[k].clone() for k in Generator().state_dict()}
    torch.save(port, tmp_path / "paprika_like.pt")
    src = make_photo(tmp_path / "in" / "p.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--weights", tmp_path / "paprika_like.pt",
                          "--no-face-enhance")
    assert code == 0, err
    assert (tmp_path / "out" / "p.png").is_file()


def test_weights_option_refuses_a_file_of_another_network(tmp_path):
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, tmp_path / "other.pt")
    src = make_photo(tmp_path / "p.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--weights", tmp_path / "other.pt")
    assert code == 2
    assert "not an AnimeGANv2 generator" in err
    assert "Traceback" not in err
